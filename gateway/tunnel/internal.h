// internal: what the files of one tunnel share (tunnel.c, front.c, dial.c, relay.c,
// http_proxy.c): its phases, its struct, and the functions they call in each other.
// Only those files include it; everyone else has gateway/tunnel/tunnel.h.
#ifndef MTLSGW_TUNNEL_INTERNAL_H
#define MTLSGW_TUNNEL_INTERNAL_H

#include "gateway/tunnel/tunnel.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/base64.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gateway/proto/h1.h"
#include "gateway/proto/http.h"
#include "gateway/base/log.h"
#include "gateway/base/peer.h"
#include "gateway/tunnel/metrics.h"
#include "gateway/base/netutil.h"
#include "gateway/tunnel/passcheck.h"
#include "gateway/proto/socks.h"
#include "gateway/upstream/upstream.h"
#include "policy/users.h"

// One value per phase of a tunnel's life.
typedef enum {
    T_DETECT,           // waiting for the first byte, which picks the protocol
    T_SOCKS5_GREETING,  // waiting for VER NMETHODS METHODS
    T_SOCKS5_AUTH,      // username/password method chosen, waiting for RFC 1929 credentials
    T_SOCKS5_REQUEST,   // method chosen (and credentials accepted), waiting for the CONNECT request
    T_SOCKS4_REQUEST,   // waiting for the rest of a SOCKS4/4a request
    T_HTTP_HEAD,        // reading an HTTP request head (CONNECT)
    T_SNIFF,            // transparent listener: looking at the first bytes for an HTTP Host
    T_RESOLVING,        // a DNS query is out
    T_CONNECTING,       // TCP connect to addrs[next_addr - 1] in progress
    T_HANDSHAKING,      // TLS client handshake in progress
    T_CONFIRMING,       // full TLS 1.3 handshake done; waiting for the server's first record
    T_RELAY,            // success reply queued; bytes flow both ways
    T_HTTP_PROXY,     // http_proxy requests: messages framed and rewritten both ways
    T_FLUSHING,        // error reply queued; flushing it, then closing
    T_CLOSED,           // closed; freed after the current batch
} tunnel_state;

typedef enum {
    P_NONE = 0,
    P_SOCKS5,
    P_SOCKS4,
    P_HTTP_CONNECT,
    P_FORWARD_LISTENER,
    P_HTTP_PROXY,
    P_TRANSPARENT,  // the destination came from the connection (a netfilter redirect)
} tunnel_proto;

static const char *const proto_names[] = {"-", "socks5", "socks4", "http-connect", "forward", "http", "transparent"};

// http_proxy: where the current request and its response are.
enum { RQ_HEAD, RQ_BODY, RQ_DONE };           // waiting for a head / passing its body / sent
enum { RS_IDLE, RS_HEAD, RS_BODY, RS_DONE };  // none expected / awaiting head / body / done

// Where a password check stands. A check runs off the loop; meanwhile the request stays
// in its buffer, and once the answer came it is parsed again and the answer taken.
enum { AUTH_NONE = 0, AUTH_PENDING, AUTH_GRANTED, AUTH_DENIED };

typedef struct {
    gw_watcher w;
    unsigned readable : 1;  // the socket may have bytes (or TLS has decrypted bytes)
    unsigned writable : 1;  // the socket may take bytes
    unsigned eof : 1;       // this side will send nothing more
    unsigned shut : 1;      // we sent FIN / close_notify toward this side
    unsigned read_wants_write : 1;   // TLS read needs the socket writable
    unsigned write_wants_read : 1;   // TLS write needs the socket readable
    unsigned truncated : 1;          // upstream EOF without close_notify
    unsigned write_dead : 1;         // writes toward this side failed: what it still sends goes on,
                                     // what comes for it is dropped (nothing lost the other way)
} side;

