// dial: the phases from a destination to an established upstream: the rule (T_ROUTE), DNS
// and deny_addresses (T_RESOLVING), each address in turn (T_CONNECT_NEXT, T_CONNECTING),
// the TLS handshake and the confirm wait after a full TLS 1.3 handshake (T_HANDSHAKING,
// T_CONFIRMING), then the door's success reply (T_ESTABLISHED).
#include "gateway/tunnel/internal.h"

#include <openssl/sha.h>
#include <poll.h>

#include "gateway/base/hash.h"

void tunnel_drop_dial(gw_tunnel *t) {
    tunnel_drop_attempts(t);
    gw_upstream_close(&t->upstream);
    gw_watcher_remove(t->host->loop, &t->upstream_io.w);
    res_query_detach(t->dial.query);
    t->dial.query = NULL;
}

// ---- T_ROUTE ----

tunnel_step tunnel_phase_route(gw_tunnel *t) {
    const char *host = t->dial.want_host;
    uint16_t port = t->dial.want_port;
    t->dial.confirm_grace = 0;
    t->dial.unconfirmed = 0;
    if (!pol_dest_init(&t->dest, host, port)) {
        snprintf(t->dest.host, sizeof(t->dest.host), "%s", host);
        return tunnel_fail(t, GW_ERR_BAD_REQUEST, "\"%s\" %s", host, pol_dest_problem(host));
    }
    if (tunnel_unadmitted(t) == STEP_FAIL) {
        return STEP_FAIL;
    }
    t->rule = pol_config_lookup(t->cfg, &t->dest, t->caller, (int)t->listener_index);
    tunnel_count_route(t);
    char dest[300];
    snprintf(dest, sizeof(dest), t->dest.family == AF_INET6 ? "[%s]:%u" : "%s:%u", t->dest.host, port);
    if (t->rule == NULL) {
        return tunnel_fail(t, GW_ERR_NO_RULE, "no rule matches %s (default deny)", dest);
    }
    if (t->rule->action == POL_ACTION_DENY) {
        return tunnel_fail(t, GW_ERR_DENIED, "%s denied by rule %s", dest, t->rule->where);
    }
    const pol_rule *r = t->rule;
    size_t ready = 0;
    while (r->action == POL_ACTION_MTLS && ready < r->num_identities && r->identities[ready]->pending) {
        ready++;
    }
    if (r->action == POL_ACTION_MTLS && ready == r->num_identities) {
        return tunnel_fail(t, GW_ERR_NO_CERTIFICATE, "identity %s has no certificate yet: ACME order pending",
                           r->identity->spec.name);
    }
    // Where a transparent client was going, whatever name it sniffed to: no DNS. The
    // server name is the sniffed name (or the address). Through a parent, the parent is
    // asked for that address.
    int original = t->door->original_dest && r->upstream_host == NULL;
    if (original && r->via == NULL) {
        t->dial.connect_port = r->upstream_port ? r->upstream_port : port;
        snprintf(t->dial.server_name, sizeof(t->dial.server_name), "%s",
                 r->server_name ? r->server_name : t->dest.host);
        t->t_phase = gw_monotonic_ms();
        snprintf(t->dial.connect_host, sizeof(t->dial.connect_host), "%s", t->dial.orig_ip);
        return tunnel_use_addresses(t, &t->dial.orig_addr, 1);
    }
    snprintf(t->dial.connect_host, sizeof(t->dial.connect_host), "%s",
             original           ? t->dial.orig_ip
             : r->upstream_host ? r->upstream_host
                                : t->dest.host);
    t->dial.connect_port = r->upstream_port ? r->upstream_port : port;
    snprintf(t->dial.server_name, sizeof(t->dial.server_name), "%s",
             r->server_name ? r->server_name
             : original     ? t->dest.host
                            : t->dial.connect_host);
    if (r->via != NULL) {
        // The parent is connected to and asked for the destination (by name: it resolves).
        // An address the client gave is judged here: the parent would go there.
        snprintf(t->dial.via_target, sizeof(t->dial.via_target),
                 strchr(t->dial.connect_host, ':') ? "[%s]:%u" : "%s:%u", t->dial.connect_host, t->dial.connect_port);
        struct in6_addr a;
        int fam = inet_pton(AF_INET, t->dial.connect_host, &a) == 1    ? AF_INET
                  : inet_pton(AF_INET6, t->dial.connect_host, &a) == 1 ? AF_INET6
                                                                       : 0;
        const pol_cidr *c = fam ? pol_config_denied_address(t->cfg, r, fam, (const uint8_t *)&a) : NULL;
        if (c != NULL) {
            return tunnel_fail(t, GW_ERR_ADDRESS_DENIED,
                               "%s is in deny_addresses (%s): the gateway does not connect there", t->dial.connect_host,
                               c->text);
        }
        snprintf(t->dial.connect_host, sizeof(t->dial.connect_host), "%s", r->via->host);
        t->dial.connect_port = r->via->port;
    }
    if (r->preconnect > 0 && !t->door->exchanges && tunnel_take_preconnected(t)) {
        // A verified connection kept ready for this destination: no DNS, TCP or TLS.
        t->conn_kind = CONN_PRECONNECTED;
        t->upstream_io = (side){.writable = 1, .readable = 1};  // a banner may wait in it
        gw_watcher_init(&t->upstream_io.w, t->upstream.fd, t->events->upstream, t);
        if (!gw_watcher_set(t->host->loop, &t->upstream_io.w, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)) {
            return tunnel_fail(t, GW_ERR_INTERNAL, "cannot watch the connection to %s", t->upstream_text);
        }
        t->state = T_ESTABLISHED;
        return STEP_NEXT;
    }
    t->state = T_RESOLVING;
    t->t_phase = gw_monotonic_ms();
    t->dial.resolved = 0;
    // The DNS timeout is c-ares' own; this timer is only a backstop.
    tunnel_set_timer(t, (uint64_t)t->cfg->resolver.timeout_ms * (uint64_t)t->cfg->resolver.tries * 2 + 1000);
    t->dial.query = res_resolve(t->host->resolver, t->dial.connect_host, t->events->resolved, t);
    return STEP_NEXT;  // the answer may have come at once
}

