// status: the status page and /status.json (see status.h).
#include "gateway/status.h"

#include <openssl/base64.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/base/strbuf.h"
#include "gateway/report.h"
#include "gateway/service/board.h"
#include "gateway/service/metrics.h"
#include "gateway/tls/ocsp.h"

#define WARN_DAYS 14

static const char k_style[] =
    ":root{color-scheme:light dark;--bg:#fff;--fg:#1b1f24;--mute:#5b6470;--line:#d8dee4;--warn:#b35900;"
    "--bad:#c62828;--ok:#2e7d32;--bar:#3b73b9}"
    "@media (prefers-color-scheme:dark){:root{--bg:#111418;--fg:#e6e9ed;--mute:#9aa4af;--line:#2c333b;"
    "--warn:#f0a040;--bad:#ff6b6b;--ok:#66bb6a;--bar:#6ea3e6}}"
    "body{margin:0;padding:1rem;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,sans-serif}"
    "h1{font-size:1.3rem;margin:0 0 .3rem}h2{font-size:1.05rem;margin:1.4rem 0 .4rem}"
    ".meta{color:var(--mute)}.scroll{overflow-x:auto}"
    "table{border-collapse:collapse;width:100%;min-width:36rem}"
    "th,td{text-align:left;vertical-align:top;padding:.3rem .5rem;border-bottom:1px solid var(--line)}"
    "th{color:var(--mute);font-weight:600}code{font-size:.92em;word-break:break-all}"
    ".warn{color:var(--warn);font-weight:600}.bad{color:var(--bad);font-weight:600}.ok{color:var(--ok)}"
    "svg{display:block}.chart rect.b{fill:var(--bar)}.chart text{fill:var(--mute);font-size:9px}";

// esc appends |s| for HTML text or a quoted attribute.
static void esc(gw_strbuf *b, const char *s) {
    char chunk[256];
    size_t n = 0;
    for (; s != NULL && *s; s++) {
        const char *rep = *s == '&'    ? "&amp;"
                          : *s == '<'  ? "&lt;"
                          : *s == '>'  ? "&gt;"
                          : *s == '"'  ? "&quot;"
                          : *s == '\'' ? "&#39;"
                                       : NULL;
        if (n + 8 >= sizeof(chunk)) {
            gw_strbuf_printf(b, "%.*s", (int)n, chunk);
            n = 0;
        }
        if (rep != NULL) {
            memcpy(chunk + n, rep, strlen(rep));
            n += strlen(rep);
        } else {
            chunk[n++] = (unsigned char)*s < 0x20 ? ' ' : *s;
        }
    }
    gw_strbuf_printf(b, "%.*s", (int)n, chunk);
}

static void utc(time_t t, char *out, size_t cap) {
    if (t == 0) {
        snprintf(out, cap, "-");
        return;
    }
    gw_format_utc(t, out, cap);
}

static void duration(time_t s, char *out, size_t cap) {
    if (s >= 86400) {
        snprintf(out, cap, "%lldd %lldh", (long long)s / 86400, (long long)(s % 86400) / 3600);
    } else {
        snprintf(out, cap, "%lldh %lldm", (long long)s / 3600, (long long)(s % 3600) / 60);
    }
}

// chart draws an identity's handshakes: the resumed share as a bar, and how long they
// took as a histogram over the metrics' buckets. Inline SVG: no script, no request.
static void chart(gw_strbuf *b, const gw_identity *id) {
    unsigned long long full = 0, resumed = 0, bk[GW_METRICS_HS_BUCKETS];
    const char *bounds[GW_METRICS_HS_BUCKETS];
    if (!gw_metrics_identity_handshakes(id->metrics_slot, &full, &resumed, bk, bounds) || full + resumed == 0) {
        gw_strbuf_printf(b, "<span class=\"meta\">no handshakes yet</span>");
        return;
    }
    unsigned long long total = full + resumed, top = 1;
    for (int i = 0; i < GW_METRICS_HS_BUCKETS; i++) {
        top = bk[i] > top ? bk[i] : top;
    }
    int share = (int)(resumed * 100 / total);
    gw_strbuf_printf(b,
                     "<svg class=\"chart\" width=\"220\" height=\"78\" viewBox=\"0 0 220 78\" role=\"img\" "
                     "aria-label=\"%d%% of %llu handshakes resumed\"><title>%llu resumed of %llu handshakes</title>"
                     "<rect x=\"0\" y=\"2\" width=\"200\" height=\"8\" fill=\"none\" stroke=\"currentColor\" "
                     "stroke-opacity=\".3\"/><rect class=\"b\" x=\"0\" y=\"2\" width=\"%d\" height=\"8\"/>"
                     "<text x=\"204\" y=\"10\">%d%%</text>",
                     share, total, resumed, total, share * 2, share);
    for (int i = 0; i < GW_METRICS_HS_BUCKETS; i++) {
        int h = (int)(bk[i] * 44 / top);
        gw_strbuf_printf(b,
                         "<rect class=\"b\" x=\"%d\" y=\"%d\" width=\"13\" height=\"%d\"><title>&lt;= %s s: "
                         "%llu</title></rect>",
                         i * 16, 64 - h, h, bounds[i], bk[i]);
    }
    gw_strbuf_printf(b, "<text x=\"0\" y=\"76\">1 ms</text><text x=\"150\" y=\"76\">5 s+</text></svg>");
}

