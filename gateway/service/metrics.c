#include "gateway/service/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/base/buffer.h"
#include "gateway/upstream/keyops.h"
#include "gateway/upstream/pool.h"
#include "gateway/upstream/sesscache.h"

#include "gateway/tls/identity.h"

#define NUM_RESULTS GW_RESULT_COUNT  // every gw_result; NONE is shown as "other"
#define NUM_ACTIONS 4                // deny, direct, mtls, none

// Handshake time buckets, in microseconds (the `le` labels are in seconds).
static const uint64_t buckets_us[] = {1000,   2500,   5000,   10000,   25000,   50000,
                                      100000, 250000, 500000, 1000000, 2500000, 5000000};
static const char *const bucket_labels[] = {"0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
                                            "0.1",   "0.25",   "0.5",   "1",    "2.5",   "5"};
#define NUM_BUCKETS (sizeof(buckets_us) / sizeof(buckets_us[0]))

typedef struct {
    atomic_uint_fast64_t handshakes[2];  // [resumed]
    atomic_uint_fast64_t buckets[NUM_BUCKETS + 1];
    atomic_uint_fast64_t sum_us;
    atomic_uint_fast64_t acme[GW_ACME_RESULT_COUNT];  // renewals over ACME, by result
    atomic_llong acme_due;                            // when the next renewal is due (Unix time); 0: not ACME
    atomic_uint_fast64_t ocsp[GW_OCSP_RESULT_COUNT];  // the servers' OCSP staples, by what they said
} identity_metrics;

static struct {
    atomic_uint_fast64_t accepted[GW_METRICS_MAX_LISTENERS];
    atomic_uint_fast64_t tunnels[NUM_ACTIONS][NUM_RESULTS];
    atomic_uint_fast64_t bytes_up, bytes_down;
    atomic_uint_fast64_t dns[GW_DNS_COUNT];
    atomic_uint_fast64_t passwords[GW_PASS_COUNT];
    atomic_uint_fast64_t reloads[2];  // [ok]
    identity_metrics identities[GW_METRICS_MAX_IDENTITIES];
} g;

static pthread_mutex_t g_slots_lock = PTHREAD_MUTEX_INITIALIZER;
static char *g_slot_names[GW_METRICS_MAX_IDENTITIES];
static atomic_int g_num_slots;

#define ADD(counter, n) atomic_fetch_add_explicit(&(counter), (n), memory_order_relaxed)
#define GET(counter) ((unsigned long long)atomic_load_explicit(&(counter), memory_order_relaxed))

void gw_metrics_accepted(size_t index) {
    if (index < GW_METRICS_MAX_LISTENERS) {
        ADD(g.accepted[index], 1);
    }
}

void gw_metrics_tunnel_done(int action, gw_result result, uint64_t up_bytes, uint64_t down_bytes) {
    size_t a = action >= 0 && action < NUM_ACTIONS - 1 ? (size_t)action : NUM_ACTIONS - 1;
    size_t r = (unsigned)result < GW_RESULT_COUNT ? (size_t)result : GW_RESULT_NONE;
    ADD(g.tunnels[a][r], 1);
    ADD(g.bytes_up, up_bytes);
    ADD(g.bytes_down, down_bytes);
}

void gw_metrics_handshake(int slot, int resumed, uint64_t micros) {
    if (slot < 0 || slot >= GW_METRICS_MAX_IDENTITIES) {
        return;
    }
    identity_metrics *m = &g.identities[slot];
    ADD(m->handshakes[resumed ? 1 : 0], 1);
    size_t b = 0;
    while (b < NUM_BUCKETS && micros > buckets_us[b]) {
        b++;
    }
    ADD(m->buckets[b], 1);
    ADD(m->sum_us, micros);
}

void gw_metrics_acme_renewal(int slot, gw_acme_result_kind result) {
    if (slot >= 0 && slot < GW_METRICS_MAX_IDENTITIES && (unsigned)result < GW_ACME_RESULT_COUNT) {
        ADD(g.identities[slot].acme[result], 1);
    }
}

