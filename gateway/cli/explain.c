// explain: `mtlsgw check` (load everything `run` loads) and `mtlsgw explain HOST:PORT
// [--connect]` (which rule decides, and what a connection through it shows).
#include "gateway/cli/commands.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/bn.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ares.h>
#include <grp.h>
#include <libconfig.h>
#include <openssl/crypto.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include "gateway/base/loop.h"
#include "gateway/base/netutil.h"
#include "gateway/report.h"
#include "gateway/tls/identity.h"
#include "gateway/tls/ocsp.h"
#include "gateway/upstream/parent.h"
#include "gateway/upstream/sesscache.h"
#include "gateway/upstream/upstream.h"
#include "policy/users.h"
#include "resolver/resolver.h"

#include "gateway/admin.h"
#include "gateway/base/hash.h"
#include "gateway/base/log.h"
#include "gateway/proto/http.h"
#include "gateway/proto/socks.h"
#include "gateway/service/metrics.h"
#include "gateway/tunnel/tunnel.h"
#include "gateway/worker.h"
#include "policy/config.h"

static const char check_usage[] =
    "usage: mtlsgw check -c FILE\n\n"
    "Loads FILE with the code `run` uses, identities included. Prints \"configuration OK\" or\n"
    "every problem as file:line: setting: what was expected, and exits 1.\n";

static const char explain_usage[] =
    "usage: mtlsgw explain -c FILE HOST[:PORT] [--caller USER|UID] [--listener NAME] [--connect]\n\n"
    "Shows the rule (file:line) deciding HOST:PORT (default port 443), its action, identity,\n"
    "upstream and server name. Rules with `caller` match only the callers they name: with\n"
    "--caller the decision is the one for a client run by that local user; without it, for a\n"
    "client with no known caller (a remote one). Rules with `listener` match only clients of\n"
    "those listeners: --listener NAME asks for a client of that one; without it, only rules\n"
    "for every listener count. With --connect it also resolves the upstream,\n"
    "connects and handshakes twice: the server chain, TLS version and cipher, whether the\n"
    "server accepted our certificate, and whether the second handshake resumed. Exit 1 if\n"
    "that fails. For a rule with an identity list it prints the CA names the server sent\n"
    "and which identity was presented, and why.\n";

int gw_cmd_check(int argc, char **argv) {
    gw_cmd_opts o;
    gw_cmd_parse(argc, argv, GW_OPT_CONFIG, check_usage, &o);
    if (o.num_args > 0) {
        fprintf(stderr, "mtlsgw check: unexpected argument \"%s\"\n\n%s", o.args[0], check_usage);
        return 2;
    }
    const char *path = o.config;
    pol_config *cfg = gw_load_or_report(path);
    if (cfg == NULL) {
        return 1;
    }
    printf("configuration OK: %zu listeners, %zu identities, %zu rules\n", cfg->num_listeners, cfg->num_identities,
           cfg->num_rules);
    pol_config_unref(cfg);
    return 0;
}

