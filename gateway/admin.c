#include "gateway/admin.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gateway/base/log.h"
#include "gateway/base/loop.h"
#include "gateway/base/netutil.h"
#include "gateway/base/peer.h"
#include "gateway/proto/errors.h"
#include "gateway/proto/http.h"
#include "gateway/renewal.h"
#include "gateway/report.h"
#include "gateway/service/metrics.h"
#include "gateway/status.h"
#include "gateway/worker.h"

typedef struct admin_conn admin_conn;

static struct {
    int fd, wake_fd;
    pthread_t thread;
    int running;
    atomic_int stop, draining;
    pthread_mutex_t lock;  // guards cfg
    pol_config *cfg;
    gw_loop *loop;  // the admin thread's own
    gw_watcher listen_w, wake_w;
    admin_conn *conns;
    int num_conns;
    gw_sockdiag diag;  // the admin thread's own caller lookups
} g_admin = {.fd = -1, .wake_fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER, .diag = {.fd = -1}};

static pol_config *current_config(void) {
    pthread_mutex_lock(&g_admin.lock);
    pol_config *cfg = pol_config_ref(g_admin.cfg);
    pthread_mutex_unlock(&g_admin.lock);
    return cfg;
}

void gw_admin_set_config(pol_config *cfg) {
    pol_config_ref(cfg);
    pthread_mutex_lock(&g_admin.lock);
    pol_config *old = g_admin.cfg;
    g_admin.cfg = cfg;
    pthread_mutex_unlock(&g_admin.lock);
    pol_config_unref(old);
}

void gw_admin_set_draining(void) {
    atomic_store(&g_admin.draining, 1);
}

// ---- one admin connection ----
//
// Non-blocking on the admin thread's own loop: a slow client holds only its own slot,
// for at most ADMIN_HEAD_MS from accept to a whole request head and ADMIN_DEADLINE_MS to
// the last byte of the answer. Nobody can starve the endpoint (and with it the liveness
// probe that restarts the gateway): each source (a local user, found like a caller, or a
// remote address) holds at most ADMIN_PER_SOURCE connections, and a new connection that
// finds no free slot takes the one of the oldest connection still waiting for its
// request (of its own source first) instead of being refused.

#define ADMIN_MAX_CONNS 32
#define ADMIN_PER_SOURCE 8
#define ADMIN_HEAD_MS 2000
#define ADMIN_DEADLINE_MS 5000
#define ADMIN_REQUEST_MAX 8192

// Who a connection is from: a local user (uid) when the kernel says, else its address.
typedef struct {
    int family;  // AF_INET/AF_INET6: by address; 0: by uid
    uint8_t addr[16];
    uint32_t uid;
} admin_source;

typedef struct admin_conn {
    gw_watcher w;
    gw_timer deadline;
    admin_source source;
    uint64_t accepted;  // admin loop time of accept: the oldest idle is evicted first
    char in[ADMIN_REQUEST_MAX];
    size_t in_len;
    char *out;  // the whole response, once the request is complete
    size_t out_len, out_sent;
    struct admin_conn *prev, *next;
} admin_conn;

static void conn_free(void *p) {
    admin_conn *c = p;
    free(c->out);
    free(c);
}

static void conn_close(admin_conn *c) {
    gw_watcher_remove(g_admin.loop, &c->w);
    gw_timer_stop(g_admin.loop, &c->deadline);
    close(c->w.fd);
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        g_admin.conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    g_admin.num_conns--;
    gw_loop_defer_free(g_admin.loop, conn_free, c);
}

static void respond_csp(admin_conn *c, int status, const char *type, const char *body, int head_only, const char *csp) {
    gw_strbuf b = {0};
    size_t len = strlen(body);
    gw_strbuf_printf(&b,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
                     "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n"
                     "Content-Security-Policy: %s\r\nConnection: close\r\n\r\n",
                     status, gw_http_reason_phrase(status), type, len,
                     csp ? csp : "default-src 'none'; frame-ancestors 'none'");
    if (!head_only) {
        gw_strbuf_printf(&b, "%s", body);
    }
    if (b.failed) {
        free(b.p);
        c->out = NULL;
        return;
    }
    c->out = b.p;
    c->out_len = b.len;
}

static void respond(admin_conn *c, int status, const char *type, const char *body, int head_only) {
    respond_csp(c, status, type, body, head_only, NULL);
}