static void label_value(gw_strbuf *b, const char *s);

#define MAX_VIAS 64
static pthread_mutex_t g_via_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char *name;
    atomic_uint_fast64_t n[GW_VIA_COUNT];
} g_vias[MAX_VIAS];
static atomic_int g_num_vias;

void gw_metrics_via(const char *via, gw_via_result result) {
    if (via == NULL || (unsigned)result >= GW_VIA_COUNT) {
        return;
    }
    int n = atomic_load(&g_num_vias);
    for (int i = 0; i < n; i++) {
        if (strcmp(g_vias[i].name, via) == 0) {
            ADD(g_vias[i].n[result], 1);
            return;
        }
    }
    pthread_mutex_lock(&g_via_lock);
    n = atomic_load(&g_num_vias);
    int slot = -1;
    for (int i = 0; i < n && slot < 0; i++) {
        slot = strcmp(g_vias[i].name, via) == 0 ? i : -1;
    }
    if (slot < 0 && n < MAX_VIAS && (g_vias[n].name = strdup(via)) != NULL) {
        slot = n;
        atomic_store(&g_num_vias, n + 1);
    }
    if (slot >= 0) {
        ADD(g_vias[slot].n[result], 1);
    }
    pthread_mutex_unlock(&g_via_lock);
}

static void render_vias(gw_strbuf *b) {
    static const char *const names[GW_VIA_COUNT] = {"ok",      "auth_failed", "refused",   "error",
                                                    "timeout", "unreachable", "tls_failed"};
    gw_strbuf_printf(b,
                     "# HELP mtlsgw_via_connects_total Tunnels asked of each parent proxy (via), by what came of it.\n"
                     "# TYPE mtlsgw_via_connects_total counter\n");
    int n = atomic_load(&g_num_vias);
    for (int i = 0; i < n; i++) {
        for (int r = 0; r < GW_VIA_COUNT; r++) {
            gw_strbuf_printf(b, "mtlsgw_via_connects_total{via=\"");
            label_value(b, g_vias[i].name);
            gw_strbuf_printf(b, "\",result=\"%s\"} %llu\n", names[r], GET(g_vias[i].n[r]));
        }
    }
}

void gw_metrics_ocsp(int slot, int result) {
    if (slot >= 0 && slot < GW_METRICS_MAX_IDENTITIES && result > 0 && result < GW_OCSP_RESULT_COUNT) {
        ADD(g.identities[slot].ocsp[result], 1);
    }
}

unsigned long long gw_metrics_ocsp_count(int slot, int result) {
    return slot >= 0 && slot < GW_METRICS_MAX_IDENTITIES && result > 0 && result < GW_OCSP_RESULT_COUNT
               ? GET(g.identities[slot].ocsp[result])
               : 0;
}

void gw_metrics_acme_due(int slot, time_t due) {
    if (slot >= 0 && slot < GW_METRICS_MAX_IDENTITIES) {
        atomic_store_explicit(&g.identities[slot].acme_due, (long long)due, memory_order_relaxed);
    }
}

int gw_metrics_identity_handshakes(int slot, unsigned long long *full, unsigned long long *resumed,
                                   unsigned long long buckets[GW_METRICS_HS_BUCKETS], const char **bounds) {
    _Static_assert(NUM_BUCKETS + 1 == GW_METRICS_HS_BUCKETS, "buckets");
    if (slot < 0 || slot >= GW_METRICS_MAX_IDENTITIES) {
        return 0;
    }
    *full = GET(g.identities[slot].handshakes[0]);
    *resumed = GET(g.identities[slot].handshakes[1]);
    for (size_t i = 0; i <= NUM_BUCKETS; i++) {
        buckets[i] = GET(g.identities[slot].buckets[i]);
        if (bounds != NULL) {
            bounds[i] = i < NUM_BUCKETS ? bucket_labels[i] : "+Inf";
        }
    }
    return 1;
}

