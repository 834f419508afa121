#include "gateway/worker.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "gateway/base/log.h"
#include "gateway/base/xalloc.h"
#include "gateway/listener.h"
#include "gateway/service/metrics.h"
#include "gateway/tunnel/tunnel.h"

static void free_idle_retired(gw_worker *w, int all);

#if defined(__SANITIZE_ADDRESS__)
#define GW_HEAP_IS_GLIBC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GW_HEAP_IS_GLIBC 0
#endif
#endif
#ifndef GW_HEAP_IS_GLIBC
#define GW_HEAP_IS_GLIBC 1
#endif

static void stop_now(gw_worker *w) {
    while (w->host.tunnels != NULL) {
        gw_tunnel_abort(w->host.tunnels, "gateway stopping: drain_timeout_s passed");
    }
    gw_loop_stop(w->host.loop);
}

static void on_drain_timeout(gw_loop *loop, gw_timer *t) {
    stop_now(t->data);
}

static void on_trim(gw_loop *loop, gw_timer *t) {
    gw_worker *w = t->data;
    // Freed 16 KiB chunks sit amid the heap; malloc_trim hands their pages back. It walks
    // the heap, so only when it is worth it (256 KiB or more freed).
    // Under ASan the heap is the sanitizer's, and glibc's malloc_trim walks arenas that
    // were never set up (it crashed there): only the glibc heap is trimmed.
    if (gw_buf_pool_trim(&w->host.pool) >= 16 && GW_HEAP_IS_GLIBC) {
        malloc_trim(0);
    }
    gw_buf_pool_publish(&w->host.pool);
    gw_metrics_worker_turn(w->index, gw_loop_longest_turn_us(loop));
    free_idle_retired(w, 0);
    gw_timer_start(loop, t, 1000);
}

static void apply_pool_limits(gw_worker *w);

static void begin_drain(gw_worker *w) {
    if (w->host.draining) {
        return;
    }
    w->host.draining = 1;
    apply_pool_limits(w);  // stopping: nothing more is kept, and what was kept is closed
    gw_preconn_apply(w->host.preconn, NULL);
    for (size_t i = 0; i < w->num_listeners; i++) {
        gw_listener_stop(&w->listeners[i]);
    }
    for (gw_tunnel *t = w->host.tunnels, *next; t != NULL; t = next) {
        next = gw_tunnel_next(t);
        gw_tunnel_drain(t);
    }
    if (w->host.num_tunnels == 0) {
        gw_loop_stop(w->host.loop);
        return;
    }
    gw_timer_start(w->host.loop, &w->drain_timer, (uint64_t)w->host.cfg->limits.drain_timeout_s * 1000);
}

// free_idle_retired frees the replaced resolvers that have no lookups out (all of them
// with |all|).
static void free_idle_retired(gw_worker *w, int all) {
    size_t kept = 0;
    for (size_t i = 0; i < w->num_retired; i++) {
        if (all || !res_resolver_busy(w->retired[i])) {
            res_resolver_free(w->retired[i]);
        } else {
            w->retired[kept++] = w->retired[i];
        }
    }
    w->num_retired = kept;
}

// replace_resolver builds a resolver with |cfg|'s settings for new lookups; lookups out on
// the old one finish there (it is freed once they have).
static void replace_resolver(gw_worker *w, const pol_config *cfg) {
    char err[300];
    res_resolver *r = res_resolver_new(w->host.loop, cfg, err, sizeof(err));
    if (r == NULL) {
        gw_log(GW_LOG_ERROR, "worker %d: reload: resolver: %s; keeping the previous resolver settings", w->index, err);
        return;
    }
    free_idle_retired(w, 0);
    res_resolver **grown = realloc(w->retired, (w->num_retired + 1) * sizeof(*grown));
    if (grown == NULL) {
        res_resolver_free(r);
        gw_log(GW_LOG_ERROR, "worker %d: reload: out of memory; keeping the previous resolver settings", w->index);
        return;
    }
    w->retired = grown;
    w->retired[w->num_retired++] = w->host.resolver;
    w->host.resolver = r;
}

