// sesscache: the client TLS session cache shared by all workers. Keys say who and where:
// "identity generation|upstream address|server name", so a session of identity A is
// never offered for identity B, nor after A was reloaded. Several sessions per key; a
// session that should be used once (TLS 1.3) is removed when taken.
#ifndef MTLSGW_SESSCACHE_H
#define MTLSGW_SESSCACHE_H

#include <openssl/ssl.h>
#include <stddef.h>

// gw_sesscache_init sets the maximum number of keys (oldest dropped first).
void gw_sesscache_init(size_t max_keys);
void gw_sesscache_clear(void);

// gw_sesscache_take returns a session for |key| (the caller owns one reference) or NULL.
SSL_SESSION *gw_sesscache_take(const char *key);
// gw_sesscache_put stores |session| under |key|, taking over the caller's reference.
void gw_sesscache_put(const char *key, SSL_SESSION *session);

#endif