void gw_metrics_password_check(gw_pass_result result) {
    if ((unsigned)result < GW_PASS_COUNT) {
        ADD(g.passwords[result], 1);
    }
}

void gw_metrics_dns(gw_dns_result result) {
    if ((unsigned)result < GW_DNS_COUNT) {
        ADD(g.dns[result], 1);
    }
}

static atomic_llong g_preconn_parked;
static atomic_ullong g_preconn[GW_PRECONN_COUNT];

void gw_metrics_preconnect(gw_preconnect_event event, int parked) {
    if (event < GW_PRECONN_COUNT) {
        atomic_fetch_add_explicit(&g_preconn[event], 1, memory_order_relaxed);
    }
    if (parked != 0) {
        atomic_fetch_add_explicit(&g_preconn_parked, parked, memory_order_relaxed);
    }
}

void gw_metrics_reload(int ok) {
    ADD(g.reloads[ok ? 1 : 0], 1);
}

int gw_metrics_identity_slot(const char *name) {
    pthread_mutex_lock(&g_slots_lock);
    int n = atomic_load(&g_num_slots), slot = -1;
    for (int i = 0; i < n; i++) {
        if (strcmp(g_slot_names[i], name) == 0) {
            slot = i;
            break;
        }
    }
    if (slot < 0 && n < GW_METRICS_MAX_IDENTITIES && (g_slot_names[n] = strdup(name)) != NULL) {
        slot = n;
        atomic_store(&g_num_slots, n + 1);
    }
    pthread_mutex_unlock(&g_slots_lock);
    return slot;
}

// render_acme: the renewals of the identities renewed over ACME, and when each is due
// (negative: overdue, the renewal is being retried).
static void render_acme(gw_strbuf *b, const pol_config *cfg) {
    static const char *const names[GW_ACME_RESULT_COUNT] = {"ok", "error", "rate_limited"};
    gw_strbuf_printf(b,
                     "# HELP mtlsgw_acme_renewals_total Certificate renewals over ACME, by result.\n"
                     "# TYPE mtlsgw_acme_renewals_total counter\n");
    for (size_t i = 0; i < cfg->num_acme; i++) {
        int slot = -1;
        for (size_t j = 0; j < cfg->num_identities && slot < 0; j++) {
            if (strcmp(cfg->identities[j]->spec.name, cfg->acme[i].identity) == 0) {
                slot = cfg->identities[j]->metrics_slot;
            }
        }
        for (int r = 0; r < GW_ACME_RESULT_COUNT && slot >= 0; r++) {
            gw_strbuf_printf(b, "mtlsgw_acme_renewals_total{identity=\"");
            label_value(b, cfg->acme[i].identity);
            gw_strbuf_printf(b, "\",result=\"%s\"} %llu\n", names[r], GET(g.identities[slot].acme[r]));
        }
    }
    gw_strbuf_printf(b,
                     "# HELP mtlsgw_identity_renewal_due_seconds Seconds until the next ACME renewal of each "
                     "identity is due (0 or less: under way or being retried).\n"
                     "# TYPE mtlsgw_identity_renewal_due_seconds gauge\n");
    time_t now = time(NULL);
    for (size_t i = 0; i < cfg->num_acme; i++) {
        for (size_t j = 0; j < cfg->num_identities; j++) {
            const gw_identity *id = cfg->identities[j];
            if (strcmp(id->spec.name, cfg->acme[i].identity) != 0 || id->metrics_slot < 0) {
                continue;
            }
            long long due =
                (long long)atomic_load_explicit(&g.identities[id->metrics_slot].acme_due, memory_order_relaxed);
            if (due == 0) {
                due = id->pending ? (long long)now
                                  : (long long)pol_acme_due(&cfg->acme[i], id->not_before, id->not_after);
            }
            gw_strbuf_printf(b, "mtlsgw_identity_renewal_due_seconds{identity=\"");
            label_value(b, id->spec.name);
            gw_strbuf_printf(b, "\"} %lld\n", due - (long long)now);
        }
    }
}

