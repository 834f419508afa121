#include "gateway/tunnel.h"

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

#include "gateway/h1.h"
#include "gateway/http.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/netutil.h"
#include "gateway/passcheck.h"
#include "gateway/socks.h"
#include "gateway/upstream.h"
#include "policy/users.h"

// One value per phase of a tunnel's life.
typedef enum {
    T_DETECT,           // waiting for the first byte, which picks the protocol
    T_SOCKS5_GREETING,  // waiting for VER NMETHODS METHODS
    T_SOCKS5_AUTH,      // username/password method chosen, waiting for RFC 1929 credentials
    T_SOCKS5_REQUEST,   // method chosen (and credentials accepted), waiting for the CONNECT request
    T_SOCKS4_REQUEST,   // waiting for the rest of a SOCKS4/4a request
    T_HTTP_HEAD,        // reading an HTTP request head (CONNECT)
    T_RESOLVING,        // a DNS query is out
    T_CONNECTING,       // TCP connect to addrs[next_addr - 1] in progress
    T_HANDSHAKING,      // TLS client handshake in progress
    T_CONFIRMING,       // full TLS 1.3 handshake done; waiting for the server's first record
    T_RELAY,            // success reply queued; bytes flow both ways
    T_HTTP_FORWARD,     // http_proxy requests: messages framed and rewritten both ways
    T_REJECTING,        // error reply queued; flushing it, then closing
    T_CLOSED,           // closed; freed after the current batch
} tunnel_state;

typedef enum { P_NONE = 0, P_SOCKS5, P_SOCKS4, P_HTTP_CONNECT, P_FORWARD, P_HTTP_FORWARD } tunnel_proto;

static const char *const proto_names[] = {"-", "socks5", "socks4", "http-connect", "forward", "http"};

// HTTP forward proxy: where the current request and its response are.
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
} side;

struct gw_tunnel {
    gw_worker *worker;
    pol_config *cfg;
    size_t listener_index;
    tunnel_state state;
    tunnel_proto proto;
    gw_err pending;  // answer the request with this error (limits, allow list)
    side client, up;
    int client_fd;
    gw_upstream upstream;
    gw_buf *to_up;    // read from the client, to be written upstream
    gw_buf *to_down;  // read from upstream (or our replies), to be written to the client
    gw_timer timer;   // the current phase's deadline
    gw_timer resume;  // continues a relay that yielded to other tunnels
    res_query *query;
    const pol_rule *rule;
    pol_dest dest;
    char connect_host[256];
    uint16_t connect_port;
    char server_name[256];
    int confirm_grace;  // a session ticket arrived while confirming
    res_addr addrs[RES_MAX_ADDRS];
    size_t num_addrs, next_addr;
    gw_err last_connect_err;
    uint64_t t_start, t_phase, last_activity;
    uint64_t hs_start_us;
    int64_t dns_ms, connect_ms, handshake_ms;
    uint64_t up_bytes, down_bytes;
    char client_text[64], upstream_text[80];
    char result[40];
    char *reason;  // why it failed, in words (allocated when first set: most tunnels need none)
    // HTTP forward proxy (P_HTTP_FORWARD): raw bytes from each side are parsed, framed and
    // rewritten into the buffer toward the other side.
    gw_buf *from_client, *from_up;
    size_t head_scanned, resp_scanned;  // how far each was searched for a complete head
    uint8_t req_phase, resp_phase;
    gw_body req_body, resp_body;
    gw_chunked req_chunks, resp_chunks;
    int client_minor;
    unsigned client_keepalive : 1;  // the client keeps its connection after this exchange
    unsigned up_keepalive : 1;      // so does the upstream
    unsigned req_is_head : 1;
    unsigned resp_sent : 1;   // part of this response went toward the client
    unsigned http_idle : 1;   // between requests: nothing to log if the connection ends
    char method[24];
    int status;
    const char *user;  // the authenticated proxy user (owned by cfg->users), for the access log
    gw_passcheck_job *auth_job;  // a password check under way (off the loop)
    uint8_t auth_state;          // AUTH_*: what the last check said, for the re-parse after it
    const char *auth_user;       // the user that check was for
    gw_tunnel *prev, *next;
};

atomic_int gw_active_tunnels;
atomic_int gw_rejecting_tunnels;

static void run(gw_tunnel *t);
static void flush_rejection(gw_tunnel *t);
static void release_if_empty(gw_tunnel *t, gw_buf **b);
static void start_connect(gw_tunnel *t);
static void established(gw_tunnel *t);
static void upstream_failed(gw_tunnel *t, const char *result, const char *reason);
static void http_start_request(gw_tunnel *t, const gw_http_request *hr);
static void http_run(gw_tunnel *t);

static uint64_t monotonic_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

gw_tunnel *gw_tunnel_next(gw_tunnel *t) {
    return t->next;
}

static const pol_listener *listener_of(const gw_tunnel *t) {
    return &t->cfg->listeners[t->listener_index];
}

// ---- closing ----

static void tunnel_free(void *p) {
    free(((gw_tunnel *)p)->reason);
    free(p);
}

#define REASON_MAX 600

static void set_reason(gw_tunnel *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_reason(gw_tunnel *t, const char *fmt, ...) {
    if (t->reason == NULL && (t->reason = malloc(REASON_MAX)) == NULL) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->reason, REASON_MAX, fmt, ap);
    va_end(ap);
}

static void clear_reason(gw_tunnel *t) {
    if (t->reason != NULL) {
        t->reason[0] = '\0';
    }
}

static const char *reason_of(const gw_tunnel *t) {
    return t->reason != NULL && t->reason[0] ? t->reason : NULL;
}

static void log_access(gw_tunnel *t) {
    char dest[300] = "";
    if (t->dest.host[0] && t->dest.family == AF_INET6) {
        snprintf(dest, sizeof(dest), "[%s]:%u", t->dest.host, t->dest.port);
    } else if (t->dest.host[0]) {
        snprintf(dest, sizeof(dest), "%s:%u", t->dest.host, t->dest.port);
    }
    const char *tls = NULL;
    int resumed = -1;
    if (t->upstream.ssl != NULL && SSL_is_init_finished(t->upstream.ssl)) {
        tls = SSL_get_version(t->upstream.ssl);
        resumed = SSL_session_reused(t->upstream.ssl) ? 1 : 0;
    }
    gw_access_record r = {
        .client = t->client_text,
        .listener = listener_of(t)->name,
        .proto = proto_names[t->proto],
        .dest = dest[0] ? dest : NULL,
        .rule = t->rule ? t->rule->where : NULL,
        .action = t->rule ? pol_action_name(t->rule->action) : NULL,
        .identity = t->rule && t->rule->identity ? t->rule->identity->spec.name : NULL,
        .upstream = t->upstream_text[0] ? t->upstream_text : NULL,
        .sni = t->rule && t->rule->action == POL_ACTION_MTLS && !gw_host_is_ip(t->server_name) ? t->server_name : NULL,
        .tls = tls,
        .resumed = resumed,
        .dns_ms = t->dns_ms,
        .connect_ms = t->connect_ms,
        .handshake_ms = t->handshake_ms,
        .up_bytes = t->up_bytes,
        .down_bytes = t->down_bytes,
        .duration_ms = (int64_t)(gw_loop_now(t->worker->loop) - t->t_start),
        .result = t->result,
        .reason = reason_of(t),
        .method = t->proto == P_HTTP_FORWARD && t->method[0] ? t->method : NULL,
        .user = t->user,
        .status = t->proto == P_HTTP_FORWARD ? t->status : 0,
    };
    gw_access_log(&r);
    gw_metrics_tunnel_done(t->rule ? (int)t->rule->action : -1, t->result, t->up_bytes, t->down_bytes);
}

// close_tunnel is the one way out: it logs the access line and releases everything.
static void close_tunnel(gw_tunnel *t, const char *result, const char *reason) {
    if (t->state == T_CLOSED) {
        return;
    }
    gw_loop *loop = t->worker->loop;
    if (result != NULL && (t->result[0] == '\0' || strcmp(t->result, "ok") == 0)) {
        snprintf(t->result, sizeof(t->result), "%s", result);
    }
    if (reason != NULL && reason_of(t) == NULL) {
        set_reason(t, "%s", reason);
    }
    if (!(t->proto == P_HTTP_FORWARD && t->http_idle)) {
        log_access(t);
    }
    t->state = T_CLOSED;
    gw_timer_stop(loop, &t->timer);
    gw_timer_stop(loop, &t->resume);
    res_query_detach(t->query);
    t->query = NULL;
    gw_passcheck_cancel(t->auth_job);
    t->auth_job = NULL;
    gw_watcher_remove(loop, &t->client.w);
    gw_watcher_remove(loop, &t->up.w);
    close(t->client_fd);
    gw_upstream_close(&t->upstream);
    gw_buf_put(&t->worker->pool, t->to_up);
    gw_buf_put(&t->worker->pool, t->to_down);
    gw_buf_put(&t->worker->pool, t->from_client);
    gw_buf_put(&t->worker->pool, t->from_up);
    t->to_up = t->to_down = t->from_client = t->from_up = NULL;
    if (t->pending != GW_ERR_NONE) {
        atomic_fetch_sub(&gw_rejecting_tunnels, 1);
    } else {
        atomic_fetch_sub(&gw_active_tunnels, 1);
    }
    gw_worker *w = t->worker;
    if (t->prev) {
        t->prev->next = t->next;
    } else {
        w->tunnels = t->next;
    }
    if (t->next) {
        t->next->prev = t->prev;
    }
    w->num_tunnels--;
    pol_config_unref(t->cfg);
    t->cfg = NULL;
    gw_loop_defer_free(loop, tunnel_free, t);
    gw_worker_tunnel_closed(w);
}

