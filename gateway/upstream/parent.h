// parent: the conversation with a rule's parent proxy (DESIGN "Through a parent proxy")
// over an upstream connection to it, shared by tunnels, pre-connected slots and explain:
// TLS to the parent first for https:// (verified as any server, with via_identity or
// via_trust), then HTTP CONNECT (Basic credentials) or SOCKS5 (RFC 1929). The parent's
// answers are read exactly: the plain socket is peeked and only the answer's own bytes are
// taken; over TLS what follows the answer is kept and read first. The rule's mTLS then
// runs inside: its SSL reads and writes through the parent's TLS (a BIO over it), or, for
// a direct rule, the transport does.
#ifndef MTLSGW_PARENT_H
#define MTLSGW_PARENT_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/proto/errors.h"
#include "gateway/upstream/upstream.h"
#include "policy/config.h"

// The conversation's state. Zeroed (gw_parent_talk_init) when TCP to the parent is up.
typedef struct {
    int step;
    size_t out_len, out_sent;
    uint8_t out[800];  // what goes to the parent next (it may hold the password: cleansed once sent)
    char said[280];    // once DONE: the parent's yes in words ("200 Connection established")
} gw_parent_talk;

void gw_parent_talk_init(gw_parent_talk *pt);

// gw_parent_step talks to parent |v| over |u| (TCP to it established) until it opened
// |target| ("host:port"): DONE, WANT_READ or WANT_WRITE (call again once the socket is
// so), or FAILED with |err| (GW_ERR_VIA_*; the parent's words in |reason|).
gw_step gw_parent_step(gw_parent_talk *pt, gw_upstream *u, const pol_via *v, const char *target, gw_err *err,
                       char *reason, size_t reason_len);

// gw_parent_tls_text describes the TLS to an https:// parent once it is up (version,
// cipher, the parent's certificate subject, what we presented): "" when there is none.
void gw_parent_tls_text(const gw_upstream *u, const pol_via *v, char *out, size_t cap);

// gw_parent_tls_bio makes the BIO the rule's SSL reads and writes through when |u| runs
// over TLS to its parent (NULL otherwise, or out of memory).
BIO *gw_parent_tls_bio(gw_upstream *u);

// gw_parent_pending says whether the parent's TLS holds bytes not yet taken (read ahead,
// decrypted or not): the socket may not signal them again.
int gw_parent_pending(const gw_upstream *u);

// For a direct rule over TLS to its parent: reads, writes and the end of our direction go
// through the parent's TLS. As read(2)/write(2): bytes, 0 for the end of the stream
// (read), -1 with |*want| SSL_ERROR_WANT_READ or SSL_ERROR_WANT_WRITE, or 0 on a failure.
int gw_parent_read(gw_upstream *u, uint8_t *p, size_t n, int *want);
int gw_parent_write(gw_upstream *u, const uint8_t *p, size_t n, int *want);
// gw_parent_shutdown sends close_notify to the parent: 1 done, 0 to be called again once
// writable.
int gw_parent_shutdown(gw_upstream *u);

// gw_parent_free frees the TLS to the parent (gw_upstream_close calls it).
void gw_parent_free(struct gw_outer *o);

#endif
