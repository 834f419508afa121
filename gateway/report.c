#include "gateway/report.h"

#include <stdio.h>
#include <string.h>

const char *gw_identity_status(const gw_identity *id, time_t now, int warn_days) {
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
        gw_strbuf_printf(b, ", \"not_before\": \"%s\", \"not_after\": \"%s\", \"not_after_unix\": %lld", nb, na,
                         (long long)id->not_after);
        gw_strbuf_printf(b, ", \"days_left\": %.1f, \"status\": \"%s\", \"rules\": [",
                         (double)(id->not_after - now) / 86400.0, gw_identity_status(id, now, warn_days));
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
        gw_strbuf_printf(b, "}");
    }
    gw_strbuf_printf(b, "%s]\n", cfg->num_identities ? "\n" : "");
}
