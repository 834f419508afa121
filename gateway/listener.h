// listener: accepting on one listening socket of one worker.
#ifndef MTLSGW_LISTENER_H
#define MTLSGW_LISTENER_H

#include <stddef.h>

#include "gateway/worker.h"

// gw_listener_start watches |fd| (owned by |l| from now on) for clients of config
// listener |index|.
void gw_listener_start(gw_listener *l, gw_worker *w, int fd, size_t index);
// gw_listener_stop stops accepting and closes the socket.
void gw_listener_stop(gw_listener *l);

#endif
