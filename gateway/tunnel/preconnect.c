// preconnect: verified mTLS connections kept ready for the rules that ask for them
// (`preconnect = N`), so a new SOCKS, CONNECT or forward tunnel to that destination skips
// DNS, TCP and TLS (DESIGN "Round trips").
//
// Each worker keeps N per such rule. A slot dials as a tunnel would (DNS, deny_addresses
// and the gateway's own addresses, each address in turn, the handshake with the rule's
// identities, and the server's verdict on a full TLS 1.3 handshake, waited for here where
// no client waits), then parks. While parked the slot reads nothing: bytes the server
// sends first (an SSH, SMTP or MySQL banner) stay in the connection for the tunnel that
// takes it. A parked connection the server closes, or older than
// upstream_pool.idle_timeout_s, is replaced; one taken is replaced at once; a slot whose
// dial fails tries again after a backoff (1 s doubling to 60 s). A new config replaces
// every slot. A rule with a parent proxy (via) parks connections through it: the slot
// connects to the parent, has it open the destination, and runs the mTLS inside.
#include "gateway/tunnel/internal.h"

#include <sys/epoll.h>

typedef enum { S_WAIT, S_RESOLVING, S_CONNECTING, S_VIA, S_HANDSHAKING, S_CONFIRMING, S_PARKED } slot_state;

typedef struct slot {
    struct gw_preconn_s *p;
    const pol_rule *rule;
    char host[256];  // the destination (the rule's upstream, or its one host)
    uint16_t port;
    char target[300];  // with via: "host:port" the parent is asked for (as a tunnel's via_target)
    gw_parent_talk talk;
    char server_name[256];
    slot_state state;
    res_query *query;
    res_addr addrs[RES_MAX_ADDRS];
    size_t num_addrs, next_addr;
    gw_upstream up;
    gw_watcher w;
    gw_timer timer;
    int grace;  // a ticket arrived while confirming
    unsigned failures;
    uint64_t since;  // when the current state began (monotonic ms)
    char text[80];
} slot;

struct gw_preconn_s {
    gw_tunnel_host *host;
    pol_config *cfg;  // the snapshot the slots' rules belong to
    slot **slots;
    size_t num_slots;
};

static void count(gw_preconnect_event e) {
    gw_metrics_preconnect(e, 0);
}

static void start(slot *s);
static void connect_next(slot *s);

// reset closes whatever the slot has under way or parked.
static void reset(slot *s) {
    gw_loop *loop = s->p->host->loop;
    if (s->state == S_PARKED) {
        gw_metrics_preconnect(GW_PRECONN_COUNT, -1);
    }
    res_query_detach(s->query);
    s->query = NULL;
    gw_watcher_remove(loop, &s->w);
    gw_timer_stop(loop, &s->timer);
    gw_upstream_close(&s->up);
    s->state = S_WAIT;
}

// failed gives up on this dial: another after a backoff.
static void failed(slot *s, const char *why) {
    gw_log(s->failures == 0 ? GW_LOG_WARN : GW_LOG_DEBUG, "preconnect for rule %s to %s:%u: %s", s->rule->where,
           s->host, s->port, why);
    count(GW_PRECONN_FAILED);
    reset(s);
    unsigned shift = s->failures < 6 ? s->failures : 6;
    s->failures++;
    gw_timer_start(s->p->host->loop, &s->timer, 1000ull << shift);
}

static void park(slot *s) {
    gw_upstream_confirm(&s->up);
    s->state = S_PARKED;
    s->since = gw_monotonic_ms();
    s->failures = 0;
    gw_metrics_preconnect(GW_PRECONN_COUNT, 1);
    gw_watcher_set(s->p->host->loop, &s->w, EPOLLIN | EPOLLRDHUP | EPOLLET);
    gw_timer_start(s->p->host->loop, &s->timer, (uint64_t)s->p->cfg->upstream_pool.idle_timeout_s * 1000);
}

