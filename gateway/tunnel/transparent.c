// transparent: tunnels of a transparent listener. The destination is the connection's
// original one (a netfilter REDIRECT or DNAT recorded it); with sniff = ["http"] an HTTP
// request head's Host names it for the rules and the server name, while the connection
// still goes to the original address. There is no protocol to answer in: a refusal
// resets the client, and the access log says why.
#include "gateway/tunnel/internal.h"

#include "gateway/proto/hostname.h"

static void orig_text(const gw_tunnel *t, char *ip, size_t cap, uint16_t *port) {
    const struct sockaddr *sa = (const struct sockaddr *)&t->dial.orig;
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, (socklen_t)cap);
        *port = ntohs(s6->sin6_port);
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, (socklen_t)cap);
        *port = ntohs(s4->sin_port);
    }
}

// address_refuses says whether the rules refuse the original address itself (no rule, or
// a deny rule), and if so rejects the tunnel saying so. The client chooses the Host it
// sends, so a name cannot lift what the address meets: both must allow, a deny wins.
static tunnel_step address_refuses(gw_tunnel *t, const char *host, const char *ip, uint16_t port) {
    pol_dest addr;
    if (t->admission != GW_ERR_NONE || !pol_dest_init(&addr, ip, port)) {
        return STEP_NEXT;  // T_ROUTE refuses it for what it is
    }
    const pol_rule *r = pol_config_lookup(t->cfg, &addr, t->caller, (int)t->listener_index);
    if (r != NULL && r->action != POL_ACTION_DENY) {
        return STEP_NEXT;
    }
    if (!pol_dest_init(&t->dest, host, port)) {
        t->dest = addr;
    }
    char where[80];
    snprintf(where, sizeof(where), addr.family == AF_INET6 ? "[%s]:%u" : "%s:%u", addr.host, port);
    if (r == NULL) {
        return tunnel_fail(t, GW_ERR_NO_RULE,
                           "no rule matches the original destination %s (default deny); the "
                           "sniffed Host \"%s\" cannot lift it",
                           where, host);
    }
    return tunnel_fail(t, GW_ERR_DENIED,
                       "the original destination %s is denied by rule %s; the sniffed Host \"%s\" "
                       "cannot lift it",
                       where, r->where, host);
}

// route routes by |host| (a sniffed Host) or, when NULL, by the original address. A
// sniffed name is used only when the rules allow the original address too.
static tunnel_step route(gw_tunnel *t, const char *host) {
    char ip[INET6_ADDRSTRLEN];
    uint16_t port;
    orig_text(t, ip, sizeof(ip), &port);
    t->state = T_ROUTE;  // not reading any more
    gw_timer_stop(t->host->loop, &t->timer);
    if (host != NULL && address_refuses(t, host, ip, port) == STEP_FAIL) {
        return STEP_FAIL;
    }
    return tunnel_want(t, host != NULL ? host : ip, port);
}

tunnel_step tunnel_transparent_start(gw_tunnel *t, const struct sockaddr *orig) {
    if (orig == NULL) {
        t->state = T_ROUTE;
        return tunnel_fail(t, GW_ERR_DENIED,
                           "connection to the transparent listener itself: nothing redirected it (a client that "
                           "connected directly, or a redirect loop: see upstream_mark)");
    }
    memcpy(&t->dial.orig, orig, orig->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    // Where the connection goes when no rule names an upstream: the original address, as
    // dial takes resolved ones.
    t->dial.orig_addr.family = orig->sa_family;
    if (orig->sa_family == AF_INET6) {
        memcpy(t->dial.orig_addr.addr, &((const struct sockaddr_in6 *)orig)->sin6_addr, 16);
    } else {
        memcpy(t->dial.orig_addr.addr, &((const struct sockaddr_in *)orig)->sin_addr, 4);
    }
    uint16_t port;
    orig_text(t, t->dial.orig_ip, sizeof(t->dial.orig_ip), &port);
    if (tunnel_listener_of(t)->sniff & POL_SNIFF_HTTP) {
        t->state = T_SNIFF;
        tunnel_set_timer(t, (uint64_t)t->cfg->limits.handshake_timeout_ms);
        return STEP_WAIT;
    }
    return route(t, NULL);
}

tunnel_step tunnel_sniff_give_up(gw_tunnel *t) {
    return route(t, NULL);
}

// looks_like_http says whether |p| (|n| bytes) starts like a request line: 1 yes (a
// token of capitals and a space), 0 no, -1 too few bytes to tell.
static int looks_like_http(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n && i < 20; i++) {
        if (p[i] == ' ') {
            return i > 0;
        }
        if (p[i] < 'A' || p[i] > 'Z') {
            return 0;
        }
    }
    return n < 20 ? -1 : 0;
}

tunnel_step tunnel_phase_sniff(gw_tunnel *t) {
    tunnel_step s = tunnel_read_request(t);
    if (s != STEP_WAIT) {
        return s;
    }
    const gw_buf *b = t->to_up;
    size_t n = gw_buf_len(b);
    const uint8_t *p = b ? b->data + b->start : NULL;
    int http = n ? looks_like_http(p, n) : -1;
    if (http == 0) {
        return route(t, NULL);  // opaque bytes (TLS, redis, ...): relayed to the original address
    }
    if (http == 1) {
        gw_http_request hr;
        size_t limit = n < (size_t)t->cfg->limits.header_max ? n : (size_t)t->cfg->limits.header_max;
        gw_http_status st = gw_http_parse_request((const char *)p, limit, &hr);
        if (st == GW_HTTP_OK) {
            const gw_http_header *h = gw_http_find_header(hr.headers, hr.num_headers, "host");
            char host[256];
            uint16_t port;
            if (h != NULL && gw_http_parse_authority(h->value, h->value_len, 80, host, &port) &&
                gw_host_is_valid(host, strlen(host))) {
                return route(t, host);  // the name for rules and SNI; the connection goes to the original address
            }
            return route(t, NULL);
        }
        if (st != GW_HTTP_NEED_MORE || limit == (size_t)t->cfg->limits.header_max) {
            return route(t, NULL);  // not a head we can read, or longer than header_max: opaque
        }
    }
    if (t->client_io.eof) {
        return route(t, NULL);  // the client stopped sending before a whole head: relay what came
    }
    return STEP_WAIT;
}
