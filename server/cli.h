/* The one-shot commands: `predictd predict` and `predictd tokenize` answer
 * one request on stdout, with exactly the bytes the daemon would send. */
#ifndef SRV_CLI_H
#define SRV_CLI_H

/* Each returns the process exit status: 0 for a 2xx answer, 1 for an error
 * answer (still printed on stdout), 2 for bad usage or a model that does not load. */
int srv_cli_predict(int argc, char **argv);
int srv_cli_tokenize(int argc, char **argv);

#endif