void gw_tunnel_abort(gw_tunnel *t, const char *reason) {
    close_tunnel(t, "aborted", reason);
}

void gw_tunnel_drain(gw_tunnel *t) {
    // An HTTP client connection between requests has nothing in flight: close it now.
    // Others finish; responses from now on say Connection: close.
    if (t->state == T_HTTP_FORWARD && t->http_idle && gw_buf_len(t->to_down) == 0 &&
        gw_buf_len(t->from_client) == 0) {
        close_tunnel(t, "ok", NULL);
    }
}

// ---- replies ----

static int queue_down(gw_tunnel *t, const void *p, size_t len) {
    if (t->to_down == NULL && (t->to_down = gw_buf_get(&t->worker->pool)) == NULL) {
        return 0;
    }
    return gw_buf_append(t->to_down, p, len) == len;
}

// queue_http_error queues the error response for |err|. |reason| is the tunnel's reason,
// which set_reason caps at REASON_MAX: the one cap that makes the reply fit, so its
// Content-Length is always the length of the body sent.
static void queue_http_error(gw_tunnel *t, gw_err err, const char *reason) {
    const gw_err_info *info = gw_err_describe(err);
    const char *proxy_status = info->proxy_status;
    if ((err == GW_ERR_DENIED || err == GW_ERR_NO_RULE) && t->dest.family == 0) {
        proxy_status = "http_request_denied";  // a name, not an IP, was refused
    }
    char body[REASON_MAX + 1];
    size_t body_len = 0;
    char details[2 * REASON_MAX];
    size_t n = 0;
    for (const char *p = reason; *p && body_len < REASON_MAX - 1; p++) {
        char c = (unsigned char)*p < ' ' || *p == 0x7f ? ' ' : *p;
        body[body_len++] = c;
        if (c == '"' || c == '\\') {
            details[n++] = '\\';
        }
        details[n++] = c;
    }
    body[body_len++] = '\n';
    body[body_len] = '\0';
    details[n] = '\0';
    char head[3 * REASON_MAX + 512];
    int len = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\n", info->http_status,
                       gw_http_reason_phrase(info->http_status));
    if (proxy_status != NULL) {
        len += snprintf(head + len, sizeof(head) - (size_t)len, "Proxy-Status: mtlsgw; error=%s; details=\"%s\"\r\n",
                        proxy_status, details);
    }
    if (info->http_status == 407) {
        len += snprintf(head + len, sizeof(head) - (size_t)len, "Proxy-Authenticate: Basic realm=\"mtlsgw\"\r\n");
    }
    len += snprintf(head + len, sizeof(head) - (size_t)len,
                    "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                    body_len, body);
    assert((size_t)len < sizeof(head));
    queue_down(t, head, (size_t)len);
}

// reject answers the client with |err| in its protocol, then closes.
static void reject(gw_tunnel *t, gw_err err, const char *reason) {
    const gw_err_info *info = gw_err_describe(err);
    t->status = info->http_status;
    snprintf(t->result, sizeof(t->result), "%s", info->result);
    set_reason(t, "%s", reason);
    gw_upstream_close(&t->upstream);
    gw_watcher_remove(t->worker->loop, &t->up.w);
    res_query_detach(t->query);
    t->query = NULL;
    uint8_t reply[32];
    switch (t->proto) {
        case P_SOCKS5:
            queue_down(t, reply, gw_socks5_encode_reply(info->socks5_rep, NULL, reply));
            break;
        case P_SOCKS4:
            queue_down(t, reply, gw_socks4_encode_reply(info->socks4_code, NULL, reply));
            break;
        case P_HTTP_CONNECT:
        case P_HTTP_FORWARD:
            queue_http_error(t, err, reason_of(t) ? t->reason : reason);
            break;
        default:
            break;  // forward listeners and unknown protocols: just close
    }
    // Discard what the client sent; keep reading so a close does not become a RST that
    // destroys the reply before the client reads it.
    gw_buf_put(&t->worker->pool, t->to_up);
    gw_buf_put(&t->worker->pool, t->from_client);
    gw_buf_put(&t->worker->pool, t->from_up);
    t->to_up = t->from_client = t->from_up = NULL;
    t->http_idle = 0;
    t->state = T_REJECTING;
    gw_timer_start(t->worker->loop, &t->timer, 2000);
    if (gw_log_enabled(GW_LOG_DEBUG)) {
        gw_log(GW_LOG_DEBUG, "%s: %s", t->client_text, reason);
    }
}

static void queue_success(gw_tunnel *t) {
    uint8_t reply[32];
    struct sockaddr_storage bound;
    socklen_t bl = sizeof(bound);
    int have = getsockname(t->upstream.fd, (struct sockaddr *)&bound, &bl) == 0;
    switch (t->proto) {
        case P_SOCKS5:
            queue_down(t, reply, gw_socks5_encode_reply(0, have ? (struct sockaddr *)&bound : NULL, reply));
            break;
        case P_SOCKS4:
            queue_down(t, reply, gw_socks4_encode_reply(0x5a, have ? (struct sockaddr *)&bound : NULL, reply));
            break;
        case P_HTTP_CONNECT: {
            static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
            queue_down(t, ok, sizeof(ok) - 1);
            break;
        }
        default:
            break;
    }
}

// ---- timers ----

static void on_timer(gw_loop *loop, gw_timer *timer) {
    gw_tunnel *t = timer->data;
    char reason[200];
    switch (t->state) {
        case T_DETECT:
        case T_SOCKS5_GREETING:
        case T_SOCKS5_AUTH:
        case T_SOCKS5_REQUEST:
        case T_SOCKS4_REQUEST:
        case T_HTTP_HEAD:
            close_tunnel(t, "client_timeout", "client did not send a complete request in time");
            break;
        case T_RESOLVING:
            reject(t, GW_ERR_DNS_TIMEOUT, "DNS lookup did not finish in time");
            run(t);
            break;
        case T_CONNECTING:
            snprintf(reason, sizeof(reason), "connect to %s timed out after %d ms", t->upstream_text,
                     t->cfg->limits.connect_timeout_ms);
            t->last_connect_err = GW_ERR_CONNECT_TIMEOUT;
            set_reason(t, "%s", reason);
            gw_watcher_remove(loop, &t->up.w);
            gw_upstream_close(&t->upstream);
            start_connect(t);
            break;
        case T_HANDSHAKING:
            snprintf(reason, sizeof(reason), "TLS handshake with %s timed out after %d ms", t->upstream_text,
                     t->cfg->limits.handshake_timeout_ms);
            reject(t, GW_ERR_HANDSHAKE_TIMEOUT, reason);
            run(t);
            break;
        case T_CONFIRMING:
            // The server said nothing after the handshake: nothing says it rejected us.
            established(t);
            run(t);
            break;
        case T_RELAY:
        case T_HTTP_FORWARD: {
            uint64_t idle_ms = (uint64_t)t->cfg->limits.idle_timeout_s * 1000;
            uint64_t now = gw_loop_now(loop);
            if (now - t->last_activity >= idle_ms) {
                close_tunnel(t, "idle_timeout", "no data either way for idle_timeout_s");
            } else {
                gw_timer_start(loop, &t->timer, idle_ms - (now - t->last_activity));
            }
            break;
        }
        case T_REJECTING:
            close_tunnel(t, NULL, NULL);
            break;
        case T_CLOSED:
            break;
    }
}

static void on_resume(gw_loop *loop, gw_timer *timer) {
    run(timer->data);
}

// ---- events ----

static void mark(side *s, uint32_t events) {
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        s->readable = 1;
    }
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
        s->writable = 1;
    }
}

static int socket_error(int fd) {
    int e = 0;
    socklen_t l = sizeof(e);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l);
    return e;
}

// abort_socket makes the coming close() send a RST: one side's reset is passed on as a
// reset, so the other side cannot take a cut-off stream for a complete one.
static void abort_socket(int fd) {
    struct linger lg = {1, 0};
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
}

// client_failed ends a tunnel whose client connection broke (reset, error).
static void client_failed(gw_tunnel *t, const char *reason) {
    abort_socket(t->upstream.fd);
    close_tunnel(t, "client_reset", reason);
}

static void on_client(gw_loop *loop, gw_watcher *w, uint32_t events) {
    gw_tunnel *t = w->data;
    mark(&t->client, events);
    if ((events & EPOLLERR) && (t->state == T_RELAY || t->state == T_HTTP_FORWARD || t->state == T_REJECTING)) {
        // A reset is noticed even while backpressure keeps us from reading this side.
        int e = socket_error(t->client_fd);
        if (t->state == T_REJECTING) {
            close_tunnel(t, NULL, NULL);
        } else {
            client_failed(t, e ? strerror(e) : "connection reset");
        }
        return;
    }
    if ((events & (EPOLLHUP | EPOLLERR)) && t->state >= T_RESOLVING && t->state <= T_CONFIRMING) {
        close_tunnel(t, "client_closed", "client went away before the tunnel was established");
        return;
    }
    run(t);
}

