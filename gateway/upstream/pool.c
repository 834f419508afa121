// pool: a worker's idle upstream connections (see pool.h).
#include "gateway/upstream/pool.h"

#include <errno.h>
#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "gateway/base/hash.h"

#define BUCKETS 1024

typedef struct conn conn;
typedef struct group group;

// A kept connection: on its key's stack (most recent first) and on the pool's age list.
struct conn {
    gw_upstream up;
    gw_watcher w;
    gw_timer timer;
    group *g;
    conn *g_prev, *g_next;      // its key's connections, most recently kept first
    conn *age_prev, *age_next;  // all of them, oldest first
    gw_upool *pool;
    char text[300];
};

// The connections kept under one key.
struct group {
    uint8_t key[GW_POOL_KEY_LEN];
    group *bucket_next;
    conn *top;
    size_t n;
};

// A connection let go while its TLS 1.3 server still owes the session ticket: it waits
// for it (or gw_upstream_ticket_wait_ms), then closes. Without it a client that takes its
// answer and leaves would leave the next one no session to resume.
typedef struct lingerer lingerer;
struct lingerer {
    gw_upstream up;
    gw_watcher w;
    gw_timer timer;
    gw_upool *pool;
    lingerer *prev, *next;
};

struct gw_upool {
    gw_loop *loop;
    lingerer *lingering;
    gw_upool_limits limits;
    group *buckets[BUCKETS];
    conn *oldest, *newest;
    size_t n;
};

static atomic_ullong g_hits, g_misses, g_evictions[GW_POOL_EVICT_COUNT];
static atomic_llong g_idle;

const char *gw_pool_evict_name(gw_pool_evict reason) {
    static const char *const names[GW_POOL_EVICT_COUNT] = {"timeout", "closed", "full", "retired"};
    return reason < GW_POOL_EVICT_COUNT ? names[reason] : "?";
}

void gw_upool_read_stats(gw_upool_stats *out) {
    out->hits = atomic_load_explicit(&g_hits, memory_order_relaxed);
    out->misses = atomic_load_explicit(&g_misses, memory_order_relaxed);
    for (int i = 0; i < GW_POOL_EVICT_COUNT; i++) {
        out->evictions[i] = atomic_load_explicit(&g_evictions[i], memory_order_relaxed);
    }
    out->idle = atomic_load_explicit(&g_idle, memory_order_relaxed);
}

static size_t bucket_of(const uint8_t *key) {
    uint64_t h;
    memcpy(&h, key, sizeof(h));  // the key is a digest already
    return (size_t)(h % BUCKETS);
}

static group *find_group(gw_upool *p, const uint8_t *key) {
    for (group *g = p->buckets[bucket_of(key)]; g != NULL; g = g->bucket_next) {
        if (memcmp(g->key, key, GW_POOL_KEY_LEN) == 0) {
            return g;
        }
    }
    return NULL;
}

static void drop_group(gw_upool *p, group *g) {
    group **pp = &p->buckets[bucket_of(g->key)];
    while (*pp != g) {
        pp = &(*pp)->bucket_next;
    }
    *pp = g->bucket_next;
    free(g);
}

// unlink takes |c| off its key's stack and the age list, and stops watching it. Its
// group goes when it is empty.
static void unlink_conn(gw_upool *p, conn *c, int keep_watch) {
    if (!keep_watch) {
        gw_watcher_forget(p->loop, &c->w);  // closed right after
    }
    gw_timer_stop(p->loop, &c->timer);
    group *g = c->g;
    if (c->g_prev) {
        c->g_prev->g_next = c->g_next;
    } else {
        g->top = c->g_next;
    }
    if (c->g_next) {
        c->g_next->g_prev = c->g_prev;
    }
    if (--g->n == 0) {
        drop_group(p, g);
    }
    if (c->age_prev) {
        c->age_prev->age_next = c->age_next;
    } else {
        p->oldest = c->age_next;
    }
    if (c->age_next) {
        c->age_next->age_prev = c->age_prev;
    } else {
        p->newest = c->age_prev;
    }
    p->n--;
    atomic_fetch_sub_explicit(&g_idle, 1, memory_order_relaxed);
}

static void evict(gw_upool *p, conn *c, gw_pool_evict reason) {
    unlink_conn(p, c, 0);
    gw_upstream_close(&c->up);
    atomic_fetch_add_explicit(&g_evictions[reason], 1, memory_order_relaxed);
    free(c);
}

