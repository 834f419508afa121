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

#include "gateway/base/log.h"
#include "gateway/base/netutil.h"
#include "gateway/base/peer.h"
#include "gateway/proto/h1.h"
#include "gateway/proto/http.h"
#include "gateway/proto/socks.h"
#include "gateway/service/board.h"
#include "gateway/service/metrics.h"
#include "gateway/service/passcheck.h"
#include "gateway/upstream/parent.h"
#include "gateway/upstream/upstream.h"
#include "policy/users.h"

// One value per phase of a tunnel's life. Each has one phase function that does one thing
// and returns a tunnel_step; only the driver (tunnel_advance, tunnel.c) moves between them
// on failure, replies, flushes and closes. tunnel_state_name names each for logs.
typedef enum {
    T_DETECT,           // waiting for the first byte, which picks the protocol (the door)
    T_SOCKS5_GREETING,  // waiting for VER NMETHODS METHODS
    T_SOCKS5_AUTH,      // username/password method chosen, waiting for RFC 1929 credentials
    T_SOCKS5_REQUEST,   // method chosen (and credentials accepted), waiting for the CONNECT request
    T_SOCKS4_REQUEST,   // waiting for the rest of a SOCKS4/4a request
    T_HTTP_HEAD,        // reading an HTTP request head (CONNECT, or an http_proxy request)
    T_SNIFF,            // transparent listener: looking at the first bytes for an HTTP Host
    T_ROUTE,            // destination known (dial.want_host/port): admission, rules, then DNS or a dial
    T_RESOLVING,        // a DNS query is out
    T_CONNECT_NEXT,     // connect to the next allowed address (none left: the last error)
    T_CONNECTING,       // TCP connect to dial.addrs[next_addr - 1] in progress
    T_VIA,              // connected to the rule's parent proxy: asking it for the destination
    T_HANDSHAKING,      // TLS client handshake in progress
    T_CONFIRMING,       // full TLS 1.3 handshake done; waiting for the server's first record
    T_ESTABLISHED,      // upstream ready: the door's success reply, then T_RELAY or T_HTTP_PROXY
    T_RELAY,            // bytes flow both ways
    T_HTTP_PROXY,       // http_proxy: requests and responses framed and rewritten (http.req/resp)
    T_FLUSHING,         // the last bytes for the client (an error reply) go out, then the close
    T_CLOSED,           // closed; freed after the current batch
    T_NUM_STATES
} tunnel_state;

const char *tunnel_state_name(tunnel_state s);

// How a tunnel (or an http_proxy request) got its upstream connection: the access log's conn.
typedef enum {
    CONN_NEW = 0,       // connected (and handshaken) for it
    CONN_KEPT,          // http_proxy: kept from the client connection's previous request
    CONN_POOLED,        // http_proxy: taken from the worker's pool, made for another client connection
    CONN_PRECONNECTED,  // taken from the connections a rule keeps ready (preconnect)
} tunnel_conn;
const char *tunnel_conn_name(tunnel_conn c);

// What a phase function tells the driver.
typedef enum {
    STEP_NEXT,   // the state changed: run the next phase now
    STEP_WAIT,   // nothing more to do until an event (readiness, a timer, an answer)
    STEP_FAIL,   // tunnel_fail recorded an error: the driver answers the client with it
    STEP_CLOSE,  // tunnel_end recorded how the tunnel ends: the driver closes it
} tunnel_step;

// How the driver closes after STEP_CLOSE.
typedef enum {
    END_CLOSE = 0,       // close both sockets
    END_RESET_CLIENT,    // reset the client connection (a cut-off response, an upstream reset passed on)
    END_RESET_UPSTREAM,  // reset the upstream connection (the client's reset passed on)
} tunnel_end_how;

// http_proxy: where the current request and its response are. They move independently (a
// response may start before its request body was sent whole).
typedef enum {
    RQ_HEAD,  // waiting for a request head
    RQ_BODY,  // passing its body on, as its framing says
    RQ_DONE,  // sent whole
} http_req_phase;
typedef enum {
    RS_IDLE,  // no request out: nothing expected (between requests)
    RS_HEAD,  // awaiting the response head
    RS_BODY,  // passing its body back
    RS_DONE,  // passed back whole
} http_resp_phase;