// ---- T_RESOLVING ----

tunnel_step tunnel_phase_resolving(gw_tunnel *t) {
    if (!t->dial.resolved) {
        return STEP_WAIT;
    }
    if (t->dial.dns_status != RES_OK) {
        return tunnel_fail(t, t->dial.dns_status == RES_TIMEOUT ? GW_ERR_DNS_TIMEOUT : GW_ERR_DNS, "%s: %s",
                           t->dial.connect_host, res_status_text(t->dial.dns_status));
    }
    return tunnel_use_addresses(t, t->dial.addrs, t->dial.num_addrs);
}

tunnel_step tunnel_use_addresses(gw_tunnel *t, const res_addr *addrs, size_t n) {
    // Every address is checked before any is tried: rules decided on the name the client
    // asked for, deny_addresses decides on where that name leads. (|addrs| may be
    // dial.addrs itself: the allowed ones are kept in place.)
    size_t kept = 0;
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
        // A parent proxy's addresses are the operator's choice, as an upstream literal is.
        const pol_cidr *c =
            self == NULL && t->rule->via == NULL ? pol_config_denied_address(t->cfg, t->rule, a.family, a.addr) : NULL;
        if (self != NULL || c != NULL) {
            if (denied == NULL && own == NULL) {
                denied = c;
                own = self;
                inet_ntop(a.family, a.addr, denied_text, sizeof(denied_text));
            }
            continue;
        }
        t->dial.addrs[kept++] = a;
    }
    t->dial.num_addrs = kept;
    if (kept == 0 && (denied != NULL || own != NULL)) {
        char where[sizeof(t->dial.connect_host) + sizeof(denied_text) + 16];
        int same = strcmp(t->dial.connect_host, denied_text) == 0;
        snprintf(where, sizeof(where), "%s%s%s", same ? "" : t->dial.connect_host, same ? "" : " resolves to ",
                 denied_text);
        if (own != NULL) {
            return tunnel_fail(t, GW_ERR_ADDRESS_DENIED,
                               "%s:%u is the gateway's own listener %s: it never connects to itself", where,
                               t->dial.connect_port, own);
        }
        return tunnel_fail(t, GW_ERR_ADDRESS_DENIED, "%s is in deny_addresses (%s): the gateway does not connect there",
                           where, denied->text);
    }
    t->dial.next_addr = 0;
    t->dial.last_connect_err = GW_ERR_HOST_UNREACHABLE;
    tunnel_order_addresses(t);
    t->state = T_CONNECT_NEXT;
    return STEP_NEXT;
}