// advance moves the dial on after an event on the socket (or a key's signature).
static void advance(slot *s) {
    const pol_config *cfg = s->p->cfg;
    char reason[900];
    gw_err err = GW_ERR_NONE;
    if (s->state == S_CONNECTING) {
        if (gw_upstream_connect_result(&s->up, reason, sizeof(reason)) != GW_ERR_NONE) {
            gw_watcher_remove(s->p->host->loop, &s->w);
            gw_upstream_close(&s->up);
            connect_next(s);  // the next address, if any
            return;
        }
        if (s->rule->via != NULL) {
            s->state = S_VIA;  // the parent is asked for the destination first
            gw_parent_talk_init(&s->talk);
        }
    }
    if (s->state == S_VIA) {
        gw_step st = gw_parent_step(&s->talk, &s->up, s->rule->via, s->target, &err, reason, sizeof(reason));
        if (st == GW_STEP_WANT_READ || st == GW_STEP_WANT_WRITE) {
            return;
        }
        gw_metrics_via(s->rule->via->text, st == GW_STEP_DONE ? GW_VIA_OK : tunnel_via_verdict(err));
        if (st != GW_STEP_DONE) {
            failed(s, reason);
            return;
        }
    }
    if (s->state == S_CONNECTING || s->state == S_VIA) {
        char where[900];
        tunnel_session_where(s->rule->via ? s->target : s->text, s->server_name, s->rule, where, sizeof(where));
        s->up.keyops = s->p->host->keyops;
        s->up.key_timeout_ms = cfg->limits.key_timeout_ms;
        if (!gw_upstream_tls_begin(&s->up, (const gw_identity *const *)s->rule->identities, s->rule->num_identities,
                                   s->server_name, s->rule->server_uri, where, &s->p->host->pool, 0)) {
            failed(s, "cannot create a TLS connection");
            return;
        }
        s->state = S_HANDSHAKING;
        gw_timer_start(s->p->host->loop, &s->timer, (uint64_t)cfg->limits.handshake_timeout_ms);
    }
    gw_step st = s->state == S_HANDSHAKING ? gw_upstream_tls_step(&s->up, &err, reason, sizeof(reason))
                                           : gw_upstream_confirm_step(&s->up, &err, reason, sizeof(reason));
    if (st == GW_STEP_FAILED) {
        failed(s, reason);
        return;
    }
    if (st == GW_STEP_WANT_READ && s->state == S_CONFIRMING && s->up.ticket_seen && !s->grace) {
        s->grace = 1;  // as a tunnel does: the close comes right behind a ticket, if at all
        gw_timer_start(s->p->host->loop, &s->timer, 5);
    }
    if (st != GW_STEP_DONE) {
        return;
    }
    if (s->state == S_HANDSHAKING && gw_upstream_needs_confirm(&s->up) && !gw_upstream_known_accepted(&s->up)) {
        s->state = S_CONFIRMING;
        s->grace = 0;
        gw_timer_start(s->p->host->loop, &s->timer,
                       (uint64_t)(cfg->limits.confirm_ms > 0 ? cfg->limits.confirm_ms : 1));
        advance(s);
        return;
    }
    park(s);
}

static void on_key_ready(void *arg) {
    advance(arg);
}

static void on_io(gw_loop *loop, gw_watcher *w, uint32_t events) {
    (void)loop;
    slot *s = w->data;
    if (s->state != S_PARKED) {
        advance(s);
        return;
    }
    // Parked: a banner stays where it is; a close ends the connection.
    uint8_t b;
    int r = SSL_peek(s->up.ssl, &b, 1);
    if (r > 0 || (!(events & (EPOLLERR | EPOLLHUP)) && SSL_get_error(s->up.ssl, r) == SSL_ERROR_WANT_READ)) {
        return;
    }
    ERR_clear_error();
    count(GW_PRECONN_CLOSED);
    reset(s);
    start(s);
}