// label_value writes |s| escaped for a Prometheus label value.
static void label_value(gw_strbuf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            gw_strbuf_printf(b, "\\%c", *s);
        } else if (*s == '\n') {
            gw_strbuf_printf(b, "\\n");
        } else {
            gw_strbuf_printf(b, "%c", *s);
        }
    }
}

// render_key_metrics writes one family of the token-key series (|times|: the signing time
// summary, else the signature counts by result), for the identities whose key is in a token.
static void render_key_metrics(gw_strbuf *b, const pol_config *cfg, int times) {
    static const char *const results[GW_KEY_RESULTS] = {"signed", "failed", "timeout"};
    for (size_t i = 0, first = 1; i < cfg->num_identities; i++) {
        const gw_identity *id = cfg->identities[i];
        uint64_t counts[GW_KEY_RESULTS], us;
        if (id->p11 == NULL) {
            continue;
        }
        if (first) {
            gw_strbuf_printf(b, times ? "# HELP mtlsgw_key_sign_seconds Time from a signature request to the token's "
                                        "signature, per identity.\n# TYPE mtlsgw_key_sign_seconds summary\n"
                                      : "# HELP mtlsgw_key_signatures_total Signatures handshakes asked of PKCS#11 "
                                        "tokens, per identity: signed, failed (token error, signer died), timeout.\n"
                                        "# TYPE mtlsgw_key_signatures_total counter\n");
            first = 0;
        }
        gw_keyops_stats(id->metrics_slot, counts, &us);
        if (times) {
            gw_strbuf_printf(b, "mtlsgw_key_sign_seconds_sum{identity=\"");
            label_value(b, id->spec.name);
            gw_strbuf_printf(b, "\"} %.6f\nmtlsgw_key_sign_seconds_count{identity=\"", (double)us / 1e6);
            label_value(b, id->spec.name);
            gw_strbuf_printf(b, "\"} %llu\n", (unsigned long long)counts[GW_KEY_SIGNED]);
            continue;
        }
        for (int r = 0; r < GW_KEY_RESULTS; r++) {
            gw_strbuf_printf(b, "mtlsgw_key_signatures_total{identity=\"");
            label_value(b, id->spec.name);
            gw_strbuf_printf(b, "\",result=\"%s\"} %llu\n", results[r], (unsigned long long)counts[r]);
        }
    }
}

static _Atomic uint64_t g_worker_turn_us[GW_METRICS_MAX_WORKERS];
static atomic_int g_num_workers;

void gw_metrics_worker_turn(int index, uint64_t micros) {
    if (index < 0 || index >= GW_METRICS_MAX_WORKERS) {
        return;
    }
    atomic_store_explicit(&g_worker_turn_us[index], micros, memory_order_relaxed);
    int n = atomic_load(&g_num_workers);
    while (n < index + 1 && !atomic_compare_exchange_weak(&g_num_workers, &n, index + 1)) {
    }
}

