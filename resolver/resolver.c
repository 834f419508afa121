#include "resolver/resolver.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "gateway/base/hash.h"
#include "gateway/base/xalloc.h"

#define CACHE_BUCKETS 1024
#define CACHE_MAX 8192

typedef struct cache_entry {
    struct cache_entry *next;
    uint64_t expires_ms;
    size_t n;
    res_addr addrs[RES_MAX_ADDRS];
    char name[];
} cache_entry;

typedef struct sock_watch {
    struct sock_watch *next;
    gw_watcher w;
} sock_watch;

// One c-ares lookup per name in flight; every caller asking for that name meanwhile waits
// on it (a burst of tunnels to one new name sends one query, not hundreds).
typedef struct lookup {
    res_resolver *r;
    struct res_query *waiters;
    int in_call, done;
    struct lookup *prev, *next;  // outstanding lookups
    char name[];
} lookup;

// A caller's handle: one waiter on a lookup.
struct res_query {
    res_callback cb;
    void *arg;
    int detached, done;
    struct res_query *next;  // the lookup's other waiters
};

struct res_resolver {
    gw_loop *loop;
    ares_channel channel;
    gw_timer timer;
    sock_watch *socks;
    cache_entry *cache[CACHE_BUCKETS];
    size_t cache_len;
    uint32_t cache_max_ttl;
    pol_host_entry *hosts;  // copied from the config
    size_t num_hosts;
    lookup *lookups;
    int freeing;
};

int res_library_init(void) {
    return ares_library_init(ARES_LIB_INIT_ALL) == ARES_SUCCESS;
}

void res_library_cleanup(void) {
    ares_library_cleanup();
}

const char *res_status_text(res_status s) {
    switch (s) {
        case RES_OK:
            return "ok";
        case RES_NOT_FOUND:
            return "no such name or no address";
        case RES_TIMEOUT:
            return "DNS timeout";
        default:
            return "DNS failure";
    }
}

static void rearm_timer(res_resolver *r) {
    struct timeval tv;
    if (ares_timeout(r->channel, NULL, &tv) != NULL) {
        gw_timer_start(r->loop, &r->timer, (uint64_t)tv.tv_sec * 1000 + (uint64_t)(tv.tv_usec + 999) / 1000);
    } else {
        gw_timer_stop(r->loop, &r->timer);
    }
}

static void on_timer(gw_loop *loop, gw_timer *t) {
    res_resolver *r = t->data;
    ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    rearm_timer(r);
}

static void on_sock(gw_loop *loop, gw_watcher *w, uint32_t events) {
    res_resolver *r = w->data;
    int fd = w->fd;
    ares_socket_t rfd = events & (EPOLLIN | EPOLLERR | EPOLLHUP) ? fd : ARES_SOCKET_BAD;
    ares_socket_t wfd = events & (EPOLLOUT | EPOLLERR | EPOLLHUP) ? fd : ARES_SOCKET_BAD;
    ares_process_fd(r->channel, rfd, wfd);
    rearm_timer(r);
}

// c-ares tells us which sockets to watch; (0, 0) means it is about to close |fd|.
static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable) {
    res_resolver *r = data;
    sock_watch **pp = &r->socks;
    while (*pp != NULL && (*pp)->w.fd != fd) {
        pp = &(*pp)->next;
    }
    sock_watch *s = *pp;
    if (!readable && !writable) {
        if (s != NULL) {
            gw_watcher_remove(r->loop, &s->w);
            *pp = s->next;
            free(s);
        }
        return;
    }
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL) {
            return;
        }
        gw_watcher_init(&s->w, fd, on_sock, r);
        s->next = r->socks;
        r->socks = s;
    }
    gw_watcher_set(r->loop, &s->w, (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0));
}

