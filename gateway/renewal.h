// renewal: identities renewed over ACME (DESIGN "Identities that renew themselves"). A
// thread of the supervisor's, never a worker, keeps each identity with an `acme` block
// supplied: when one has no certificate, or its renew_before is reached, or an operator
// asks (`identity renew`), it makes a new key, orders a certificate for it (the http-01
// challenge answered by a responder bound before privileges drop, or dns-01 through the
// operator's hook) and writes key and chain as new files renamed over the identity's
// paths; the supervisor loads them as any rotated identity. A failure keeps the current
// certificate and is retried with backoff and jitter, honouring Retry-After, never later
// than a quarter of the time left before the certificate expires. What happened is in
// the log, the metrics and the state file beside the certificate (gateway/acme/state.h).
#ifndef MTLSGW_RENEWAL_H
#define MTLSGW_RENEWAL_H

#include <stddef.h>

#include "policy/config.h"

// gw_renewal_bind binds the http01_listen addresses of |cfg| (before privileges drop) and
// starts their responders. 0 with the reason logged.
int gw_renewal_bind(const pol_config *cfg);
// gw_renewal_start starts the thread for |cfg| (a reference is taken); |renewed| is
// called from it after an identity's files were replaced.
int gw_renewal_start(pol_config *cfg, void (*renewed)(void));
// gw_renewal_set_config hands a new snapshot to the thread (a reloaded config).
void gw_renewal_set_config(pol_config *cfg);
// gw_renewal_request asks for a renewal of |identity| now. 0 with |err| when it has no
// acme block (or no thread runs).
int gw_renewal_request(const char *identity, char *err, size_t cap);
// gw_renewal_running says whether a renewal of |identity| is asked for or under way.
int gw_renewal_running(const char *identity);
void gw_renewal_stop(void);

// gw_renewal_once renews |identity| of |cfg| in this thread (the CLI without a running
// gateway): binds its http-01 address itself. 1, or 0 with |err|.
int gw_renewal_once(const pol_config *cfg, const char *identity, char *err, size_t cap);

#endif
