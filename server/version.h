/* predictd's version, in one place. The build may override it with
 * -DPREDICTD_VERSION="..." (from git describe, say). */
#ifndef SRV_VERSION_H
#define SRV_VERSION_H

#ifndef PREDICTD_VERSION
#define PREDICTD_VERSION "0.1.0"
#endif

#endif