static void rules_of(gw_strbuf *b, const pol_config *cfg, const gw_identity *id) {
    int any = 0;
    for (size_t r = 0; r < cfg->num_rules; r++) {
        const pol_rule *rule = &cfg->rules[r];
        if (!pol_rule_uses_identity(rule, id)) {
            continue;
        }
        gw_strbuf_printf(b, "%s<code>", any ? "<br>" : "");
        esc(b, rule->where);
        gw_strbuf_printf(b, "</code>");
        if (rule->callers != NULL) {
            gw_strbuf_printf(b, " caller ");
            esc(b, rule->callers->text);
        }
        any = 1;
    }
    if (!any) {
        gw_strbuf_printf(b, "<span class=\"meta\">no rule</span>");
    }
}

static void identities_html(gw_strbuf *b, const pol_config *cfg, time_t now) {
    gw_strbuf_printf(b,
                     "<h2>Identities</h2><div class=\"scroll\"><table><tr><th>identity</th><th>certificate</th>"
                     "<th>expires</th><th>key</th><th>checks</th><th>rules</th><th>handshakes</th></tr>");
    for (size_t i = 0; i < cfg->num_identities; i++) {
        const gw_identity *id = cfg->identities[i];
        char na[40], nu[40];
        gw_strbuf_printf(b, "<tr id=\"identity-");
        esc(b, id->spec.name);
        gw_strbuf_printf(b, "\"><td><b>");
        esc(b, id->spec.name);
        gw_strbuf_printf(b, "</b><br><code class=\"meta\">");
        esc(b, id->spec.where);
        gw_strbuf_printf(b, "</code></td><td>");
        if (id->pending) {
            gw_strbuf_printf(b, "<span class=\"warn\">no certificate yet: ACME order pending</span>");
        } else {
            esc(b, id->subject);
            gw_strbuf_printf(b, "<br><span class=\"meta\">issuer</span> ");
            esc(b, id->issuer);
            gw_strbuf_printf(b, "<br><span class=\"meta\">serial</span> <code>");
            esc(b, id->serial);
            gw_strbuf_printf(b, "</code>");
        }
        gw_strbuf_printf(b, "</td><td>");
        if (!id->pending) {
            const char *st = gw_identity_status(id, now, WARN_DAYS);
            double days = (double)(id->not_after - now) / 86400.0;
            utc(id->not_after, na, sizeof(na));
            gw_strbuf_printf(b, "%s<br><span class=\"days %s\">%.1f days left</span>", na,
                             strcmp(st, "ok") == 0         ? "ok"
                             : strcmp(st, "expiring") == 0 ? "warn"
                                                           : "bad",
                             days);
        }
        gw_strbuf_printf(b, "</td><td>");
        esc(b, id->pending ? "-" : id->key_type);
        if (id->p11 != NULL) {
            gw_strbuf_printf(b, "<br><span class=\"meta\">token</span> ");
            esc(b, gw_p11_info(id->p11)->token);
        }
        gw_strbuf_printf(b, "</td><td>");
        if (id->spec.crl != NULL) {
            utc(id->crl_next_update, nu, sizeof(nu));
            gw_strbuf_printf(b, "CRL next update %s<br>", nu);
        }
        if (id->spec.ocsp != GW_OCSP_OFF) {
            gw_strbuf_printf(b, "OCSP %s:", id->spec.ocsp == GW_OCSP_REQUIRE ? "require" : "if-stapled");
            for (int r = 1; r < GW_OCSP_RESULT_COUNT; r++) {
                unsigned long long n = gw_metrics_ocsp_count(id->metrics_slot, r);
                if (n > 0) {
                    gw_strbuf_printf(b, " %s %llu", gw_ocsp_result_name((gw_ocsp_result)r), n);
                }
            }
            gw_strbuf_printf(b, "<br>");
        }
        gw_acme_view v;
        gw_acme_view_of(cfg, id, &v);
        if (id->spec.crl == NULL && id->spec.ocsp == GW_OCSP_OFF && v.acme == NULL) {
            gw_strbuf_printf(b, "<span class=\"meta\">chain and name</span>");
        }
        if (v.acme != NULL) {
            utc(v.next, nu, sizeof(nu));
            gw_strbuf_printf(b, "ACME: next renewal %s", v.next > now ? nu : "now");
            if (v.failures > 0) {
                gw_strbuf_printf(b, "<br><span class=\"bad\">failed %d time%s: ", v.failures,
                                 v.failures == 1 ? "" : "s");
                esc(b, v.error);
                gw_strbuf_printf(b, "</span>");
            } else if (v.last_attempt != 0) {
                gw_strbuf_printf(b, "<br>last: %s", v.result);
            }
        }
        gw_strbuf_printf(b, "</td><td>");
        rules_of(b, cfg, id);
        gw_strbuf_printf(b, "</td><td>");
        chart(b, id);
        gw_strbuf_printf(b, "</td></tr>");
    }
    gw_strbuf_printf(b, "</table></div>");
}