// ---- T_CONNECT_NEXT, T_CONNECTING ----

// pool_key is the upstream pool's key of a connection to |addr_text| for this tunnel's
// rule: everything that decided the connection's verification and identity (the action,
// the generations of the rule's identities, the address, server name and server_uri).
static void pool_key(const gw_tunnel *t, const char *addr_text, uint8_t out[GW_POOL_KEY_LEN]) {
    const pol_rule *r = t->rule;
    SHA256_CTX c;
    SHA256_Init(&c);
    uint8_t action = (uint8_t)r->action;
    SHA256_Update(&c, &action, 1);
    for (size_t i = 0; r->action == POL_ACTION_MTLS && i < r->num_identities; i++) {
        SHA256_Update(&c, &r->identities[i]->generation, sizeof(r->identities[i]->generation));
    }
    SHA256_Update(&c, addr_text, strlen(addr_text) + 1);
    if (r->via != NULL) {
        // Through a parent: where it leads, and as whom we asked (a connection the parent
        // opened for other credentials is never another rule's).
        const char *parts[] = {t->dial.via_target, r->via->text, r->via->user ? r->via->user : "",
                               r->via->password ? r->via->password : ""};
        for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
            SHA256_Update(&c, parts[i], strlen(parts[i]) + 1);
        }
    }
    SHA256_Update(&c, t->dial.server_name, strlen(t->dial.server_name) + 1);
    const char *uri = r->server_uri ? r->server_uri : "";
    SHA256_Update(&c, uri, strlen(uri) + 1);
    SHA256_Final(out, &c);
}

// take_pooled looks in the worker's pool for an idle connection to one of the allowed
// addresses under this tunnel's key (http_proxy requests). Returns 1 with the connection
// moved into the tunnel.
static int take_pooled(gw_tunnel *t) {
    for (size_t i = 0; i < t->dial.num_addrs; i++) {
        const res_addr *a = &t->dial.addrs[i];
        struct sockaddr_storage ss;
        char text[sizeof(t->upstream_text)];
        gw_sockaddr_from(&ss, a->family, a->addr, t->dial.connect_port);
        gw_format_addr((struct sockaddr *)&ss, text, sizeof(text));
        uint8_t key[GW_POOL_KEY_LEN];
        pool_key(t, text, key);
        t->upstream_io = (side){.writable = 1};
        gw_watcher_init(&t->upstream_io.w, -1, t->events->upstream, t);
        if (!gw_upool_take(t->host->upool, key, &t->upstream, t->upstream_text, sizeof(t->upstream_text),
                           &t->upstream_io.w, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)) {
            continue;
        }
        memcpy(t->dial.pool_key, key, sizeof(key));
        t->conn_kind = CONN_POOLED;
        return 1;
    }
    return 0;
}

// ---- the race: connection attempts (Happy Eyeballs v2, RFC 8305) ----
//
// The allowed addresses are tried in the order tunnel_use_addresses left them (families
// interleaved, the one that worked last for this host first). An attempt starts; if it
// has not connected within happy_eyeballs_ms, the next starts beside it, and so on; an
// attempt that fails starts the next at once. The first to connect wins and the others
// are closed. Each attempt has connect_timeout_ms. With happy_eyeballs_ms = 0, one at a
// time.

// Which family worked last for a host, per worker thread (a small direct-mapped table).
#define FAMILY_MEMORY 256
static __thread struct {
    uint64_t hash;
    int family;
} g_family_memory[FAMILY_MEMORY];

static uint64_t host_hash(const gw_tunnel *t) {
    return gw_hash_string(GW_HASH_INIT, t->dial.connect_host) ^ t->dial.connect_port;
}

static int remembered_family(const gw_tunnel *t) {
    uint64_t h = host_hash(t);
    return g_family_memory[h % FAMILY_MEMORY].hash == h ? g_family_memory[h % FAMILY_MEMORY].family : 0;
}

static void remember_family(const gw_tunnel *t, int family) {
    uint64_t h = host_hash(t);
    g_family_memory[h % FAMILY_MEMORY].hash = h;
    g_family_memory[h % FAMILY_MEMORY].family = family;
}