res_resolver *res_resolver_new(gw_loop *loop, const pol_config *cfg, char *err, size_t err_len) {
    res_resolver *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    r->loop = loop;
    r->cache_max_ttl = (uint32_t)cfg->resolver.cache_max_ttl;
    gw_timer_init(&r->timer, on_timer, r);
    struct ares_options opts;
    memset(&opts, 0, sizeof(opts));
    opts.sock_state_cb = sock_state_cb;
    opts.sock_state_cb_data = r;
    opts.timeout = cfg->resolver.timeout_ms;
    opts.tries = cfg->resolver.tries;
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    int rc = ares_init_options(&r->channel, &opts, mask);
    if (rc != ARES_SUCCESS) {
        snprintf(err, err_len, "c-ares: %s", ares_strerror(rc));
        free(r);
        return NULL;
    }
    if (cfg->resolver.servers_csv != NULL &&
        (rc = ares_set_servers_ports_csv(r->channel, cfg->resolver.servers_csv)) != ARES_SUCCESS) {
        snprintf(err, err_len, "resolver.servers: %s", ares_strerror(rc));
        ares_destroy(r->channel);
        free(r);
        return NULL;
    }
    if (cfg->resolver.num_hosts > 0) {
        r->hosts = gw_xcalloc(cfg->resolver.num_hosts, sizeof(*r->hosts));  // made at start and reload
        for (size_t i = 0; i < cfg->resolver.num_hosts; i++) {
            r->hosts[i] = cfg->resolver.hosts[i];
            r->hosts[i].name = gw_xstrdup(cfg->resolver.hosts[i].name);
            r->num_hosts++;
        }
    }
    return r;
}

void res_resolver_free(res_resolver *r) {
    if (r == NULL) {
        return;
    }
    r->freeing = 1;
    for (lookup *l = r->lookups; l != NULL; l = l->next) {
        for (res_query *q = l->waiters; q != NULL; q = q->next) {
            q->detached = 1;
        }
    }
    ares_destroy(r->channel);  // runs the callbacks with ARES_EDESTRUCTION: they free lookups
    gw_timer_stop(r->loop, &r->timer);
    while (r->socks != NULL) {
        sock_watch *s = r->socks;
        r->socks = s->next;
        gw_watcher_remove(r->loop, &s->w);
        free(s);
    }
    for (size_t i = 0; i < CACHE_BUCKETS; i++) {
        while (r->cache[i] != NULL) {
            cache_entry *e = r->cache[i];
            r->cache[i] = e->next;
            free(e);
        }
    }
    for (size_t i = 0; i < r->num_hosts; i++) {
        free(r->hosts[i].name);
    }
    free(r->hosts);
    free(r);
}

int res_resolver_busy(const res_resolver *r) {
    return r->lookups != NULL;
}

static size_t bucket_of(const char *name) {
    return (size_t)(gw_hash_string(GW_HASH_INIT, name) % CACHE_BUCKETS);
}

static cache_entry *cache_find(res_resolver *r, const char *name) {
    uint64_t now = gw_loop_now(r->loop);
    cache_entry **pp = &r->cache[bucket_of(name)];
    while (*pp != NULL) {
        cache_entry *e = *pp;
        if (e->expires_ms <= now) {  // drop expired entries on the way
            *pp = e->next;
            free(e);
            r->cache_len--;
            continue;
        }
        if (strcmp(e->name, name) == 0) {
            return e;
        }
        pp = &e->next;
    }
    return NULL;
}

static void cache_put(res_resolver *r, const char *name, const res_addr *addrs, size_t n, uint32_t ttl) {
    if (ttl > r->cache_max_ttl) {
        ttl = r->cache_max_ttl;
    }
    if (ttl == 0 || n == 0 || r->cache_len >= CACHE_MAX || cache_find(r, name) != NULL) {
        return;
    }
    size_t len = strlen(name);
    cache_entry *e = malloc(sizeof(*e) + len + 1);
    if (e == NULL) {
        return;
    }
    memcpy(e->name, name, len + 1);
    memcpy(e->addrs, addrs, n * sizeof(*addrs));
    e->n = n;
    e->expires_ms = gw_loop_now(r->loop) + (uint64_t)ttl * 1000;
    size_t b = bucket_of(name);
    e->next = r->cache[b];
    r->cache[b] = e;
    r->cache_len++;
}

static void unlink_lookup(lookup *l) {
    if (l->prev) {
        l->prev->next = l->next;
    } else {
        l->r->lookups = l->next;
    }
    if (l->next) {
        l->next->prev = l->prev;
    }
}