// answer_post: POST /identities/NAME/renew asks the renewal thread to renew an ACME
// identity now (`mtlsgw identity renew`); the result lands in its state file and log.
static void answer_post(admin_conn *c, const char *target, size_t len) {
    static const char prefix[] = "/identities/", suffix[] = "/renew";
    size_t pl = sizeof(prefix) - 1, sl = sizeof(suffix) - 1;
    char name[128], err[300], msg[400];
    if (len <= pl + sl || memcmp(target, prefix, pl) != 0 || memcmp(target + len - sl, suffix, sl) != 0 ||
        len - pl - sl >= sizeof(name)) {
        respond(c, 404, "text/plain", "not found: POST only /identities/NAME/renew\n", 0);
        return;
    }
    memcpy(name, target + pl, len - pl - sl);
    name[len - pl - sl] = '\0';
    for (const char *p = name; *p; p++) {
        if (*p < 0x21 || *p > 0x7e || *p == '/') {
            respond(c, 404, "text/plain", "not found: no such identity\n", 0);
            return;
        }
    }
    if (!gw_renewal_request(name, err, sizeof(err))) {
        snprintf(msg, sizeof(msg), "%s\n", err);
        respond(c, strncmp(err, "no identity", 11) == 0 ? 404 : 409, "text/plain", msg, 0);
        return;
    }
    gw_log(GW_LOG_INFO, "admin: renewal of identity %s asked for", name);
    snprintf(msg, sizeof(msg), "renewal of %s started\n", name);
    respond(c, 202, "text/plain", msg, 0);
}

static void answer(admin_conn *c, const gw_http_request *req) {
    int head = gw_http_token_eq(req->method, req->method_len, "HEAD");
    size_t plen = req->target_len;
    const char *q = memchr(req->target, '?', plen);
    if (q != NULL) {
        plen = (size_t)(q - req->target);
    }
    if (gw_http_token_eq(req->method, req->method_len, "POST")) {
        answer_post(c, req->target, plen);
        return;
    }
    if (!head && !gw_http_token_eq(req->method, req->method_len, "GET")) {
        respond(c, 405, "text/plain", "only GET and HEAD (and POST /identities/NAME/renew)\n", 0);
        return;
    }
    pol_config *cfg = current_config();
    if (gw_http_token_eq(req->target, plen, "/metrics")) {
        char *page = gw_metrics_render(cfg, atomic_load(&gw_active_tunnels));
        if (page != NULL) {
            respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", page, head);
        } else {
            respond(c, 500, "text/plain", "out of memory\n", head);
        }
        free(page);
    } else if (gw_http_token_eq(req->target, plen, "/healthz")) {
        if (atomic_load(&g_admin.draining)) {
            respond(c, 503, "text/plain", "draining\n", head);
        } else {
            respond(c, 200, "text/plain", "ok\n", head);
        }
    } else if (gw_http_token_eq(req->target, plen, "/identities")) {
        gw_strbuf b = {0};
        gw_identities_json(&b, cfg, time(NULL), 14);
        if (!b.failed) {
            respond(c, 200, "application/json", b.p, head);
        } else {
            respond(c, 500, "text/plain", "out of memory\n", head);
        }
        free(b.p);
    } else if (gw_http_token_eq(req->target, plen, "/")) {
        // The status page; ?refresh=N (5 to 3600 s) makes it reload itself.
        int refresh = 0;
        if (q != NULL && req->target_len - plen > 9 && memcmp(q, "?refresh=", 9) == 0) {
            refresh = atoi(q + 9);
            refresh = refresh < 5 ? (refresh > 0 ? 5 : 0) : refresh > 3600 ? 3600 : refresh;
        }
        char csp[300];
        char *page = gw_status_html(cfg, atomic_load(&gw_active_tunnels), refresh, csp, sizeof(csp));
        if (page != NULL) {
            respond_csp(c, 200, "text/html; charset=utf-8", page, head, csp);
        } else {
            respond(c, 500, "text/plain", "out of memory\n", head);
        }
        free(page);
    } else if (gw_http_token_eq(req->target, plen, "/status.json")) {
        char *page = gw_status_json(cfg, atomic_load(&gw_active_tunnels));
        if (page != NULL) {
            respond(c, 200, "application/json", page, head);
        } else {
            respond(c, 500, "text/plain", "out of memory\n", head);
        }
        free(page);
    } else {
        respond(c, 404, "text/plain", "not found: try /, /status.json, /metrics, /healthz or /identities\n", head);
    }
    pol_config_unref(cfg);
}