int gw_cmd_explain(int argc, char **argv) {
    gw_cmd_opts o;
    gw_cmd_parse(argc, argv, GW_OPT_CONFIG | GW_OPT_CONNECT | GW_OPT_CALLER | GW_OPT_LISTENER, explain_usage, &o);
    if (o.num_args != 1) {
        fprintf(stderr, "mtlsgw explain: one HOST[:PORT] is required\n\n%s", explain_usage);
        return 2;
    }
    const char *path = o.config;
    const char *target = o.args[0];
    char host[256];
    uint16_t port;
    if (!gw_http_parse_authority(target, strlen(target), 443, host, &port)) {
        fprintf(stderr, "mtlsgw explain: \"%s\" is not HOST, HOST:PORT or [IPv6]:PORT\n", target);
        return 2;
    }
    uint32_t caller = GW_CALLER_NONE;
    if (o.caller != NULL && !pol_caller_parse(o.caller, &caller)) {
        fprintf(stderr, "mtlsgw explain: --caller \"%s\" is neither a user on this system nor a uid\n", o.caller);
        return 2;
    }
    pol_config *cfg = gw_load_or_report(path);
    if (cfg == NULL) {
        return 1;
    }
    pol_dest d;
    if (!pol_dest_init(&d, host, port)) {
        fprintf(stderr, "mtlsgw explain: \"%s\" %s\n", host, pol_dest_problem(host));
        pol_config_unref(cfg);
        return 2;
    }
    int listener = -1;
    for (size_t i = 0; o.listener != NULL && i < cfg->num_listeners; i++) {
        if (strcmp(cfg->listeners[i].name, o.listener) == 0) {
            listener = (int)i;
        }
    }
    if (o.listener != NULL && listener < 0) {
        fprintf(stderr, "mtlsgw explain: --listener \"%s\": the config has no listener of that name\n", o.listener);
        pol_config_unref(cfg);
        return 2;
    }
    const pol_rule *r = pol_config_lookup(cfg, &d, caller, listener);
    printf("destination  %s:%u\n", d.host, d.port);
    if (o.listener != NULL) {
        printf("listener     %s\n", o.listener);
    }
    if (caller != GW_CALLER_NONE) {
        const struct passwd *pw = getpwuid(caller);
        printf("caller       uid %u%s%s%s\n", caller, pw ? " (" : "", pw ? pw->pw_name : "", pw ? ")" : "");
    } else {
        printf("caller       none (as for a remote client; --caller USER|UID to ask for a local one)\n");
    }
    if (r == NULL) {
        printf("rule         none (default deny)\naction       deny\n");
        pol_config_unref(cfg);
        return 0;
    }
    printf("rule         %s  match \"%s\"%s%s%s%s\n", r->where, r->match_text, r->callers ? "  caller " : "",
           r->callers ? r->callers->text : "", r->listeners_text ? "  listener " : "",
           r->listeners_text ? r->listeners_text : "");
    printf("action       %s\n", pol_action_name(r->action));
    if (r->action != POL_ACTION_DENY) {
        const char *h = r->upstream_host ? r->upstream_host : d.host;
        uint16_t p = r->upstream_port ? r->upstream_port : d.port;
        printf("upstream     %s:%u\n", h, p);
        if (r->via != NULL) {
            printf(
                "via          %s%s%s: the parent is connected to and asked for %s:%u (it resolves the name); "
                "the mTLS runs inside its tunnel\n",
                r->via->text, r->via->user ? ", as " : "", r->via->user ? r->via->user : "", h, p);
            if (r->via->tls != NULL) {
                printf("via tls      the parent's certificate verified for \"%s\" with %s \"%s\"%s\n", r->via->host,
                       r->via->tls_owned ? "via_trust" : "the trust of identity",
                       r->via->tls_owned ? r->via->tls->spec.trust : r->via->tls->spec.name,
                       r->via->tls_owned ? "; no certificate of ours" : ", whose certificate it may ask for");
            }
        }
        if (r->action == POL_ACTION_MTLS) {
            const char *sni = r->server_name ? r->server_name : h;
            printf("identity     %s  (%s)\n", r->identity->spec.name, r->identity->subject);
            if (r->identity->p11 != NULL) {
                char where[300];
                gw_p11_uri_describe(r->identity->spec.key, where, sizeof(where));
                printf("key          in PKCS#11 token \"%s\" (%s): each full handshake asks it to sign\n",
                       gw_p11_info(r->identity->p11)->token, where);
            }
            for (size_t i = 1; i < r->num_identities; i++) {
                printf("             or %s  (%s), when the server names its CA\n", r->identities[i]->spec.name,
                       r->identities[i]->subject);
            }
            if (r->server_uri != NULL) {
                printf("server uri   %s  (a URI SAN the server certificate must carry)\n", r->server_uri);
            }
            printf("server name  %s%s\n", sni, gw_host_is_ip(sni) ? "  (IP: no SNI, checked against IP SANs)" : "");
        }
    }
    int rc = 0;
    if (o.connect && r->action != POL_ACTION_DENY) {
        rc = gw_explain_connect(cfg, r, d.host, d.port);
    }
    pol_config_unref(cfg);
    return rc;
}

// ---- explain --connect ----

typedef struct {
    gw_loop *loop;
    int done;
    res_status status;
    res_addr addrs[RES_MAX_ADDRS];
    size_t n;
} lookup;

static void on_lookup(void *arg, res_status status, const res_addr *addrs, size_t n) {
    lookup *l = arg;
    l->done = 1;
    l->status = status;
    l->n = n < RES_MAX_ADDRS ? n : RES_MAX_ADDRS;
    memcpy(l->addrs, addrs, l->n * sizeof(*addrs));
    gw_loop_stop(l->loop);
}

