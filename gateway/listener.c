// listener: accepting clients on one listening socket of a worker. Limits are enforced
// here: the allow list, max_connections (over the limit a client still gets a precise
// error, within a small budget), and descriptor exhaustion (EMFILE pauses accepting
// instead of spinning on a socket that stays readable).
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "gateway/listener.h"
#include "gateway/base/log.h"
#include "gateway/tunnel/metrics.h"
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
        gw_err admission = GW_ERR_NONE;
        if (!pol_config_allows(wk->host.cfg, (struct sockaddr *)&peer)) {
            admission = GW_ERR_NOT_ALLOWED;
        } else if (atomic_load(&gw_active_tunnels) >= wk->host.cfg->limits.max_connections) {
            admission = GW_ERR_LIMIT;
        }
        if (admission != GW_ERR_NONE && atomic_load(&gw_rejecting_tunnels) >= REJECT_BUDGET) {
            close(fd);
            pause_listener(l);
            return;
        }
        gw_metrics_accepted(l->index);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        gw_tunnel_accept(&wk->host, fd, (struct sockaddr *)&peer, l->index, admission);
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
