// via: a tunnel through the rule's parent proxy (DESIGN "Through a parent proxy"). Once
// TCP to the parent is up (T_VIA), the conversation of gateway/upstream/parent.c asks it
// for the destination (TLS to an https:// parent first), and the driver goes on with
// tunnel_after_parent: the rule's mTLS (or the plain relay) on the same connection. Every
// failure is the parent's, said as such (the record names it as next-hop).
#include "gateway/tunnel/internal.h"

static const pol_via *via_of(const gw_tunnel *t) {
    return t->rule->via;
}

gw_via_result tunnel_via_verdict(gw_err err) {
    switch (err) {
        case GW_ERR_VIA_AUTH:
            return GW_VIA_AUTH;
        case GW_ERR_VIA_REFUSED:
            return GW_VIA_REFUSED;
        case GW_ERR_VIA_CERT:
        case GW_ERR_VIA_TLS:
            return GW_VIA_TLS;
        default:
            return GW_VIA_ERROR;
    }
}

void tunnel_via_begin(gw_tunnel *t) {
    gw_parent_talk_init(&t->dial.via_talk);
    t->dial.via_done = 0;
}

int tunnel_via_done(const gw_tunnel *t) {
    return t->dial.via_done;
}

tunnel_step tunnel_phase_via(gw_tunnel *t) {
    gw_err err = GW_ERR_NONE;
    char reason[900];
    gw_step st =
        gw_parent_step(&t->dial.via_talk, &t->upstream, via_of(t), t->dial.via_target, &err, reason, sizeof(reason));
    switch (st) {
        case GW_STEP_DONE:
            t->dial.via_done = 1;
            gw_metrics_via(via_of(t)->text, GW_VIA_OK);
            return STEP_NEXT;
        case GW_STEP_WANT_READ:
            t->upstream_io.readable = 0;
            return STEP_WAIT;
        case GW_STEP_WANT_WRITE:
            t->upstream_io.writable = 0;
            return STEP_WAIT;
        default:
            gw_metrics_via(via_of(t)->text, tunnel_via_verdict(err));
            return tunnel_fail(t, err, "%s", reason);
    }
}

// (the parent is part of the key: a session is the destination's, found through that parent)
void tunnel_session_where(const char *upstream, const char *server_name, const pol_rule *r, char *out, size_t cap) {
    snprintf(out, cap, "%s|%s|%s|%s", upstream, server_name, r->server_uri ? r->server_uri : "",
             r->via ? r->via->text : "");
}

tunnel_step tunnel_via_timeout(gw_tunnel *t) {
    gw_metrics_via(via_of(t)->text, GW_VIA_TIMEOUT);
    return tunnel_fail(t, GW_ERR_CONNECT_TIMEOUT,
                       "parent proxy %s did not answer CONNECT %s within connect_timeout_ms (%d ms)", via_of(t)->text,
                       t->dial.via_target, t->cfg->limits.connect_timeout_ms);
}