struct gw_tunnel {
    gw_tunnel_host *host;
    pol_config *cfg;  // the snapshot this tunnel (or this http_proxy request) uses
    size_t listener_index;
    tunnel_state state;
    tunnel_proto proto;
    gw_err admission;  // not admitted at accept (allow list, max_connections): the answer
    unsigned share;    // its client's bucket + 1 in gw_share_counts (counted); 0: none
    int share_full;    // admission GW_ERR_LIMIT because its client holds its whole share
    int flush_reset;   // T_FLUSHING after an upstream failure: reset the client once all is delivered
    int client_first;  // a plain stream's client closed before sending anything (a TCP probe)
    side client_io, upstream_io;  // readiness and shutdown of each socket
    int client_fd;
    gw_upstream upstream;
    gw_buf *to_up;    // read from the client, to be written upstream
    gw_buf *to_down;  // read from upstream (or our replies), to be written to the client
    gw_timer timer;        // the current phase's deadline
    gw_timer yield_timer;  // continues a relay that yielded to other tunnels
    const pol_rule *rule;
    pol_dest dest;         // what the client asked for
    const char *user;      // the authenticated proxy user (owned by cfg->users), for the access log
    uint32_t caller;       // the local user behind the client connection, or GW_CALLER_NONE
    // front.c: reading the request.
    struct {
        size_t head_scanned;          // how far an HTTP head was searched for its end
        gw_passcheck_job *auth_job;   // a password check under way (off the loop)
        uint8_t auth_state;           // AUTH_*: what the last check said, for the re-parse after it
        const char *auth_user;        // the user that check was for
    } front;
    // dial.c: from the destination to an established upstream.
    struct {
        res_query *query;
        char connect_host[256];
        uint16_t connect_port;
        char server_name[256];
        int confirm_grace;  // a session ticket arrived while confirming
        res_addr addrs[RES_MAX_ADDRS];
        size_t num_addrs, next_addr;
        gw_err last_connect_err;
        struct sockaddr_storage orig;  // transparent: where the client was going
    } dial;
    // The access log.
    uint64_t t_start, t_phase, last_activity;
    uint64_t hs_start_us;
    int64_t dns_ms, connect_ms, handshake_ms;
    uint64_t up_bytes, down_bytes;
    char client_text[64], upstream_text[80];
    gw_result result;  // how it ended, once known
    char *reason;      // why it failed, in words (allocated when first set: most tunnels need none)
    // http_proxy.c (P_HTTP_PROXY): raw bytes from each side are parsed, framed and
    // rewritten into the buffer toward the other side.
    struct {
        gw_buf *from_client, *from_up;
        size_t resp_scanned;  // how far the response was searched for a complete head
        uint8_t req_phase, resp_phase;
        gw_body req_body, resp_body;
        gw_chunked req_chunks, resp_chunks;
        int client_minor;
        unsigned client_keepalive : 1;  // the client keeps its connection after this exchange
        unsigned up_keepalive : 1;      // so does the upstream
        unsigned req_is_head : 1;
        unsigned resp_sent : 1;   // part of this response went toward the client
        unsigned resp_dechunk : 1;  // a chunked response for an HTTP/1.0 client: framing taken off
        unsigned http_idle : 1;   // between requests: nothing to log if the connection ends
        char method[24];
        int status;
        uint64_t head_deadline;  // a later request head must be whole by then (loop ms); 0: none
    } http;
    gw_tunnel *prev, *next;
};

// Phases by what they do, instead of enum arithmetic.
static inline int tunnel_reading_request(const gw_tunnel *t) {
    switch (t->state) {
        case T_DETECT:
        case T_SOCKS5_GREETING:
        case T_SOCKS5_AUTH:
        case T_SOCKS5_REQUEST:
        case T_SOCKS4_REQUEST:
        case T_HTTP_HEAD:
            return 1;
        default:
            return 0;
    }
}

static inline int tunnel_dialing(const gw_tunnel *t) {
    return t->state == T_RESOLVING || t->state == T_CONNECTING || t->state == T_HANDSHAKING ||
           t->state == T_CONFIRMING;
}

static inline int tunnel_flowing(const gw_tunnel *t) {
    return t->state == T_RELAY || t->state == T_HTTP_PROXY;
}

// A plain byte stream with no proxy protocol (forward and transparent listeners): nothing
// to answer the client with, and no reply to hold back while confirming.
static inline int tunnel_is_plain_stream(const gw_tunnel *t) {
    return t->proto == P_FORWARD_LISTENER || t->proto == P_TRANSPARENT;
}

// The longest reason kept for the access log and error replies (set_reason cuts there).
#define REASON_MAX 600