char *gw_metrics_render(const pol_config *cfg, int active) {
    gw_strbuf b = {0};
    gw_strbuf_printf(&b,
                     "# HELP mtlsgw_connections_accepted_total Client connections accepted, per listener.\n"
                     "# TYPE mtlsgw_connections_accepted_total counter\n");
    for (size_t i = 0; i < cfg->num_listeners && i < GW_METRICS_MAX_LISTENERS; i++) {
        gw_strbuf_printf(&b, "mtlsgw_connections_accepted_total{listener=\"");
        label_value(&b, cfg->listeners[i].name);
        gw_strbuf_printf(&b, "\"} %llu\n", GET(g.accepted[i]));
    }
    gw_strbuf_printf(&b,
                     "# HELP mtlsgw_tunnels_active Tunnels open now.\n# TYPE mtlsgw_tunnels_active gauge\n"
                     "mtlsgw_tunnels_active %d\n",
                     active);
    gw_strbuf_printf(&b,
                     "# HELP mtlsgw_worker_longest_turn_seconds The longest one turn of a worker's event loop took "
                     "since start (a stall every tunnel of that worker waited out).\n"
                     "# TYPE mtlsgw_worker_longest_turn_seconds gauge\n");
    for (int i = 0; i < atomic_load(&g_num_workers); i++) {
        gw_strbuf_printf(&b, "mtlsgw_worker_longest_turn_seconds{worker=\"%d\"} %.6f\n", i,
                         (double)atomic_load_explicit(&g_worker_turn_us[i], memory_order_relaxed) / 1e6);
    }
    gw_strbuf_printf(
        &b,
        "# HELP mtlsgw_relay_buffers 16 KiB relay buffers held by tunnels (in_use) and kept for reuse (free).\n"
        "# TYPE mtlsgw_relay_buffers gauge\nmtlsgw_relay_buffers{state=\"in_use\"} %ld\n"
        "mtlsgw_relay_buffers{state=\"free\"} %ld\n",
        atomic_load(&gw_buffers_in_use), atomic_load(&gw_buffers_free));
    gw_strbuf_printf(&b,
                     "# HELP mtlsgw_tunnels_total Finished tunnels (and http_proxy requests), per action and result.\n"
                     "# TYPE mtlsgw_tunnels_total counter\n");
    static const char *const actions[NUM_ACTIONS] = {"deny", "direct", "mtls", "none"};
    for (size_t a = 0; a < NUM_ACTIONS; a++) {
        for (size_t r = 0; r < NUM_RESULTS; r++) {
            unsigned long long v = GET(g.tunnels[a][r]);
            if (v != 0) {
                gw_strbuf_printf(&b, "mtlsgw_tunnels_total{action=\"%s\",result=\"%s\"} %llu\n", actions[a],
                                 r == GW_RESULT_NONE ? "other" : gw_result_name((gw_result)r), v);
            }
        }
    }
    gw_strbuf_printf(&b,
                     "# HELP mtlsgw_bytes_total Bytes relayed: up (client to upstream) and down.\n"
                     "# TYPE mtlsgw_bytes_total counter\n"
                     "mtlsgw_bytes_total{direction=\"up\"} %llu\nmtlsgw_bytes_total{direction=\"down\"} %llu\n",
                     GET(g.bytes_up), GET(g.bytes_down));
    static const char *const dns[GW_DNS_COUNT] = {"ok", "not_found", "timeout", "failed"};
    gw_strbuf_printf(&b,
                     "# HELP mtlsgw_dns_lookups_total Name lookups (cache and static hosts included), per result.\n"
                     "# TYPE mtlsgw_dns_lookups_total counter\n");
    for (size_t i = 0; i < GW_DNS_COUNT; i++) {
        gw_strbuf_printf(&b, "mtlsgw_dns_lookups_total{result=\"%s\"} %llu\n", dns[i], GET(g.dns[i]));
    }
    static const char *const pass[GW_PASS_COUNT] = {"verified", "cached", "rejected", "queue_full"};
    gw_strbuf_printf(&b,
                     "# HELP mtlsgw_password_checks_total Proxy password checks: verified by the KDF, answered "
                     "from the cache of verified credentials, rejected, or refused with the KDF queue full.\n"
                     "# TYPE mtlsgw_password_checks_total counter\n");
    for (size_t i = 0; i < GW_PASS_COUNT; i++) {
        gw_strbuf_printf(&b, "mtlsgw_password_checks_total{result=\"%s\"} %llu\n", pass[i], GET(g.passwords[i]));
    }
    gw_strbuf_printf(
        &b,
        "# HELP mtlsgw_config_reloads_total Configuration reloads (SIGHUP or changed identity files).\n"
        "# TYPE mtlsgw_config_reloads_total counter\n"
        "mtlsgw_config_reloads_total{result=\"ok\"} %llu\nmtlsgw_config_reloads_total{result=\"failed\"} %llu\n",
        GET(g.reloads[1]), GET(g.reloads[0]));
    int slots = atomic_load(&g_num_slots);
    gw_strbuf_printf(
        &b,
        "# HELP mtlsgw_upstream_handshakes_total Completed upstream TLS handshakes, per identity, resumed or not.\n"
        "# TYPE mtlsgw_upstream_handshakes_total counter\n");
    for (int s = 0; s < slots; s++) {
        for (int r = 0; r < 2; r++) {
            gw_strbuf_printf(&b, "mtlsgw_upstream_handshakes_total{identity=\"");
            label_value(&b, g_slot_names[s]);
            gw_strbuf_printf(&b, "\",resumed=\"%s\"} %llu\n", r ? "true" : "false", GET(g.identities[s].handshakes[r]));
        }
    }
    gw_strbuf_printf(&b,
                     "# HELP mtlsgw_upstream_handshake_seconds Upstream TLS handshake time, per identity.\n"
                     "# TYPE mtlsgw_upstream_handshake_seconds histogram\n");
    for (int s = 0; s < slots; s++) {
        unsigned long long cum = 0;
        for (size_t i = 0; i <= NUM_BUCKETS; i++) {
            cum += GET(g.identities[s].buckets[i]);
            gw_strbuf_printf(&b, "mtlsgw_upstream_handshake_seconds_bucket{identity=\"");
            label_value(&b, g_slot_names[s]);
            gw_strbuf_printf(&b, "\",le=\"%s\"} %llu\n", i < NUM_BUCKETS ? bucket_labels[i] : "+Inf", cum);
        }
        gw_strbuf_printf(&b, "mtlsgw_upstream_handshake_seconds_sum{identity=\"");
        label_value(&b, g_slot_names[s]);
        gw_strbuf_printf(&b, "\"} %.6f\n", (double)GET(g.identities[s].sum_us) / 1e6);
        gw_strbuf_printf(&b, "mtlsgw_upstream_handshake_seconds_count{identity=\"");
        label_value(&b, g_slot_names[s]);
        gw_strbuf_printf(&b, "\"} %llu\n", cum);
    }
    render_key_metrics(&b, cfg, 0);
    render_key_metrics(&b, cfg, 1);
    gw_strbuf_printf(
        &b,
        "# HELP mtlsgw_identity_not_after_seconds Expiry of each loaded identity's certificate (Unix time).\n"
        "# TYPE mtlsgw_identity_not_after_seconds gauge\n");
    for (size_t i = 0; i < cfg->num_identities; i++) {
        if (cfg->identities[i]->pending) {
            continue;  // no certificate yet
        }
        gw_strbuf_printf(&b, "mtlsgw_identity_not_after_seconds{identity=\"");
        label_value(&b, cfg->identities[i]->spec.name);
        gw_strbuf_printf(&b, "\"} %lld\n", (long long)cfg->identities[i]->not_after);
    }
    render_acme(&b, cfg);
    render_vias(&b);
    gw_strbuf_printf(&b,
                     "# HELP mtlsgw_upstream_ocsp_total What servers' OCSP staples said (identities with ocsp), by "
                     "result.\n"
                     "# TYPE mtlsgw_upstream_ocsp_total counter\n");
    for (size_t i = 0; i < cfg->num_identities; i++) {
        const gw_identity *id = cfg->identities[i];
        if (id->spec.ocsp == GW_OCSP_OFF || id->metrics_slot < 0) {
            continue;
        }
        for (int r = 1; r < GW_OCSP_RESULT_COUNT; r++) {
            gw_strbuf_printf(&b, "mtlsgw_upstream_ocsp_total{identity=\"");
            label_value(&b, id->spec.name);
            gw_strbuf_printf(&b, "\",result=\"%s\"} %llu\n", gw_ocsp_result_name((gw_ocsp_result)r),
                             GET(g.identities[id->metrics_slot].ocsp[r]));
        }
    }
    gw_strbuf_printf(&b,
                     "# HELP mtlsgw_identity_crl_next_update_seconds Earliest nextUpdate of the CRLs of each "
                     "identity with a crl (Unix time); past it, handshakes fail until a fresh CRL is loaded.\n"
                     "# TYPE mtlsgw_identity_crl_next_update_seconds gauge\n");
    for (size_t i = 0; i < cfg->num_identities; i++) {
        if (cfg->identities[i]->crl_next_update == 0) {
            continue;
        }
        gw_strbuf_printf(&b, "mtlsgw_identity_crl_next_update_seconds{identity=\"");
        label_value(&b, cfg->identities[i]->spec.name);
        gw_strbuf_printf(&b, "\"} %lld\n", (long long)cfg->identities[i]->crl_next_update);
    }
    size_t keys = 0, sessions = 0;
    gw_sesscache_stats(&keys, &sessions);
    gw_strbuf_printf(
        &b,
        "# HELP mtlsgw_session_cache_keys Keys (identity, upstream, server name) in the TLS session cache.\n"
        "# TYPE mtlsgw_session_cache_keys gauge\nmtlsgw_session_cache_keys %zu\n"
        "# HELP mtlsgw_session_cache_sessions TLS sessions held in the cache.\n"
        "# TYPE mtlsgw_session_cache_sessions gauge\nmtlsgw_session_cache_sessions %zu\n",
        keys, sessions);
    gw_strbuf_printf(&b,
                     "# HELP mtlsgw_preconnect_parked Verified connections kept ready for rules with preconnect.\n"
                     "# TYPE mtlsgw_preconnect_parked gauge\nmtlsgw_preconnect_parked %lld\n"
                     "# HELP mtlsgw_preconnect_total Preconnected connections, by what became of them.\n"
                     "# TYPE mtlsgw_preconnect_total counter\n",
                     (long long)atomic_load_explicit(&g_preconn_parked, memory_order_relaxed));
    static const char *const preconn_names[GW_PRECONN_COUNT] = {"taken", "expired", "closed", "failed"};
    for (int i = 0; i < GW_PRECONN_COUNT; i++) {
        gw_strbuf_printf(&b, "mtlsgw_preconnect_total{event=\"%s\"} %llu\n", preconn_names[i],
                         (unsigned long long)atomic_load_explicit(&g_preconn[i], memory_order_relaxed));
    }
    gw_upool_stats ps;
    gw_upool_read_stats(&ps);
    gw_strbuf_printf(&b,
                     "# HELP mtlsgw_upstream_pool_requests_total http_proxy requests that found an idle pooled "
                     "upstream connection (hit) or not (miss).\n"
                     "# TYPE mtlsgw_upstream_pool_requests_total counter\n"
                     "mtlsgw_upstream_pool_requests_total{result=\"hit\"} %llu\n"
                     "mtlsgw_upstream_pool_requests_total{result=\"miss\"} %llu\n"
                     "# HELP mtlsgw_upstream_pool_evictions_total Idle pooled upstream connections closed, by why.\n"
                     "# TYPE mtlsgw_upstream_pool_evictions_total counter\n",
                     (unsigned long long)ps.hits, (unsigned long long)ps.misses);
    for (int i = 0; i < GW_POOL_EVICT_COUNT; i++) {
        gw_strbuf_printf(&b, "mtlsgw_upstream_pool_evictions_total{reason=\"%s\"} %llu\n",
                         gw_pool_evict_name((gw_pool_evict)i), (unsigned long long)ps.evictions[i]);
    }
    gw_strbuf_printf(&b,
                     "# HELP mtlsgw_upstream_pool_idle Idle upstream connections in the pools of all workers.\n"
                     "# TYPE mtlsgw_upstream_pool_idle gauge\nmtlsgw_upstream_pool_idle %lld\n",
                     (long long)ps.idle);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