static void rules_html(gw_strbuf *b, const pol_config *cfg) {
    gw_strbuf_printf(b,
                     "<h2>Rules</h2><div class=\"scroll\"><table><tr><th>rule</th><th>match</th><th>action</th>"
                     "<th>now</th><th>total</th><th>failures</th><th>last failure</th></tr>");
    for (size_t i = 0; i < cfg->num_rules; i++) {
        const pol_rule *r = &cfg->rules[i];
        pol_rule_stats *s = r->stats;
        gw_strbuf_printf(b, "<tr class=\"rule\"><td><code>");
        esc(b, r->where);
        gw_strbuf_printf(b, "</code></td><td><code>");
        esc(b, r->match_text);
        gw_strbuf_printf(b, "</code></td><td>%s", pol_action_name(r->action));
        if (r->action == POL_ACTION_MTLS) {
            gw_strbuf_printf(b, " as ");
            esc(b, r->identity->spec.name);
        }
        if (r->via != NULL) {
            gw_strbuf_printf(b, " via ");
            esc(b, r->via->text);
        }
        long active = s ? atomic_load(&s->active) : 0;
        unsigned long long total = s ? atomic_load(&s->total) : 0;
        gw_strbuf_printf(b, "</td><td>%ld</td><td>%llu</td><td>", active, total);
        for (int k = 0; s != NULL && k < GW_RESULT_COUNT; k++) {
            unsigned long long n = atomic_load(&s->failures[k]);
            if (n > 0) {
                gw_strbuf_printf(b, "%s %llu<br>", gw_result_name((gw_result)k), n);
            }
        }
        gw_strbuf_printf(b, "</td><td>");
        if (s != NULL) {
            pthread_mutex_lock(&s->lock);
            if (s->last_time != 0) {
                char at[40];
                utc(s->last_time, at, sizeof(at));
                gw_strbuf_printf(b, "%s <b>", at);
                esc(b, s->last_result);
                gw_strbuf_printf(b, "</b><br>");
                esc(b, s->last_reason);
            }
            pthread_mutex_unlock(&s->lock);
        }
        gw_strbuf_printf(b, "</td></tr>");
    }
    gw_strbuf_printf(b, "</table></div>");
}

static void live_html(gw_strbuf *b, const pol_config *cfg) {
    gw_strbuf_printf(b, "<h2>Live tunnels</h2><div class=\"scroll\"><table><tr><th>listener</th>");
    for (size_t p = 0; p < gw_board_num_protos; p++) {
        gw_strbuf_printf(b, "<th>%s</th>", gw_board_protos[p]);
    }
    gw_strbuf_printf(b, "</tr>");
    for (size_t l = 0; l < cfg->num_listeners && l < GW_BOARD_LISTENERS; l++) {
        gw_strbuf_printf(b, "<tr><td>");
        esc(b, cfg->listeners[l].name);
        gw_strbuf_printf(b, " <code class=\"meta\">");
        esc(b, cfg->listeners[l].address_text);
        gw_strbuf_printf(b, "</code></td>");
        for (size_t p = 0; p < gw_board_num_protos; p++) {
            gw_strbuf_printf(b, "<td>%ld</td>", gw_board_live_count(l, p));
        }
        gw_strbuf_printf(b, "</tr>");
    }
    gw_strbuf_printf(b, "</table></div>");
}

