// resolver: host name resolution for one worker, on the worker's loop: static hosts from
// the config, then a TTL cache, then c-ares (driven by ARES_OPT_SOCK_STATE_CB and the
// loop's timer). Not thread-safe: each worker owns one.
#ifndef MTLSGW_RESOLVER_H
#define MTLSGW_RESOLVER_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/base/loop.h"
#include "policy/config.h"

#define RES_MAX_ADDRS 16

typedef enum {
    RES_OK = 0,
    RES_NOT_FOUND,  // NXDOMAIN or no A/AAAA record
    RES_TIMEOUT,    // no DNS server answered in time
    RES_FAILED,     // any other failure (server refused, malformed answer, ...)
} res_status;

typedef struct {
    int family;
    uint8_t addr[16];
} res_addr;

typedef struct res_resolver res_resolver;
typedef struct res_query res_query;

// Called once per query with the addresses (valid only during the call). Never called
// after res_query_detach.
typedef void (*res_callback)(void *arg, res_status status, const res_addr *addrs, size_t n);

// res_library_init must run once per process before res_resolver_new.
int res_library_init(void);
void res_library_cleanup(void);

// res_resolver_new creates a resolver on |loop| with |cfg|'s resolver settings (|cfg| is
// only read during the call). Returns NULL and a reason in |err| on failure.
res_resolver *res_resolver_new(gw_loop *loop, const pol_config *cfg, char *err, size_t err_len);
// res_resolver_free cancels outstanding queries (their callbacks are not called).
void res_resolver_free(res_resolver *r);

// res_resolver_busy says whether lookups are still out (a replaced resolver is freed
// once it has none, so they finish on the channel they started on).
int res_resolver_busy(const res_resolver *r);

// res_resolve looks up |name| (a normalised host name; IP literals are answered at once).
// The callback may run before this returns, in which case NULL is returned; otherwise a
// handle for res_query_detach.
res_query *res_resolve(res_resolver *r, const char *name, res_callback cb, void *arg);

// res_query_detach: the caller no longer wants the answer (c-ares 1.18 cannot cancel one
// query); the query finishes in the background and is freed then.
void res_query_detach(res_query *q);

const char *res_status_text(res_status s);

#endif