static void on_upstream(gw_loop *loop, gw_watcher *w, uint32_t events) {
    gw_tunnel *t = w->data;
    mark(&t->up, events);
    if ((events & EPOLLERR) && (t->state == T_RELAY || t->state == T_HTTP_FORWARD)) {
        int e = socket_error(t->upstream.fd);
        upstream_failed(t, "upstream_reset", e ? strerror(e) : "connection reset");
        if (t->state == T_REJECTING) {
            flush_rejection(t);
        } else if (t->state == T_HTTP_FORWARD) {
            run(t);
        }
        return;
    }
    run(t);
}

// ---- routing ----

static void on_resolved(void *arg, res_status status, const res_addr *addrs, size_t n) {
    gw_tunnel *t = arg;
    t->query = NULL;
    t->dns_ms = (int64_t)(gw_monotonic_ms() - t->t_phase);
    gw_metrics_dns(status == RES_OK ? GW_DNS_OK
                   : status == RES_NOT_FOUND ? GW_DNS_NOT_FOUND
                   : status == RES_TIMEOUT ? GW_DNS_TIMEOUT : GW_DNS_FAILED);
    if (status != RES_OK) {
        char reason[400];
        snprintf(reason, sizeof(reason), "%s: %s", t->connect_host, res_status_text(status));
        reject(t, status == RES_TIMEOUT ? GW_ERR_DNS_TIMEOUT : GW_ERR_DNS, reason);
        run(t);
        return;
    }
    // Every address is checked before any is tried: rules decided on the name the client
    // asked for, deny_addresses decides on where that name leads.
    t->num_addrs = 0;
    const pol_cidr *denied = NULL;
    char denied_text[INET6_ADDRSTRLEN] = "";
    for (size_t i = 0; i < n; i++) {
        res_addr a = addrs[i];
        if (a.family == AF_INET6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a.addr)) {
            memmove(a.addr, a.addr + 12, 4);
            memset(a.addr + 4, 0, 12);
            a.family = AF_INET;
        }
        const pol_cidr *c = pol_config_denied_address(t->cfg, a.family, a.addr);
        if (c != NULL) {
            if (denied == NULL) {
                denied = c;
                inet_ntop(a.family, a.addr, denied_text, sizeof(denied_text));
            }
            continue;
        }
        t->addrs[t->num_addrs++] = a;
    }
    if (t->num_addrs == 0 && denied != NULL) {
        char reason[600];
        snprintf(reason, sizeof(reason), "%s%s%s is in deny_addresses (%s): the gateway does not connect there",
                 strcmp(t->connect_host, denied_text) == 0 ? "" : t->connect_host,
                 strcmp(t->connect_host, denied_text) == 0 ? "" : " resolves to ", denied_text, denied->text);
        reject(t, GW_ERR_ADDRESS_DENIED, reason);
        run(t);
        return;
    }
    t->next_addr = 0;
    t->last_connect_err = GW_ERR_HOST_UNREACHABLE;
    start_connect(t);
}

// start_connect tries the next resolved address; when none is left, the last error goes
// to the client.
static void start_connect(gw_tunnel *t) {
    gw_loop *loop = t->worker->loop;
    while (t->next_addr < t->num_addrs) {
        const res_addr *a = &t->addrs[t->next_addr++];
        struct sockaddr_storage ss;
        socklen_t len = gw_sockaddr_from(&ss, a->family, a->addr, t->connect_port);
        gw_format_addr((struct sockaddr *)&ss, t->upstream_text, sizeof(t->upstream_text));
        clear_reason(t);
        char why[REASON_MAX];
        gw_err err = gw_upstream_connect(&t->upstream, (struct sockaddr *)&ss, len, why, sizeof(why));
        if (err != GW_ERR_NONE) {
            set_reason(t, "%s", why);
            t->last_connect_err = err;
            continue;
        }
        t->state = T_CONNECTING;
        t->t_phase = gw_monotonic_ms();
        t->up = (side){0};
        gw_watcher_init(&t->up.w, t->upstream.fd, on_upstream, t);
        if (!gw_watcher_set(loop, &t->up.w, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)) {
            gw_upstream_close(&t->upstream);
            t->last_connect_err = GW_ERR_INTERNAL;
            continue;
        }
        gw_timer_start(loop, &t->timer, (uint64_t)t->cfg->limits.connect_timeout_ms);
        return;
    }
    char reason[700];
    snprintf(reason, sizeof(reason), "%s", reason_of(t) ? t->reason : "no address to connect to");
    reject(t, t->last_connect_err, reason);
    run(t);
}

// refuse_unadmitted answers a client that was not admitted at accept (outside `allow`,
// or over max_connections) with that error and returns 1. It runs before any credential
// is looked at, so such a client can never find out whether a password is right.
static int refuse_unadmitted(gw_tunnel *t) {
    if (t->pending == GW_ERR_NONE) {
        return 0;
    }
    reject(t, t->pending,
           t->pending == GW_ERR_LIMIT ? "max_connections reached" : "client address is not in the allow list");
    return 1;
}

// route decides what to do with the destination the client asked for.
static void route(gw_tunnel *t, const char *host, uint16_t port) {
    char reason[600];
    if (!pol_dest_init(&t->dest, host, port)) {
        snprintf(t->dest.host, sizeof(t->dest.host), "%s", host);
        snprintf(reason, sizeof(reason), "\"%s\" is not a valid host name or address", host);
        reject(t, GW_ERR_BAD_REQUEST, reason);
        return;
    }
    if (refuse_unadmitted(t)) {
        return;
    }
    t->rule = pol_config_lookup(t->cfg, &t->dest);
    char dest[300];
    if (t->dest.family == AF_INET6) {
        snprintf(dest, sizeof(dest), "[%s]:%u", t->dest.host, port);
    } else {
        snprintf(dest, sizeof(dest), "%s:%u", t->dest.host, port);
    }
    if (t->rule == NULL) {
        snprintf(reason, sizeof(reason), "no rule matches %s (default deny)", dest);
        reject(t, GW_ERR_NO_RULE, reason);
        return;
    }
    if (t->rule->action == POL_ACTION_DENY) {
        snprintf(reason, sizeof(reason), "%s denied by rule %s", dest, t->rule->where);
        reject(t, GW_ERR_DENIED, reason);
        return;
    }
    const pol_rule *r = t->rule;
    snprintf(t->connect_host, sizeof(t->connect_host), "%s", r->upstream_host ? r->upstream_host : t->dest.host);
    t->connect_port = r->upstream_port ? r->upstream_port : port;
    snprintf(t->server_name, sizeof(t->server_name), "%s", r->server_name ? r->server_name : t->connect_host);
    t->state = T_RESOLVING;
    t->t_phase = gw_monotonic_ms();
    // The DNS timeout is c-ares' own; this timer is only a backstop.
    gw_timer_start(t->worker->loop, &t->timer,
                   (uint64_t)t->cfg->resolver.timeout_ms * (uint64_t)t->cfg->resolver.tries * 2 + 1000);
    t->query = res_resolve(t->worker->resolver, t->connect_host, on_resolved, t);
}

static void established(gw_tunnel *t) {
    gw_loop *loop = t->worker->loop;
    if (!(t->proto == P_FORWARD && t->upstream.ssl != NULL && gw_upstream_needs_confirm(&t->upstream))) {
        gw_upstream_confirm(&t->upstream);
    }
    if (t->proto == P_HTTP_FORWARD) {
        t->state = T_HTTP_FORWARD;  // the request waiting in to_up goes out now
        t->last_activity = gw_loop_now(loop);
        gw_timer_start(loop, &t->timer, (uint64_t)t->cfg->limits.idle_timeout_s * 1000);
        return;
    }
    t->state = T_RELAY;
    queue_success(t);
    t->last_activity = gw_loop_now(loop);
    gw_timer_start(loop, &t->timer, (uint64_t)t->cfg->limits.idle_timeout_s * 1000);
}

// ---- request parsing ----

// read_request reads what the client sent so far into to_up. Returns 0 if the tunnel
// closed (EOF or error before a complete request).
static int read_request(gw_tunnel *t) {
    if (!t->client.readable || t->client.eof) {
        return 1;
    }
    if (t->to_up == NULL && (t->to_up = gw_buf_get(&t->worker->pool)) == NULL) {
        close_tunnel(t, "internal_error", "out of memory");
        return 0;
    }
    while (gw_buf_room(t->to_up) > 0) {
        ssize_t n = read(t->client_fd, t->to_up->data + t->to_up->end, gw_buf_room(t->to_up));
        if (n > 0) {
            t->to_up->end += (uint32_t)n;
            continue;
        }
        if (n == 0) {
            // The request may be complete: parse it first (a client may half-close).
            t->client.eof = 1;
            t->client.readable = 0;
            return 1;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN) {
            t->client.readable = 0;
            return 1;
        }
        close_tunnel(t, "client_error", strerror(errno));
        return 0;
    }
    return 1;
}

static void consume(gw_tunnel *t, size_t n) {
    t->to_up->start += (uint32_t)n;
}

static void on_passcheck(void *arg, int ok) {
    gw_tunnel *t = arg;
    t->auth_job = NULL;
    t->auth_state = ok ? AUTH_GRANTED : AUTH_DENIED;
    gw_metrics_password_check(ok ? GW_PASS_VERIFIED : GW_PASS_REJECTED);
    run(t);
}