// One http_proxy exchange: a request and its response, started afresh by each request head.
typedef struct {
    http_req_phase req_phase;
    http_resp_phase resp_phase;
    gw_body req_body, resp_body;
    gw_chunked req_chunks, resp_chunks;
    int client_minor;
    unsigned client_keepalive : 1;  // the client keeps its connection after this exchange
    unsigned up_keepalive : 1;      // so does the upstream
    unsigned req_is_head : 1;
    unsigned resp_sent : 1;          // part of this response went toward the client
    unsigned resp_dechunk : 1;       // a chunked response for an HTTP/1.0 client: framing taken off
    unsigned reuse : 1;              // the request goes over the upstream kept from the last one
    unsigned replay_considered : 1;  // keep_replay looked at this request
    unsigned retried : 1;            // sent again on a new connection: never a second time
    char method[24];
    int status;  // the response's status (or our error reply's), for the access log
} http_exchange;

// Where a password check stands. A check runs off the loop; meanwhile the request stays
// in its buffer, and once the answer came it is parsed again and the answer taken.
enum { AUTH_NONE = 0, AUTH_PENDING, AUTH_GRANTED, AUTH_DENIED };

// Where the answers for a tunnel go: the driver's event sources (tunnel.c). Phases hand
// these to whoever calls back, so that only the driver's file calls the driver.
typedef struct {
    void (*resolved)(void *arg, res_status status, const res_addr *addrs, size_t n);
    void (*key_ready)(void *arg);
    void (*password_checked)(void *arg, int ok);
    void (*upstream)(gw_loop *loop, gw_watcher *w, uint32_t events);
} tunnel_events;

// A client protocol (sniproxy's struct Protocol): how a tunnel reads its request and
// answers it. doors.c has one per protocol.
typedef struct tunnel_door {
    const char *name;            // in the access log
    unsigned has_replies : 1;    // it has success and error replies
    unsigned plain_stream : 1;   // a byte stream with no proxy protocol (forward, transparent)
    unsigned original_dest : 1;  // the destination is the connection's original one (transparent)
    unsigned exchanges : 1;      // requests of their own (http_proxy): each logged, with method and status
    // read_request takes what the client sent so far (in to_up): STEP_NEXT once the
    // destination is known (T_ROUTE) or the door changed (T_HTTP_PROXY), STEP_WAIT for
    // more bytes, STEP_FAIL with the error to answer.
    tunnel_step (*read_request)(gw_tunnel *t);
    // reply_ok queues the success reply (upstream established).
    void (*reply_ok)(gw_tunnel *t);
    // reply_err queues the refusal of |err| for the phase the tunnel is in. Returns 1 to
    // flush it and close, 0 to close at once, -1 to reset the client (no way to say no).
    int (*reply_err)(gw_tunnel *t, gw_err err, const char *reason);
} tunnel_door;

extern const tunnel_door door_detect, door_socks5, door_socks4, door_connect, door_http, door_forward, door_transparent;

typedef struct {
    gw_watcher w;
    unsigned readable : 1;          // the socket may have bytes (or TLS has decrypted bytes)
    unsigned writable : 1;          // the socket may take bytes
    unsigned eof : 1;               // this side will send nothing more
    unsigned shut : 1;              // we sent FIN / close_notify toward this side
    unsigned read_wants_write : 1;  // TLS read needs the socket writable
    unsigned write_wants_read : 1;  // TLS write needs the socket readable
    unsigned truncated : 1;         // upstream EOF without close_notify
    unsigned write_dead : 1;        // writes toward this side failed: what it still sends goes on,
                                    // what comes for it is dropped (nothing lost the other way)
    unsigned error : 1;             // the socket reported an error (a reset) to the loop
    unsigned hup : 1;               // the socket hung up both ways
    unsigned rdhup : 1;             // the peer's FIN arrived (it may still wait behind data)
} side;