static lookup *find_lookup(res_resolver *r, const char *name) {
    for (lookup *l = r->lookups; l != NULL; l = l->next) {
        if (strcmp(l->name, name) == 0) {
            return l;
        }
    }
    return NULL;
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *ai) {
    lookup *l = arg;
    res_resolver *r = l->r;
    res_addr addrs[RES_MAX_ADDRS];
    size_t n = 0;
    uint32_t ttl = UINT32_MAX;
    if (status == ARES_SUCCESS && ai != NULL) {
        for (struct ares_addrinfo_node *node = ai->nodes; node && n < RES_MAX_ADDRS; node = node->ai_next) {
            if (node->ai_family == AF_INET) {
                addrs[n].family = AF_INET;
                memcpy(addrs[n].addr, &((struct sockaddr_in *)node->ai_addr)->sin_addr, 4);
            } else if (node->ai_family == AF_INET6) {
                addrs[n].family = AF_INET6;
                memcpy(addrs[n].addr, &((struct sockaddr_in6 *)node->ai_addr)->sin6_addr, 16);
            } else {
                continue;
            }
            if ((uint32_t)node->ai_ttl < ttl) {
                ttl = node->ai_ttl < 0 ? 0 : (uint32_t)node->ai_ttl;
            }
            // c-ares may list an address once per socket type: keep each once.
            int dup = 0;
            for (size_t i = 0; i < n; i++) {
                dup |= addrs[i].family == addrs[n].family && memcmp(addrs[i].addr, addrs[n].addr, 16) == 0;
            }
            if (!dup) {
                n++;
            }
        }
    }
    if (ai != NULL) {
        ares_freeaddrinfo(ai);
    }
    if (!r->freeing) {
        unlink_lookup(l);
    }
    res_status st = RES_OK;
    if (status == ARES_ENOTFOUND || status == ARES_ENODATA || (status == ARES_SUCCESS && n == 0)) {
        st = RES_NOT_FOUND;
    } else if (status == ARES_ETIMEOUT) {
        st = RES_TIMEOUT;
    } else if (status != ARES_SUCCESS) {
        st = RES_FAILED;
    }
    if (st == RES_OK && !r->freeing) {
        cache_put(r, l->name, addrs, n, ttl == UINT32_MAX ? 0 : ttl);
    }
    // A callback may close its tunnel, which detaches only its own waiter: take each
    // waiter off the list before calling it.
    while (l->waiters != NULL) {
        res_query *q = l->waiters;
        l->waiters = q->next;
        if (!q->detached) {
            q->cb(q->arg, st, addrs, n);
        }
        if (l->in_call) {
            q->done = 1;  // the caller of res_resolve is still inside it: it frees q
        } else {
            free(q);
        }
    }
    if (l->in_call) {
        l->done = 1;
    } else {
        free(l);
    }
}

res_query *res_resolve(res_resolver *r, const char *name, res_callback cb, void *arg) {
    res_addr addrs[RES_MAX_ADDRS];
    size_t n = 0;
    memset(addrs, 0, sizeof(addrs));
    if (inet_pton(AF_INET, name, addrs[0].addr) == 1) {
        addrs[0].family = AF_INET;
        cb(arg, RES_OK, addrs, 1);
        return NULL;
    }
    if (inet_pton(AF_INET6, name, addrs[0].addr) == 1) {
        addrs[0].family = AF_INET6;
        cb(arg, RES_OK, addrs, 1);
        return NULL;
    }
    for (size_t i = 0; i < r->num_hosts && n < RES_MAX_ADDRS; i++) {
        if (strcmp(r->hosts[i].name, name) == 0) {
            addrs[n].family = r->hosts[i].family;
            memcpy(addrs[n].addr, r->hosts[i].addr, 16);
            n++;
        }
    }
    if (n > 0) {
        cb(arg, RES_OK, addrs, n);
        return NULL;
    }
    cache_entry *e = cache_find(r, name);
    if (e != NULL) {
        memcpy(addrs, e->addrs, e->n * sizeof(*addrs));
        cb(arg, RES_OK, addrs, e->n);
        return NULL;
    }
    res_query *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        cb(arg, RES_FAILED, NULL, 0);
        return NULL;
    }
    q->cb = cb;
    q->arg = arg;
    lookup *l = find_lookup(r, name);
    if (l != NULL) {
        q->next = l->waiters;  // the same name is being looked up: wait for that answer
        l->waiters = q;
        return q;
    }
    size_t len = strlen(name);
    l = calloc(1, sizeof(*l) + len + 1);
    if (l == NULL) {
        free(q);
        cb(arg, RES_FAILED, NULL, 0);
        return NULL;
    }
    memcpy(l->name, name, len + 1);
    l->r = r;
    l->waiters = q;
    l->next = r->lookups;
    if (r->lookups) {
        r->lookups->prev = l;
    }
    r->lookups = l;
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    l->in_call = 1;
    ares_getaddrinfo(r->channel, name, NULL, &hints, on_addrinfo, l);
    l->in_call = 0;
    if (l->done) {  // answered during the call: the callback has run
        free(q);
        free(l);
        return NULL;
    }
    rearm_timer(r);
    return q;
}

void res_query_detach(res_query *q) {
    if (q != NULL) {
        q->detached = 1;
    }
}