// check_credentials says whether |name| / |pass| is a proxy user: 1 yes (t->user set), 0
// no, -1 the answer is being worked out off the loop (the caller stops; the request is
// parsed again when it comes), -2 refused for now (too many checks waiting: the client
// got 503).
static int check_credentials(gw_tunnel *t, const char *name, size_t name_len, const char *pass, size_t pass_len) {
    switch (t->auth_state) {
        case AUTH_PENDING:
            return -1;
        case AUTH_GRANTED:
            t->auth_state = AUTH_NONE;
            t->user = t->auth_user;
            return 1;
        case AUTH_DENIED:
            t->auth_state = AUTH_NONE;
            return 0;
        default:
            break;
    }
    const char *user = NULL;
    gw_pass_status st = gw_passcheck_start(t->worker->passcheck, t->cfg->users, name, name_len, pass, pass_len,
                                           on_passcheck, t, &user, &t->auth_job);
    switch (st) {
        case GW_PASS_OK:
        case GW_PASS_CACHE_HIT:
            gw_metrics_password_check(st == GW_PASS_OK ? GW_PASS_VERIFIED : GW_PASS_CACHED);
            t->user = user;
            return 1;
        case GW_PASS_PENDING:
            t->auth_state = AUTH_PENDING;
            t->auth_user = user;
            return -1;
        case GW_PASS_BUSY:
            gw_metrics_password_check(GW_PASS_QUEUE_FULL);
            t->proto = t->proto == P_SOCKS5 ? P_NONE : t->proto;  // no SOCKS5 reply fits mid-authentication
            reject(t, GW_ERR_LIMIT, "too many proxy password checks waiting; try again");
            return -2;
        default:
            gw_metrics_password_check(GW_PASS_REJECTED);
            return 0;
    }
}

// http_authorized checks Proxy-Authorization: Basic when auth.users_file is set: 1 yes;
// 0 no (the client got 407 with Proxy-Authenticate, or 503); -1 the check is under way.
static int http_authorized(gw_tunnel *t, const gw_http_request *hr) {
    if (t->cfg->users == NULL) {
        return 1;
    }
    const gw_http_header *h = gw_http_find_header(hr->headers, hr->num_headers, "Proxy-Authorization");
    if (h == NULL) {
        reject(t, GW_ERR_AUTH, "proxy authentication required (Proxy-Authorization: Basic)");
        return 0;
    }
    uint8_t decoded[600];
    size_t n = 0;
    const char *v = h->value;
    size_t vl = h->value_len;
    int ok = vl > 6 && strncasecmp(v, "Basic ", 6) == 0;
    if (ok) {
        v += 6, vl -= 6;
        while (vl > 0 && *v == ' ') {
            v++, vl--;
        }
        ok = EVP_DecodedLength(&n, vl) && n <= sizeof(decoded) &&
             EVP_DecodeBase64(decoded, &n, sizeof(decoded), (const uint8_t *)v, vl);
    }
    const uint8_t *colon = ok ? memchr(decoded, ':', n) : NULL;
    char name[64] = "";
    if (colon != NULL) {
        size_t nl = (size_t)(colon - decoded);
        snprintf(name, sizeof(name), "%.*s", (int)(nl < sizeof(name) - 1 ? nl : sizeof(name) - 1), (const char *)decoded);
        ok = check_credentials(t, (const char *)decoded, nl, (const char *)colon + 1, n - nl - 1);
    } else {
        ok = 0;
    }
    OPENSSL_cleanse(decoded, sizeof(decoded));
    if (ok < 0) {
        return ok == -1 ? -1 : 0;
    }
    if (!ok) {
        char reason[200];
        for (char *c = name; *c; c++) {
            *c = (unsigned char)*c < ' ' || *c == '"' ? '?' : *c;
        }
        snprintf(reason, sizeof(reason), colon ? "proxy authentication failed for user \"%s\""
                                               : "malformed Proxy-Authorization (expected Basic credentials)%s", name);
        reject(t, GW_ERR_AUTH, reason);
        return 0;
    }
    return 1;
}

// take_request_head parses the request head at the start of |b| (to_up or from_client).
// Returns 1 with |hr| filled, 0 if more bytes are needed, -1 if the client was answered
// with an error.
static int take_request_head(gw_tunnel *t, gw_buf *b, gw_http_request *hr) {
    const uint8_t *p = b->data + b->start;
    size_t len = gw_buf_len(b);
    size_t limit = (size_t)t->cfg->limits.header_max;
    // Parse only once a head may be complete (short beginnings are parsed at once so that
    // a client speaking something else is refused early).
    if (len > 256 && !gw_h1_head_complete(p, len, &t->head_scanned)) {
        if (len >= limit || gw_buf_room(b) == 0) {
            reject(t, GW_ERR_HEADER_TOO_LARGE, "request head is larger than header_max");
            return -1;
        }
        return 0;
    }
    gw_http_status st = gw_http_parse_request((const char *)p, len, hr);
    if (st == GW_HTTP_NEED_MORE) {
        if (len >= limit || gw_buf_room(b) == 0) {
            reject(t, GW_ERR_HEADER_TOO_LARGE, "request head is larger than header_max");
            return -1;
        }
        return 0;
    }
    if (st == GW_HTTP_ERR_TOO_LARGE || (st == GW_HTTP_OK && hr->head_len > limit)) {
        reject(t, GW_ERR_HEADER_TOO_LARGE, "request head is larger than header_max");
        return -1;
    }
    if (st != GW_HTTP_OK) {
        reject(t, GW_ERR_BAD_REQUEST,
               st == GW_HTTP_ERR_VERSION ? "only HTTP/1.0 and HTTP/1.1 are supported" : "malformed HTTP request");
        return -1;
    }
    t->head_scanned = 0;
    return 1;
}

static void parse_request(gw_tunnel *t) {
    gw_buf *b = t->to_up;
    if (b == NULL) {
        return;  // nothing read yet
    }
    const uint8_t *p = b->data + b->start;
    size_t len = gw_buf_len(b);
    size_t used = 0;
    gw_socks_request req;
    char user[256];
    if (t->state == T_DETECT) {
        if (len == 0) {
            return;
        }
        unsigned protos = listener_of(t)->protocols;
        if (p[0] == 5 && (protos & POL_PROTO_SOCKS5)) {
            t->proto = P_SOCKS5;
            t->state = T_SOCKS5_GREETING;
        } else if (p[0] == 4 && (protos & POL_PROTO_SOCKS4)) {
            t->proto = P_SOCKS4;
            t->state = T_SOCKS4_REQUEST;
        } else if (protos & POL_PROTO_HTTP) {
            t->proto = P_HTTP_CONNECT;
            t->state = T_HTTP_HEAD;
        } else {
            char reason[120];
            snprintf(reason, sizeof(reason), "first byte 0x%02x is no protocol enabled on listener %s", p[0],
                     listener_of(t)->name);
            reject(t, GW_ERR_BAD_REQUEST, reason);
            return;
        }
    }
    switch (t->state) {
        case T_SOCKS5_GREETING: {
            uint32_t methods = 0;
            gw_socks_status st = gw_socks5_parse_greeting(p, len, &used, &methods);
            if (st == GW_SOCKS_NEED_MORE) {
                return;
            }
            if (st != GW_SOCKS_OK) {
                t->proto = P_NONE;  // no reply format fits a broken greeting
                reject(t, GW_ERR_BAD_REQUEST, "malformed SOCKS5 greeting");
                return;
            }
            consume(t, used);
            uint8_t want = t->cfg->users ? GW_SOCKS5_METHOD_USERPASS : GW_SOCKS5_METHOD_NONE;
            if (t->pending != GW_ERR_NONE) {
                // Not admitted: no credentials are asked for or checked; the request that
                // follows gets the refusal (0x02, or 0x01 over max_connections).
                want = methods & (1u << GW_SOCKS5_METHOD_NONE) ? GW_SOCKS5_METHOD_NONE : GW_SOCKS5_METHOD_USERPASS;
            }
            if (!(methods & (1u << want))) {
                uint8_t no[2] = {5, GW_SOCKS5_METHOD_UNACCEPTABLE};
                t->proto = P_NONE;
                reject(t, GW_ERR_AUTH,
                       t->cfg->users ? "proxy authentication required: the SOCKS5 client offered no username/password"
                                     : "SOCKS5 client offered no acceptable authentication method");
                queue_down(t, no, 2);
                return;
            }
            uint8_t ok[2] = {5, want};
            queue_down(t, ok, 2);
            t->state = want == GW_SOCKS5_METHOD_USERPASS ? T_SOCKS5_AUTH : T_SOCKS5_REQUEST;
            parse_request(t);
            return;
        }
        case T_SOCKS5_AUTH: {
            char name[256] = "", pass[256] = "";
            gw_socks_status st = gw_socks5_parse_userpass(p, len, &used, name, pass);
            if (st == GW_SOCKS_NEED_MORE) {
                return;
            }
            int ok;
            if (t->pending != GW_ERR_NONE) {
                ok = st == GW_SOCKS_OK;  // not checked: any credentials get the same answer
            } else {
                ok = st == GW_SOCKS_OK ? check_credentials(t, name, strlen(name), pass, strlen(pass)) : 0;
            }
            OPENSSL_cleanse(pass, sizeof(pass));
            if (ok == -1) {
                return;  // being checked: the request is parsed again with the answer
            }
            if (ok == -2) {
                uint8_t no[2] = {1, 1};  // refused for now (503 in the log): RFC 1929 has one failure
                queue_down(t, no, 2);
                return;
            }
            if (!ok) {
                uint8_t no[2] = {1, 1};
                char reason[400];
                snprintf(reason, sizeof(reason), st == GW_SOCKS_OK ? "proxy authentication failed for user \"%.64s\""
                                                                   : "malformed SOCKS5 username/password request",
                         name);
                t->proto = P_NONE;
                reject(t, GW_ERR_AUTH, reason);
                queue_down(t, no, 2);
                return;
            }
            consume(t, used);
            uint8_t yes[2] = {1, 0};
            queue_down(t, yes, 2);
            t->state = T_SOCKS5_REQUEST;
            parse_request(t);
            return;
        }
        case T_SOCKS5_REQUEST: {
            gw_socks_status st = gw_socks5_parse_request(p, len, &used, &req);
            switch (st) {
                case GW_SOCKS_NEED_MORE:
                    return;
                case GW_SOCKS_OK:
                    consume(t, used);
                    route(t, req.host, req.port);
                    return;
                case GW_SOCKS_ERR_COMMAND: {
                    char reason[80];
                    snprintf(reason, sizeof(reason), "SOCKS5 command 0x%02x is not supported (only CONNECT)",
                             req.command);
                    reject(t, GW_ERR_BAD_COMMAND, reason);
                    return;
                }
                case GW_SOCKS_ERR_ADDRESS_TYPE:
                    reject(t, GW_ERR_BAD_ADDRESS_TYPE, "SOCKS5 address type is not IPv4, domain or IPv6");
                    return;
                case GW_SOCKS_ERR_NAME:
                    reject(t, GW_ERR_BAD_REQUEST, "SOCKS5 destination is not a valid host name");
                    return;
                default:
                    reject(t, GW_ERR_BAD_REQUEST, "malformed SOCKS5 request");
                    return;
            }
        }
        case T_SOCKS4_REQUEST: {
            gw_socks_status st = gw_socks4_parse_request(p, len, &used, &req, user);
            if (st == GW_SOCKS_NEED_MORE) {
                return;
            }
            if (refuse_unadmitted(t)) {
                return;
            }
            if (t->cfg->users != NULL) {
                reject(t, GW_ERR_AUTH, "proxy authentication required: SOCKS4 carries no password (use SOCKS5 or HTTP)");
                return;
            }
            if (st == GW_SOCKS_OK) {
                consume(t, used);
                route(t, req.host, req.port);
            } else if (st == GW_SOCKS_ERR_COMMAND) {
                reject(t, GW_ERR_BAD_COMMAND, "SOCKS4 command is not supported (only CONNECT)");
            } else {
                reject(t, GW_ERR_BAD_REQUEST, "malformed SOCKS4 request");
            }
            return;
        }
        case T_HTTP_HEAD: {
            gw_http_request hr;
            int r = take_request_head(t, b, &hr);
            if (r <= 0) {
                return;
            }
            if (!gw_http_token_eq(hr.method, hr.method_len, "CONNECT")) {
                // An http_proxy request: the forward proxy takes over this connection.
                t->proto = P_HTTP_FORWARD;
                t->from_client = t->to_up;
                t->to_up = NULL;
                t->state = T_HTTP_FORWARD;
                http_start_request(t, &hr);
                return;
            }
            if (refuse_unadmitted(t) || http_authorized(t, &hr) != 1) {
                return;
            }
            consume(t, hr.head_len);
            char host[256];
            uint16_t port;
            if (!gw_http_parse_authority(hr.target, hr.target_len, 0, host, &port)) {
                reject(t, GW_ERR_BAD_REQUEST, "CONNECT target must be host:port");
                return;
            }
            route(t, host, port);
            return;
        }
        default:
            return;
    }
}

