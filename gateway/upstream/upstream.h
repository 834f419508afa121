// upstream: the tunnel's connection to the remote side: non-blocking TCP connect and the
// mutual-TLS client handshake with an identity, with every failure turned into a
// gw_err and a reason in words.
#ifndef MTLSGW_UPSTREAM_H
#define MTLSGW_UPSTREAM_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <sys/socket.h>

#include "gateway/base/buffer.h"
#include "gateway/proto/errors.h"
#include "gateway/tls/identity.h"

typedef struct gw_upstream_s {
    int fd;
    SSL *ssl;
    struct gw_ra_bio *ra;                  // the SSL's socket BIO when it is ours (reads ahead; corks)
    struct gw_outer *outer;                // TLS to an https:// parent proxy (parent.c); NULL: none
    const gw_identity *identity;           // the identity presented (or to be): sessions are cached under it
    const gw_identity *const *candidates;  // the rule's identities, chosen from in the handshake
    size_t num_candidates;
    uint8_t where_digest[32];  // SHA-256 of (upstream, server name, server_uri): the rest of the cache key
    char *ca_note;             // with describe_cas: the CA names the server sent and the choice, in words
    int describe_cas;
    char *ocsp_note;           // with describe_cas: the server's OCSP staple in words (responder, times, status)
    gw_verify_result *verify;  // during the handshake only: what verification found
    int alert;                 // fatal alert received from the server, -1 if none
    int cert_requested;        // the server sent a CertificateRequest
    int ticket_seen;           // a session arrived through the new-session callback
    int ocsp;                  // gw_ocsp_result of the server's staple (kept when verify is freed)
    int64_t rtt_ms;            // the tunnel's measure of a round trip to the server (0: none)
    int fastopen;              // set before gw_upstream_connect: TCP Fast Open (the first write goes in the SYN)
    int confirmed;             // the server accepted us: sessions may go to the cache
    SSL_SESSION *held[4];      // sessions that arrived before confirmation
    size_t num_held;
    char sess_key[65];  // session cache key: hex SHA-256 of (identity, upstream, name)
    unsigned requests;  // http_proxy requests this connection carried (upstream_pool.max_requests)
    // TLS 1.3 early data (rule early_data): the handshake returned as the ClientHello left
    // (GW_EARLY_SENDING) and writes go as early data, a copy kept until the server says
    // whether it took them; rejected, they are sent again once the handshake is done.
    int early;            // gw_early_state
    uint8_t *early_copy;  // what was written as early data (at most GW_EARLY_MAX bytes)
    size_t early_len;     // bytes in it
    size_t early_resent;  // after a rejection: bytes of it sent again
    // Keys in tokens (keyops.c): the worker's channels (NULL: sign synchronously), and who
    // to call when a signature is there.
    struct gw_keyops *keyops;
    int key_timeout_ms;
    void (*key_ready)(void *arg);
    void *key_arg;
    struct gw_key_op *key_op;  // a signature under way or done
    char *key_error;           // why the key did not sign (allocated when it happens)
} gw_upstream;

typedef enum {
    GW_EARLY_NONE = 0,  // not offered (or not possible: no 0-RTT-capable session)
    GW_EARLY_SENDING,   // offered; the handshake is not finished
    GW_EARLY_ACCEPTED,  // the server took the early data
    GW_EARLY_REJECTED,  // the server refused it: it is sent again after the handshake
    GW_EARLY_RESENT,    // refused, and sent again
} gw_early_state;

// The most early data one connection sends (nginx accepts 16 KiB): a first request or a
// first command. More waits for the handshake.
#define GW_EARLY_MAX 16384

typedef enum {
    GW_STEP_DONE = 0,
    GW_STEP_WANT_READ,
    GW_STEP_WANT_WRITE,
    GW_STEP_WANT_KEY,  // a token is signing: key_ready is called when it is done
    GW_STEP_FAILED,
} gw_step;

void gw_upstream_init(gw_upstream *u);
// gw_upstream_move hands the connection in |src| to |dst| (another tunnel, or the pool),
// leaving |src| empty (closed).
void gw_upstream_move(gw_upstream *dst, gw_upstream *src);
// gw_upstream_buffered says whether bytes the server sent were read ahead from the socket
// and not yet taken by TLS.
int gw_upstream_buffered(const gw_upstream *u);
// gw_upstream_ticket_wait_ms says how long to hold our close_notify for the session ticket
// a TLS 1.3 server sends after the handshake (0: none is due). Once we have sent
// close_notify BoringSSL ignores tickets, and a client that closes at once would leave the
// next connection without a session to resume. The ticket comes about a round trip after
// our Finished: the wait is twice the larger of rtt_ms (the tunnel's measure: the connect's
// or the handshake's time, which also sees past a middlebox that ends TCP nearby) and the
// socket's smoothed RTT, plus 20 ms, at most 1 s.
unsigned gw_upstream_ticket_wait_ms(const gw_upstream *u);
// gw_upstream_ocsp_text: what the server's OCSP staple said ("good", "none", "revoked",
// ...), or NULL when it was not checked (ocsp off, or a resumed session).
const char *gw_upstream_ocsp_text(const gw_upstream *u);
// gw_upstream_ocsp_result: the same as a gw_ocsp_result (0: not checked).
int gw_upstream_ocsp_result(const gw_upstream *u);
// gw_upstream_close frees the SSL (no close_notify) and closes the socket.
void gw_upstream_close(gw_upstream *u);