// apply_pool_limits sizes the upstream pool for the current config.
static void apply_pool_limits(gw_worker *w) {
    const pol_config *cfg = w->host.cfg;
    gw_upool_limits l = {
        .idle_per_key = w->host.draining ? 0 : cfg->upstream_pool.idle_per_key,
        .idle_total = cfg->upstream_pool.idle_total,
        .idle_timeout_s = cfg->upstream_pool.idle_timeout_s,
        .max_requests = cfg->upstream_pool.max_requests,
    };
    gw_upool_set_limits(w->host.upool, &l);
}

// retire_pooled closes the pooled connections of identities |cfg| no longer has (a
// reload, a rotated certificate or CRL: each loads identities of a new generation), before
// the snapshot they belong to is let go.
static void retire_pooled(gw_worker *w, const pol_config *cfg) {
    uint64_t gens[64] = {0};
    uint64_t *g = cfg->num_identities <= 64 ? gens : malloc(cfg->num_identities * sizeof(*g));
    if (g == NULL) {
        gw_upool_retire(w->host.upool, NULL, 0);  // out of memory: all of them go
        return;
    }
    for (size_t i = 0; i < cfg->num_identities; i++) {
        g[i] = cfg->identities[i]->generation;
    }
    gw_upool_retire(w->host.upool, g, cfg->num_identities);
    if (g != gens) {
        free(g);
    }
}

static void on_event(gw_loop *loop, gw_watcher *watcher, uint32_t events) {
    gw_worker *w = watcher->data;
    uint64_t v;
    while (read(w->event_fd, &v, sizeof(v)) > 0) {
    }
    pol_config *next = atomic_exchange(&w->next_cfg, NULL);
    if (next != NULL) {
        if (!pol_config_resolver_equal(w->host.cfg, next)) {
            replace_resolver(w, next);
        }
        retire_pooled(w, next);
        pol_config_unref(w->host.cfg);
        w->host.cfg = next;
        apply_pool_limits(w);
        gw_preconn_apply(w->host.preconn, next);  // the new rules' connections, from the new snapshot
    }
    if (atomic_load(&w->stop_requested)) {
        begin_drain(w);
    }
}

static void on_tunnel_closed(gw_tunnel_host *host) {
    if (host->draining && host->num_tunnels == 0) {
        gw_loop_stop(host->loop);
    }
}

int gw_worker_init(gw_worker *w, int index, pol_config *cfg, const int *listen_fds, char *err, size_t err_len) {
    memset(w, 0, sizeof(*w));
    w->index = index;
    w->event_fd = -1;
    w->diag.fd = -1;
    w->host.loop = gw_loop_new();
    if (w->host.loop == NULL) {
        snprintf(err, err_len, "epoll: %s", strerror(errno));
        return 0;
    }
    w->host.cfg = pol_config_ref(cfg);
    w->host.on_closed = on_tunnel_closed;
    w->host.resolver = res_resolver_new(w->host.loop, cfg, err, err_len);
    if (w->host.resolver == NULL) {
        return 0;
    }
    w->host.passcheck = gw_passcheck_new(w->host.loop);
    if (w->host.passcheck == NULL) {
        snprintf(err, err_len, "password checks: %s", strerror(errno));
        return 0;
    }
    w->host.keyops = gw_keyops_new(w->host.loop);
    if (w->host.keyops == NULL) {
        snprintf(err, err_len, "out of memory");
        return 0;
    }
    gw_buf_pool_init(&w->host.pool, 256);
    w->host.upool = gw_upool_new(w->host.loop);
    if (w->host.upool == NULL) {
        snprintf(err, err_len, "out of memory");
        return 0;
    }
    apply_pool_limits(w);
    w->host.preconn = gw_preconn_new(&w->host);
    if (w->host.preconn == NULL) {
        snprintf(err, err_len, "out of memory");
        return 0;
    }
    w->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->event_fd < 0) {
        snprintf(err, err_len, "eventfd: %s", strerror(errno));
        return 0;
    }
    gw_watcher_init(&w->event_w, w->event_fd, on_event, w);
    gw_watcher_set(w->host.loop, &w->event_w, EPOLLIN);
    gw_timer_init(&w->drain_timer, on_drain_timeout, w);
    gw_timer_init(&w->trim_timer, on_trim, w);
    gw_timer_start(w->host.loop, &w->trim_timer, 1000);
    // Callers of TCP clients: one netlink socket per worker, checked once. Workers start
    // after privileges are dropped: this is the uid our own connections carry.
    w->own_uid = (uint32_t)geteuid();
    if (!gw_sockdiag_open(&w->diag) || !gw_sockdiag_selftest(&w->diag, (uint32_t)geteuid())) {
        if (w->index == 0) {
            gw_log(GW_LOG_WARN,
                   "caller lookups (NETLINK_SOCK_DIAG) do not work here (%s): TCP clients have no "
                   "caller, so rules with `caller` match only UNIX-socket clients",
                   w->diag.fd < 0 ? strerror(errno) : "a loopback test connection was not found");
        }
        gw_sockdiag_close(&w->diag);
    }
    w->num_listeners = cfg->num_listeners;
    w->listeners = gw_xcalloc(cfg->num_listeners, sizeof(*w->listeners));  // at start: nothing to run without it
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        gw_listener_start(&w->listeners[i], w, listen_fds[i], i);
    }
    return 1;
}

