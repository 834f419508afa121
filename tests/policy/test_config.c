// config loading: every problem as file:line: setting: what was expected, all of them
// reported, defaults when settings are absent.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "policy/config.h"

static char path[64];

static pol_config *load(const char *text, pol_errors *errs) {
    snprintf(path, sizeof(path), "/tmp/mtlsgw-unit-%d.conf", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    pol_errors_init(errs);
    pol_config *cfg = pol_config_load(path, errs);
    unlink(path);
    return cfg;
}

static int has(const pol_errors *errs, const char *line_suffix) {
    char want[512];
    snprintf(want, sizeof(want), "%s:%s", path, line_suffix);
    for (size_t i = 0; i < errs->len; i++) {
        if (strcmp(errs->lines[i], want) == 0) {
            return 1;
        }
    }
    for (size_t i = 0; i < errs->len; i++) {
        fprintf(stderr, "  got: %s\n", errs->lines[i]);
    }
    fprintf(stderr, "  want: %s\n", want);
    return 0;
}

static void minimal_and_defaults(void **state) {
    pol_errors errs;
    pol_config *cfg = load(
        "listen = ( { name = \"p\"; address = \"127.0.0.1:1080\"; } );\n"
        "rules = ( { match = \"*.example.org\"; action = \"direct\"; } );\n",
        &errs);
    assert_non_null(cfg);
    assert_int_equal(errs.len, 0);
    assert_int_equal(cfg->listeners[0].protocols, POL_PROTO_SOCKS5 | POL_PROTO_SOCKS4 | POL_PROTO_HTTP);
    assert_int_equal(cfg->limits.max_connections, 20000);
    assert_int_equal(cfg->limits.confirm_ms, 200);
    assert_int_equal(cfg->resolver.timeout_ms, 2000);
    assert_int_equal(cfg->num_allow, 2);  // loopback only by default
    pol_dest d;
    pol_dest_init(&d, "a.example.org", 80);
    assert_non_null(pol_config_lookup(cfg, &d, GW_CALLER_NONE, -1));
    pol_dest_init(&d, "example.com", 80);
    assert_null(pol_config_lookup(cfg, &d, GW_CALLER_NONE, -1));  // default deny
    pol_config_unref(cfg);
    pol_errors_free(&errs);
}

static void every_error_with_line(void **state) {
    pol_errors errs;
    pol_config *cfg = load(
        "workers = \"two\";\n"
        "listen = ( { name = \"p\"; address = \"localhost:1080\"; protocols = [\"socks6\"]; } );\n"
        "limits = { max_connections = 0; header_mx = 1; };\n"
        "rules = (\n"
        "  { match = \"a.test\"; action = \"allow\"; },\n"
        "  { match = \"b.test\"; identity = \"nobody\"; },\n"
        "  { match = \"c.test\"; action = \"direct\"; upstream = \"c.test\"; }\n"
        ");\n"
        "resolver = { servers = [ \"dns.example\" ]; };\n"
        "allow = [ \"everyone\" ];\n"
        "log = { level = \"loud\"; };\n",
        &errs);
    assert_null(cfg);
    assert_true(has(&errs, "1: workers: expected an integer from 0 to 256, found a string"));
    assert_true(has(
        &errs,
        "2: listen[0].address: expected \"IPv4:port\", \"[IPv6]:port\" or \"unix:PATH\", found \"localhost:1080\""));
    assert_true(has(&errs, "2: listen[0].protocols: expected \"socks5\", \"socks4\" or \"http\", found \"socks6\""));
    assert_true(has(&errs, "3: limits.max_connections: expected an integer from 1 to 10000000, found 0"));
    assert_true(
        has(&errs,
            "3: limits.header_mx: unknown setting; did you mean \"header_max\"? (expected one of: max_connections, "
            "connect_timeout_ms, handshake_timeout_ms, confirm_ms, idle_timeout_s, header_max, "
            "drain_timeout_s, session_cache_size, key_timeout_ms, max_connections_per_client, happy_eyeballs_ms)"));
    assert_true(has(&errs, "5: rules[0].action: expected \"mtls\", \"direct\" or \"deny\", found \"allow\""));
    assert_true(has(&errs, "6: rules[1].identity: no identity is named \"nobody\" (see identities)"));
    assert_true(has(&errs, "7: rules[2].upstream: expected \"host:port\" or \"[IPv6]:port\", found \"c.test\""));
    assert_true(
        has(&errs, "9: resolver.servers: expected \"IP\" or \"IP:port\" of a DNS server, found \"dns.example\""));
    assert_true(has(&errs, "10: allow: expected an IP address or CIDR like \"127.0.0.0/8\", found \"everyone\""));
    assert_true(has(&errs, "11: log.level: expected \"error\", \"warn\", \"info\" or \"debug\", found \"loud\""));
    pol_errors_free(&errs);
}

// The round-trip settings (DESIGN "Round trips"): the pool's, Happy Eyeballs', preconnect.
static void round_trip_settings(void **state) {
    pol_errors errs;
    pol_config *cfg = load(
        "listen = ( { name = \"p\"; address = \"127.0.0.1:1080\"; } );\n"
        "upstream_pool = { idle_per_key = -1; idle_timeout_s = 0; max_reqs = 5; };\n"
        "limits = { happy_eyeballs_ms = 20000; };\n"
        "rules = (\n"
        "  { match = \"*.a.test:443\"; action = \"direct\"; preconnect = 2; },\n"
        "  { match = \"*.b.test:443\"; identity = \"nobody\"; preconnect = 1; },\n"
        "  { match = \"c.test:443\"; identity = \"nobody\"; preconnect = 65; },\n"
        "  { match = \"d.test:443\"; action = \"direct\"; early_data = true; },\n"
        "  { match = \"e.test:443\"; action = \"direct\"; early_data = \"yes\"; }\n"
        ");\n",
        &errs);
    assert_null(cfg);
    assert_true(has(&errs, "2: upstream_pool.idle_per_key: expected an integer from 0 to 100000, found -1"));
    assert_true(has(&errs, "2: upstream_pool.idle_timeout_s: expected an integer from 1 to 3600, found 0"));
    assert_true(has(&errs,
                    "2: upstream_pool.max_reqs: unknown setting; expected one of: idle_per_key, idle_total, "
                    "idle_timeout_s, max_requests"));
    assert_true(has(&errs, "3: limits.happy_eyeballs_ms: expected an integer from 0 to 10000, found 20000"));
    assert_true(has(&errs, "5: rules[0].preconnect: only used by action \"mtls\""));
    assert_true(has(&errs,
                    "6: rules[1].preconnect: needs one destination: a rule whose match is one host:port, or "
                    "that has upstream"));
    assert_true(has(&errs, "7: rules[2].preconnect: expected an integer from 0 to 64, found 65"));
    assert_true(has(&errs, "8: rules[3].early_data: only used by action \"mtls\""));
    assert_true(has(&errs, "9: rules[4].early_data: expected true or false"));
    pol_errors_free(&errs);
    // The defaults.
    cfg = load("listen = ( { name = \"p\"; address = \"127.0.0.1:1080\"; } );\n", &errs);
    assert_non_null(cfg);
    assert_int_equal(cfg->upstream_pool.idle_per_key, 16);
    assert_int_equal(cfg->upstream_pool.idle_total, 4096);
    assert_int_equal(cfg->upstream_pool.idle_timeout_s, 30);
    assert_int_equal(cfg->upstream_pool.max_requests, 1000);
    assert_int_equal(cfg->limits.happy_eyeballs_ms, 250);
    pol_config_unref(cfg);
    pol_errors_free(&errs);
    // A true/false setting: false as written, and false by default.
    cfg = load(
        "listen = ( { name = \"p\"; address = \"127.0.0.1:1080\"; } );\n"
        "rules = ( { match = \"x.test\"; action = \"direct\"; early_data = false; },\n"
        "          { match = \"y.test\"; action = \"direct\"; } );\n",
        &errs);
    assert_non_null(cfg);
    assert_int_equal(cfg->rules[0].early_data, 0);
    assert_int_equal(cfg->rules[1].early_data, 0);
    pol_config_unref(cfg);
    pol_errors_free(&errs);
}

static void syntax_error(void **state) {
    pol_errors errs;
    pol_config *cfg = load("listen = (\n  { name = \"p\" address = ; }\n);\n", &errs);
    assert_null(cfg);
    assert_int_equal(errs.len, 1);
    assert_non_null(strstr(errs.lines[0], ":2: syntax error"));
    pol_errors_free(&errs);
}

static void missing_listen(void **state) {
    pol_errors errs;
    pol_config *cfg = load("rules = ();\n", &errs);
    assert_null(cfg);
    assert_non_null(strstr(errs.lines[0], "listen: at least one listener is required"));
    pol_errors_free(&errs);
}

static int denied(const pol_config *cfg, const char *ip) {
    pol_dest d;
    assert_true(pol_dest_init(&d, ip, 1));
    return pol_config_denied_address(cfg, NULL, d.family, d.addr) != NULL;
}

static const char *own(const pol_config *cfg, const char *ip, uint16_t port) {
    pol_dest d;
    assert_true(pol_dest_init(&d, ip, 1));
    return pol_config_own_address(cfg, d.family, d.addr, port);
}

static void deny_addresses(void **state) {
    pol_errors errs;
    pol_config *cfg = load("listen = ( { name = \"p\"; address = \"127.0.0.1:1080\"; } );\n", &errs);
    assert_non_null(cfg);
    // The default list: unspecified and link-local (cloud metadata lives there).
    assert_true(denied(cfg, "169.254.169.254"));
    assert_true(denied(cfg, "0.0.0.0"));
    assert_true(denied(cfg, "0.1.2.3"));
    assert_true(denied(cfg, "::"));
    assert_true(denied(cfg, "fe80::1"));
    assert_true(denied(cfg, "::ffff:169.254.169.254"));  // the IPv4-mapped form is the same address
    // ... and loopback, where this host's own services and the gateway listen.
    assert_true(denied(cfg, "127.0.0.1"));
    assert_true(denied(cfg, "127.9.9.9"));
    assert_true(denied(cfg, "::1"));
    assert_true(denied(cfg, "::ffff:127.0.0.1"));
    assert_false(denied(cfg, "10.1.2.3"));
    assert_false(cfg->deny_addresses_written);
    assert_int_equal(cfg->admin_allow == NULL, 1);  // no admin block, no admin list
    pol_config_unref(cfg);
    pol_errors_free(&errs);
    // [ ] turns the list off, but 0.0.0.0 and :: are never connected to.
    cfg = load("listen = ( { name = \"p\"; address = \"127.0.0.1:1080\"; } );\ndeny_addresses = [ ];\n", &errs);
    assert_non_null(cfg);
    assert_false(denied(cfg, "169.254.169.254"));
    assert_true(denied(cfg, "0.0.0.0"));
    assert_true(denied(cfg, "::"));
    assert_true(denied(cfg, "::ffff:0.0.0.0"));
    pol_config_unref(cfg);
    pol_errors_free(&errs);
    // An upstream literal inside the list could never be reached: an error naming the rule.
    cfg = load(
        "listen = ( { name = \"p\"; address = \"127.0.0.1:1080\"; } );\n"
        "deny_addresses = [ \"10.9.0.0/16\", \"bogus\" ];\n"
        "rules = ( { match = \"*\"; action = \"direct\";\n"
        "            upstream = \"10.9.8.7:80\"; } );\n",
        &errs);
    assert_null(cfg);
    assert_true(has(&errs, "2: deny_addresses: expected an IP address or CIDR like \"127.0.0.0/8\", found \"bogus\""));
    assert_true(
        has(&errs, "3: upstream: 10.9.8.7 is in deny_addresses (10.9.0.0/16): the gateway never connects there"));
    pol_errors_free(&errs);
    // An upstream literal is the operator's own choice: the default list does not fence
    // it (that is how a rule reaches a local service); a name resolving there is fenced.
    cfg = load(
        "listen = ( { name = \"p\"; address = \"127.0.0.1:1080\"; } );\n"
        "rules = ( { match = \"local.test\"; action = \"direct\"; upstream = \"127.0.0.1:6379\"; },\n"
        "          { match = \"name.test\"; action = \"direct\"; upstream = \"localhost:6379\"; } );\n",
        &errs);
    assert_non_null(cfg);
    const uint8_t lo[16] = {127, 0, 0, 1};
    assert_true(cfg->rules[0].upstream_is_literal);
    assert_null(pol_config_denied_address(cfg, &cfg->rules[0], AF_INET, lo));
    assert_false(cfg->rules[1].upstream_is_literal);
    assert_non_null(pol_config_denied_address(cfg, &cfg->rules[1], AF_INET, lo));
    const uint8_t zero[16] = {0};
    assert_non_null(pol_config_denied_address(cfg, &cfg->rules[0], AF_INET, zero));  // 0.0.0.0: never
    pol_config_unref(cfg);
    pol_errors_free(&errs);
    // A non-loopback admin address needs an explicit admin.allow.
    cfg = load(
        "listen = ( { name = \"p\"; address = \"127.0.0.1:1080\"; } );\n"
        "admin = { address = \"0.0.0.0:9901\"; };\n",
        &errs);
    assert_null(cfg);
    assert_true(has(&errs,
                    "2: admin.address: 0.0.0.0:9901 is not a loopback address: set admin.allow to the networks "
                    "that may read /metrics and /identities (e.g. allow = [ \"10.0.0.0/8\" ];)"));
    pol_errors_free(&errs);
    cfg = load(
        "listen = ( { name = \"p\"; address = \"127.0.0.1:1080\"; } );\n"
        "admin = { address = \"0.0.0.0:9901\"; allow = [ \"10.0.0.0/8\" ]; };\n",
        &errs);
    assert_non_null(cfg);
    assert_int_equal(cfg->num_admin_allow, 1);
    pol_config_unref(cfg);
    pol_errors_free(&errs);
}

// The gateway never connects to itself: its TCP listeners and admin endpoint, a wildcard
// one at any loopback or interface address, whatever deny_addresses says.
static void own_addresses(void **state) {
    pol_errors errs;
    pol_config *cfg = load(
        "listen = ( { name = \"proxy\"; address = \"127.0.0.1:1080\"; },\n"
        "           { name = \"all\"; address = \"0.0.0.0:1081\"; },\n"
        "           { name = \"six\"; address = \"[::1]:1082\"; } );\n"
        "allow = [ \"0.0.0.0/0\" ];\n"
        "deny_addresses = [ ];\n"
        "admin = { address = \"127.0.0.1:9901\"; };\n",
        &errs);
    assert_non_null(cfg);
    assert_string_equal(own(cfg, "127.0.0.1", 1080), "proxy");
    assert_string_equal(own(cfg, "::ffff:127.0.0.1", 1080), "proxy");
    assert_null(own(cfg, "127.0.0.2", 1080));  // bound to one address only
    assert_null(own(cfg, "127.0.0.1", 1079));
    assert_string_equal(own(cfg, "127.0.0.1", 1081), "all");
    assert_string_equal(own(cfg, "127.3.4.5", 1081), "all");
    assert_string_equal(own(cfg, "::1", 1081), "all");
    assert_null(own(cfg, "192.0.2.77", 1081));  // not an address of this host
    assert_string_equal(own(cfg, "::1", 1082), "six");
    assert_string_equal(own(cfg, "127.0.0.1", 9901), "admin");
    // Every interface address counts for a wildcard listener.
    for (size_t i = 0; i < cfg->num_local_addresses; i++) {
        const pol_cidr *c = &cfg->local_addresses[i];
        assert_string_equal(pol_config_own_address(cfg, c->family, c->addr, 1081), "all");
    }
    assert_true(cfg->num_local_addresses >= 1);  // at least lo
    pol_config_unref(cfg);
    pol_errors_free(&errs);
}

// Caller rules in a gateway that would run as root: it would see its own connections and
// root's as one uid. Refused unless `user` says whom to run as.
static void callers_need_user_as_root(void **state) {
    pol_errors errs;
    const char *conf =
        "listen = ( { name = \"p\"; address = \"127.0.0.1:1080\"; } );\n"
        "rules = ( { match = \"*\"; action = \"direct\"; },\n"
        "          { match = \"a.test\"; action = \"direct\"; caller = \"uid:0\"; } );\n";
    pol_config *cfg = load(conf, &errs);
    if (geteuid() == 0) {
        assert_null(cfg);
        assert_true(has(&errs,
                        "3: rules[1].caller: caller rules need `user` when the gateway is started as root (it "
                        "never takes its own uid for a caller, and would run as uid 0): add user = \"mtlsgw\"; "
                        "or another service user"));
    } else {
        assert_non_null(cfg);  // a gateway started as another user is that user already
        pol_config_unref(cfg);
    }
    pol_errors_free(&errs);
    char with_user[600];
    snprintf(with_user, sizeof(with_user), "user = \"nobody\";\n%s", conf);
    cfg = load(with_user, &errs);
    assert_non_null(cfg);
    pol_config_unref(cfg);
    pol_errors_free(&errs);
}

// `listener`: a rule serves only the clients of the listeners it names.
static void rules_by_listener(void **state) {
    pol_errors errs;
    pol_config *cfg = load(
        "listen = ( { name = \"orders\"; address = \"127.0.0.1:1080\"; },\n"
        "           { name = \"billing\"; address = \"127.0.0.1:1081\"; } );\n"
        "rules = ( { match = \"a.test\"; action = \"direct\"; listener = \"orders\"; },\n"
        "          { match = \"a.test\"; action = \"deny\"; listener = [ \"billing\", \"orders\" ]; },\n"
        "          { match = \"*\"; action = \"direct\"; } );\n",
        &errs);
    assert_non_null(cfg);
    pol_dest d;
    assert_true(pol_dest_init(&d, "a.test", 80));
    assert_ptr_equal(pol_config_lookup(cfg, &d, GW_CALLER_NONE, 0), &cfg->rules[0]);
    assert_ptr_equal(pol_config_lookup(cfg, &d, GW_CALLER_NONE, 1), &cfg->rules[1]);
    assert_ptr_equal(pol_config_lookup(cfg, &d, GW_CALLER_NONE, -1), &cfg->rules[2]);  // no listener in particular
    assert_string_equal(cfg->rules[1].listeners_text, "billing, orders");
    assert_null(cfg->rules[2].listeners_text);
    pol_config_unref(cfg);
    pol_errors_free(&errs);
    cfg = load(
        "listen = ( { name = \"orders\"; address = \"127.0.0.1:1080\"; } );\n"
        "rules = ( { match = \"a.test\"; action = \"direct\"; listener = \"ordres\"; },\n"
        "          { match = \"b.test\"; action = \"direct\"; listener = 5; } );\n",
        &errs);
    assert_null(cfg);
    assert_true(has(&errs, "2: rules[0].listener: no listener named \"ordres\" (the listeners: \"orders\")"));
    assert_true(has(&errs, "3: rules[1].listener: expected the name of a listener, or a list of them"));
    pol_errors_free(&errs);
}

// When an ACME identity is renewed: a share of the lifetime left, or a duration before
// notAfter.
static void acme_due(void **state) {
    (void)state;
    pol_acme a;
    memset(&a, 0, sizeof(a));
    a.renew_before_pct = 33;
    assert_int_equal(pol_acme_due(&a, 1000, 1000 + 90 * 86400), 1000 + 90 * 86400 - 2566080);  // 33 % of 90 days
    assert_int_equal(pol_acme_due(&a, 0, 300), 201);  // 5-minute certificates: 99 s before the end
    a.renew_before_pct = 0;
    a.renew_before_s = 48 * 3600;
    assert_int_equal(pol_acme_due(&a, 0, 7 * 86400), 5 * 86400);
    assert_string_equal(pol_acme_challenge_name(POL_ACME_DNS01), "dns-01");
    assert_string_equal(pol_acme_challenge_name(POL_ACME_HTTP01), "http-01");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(minimal_and_defaults), cmocka_unit_test(every_error_with_line),
        cmocka_unit_test(round_trip_settings),  cmocka_unit_test(syntax_error),
        cmocka_unit_test(missing_listen),       cmocka_unit_test(deny_addresses),
        cmocka_unit_test(own_addresses),        cmocka_unit_test(callers_need_user_as_root),
        cmocka_unit_test(rules_by_listener),    cmocka_unit_test(acme_due)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
