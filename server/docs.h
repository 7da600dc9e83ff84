/* GET /openapi.json and GET /docs: the API described for machines and for
 * people. Both are static text kept beside each other here; a unit test
 * checks that the document names exactly the routes the server has. */
#ifndef SRV_DOCS_H
#define SRV_DOCS_H

const char *srv_openapi_json(void);
const char *srv_docs_html(void);

#endif