// ---- TLS phases ----

static void start_tls(gw_tunnel *t) {
    const pol_rule *r = t->rule;
    char key[600];
    snprintf(key, sizeof(key), "%llu|%s|%s", (unsigned long long)r->identity->generation, t->upstream_text,
             t->server_name);
    if (!gw_upstream_tls_begin(&t->upstream, r->identity, t->server_name, key, &t->worker->pool)) {
        reject(t, GW_ERR_INTERNAL, "cannot create a TLS connection");
        return;
    }
    t->state = T_HANDSHAKING;
    t->t_phase = gw_monotonic_ms();
    t->hs_start_us = monotonic_us();
    gw_timer_start(t->worker->loop, &t->timer, (uint64_t)t->cfg->limits.handshake_timeout_ms);
}

static void step_connecting(gw_tunnel *t) {
    if (!t->up.writable) {
        return;
    }
    char reason[300];
    gw_err err = gw_upstream_connect_result(&t->upstream, reason, sizeof(reason));
    if (err != GW_ERR_NONE) {
        set_reason(t, "%s %s", t->upstream_text, reason);
        t->last_connect_err = err;
        gw_watcher_remove(t->worker->loop, &t->up.w);
        gw_upstream_close(&t->upstream);
        start_connect(t);
        return;
    }
    clear_reason(t);
    t->connect_ms = (int64_t)(gw_monotonic_ms() - t->t_phase);
    if (t->rule->action == POL_ACTION_MTLS) {
        start_tls(t);
    } else {
        established(t);
    }
}

static void step_tls(gw_tunnel *t) {
    gw_err err = GW_ERR_NONE;
    char reason[600];
    gw_step st = t->state == T_HANDSHAKING ? gw_upstream_tls_step(&t->upstream, &err, reason, sizeof(reason))
                                           : gw_upstream_confirm_step(&t->upstream, &err, reason, sizeof(reason));
    switch (st) {
        case GW_STEP_WANT_READ:
            t->up.readable = 0;
            if (t->state == T_CONFIRMING && t->upstream.ticket_seen && !t->confirm_grace) {
                // OpenSSL-based servers such as nginx send their tickets before they look
                // at our certificate, and close right after: a ticket shortens the wait to
                // a grace period instead of ending it.
                t->confirm_grace = 1;
                uint64_t grace = (uint64_t)t->cfg->limits.confirm_ms / 4;
                gw_timer_start(t->worker->loop, &t->timer, grace ? grace : 1);
            }
            return;
        case GW_STEP_WANT_WRITE:
            t->up.writable = 0;
            return;
        case GW_STEP_FAILED:
            reject(t, err, reason);
            return;
        case GW_STEP_DONE:
            break;
    }
    if (t->state == T_HANDSHAKING) {
        t->handshake_ms = (int64_t)(gw_monotonic_ms() - t->t_phase);
        gw_metrics_handshake(t->rule->identity->metrics_slot, SSL_session_reused(t->upstream.ssl),
                             monotonic_us() - t->hs_start_us);
        // A forward listener has no reply to hold back: its client's bytes go out at once
        // (the server is verified; if it rejects us the client sees the close). The
        // sessions of such a handshake are cached only once the server's data arrives.
        if (t->cfg->limits.confirm_ms > 0 && gw_upstream_needs_confirm(&t->upstream) && t->proto != P_FORWARD) {
            t->state = T_CONFIRMING;
            gw_timer_start(t->worker->loop, &t->timer, (uint64_t)t->cfg->limits.confirm_ms);
            step_tls(t);
            return;
        }
    }
    established(t);
}

// ---- relay ----

static int up_can_read(const gw_tunnel *t) {
    return t->up.readable || (t->up.read_wants_write && t->up.writable);
}

static int up_can_write(const gw_tunnel *t) {
    return t->up.writable || (t->up.write_wants_read && t->up.readable);
}

// Reads from the client into *|dst| (to_up, or from_client for HTTP). Returns 1 on
// progress, -1 if the tunnel closed.
static int client_read(gw_tunnel *t, gw_buf **dst) {
    if (t->client.eof || !t->client.readable) {
        return 0;
    }
    if (*dst == NULL && (*dst = gw_buf_get(&t->worker->pool)) == NULL) {
        return 0;
    }
    gw_buf *b = *dst;
    size_t room = gw_buf_room(b);
    if (room == 0) {
        return 0;
    }
    ssize_t n = read(t->client_fd, b->data + b->end, room);
    if (n > 0) {
        b->end += (uint32_t)n;
        t->last_activity = gw_loop_now(t->worker->loop);
        return 1;
    }
    if (n == 0) {
        t->client.eof = 1;
        release_if_empty(t, dst);
        return 1;
    }
    if (errno == EAGAIN || errno == EINTR) {
        t->client.readable = errno == EINTR;
        release_if_empty(t, dst);  // an idle tunnel holds no buffer
        return 0;
    }
    client_failed(t, strerror(errno));
    return -1;
}

static int relay_up_write(gw_tunnel *t) {
    size_t len = gw_buf_len(t->to_up);
    if (len == 0 || !up_can_write(t)) {
        return 0;
    }
    const uint8_t *p = t->to_up->data + t->to_up->start;
    ssize_t n;
    if (t->upstream.ssl != NULL) {
        int r = SSL_write(t->upstream.ssl, p, (int)len);
        if (r <= 0) {
            int e = SSL_get_error(t->upstream.ssl, r);
            if (e == SSL_ERROR_WANT_WRITE) {
                t->up.writable = 0;
                t->up.write_wants_read = 0;
                return 0;
            }
            if (e == SSL_ERROR_WANT_READ) {
                t->up.write_wants_read = 1;
                t->up.readable = 0;
                return 0;
            }
            char reason[300];
            uint32_t code = ERR_peek_error();
            snprintf(reason, sizeof(reason), "TLS write to upstream failed: %s",
                     code ? ERR_reason_error_string(code) : strerror(errno));
            ERR_clear_error();
            upstream_failed(t, "upstream_error", reason);
            return -1;
        }
        t->up.write_wants_read = 0;
        n = r;
    } else {
        n = send(t->upstream.fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                t->up.writable = errno == EINTR;
                return 0;
            }
            upstream_failed(t, "upstream_reset", strerror(errno));
            return -1;
        }
    }
    t->to_up->start += (uint32_t)n;
    t->up_bytes += (uint64_t)n;
    t->last_activity = gw_loop_now(t->worker->loop);
    if (gw_buf_len(t->to_up) == 0) {
        gw_buf_put(&t->worker->pool, t->to_up);
        t->to_up = NULL;
    }
    return 1;
}