static void on_lookup_timeout(gw_loop *loop, gw_timer *t) {
    gw_loop_stop(loop);
}

static double elapsed_ms(uint64_t since_us) {
    return (double)(gw_monotonic_us() - since_us) / 1e3;
}

// wait_fd waits until |fd| is readable (|events| POLLIN) or writable; 0 on timeout.
static int wait_fd(int fd, short events, int timeout_ms) {
    struct pollfd p = {fd, events, 0};
    int r;
    do {
        r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    return r > 0;
}

// ask_parent asks the rule's parent proxy on |u| for |target| with the tunnels' own
// conversation (gateway/upstream/parent.c), blocking: 1 when it said yes; else 0 with
// words in |why|.
static int ask_parent(gw_upstream *u, const pol_via *v, const char *target, int ms, char *why, size_t cap) {
    gw_parent_talk pt;
    gw_parent_talk_init(&pt);
    gw_err err = GW_ERR_NONE;
    uint64_t until = gw_monotonic_ms() + (uint64_t)ms;
    gw_step st;
    while ((st = gw_parent_step(&pt, u, v, target, &err, why, cap)) == GW_STEP_WANT_READ || st == GW_STEP_WANT_WRITE) {
        uint64_t now = gw_monotonic_ms();
        if (now >= until || !wait_fd(u->fd, st == GW_STEP_WANT_READ ? POLLIN : POLLOUT, (int)(until - now))) {
            snprintf(why, cap, "parent proxy %s did not answer CONNECT %s within connect_timeout_ms (%d ms)", v->text,
                     target, ms);
            return 0;
        }
    }
    if (st != GW_STEP_DONE) {
        return 0;
    }
    char tls[600];
    gw_parent_tls_text(u, v, tls, sizeof(tls));
    if (tls[0] != '\0') {
        printf("via tls      %s\n", tls);
    }
    snprintf(why, cap, "parent proxy %s answered CONNECT %s: %s", v->text, target, pt.said);
    return 1;
}

// handshake runs one connection to |sa| to its end: connect, handshake, the wait for the
// server's verdict on our certificate. Returns 1 if the server accepted us. With a parent
// proxy, |sa| is the parent's, asked for |target| first.
static int handshake(const pol_config *cfg, const pol_rule *r, const struct sockaddr *sa, socklen_t sl, const char *sni,
                     const char *key, const char *target, int print_details) {
    gw_upstream u;
    gw_upstream_init(&u);
    char reason[700];
    gw_err err = gw_upstream_connect(&u, sa, sl, reason, sizeof(reason));
    if (err == GW_ERR_NONE && !wait_fd(u.fd, POLLOUT, cfg->limits.connect_timeout_ms)) {
        snprintf(reason, sizeof(reason), "connect timed out after %d ms", cfg->limits.connect_timeout_ms);
        err = GW_ERR_CONNECT_TIMEOUT;
    }
    if (err == GW_ERR_NONE) {
        err = gw_upstream_connect_result(&u, reason, sizeof(reason));
    }
    if (err != GW_ERR_NONE) {
        printf("connect      FAILED: %s%s%s\n", r->via ? "parent proxy " : "", r->via ? r->via->text : "", reason);
        gw_upstream_close(&u);
        return 0;
    }
    if (r->via != NULL) {
        int ok = ask_parent(&u, r->via, target, cfg->limits.connect_timeout_ms, reason, sizeof(reason));
        printf("via          %s%s\n", ok ? "ok: " : "FAILED: ", reason);
        if (!ok) {
            gw_upstream_close(&u);
            return 0;
        }
    }
    if (r->action != POL_ACTION_MTLS) {
        printf("connect      ok (plain TCP: action %s)\n", pol_action_name(r->action));
        gw_upstream_close(&u);
        return 1;
    }
    uint64_t t0 = gw_monotonic_us(), t1;
    u.describe_cas = 1;
    if (!gw_upstream_tls_begin(&u, (const gw_identity *const *)r->identities, r->num_identities, sni, r->server_uri,
                               key, NULL, 0)) {
        printf("tls          FAILED: cannot create a TLS connection\n");
        gw_upstream_close(&u);
        return 0;
    }
    gw_step st;
    while ((st = gw_upstream_tls_step(&u, &err, reason, sizeof(reason))) == GW_STEP_WANT_READ ||
           st == GW_STEP_WANT_WRITE) {
        if (!wait_fd(u.fd, st == GW_STEP_WANT_READ ? POLLIN : POLLOUT, cfg->limits.handshake_timeout_ms)) {
            st = GW_STEP_FAILED;
            snprintf(reason, sizeof(reason), "TLS handshake timed out after %d ms", cfg->limits.handshake_timeout_ms);
            break;
        }
    }
    double ms = elapsed_ms(t0);
    t1 = gw_monotonic_us();
    if (st == GW_STEP_FAILED) {
        printf("tls          FAILED after %.1f ms: %s\n", ms, reason);
        if (u.verify != NULL && u.verify->ocsp_info[0] != '\0') {
            printf("ocsp         OCSP staple: %s\n", u.verify->ocsp_info);
        }
        gw_upstream_close(&u);
        return 0;
    }
    SSL *ssl = u.ssl;
    int resumed = SSL_session_reused(ssl);
    if (print_details) {
        printf("tls          %s  %s  (%s handshake, %.1f ms)\n", SSL_get_version(ssl),
               SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)), resumed ? "resumed" : "full", ms);
        STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
        printf("server chain (verified: chain to the trust of \"%s\", %s \"%s\"%s%s)\n", r->identity->spec.name,
               r->server_uri ? "URI SAN" : "name", r->server_uri ? r->server_uri : sni,
               r->identity->spec.crl ? ", CRL" : "", r->identity->spec.num_pins ? ", pins" : "");
        for (size_t i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
            X509 *c = sk_X509_value(chain, i);
            char subj[256], iss[256], na[40];
            X509_NAME_oneline(X509_get_subject_name(c), subj, sizeof(subj));
            X509_NAME_oneline(X509_get_issuer_name(c), iss, sizeof(iss));
            int days = 0, secs = 0;
            ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(c));
            gw_format_utc(time(NULL) + (time_t)days * 86400 + secs, na, sizeof(na));
            printf("  %zu  %s\n     issuer %s, not after %s\n", i, subj, iss, na);
        }
    } else {
        printf("tls          %s  (%s handshake, %.1f ms)\n", SSL_get_version(ssl), resumed ? "resumed" : "full", ms);
    }
    int accepted = 1;
    const char *why = "";
    if (!u.cert_requested && !resumed) {
        why = "the server did not ask for a client certificate";
    } else if (resumed) {
        why = "resumed: the server accepted this identity's session";
    } else if (SSL_version(ssl) < TLS1_3_VERSION) {
        why = "TLS 1.2: the server accepted it during the handshake";
    } else {
        // TLS 1.3: the verdict comes after the handshake, as in the gateway's confirm window.
        int limit = cfg->limits.confirm_ms > 0 ? cfg->limits.confirm_ms : 1000, graced = 0;
        why = "no answer within confirm_ms: nothing says it was rejected";
        for (;;) {
            st = gw_upstream_confirm_step(&u, &err, reason, sizeof(reason));
            if (st == GW_STEP_DONE) {
                why = "the server sent data";
                break;
            }
            if (st == GW_STEP_FAILED) {
                accepted = 0;
                why = reason;
                break;
            }
            int elapsed = (int)elapsed_ms(t1);
            if (u.ticket_seen && !graced) {
                graced = 1;
                int grace = elapsed + (cfg->limits.confirm_ms > 0 ? cfg->limits.confirm_ms / 4 : 250);
                limit = grace < limit ? grace : limit;
                why =
                    "the server sent a session ticket and did not close (an HTTP server may still answer 400 to "
                    "requests)";
            }
            if (elapsed >= limit) {
                break;
            }
            wait_fd(u.fd, POLLIN, limit - elapsed);
        }
    }
    if (u.ca_note != NULL) {
        printf("server CAs   %s\n", u.ca_note);  // what the CertificateRequest named, and the choice
    }
    if (u.ocsp_note != NULL) {
        printf("ocsp         OCSP staple: %s\n", u.ocsp_note);
    } else if (gw_upstream_ocsp_text(&u) != NULL) {
        printf("ocsp         %s (identity ocsp = \"%s\")\n",
               strcmp(gw_upstream_ocsp_text(&u), "none") == 0 ? "the server sent no OCSP staple"
                                                              : gw_upstream_ocsp_text(&u),
               r->identity->spec.ocsp == GW_OCSP_REQUIRE ? "require" : "if-stapled");
    }
    printf("client cert  %s%s%s: %s\n", accepted ? "accepted" : "REJECTED", u.identity ? ", identity " : "",
           u.identity ? u.identity->spec.name : "", why);
    if (accepted) {
        gw_upstream_confirm(&u);  // its sessions go to the cache, for the second handshake
    }
    gw_upstream_close(&u);
    return accepted;
}