static void failures_html(gw_strbuf *b) {
    static gw_board_failure f[GW_BOARD_FAILURES];  // (the admin thread's alone)
    size_t n = gw_board_failures(f, GW_BOARD_FAILURES);
    gw_strbuf_printf(b, "<h2>Last failures</h2>");
    if (n == 0) {
        gw_strbuf_printf(b, "<p class=\"meta\">none since the start</p>");
        return;
    }
    gw_strbuf_printf(b,
                     "<div class=\"scroll\"><table><tr><th>when</th><th>result</th><th>client</th>"
                     "<th>destination</th><th>rule</th><th>reason</th></tr>");
    for (size_t i = 0; i < n; i++) {
        char at[40];
        utc(f[i].when, at, sizeof(at));
        gw_strbuf_printf(b, "<tr class=\"failure\"><td>%s</td><td class=\"bad\">", at);
        esc(b, f[i].result);
        gw_strbuf_printf(b, "</td><td>");
        esc(b, f[i].client);
        if (f[i].caller >= 0) {
            gw_strbuf_printf(b, " uid %lld", f[i].caller);
        }
        gw_strbuf_printf(b, "</td><td><code>");
        esc(b, f[i].dest);
        gw_strbuf_printf(b, "</code></td><td><code>");
        esc(b, f[i].rule);
        gw_strbuf_printf(b, "</code></td><td class=\"reason\">");
        esc(b, f[i].reason);
        gw_strbuf_printf(b, "</td></tr>");
    }
    gw_strbuf_printf(b, "</table></div>");
}