static void conn_flush(admin_conn *c) {
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->w.fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return;  // EPOLLOUT brings us back
        }
        break;
    }
    conn_close(c);
}

static void on_conn(gw_loop *loop, gw_watcher *w, uint32_t events) {
    admin_conn *c = w->data;
    if (c->out != NULL) {
        conn_flush(c);
        return;
    }
    for (;;) {
        ssize_t n = read(c->w.fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
        if (n > 0) {
            c->in_len += (size_t)n;
            gw_http_request req;
            gw_http_status st = gw_http_parse_request(c->in, c->in_len, &req);
            if (st == GW_HTTP_NEED_MORE && c->in_len < sizeof(c->in)) {
                continue;
            }
            gw_timer_start(g_admin.loop, &c->deadline, ADMIN_DEADLINE_MS);  // the answer's time
            if (st == GW_HTTP_OK) {
                answer(c, &req);
            } else {
                respond(c, st == GW_HTTP_NEED_MORE ? 431 : 400, "text/plain", "malformed request\n", 0);
            }
            if (c->out == NULL) {
                conn_close(c);
                return;
            }
            conn_flush(c);
            return;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return;
        }
        conn_close(c);  // EOF or error before a complete request
        return;
    }
}

static void on_deadline(gw_loop *loop, gw_timer *t) {
    conn_close(t->data);
}

// source_of says who is at the other end of admin connection |fd| from |peer|: the owner
// of a loopback client's socket (as for callers), else the address.
static admin_source source_of(int fd, const struct sockaddr *peer) {
    admin_source src = {0};
    struct sockaddr_storage me;
    socklen_t ml = sizeof(me);
    uint32_t uid;
    int32_t pid;
    if (peer->sa_family == AF_UNIX) {
        if (gw_peer_unix_cred(fd, &uid, &pid)) {
            src.uid = uid;
        }
        return src;
    }
    if (gw_peer_is_loopback(peer) && g_admin.diag.fd >= 0 && getsockname(fd, (struct sockaddr *)&me, &ml) == 0 &&
        gw_sockdiag_owner(&g_admin.diag, peer, (struct sockaddr *)&me, 10, &uid) == GW_SOCKDIAG_FOUND) {
        src.uid = uid;
        return src;
    }
    if (peer->sa_family == AF_INET6) {
        src.family = AF_INET6;
        memcpy(src.addr, &((const struct sockaddr_in6 *)peer)->sin6_addr, 16);
    } else {
        src.family = AF_INET;
        memcpy(src.addr, &((const struct sockaddr_in *)peer)->sin_addr, 4);
    }
    return src;
}

static int same_source(const admin_source *a, const admin_source *b) {
    return a->family == b->family && a->uid == b->uid && memcmp(a->addr, b->addr, 16) == 0;
}

// make_room frees a slot for a new connection from |src| if it needs one: over its own
// share, that source's oldest connection still waiting for a request goes; with every
// slot taken, the oldest such connection of anyone. Returns 0 when no slot can be had
// (every connection is busy answering).
static int make_room(const admin_source *src) {
    int mine = 0;
    admin_conn *oldest_mine = NULL, *oldest = NULL;
    for (admin_conn *c = g_admin.conns; c != NULL; c = c->next) {
        int idle = c->out == NULL;
        if (same_source(&c->source, src)) {
            mine++;
            if (idle && (oldest_mine == NULL || c->accepted <= oldest_mine->accepted)) {
                oldest_mine = c;
            }
        }
        if (idle && (oldest == NULL || c->accepted <= oldest->accepted)) {
            oldest = c;
        }
    }
    if (mine >= ADMIN_PER_SOURCE) {
        if (oldest_mine == NULL) {
            return 0;
        }
        conn_close(oldest_mine);
        return 1;
    }
    if (g_admin.num_conns >= ADMIN_MAX_CONNS) {
        if (oldest == NULL) {
            return 0;
        }
        conn_close(oldest);
    }
    return 1;
}

static void on_accept(gw_loop *loop, gw_watcher *w, uint32_t events) {
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage peer;
        socklen_t pl = sizeof(peer);
        int fd = accept4(g_admin.fd, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            return;  // EAGAIN; on EMFILE the next connection tries again
        }
        pol_config *cfg = current_config();
        int allowed = cfg != NULL && pol_config_admin_allows(cfg, (struct sockaddr *)&peer);
        pol_config_unref(cfg);
        if (!allowed) {
            close(fd);
            continue;
        }
        admin_source src = source_of(fd, (struct sockaddr *)&peer);
        if (!make_room(&src)) {
            close(fd);  // every slot is answering a request: a slow client cannot queue more
            continue;
        }
        admin_conn *c = calloc(1, sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->source = src;
        c->accepted = gw_loop_now(g_admin.loop);
        gw_watcher_init(&c->w, fd, on_conn, c);
        gw_timer_init(&c->deadline, on_deadline, c);
        c->next = g_admin.conns;
        if (c->next) {
            c->next->prev = c;
        }
        g_admin.conns = c;
        g_admin.num_conns++;
        gw_timer_start(g_admin.loop, &c->deadline, ADMIN_HEAD_MS);  // until the request head is whole
        if (!gw_watcher_set(g_admin.loop, &c->w, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)) {
            conn_close(c);
        }
    }
}

static void on_wake(gw_loop *loop, gw_watcher *w, uint32_t events) {
    uint64_t v;
    while (read(g_admin.wake_fd, &v, sizeof(v)) > 0) {
    }
    if (atomic_load(&g_admin.stop)) {
        gw_loop_stop(loop);
    }
}

static void *admin_main(void *arg) {
    pthread_setname_np(pthread_self(), "mtlsgw-admin");
    gw_loop_run(g_admin.loop);
    while (g_admin.conns != NULL) {
        conn_close(g_admin.conns);
    }
    return NULL;
}

int gw_admin_bind(const pol_config *cfg) {
    g_admin.fd = gw_listen_socket((const struct sockaddr *)&cfg->admin_addr, cfg->admin_addr_len, 0);
    return g_admin.fd >= 0;
}

int gw_admin_start(pol_config *cfg) {
    if (g_admin.fd < 0 && !gw_admin_bind(cfg)) {
        return 0;
    }
    gw_admin_set_config(cfg);
    atomic_store(&g_admin.stop, 0);
    g_admin.loop = gw_loop_new();
    g_admin.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!gw_sockdiag_open(&g_admin.diag)) {
        g_admin.diag.fd = -1;  // sources by address only
    }
    if (g_admin.loop == NULL || g_admin.wake_fd < 0) {
        return 0;
    }
    gw_watcher_init(&g_admin.listen_w, g_admin.fd, on_accept, NULL);
    gw_watcher_init(&g_admin.wake_w, g_admin.wake_fd, on_wake, NULL);
    if (!gw_watcher_set(g_admin.loop, &g_admin.listen_w, EPOLLIN) ||
        !gw_watcher_set(g_admin.loop, &g_admin.wake_w, EPOLLIN) ||
        pthread_create(&g_admin.thread, NULL, admin_main, NULL) != 0) {
        return 0;
    }
    g_admin.running = 1;
    return 1;
}

