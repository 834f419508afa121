// sesscache: the client TLS session cache shared by all workers. Keys say who and where:
// "identity generation|upstream address|server name", so a session of identity A is
// never offered for identity B, nor after A was reloaded. Several sessions per key; a
// session that should be used once (TLS 1.3) is removed when taken.
#ifndef MTLSGW_SESSCACHE_H
#define MTLSGW_SESSCACHE_H

#include <openssl/ssl.h>
#include <stddef.h>

#include <stdint.h>

// gw_sesscache_set_limit caps the sessions held in all (limits.session_cache_size); over
// it, the least recently used keys are dropped with their sessions.
void gw_sesscache_set_limit(size_t max_sessions);
void gw_sesscache_clear(void);
// gw_sesscache_purge drops every key whose identity generation is not in |generations|
// (after a reload: sessions of replaced identities are never offered again).
void gw_sesscache_purge(const uint64_t *generations, size_t n);
// gw_sesscache_stats reads how many keys and sessions the cache holds.
void gw_sesscache_stats(size_t *out_keys, size_t *out_sessions);

// gw_sesscache_take returns a session for |key| (the caller owns one reference) or NULL.
SSL_SESSION *gw_sesscache_take(const char *key);
// gw_sesscache_put stores |session| under |key| for the identity of |generation|, taking
// over the caller's reference.
void gw_sesscache_put(const char *key, uint64_t generation, SSL_SESSION *session);

// gw_sesscache_set_accepted records whether the server of |key| accepted the identity of
// |generation| there (it answered with data after a full handshake), or forgets it (it
// rejected the identity since). Kept with the key's sessions, purged with them.
void gw_sesscache_set_accepted(const char *key, uint64_t generation, int accepted);
// gw_sesscache_accepted says whether the server of |key| accepted its identity before: a
// full handshake to it need not wait for its verdict.
int gw_sesscache_accepted(const char *key);

#endif