// ---- tunnel.c ----
const pol_listener *tunnel_listener_of(const gw_tunnel *t);
void tunnel_set_reason(gw_tunnel *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tunnel_clear_reason(gw_tunnel *t);
const char *tunnel_reason_of(const gw_tunnel *t);
void tunnel_log_access(gw_tunnel *t);
// tunnel_close is the one way out: it logs the access line and releases everything.
void tunnel_close(gw_tunnel *t, gw_result result, const char *reason);
int tunnel_queue_down(gw_tunnel *t, const void *p, size_t len);
// tunnel_reject answers the client with |err| in its protocol, then closes.
void tunnel_reject(gw_tunnel *t, gw_err err, const char *reason);
void tunnel_queue_success(gw_tunnel *t);
// tunnel_client_failed ends a tunnel whose client connection broke (reset, error).
void tunnel_client_failed(gw_tunnel *t, const char *reason);
void tunnel_on_upstream(gw_loop *loop, gw_watcher *w, uint32_t events);
void tunnel_run(gw_tunnel *t);

// ---- front.c ----
// tunnel_read_request reads what the client sent so far into to_up. Returns 0 if the tunnel
// closed (EOF or error before a complete request).
int tunnel_read_request(gw_tunnel *t);
// tunnel_http_authorized checks Proxy-Authorization: Basic when auth.users_file is set: 1 yes;
// 0 no (the client got 407 with Proxy-Authenticate, or 503); -1 the check is under way.
int tunnel_http_authorized(gw_tunnel *t, const gw_http_request *hr);
// tunnel_take_request_head parses the request head at the start of |b| (to_up or from_client).
// Returns 1 with |hr| filled, 0 if more bytes are needed, -1 if the client was answered
// with an error.
int tunnel_take_request_head(gw_tunnel *t, gw_buf *b, gw_http_request *hr);
void tunnel_parse_request(gw_tunnel *t);

// ---- dial.c ----
// tunnel_start_connect tries the next resolved address; when none is left, the last error goes
// to the client.
void tunnel_start_connect(gw_tunnel *t);
// tunnel_refuse_unadmitted answers a client that was not admitted at accept (outside `allow`,
// or over max_connections) with that error and returns 1. It runs before any credential
// is looked at, so such a client can never find out whether a password is right.
int tunnel_refuse_unadmitted(gw_tunnel *t);
// tunnel_connect_addresses checks |addrs| against deny_addresses and connects to the first
// allowed one (then the next on failure). Returns 0 if the client was refused.
int tunnel_connect_addresses(gw_tunnel *t, const res_addr *addrs, size_t n);
// tunnel_route decides what to do with the destination the client asked for.
void tunnel_route(gw_tunnel *t, const char *host, uint16_t port);
void tunnel_established(gw_tunnel *t);
void tunnel_step_connecting(gw_tunnel *t);
void tunnel_step_tls(gw_tunnel *t);

// ---- relay.c ----
// One read and one write routine serve both sides (relay.c, side_read / side_write); these
// name them for the callers outside the relay. Each returns 1 on progress, 0 for nothing,
// -1 if the tunnel failed or closed. Reads go into *|dst| (to_up / to_down, or the
// http_proxy raw buffers); writes take to_up (toward upstream) or to_down (the client).
int tunnel_client_read(gw_tunnel *t, gw_buf **dst);
int tunnel_up_read(gw_tunnel *t, gw_buf **dst);
int tunnel_relay_up_write(gw_tunnel *t);
int tunnel_relay_client_write(gw_tunnel *t);
void tunnel_relay(gw_tunnel *t);
// tunnel_flush_last writes the last queued bytes (T_FLUSHING), then FIN, and waits for the
// client to close so the reply is not destroyed by a reset.
void tunnel_flush_last(gw_tunnel *t);
// tunnel_release_if_empty returns an emptied buffer to the pool: an idle connection holds none.
void tunnel_release_if_empty(gw_tunnel *t, gw_buf **b);

// ---- transparent.c ----
// tunnel_relay_upstream_failed ends a relaying tunnel whose upstream broke (a reset, a TLS
// error): what the upstream sent before is flushed to the client first, then the reset is
// passed on once our socket has delivered it all (bounded by the flush deadline).
void tunnel_relay_upstream_failed(gw_tunnel *t, gw_result result, const char *reason);

// tunnel_transparent_start begins a tunnel of a transparent listener whose connection was
// going to |orig| (NULL: nothing redirected it).
void tunnel_transparent_start(gw_tunnel *t, const struct sockaddr *orig);
// tunnel_sniff looks at the first bytes (T_SNIFF) for an HTTP request head's Host.
void tunnel_sniff(gw_tunnel *t);
// tunnel_sniff_give_up routes by the original address alone (sniffing timed out).
void tunnel_sniff_give_up(gw_tunnel *t);
// tunnel_transparent_dial connects a routed transparent tunnel to its original address
// (with the rule's upstream_port), without DNS. Returns 0 if the tunnel was refused.
int tunnel_transparent_dial(gw_tunnel *t);

// ---- http_proxy.c ----
void tunnel_upstream_failed(gw_tunnel *t, gw_result result, const char *reason);
// tunnel_http_start_request takes the request head |hr| at the start of from_client: checks it,
// keeps the current upstream if it goes to the same destination (else routes anew), and
// writes the head in origin-form into to_up. On failure the client gets its error.
void tunnel_http_start_request(gw_tunnel *t, const gw_http_request *hr);
void tunnel_http_run(gw_tunnel *t);

#endif