static void *worker_main(void *arg) {
    gw_worker *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "mtlsgw-w%d", w->index);
    pthread_setname_np(pthread_self(), name);  // one line per worker in top -H, /proc/PID/task
    gw_preconn_apply(w->host.preconn, w->host.cfg);
    gw_loop_run(w->host.loop);
    return NULL;
}

int gw_worker_start(gw_worker *w) {
    return pthread_create(&w->thread, NULL, worker_main, w) == 0;
}

static void wake(gw_worker *w) {
    uint64_t one = 1;
    if (write(w->event_fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
        gw_log(GW_LOG_ERROR, "worker %d: cannot wake: %s", w->index, strerror(errno));
    }
}

void gw_worker_request_stop(gw_worker *w) {
    atomic_store(&w->stop_requested, 1);
    wake(w);
}

void gw_worker_set_config(gw_worker *w, pol_config *cfg) {
    pol_config *old = atomic_exchange(&w->next_cfg, pol_config_ref(cfg));
    pol_config_unref(old);
    wake(w);
}

void gw_worker_join(gw_worker *w) {
    pthread_join(w->thread, NULL);
}

void gw_worker_free(gw_worker *w) {
    if (w->host.loop != NULL) {
        while (w->host.tunnels != NULL) {
            gw_tunnel_abort(w->host.tunnels, "gateway stopping");
        }
        for (size_t i = 0; i < w->num_listeners; i++) {
            gw_listener_stop(&w->listeners[i]);
        }
        gw_watcher_remove(w->host.loop, &w->event_w);
        gw_timer_stop(w->host.loop, &w->drain_timer);
        gw_timer_stop(w->host.loop, &w->trim_timer);
    }
    gw_preconn_free(w->host.preconn);
    w->host.preconn = NULL;
    gw_upool_free(w->host.upool);  // before the buffer pool: read-ahead buffers go back to it
    w->host.upool = NULL;
    res_resolver_free(w->host.resolver);
    free_idle_retired(w, 1);
    free(w->retired);
    gw_passcheck_free(w->host.passcheck);  // after the tunnels: none waits on a check any more
    gw_keyops_free(w->host.keyops);        // likewise for signatures
    gw_loop_free(w->host.loop);            // runs the deferred frees of closed tunnels
    gw_buf_pool_clear(&w->host.pool);
    free(w->listeners);
    gw_sockdiag_close(&w->diag);
    if (w->event_fd >= 0) {
        close(w->event_fd);
    }
    pol_config_unref(atomic_exchange(&w->next_cfg, NULL));
    pol_config_unref(w->host.cfg);
    memset(w, 0, sizeof(*w));
}