// connect_next connects to the next allowed address.
static void connect_next(slot *s) {
    const pol_config *cfg = s->p->cfg;
    const pol_via *via = s->rule->via;
    uint16_t port = via ? via->port : s->port;
    while (s->next_addr < s->num_addrs) {
        const res_addr *a = &s->addrs[s->next_addr++];
        // (a parent's addresses are the operator's choice, as for a tunnel: not judged by deny_addresses)
        if (pol_config_own_address(cfg, a->family, a->addr, port) != NULL ||
            (via == NULL && pol_config_denied_address(cfg, s->rule, a->family, a->addr) != NULL)) {
            continue;  // never connected to, whatever led there
        }
        struct sockaddr_storage ss;
        socklen_t len = gw_sockaddr_from(&ss, a->family, a->addr, port);
        gw_format_addr((struct sockaddr *)&ss, s->text, sizeof(s->text));
        char why[300];
        gw_upstream_init(&s->up);
        s->up.fastopen = s->rule->tcp_fastopen;
        if (gw_upstream_connect(&s->up, (struct sockaddr *)&ss, len, why, sizeof(why)) != GW_ERR_NONE) {
            continue;
        }
        s->up.key_ready = on_key_ready;
        s->up.key_arg = s;
        gw_watcher_init(&s->w, s->up.fd, on_io, s);
        if (!gw_watcher_set(s->p->host->loop, &s->w, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)) {
            gw_upstream_close(&s->up);
            continue;
        }
        s->state = S_CONNECTING;
        gw_timer_start(s->p->host->loop, &s->timer, (uint64_t)cfg->limits.connect_timeout_ms);
        return;
    }
    failed(s, "no allowed address answered");
}

static void on_resolved(void *arg, res_status status, const res_addr *addrs, size_t n) {
    slot *s = arg;
    s->query = NULL;
    if (status != RES_OK) {
        failed(s, res_status_text(status));
        return;
    }
    memcpy(s->addrs, addrs, n * sizeof(*addrs));
    s->num_addrs = n;
    s->next_addr = 0;
    connect_next(s);
}

static void start(slot *s) {
    s->state = S_RESOLVING;
    s->since = gw_monotonic_ms();
    gw_timer_start(s->p->host->loop, &s->timer, 30000);  // the lookup's backstop
    res_query *q = res_resolve(s->p->host->resolver, s->rule->via ? s->rule->via->host : s->host, on_resolved, s);
    if (q != NULL) {
        s->query = q;  // the answer comes later (else on_resolved already ran)
    }
}

static void on_timer(gw_loop *loop, gw_timer *timer) {
    (void)loop;
    slot *s = timer->data;
    switch (s->state) {
        case S_WAIT:
            start(s);
            return;
        case S_RESOLVING:
            failed(s, "DNS lookup did not finish in time");
            return;
        case S_CONNECTING:
            gw_watcher_remove(loop, &s->w);
            gw_upstream_close(&s->up);
            if (s->next_addr < s->num_addrs) {
                connect_next(s);
            } else {
                failed(s, "connect timed out");
            }
            return;
        case S_VIA:
            gw_metrics_via(s->rule->via->text, GW_VIA_TIMEOUT);
            failed(s, "the parent proxy did not answer CONNECT within connect_timeout_ms");
            return;
        case S_HANDSHAKING:
            if (gw_keyops_expire(&s->up, "handshake_timeout_ms", s->p->cfg->limits.handshake_timeout_ms)) {
                return;  // the key's failure comes through key_ready
            }
            failed(s, "TLS handshake timed out");
            return;
        case S_CONFIRMING:
            park(s);  // nothing says the server rejected us
            return;
        case S_PARKED:
            count(GW_PRECONN_EXPIRED);  // replaced before the server would time it out
            reset(s);
            start(s);
            return;
    }
}

// target says where a rule's preconnected connections go: its upstream, or the one host
// and port it matches. Returns 0 for a rule that has no single destination.
static int target(const pol_rule *r, char *host, size_t cap, uint16_t *port) {
    if (r->upstream_host != NULL) {
        snprintf(host, cap, "%s", r->upstream_host);
        *port = r->upstream_port;
        return 1;
    }
    if (r->match.kind != POL_MATCH_HOST || r->match.port_lo != r->match.port_hi) {
        return 0;
    }
    snprintf(host, cap, "%s", r->match.host);
    *port = r->upstream_port ? r->upstream_port : r->match.port_lo;
    return 1;
}

gw_preconn *gw_preconn_new(gw_tunnel_host *host) {
    gw_preconn *p = calloc(1, sizeof(*p));
    if (p != NULL) {
        p->host = host;
    }
    return p;
}

