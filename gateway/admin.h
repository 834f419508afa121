// admin: the operators' HTTP endpoint (admin.address): /metrics (Prometheus text),
// /healthz and /identities (JSON). A thread of its own with its own event loop: sockets
// are non-blocking, each connection has 5 s from accept to the end of its answer, at most
// 32 are served at once, and only clients in admin.allow (default: loopback) are. It never
// touches the workers' loops.
#ifndef MTLSGW_ADMIN_H
#define MTLSGW_ADMIN_H

#include <sys/socket.h>

#include "policy/config.h"

// gw_admin_bind opens the listening socket on |cfg|'s admin address (before privileges
// are dropped). Returns 1, or 0 with errno set.
int gw_admin_bind(const pol_config *cfg);
// gw_admin_start serves from a new thread (binding first if gw_admin_bind was not called).
int gw_admin_start(pol_config *cfg);
// gw_admin_set_config makes the admin pages describe |cfg| (after a reload).
void gw_admin_set_config(pol_config *cfg);
// gw_admin_set_draining makes /healthz answer 503 (the gateway is stopping).
void gw_admin_set_draining(void);
// gw_admin_stop stops the thread and closes the socket.
void gw_admin_stop(void);

#endif
