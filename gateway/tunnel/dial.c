// dial: from a destination to an established upstream: the rule, DNS and deny_addresses,
// each address in turn, the TLS handshake and the confirm wait after a full TLS 1.3
// handshake.
#include "gateway/tunnel/internal.h"

// ---- routing ----

static void on_resolved(void *arg, res_status status, const res_addr *addrs, size_t n) {
    gw_tunnel *t = arg;
    t->dial.query = NULL;
    t->dns_ms = (int64_t)(gw_monotonic_ms() - t->t_phase);
    gw_metrics_dns(status == RES_OK ? GW_DNS_OK
                   : status == RES_NOT_FOUND ? GW_DNS_NOT_FOUND
                   : status == RES_TIMEOUT ? GW_DNS_TIMEOUT : GW_DNS_FAILED);
    if (status != RES_OK) {
        char reason[400];
        snprintf(reason, sizeof(reason), "%s: %s", t->dial.connect_host, res_status_text(status));
        tunnel_reject(t, status == RES_TIMEOUT ? GW_ERR_DNS_TIMEOUT : GW_ERR_DNS, reason);
        tunnel_run(t);
        return;
    }
    if (!tunnel_connect_addresses(t, addrs, n)) {
        tunnel_run(t);
    }
}

int tunnel_connect_addresses(gw_tunnel *t, const res_addr *addrs, size_t n) {
    // Every address is checked before any is tried: rules decided on the name the client
    // asked for, deny_addresses decides on where that name leads.
    t->dial.num_addrs = 0;
    const pol_cidr *denied = NULL;
    const char *own = NULL;
    char denied_text[INET6_ADDRSTRLEN] = "";
    for (size_t i = 0; i < n; i++) {
        res_addr a = addrs[i];
        if (a.family == AF_INET6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a.addr)) {
            memmove(a.addr, a.addr + 12, 4);
            memset(a.addr + 4, 0, 12);
            a.family = AF_INET;
        }
        // Never back into the gateway itself, whatever the lists say: the inner
        // connection's caller would be the gateway's own uid.
        const char *self = pol_config_own_address(t->cfg, a.family, a.addr, t->dial.connect_port);
        const pol_cidr *c = self == NULL ? pol_config_denied_address(t->cfg, t->rule, a.family, a.addr) : NULL;
        if (self != NULL || c != NULL) {
            if (denied == NULL && own == NULL) {
                denied = c;
                own = self;
                inet_ntop(a.family, a.addr, denied_text, sizeof(denied_text));
            }
            continue;
        }
        t->dial.addrs[t->dial.num_addrs++] = a;
    }
    if (t->dial.num_addrs == 0 && (denied != NULL || own != NULL)) {
        char reason[900], where[sizeof(t->dial.connect_host) + sizeof(denied_text) + 16];
        int same = strcmp(t->dial.connect_host, denied_text) == 0;
        snprintf(where, sizeof(where), "%s%s%s", same ? "" : t->dial.connect_host, same ? "" : " resolves to ",
                 denied_text);
        if (own != NULL) {
            snprintf(reason, sizeof(reason), "%s:%u is the gateway's own listener %s: it never connects to itself",
                     where, t->dial.connect_port, own);
        } else {
            snprintf(reason, sizeof(reason), "%s is in deny_addresses (%s): the gateway does not connect there", where,
                     denied->text);
        }
        tunnel_reject(t, GW_ERR_ADDRESS_DENIED, reason);
        return 0;
    }
    t->dial.next_addr = 0;
    t->dial.last_connect_err = GW_ERR_HOST_UNREACHABLE;
    tunnel_start_connect(t);
    return 1;
}

// tunnel_start_connect tries the next resolved address; when none is left, the last error goes
// to the client.
void tunnel_start_connect(gw_tunnel *t) {
    gw_loop *loop = t->host->loop;
    while (t->dial.next_addr < t->dial.num_addrs) {
        const res_addr *a = &t->dial.addrs[t->dial.next_addr++];
        struct sockaddr_storage ss;
        socklen_t len = gw_sockaddr_from(&ss, a->family, a->addr, t->dial.connect_port);
        gw_format_addr((struct sockaddr *)&ss, t->upstream_text, sizeof(t->upstream_text));
        tunnel_clear_reason(t);
        char why[REASON_MAX];
        gw_err err = gw_upstream_connect(&t->upstream, (struct sockaddr *)&ss, len, why, sizeof(why));
        if (err != GW_ERR_NONE) {
            tunnel_set_reason(t, "%s", why);
            t->dial.last_connect_err = err;
            continue;
        }
        t->state = T_CONNECTING;
        t->t_phase = gw_monotonic_ms();
        t->upstream_io = (side){0};
        gw_watcher_init(&t->upstream_io.w, t->upstream.fd, tunnel_on_upstream, t);
        if (!gw_watcher_set(loop, &t->upstream_io.w, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)) {
            gw_upstream_close(&t->upstream);
            t->dial.last_connect_err = GW_ERR_INTERNAL;
            continue;
        }
        gw_timer_start(loop, &t->timer, (uint64_t)t->cfg->limits.connect_timeout_ms);
        return;
    }
    char reason[700];
    snprintf(reason, sizeof(reason), "%s", tunnel_reason_of(t) ? t->reason : "no address to connect to");
    tunnel_reject(t, t->dial.last_connect_err, reason);
    tunnel_run(t);
}

