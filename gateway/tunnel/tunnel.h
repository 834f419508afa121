// tunnel: one client connection and everything it owns, from the first byte of the proxy
// request to the access-log line.
#ifndef MTLSGW_TUNNEL_H
#define MTLSGW_TUNNEL_H

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <stdatomic.h>
#include <stddef.h>

#include "gateway/base/buffer.h"
#include "gateway/base/loop.h"
#include "gateway/proto/errors.h"
#include "gateway/service/passcheck.h"
#include "gateway/upstream/keyops.h"
#include "gateway/upstream/pool.h"
#include "policy/config.h"
#include "resolver/resolver.h"

typedef struct gw_tunnel gw_tunnel;
typedef struct gw_preconn_s gw_preconn;

// What tunnels share with the others of their thread: the loop, the buffer pool, the
// current snapshot for new tunnels, the resolver and the password checks. A worker owns
// one; tunnels know nothing else about it.
typedef struct gw_tunnel_host {
    gw_loop *loop;
    gw_buf_pool pool;
    pol_config *cfg;  // the snapshot new tunnels (and new http_proxy requests) use
    res_resolver *resolver;
    gw_passcheck *passcheck;
    gw_keyops *keyops;    // channels to the signers of keys in tokens
    gw_upool *upool;      // idle upstream connections for http_proxy requests (upstream_pool)
    gw_preconn *preconn;  // connections kept ready for rules with preconnect
    int draining;         // stopping: responses say Connection: close
    gw_tunnel *tunnels;   // open tunnels, for draining and shutdown
    size_t num_tunnels;
    void (*on_closed)(struct gw_tunnel_host *host);  // a tunnel just went away
} gw_tunnel_host;

// Tunnels open in the whole process (for max_connections), and those over the limit that
// are only being answered with an error.
extern atomic_int gw_active_tunnels;
extern atomic_int gw_rejecting_tunnels;

// Shares of max_connections: tunnels per client (a caller uid, or a remote address),
// counted in buckets by a hash of it, shared by all workers. Two clients whose keys
// share a bucket share its count (4096 buckets: rare, and only ever stricter).
#define GW_SHARE_BUCKETS 4096
extern atomic_int gw_share_counts[GW_SHARE_BUCKETS];

// Who a new client is: its address, and the local user behind it.
typedef struct {
    const struct sockaddr *addr;      // AF_UNIX for a UNIX-socket listener
    uint32_t caller;                  // uid, or GW_CALLER_NONE: not known (remote, or not looked up)
    int32_t pid;                      // UNIX-socket clients: the peer's process id; else -1
    const struct sockaddr *orig_dst;  // transparent listeners: the original destination; NULL: none
    unsigned share;                   // its bucket + 1 in gw_share_counts, already counted; 0: none
    int share_full;                   // refused: this client holds its whole share
} gw_client_info;

// gw_share_bucket returns the bucket + 1 of |client|'s share: by caller when known, else
// by address for a client from elsewhere (an IPv6 one by its /64); 0 for a local client
// with no known caller (loopback or a UNIX socket: nothing tells them apart).
unsigned gw_share_bucket(const gw_client_info *client);

// gw_tunnel_accept takes over |fd|, accepted on listener |listener_index| of |host|'s
// config. With |admission| != GW_ERR_NONE the client's request is read only to answer it
// with that error in its own protocol (limits, allow list).
void gw_tunnel_accept(gw_tunnel_host *host, int fd, const gw_client_info *client, size_t listener_index,
                      gw_err admission);

// gw_tunnel_abort closes |t| at once (shutdown after the drain timeout).
void gw_tunnel_abort(gw_tunnel *t, const char *reason);

// gw_tunnel_drain closes |t| if it is idle (an HTTP client connection between requests);
// called on every tunnel when the gateway begins to stop.
void gw_tunnel_drain(gw_tunnel *t);

// gw_preconn_new makes |host|'s keeper of preconnected connections (preconnect.c);
// gw_preconn_apply replaces its connections by those |cfg|'s rules ask for (NULL: none);
// gw_preconn_free closes them all.
gw_preconn *gw_preconn_new(gw_tunnel_host *host);
void gw_preconn_apply(gw_preconn *p, pol_config *cfg);
void gw_preconn_free(gw_preconn *p);
// gw_tunnel_next returns the next tunnel in the host's list.
gw_tunnel *gw_tunnel_next(gw_tunnel *t);

#endif
