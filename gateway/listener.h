// listener: accepting on one listening socket of one worker.
#ifndef MTLSGW_LISTENER_H
#define MTLSGW_LISTENER_H

#include <stddef.h>

#include "gateway/base/loop.h"
#include "gateway/worker.h"

// One listening socket of one worker.
struct gw_listener {
    gw_watcher w;
    gw_worker *worker;
    size_t index;  // into the config's listeners
    gw_timer pause_timer;
    int paused;
};

// gw_listener_start watches |fd| (owned by |l| from now on) for clients of config
// listener |index|.
void gw_listener_start(gw_listener *l, gw_worker *w, int fd, size_t index);
// gw_listener_stop stops accepting and closes the socket.
void gw_listener_stop(gw_listener *l);

#endif
