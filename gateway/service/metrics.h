// metrics: process-wide counters behind the admin endpoint's /metrics (Prometheus text
// format). Workers add to them with relaxed atomics, never a lock; the admin thread reads
// them when scraped. Series are in README, "Metrics and health".
#ifndef MTLSGW_METRICS_H
#define MTLSGW_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "gateway/base/strbuf.h"
#include "gateway/proto/errors.h"
#include "gateway/tls/ocsp.h"
#include "policy/config.h"

#define GW_METRICS_MAX_LISTENERS 64
#define GW_METRICS_MAX_IDENTITIES 256

typedef enum { GW_DNS_OK = 0, GW_DNS_NOT_FOUND, GW_DNS_TIMEOUT, GW_DNS_FAILED, GW_DNS_COUNT } gw_dns_result;

// gw_metrics_accepted counts a connection accepted on listener |index|.
void gw_metrics_accepted(size_t index);
// gw_metrics_tunnel_done counts a finished tunnel (or http_proxy request): |action| is a
// pol_action or -1 when no rule decided, |result| the access log's result.
void gw_metrics_tunnel_done(int action, gw_result result, uint64_t up_bytes, uint64_t down_bytes);
// gw_metrics_handshake records a completed upstream handshake of the identity in |slot|.
void gw_metrics_handshake(int slot, int resumed, uint64_t micros);
void gw_metrics_dns(gw_dns_result result);

// Proxy password checks: verified by the KDF (or a legacy hash), answered from the
// worker's cache of verified credentials, refused, or turned away with the queue full.
typedef enum {
    GW_PASS_VERIFIED = 0,
    GW_PASS_CACHED,
    GW_PASS_REJECTED,
    GW_PASS_QUEUE_FULL,
    GW_PASS_COUNT
} gw_pass_result;
void gw_metrics_password_check(gw_pass_result result);
void gw_metrics_reload(int ok);

// Preconnected connections (preconnect = N): what became of them, and how many are parked.
typedef enum {
    GW_PRECONN_TAKEN = 0,  // a tunnel took it
    GW_PRECONN_EXPIRED,    // parked longer than upstream_pool.idle_timeout_s: replaced
    GW_PRECONN_CLOSED,     // the server closed it while parked
    GW_PRECONN_FAILED,     // its dial failed (a backoff, then another)
    GW_PRECONN_COUNT
} gw_preconnect_event;
// gw_metrics_preconnect counts |event| (GW_PRECONN_COUNT: none) and adds |parked| to the
// parked gauge.
void gw_metrics_preconnect(gw_preconnect_event event, int parked);

// gw_metrics_worker_turn publishes worker |index|'s longest loop turn so far (once a
// second, from the worker): mtlsgw_worker_longest_turn_seconds{worker}.
#define GW_METRICS_MAX_WORKERS 256
void gw_metrics_worker_turn(int index, uint64_t micros);

// Parent proxies (mtlsgw_via_connects_total{via,result}): each ask of a parent, by what came of it.
typedef enum {
    GW_VIA_OK = 0,
    GW_VIA_AUTH,         // 407, or credentials refused
    GW_VIA_REFUSED,      // the parent refused the destination
    GW_VIA_ERROR,        // the parent could not reach it, closed, or answered nonsense
    GW_VIA_TIMEOUT,      // no answer in time
    GW_VIA_UNREACHABLE,  // the parent itself: DNS, connect
    GW_VIA_TLS,          // an https:// parent: its certificate, or TLS to it, failed
    GW_VIA_COUNT
} gw_via_result;
void gw_metrics_via(const char *via, gw_via_result result);

// gw_metrics_ocsp counts what a server's OCSP staple said (a gw_ocsp_result) for the
// identity in |slot| (mtlsgw_upstream_ocsp_total{identity,result}).
void gw_metrics_ocsp(int slot, int result);
unsigned long long gw_metrics_ocsp_count(int slot, int result);

// Renewals over ACME (mtlsgw_acme_renewals_total{identity,result}).
typedef enum { GW_ACME_OK = 0, GW_ACME_ERROR, GW_ACME_RATE_LIMITED, GW_ACME_RESULT_COUNT } gw_acme_result_kind;
void gw_metrics_acme_renewal(int slot, gw_acme_result_kind result);
// gw_metrics_acme_due says when the next renewal of the identity in |slot| is due (Unix
// time: the renewal thread's plan, retries included).
void gw_metrics_acme_due(int slot, time_t due);

// gw_metrics_identity_handshakes reads the handshakes of the identity in |slot|: full and
// resumed, and how many took up to each of the GW_METRICS_HS_BUCKETS bounds (the last:
// longer), with the bounds in seconds in |bounds| (may be NULL). 0 for a slot out of range.
#define GW_METRICS_HS_BUCKETS 13
int gw_metrics_identity_handshakes(int slot, unsigned long long *full, unsigned long long *resumed,
                                   unsigned long long buckets[GW_METRICS_HS_BUCKETS], const char **bounds);

// gw_metrics_identity_slot returns the slot for identity |name| (the same name always
// gets the same slot, across reloads), or -1 when all slots are taken. Takes a lock:
// called when a config is loaded, not on the data path.
int gw_metrics_identity_slot(const char *name);

// gw_metrics_render returns the whole /metrics page for the running |cfg| (listener
// names, identity expiry) with |active| tunnels, NUL-terminated, malloc'd; NULL if out
// of memory.
char *gw_metrics_render(const pol_config *cfg, int active);

#endif