// gw_upstream_set_mark sets the SO_MARK every upstream socket gets from now on (0: none;
// the config's upstream_mark). Returns 0 with errno set when this process may not set it
// (it needs CAP_NET_ADMIN), checked on a throwaway socket.
int gw_upstream_set_mark(uint32_t mark);
// gw_upstream_connect starts a non-blocking connect to |sa|. Returns GW_ERR_NONE when the
// connect is under way (or done), else the error; |reason| gets words.
gw_err gw_upstream_connect(gw_upstream *u, const struct sockaddr *sa, socklen_t len, char *reason, size_t reason_len);
// gw_upstream_errno_err: the error a connect that failed with errno |e| is.
gw_err gw_upstream_errno_err(int e);
// gw_upstream_connect_result reads the outcome of the connect once the socket is writable.
gw_err gw_upstream_connect_result(gw_upstream *u, char *reason, size_t reason_len);

// gw_upstream_read_failure explains a failed SSL_read (|ret|) on a tunnel the server has
// not yet accepted (a forward listener's, which does not wait for that): its alert, or its
// close right after the handshake, in the words of the confirm step. Returns the error.
gw_err gw_upstream_read_failure(gw_upstream *u, int ret, char *reason, size_t reason_len);

// gw_upstream_tls_begin creates the SSL for the identities |ids| (|n| of them; the server
// is verified with the first's settings, and the one presented is chosen when the server
// names the CAs it accepts): SNI (none for an IP literal), the name to verify (or the URI
// SAN |server_uri| when not NULL), and a cached session of one of them for |where| (the
// upstream address and names) if there is one. With |pool| (the worker's), the socket is
// read ahead through a pool buffer: one read() per TLS record instead of two (header,
// then body), the buffer given back as soon as it is empty. With |early_data| and a
// cached session that allows it, early data is offered.
int gw_upstream_tls_begin(gw_upstream *u, const gw_identity *const *ids, size_t n, const char *server_name,
                          const char *server_uri, const char *where, gw_buf_pool *pool, int early_data);
// gw_upstream_cork gathers what the TLS connection writes (at most a buffer; more goes
// out at once, in order) until gw_upstream_uncork sends it with one send(): the
// handshake's last flight and the first data leave in one segment.
void gw_upstream_cork(gw_upstream *u);
// gw_upstream_uncork: 1 once everything went, 0 if the socket is full (the rest goes with
// the next write or gw_upstream_uncork once writable), -1 if the socket failed (the next
// read says how).
int gw_upstream_uncork(gw_upstream *u);
// gw_upstream_fin_follows: what is written next is followed by our FIN (or a close), so
// the kernel may hold it for a moment (MSG_MORE) and send both in one segment.
void gw_upstream_fin_follows(gw_upstream *u, int on);
// gw_upstream_out_pending: corked, or bytes wait for the socket.
int gw_upstream_out_pending(const gw_upstream *u);
// gw_upstream_tls_step advances the handshake. With early data offered it is DONE once the
// ClientHello left (early is then GW_EARLY_SENDING): the transport finishes it.
gw_step gw_upstream_tls_step(gw_upstream *u, gw_err *out_err, char *reason, size_t reason_len);
// gw_upstream_needs_confirm says whether the server may still reject our certificate after
// the handshake looks complete (full TLS 1.3 handshake in which we sent a certificate).
int gw_upstream_needs_confirm(const gw_upstream *u);
// gw_upstream_known_accepted says whether this server accepted this identity (of this
// generation, under this server name) on an earlier connection: its full handshakes need
// not wait for the verdict.
int gw_upstream_known_accepted(const gw_upstream *u);
// gw_upstream_rejected forgets that: the server ended the connection before it sent
// anything, after a handshake it had not confirmed.
void gw_upstream_rejected(gw_upstream *u);
// gw_upstream_confirm_step looks at what the server sent after the handshake without
// consuming application data: DONE once data arrived, FAILED on an alert or a close,
// WANT_READ otherwise (session tickets are processed; see ticket_seen).
gw_step gw_upstream_confirm_step(gw_upstream *u, gw_err *out_err, char *reason, size_t reason_len);

// gw_upstream_confirm marks the tunnel accepted by the server and moves the sessions
// held back so far into the shared cache (a rejected tunnel's sessions are never cached,
// or the next connection would resume into the same rejection).
void gw_upstream_confirm(gw_upstream *u);

// gw_upstream_early_settle finishes a handshake that returned early: DONE once the server
// accepted the early data, or refused it and the copy was sent again; WANT_READ or
// WANT_WRITE to be called again; FAILED (|out_err|, |reason|) when the handshake failed.
gw_step gw_upstream_early_settle(gw_upstream *u, gw_err *out_err, char *reason, size_t reason_len);
// gw_upstream_early_text: "-", "accepted" or "rejected", for the access log.
const char *gw_upstream_early_text(const gw_upstream *u);

// gw_tls_install_callbacks sets the session, alert and certificate-request callbacks on
// an SSL whose app data is its gw_upstream (gw_upstream_tls_begin does it).
void gw_tls_install_callbacks(SSL *ssl);

// gw_tls_alert_name returns the RFC 8446 name of an alert ("unknown_ca").
const char *gw_tls_alert_name(int alert);

#endif