// Reads from upstream into *|dst| (to_down, or from_up for HTTP).
static int up_read(gw_tunnel *t, gw_buf **dst) {
    if (t->up.eof || !up_can_read(t)) {
        return 0;
    }
    if (*dst == NULL && (*dst = gw_buf_get(&t->worker->pool)) == NULL) {
        return 0;
    }
    gw_buf *b = *dst;
    size_t room = gw_buf_room(b);
    if (room == 0) {
        return 0;
    }
    uint8_t *p = b->data + b->end;
    ssize_t n;
    if (t->upstream.ssl != NULL) {
        int r = SSL_read(t->upstream.ssl, p, (int)room);
        if (r <= 0) {
            int e = SSL_get_error(t->upstream.ssl, r);
            if (e == SSL_ERROR_WANT_READ) {
                t->up.readable = 0;
                t->up.read_wants_write = 0;
                release_if_empty(t, dst);  // an idle tunnel holds no buffer
                return 0;
            }
            if (e == SSL_ERROR_WANT_WRITE) {
                t->up.read_wants_write = 1;
                t->up.writable = 0;
                release_if_empty(t, dst);
                return 0;
            }
            if (!t->upstream.confirmed && t->proto == P_FORWARD) {
                // The server ended a forward tunnel before sending anything: it rejected us.
                char why[600];
                gw_err err = gw_upstream_read_failure(&t->upstream, r, why, sizeof(why));
                upstream_failed(t, gw_err_describe(err)->result, why);
                return -1;
            }
            if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && r == 0)) {
                t->up.eof = 1;  // close_notify, or a plain EOF
                t->up.truncated = e != SSL_ERROR_ZERO_RETURN;
                ERR_clear_error();
                release_if_empty(t, dst);
                return 1;
            }
            char reason[300];
            uint32_t code = ERR_peek_error();
            if (t->upstream.alert >= 0) {
                snprintf(reason, sizeof(reason), "upstream sent TLS alert %s", gw_tls_alert_name(t->upstream.alert));
            } else {
                snprintf(reason, sizeof(reason), "TLS read from upstream failed: %s",
                         code ? ERR_reason_error_string(code) : strerror(errno));
            }
            ERR_clear_error();
            upstream_failed(t, "upstream_error", reason);
            return -1;
        }
        t->up.read_wants_write = 0;
        if (!t->upstream.confirmed) {
            gw_upstream_confirm(&t->upstream);  // the server's first data: it accepted us
        }
        n = r;
    } else {
        n = read(t->upstream.fd, p, room);
        if (n == 0) {
            t->up.eof = 1;
            release_if_empty(t, dst);
            return 1;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                t->up.readable = errno == EINTR;
                release_if_empty(t, dst);
                return 0;
            }
            upstream_failed(t, "upstream_reset", strerror(errno));
            return -1;
        }
    }
    b->end += (uint32_t)n;
    t->last_activity = gw_loop_now(t->worker->loop);
    return 1;
}

static int relay_client_write(gw_tunnel *t) {
    size_t len = gw_buf_len(t->to_down);
    if (len == 0 || !t->client.writable) {
        return 0;
    }
    ssize_t n = send(t->client_fd, t->to_down->data + t->to_down->start, len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) {
            t->client.writable = errno == EINTR;
            return 0;
        }
        if (t->state == T_RELAY || t->state == T_HTTP_FORWARD) {
            client_failed(t, strerror(errno));
        } else {
            close_tunnel(t, NULL, strerror(errno));
        }
        return -1;
    }
    t->to_down->start += (uint32_t)n;
    if (t->state == T_RELAY) {
        t->down_bytes += (uint64_t)n;
    }
    t->last_activity = gw_loop_now(t->worker->loop);
    if (gw_buf_len(t->to_down) == 0) {
        gw_buf_put(&t->worker->pool, t->to_down);
        t->to_down = NULL;
    }
    return 1;
}

// shut_upstream passes the client's EOF on: close_notify over TLS, then FIN.
static void shut_upstream(gw_tunnel *t) {
    if (t->upstream.ssl != NULL) {
        int r = SSL_shutdown(t->upstream.ssl);
        if (r < 0) {
            int e = SSL_get_error(t->upstream.ssl, r);
            ERR_clear_error();
            if (e == SSL_ERROR_WANT_WRITE) {
                t->up.writable = 0;
                return;  // retried when writable
            }
        }
    }
    shutdown(t->upstream.fd, SHUT_WR);
    t->up.shut = 1;
}

static void relay(gw_tunnel *t) {
    int progress, rounds = 0;
    do {
        progress = 0;
        int r;
        if ((r = client_read(t, &t->to_up)) < 0 || (progress |= r, (r = relay_up_write(t)) < 0)) {
            return;
        }
        progress |= r;
        if ((r = up_read(t, &t->to_down)) < 0 || (progress |= r, (r = relay_client_write(t)) < 0)) {
            return;
        }
        progress |= r;
        if (t->client.eof && gw_buf_len(t->to_up) == 0 && !t->up.shut) {
            shut_upstream(t);
        }
        if (t->up.eof && gw_buf_len(t->to_down) == 0 && !t->client.shut) {
            shutdown(t->client_fd, SHUT_WR);
            t->client.shut = 1;
        }
        if (t->client.eof && t->up.eof && t->up.shut && t->client.shut) {
            close_tunnel(t, "ok", NULL);
            return;
        }
    } while (progress && ++rounds < 16);
    if (progress) {
        // Let other tunnels run; continue right after this batch.
        gw_timer_start(t->worker->loop, &t->resume, 0);
    }
}

static void flush_rejection(gw_tunnel *t) {
    if (relay_client_write(t) < 0) {
        return;
    }
    while (gw_buf_len(t->to_down) > 0 && t->client.writable) {
        if (relay_client_write(t) <= 0) {
            break;
        }
    }
    if (gw_buf_len(t->to_down) > 0) {
        return;
    }
    if (!t->client.shut) {
        shutdown(t->client_fd, SHUT_WR);
        t->client.shut = 1;
    }
    // Drain until the client closes (or the timer ends it).
    char sink[4096];
    while (t->client.readable) {
        ssize_t n = read(t->client_fd, sink, sizeof(sink));
        if (n > 0) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            t->client.readable = errno == EINTR;
            return;
        }
        close_tunnel(t, NULL, NULL);
        return;
    }
}

// ---- HTTP forward proxy (http_proxy clients) ----
//
// A client connection carries one request after another. Each request head is checked,
// rewritten to origin-form into to_up and its body passed on as its framing says; each
// response head is rewritten into to_down and its body passed back. The upstream stays
// open for the next request to the same destination; another destination gets its own.