char *gw_status_html(const pol_config *cfg, long active_tunnels, int refresh_s, char *csp, size_t csp_cap) {
    uint8_t h[SHA256_DIGEST_LENGTH];
    uint8_t b64[64];
    SHA256((const uint8_t *)k_style, strlen(k_style), h);
    EVP_EncodeBlock(b64, h, sizeof(h));
    // Nothing but this page's own style: no script, no image, no frame, no form.
    snprintf(csp, csp_cap,
             "default-src 'none'; style-src 'sha256-%s'; img-src 'none'; base-uri 'none'; form-action 'none'; "
             "frame-ancestors 'none'",
             (const char *)b64);
    time_t now = time(NULL), started, reload;
    int reload_ok;
    gw_board_times(&started, &reload, &reload_ok);
    char up[40], rl[40];
    duration(now - started, up, sizeof(up));
    utc(reload, rl, sizeof(rl));
    gw_strbuf b = {0};
    gw_strbuf_printf(&b,
                     "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
                     "content=\"width=device-width, initial-scale=1\">");
    if (refresh_s > 0) {
        gw_strbuf_printf(&b, "<meta http-equiv=\"refresh\" content=\"%d\">", refresh_s);
    }
    gw_strbuf_printf(&b, "<title>mtlsgw status</title><style>%s</style></head><body>", k_style);
    gw_strbuf_printf(&b, "<h1>mtlsgw %s</h1><p class=\"meta\" id=\"summary\">config generation %llu, ", MTLSGW_VERSION,
                     (unsigned long long)cfg->generation);
    esc(&b, cfg->path);
    gw_strbuf_printf(&b, " &middot; last reload %s%s &middot; up %s &middot; %ld tunnels open &middot; %s</p>",
                     reload ? rl : "none", reload ? (reload_ok ? " (ok)" : " (failed: the old config runs)") : "", up,
                     active_tunnels, refresh_s > 0 ? "refreshes itself" : "add ?refresh=10 to refresh");
    identities_html(&b, cfg, now);
    rules_html(&b, cfg);
    live_html(&b, cfg);
    failures_html(&b);
    gw_strbuf_printf(&b,
                     "<p class=\"meta\">/status.json has the same data; /metrics the counters.</p></body></html>\n");
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

char *gw_status_json(const pol_config *cfg, long active_tunnels) {
    time_t now = time(NULL), started, reload;
    int reload_ok;
    gw_board_times(&started, &reload, &reload_ok);
    gw_strbuf b = {0};
    gw_strbuf_printf(&b, "{\"version\": \"%s\", \"generation\": %llu, \"config\": ", MTLSGW_VERSION,
                     (unsigned long long)cfg->generation);
    gw_strbuf_json(&b, cfg->path);
    gw_strbuf_printf(&b,
                     ", \"started_unix\": %lld, \"uptime_s\": %lld, \"last_reload_unix\": %lld, \"last_reload_ok\": "
                     "%s, \"tunnels_active\": %ld,\n\"identities\": ",
                     (long long)started, (long long)(now - started), (long long)reload,
                     reload ? (reload_ok ? "true" : "false") : "null", active_tunnels);
    gw_identities_json(&b, cfg, now, WARN_DAYS);
    gw_strbuf_printf(&b, ",\n\"handshakes\": {");
    for (size_t i = 0; i < cfg->num_identities; i++) {
        unsigned long long full = 0, resumed = 0, bk[GW_METRICS_HS_BUCKETS];
        gw_metrics_identity_handshakes(cfg->identities[i]->metrics_slot, &full, &resumed, bk, NULL);
        gw_strbuf_printf(&b, "%s", i ? ", " : "");
        gw_strbuf_json(&b, cfg->identities[i]->spec.name);
        gw_strbuf_printf(&b, ": {\"full\": %llu, \"resumed\": %llu}", full, resumed);
    }
    gw_strbuf_printf(&b, "},\n\"rules\": [");
    for (size_t i = 0; i < cfg->num_rules; i++) {
        const pol_rule *r = &cfg->rules[i];
        pol_rule_stats *s = r->stats;
        gw_strbuf_printf(&b, "%s\n  {\"where\": ", i ? "," : "");
        gw_strbuf_json(&b, r->where);
        gw_strbuf_printf(&b, ", \"match\": ");
        gw_strbuf_json(&b, r->match_text);
        gw_strbuf_printf(&b, ", \"action\": \"%s\", \"identity\": ", pol_action_name(r->action));
        gw_strbuf_json(&b, r->action == POL_ACTION_MTLS ? r->identity->spec.name : "");
        gw_strbuf_printf(&b, ", \"via\": ");
        gw_strbuf_json(&b, r->via ? r->via->text : "");
        gw_strbuf_printf(&b, ", \"active\": %ld, \"total\": %llu, \"failures\": {", s ? atomic_load(&s->active) : 0,
                         s ? (unsigned long long)atomic_load(&s->total) : 0ULL);
        int first = 1;
        for (int k = 0; s != NULL && k < GW_RESULT_COUNT; k++) {
            unsigned long long n = atomic_load(&s->failures[k]);
            if (n > 0) {
                gw_strbuf_printf(&b, "%s\"%s\": %llu", first ? "" : ", ", gw_result_name((gw_result)k), n);
                first = 0;
            }
        }
        gw_strbuf_printf(&b, "}, \"last_failure\": ");
        if (s != NULL) {
            pthread_mutex_lock(&s->lock);
            if (s->last_time != 0) {
                gw_strbuf_printf(&b, "{\"unix\": %lld, \"result\": ", (long long)s->last_time);
                gw_strbuf_json(&b, s->last_result);
                gw_strbuf_printf(&b, ", \"reason\": ");
                gw_strbuf_json(&b, s->last_reason);
                gw_strbuf_printf(&b, "}");
            } else {
                gw_strbuf_printf(&b, "null");
            }
            pthread_mutex_unlock(&s->lock);
        } else {
            gw_strbuf_printf(&b, "null");
        }
        gw_strbuf_printf(&b, "}");
    }
    gw_strbuf_printf(&b, "\n],\n\"live\": [");
    for (size_t l = 0; l < cfg->num_listeners && l < GW_BOARD_LISTENERS; l++) {
        gw_strbuf_printf(&b, "%s{\"listener\": ", l ? ", " : "");
        gw_strbuf_json(&b, cfg->listeners[l].name);
        for (size_t p = 0; p < gw_board_num_protos; p++) {
            gw_strbuf_printf(&b, ", \"%s\": %ld", gw_board_protos[p], gw_board_live_count(l, p));
        }
        gw_strbuf_printf(&b, "}");
    }
    static gw_board_failure f[GW_BOARD_FAILURES];  // (the admin thread's alone)
    size_t n = gw_board_failures(f, GW_BOARD_FAILURES);
    gw_strbuf_printf(&b, "],\n\"failures\": [");
    for (size_t i = 0; i < n; i++) {
        gw_strbuf_printf(&b, "%s\n  {\"unix\": %lld, \"result\": ", i ? "," : "", (long long)f[i].when);
        gw_strbuf_json(&b, f[i].result);
        gw_strbuf_printf(&b, ", \"client\": ");
        gw_strbuf_json(&b, f[i].client);
        gw_strbuf_printf(&b, ", \"caller\": %lld, \"dest\": ", f[i].caller);
        gw_strbuf_json(&b, f[i].dest);
        gw_strbuf_printf(&b, ", \"rule\": ");
        gw_strbuf_json(&b, f[i].rule);
        gw_strbuf_printf(&b, ", \"reason\": ");
        gw_strbuf_json(&b, f[i].reason);
        gw_strbuf_printf(&b, "}");
    }
    gw_strbuf_printf(&b, "\n]}\n");
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
