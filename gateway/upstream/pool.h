// pool: a worker's idle upstream connections, kept for later http_proxy requests from any
// client connection (nginx's upstream keepalive, HAProxy's idle server connections).
//
// A connection is kept under a key of everything that decided its verification and its
// identity (the tunnel computes it: identity generations, upstream address, server name,
// server_uri), and only a request with the same key takes it. While idle, the pool
// watches it: the server's close (or anything else it sends) and the idle timeout end
// it. One pool per worker: no locks.
#ifndef MTLSGW_POOL_H
#define MTLSGW_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/base/loop.h"
#include "gateway/upstream/upstream.h"

#define GW_POOL_KEY_LEN 32

typedef struct gw_upool gw_upool;

typedef struct {
    int idle_per_key;    // 0: the pool keeps nothing
    int idle_total;      // in this worker
    int idle_timeout_s;  // an idle connection is closed after this
    int max_requests;    // a connection that carried this many is not kept
} gw_upool_limits;

// Why a kept connection was closed: mtlsgw_upstream_pool_evictions_total{reason}.
typedef enum {
    GW_POOL_EVICT_TIMEOUT = 0,  // idle_timeout_s passed
    GW_POOL_EVICT_CLOSED,       // the server closed it (or sent something unasked)
    GW_POOL_EVICT_FULL,         // idle_per_key or idle_total: the oldest made room
    GW_POOL_EVICT_RETIRED,      // a reload or rotation replaced its identity
    GW_POOL_EVICT_COUNT
} gw_pool_evict;

gw_upool *gw_upool_new(gw_loop *loop);
// gw_upool_free closes every kept connection.
void gw_upool_free(gw_upool *p);
// gw_upool_set_limits applies |limits| (a new config); over them, the oldest go.
void gw_upool_set_limits(gw_upool *p, const gw_upool_limits *limits);
// gw_upool_retire closes every kept connection whose identity's generation is not one of
// |generations| (|n| of them), and every plain one (a new config may route differently).
void gw_upool_retire(gw_upool *p, const uint64_t *generations, size_t n);

// gw_upool_put offers the idle connection |u| (moved out: |u| is left closed) under |key|,
// with |text| (the upstream's address in words) for the next user. It is kept only if it
// is reusable: confirmed, nothing unread, fewer than max_requests carried. Returns 1 if
// kept. |w| is the caller's watcher of it: the pool takes its registration over (one
// epoll_ctl), or removes it. |p| must not be NULL. One not kept whose TLS 1.3 server still
// owes its session ticket is closed once the ticket comes (at most about a round trip).
int gw_upool_put(gw_upool *p, const uint8_t key[GW_POOL_KEY_LEN], gw_upstream *u, const char *text, gw_watcher *w);
// gw_upool_take moves the most recently kept connection of |key| into |out| (and its
// address into |text|), its registration to |w| (fn and data set) with |events|.
// Returns 1 on a hit, 0 on a miss.
int gw_upool_take(gw_upool *p, const uint8_t key[GW_POOL_KEY_LEN], gw_upstream *out, char *text, size_t text_len,
                  gw_watcher *w, uint32_t events);

// Counters of every worker's pool, for /metrics.
typedef struct {
    uint64_t hits, misses;
    uint64_t evictions[GW_POOL_EVICT_COUNT];
    int64_t idle;
} gw_upool_stats;
void gw_upool_read_stats(gw_upool_stats *out);
const char *gw_pool_evict_name(gw_pool_evict reason);

#endif
