// keyops: signatures by keys in PKCS#11 tokens during handshakes. BoringSSL asks the key
// method to sign; the request goes to the identity's signer process over this worker's
// channel to it and the handshake returns SSL_ERROR_WANT_PRIVATE_KEY_OPERATION; when the
// answer arrives (or key_timeout_ms passes, or the signer dies) the tunnel is called back
// and the handshake goes on. The worker never waits for a token.
#ifndef MTLSGW_KEYOPS_H
#define MTLSGW_KEYOPS_H

#include <openssl/ssl.h>
#include <stdint.h>

#include "gateway/base/loop.h"

typedef struct gw_keyops gw_keyops;
struct gw_upstream_s;

// gw_keyops_new returns a worker's signing channels on |loop| (none open yet), or NULL.
gw_keyops *gw_keyops_new(gw_loop *loop);
// gw_keyops_free closes the channels (every tunnel of the worker is closed by then).
void gw_keyops_free(gw_keyops *k);

// gw_token_key_method signs with the identity presented by the SSL's gw_upstream: on its
// worker's channel when the upstream has keyops, else synchronously (commands).
extern const SSL_PRIVATE_KEY_METHOD gw_token_key_method;

// gw_keyops_cancel forgets the signature |u| waits for (the tunnel closes).
void gw_keyops_cancel(struct gw_upstream_s *u);
// gw_keyops_expire gives up on the signature |u| waits for, as if key_timeout_ms had
// passed but naming |limit| (|ms|): the signer is restarted and key_ready is called (the
// handshake then fails with key_unavailable). Returns 0 if |u| waits for none.
int gw_keyops_expire(struct gw_upstream_s *u, const char *limit, int ms);

// What became of the signatures handshakes asked of tokens, counted per identity metrics
// slot (gw_identity.metrics_slot) for /metrics.
typedef enum { GW_KEY_SIGNED = 0, GW_KEY_FAILED, GW_KEY_TIMEOUT, GW_KEY_RESULTS } gw_key_result;
#define GW_KEYOPS_MAX_SLOTS 256
// gw_keyops_stats reads the counts of slot |slot| and the time the signed ones took.
void gw_keyops_stats(int slot, uint64_t counts[GW_KEY_RESULTS], uint64_t *signed_us);

#endif