struct gw_tunnel {
    gw_tunnel_host *host;
    pol_config *cfg;  // the snapshot this tunnel (or this http_proxy request) uses
    size_t listener_index;
    tunnel_state state;
    const tunnel_door *door;  // the client's protocol
    const tunnel_events *events;
    // The driver's records: what the event sources saw, and what a phase decided.
    unsigned advancing : 1;       // tunnel_advance is running: an event only records itself
    unsigned again : 1;           // an event came while advancing: run the phases once more
    unsigned timed_out : 1;       // the phase's timer fired
    gw_err fail_err;              // STEP_FAIL: the error to answer with (the reason is in reason)
    tunnel_end_how end_how;       // STEP_CLOSE: how to close
    gw_err admission;             // not admitted at accept (allow list, max_connections): the answer
    unsigned share;               // its client's bucket + 1 in gw_share_counts (counted); 0: none
    int share_full;               // admission GW_ERR_LIMIT because its client holds its whole share
    int flush_reset;              // T_FLUSHING after an upstream failure: reset the client once all is delivered
    int flush_close;              // T_FLUSHING after a complete exchange the client ends: close once all is
                                  // written, unless the client sent more (then wait for its close)
    int flush_linger;             // T_FLUSHING: wait for the client's close after FIN (ms); 0: the error reply's 2 s
    int client_first;             // a plain stream's client closed before sending anything (a TCP probe)
    side client_io, upstream_io;  // readiness and shutdown of each socket
    int client_fd;
    gw_upstream upstream;
    gw_buf *to_up;         // read from the client, to be written upstream
    gw_buf *to_down;       // read from upstream (or our replies), to be written to the client
    gw_timer timer;        // the current phase's deadline
    gw_timer yield_timer;  // continues a relay that yielded to other tunnels
    const pol_rule *rule;
    pol_dest dest;     // what the client asked for
    const char *user;  // the authenticated proxy user (owned by cfg->users), for the access log
    uint32_t caller;   // the local user behind the client connection, or GW_CALLER_NONE
    // front.c: reading the request.
    struct {
        size_t head_scanned;         // how far an HTTP head was searched for its end
        gw_passcheck_job *auth_job;  // a password check under way (off the loop)
        uint8_t auth_state;          // AUTH_*: what the last check said, for the re-parse after it
        uint8_t auth_waited;         // the request timer was extended once for a pending check
        const char *auth_user;       // the user that check was for
    } front;
    // dial.c: from the destination to an established upstream.
    struct {
        res_query *query;
        char want_host[256];  // what the client asked for (T_ROUTE)
        uint16_t want_port;
        unsigned resolved : 1;  // the DNS answer came (dns_status, addrs)
        res_status dns_status;
        char connect_host[256];
        uint16_t connect_port;
        char server_name[256];
        int confirm_grace;  // a session ticket arrived while confirming
        int ocsp_counted;   // the server's OCSP staple went to the metrics
        // A rule with via: the parent is what is connected to; it is asked for via_target.
        char via_target[300];     // "host:port" the parent connects to (the rule's upstream, or the destination)
        char via_addr[300];       // the parent's address connected to, as text
        gw_parent_talk via_talk;  // the conversation with the parent (gateway/upstream/parent.c)
        int via_done;             // the parent opened via_target
        int via_blame;            // the failure is the parent's: Proxy-Status names it as next-hop
        int unconfirmed;          // a full TLS 1.3 handshake went on without waiting for the server's verdict
        res_addr addrs[RES_MAX_ADDRS];
        size_t num_addrs, next_addr;
        struct tunnel_race_s *race;  // T_CONNECTING: the attempts under way
        gw_err last_connect_err;
        uint8_t pool_key[32];            // the upstream pool's key for the address connected to
        unsigned fresh : 1;              // a retried request: a new connection, not one from the pool
        struct sockaddr_storage orig;    // transparent: where the client was going
        res_addr orig_addr;              // ... as an address to connect to
        char orig_ip[INET6_ADDRSTRLEN];  // ... in words
    } dial;
    // The access log.
    uint64_t t_start, t_phase, last_activity;
    uint64_t close_notify_at;  // the client ended: our close_notify waits for the ticket until then
    uint64_t tfo_hold_until;   // the ClientHello waits (corked) for the client's first bytes until then
    int tfo_hold_done;         // ... or no longer: they came, the time passed, or the SYN left
    pol_rule_stats *counted;   // the rule whose active count holds this tunnel (status page)
    int live_counted;          // counted among the live tunnels of its listener and protocol
    uint64_t hs_start_us;
    tunnel_conn conn_kind;
    int64_t dns_ms, connect_ms, handshake_ms;
    uint64_t up_bytes, down_bytes;
    char client_text[64], upstream_text[300];
    gw_result result;  // how it ended, once known
    char *reason;      // why it failed, in words (allocated when first set: most tunnels need none)
    // http_proxy.c (door_http): raw bytes from each side are parsed, framed and rewritten
    // into the buffer toward the other side.
    struct {
        gw_buf *from_client, *from_up;
        gw_buf *replay;          // a copy of the request, to send again if a reused connection was closed
        size_t resp_scanned;     // how far the response was searched for a complete head
        unsigned http_idle : 1;  // between requests: nothing to log if the connection ends
        uint64_t head_deadline;  // a later request head must be whole by then (loop ms); 0: none
        http_exchange x;         // the current request and its response
    } http;
    gw_tunnel *prev, *next;
};

