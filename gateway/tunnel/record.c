// record: what a tunnel knows about itself and the helpers every phase uses to say what
// happened: its reason in words, a failure (tunnel_fail) or an end (tunnel_end) for the
// driver, its timers, bytes queued for the client, and its access-log line. It calls no
// phase and not the driver: the files of a tunnel call down to it (ARCHITECTURE.md).
#include "gateway/tunnel/internal.h"

const pol_listener *tunnel_listener_of(const gw_tunnel *t) {
    return &t->cfg->listeners[t->listener_index];
}

void tunnel_set_reason(gw_tunnel *t, const char *fmt, ...) {
    if (t->reason == NULL && (t->reason = malloc(REASON_MAX)) == NULL) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->reason, REASON_MAX, fmt, ap);
    va_end(ap);
}

void tunnel_clear_reason(gw_tunnel *t) {
    if (t->reason != NULL) {
        t->reason[0] = '\0';
    }
}

const char *tunnel_reason_of(const gw_tunnel *t) {
    return t->reason != NULL && t->reason[0] ? t->reason : NULL;
}

// presented_identity names the identity this tunnel presented (or would have): of a rule
// with a list, the one the handshake chose; an upstream kept from an earlier http_proxy
// request for another rule does not count.
static const char *presented_identity(const gw_tunnel *t) {
    const pol_rule *r = t->rule;
    if (r == NULL || r->action != POL_ACTION_MTLS) {
        return NULL;
    }
    for (size_t i = 0; i < r->num_identities; i++) {
        if (t->upstream.identity == r->identities[i]) {
            return t->upstream.identity->spec.name;
        }
    }
    return r->identity->spec.name;
}

void tunnel_log_access(gw_tunnel *t) {
    char dest[300] = "";
    if (t->dest.host[0] && t->dest.family == AF_INET6) {
        snprintf(dest, sizeof(dest), "[%s]:%u", t->dest.host, t->dest.port);
    } else if (t->dest.host[0]) {
        snprintf(dest, sizeof(dest), "%s:%u", t->dest.host, t->dest.port);
    }
    const char *tls = NULL;
    int resumed = -1;
    if (t->upstream.ssl != NULL && SSL_is_init_finished(t->upstream.ssl)) {
        tls = SSL_get_version(t->upstream.ssl);
        resumed = SSL_session_reused(t->upstream.ssl) ? 1 : 0;
    }
    gw_access_record r = {
        .client = t->client_text,
        .caller = t->caller == GW_CALLER_NONE ? -1 : (int64_t)t->caller,
        .listener = tunnel_listener_of(t)->name,
        .proto = t->door->name,
        .dest = dest[0] ? dest : NULL,
        .rule = t->rule ? t->rule->where : NULL,
        .action = t->rule ? pol_action_name(t->rule->action) : NULL,
        .identity = presented_identity(t),
        .upstream = t->upstream_text[0] ? t->upstream_text : NULL,
        .sni = t->rule && t->rule->action == POL_ACTION_MTLS && !gw_host_is_ip(t->dial.server_name)
                   ? t->dial.server_name
                   : NULL,
        .tls = tls,
        .resumed = resumed,
        .conn = t->upstream_text[0] && (t->connect_ms >= 0 || t->conn_kind != CONN_NEW) ? tunnel_conn_name(t->conn_kind)
                                                                                        : NULL,
        .early = tls == NULL                ? NULL
                 : t->conn_kind == CONN_NEW ? gw_upstream_early_text(&t->upstream)
                                            : "-",
        .ocsp = t->conn_kind == CONN_NEW ? gw_upstream_ocsp_text(&t->upstream) : NULL,
        .via = t->rule && t->rule->via ? (t->dial.via_addr[0] ? t->dial.via_addr : t->rule->via->text) : NULL,
        .dns_ms = t->dns_ms,
        .connect_ms = t->connect_ms,
        .handshake_ms = t->handshake_ms,
        .up_bytes = t->up_bytes,
        .down_bytes = t->down_bytes,
        .duration_ms = (int64_t)(gw_loop_now(t->host->loop) - t->t_start),
        .result = gw_result_name(t->result),
        .reason = tunnel_reason_of(t),
        .method = t->door->exchanges && t->http.x.method[0] ? t->http.x.method : NULL,
        .user = t->user,
        .status = t->door->exchanges ? t->http.x.status : 0,
    };
    gw_access_log(&r);
    gw_metrics_tunnel_done(t->rule ? (int)t->rule->action : -1, t->result, t->up_bytes, t->down_bytes);
}

// tunnel_close is the one way out: it logs the access line and releases everything.
int tunnel_queue_down(gw_tunnel *t, const void *p, size_t len) {
    if (t->to_down == NULL && (t->to_down = gw_buf_get(&t->host->pool)) == NULL) {
        return 0;
    }
    return gw_buf_append(t->to_down, p, len) == len;
}

void tunnel_set_timer(gw_tunnel *t, uint64_t ms) {
    gw_timer_start(t->host->loop, &t->timer, ms);
}

void tunnel_yield(gw_tunnel *t) {
    gw_timer_start(t->host->loop, &t->yield_timer, 0);
}

const char *tunnel_conn_name(tunnel_conn c) {
    static const char *const names[] = {
        [CONN_NEW] = "new", [CONN_KEPT] = "kept", [CONN_POOLED] = "pooled", [CONN_PRECONNECTED] = "preconnected"};
    return names[c];
}

