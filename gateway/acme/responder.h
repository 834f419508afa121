// responder: the http-01 challenge answered by the gateway itself (RFC 8555 section 8.3).
// A thread of its own serves GET (or HEAD) /.well-known/acme-challenge/TOKEN with the
// key authorization, for the tokens of orders under way only; everything else is 404 (an
// unknown token, any other path), 405 (another method), 400 (a malformed or oversized
// head), and a client that does not finish its head in 5 s is dropped. At most 64
// clients at a time; nothing is read from the request but its head.
#ifndef MTLSGW_ACME_RESPONDER_H
#define MTLSGW_ACME_RESPONDER_H

#include <stddef.h>

typedef struct gw_acme_responder gw_acme_responder;

// gw_acme_responder_start serves on |listen_fd| (a listening socket, taken over). NULL
// with |err| if the thread cannot start.
gw_acme_responder *gw_acme_responder_start(int listen_fd, char *err, size_t cap);
// gw_acme_responder_publish answers |token| with |key_authorization| from now on. 0 if
// |token| is not base64url or too many are pending (16).
int gw_acme_responder_publish(gw_acme_responder *r, const char *token, const char *key_authorization);
void gw_acme_responder_withdraw(gw_acme_responder *r, const char *token);
// gw_acme_responder_stop ends the thread and closes its sockets.
void gw_acme_responder_stop(gw_acme_responder *r);

#endif