// The connection attempts of a dial under way (Happy Eyeballs), allocated only while it runs.
#define TUNNEL_ATTEMPTS 4
typedef struct tunnel_race_s {
    struct {
        int fd;  // -1: a free slot
        gw_watcher w;
        int in_side;       // watched through upstream_io.w (see attempt_watcher)
        uint32_t addr;     // index in dial.addrs
        uint64_t started;  // monotonic ms
    } a[TUNNEL_ATTEMPTS];
    uint64_t last_start;
} tunnel_race;

// Phases by what they do, instead of enum arithmetic.
static inline int tunnel_reading_request(const gw_tunnel *t) {
    return t->state <= T_HTTP_HEAD;
}

static inline int tunnel_dialing(const gw_tunnel *t) {
    return t->state >= T_ROUTE && t->state <= T_ESTABLISHED;
}

static inline int tunnel_flowing(const gw_tunnel *t) {
    return t->state == T_RELAY || t->state == T_HTTP_PROXY;
}

// A plain byte stream with no proxy protocol (forward and transparent listeners): nothing
// to answer the client with, and no reply to hold back while confirming.
static inline int tunnel_is_plain_stream(const gw_tunnel *t) {
    return t->door->plain_stream;
}

// The longest reason kept for the access log and error replies (set_reason cuts there).
#define REASON_MAX 600

// ---- tunnel.c: the driver ----
// tunnel_advance runs the tunnel's phases until one waits; every event source (readiness,
// timers, a DNS answer, a key's signature, a password check's answer: all in tunnel.c)
// records what it saw and calls it. It is never re-entered: an event during a run only
// asks for another round.
void tunnel_advance(gw_tunnel *t);