static void on_timeout(gw_loop *loop, gw_timer *timer) {
    (void)loop;
    conn *c = timer->data;
    evict(c->pool, c, GW_POOL_EVICT_TIMEOUT);
}

// on_readable: an idle connection the server wrote to. A TLS message of its own (a late
// session ticket, a key update) is taken in stride; a close, or data nobody asked for,
// ends it.
static void on_readable(gw_loop *loop, gw_watcher *w, uint32_t events) {
    (void)loop;
    conn *c = w->data;
    if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))) {
        return;  // room to write (registered as a tunnel's: no epoll_ctl in and out)
    }
    if (c->up.ssl != NULL && !(events & (EPOLLERR | EPOLLHUP))) {
        uint8_t b;
        int r = SSL_peek(c->up.ssl, &b, 1);
        if (r <= 0 && SSL_get_error(c->up.ssl, r) == SSL_ERROR_WANT_READ) {
            return;
        }
    }
    evict(c->pool, c, GW_POOL_EVICT_CLOSED);
}

static void linger_end(lingerer *l) {
    gw_upool *p = l->pool;
    if (l->prev) {
        l->prev->next = l->next;
    } else {
        p->lingering = l->next;
    }
    if (l->next) {
        l->next->prev = l->prev;
    }
    gw_watcher_forget(p->loop, &l->w);  // closed right after
    gw_timer_stop(p->loop, &l->timer);
    gw_upstream_close(&l->up);
    free(l);
}

// linger_read takes what the server sent: 1 while the ticket is still awaited.
static int linger_read(lingerer *l) {
    uint8_t b;
    int r = SSL_peek(l->up.ssl, &b, 1);
    return r <= 0 && SSL_get_error(l->up.ssl, r) == SSL_ERROR_WANT_READ && !l->up.ticket_seen;
}

static void on_linger_readable(gw_loop *loop, gw_watcher *w, uint32_t events) {
    (void)loop;
    lingerer *l = w->data;
    if ((events & (EPOLLERR | EPOLLHUP)) || ((events & (EPOLLIN | EPOLLRDHUP)) && !linger_read(l))) {
        linger_end(l);
    }
}

static void on_linger_timer(gw_loop *loop, gw_timer *timer) {
    (void)loop;
    linger_end(timer->data);
}

// linger keeps |u| (moved out) until its ticket comes; 0 if it is not owed one.
static int linger(gw_upool *p, gw_upstream *u, gw_watcher *w) {
    unsigned ms = gw_upstream_ticket_wait_ms(u);
    if (ms == 0 || SSL_pending(u->ssl) > 0 || gw_upstream_buffered(u)) {
        return 0;
    }
    lingerer *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        return 0;
    }
    gw_upstream_move(&l->up, u);
    l->pool = p;
    l->next = p->lingering;
    if (l->next) {
        l->next->prev = l;
    }
    p->lingering = l;
    gw_timer_init(&l->timer, on_linger_timer, l);
    gw_timer_start(p->loop, &l->timer, ms);
    gw_watcher_init(&l->w, l->up.fd, on_linger_readable, l);
    if (!gw_watcher_move(p->loop, &l->w, w, EPOLLIN | EPOLLRDHUP | EPOLLET) || !linger_read(l)) {
        linger_end(l);  // (what came before the registration is read at once: edge-triggered)
    }
    return 1;
}

gw_upool *gw_upool_new(gw_loop *loop) {
    gw_upool *p = calloc(1, sizeof(*p));
    if (p != NULL) {
        p->loop = loop;
    }
    return p;
}

void gw_upool_free(gw_upool *p) {
    if (p == NULL) {
        return;
    }
    while (p->oldest != NULL) {
        conn *c = p->oldest;
        unlink_conn(p, c, 0);
        gw_upstream_close(&c->up);
        free(c);
    }
    while (p->lingering != NULL) {
        linger_end(p->lingering);
    }
    free(p);
}

static void trim(gw_upool *p) {
    while (p->oldest != NULL && p->n > (size_t)p->limits.idle_total) {
        evict(p, p->oldest, GW_POOL_EVICT_FULL);
    }
}

void gw_upool_set_limits(gw_upool *p, const gw_upool_limits *limits) {
    p->limits = *limits;
    if (limits->idle_per_key == 0) {
        while (p->oldest != NULL) {
            evict(p, p->oldest, GW_POOL_EVICT_RETIRED);
        }
    }
    trim(p);
}