static void reset_client(gw_tunnel *t, const char *result, const char *reason) {
    // After part of a response went out, a FIN would let the client take a cut-off body
    // for a complete one: a RST cannot be mistaken.
    struct linger lg = {1, 0};
    setsockopt(t->client_fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close_tunnel(t, result, reason);
}

// release_if_empty returns an emptied buffer to the pool: an idle connection holds none.
static void release_if_empty(gw_tunnel *t, gw_buf **b) {
    if (*b != NULL && gw_buf_len(*b) == 0) {
        gw_buf_put(&t->worker->pool, *b);
        *b = NULL;
    }
}

// drop_upstream closes the upstream connection; the client connection stays for its
// next request.
static void drop_upstream(gw_tunnel *t) {
    gw_watcher_remove(t->worker->loop, &t->up.w);
    gw_upstream_close(&t->upstream);
    t->up = (side){0};
    gw_watcher_init(&t->up.w, -1, on_upstream, t);
    gw_buf_put(&t->worker->pool, t->from_up);
    gw_buf_put(&t->worker->pool, t->to_up);
    t->from_up = t->to_up = NULL;
    t->resp_scanned = 0;
}

static void upstream_failed(gw_tunnel *t, const char *result, const char *reason) {
    if (t->proto != P_HTTP_FORWARD) {
        reset_client(t, result, reason);
    } else if (t->resp_phase == RS_IDLE) {
        drop_upstream(t);  // a kept-alive upstream went away between requests
    } else if (!t->resp_sent) {
        reject(t, GW_ERR_UPSTREAM_CLOSED, reason);
    } else {
        reset_client(t, result, reason);
    }
}

static void upstream_http_error(gw_tunnel *t, const char *reason) {
    if (t->resp_sent) {
        reset_client(t, "upstream_http_error", reason);
    } else {
        reject(t, GW_ERR_UPSTREAM_HTTP, reason);
    }
}

// move_framed passes bytes of one message body from *|src| to *|dst|: no further than
// the framing in |body| / |chunks| says the body goes. Sets *|out_done| at the body's
// end. Returns the bytes moved, or -1 if a chunked body is malformed.
static long move_framed(gw_tunnel *t, gw_buf **src, gw_buf **dst, gw_body *body, gw_chunked *chunks,
                        int *out_done) {
    *out_done = 0;
    gw_buf *s = *src;
    size_t avail = gw_buf_len(s);
    if (avail == 0) {
        return 0;
    }
    if (*dst == NULL && (*dst = gw_buf_get(&t->worker->pool)) == NULL) {
        return 0;
    }
    size_t room = gw_buf_room(*dst);
    size_t n = avail < room ? avail : room;
    if (n == 0) {
        return 0;
    }
    const uint8_t *p = s->data + s->start;
    if (body->kind == GW_BODY_LENGTH) {
        if (n > body->length) {
            n = (size_t)body->length;
        }
        body->length -= n;
        *out_done = body->length == 0;
    } else if (body->kind == GW_BODY_CHUNKED) {
        long k = gw_chunked_scan(chunks, p, n, out_done);
        if (k < 0) {
            return -1;
        }
        n = (size_t)k;
    }
    if (n == avail && gw_buf_len(*dst) == 0) {
        // All of it is body: hand the buffer over instead of copying.
        gw_buf *empty = *dst;
        *dst = s;
        gw_buf_put(&t->worker->pool, empty);
        *src = NULL;
    } else {
        gw_buf_append(*dst, p, n);
        s->start += (uint32_t)n;
        if (gw_buf_len(s) == 0) {
            gw_buf_put(&t->worker->pool, s);
            *src = NULL;
        }
    }
    return (long)n;
}

static int http_move_request_body(gw_tunnel *t) {
    if (t->req_phase != RQ_BODY) {
        return 0;
    }
    int done;
    long n = move_framed(t, &t->from_client, &t->to_up, &t->req_body, &t->req_chunks, &done);
    if (n < 0) {
        if (t->resp_sent) {
            reset_client(t, "bad_request", "malformed chunked request body");
        } else {
            reject(t, GW_ERR_BAD_REQUEST, "malformed chunked request body");
        }
        return 0;
    }
    if (done) {
        t->req_phase = RQ_DONE;
    }
    return n > 0 || done;
}

// http_start_request takes the request head |hr| at the start of from_client: checks it,
// keeps the current upstream if it goes to the same destination (else routes anew), and
// writes the head in origin-form into to_up. On failure the client gets its error.
static void http_start_request(gw_tunnel *t, const gw_http_request *hr) {
    t->http_idle = 0;
    t->t_start = gw_loop_now(t->worker->loop);
    t->up_bytes = t->down_bytes = 0;
    t->dns_ms = t->connect_ms = t->handshake_ms = -1;
    t->result[0] = '\0';
    clear_reason(t);
    t->status = 0;
    t->req_phase = RQ_HEAD;
    t->resp_phase = RS_HEAD;  // from here on, a failure is this request's
    t->resp_sent = 0;
    snprintf(t->method, sizeof(t->method), "%.*s", (int)(hr->method_len > 20 ? 20 : hr->method_len), hr->method);
    if (t->cfg != t->worker->cfg) {
        // Reloaded since the last request: each request is routed like a new tunnel, with
        // the current rules, identities and users (listeners are the same in every snapshot).
        if (t->upstream.fd >= 0) {
            drop_upstream(t);
        }
        t->rule = NULL;  // it and t->user belonged to the old snapshot
        t->user = NULL;
        t->auth_state = AUTH_NONE;  // so did a check's answer: the new users file decides
        pol_config_unref(t->cfg);
        t->cfg = pol_config_ref(t->worker->cfg);
    }
    if (refuse_unadmitted(t)) {
        return;
    }
    int authorized = http_authorized(t, hr);
    if (authorized < 0) {
        t->resp_phase = RS_IDLE;  // the head stays in from_client, taken again after the check
        return;
    }
    if (!authorized) {
        return;
    }
    if (gw_http_token_eq(hr->method, hr->method_len, "CONNECT")) {
        reject(t, GW_ERR_BAD_REQUEST, "CONNECT after a forwarded request is not supported: open a new connection");
        return;
    }
    char scheme[8], host[256];
    uint16_t port;
    const char *path;
    size_t path_len;
    if (!gw_http_parse_absolute_uri(hr->target, hr->target_len, scheme, host, &port, &path, &path_len)) {
        reject(t, GW_ERR_BAD_REQUEST,
               hr->target_len > 0 && hr->target[0] == '/'
                   ? "this is a proxy: the request target must be an absolute http:// URI"
                   : "request target is not a valid http:// URI");
        return;
    }
    if (strcmp(scheme, "https") == 0) {
        reject(t, GW_ERR_BAD_REQUEST, "https:// URLs go through CONNECT: set https_proxy for them");
        return;
    }
    size_t hosts = 0;
    for (size_t i = 0; i < hr->num_headers; i++) {
        hosts += gw_http_token_eq(hr->headers[i].name, hr->headers[i].name_len, "Host");
    }
    if (hosts > 1 || (hosts == 0 && hr->minor_version == 1)) {
        reject(t, GW_ERR_BAD_REQUEST,
               hosts ? "request has more than one Host header" : "HTTP/1.1 request without a Host header");
        return;
    }
    const char *framing = gw_h1_request_body(hr, &t->req_body);
    if (framing != NULL) {
        reject(t, GW_ERR_BAD_REQUEST, framing);
        return;
    }
    pol_dest d;
    if (!pol_dest_init(&d, host, port)) {
        reject(t, GW_ERR_BAD_REQUEST, "request target is not a valid host name or address");
        return;
    }
    int reuse = t->upstream.fd >= 0 && d.port == t->dest.port && strcmp(d.host, t->dest.host) == 0;
    if (!reuse && t->upstream.fd >= 0) {
        drop_upstream(t);
    }
    t->client_minor = hr->minor_version;
    t->client_keepalive = gw_h1_keep_alive(hr->headers, hr->num_headers, hr->minor_version);
    t->up_keepalive = 1;
    t->req_is_head = gw_http_token_eq(hr->method, hr->method_len, "HEAD");
    if (t->to_up == NULL && (t->to_up = gw_buf_get(&t->worker->pool)) == NULL) {
        reject(t, GW_ERR_INTERNAL, "out of memory");
        return;
    }
    const char *authority = hr->target + strlen(scheme) + 3;
    size_t n = gw_h1_write_request(hr, path, path_len, authority, (size_t)(path - authority), !t->client_keepalive,
                                   (char *)t->to_up->data + t->to_up->end, gw_buf_room(t->to_up));
    if (n == 0) {
        reject(t, GW_ERR_HEADER_TOO_LARGE, "request head is too large once rewritten for the origin");
        return;
    }
    t->to_up->end += (uint32_t)n;
    t->from_client->start += (uint32_t)hr->head_len;
    release_if_empty(t, &t->from_client);
    t->req_phase = t->req_body.kind == GW_BODY_NONE ? RQ_DONE : RQ_BODY;
    gw_chunked_init(&t->req_chunks);
    // The body bytes already here are checked before anything goes upstream.
    http_move_request_body(t);
    if (t->state != T_HTTP_FORWARD || reuse) {
        return;
    }
    route(t, host, port);
}

// http_take_response reads a response head from from_up and writes it for the client
// into to_down. Returns 1 on progress.
static int http_take_response(gw_tunnel *t) {
    gw_buf *b = t->from_up;
    size_t len = gw_buf_len(b);
    if (len == 0 || gw_buf_len(t->to_down) > 0) {
        return 0;
    }
    const uint8_t *p = b->data + b->start;
    gw_http_response hr;
    gw_http_status st = GW_HTTP_NEED_MORE;
    if (gw_h1_head_complete(p, len, &t->resp_scanned)) {
        st = gw_http_parse_response((const char *)p, len, &hr);
    }
    if (st == GW_HTTP_NEED_MORE) {
        if (gw_buf_room(b) == 0) {
            upstream_http_error(t, "upstream response head is larger than 16 KiB");
        }
        return 0;
    }
    t->resp_scanned = 0;
    if (st != GW_HTTP_OK) {
        upstream_http_error(t, "upstream sent a malformed response head");
        return 0;
    }
    if (hr.status == 101) {
        upstream_http_error(t, "upstream switched protocols (101), which a forwarded request cannot carry");
        return 0;
    }
    if (hr.status < 200) {
        // 100 Continue and the like: HTTP/1.1 clients get them; the final head follows.
        if (t->client_minor == 1 && queue_down(t, p, hr.head_len)) {
            t->down_bytes += hr.head_len;
        }
        b->start += (uint32_t)hr.head_len;
        release_if_empty(t, &t->from_up);
        return 1;
    }
    const char *framing = gw_h1_response_body(&hr, t->req_is_head, &t->resp_body);
    if (framing != NULL) {
        upstream_http_error(t, framing);
        return 0;
    }
    // A response that ends with the close, or one that came before its request was
    // sent whole, ends both connections after it.
    int clean = t->resp_body.kind != GW_BODY_CLOSE && t->req_phase == RQ_DONE;
    t->up_keepalive = clean && gw_h1_keep_alive(hr.headers, hr.num_headers, hr.minor_version);
    t->client_keepalive = t->client_keepalive && clean && !t->worker->draining;
    if (t->to_down == NULL && (t->to_down = gw_buf_get(&t->worker->pool)) == NULL) {
        return 0;
    }
    size_t n = gw_h1_write_response(&hr, t->client_minor, t->client_keepalive, (char *)t->to_down->data + t->to_down->end,
                                    gw_buf_room(t->to_down));
    if (n == 0) {
        upstream_http_error(t, "upstream response head is too large");
        return 0;
    }
    t->to_down->end += (uint32_t)n;
    t->down_bytes += n;
    t->status = hr.status;
    t->resp_sent = 1;
    b->start += (uint32_t)hr.head_len;
    release_if_empty(t, &t->from_up);
    t->resp_phase = t->resp_body.kind == GW_BODY_NONE ? RS_DONE : RS_BODY;
    gw_chunked_init(&t->resp_chunks);
    return 1;
}

static int http_move_response_body(gw_tunnel *t) {
    if (t->resp_phase != RS_BODY) {
        return 0;
    }
    int done;
    long n = move_framed(t, &t->from_up, &t->to_down, &t->resp_body, &t->resp_chunks, &done);
    if (n < 0) {
        reset_client(t, "upstream_http_error", "upstream sent a malformed chunked body");
        return 0;
    }
    t->down_bytes += (uint64_t)n;
    if (done) {
        t->resp_phase = RS_DONE;
    }
    return n > 0 || done;
}

// http_upstream_eof handles the upstream's EOF once its bytes were taken.
static void http_upstream_eof(gw_tunnel *t) {
    switch (t->resp_phase) {
        case RS_IDLE:
            drop_upstream(t);
            return;
        case RS_DONE:
            t->up_keepalive = 0;
            return;
        case RS_HEAD:
            reject(t, GW_ERR_UPSTREAM_CLOSED, "upstream closed the connection before sending a response");
            return;
        default:
            break;
    }
    if (t->resp_body.kind == GW_BODY_CLOSE && !t->up.truncated) {
        t->resp_phase = RS_DONE;  // the close ends this response
        t->up_keepalive = 0;
        return;
    }
    reset_client(t, "upstream_closed",
                 t->resp_body.kind == GW_BODY_CLOSE
                     ? "upstream closed without TLS close_notify: the response may be cut off"
                     : "upstream closed in the middle of the response body");
}

// http_exchange_done logs the finished exchange and readies the connection for the
// next request, or closes it once the response is flushed.
static void http_exchange_done(gw_tunnel *t) {
    snprintf(t->result, sizeof(t->result), "ok");
    log_access(t);
    t->result[0] = '\0';
    clear_reason(t);
    t->req_phase = RQ_HEAD;
    t->resp_phase = RS_IDLE;
    t->http_idle = 1;
    if (!t->up_keepalive && t->upstream.fd >= 0) {
        drop_upstream(t);
    }
    if (!t->client_keepalive) {
        // Flush, FIN, then wait for the client's close (as after an error reply).
        drop_upstream(t);
        gw_buf_put(&t->worker->pool, t->from_client);
        t->from_client = NULL;
        t->state = T_REJECTING;
        gw_timer_start(t->worker->loop, &t->timer, (uint64_t)t->cfg->limits.idle_timeout_s * 1000);
    }
}

static void http_relay(gw_tunnel *t) {
    int progress, rounds = 0;
#define STEP(expr)                          \
    do {                                    \
        progress |= (expr) > 0;             \
        if (t->state != T_HTTP_FORWARD) {   \
            return;                         \
        }                                   \
    } while (0)
    do {
        progress = 0;
        STEP(client_read(t, &t->from_client));
        if (t->req_phase == RQ_HEAD && t->resp_phase == RS_IDLE && gw_buf_len(t->to_up) == 0 &&
            gw_buf_len(t->from_client) > 0 && t->auth_job == NULL) {
            gw_http_request hr;
            t->http_idle = 0;
            int r = take_request_head(t, t->from_client, &hr);
            if (r > 0) {
                http_start_request(t, &hr);
            }
            STEP(r);
        }
        // A client that half-closed still gets the answers to every request it sent.
        if (t->client.eof && t->req_phase == RQ_BODY && gw_buf_len(t->from_client) == 0) {
            close_tunnel(t, "client_closed", "client closed in the middle of the request body");
            return;
        }
        if (t->client.eof && t->req_phase == RQ_HEAD && t->resp_phase == RS_IDLE && gw_buf_len(t->to_up) == 0 &&
            gw_buf_len(t->to_down) == 0) {
            if (gw_buf_len(t->from_client) > 0) {
                close_tunnel(t, "client_closed", "client closed before sending a complete request");
            } else {
                close_tunnel(t, "ok", NULL);
            }
            return;
        }
        STEP(http_move_request_body(t));
        if (t->upstream.fd >= 0) {
            STEP(relay_up_write(t));
            STEP(up_read(t, &t->from_up));
        }
        if (t->resp_phase == RS_HEAD) {
            STEP(http_take_response(t));
        }
        STEP(http_move_response_body(t));
        if (t->resp_phase == RS_IDLE && gw_buf_len(t->from_up) > 0) {
            drop_upstream(t);  // bytes nobody asked for: this connection is not to be trusted
        }
        STEP(relay_client_write(t));
        if (t->up.eof && t->upstream.fd >= 0 && (gw_buf_len(t->from_up) == 0 || t->resp_phase == RS_IDLE)) {
            http_upstream_eof(t);
            STEP(1);
        }
        if (t->req_phase == RQ_DONE && t->resp_phase == RS_DONE) {
            http_exchange_done(t);
            STEP(1);
        }
    } while (progress && ++rounds < 16);
#undef STEP
    if (progress) {
        gw_timer_start(t->worker->loop, &t->resume, 0);
    }
}

static void http_run(gw_tunnel *t) {
    http_relay(t);
    if (t->state == T_REJECTING) {
        flush_rejection(t);
    }
}

static void run(gw_tunnel *t) {
    switch (t->state) {
        case T_DETECT:
        case T_SOCKS5_GREETING:
        case T_SOCKS5_AUTH:
        case T_SOCKS5_REQUEST:
        case T_SOCKS4_REQUEST:
        case T_HTTP_HEAD:
            if (!read_request(t)) {
                return;
            }
            parse_request(t);
            if (t->client.eof && t->state < T_RESOLVING) {
                close_tunnel(t, "client_closed", "client closed before sending a complete request");
                return;
            }
            if (t->state == T_REJECTING) {
                flush_rejection(t);
            } else if (t->state != T_CLOSED && t->state < T_RESOLVING) {
                relay_client_write(t);  // SOCKS5 method selection
            } else if (t->state == T_RELAY) {
                relay(t);
            } else if (t->state == T_HTTP_FORWARD) {
                http_run(t);
            }
            return;
        case T_RESOLVING:
            return;
        case T_CONNECTING:
            step_connecting(t);
            break;
        case T_HANDSHAKING:
        case T_CONFIRMING:
            step_tls(t);
            break;
        case T_RELAY:
            relay(t);
            return;
        case T_HTTP_FORWARD:
            http_run(t);
            return;
        case T_REJECTING:
            flush_rejection(t);
            return;
        case T_CLOSED:
            return;
    }
    // A phase may have moved on: run the next one with the same readiness.
    if (t->state == T_HANDSHAKING && (t->up.readable || t->up.writable)) {
        step_tls(t);
    }
    if (t->state == T_RELAY) {
        relay(t);
    } else if (t->state == T_HTTP_FORWARD) {
        http_run(t);
    } else if (t->state == T_REJECTING) {
        flush_rejection(t);
    }
}

void gw_tunnel_accept(gw_worker *w, int fd, const struct sockaddr *peer, size_t listener_index, gw_err pending) {
    gw_tunnel *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        close(fd);
        return;
    }
    if (pending != GW_ERR_NONE) {
        atomic_fetch_add(&gw_rejecting_tunnels, 1);
    } else {
        atomic_fetch_add(&gw_active_tunnels, 1);
    }
    t->worker = w;
    t->cfg = pol_config_ref(w->cfg);
    t->listener_index = listener_index;
    t->pending = pending;
    t->client_fd = fd;
    gw_upstream_init(&t->upstream);
    t->dns_ms = t->connect_ms = t->handshake_ms = -1;
    t->t_start = gw_loop_now(w->loop);
    gw_format_addr(peer, t->client_text, sizeof(t->client_text));
    gw_timer_init(&t->timer, on_timer, t);
    gw_timer_init(&t->resume, on_resume, t);
    gw_watcher_init(&t->client.w, fd, on_client, t);
    gw_watcher_init(&t->up.w, -1, on_upstream, t);
    t->next = w->tunnels;
    if (w->tunnels) {
        w->tunnels->prev = t;
    }
    w->tunnels = t;
    w->num_tunnels++;
    if (!gw_watcher_set(w->loop, &t->client.w, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)) {
        close_tunnel(t, "internal_error", strerror(errno));
        return;
    }
    const pol_listener *l = listener_of(t);
    if (l->forward_host != NULL) {
        t->proto = P_FORWARD;
        route(t, l->forward_host, l->forward_port);
        if (t->state == T_REJECTING) {
            // Nothing to answer in a plain TCP stream: close at once.
            close_tunnel(t, NULL, NULL);
        }
        return;
    }
    t->state = T_DETECT;
    gw_timer_start(w->loop, &t->timer, (uint64_t)t->cfg->limits.handshake_timeout_ms);
}