// ---- record.c: what every phase uses ----
// tunnel_fail records |err| and its reason for the driver to answer with: STEP_FAIL.
tunnel_step tunnel_fail(gw_tunnel *t, gw_err err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
// tunnel_end records how the tunnel ends (|reason| may be NULL): STEP_CLOSE.
tunnel_step tunnel_end(gw_tunnel *t, gw_result result, tunnel_end_how how, const char *reason);
const pol_listener *tunnel_listener_of(const gw_tunnel *t);
void tunnel_set_reason(gw_tunnel *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tunnel_clear_reason(gw_tunnel *t);
const char *tunnel_reason_of(const gw_tunnel *t);
void tunnel_log_access(gw_tunnel *t);
int tunnel_queue_down(gw_tunnel *t, const void *p, size_t len);
// tunnel_set_timer (re)starts the current phase's deadline.
void tunnel_set_timer(gw_tunnel *t, uint64_t ms);
// tunnel_yield continues the tunnel right after the other tunnels of this batch ran.
void tunnel_yield(gw_tunnel *t);

// ---- doors.c: the client protocols ----
// tunnel_read_request reads what the client sent so far into to_up. Returns STEP_WAIT (read
// what there was), STEP_CLOSE (the client failed).
tunnel_step tunnel_read_request(gw_tunnel *t);
// tunnel_take_request_head parses the request head at the start of |b| (to_up or from_client).
// Returns STEP_NEXT with |hr| filled, STEP_WAIT if more bytes are needed, STEP_FAIL.
tunnel_step tunnel_take_request_head(gw_tunnel *t, gw_buf *b, gw_http_request *hr);
// tunnel_want records the destination the client asked for and moves to T_ROUTE.
tunnel_step tunnel_want(gw_tunnel *t, const char *host, uint16_t port);
// tunnel_unadmitted fails a client that was not admitted at accept (outside `allow`, or
// over max_connections) with that error; STEP_NEXT if it was admitted. It runs before any
// credential is looked at, so such a client can never find out whether a password is right.
tunnel_step tunnel_unadmitted(gw_tunnel *t);

// ---- auth.c: proxy users ----
// tunnel_check_credentials says whether |name| / |pass| is a proxy user: 1 yes (t->user
// set), 0 no, -1 the answer is being worked out off the loop (the request is parsed again
// when it comes), -2 refused for now (too many checks waiting).
int tunnel_check_credentials(gw_tunnel *t, const char *name, size_t name_len, const char *pass, size_t pass_len);
// tunnel_http_authorized checks Proxy-Authorization: Basic when auth.users_file is set:
// STEP_NEXT yes; STEP_FAIL no (407, or 503); STEP_WAIT the check is under way.
tunnel_step tunnel_http_authorized(gw_tunnel *t, const gw_http_request *hr);

// ---- dial.c: from a destination to an established upstream ----
tunnel_step tunnel_phase_route(gw_tunnel *t);
tunnel_step tunnel_phase_resolving(gw_tunnel *t);
tunnel_step tunnel_phase_connect_next(gw_tunnel *t);
tunnel_step tunnel_phase_connecting(gw_tunnel *t);
// record.c, for the status page: tunnel_count_route counts a routed tunnel (or request)
// for its rule and its listener; tunnel_uncount lets the counts go (a close, a snapshot
// the tunnel leaves).
void tunnel_count_route(gw_tunnel *t);
void tunnel_uncount(gw_tunnel *t, int closing);
// via.c: the parent proxy step (T_VIA, entered by the dial once TCP to the parent is up);
// when tunnel_via_done, the driver goes on with tunnel_after_parent (dial.c): the rule's
// mTLS, or the plain relay.
void tunnel_via_begin(gw_tunnel *t);
// tunnel_via_verdict: the metrics' name for how the parent failed (a GW_ERR_VIA_* or other).
gw_via_result tunnel_via_verdict(gw_err err);
tunnel_step tunnel_phase_via(gw_tunnel *t);
int tunnel_via_done(const gw_tunnel *t);
tunnel_step tunnel_via_timeout(gw_tunnel *t);
tunnel_step tunnel_after_parent(gw_tunnel *t);
// tunnel_session_where is the session cache's "where" for a connection to |upstream|
// (the address, or through a parent the host:port it was asked for) under |server_name|
// for rule |r|: its server_uri and its parent are part of it.
void tunnel_session_where(const char *upstream, const char *server_name, const pol_rule *r, char *out, size_t cap);
tunnel_step tunnel_phase_tls(gw_tunnel *t);
tunnel_step tunnel_phase_established(gw_tunnel *t);
// tunnel_use_addresses checks |addrs| against deny_addresses and the gateway's own
// listeners, keeps the allowed ones and moves to T_CONNECT_NEXT; STEP_FAIL if none is.
tunnel_step tunnel_use_addresses(gw_tunnel *t, const res_addr *addrs, size_t n);
// tunnel_drop_dial stops whatever the dial has under way (query, connection).
void tunnel_drop_dial(gw_tunnel *t);
// tunnel_drop_attempts closes the connection attempts of a dial under way.
void tunnel_drop_attempts(gw_tunnel *t);
// tunnel_order_addresses interleaves the families of dial.addrs, the one that connected
// last for this host first (RFC 8305), when happy_eyeballs_ms is on.
void tunnel_order_addresses(gw_tunnel *t);
// tunnel_timeout_dial answers the timer of a dialing phase.
tunnel_step tunnel_timeout_dial(gw_tunnel *t);

// ---- relay.c: bytes both ways ----
// What failed in a read or write of one side: each caller decides what it means (the relay
// flushes what the upstream sent, then passes its reset on; the http exchange answers the
// request, or resets a client that got part of a response).
typedef struct {
    int upstream;      // the upstream's side failed (else the client's)
    int reading;       // a read (else a write)
    gw_result result;  // how the tunnel ends because of it
    gw_err err;        // a read that showed the server rejected us: the error to answer with; else NONE
    char reason[600];
} tunnel_io_failure;
// Each side's read and write: 1 progress, 0 nothing, -1 failed (*|f| says what).
int tunnel_client_read(gw_tunnel *t, gw_buf **dst, tunnel_io_failure *f);
int tunnel_up_read(gw_tunnel *t, gw_buf **dst, tunnel_io_failure *f);
int tunnel_up_write(gw_tunnel *t, gw_buf **src, tunnel_io_failure *f);
int tunnel_client_write(gw_tunnel *t, gw_buf **src, tunnel_io_failure *f);
// tunnel_client_failure: the client's connection broke (its reset is passed on to the
// upstream), or it did not take a reply (closed).
tunnel_step tunnel_client_failure(gw_tunnel *t, const tunnel_io_failure *f);
tunnel_step tunnel_phase_relay(gw_tunnel *t);
// tunnel_phase_flush writes the last queued bytes (T_FLUSHING), then FIN (or the upstream's
// reset), and waits for the client to close so the reply is not destroyed by a reset.
tunnel_step tunnel_phase_flush(gw_tunnel *t);
// tunnel_release_if_empty returns an emptied buffer to the pool: an idle connection holds none.
void tunnel_release_if_empty(gw_tunnel *t, gw_buf **b);
// tunnel_flush_then_reset ends a relaying tunnel whose upstream broke: what the upstream
// sent is flushed to the client, then the reset passed on (bounded by the flush deadline).
tunnel_step tunnel_flush_then_reset(gw_tunnel *t);

// ---- preconnect.c ----
// tunnel_take_preconnected moves a parked connection for the tunnel's rule and
// destination (dial.connect_host, connect_port, server_name) into t->upstream. Returns 1 if
// there was one.
int tunnel_take_preconnected(gw_tunnel *t);

// ---- transparent.c ----
// tunnel_transparent_start begins a tunnel of a transparent listener whose connection was
// going to |orig| (NULL: nothing redirected it).
tunnel_step tunnel_transparent_start(gw_tunnel *t, const struct sockaddr *orig);
// tunnel_phase_sniff looks at the first bytes (T_SNIFF) for an HTTP request head's Host;
// tunnel_sniff_give_up routes by the original address alone (the timer fired).
tunnel_step tunnel_phase_sniff(gw_tunnel *t);
tunnel_step tunnel_sniff_give_up(gw_tunnel *t);

// ---- http_proxy.c ----
// tunnel_http_start_request takes the request head |hr| at the start of from_client: checks
// it, keeps the current upstream if it goes to the same destination (else T_ROUTE), and
// writes the head in origin-form into to_up.
tunnel_step tunnel_http_start_request(gw_tunnel *t, const gw_http_request *hr);
tunnel_step tunnel_phase_http(gw_tunnel *t);
// tunnel_http_early_ok says whether the request waiting in to_up may go as TLS early data:
// a safe method (RFC 9110 section 9.2.1), no body, and room for the Early-Data header.
int tunnel_http_early_ok(const gw_tunnel *t);
// tunnel_http_mark_early adds "Early-Data: 1" (RFC 8470) to the request head in to_up.
void tunnel_http_mark_early(gw_tunnel *t);
// tunnel_http_upstream_failed: the upstream broke (reset, TLS error) during an exchange.
tunnel_step tunnel_http_upstream_failed(gw_tunnel *t, const tunnel_io_failure *f);
// tunnel_http_timeout answers the timer during the exchange (idle, a slow later head).
tunnel_step tunnel_http_timeout(gw_tunnel *t);

#endif