void tunnel_order_addresses(gw_tunnel *t) {
    size_t n = t->dial.num_addrs;
    if (n < 2 || t->cfg->limits.happy_eyeballs_ms == 0) {
        return;
    }
    int first = remembered_family(t);
    if (first == 0) {
        first = t->dial.addrs[0].family;  // the resolver's order (RFC 6724) decides
    }
    res_addr a[RES_MAX_ADDRS], b[RES_MAX_ADDRS];
    size_t na = 0, nb = 0;
    for (size_t i = 0; i < n; i++) {
        if (t->dial.addrs[i].family == first) {
            a[na++] = t->dial.addrs[i];
        } else {
            b[nb++] = t->dial.addrs[i];
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < na || i < nb; i++) {
        if (i < na) {
            t->dial.addrs[k++] = a[i];
        }
        if (i < nb) {
            t->dial.addrs[k++] = b[i];
        }
    }
}

// attempt_watcher: an attempt is watched through the connection's own watcher
// (upstream_io.w) when that is free as it starts, registered for what the connection
// needs: the one that wins then keeps its registration as it is (no epoll_ctl). The
// others have watchers of their own, moved into upstream_io.w when they win.
static gw_watcher *attempt_watcher(gw_tunnel *t, size_t slot) {
    return t->dial.race->a[slot].in_side ? &t->upstream_io.w : &t->dial.race->a[slot].w;
}

void tunnel_drop_attempts(gw_tunnel *t) {
    tunnel_race *r = t->dial.race;
    if (r == NULL) {
        return;
    }
    for (size_t i = 0; i < TUNNEL_ATTEMPTS; i++) {
        if (r->a[i].fd >= 0) {
            gw_watcher_remove(t->host->loop, attempt_watcher(t, i));
            close(r->a[i].fd);
        }
    }
    free(r);
    t->dial.race = NULL;
}

static size_t attempts_running(const tunnel_race *r) {
    size_t n = 0;
    for (size_t i = 0; i < TUNNEL_ATTEMPTS; i++) {
        n += r->a[i].fd >= 0;
    }
    return n;
}

static void attempt_text(const gw_tunnel *t, size_t addr, char *out, size_t cap) {
    struct sockaddr_storage ss;
    const res_addr *a = &t->dial.addrs[addr];
    gw_sockaddr_from(&ss, a->family, a->addr, t->dial.connect_port);
    gw_format_addr((struct sockaddr *)&ss, out, cap);
}

static void end_attempt(gw_tunnel *t, size_t slot) {
    tunnel_race *r = t->dial.race;
    gw_watcher_remove(t->host->loop, attempt_watcher(t, slot));
    close(r->a[slot].fd);
    r->a[slot].fd = -1;
}

// start_attempt starts connecting to the next address. Returns 1 if one started, 0 if no
// address (or no slot) is left; an address whose connect fails at once is skipped.
static int start_attempt(gw_tunnel *t) {
    tunnel_race *r = t->dial.race;
    size_t slot = 0;
    while (slot < TUNNEL_ATTEMPTS && r->a[slot].fd >= 0) {
        slot++;
    }
    while (slot < TUNNEL_ATTEMPTS && t->dial.next_addr < t->dial.num_addrs) {
        size_t i = t->dial.next_addr++;
        const res_addr *a = &t->dial.addrs[i];
        struct sockaddr_storage ss;
        socklen_t len = gw_sockaddr_from(&ss, a->family, a->addr, t->dial.connect_port);
        gw_format_addr((struct sockaddr *)&ss, t->upstream_text, sizeof(t->upstream_text));
        gw_upstream tmp;
        gw_upstream_init(&tmp);
        tmp.fastopen = t->rule->tcp_fastopen;
        char why[REASON_MAX];
        gw_err err = gw_upstream_connect(&tmp, (struct sockaddr *)&ss, len, why, sizeof(why));
        if (err != GW_ERR_NONE) {
            tunnel_set_reason(t, "%s", why);
            t->dial.last_connect_err = err;
            continue;
        }
        r->a[slot].fd = tmp.fd;
        r->a[slot].addr = (uint32_t)i;
        r->a[slot].started = gw_monotonic_ms();
        r->a[slot].in_side = t->upstream_io.w.events == 0;
        gw_watcher *w = attempt_watcher(t, slot);
        gw_watcher_init(w, tmp.fd, t->events->upstream, t);
        if (!gw_watcher_set(t->host->loop, w,
                            r->a[slot].in_side ? EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET : EPOLLOUT | EPOLLET)) {
            close(tmp.fd);
            r->a[slot].fd = -1;
            tunnel_set_reason(t, "cannot watch the connection to %s", t->upstream_text);
            t->dial.last_connect_err = GW_ERR_INTERNAL;
            continue;
        }
        r->last_start = r->a[slot].started;
        return 1;
    }
    return 0;
}

// race_timer arms the phase timer for the race's next event: an attempt's connect timeout,
// or the start of the next attempt.
static void race_timer(gw_tunnel *t) {
    tunnel_race *r = t->dial.race;
    uint64_t now = gw_monotonic_ms(), next = UINT64_MAX;
    for (size_t i = 0; i < TUNNEL_ATTEMPTS; i++) {
        uint64_t end = r->a[i].started + (uint64_t)t->cfg->limits.connect_timeout_ms;
        if (r->a[i].fd >= 0 && end < next) {
            next = end;
        }
    }
    int he = t->cfg->limits.happy_eyeballs_ms;
    if (he > 0 && t->dial.next_addr < t->dial.num_addrs && attempts_running(r) < TUNNEL_ATTEMPTS &&
        r->last_start + (uint64_t)he < next) {
        next = r->last_start + (uint64_t)he;
    }
    tunnel_set_timer(t, next > now ? next - now : 0);
}

// race_lost: every attempt failed or timed out and no address is left.
static tunnel_step race_lost(gw_tunnel *t) {
    tunnel_drop_attempts(t);
    return tunnel_fail(t, t->dial.last_connect_err, "%s", tunnel_reason_of(t) ? t->reason : "no address to connect to");
}

tunnel_step tunnel_phase_connect_next(gw_tunnel *t) {
    if (t->dial.next_addr == 0 && t->door->exchanges && !t->dial.fresh && take_pooled(t)) {
        t->state = T_ESTABLISHED;
        return STEP_NEXT;
    }
    tunnel_drop_attempts(t);
    if ((t->dial.race = malloc(sizeof(*t->dial.race))) == NULL) {
        return tunnel_fail(t, GW_ERR_INTERNAL, "out of memory");
    }
    for (size_t i = 0; i < TUNNEL_ATTEMPTS; i++) {
        t->dial.race->a[i].fd = -1;
    }
    t->conn_kind = CONN_NEW;
    t->t_phase = gw_monotonic_ms();
    tunnel_clear_reason(t);
    t->upstream_io.writable = t->upstream_io.readable = t->upstream_io.error = t->upstream_io.hup = 0;
    t->upstream_io.rdhup = 0;
    if (!start_attempt(t)) {
        return race_lost(t);
    }
    t->state = T_CONNECTING;
    race_timer(t);
    return STEP_NEXT;
}

static tunnel_step start_tls(gw_tunnel *t) {
    const pol_rule *r = t->rule;
    t->upstream.keyops = t->host->keyops;
    t->upstream.key_timeout_ms = t->cfg->limits.key_timeout_ms;
    t->upstream.key_ready = t->events->key_ready;
    t->upstream.key_arg = t;
    char where[900];
    tunnel_session_where(t->upstream_text, t->dial.server_name, r, where, sizeof(where));
    // Early data: what a SOCKS, CONNECT or forward client sends first, or an http_proxy
    // request that is safe to send twice (the server may see it twice: replays).
    int early = r->early_data && (!t->door->exchanges || tunnel_http_early_ok(t));
    if (!gw_upstream_tls_begin(&t->upstream, (const gw_identity *const *)r->identities, r->num_identities,
                               t->dial.server_name, r->server_uri, where, &t->host->pool, early)) {
        return tunnel_fail(t, GW_ERR_INTERNAL, "cannot create a TLS connection");
    }
    t->state = T_HANDSHAKING;
    t->t_phase = gw_monotonic_ms();
    t->hs_start_us = gw_monotonic_us();
    tunnel_set_timer(t, (uint64_t)t->cfg->limits.handshake_timeout_ms);
    return STEP_NEXT;
}

// won makes the attempt in |slot| the tunnel's upstream connection and closes the others.
static tunnel_step won(gw_tunnel *t, size_t slot) {
    tunnel_race *r = t->dial.race;
    int fd = r->a[slot].fd;
    size_t addr = r->a[slot].addr;
    int watched = 1;
    if (r->a[slot].in_side) {
        // Registered as the connection already; what it reported (a banner's EPOLLIN) stays.
        side was = t->upstream_io;
        t->upstream_io = (side){.w = was.w, .writable = 1, .readable = was.readable, .rdhup = was.rdhup};
    } else {
        for (size_t i = 0; i < TUNNEL_ATTEMPTS; i++) {
            if (i != slot && r->a[i].fd >= 0 && r->a[i].in_side) {
                end_attempt(t, i);  // upstream_io.w is this connection's now
            }
        }
        // The attempt's registration becomes the connection's (one epoll_ctl, not two).
        t->upstream_io = (side){.writable = 1};
        gw_watcher_init(&t->upstream_io.w, fd, t->events->upstream, t);
        watched =
            gw_watcher_move(t->host->loop, &t->upstream_io.w, &r->a[slot].w, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
    }
    r->a[slot].fd = -1;
    tunnel_drop_attempts(t);
    gw_upstream_init(&t->upstream);
    t->upstream.fd = fd;
    t->upstream.fastopen = t->rule->tcp_fastopen;  // (its connect's outcome may come with the ClientHello's)
    attempt_text(t, addr, t->upstream_text, sizeof(t->upstream_text));
    pool_key(t, t->upstream_text, t->dial.pool_key);
    if (t->dial.num_addrs > 1) {
        remember_family(t, t->dial.addrs[addr].family);
    }
    if (!watched) {
        return tunnel_fail(t, GW_ERR_INTERNAL, "cannot watch the connection to %s", t->upstream_text);
    }
    tunnel_clear_reason(t);
    t->connect_ms = (int64_t)(gw_monotonic_ms() - t->t_phase);
    if (t->rule->via != NULL) {
        // The parent is what was connected to: the log's upstream is where it leads.
        snprintf(t->dial.via_addr, sizeof(t->dial.via_addr), "%s", t->upstream_text);
        snprintf(t->upstream_text, sizeof(t->upstream_text), "%s", t->dial.via_target);
        t->state = T_VIA;  // the parent is asked for the destination (via.c)
        tunnel_via_begin(t);
        tunnel_set_timer(t, (uint64_t)t->cfg->limits.connect_timeout_ms);
        return STEP_NEXT;
    }
    return tunnel_after_parent(t);
}

tunnel_step tunnel_after_parent(gw_tunnel *t) {
    if (t->rule->action == POL_ACTION_MTLS) {
        return start_tls(t);
    }
    t->state = T_ESTABLISHED;
    return STEP_NEXT;
}

tunnel_step tunnel_phase_connecting(gw_tunnel *t) {
    tunnel_race *r = t->dial.race;
    struct pollfd p[TUNNEL_ATTEMPTS];
    size_t slot_of[TUNNEL_ATTEMPTS], n = 0;
    for (size_t i = 0; i < TUNNEL_ATTEMPTS; i++) {
        if (r->a[i].fd >= 0) {
            p[n] = (struct pollfd){.fd = r->a[i].fd, .events = POLLOUT};
            slot_of[n++] = i;
        }
    }
    // The attempts' events mark upstream_io (its own watcher is not registered yet); they
    // are taken here. With one attempt they say it finished; with more, which one is not
    // recorded: each is asked, without waiting.
    int happened = t->upstream_io.writable || t->upstream_io.error || t->upstream_io.hup;
    int clean = t->upstream_io.writable && !t->upstream_io.error && !t->upstream_io.hup;
    t->upstream_io.writable = t->upstream_io.error = t->upstream_io.hup = 0;  // readable: see won()
    if (n == 1) {
        if (!happened) {
            return STEP_WAIT;
        }
        if (clean) {
            return won(t, slot_of[0]);  // writable without an error or a hang-up: connected
        }
        p[0].revents = POLLOUT;  // failed: SO_ERROR says how
    } else if (n > 0 && poll(p, n, 0) < 0) {
        return STEP_WAIT;
    }
    int failed = 0;
    for (size_t k = 0; k < n; k++) {
        if (!(p[k].revents & (POLLOUT | POLLERR | POLLHUP))) {
            continue;
        }
        size_t slot = slot_of[k];
        gw_upstream probe;
        gw_upstream_init(&probe);
        probe.fd = r->a[slot].fd;
        char reason[300], text[80];
        gw_err err = gw_upstream_connect_result(&probe, reason, sizeof(reason));
        if (err == GW_ERR_NONE) {
            return won(t, slot);
        }
        attempt_text(t, r->a[slot].addr, text, sizeof(text));
        tunnel_set_reason(t, "%s %s", text, reason);
        t->dial.last_connect_err = err;
        end_attempt(t, slot);
        failed = 1;
    }
    // An attempt that failed starts the next at once (RFC 8305 section 5).
    if ((failed || attempts_running(r) == 0) && !start_attempt(t) && attempts_running(r) == 0) {
        return race_lost(t);
    }
    if (failed) {
        race_timer(t);
    }
    return STEP_WAIT;
}

// race_timeout: the phase timer of T_CONNECTING. Attempts past connect_timeout_ms end;
// the next attempt starts when happy_eyeballs_ms passed since the last one did.
static tunnel_step race_timeout(gw_tunnel *t) {
    tunnel_race *r = t->dial.race;
    uint64_t now = gw_monotonic_ms();
    int ended = 0;
    for (size_t i = 0; i < TUNNEL_ATTEMPTS; i++) {
        if (r->a[i].fd >= 0 && r->a[i].started + (uint64_t)t->cfg->limits.connect_timeout_ms <= now) {
            char text[80];
            attempt_text(t, r->a[i].addr, text, sizeof(text));
            tunnel_set_reason(t, "connect to %s timed out after %d ms", text, t->cfg->limits.connect_timeout_ms);
            t->dial.last_connect_err = GW_ERR_CONNECT_TIMEOUT;
            end_attempt(t, i);
            ended = 1;
        }
    }
    int he = t->cfg->limits.happy_eyeballs_ms;
    if (ended || attempts_running(r) == 0 || (he > 0 && r->last_start + (uint64_t)he <= now)) {
        start_attempt(t);
    }
    if (attempts_running(r) == 0) {
        return race_lost(t);
    }
    race_timer(t);
    return STEP_NEXT;  // ask the attempts again: one may have connected meanwhile
}

// ---- T_HANDSHAKING, T_CONFIRMING ----

tunnel_step tunnel_phase_tls(gw_tunnel *t) {
    gw_err err = GW_ERR_NONE;
    char reason[600];
    if (t->state == T_HANDSHAKING) {
        // The flight that ends the handshake waits for the data that follows it in this
        // run (a request, a forward client's first bytes, early data behind the
        // ClientHello): tunnel_advance sends them together.
        gw_upstream_cork(&t->upstream);
    }
    gw_step st = t->state == T_HANDSHAKING ? gw_upstream_tls_step(&t->upstream, &err, reason, sizeof(reason))
                                           : gw_upstream_confirm_step(&t->upstream, &err, reason, sizeof(reason));
    if ((st == GW_STEP_DONE || st == GW_STEP_FAILED) && t->state == T_HANDSHAKING && !t->dial.ocsp_counted &&
        gw_upstream_ocsp_result(&t->upstream) != 0 && t->upstream.identity != NULL) {
        t->dial.ocsp_counted = 1;  // (the staple is judged once, when the server's certificate comes)
        gw_metrics_ocsp(t->upstream.identity->metrics_slot, gw_upstream_ocsp_result(&t->upstream));
    }
    switch (st) {
        case GW_STEP_WANT_READ:
            t->upstream_io.readable = 0;
            if (t->state == T_CONFIRMING && t->upstream.ticket_seen && !t->dial.confirm_grace) {
                // nginx sends its tickets before it looks at our certificate, and closes
                // in the same moment when it rejects it: the close comes right behind the
                // ticket, not a round trip later. A ticket ends the wait after a grace of
                // a twentieth of the handshake's time (at least 3 ms, at most confirm_ms/4).
                t->dial.confirm_grace = 1;
                uint64_t grace = (uint64_t)(t->handshake_ms > 0 ? t->handshake_ms : 0) / 20;
                uint64_t most = (uint64_t)t->cfg->limits.confirm_ms / 4;
                grace = grace < 3 ? 3 : grace;
                tunnel_set_timer(t, grace < most ? grace : (most ? most : 1));
            }
            return STEP_WAIT;
        case GW_STEP_WANT_WRITE:
            t->upstream_io.writable = 0;
            return STEP_WAIT;
        case GW_STEP_WANT_KEY:
            return STEP_WAIT;  // the key_ready event goes on once the token signed (or key_timeout_ms passed)
        case GW_STEP_FAILED:
            return tunnel_fail(t, err, "%s", reason);
        case GW_STEP_DONE:
            break;
    }
    if (t->state == T_HANDSHAKING && t->upstream.early == GW_EARLY_SENDING) {
        // Resumed with early data offered: the ClientHello left and the client's first
        // bytes follow it; the transport finishes the handshake (and sends them again if
        // the server refuses them). The server's first data confirms the connection.
        t->handshake_ms = (int64_t)(gw_monotonic_ms() - t->t_phase);
        t->upstream.rtt_ms = t->connect_ms;
        gw_metrics_handshake(t->upstream.identity->metrics_slot, 1, gw_monotonic_us() - t->hs_start_us);
        t->dial.unconfirmed = 1;
        if (t->door->exchanges) {
            tunnel_http_mark_early(t);
        }
    } else if (t->state == T_HANDSHAKING) {
        t->handshake_ms = (int64_t)(gw_monotonic_ms() - t->t_phase);
        t->upstream.rtt_ms = t->handshake_ms > t->connect_ms ? t->handshake_ms : t->connect_ms;
        gw_metrics_handshake(t->upstream.identity->metrics_slot, SSL_session_reused(t->upstream.ssl),
                             gw_monotonic_us() - t->hs_start_us);
        // After a full TLS 1.3 handshake the server's verdict on our certificate comes a
        // round trip later, if at all. Only SOCKS and CONNECT wait for it, and only on
        // first contact: their success reply cannot be taken back. A forward listener has
        // no reply to hold back, and an http_proxy request goes out at once (a server that
        // rejects us answers it with an alert or a close, which the read judges); neither
        // does a tunnel to a server that accepted this identity before. The sessions of
        // such a handshake are cached only once the server's data arrives.
        if (gw_upstream_needs_confirm(&t->upstream)) {
            t->dial.unconfirmed = tunnel_is_plain_stream(t) || t->door->exchanges || t->cfg->limits.confirm_ms == 0 ||
                                  gw_upstream_known_accepted(&t->upstream);
            if (!t->dial.unconfirmed) {
                t->state = T_CONFIRMING;
                tunnel_set_timer(t, (uint64_t)t->cfg->limits.confirm_ms);
                return STEP_NEXT;
            }
        }
    }
    t->state = T_ESTABLISHED;
    return STEP_NEXT;
}

// ---- T_ESTABLISHED ----

tunnel_step tunnel_phase_established(gw_tunnel *t) {
    if (!t->dial.unconfirmed && !t->upstream.confirmed) {
        gw_upstream_confirm(&t->upstream);
    }
    t->last_activity = gw_loop_now(t->host->loop);
    tunnel_set_timer(t, (uint64_t)t->cfg->limits.idle_timeout_s * 1000);
    if (t->door->exchanges) {
        t->state = T_HTTP_PROXY;  // the request waiting in to_up goes out now
        return STEP_NEXT;
    }
    t->state = T_RELAY;  // the driver queues the door's success reply
    return STEP_NEXT;
}

// ---- timers ----

tunnel_step tunnel_timeout_dial(gw_tunnel *t) {
    switch (t->state) {
        case T_RESOLVING:
            return tunnel_fail(t, GW_ERR_DNS_TIMEOUT, "DNS lookup did not finish in time");
        case T_CONNECTING:
            return race_timeout(t);
        case T_HANDSHAKING:
            // Waiting for a token's signature (key_timeout_ms longer than what was left of
            // the handshake's time): the key is what is missing, not the server. The
            // handshake goes on to fail with key_unavailable through the key_ready event.
            if (gw_keyops_expire(&t->upstream, "handshake_timeout_ms", t->cfg->limits.handshake_timeout_ms)) {
                return STEP_WAIT;
            }
            return tunnel_fail(t, GW_ERR_HANDSHAKE_TIMEOUT, "TLS handshake with %s timed out after %d ms",
                               t->upstream_text, t->cfg->limits.handshake_timeout_ms);
        case T_CONFIRMING:
            // The server said nothing after the handshake: nothing says it rejected us.
            t->state = T_ESTABLISHED;
            return STEP_NEXT;
        default:
            return STEP_WAIT;
    }
}