int gw_explain_connect(const pol_config *cfg, const pol_rule *r, const char *host, uint16_t port) {
    const char *connect_host = r->upstream_host ? r->upstream_host : host;
    uint16_t connect_port = r->upstream_port ? r->upstream_port : port;
    const char *sni = r->server_name ? r->server_name : connect_host;
    char target[300];
    snprintf(target, sizeof(target), strchr(connect_host, ':') ? "[%s]:%u" : "%s:%u", connect_host, connect_port);
    if (r->via != NULL) {
        connect_host = r->via->host;  // the parent is connected to; it is asked for |target|
        connect_port = r->via->port;
    }
    char err[300];
    gw_loop *loop = gw_loop_new();
    res_resolver *res = loop ? res_resolver_new(loop, cfg, err, sizeof(err)) : NULL;
    if (res == NULL) {
        printf("resolve      FAILED: %s\n", loop ? err : strerror(errno));
        gw_loop_free(loop);
        return 1;
    }
    lookup l = {.loop = loop};
    gw_timer timer;
    gw_timer_init(&timer, on_lookup_timeout, NULL);
    res_query *q = res_resolve(res, connect_host, on_lookup, &l);
    if (!l.done) {
        gw_timer_start(loop, &timer, (uint64_t)cfg->resolver.timeout_ms * (uint64_t)cfg->resolver.tries * 2 + 1000);
        gw_loop_run(loop);
        gw_timer_stop(loop, &timer);
    }
    if (!l.done) {
        res_query_detach(q);
    }
    res_resolver_free(res);
    gw_loop_free(loop);
    if (!l.done || l.status != RES_OK) {
        printf("resolve      FAILED: %s: %s\n", connect_host, l.done ? res_status_text(l.status) : "timed out");
        return 1;
    }
    char list[600] = "";
    size_t n = 0;
    struct sockaddr_storage first;
    socklen_t first_len = 0;
    for (size_t i = 0; i < l.n; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = gw_sockaddr_from(&ss, l.addrs[i].family, l.addrs[i].addr, connect_port);
        char a[120];
        gw_format_addr((struct sockaddr *)&ss, a, sizeof(a));
        // The gateway never connects to an address in deny_addresses, nor to itself:
        // neither does explain.
        const char *own = pol_config_own_address(cfg, l.addrs[i].family, l.addrs[i].addr, connect_port);
        const pol_cidr *denied = r->via ? NULL : pol_config_denied_address(cfg, r, l.addrs[i].family, l.addrs[i].addr);
        if (own != NULL) {
            size_t al = strlen(a);
            snprintf(a + al, sizeof(a) - al, " (the gateway's own listener %s)", own);
        } else if (denied != NULL) {
            size_t al = strlen(a);
            snprintf(a + al, sizeof(a) - al, " (in deny_addresses: %s)", denied->text);
        } else if (first_len == 0) {
            first = ss;
            first_len = sl;
        }
        if (n + strlen(a) + 3 < sizeof(list)) {
            n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", i ? ", " : "", a);
        }
    }
    printf("resolve      %s -> %s\n", connect_host, list);
    if (first_len == 0) {
        printf("result       FAILED: every address is in deny_addresses or the gateway's own\n");
        return 1;
    }
    char key[600];
    snprintf(key, sizeof(key), "explain|%s|%u|%s", connect_host, connect_port, sni);
    printf("-- first connection\n");
    int ok = handshake(cfg, r, (struct sockaddr *)&first, first_len, sni, key, target, 1);
    if (ok && r->action == POL_ACTION_MTLS) {
        printf("-- second connection (session resumption)\n");
        ok = handshake(cfg, r, (struct sockaddr *)&first, first_len, sni, key, target, 0);
    }
    gw_sesscache_clear();
    printf("result       %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
