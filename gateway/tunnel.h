// tunnel: one client connection and everything it owns, from the first byte of the proxy
// request to the access-log line.
#ifndef MTLSGW_TUNNEL_H
#define MTLSGW_TUNNEL_H

#include <openssl/ssl.h>
#include <sys/socket.h>

#include "gateway/errors.h"
#include "gateway/worker.h"

// gw_tunnel_accept takes over |fd|, accepted on listener |listener_index| of |w|'s
// config. With |pending| != GW_ERR_NONE the client's request is read only to answer it
// with that error in its own protocol (limits, allow list).
void gw_tunnel_accept(gw_worker *w, int fd, const struct sockaddr *peer, size_t listener_index,
                      gw_err pending);

// gw_tunnel_abort closes |t| at once (shutdown after the drain timeout).
void gw_tunnel_abort(gw_tunnel *t, const char *reason);

// gw_tunnel_drain closes |t| if it is idle (an HTTP client connection between requests);
// called on every tunnel when the gateway begins to stop.
void gw_tunnel_drain(gw_tunnel *t);

// gw_tunnel_next returns the next tunnel in the worker's list.
gw_tunnel *gw_tunnel_next(gw_tunnel *t);

// gw_tls_install_callbacks sets the session, alert and certificate-request callbacks on an
// identity's SSL_CTX (registered with pol_identity_set_ctx_hook).
void gw_tls_install_callbacks(SSL_CTX *ctx);

#endif