void gw_upool_retire(gw_upool *p, const uint64_t *generations, size_t n) {
    for (conn *c = p->oldest, *next; c != NULL; c = next) {
        next = c->age_next;
        int live = 0;
        for (size_t i = 0; i < n && c->up.identity != NULL && !live; i++) {
            live = c->up.identity->generation == generations[i];
        }
        if (!live) {
            evict(p, c, GW_POOL_EVICT_RETIRED);
        }
    }
}

// reusable says whether |u| can carry another request: the server accepted us, nothing
// it sent is waiting unread, and it has requests left.
static int reusable(const gw_upool *p, const gw_upstream *u) {
    if (u->fd < 0 || !u->confirmed || u->requests >= (unsigned)p->limits.max_requests) {
        return 0;
    }
    if (u->ssl != NULL && (SSL_pending(u->ssl) > 0 || gw_upstream_buffered(u))) {
        return 0;
    }
    return 1;
}

int gw_upool_put(gw_upool *p, const uint8_t key[GW_POOL_KEY_LEN], gw_upstream *u, const char *text, gw_watcher *w) {
    if (p == NULL || p->limits.idle_per_key <= 0 || p->limits.idle_total <= 0 || !reusable(p, u)) {
        if (p != NULL && u->fd >= 0 && linger(p, u, w)) {
            return 0;
        }
        if (p != NULL) {
            gw_watcher_forget(p->loop, w);
        }
        gw_upstream_close(u);
        return 0;
    }
    group *g = find_group(p, key);
    conn *c = calloc(1, sizeof(*c));
    if (g == NULL && c != NULL) {
        g = calloc(1, sizeof(*g));
        if (g != NULL) {
            memcpy(g->key, key, GW_POOL_KEY_LEN);
            size_t b = bucket_of(key);
            g->bucket_next = p->buckets[b];
            p->buckets[b] = g;
        }
    }
    if (c == NULL || g == NULL) {
        free(c);
        gw_watcher_remove(p->loop, w);
        gw_upstream_close(u);
        return 0;
    }
    gw_upstream_move(&c->up, u);
    c->pool = p;
    c->g = g;
    snprintf(c->text, sizeof(c->text), "%s", text);
    c->g_next = g->top;
    if (g->top) {
        g->top->g_prev = c;
    }
    g->top = c;
    g->n++;
    c->age_prev = p->newest;
    if (p->newest) {
        p->newest->age_next = c;
    } else {
        p->oldest = c;
    }
    p->newest = c;
    p->n++;
    atomic_fetch_add_explicit(&g_idle, 1, memory_order_relaxed);
    gw_timer_init(&c->timer, on_timeout, c);
    gw_timer_start(p->loop, &c->timer, (uint64_t)p->limits.idle_timeout_s * 1000);
    gw_watcher_init(&c->w, c->up.fd, on_readable, c);
    if (!gw_watcher_move(p->loop, &c->w, w, w->events ? w->events : EPOLLIN | EPOLLRDHUP | EPOLLET)) {
        evict(p, c, GW_POOL_EVICT_CLOSED);
        return 0;
    }
    // Over the key's limit, its oldest goes; over the worker's, the oldest of all.
    if (g->n > (size_t)p->limits.idle_per_key) {
        conn *last = g->top;
        while (last->g_next != NULL) {
            last = last->g_next;
        }
        evict(p, last, GW_POOL_EVICT_FULL);
    }
    trim(p);
    return 1;
}

int gw_upool_take(gw_upool *p, const uint8_t key[GW_POOL_KEY_LEN], gw_upstream *out, char *text, size_t text_len,
                  gw_watcher *w, uint32_t events) {
    group *g = p != NULL && p->n > 0 ? find_group(p, key) : NULL;
    if (g == NULL) {
        atomic_fetch_add_explicit(&g_misses, 1, memory_order_relaxed);
        return 0;
    }
    conn *c = g->top;
    unlink_conn(p, c, 1);
    gw_upstream_move(out, &c->up);
    snprintf(text, text_len, "%s", c->text);
    int watched = gw_watcher_move(p->loop, w, &c->w, events);
    free(c);
    if (!watched) {
        gw_upstream_close(out);
        atomic_fetch_add_explicit(&g_evictions[GW_POOL_EVICT_CLOSED], 1, memory_order_relaxed);
        return 0;
    }
    atomic_fetch_add_explicit(&g_hits, 1, memory_order_relaxed);
    return 1;
}
