#include "gateway/report.h"

#include <stdio.h>
#include <string.h>

#include "gateway/acme/state.h"

const char *gw_identity_status(const gw_identity *id, time_t now, int warn_days) {
    if (id->pending) {
        return "pending";
    }
    if (now >= id->not_after) {
        return "expired";
    }
    if (now < id->not_before) {
        return "not_yet_valid";
    }
    time_t left = id->not_after - now, life = id->not_after - id->not_before;
    if (left < (time_t)warn_days * 86400 || (life < 42 * 86400 && left < life / 3)) {
        return "expiring";
    }
    return "ok";
}

void gw_identity_sans(const gw_identity *id, char *out, size_t cap) {
    gw_cert_sans(id->leaf, 1, out, cap);
}

void gw_format_utc(time_t t, char *out, size_t cap) {
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void gw_acme_view_of(const pol_config *cfg, const gw_identity *id, gw_acme_view *out) {
    memset(out, 0, sizeof(*out));
    out->acme = pol_config_acme(cfg, id->spec.name);
    if (out->acme == NULL) {
        return;
    }
    char path[4200];
    gw_acme_state st;
    gw_acme_state_path(id->spec.certificate, path, sizeof(path));
    gw_acme_state_read(path, &st);
    out->last_attempt = st.last_attempt;
    out->last_success = st.last_success;
    out->failures = st.failures;
    snprintf(out->result, sizeof(out->result), "%s", st.result);
    snprintf(out->error, sizeof(out->error), "%s", st.error);
    out->next = id->pending ? 0 : pol_acme_due(out->acme, id->not_before, id->not_after);
    if (st.next_attempt > out->next) {
        out->next = st.next_attempt;
    }
    gw_format_utc(out->next, out->next_text, sizeof(out->next_text));
    gw_format_utc(out->last_attempt, out->last_text, sizeof(out->last_text));
}

static void acme_json(gw_strbuf *b, const pol_config *cfg, const gw_identity *id) {
    gw_acme_view v;
    gw_acme_view_of(cfg, id, &v);
    if (v.acme == NULL) {
        return;
    }
    const char *next = v.next_text, *last = v.last_text;
    gw_strbuf_printf(b, ", \"acme\": {\"directory\": ");
    gw_strbuf_json(b, v.acme->directory);
    gw_strbuf_printf(b, ", \"challenge\": \"%s\", \"next_renewal\": \"%s\", \"next_renewal_unix\": %lld",
                     pol_acme_challenge_name(v.acme->challenge), v.next ? next : "now", (long long)v.next);
    gw_strbuf_printf(
        b, ", \"last_attempt\": %s%s%s, \"last_attempt_unix\": %lld, \"last_result\": ", v.last_attempt ? "\"" : "",
        v.last_attempt ? last : "null", v.last_attempt ? "\"" : "", (long long)v.last_attempt);
    gw_strbuf_json(b, v.result);
    gw_strbuf_printf(b, ", \"failures\": %d, \"last_error\": ", v.failures);
    gw_strbuf_json(b, v.error);
    gw_strbuf_printf(b, "}");
}

static const char *callers_text(const pol_rule *r) {
    return r->callers != NULL ? r->callers->text : NULL;
}

static const char *listeners_text(const pol_rule *r) {
    return r->listeners_text;
}

// rule_map writes {"file:line": "text", ...} for the rules of |id| that |text_of| has
// words for (their callers, their listeners).
static void rule_map(gw_strbuf *b, const pol_config *cfg, const gw_identity *id,
                     const char *(*text_of)(const pol_rule *r)) {
    int first = 1;
    gw_strbuf_printf(b, "{");
    for (size_t r = 0; r < cfg->num_rules; r++) {
        const char *text = text_of(&cfg->rules[r]);
        if (text != NULL && pol_rule_uses_identity(&cfg->rules[r], id)) {
            gw_strbuf_printf(b, "%s", first ? "" : ", ");
            gw_strbuf_json(b, cfg->rules[r].where);
            gw_strbuf_printf(b, ": ");
            gw_strbuf_json(b, text);
            first = 0;
        }
    }
    gw_strbuf_printf(b, "}");
}

void gw_identities_json(gw_strbuf *b, const pol_config *cfg, time_t now, int warn_days) {
    gw_strbuf_printf(b, "[");
    for (size_t i = 0; i < cfg->num_identities; i++) {
        const gw_identity *id = cfg->identities[i];
        char sans[1024], nb[40], na[40];
        gw_identity_sans(id, sans, sizeof(sans));
        gw_format_utc(id->not_before, nb, sizeof(nb));
        gw_format_utc(id->not_after, na, sizeof(na));
        gw_strbuf_printf(b, "%s\n  {\"name\": ", i ? "," : "");
        gw_strbuf_json(b, id->spec.name);
        gw_strbuf_printf(b, ", \"where\": ");
        gw_strbuf_json(b, id->spec.where);
        gw_strbuf_printf(b, ", \"subject\": ");
        gw_strbuf_json(b, id->subject);
        gw_strbuf_printf(b, ", \"issuer\": ");
        gw_strbuf_json(b, id->issuer);
        gw_strbuf_printf(b, ", \"sans\": ");
        gw_strbuf_json(b, sans);
        gw_strbuf_printf(b, ", \"key_type\": ");
        gw_strbuf_json(b, id->key_type);
        if (id->p11 != NULL) {  // where the key is: the URI (never a PIN: pin-value is refused)
            gw_strbuf_printf(b, ", \"key\": ");
            gw_strbuf_json(b, id->spec.key);
            gw_strbuf_printf(b, ", \"token\": ");
            gw_strbuf_json(b, gw_p11_info(id->p11)->token);
        }
        gw_strbuf_printf(b, ", \"serial\": ");
        gw_strbuf_json(b, id->serial);
        if (id->pending) {  // no certificate yet (ACME)
            gw_strbuf_printf(b,
                             ", \"not_before\": null, \"not_after\": null, \"not_after_unix\": 0, "
                             "\"days_left\": null, \"status\": \"pending\", \"rules\": [");
        } else {
            gw_strbuf_printf(b, ", \"not_before\": \"%s\", \"not_after\": \"%s\", \"not_after_unix\": %lld", nb, na,
                             (long long)id->not_after);
            gw_strbuf_printf(b, ", \"days_left\": %.1f, \"status\": \"%s\", \"rules\": [",
                             (double)(id->not_after - now) / 86400.0, gw_identity_status(id, now, warn_days));
        }
        int first = 1;
        for (size_t r = 0; r < cfg->num_rules; r++) {
            if (pol_rule_uses_identity(&cfg->rules[r], id)) {
                gw_strbuf_printf(b, "%s", first ? "" : ", ");
                gw_strbuf_json(b, cfg->rules[r].where);
                first = 0;
            }
        }
        gw_strbuf_printf(b, "], \"callers\": ");
        rule_map(b, cfg, id, callers_text);
        gw_strbuf_printf(b, ", \"listeners\": ");
        rule_map(b, cfg, id, listeners_text);
        acme_json(b, cfg, id);
        gw_strbuf_printf(b, "}");
    }
    gw_strbuf_printf(b, "%s]\n", cfg->num_identities ? "\n" : "");
}