void gw_admin_stop(void) {
    if (g_admin.running) {
        atomic_store(&g_admin.stop, 1);
        uint64_t one = 1;
        if (write(g_admin.wake_fd, &one, sizeof(one)) < 0) {
            gw_log(GW_LOG_ERROR, "admin: cannot wake its thread: %s", strerror(errno));
        }
        pthread_join(g_admin.thread, NULL);
        g_admin.running = 0;
    }
    if (g_admin.loop != NULL) {
        gw_watcher_remove(g_admin.loop, &g_admin.listen_w);
        gw_watcher_remove(g_admin.loop, &g_admin.wake_w);
        gw_loop_free(g_admin.loop);  // runs the deferred frees of closed connections
        g_admin.loop = NULL;
    }
    if (g_admin.wake_fd >= 0) {
        close(g_admin.wake_fd);
        g_admin.wake_fd = -1;
    }
    gw_sockdiag_close(&g_admin.diag);
    if (g_admin.fd >= 0) {
        close(g_admin.fd);
        g_admin.fd = -1;
    }
    pthread_mutex_lock(&g_admin.lock);
    pol_config *old = g_admin.cfg;
    g_admin.cfg = NULL;
    pthread_mutex_unlock(&g_admin.lock);
    pol_config_unref(old);
}
