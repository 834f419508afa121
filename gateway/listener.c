// listener: accepting clients on one listening socket of a worker. Limits are enforced
// here: the allow list, max_connections (over the limit a client still gets a precise
// error, within a small budget), and descriptor exhaustion (EMFILE pauses accepting
// instead of spinning on a socket that stays readable). The caller, the local user
// behind a client, is found here once per connection: SO_PEERCRED on a UNIX socket, the
// kernel's socket table for TCP when a rule or the access log needs it.
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "gateway/base/log.h"
#include "gateway/base/peer.h"
#include "gateway/listener.h"
#include "gateway/service/metrics.h"
#include "gateway/tunnel/tunnel.h"

#define ACCEPTS_PER_EVENT 64
#define REJECT_BUDGET 256
#define PAUSE_MS 100

static void on_resume(gw_loop *loop, gw_timer *t) {
    gw_listener *l = t->data;
    l->paused = 0;
    gw_watcher_set(loop, &l->w, EPOLLIN);
}

static void pause_listener(gw_listener *l) {
    if (l->paused) {
        return;
    }
    l->paused = 1;
    gw_watcher_remove(l->worker->host.loop, &l->w);
    gw_timer_start(l->worker->host.loop, &l->pause_timer, PAUSE_MS);
}

// find_caller looks up who owns the client's end of TCP connection |fd|. Returns 0 when
// the client must be refused: it is on loopback, so its socket must be in our table, and
// it is not (already gone: TIME_WAIT entries read as uid 0 and are never taken).
// A redirected client's socket still names its original destination as its other end.
static int find_caller(gw_worker *wk, int fd, const struct sockaddr *peer, const struct sockaddr *orig,
                       uint32_t *caller) {
    struct sockaddr_storage me;
    socklen_t ml = sizeof(me);
    if (wk->diag.fd < 0 || (orig == NULL && getsockname(fd, (struct sockaddr *)&me, &ml) != 0)) {
        return 1;
    }
    int r = gw_sockdiag_owner(&wk->diag, peer, orig != NULL ? orig : (struct sockaddr *)&me, 10, caller);
    if (r == GW_SOCKDIAG_FOUND) {
        return 1;
    }
    *caller = GW_CALLER_NONE;
    if (r == GW_SOCKDIAG_ERROR) {
        static _Thread_local uint64_t last_warn;
        uint64_t now = gw_loop_now(wk->host.loop);
        if (now - last_warn > 5000) {
            last_warn = now;
            gw_log(GW_LOG_WARN, "caller lookup failed (%s): the client has no caller", strerror(errno));
        }
        return 1;
    }
    return !gw_peer_is_loopback(peer);
}

static void on_accept(gw_loop *loop, gw_watcher *w, uint32_t events) {
    gw_listener *l = w->data;
    gw_worker *wk = l->worker;
    for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
        struct sockaddr_storage peer;
        socklen_t pl = sizeof(peer);
        int fd = accept4(w->fd, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                static _Thread_local uint64_t last_warn;
                uint64_t now = gw_loop_now(loop);
                if (now - last_warn > 5000) {
                    last_warn = now;
                    gw_log(GW_LOG_WARN, "listener %s: accept: %s; pausing accepts for %d ms",
                           wk->host.cfg->listeners[l->index].name, strerror(errno), PAUSE_MS);
                }
                pause_listener(l);
            }
            return;
        }
        const pol_config *cfg = wk->host.cfg;
        gw_client_info client = {(struct sockaddr *)&peer, GW_CALLER_NONE, -1, NULL, 0, 0};
        struct sockaddr_storage orig;
        if (cfg->listeners[l->index].transparent && gw_peer_original_dst(fd, &orig)) {
            client.orig_dst = (struct sockaddr *)&orig;
        }
        int is_unix = cfg->listeners[l->index].unix_path != NULL;
        if (is_unix && !gw_peer_unix_cred(fd, &client.caller, &client.pid)) {
            client.caller = GW_CALLER_NONE;
        }
        gw_err admission = GW_ERR_NONE;
        if (is_unix) {
            // `allow` is about addresses; a UNIX socket's file permissions decide who connects.
        } else if (!pol_config_allows(cfg, (struct sockaddr *)&peer)) {
            admission = GW_ERR_NOT_ALLOWED;
        } else if (atomic_load(&gw_active_tunnels) >= wk->host.cfg->limits.max_connections) {
            admission = GW_ERR_LIMIT;
        }
        if (admission != GW_ERR_NONE && atomic_load(&gw_rejecting_tunnels) >= REJECT_BUDGET) {
            close(fd);
            pause_listener(l);
            return;
        }
        if (!is_unix && admission == GW_ERR_NONE && (cfg->callers_in_rules || gw_access_log_enabled()) &&
            !find_caller(wk, fd, (struct sockaddr *)&peer, client.orig_dst, &client.caller)) {
            gw_log(GW_LOG_DEBUG, "listener %s: a loopback client left before its caller was known; closed",
                   cfg->listeners[l->index].name);
            close(fd);
            continue;
        }
        if (client.caller == wk->own_uid) {
            // The gateway's own uid is never a caller: a connection that comes from the
            // gateway itself (or another process of its service user) matches no `caller`.
            client.caller = GW_CALLER_NONE;
        }
        // Each caller, or client from elsewhere, gets a share of max_connections: one
        // cannot take every slot from the others.
        unsigned share = admission == GW_ERR_NONE ? gw_share_bucket(&client) : 0;
        if (share != 0) {
            if (atomic_fetch_add(&gw_share_counts[share - 1], 1) >= cfg->limits.max_connections_per_client) {
                atomic_fetch_sub(&gw_share_counts[share - 1], 1);
                if (atomic_load(&gw_rejecting_tunnels) >= REJECT_BUDGET) {
                    close(fd);
                    pause_listener(l);
                    return;
                }
                admission = GW_ERR_LIMIT;
                client.share_full = 1;
            } else {
                client.share = share;
            }
        }
        gw_metrics_accepted(l->index);
        gw_tunnel_accept(&wk->host, fd, &client, l->index, admission);
    }
}

void gw_listener_start(gw_listener *l, gw_worker *w, int fd, size_t index) {
    l->worker = w;
    l->index = index;
    l->paused = 0;
    gw_watcher_init(&l->w, fd, on_accept, l);
    gw_timer_init(&l->pause_timer, on_resume, l);
    gw_watcher_set(w->host.loop, &l->w, EPOLLIN);
}

void gw_listener_stop(gw_listener *l) {
    if (l->w.fd < 0) {
        return;
    }
    gw_timer_stop(l->worker->host.loop, &l->pause_timer);
    gw_watcher_remove(l->worker->host.loop, &l->w);
    close(l->w.fd);
    l->w.fd = -1;
}
