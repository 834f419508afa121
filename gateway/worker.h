// worker: one thread with its own loop, listening sockets (SO_REUSEPORT), resolver,
// buffer pool and tunnels. Workers share only the config snapshot (read-only, refcounted),
// the TLS session cache and a few atomic counters.
#ifndef MTLSGW_WORKER_H
#define MTLSGW_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "gateway/base/loop.h"
#include "gateway/base/peer.h"
#include "gateway/tunnel/tunnel.h"
#include "policy/config.h"
#include "resolver/resolver.h"

typedef struct gw_worker gw_worker;
typedef struct gw_listener gw_listener;

struct gw_worker {
    int index;
    pthread_t thread;
    gw_tunnel_host host;             // loop, pool, current snapshot, resolver, password checks, tunnels
    _Atomic(pol_config *) next_cfg;  // a reloaded snapshot, taken on the next wake-up
    res_resolver **retired;          // replaced by a reload; each freed once its lookups are done
    size_t num_retired;
    gw_listener *listeners;
    size_t num_listeners;
    int event_fd;  // wakes the loop for commands from the main thread
    gw_watcher event_w;
    atomic_int stop_requested;
    gw_timer drain_timer;
    gw_timer trim_timer;  // gives idle pool buffers back, once a second
    gw_sockdiag diag;     // asks the kernel who owns a local TCP client's socket (fd -1: cannot)
    uint32_t own_uid;     // the gateway's effective uid: never a caller (a loop back into it)
};

// gw_worker_init prepares |w| with |listen_fds| (one per config listener, owned by the
// worker from now on). Returns 1, or 0 with a reason in |err|.
int gw_worker_init(gw_worker *w, int index, pol_config *cfg, const int *listen_fds, char *err, size_t err_len);
// gw_worker_start runs the worker's loop in a new thread.
int gw_worker_start(gw_worker *w);
// gw_worker_request_stop: stop accepting, let tunnels finish for drain_timeout_s, then
// end the loop. Safe from any thread.
void gw_worker_request_stop(gw_worker *w);
// gw_worker_set_config hands |cfg| (a new reference is taken) to the worker: new tunnels
// use it, running tunnels keep theirs. Safe from any thread.
void gw_worker_set_config(gw_worker *w, pol_config *cfg);
void gw_worker_join(gw_worker *w);
void gw_worker_free(gw_worker *w);

#endif