// tunnel_refuse_unadmitted answers a client that was not admitted at accept (outside `allow`,
// or over max_connections) with that error and returns 1. It runs before any credential
// is looked at, so such a client can never find out whether a password is right.
int tunnel_refuse_unadmitted(gw_tunnel *t) {
    if (t->admission == GW_ERR_NONE) {
        return 0;
    }
    char reason[200];
    if (t->admission == GW_ERR_LIMIT && t->share_full) {
        snprintf(reason, sizeof(reason), "this client (its caller, or its address) holds its whole share of "
                 "max_connections (max_connections_per_client = %d)", t->cfg->limits.max_connections_per_client);
    } else {
        snprintf(reason, sizeof(reason), "%s",
                 t->admission == GW_ERR_LIMIT ? "max_connections reached" : "client address is not in the allow list");
    }
    tunnel_reject(t, t->admission, reason);
    return 1;
}

// tunnel_route decides what to do with the destination the client asked for.
void tunnel_route(gw_tunnel *t, const char *host, uint16_t port) {
    char reason[600];
    if (!pol_dest_init(&t->dest, host, port)) {
        snprintf(t->dest.host, sizeof(t->dest.host), "%s", host);
        snprintf(reason, sizeof(reason), "\"%s\" %s", host, pol_dest_problem(host));
        tunnel_reject(t, GW_ERR_BAD_REQUEST, reason);
        return;
    }
    if (tunnel_refuse_unadmitted(t)) {
        return;
    }
    t->rule = pol_config_lookup(t->cfg, &t->dest, t->caller, (int)t->listener_index);
    char dest[300];
    if (t->dest.family == AF_INET6) {
        snprintf(dest, sizeof(dest), "[%s]:%u", t->dest.host, port);
    } else {
        snprintf(dest, sizeof(dest), "%s:%u", t->dest.host, port);
    }
    if (t->rule == NULL) {
        snprintf(reason, sizeof(reason), "no rule matches %s (default deny)", dest);
        tunnel_reject(t, GW_ERR_NO_RULE, reason);
        return;
    }
    if (t->rule->action == POL_ACTION_DENY) {
        snprintf(reason, sizeof(reason), "%s denied by rule %s", dest, t->rule->where);
        tunnel_reject(t, GW_ERR_DENIED, reason);
        return;
    }
    const pol_rule *r = t->rule;
    if (t->proto == P_TRANSPARENT && r->upstream_host == NULL) {
        // Where the client was going, whatever name it sniffed to: no DNS. The server name
        // is the sniffed name (or the address).
        t->dial.connect_port = r->upstream_port ? r->upstream_port : port;
        snprintf(t->dial.server_name, sizeof(t->dial.server_name), "%s", r->server_name ? r->server_name : t->dest.host);
        t->t_phase = gw_monotonic_ms();
        tunnel_transparent_dial(t);
        return;
    }
    snprintf(t->dial.connect_host, sizeof(t->dial.connect_host), "%s", r->upstream_host ? r->upstream_host : t->dest.host);
    t->dial.connect_port = r->upstream_port ? r->upstream_port : port;
    snprintf(t->dial.server_name, sizeof(t->dial.server_name), "%s", r->server_name ? r->server_name : t->dial.connect_host);
    t->state = T_RESOLVING;
    t->t_phase = gw_monotonic_ms();
    // The DNS timeout is c-ares' own; this timer is only a backstop.
    gw_timer_start(t->host->loop, &t->timer,
                   (uint64_t)t->cfg->resolver.timeout_ms * (uint64_t)t->cfg->resolver.tries * 2 + 1000);
    t->dial.query = res_resolve(t->host->resolver, t->dial.connect_host, on_resolved, t);
}

void tunnel_established(gw_tunnel *t) {
    gw_loop *loop = t->host->loop;
    if (!(tunnel_is_plain_stream(t) && t->upstream.ssl != NULL && gw_upstream_needs_confirm(&t->upstream))) {
        gw_upstream_confirm(&t->upstream);
    }
    if (t->proto == P_HTTP_PROXY) {
        t->state = T_HTTP_PROXY;  // the request waiting in to_up goes out now
        t->last_activity = gw_loop_now(loop);
        gw_timer_start(loop, &t->timer, (uint64_t)t->cfg->limits.idle_timeout_s * 1000);
        return;
    }
    t->state = T_RELAY;
    tunnel_queue_success(t);
    t->last_activity = gw_loop_now(loop);
    gw_timer_start(loop, &t->timer, (uint64_t)t->cfg->limits.idle_timeout_s * 1000);
}