static void clear(gw_preconn *p) {
    for (size_t i = 0; i < p->num_slots; i++) {
        reset(p->slots[i]);
        free(p->slots[i]);
    }
    free(p->slots);
    p->slots = NULL;
    p->num_slots = 0;
    pol_config_unref(p->cfg);
    p->cfg = NULL;
}

void gw_preconn_free(gw_preconn *p) {
    if (p != NULL) {
        clear(p);
        free(p);
    }
}

void gw_preconn_apply(gw_preconn *p, pol_config *cfg) {
    clear(p);
    if (cfg == NULL || p->host->draining) {
        return;
    }
    size_t want = 0;
    for (size_t i = 0; i < cfg->num_rules; i++) {
        want += cfg->rules[i].action == POL_ACTION_MTLS ? (size_t)cfg->rules[i].preconnect : 0;
    }
    if (want == 0 || (p->slots = calloc(want, sizeof(*p->slots))) == NULL) {
        return;
    }
    p->cfg = pol_config_ref(cfg);
    for (size_t i = 0; i < cfg->num_rules; i++) {
        const pol_rule *r = &cfg->rules[i];
        char host[256];
        uint16_t port;
        if (r->action != POL_ACTION_MTLS || r->preconnect == 0 || !target(r, host, sizeof(host), &port)) {
            continue;
        }
        struct in6_addr lit;
        int fam = inet_pton(AF_INET, host, &lit) == 1 ? AF_INET : inet_pton(AF_INET6, host, &lit) == 1 ? AF_INET6 : 0;
        if (r->via != NULL && fam != 0 && pol_config_denied_address(cfg, r, fam, (const uint8_t *)&lit) != NULL) {
            gw_log(GW_LOG_WARN, "preconnect for rule %s: %s is in deny_addresses: the parent is not asked for it",
                   r->where, host);
            continue;  // (a tunnel is refused the same way)
        }
        for (int k = 0; k < r->preconnect; k++) {
            slot *s = calloc(1, sizeof(*s));
            if (s == NULL) {
                break;
            }
            s->p = p;
            s->rule = r;
            snprintf(s->host, sizeof(s->host), "%s", host);
            s->port = port;
            snprintf(s->target, sizeof(s->target), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
            snprintf(s->server_name, sizeof(s->server_name), "%s", r->server_name ? r->server_name : host);
            gw_upstream_init(&s->up);
            gw_watcher_init(&s->w, -1, on_io, s);
            gw_timer_init(&s->timer, on_timer, s);
            p->slots[p->num_slots++] = s;
            gw_timer_start(p->host->loop, &s->timer, 0);  // from the loop, not from inside a reload
        }
    }
}

int tunnel_take_preconnected(gw_tunnel *t) {
    gw_preconn *p = t->host->preconn;
    if (p == NULL || p->cfg != t->cfg) {
        return 0;
    }
    for (size_t i = 0; i < p->num_slots; i++) {
        slot *s = p->slots[i];
        int same = t->rule->via != NULL ? strcmp(s->target, t->dial.via_target) == 0
                                        : s->port == t->dial.connect_port && strcmp(s->host, t->dial.connect_host) == 0;
        if (s->state != S_PARKED || s->rule != t->rule || !same || strcmp(s->server_name, t->dial.server_name) != 0) {
            continue;
        }
        gw_watcher_remove(t->host->loop, &s->w);
        gw_timer_stop(t->host->loop, &s->timer);
        gw_metrics_preconnect(GW_PRECONN_COUNT, -1);
        gw_upstream_move(&t->upstream, &s->up);
        snprintf(t->upstream_text, sizeof(t->upstream_text), "%s", s->text);
        if (t->rule->via != NULL) {  // as a dial through the parent logs it
            snprintf(t->dial.via_addr, sizeof(t->dial.via_addr), "%s", s->text);
            snprintf(t->upstream_text, sizeof(t->upstream_text), "%s", t->dial.via_target);
        }
        count(GW_PRECONN_TAKEN);
        s->state = S_WAIT;
        gw_timer_start(t->host->loop, &s->timer, 0);  // replaced at once
        return 1;
    }
    return 0;
}