const char *tunnel_state_name(tunnel_state s) {
    static const char *const names[T_NUM_STATES] = {
        [T_DETECT] = "detect",
        [T_SOCKS5_GREETING] = "socks5-greeting",
        [T_SOCKS5_AUTH] = "socks5-auth",
        [T_SOCKS5_REQUEST] = "socks5-request",
        [T_SOCKS4_REQUEST] = "socks4-request",
        [T_HTTP_HEAD] = "http-head",
        [T_SNIFF] = "sniff",
        [T_ROUTE] = "route",
        [T_RESOLVING] = "resolving",
        [T_CONNECT_NEXT] = "connect-next",
        [T_CONNECTING] = "connecting",
        [T_VIA] = "via",
        [T_HANDSHAKING] = "handshaking",
        [T_CONFIRMING] = "confirming",
        [T_ESTABLISHED] = "established",
        [T_RELAY] = "relay",
        [T_HTTP_PROXY] = "http-proxy",
        [T_FLUSHING] = "flushing",
        [T_CLOSED] = "closed",
    };
    return (unsigned)s < T_NUM_STATES && names[s] != NULL ? names[s] : "?";
}

// ---- counted for the status page ----

void tunnel_count_route(gw_tunnel *t) {
    pol_rule_stats *s = t->rule != NULL ? t->rule->stats : NULL;
    if (!t->live_counted) {
        t->live_counted = 1;
        gw_board_live(t->listener_index, t->door->name, 1);
    }
    if (s == NULL) {
        return;
    }
    atomic_fetch_add_explicit(&s->total, 1, memory_order_relaxed);
    if (t->counted != s) {
        tunnel_uncount(t, 0);
        atomic_fetch_add_explicit(&s->active, 1, memory_order_relaxed);
        t->counted = s;
    }
}

void tunnel_uncount(gw_tunnel *t, int closing) {
    if (t->counted != NULL) {
        atomic_fetch_sub_explicit(&t->counted->active, 1, memory_order_relaxed);
        t->counted = NULL;
    }
    if (closing && t->live_counted) {
        t->live_counted = 0;
        gw_board_live(t->listener_index, t->door->name, -1);
    }
}

// note_failure keeps a refusal or failure for the status page: its rule's count and last
// failure, and the board's list of the last ones.
static void note_failure(gw_tunnel *t, gw_err err, const char *reason) {
    const char *result = gw_result_name(gw_err_describe(err)->result);
    pol_rule_stats *s = t->rule != NULL ? t->rule->stats : NULL;
    time_t now = time(NULL);
    if (s != NULL) {
        atomic_fetch_add_explicit(&s->failures[gw_err_describe(err)->result], 1, memory_order_relaxed);
        pthread_mutex_lock(&s->lock);
        s->last_time = now;
        snprintf(s->last_result, sizeof(s->last_result), "%s", result);
        snprintf(s->last_reason, sizeof(s->last_reason), "%s", reason);
        pthread_mutex_unlock(&s->lock);
    }
    gw_board_failure f = {.when = now, .caller = t->caller == GW_CALLER_NONE ? -1 : (long long)t->caller};
    snprintf(f.result, sizeof(f.result), "%s", result);
    snprintf(f.reason, sizeof(f.reason), "%s", reason);
    snprintf(f.client, sizeof(f.client), "%s", t->client_text);
    if (t->dest.host[0]) {
        snprintf(f.dest, sizeof(f.dest), t->dest.family == AF_INET6 ? "[%s]:%u" : "%s:%u", t->dest.host, t->dest.port);
    } else if (t->dial.want_host[0]) {
        snprintf(f.dest, sizeof(f.dest), "%s:%u", t->dial.want_host, t->dial.want_port);
    }
    snprintf(f.rule, sizeof(f.rule), "%s", t->rule != NULL ? t->rule->where : "");
    gw_board_failure_note(&f);
}

// ---- what a phase tells the driver ----

tunnel_step tunnel_fail(gw_tunnel *t, gw_err err, const char *fmt, ...) {
    assert(err != GW_ERR_NONE);
    t->fail_err = err;
    char reason[REASON_MAX];  // the arguments may be the reason itself
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (t->rule != NULL && t->rule->via != NULL && t->state >= T_RESOLVING && t->state <= T_VIA) {
        // Before the parent said yes, a failure is the parent's: said so, never the destination's.
        t->dial.via_blame = 1;
        if (strncmp(reason, "parent proxy ", 13) != 0) {
            gw_metrics_via(t->rule->via->text, GW_VIA_UNREACHABLE);
            tunnel_set_reason(t, "parent proxy %s: %s", t->rule->via->text, reason);
            note_failure(t, err, tunnel_reason_of(t) ? tunnel_reason_of(t) : reason);
            return STEP_FAIL;
        }
    }
    tunnel_set_reason(t, "%s", reason);
    note_failure(t, err, tunnel_reason_of(t) ? tunnel_reason_of(t) : reason);
    return STEP_FAIL;
}

tunnel_step tunnel_end(gw_tunnel *t, gw_result result, tunnel_end_how how, const char *reason) {
    if (result != GW_RESULT_NONE && (t->result == GW_RESULT_NONE || t->result == GW_RESULT_OK)) {
        t->result = result;
    }
    if (reason != NULL && tunnel_reason_of(t) == NULL) {
        tunnel_set_reason(t, "%s", reason);
    }
    t->end_how = how;
    return STEP_CLOSE;
}