// ---- TLS phases ----

// on_key_ready continues a handshake that waited for a token's signature.
static void on_key_ready(void *arg) {
    gw_tunnel *t = arg;
    if (t->state == T_HANDSHAKING) {
        tunnel_run(t);
    }
}

static void start_tls(gw_tunnel *t) {
    const pol_rule *r = t->rule;
    t->upstream.keyops = t->host->keyops;
    t->upstream.key_timeout_ms = t->cfg->limits.key_timeout_ms;
    t->upstream.key_ready = on_key_ready;
    t->upstream.key_arg = t;
    char where[600];
    snprintf(where, sizeof(where), "%s|%s|%s", t->upstream_text, t->dial.server_name, r->server_uri ? r->server_uri : "");
    if (!gw_upstream_tls_begin(&t->upstream, (const pol_identity *const *)r->identities, r->num_identities,
                               t->dial.server_name, r->server_uri, where, &t->host->pool)) {
        tunnel_reject(t, GW_ERR_INTERNAL, "cannot create a TLS connection");
        return;
    }
    t->state = T_HANDSHAKING;
    t->t_phase = gw_monotonic_ms();
    t->hs_start_us = gw_monotonic_us();
    gw_timer_start(t->host->loop, &t->timer, (uint64_t)t->cfg->limits.handshake_timeout_ms);
}

void tunnel_step_connecting(gw_tunnel *t) {
    if (!t->upstream_io.writable) {
        return;
    }
    char reason[300];
    gw_err err = gw_upstream_connect_result(&t->upstream, reason, sizeof(reason));
    if (err != GW_ERR_NONE) {
        tunnel_set_reason(t, "%s %s", t->upstream_text, reason);
        t->dial.last_connect_err = err;
        gw_watcher_remove(t->host->loop, &t->upstream_io.w);
        gw_upstream_close(&t->upstream);
        tunnel_start_connect(t);
        return;
    }
    tunnel_clear_reason(t);
    t->connect_ms = (int64_t)(gw_monotonic_ms() - t->t_phase);
    if (t->rule->action == POL_ACTION_MTLS) {
        start_tls(t);
    } else {
        tunnel_established(t);
    }
}

void tunnel_step_tls(gw_tunnel *t) {
    gw_err err = GW_ERR_NONE;
    char reason[600];
    gw_step st = t->state == T_HANDSHAKING ? gw_upstream_tls_step(&t->upstream, &err, reason, sizeof(reason))
                                           : gw_upstream_confirm_step(&t->upstream, &err, reason, sizeof(reason));
    switch (st) {
        case GW_STEP_WANT_READ:
            t->upstream_io.readable = 0;
            if (t->state == T_CONFIRMING && t->upstream.ticket_seen && !t->dial.confirm_grace) {
                // OpenSSL-based servers such as nginx send their tickets before they look
                // at our certificate, and close right after: a ticket shortens the wait to
                // a grace period instead of ending it.
                t->dial.confirm_grace = 1;
                uint64_t grace = (uint64_t)t->cfg->limits.confirm_ms / 4;
                gw_timer_start(t->host->loop, &t->timer, grace ? grace : 1);
            }
            return;
        case GW_STEP_WANT_WRITE:
            t->upstream_io.writable = 0;
            return;
        case GW_STEP_WANT_KEY:
            return;  // on_key_ready goes on once the token signed (or key_timeout_ms passed)
        case GW_STEP_FAILED:
            tunnel_reject(t, err, reason);
            return;
        case GW_STEP_DONE:
            break;
    }
    if (t->state == T_HANDSHAKING) {
        t->handshake_ms = (int64_t)(gw_monotonic_ms() - t->t_phase);
        gw_metrics_handshake(t->upstream.identity->metrics_slot, SSL_session_reused(t->upstream.ssl),
                             gw_monotonic_us() - t->hs_start_us);
        // A forward listener has no reply to hold back: its client's bytes go out at once
        // (the server is verified; if it rejects us the client sees the close). The
        // sessions of such a handshake are cached only once the server's data arrives.
        if (t->cfg->limits.confirm_ms > 0 && gw_upstream_needs_confirm(&t->upstream) && !tunnel_is_plain_stream(t)) {
            t->state = T_CONFIRMING;
            gw_timer_start(t->host->loop, &t->timer, (uint64_t)t->cfg->limits.confirm_ms);
            tunnel_step_tls(t);
            return;
        }
    }
    tunnel_established(t);
}
