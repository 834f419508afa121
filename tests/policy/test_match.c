// match patterns: every form, normalisation, errors.
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "policy/match.h"

static int matches(const char *pattern, const char *host, uint16_t port) {
    pol_match m;
    char err[300];
    assert_true(pol_match_parse(pattern, &m, err, sizeof(err)));
    pol_dest d;
    assert_true(pol_dest_init(&d, host, port));
    return pol_match_test(&m, &d);
}

static void forms(void **state) {
    assert_true(matches("orders.dc2.test", "ORDERS.dc2.test.", 443));
    assert_false(matches("orders.dc2.test", "x.orders.dc2.test", 443));
    assert_true(matches("*.dc2.test", "orders.dc2.test", 80));
    assert_true(matches("*.dc2.test", "a.b.dc2.test", 80));
    assert_false(matches("*.dc2.test", "dc2.test", 80));
    assert_false(matches("*.dc2.test", "xdc2.test", 80));
    assert_true(matches("*", "anything.example", 1));
    assert_true(matches("*:443", "anything.example", 443));
    assert_false(matches("*:443", "anything.example", 80));
    assert_true(matches("redis.dc2.test:6379", "redis.dc2.test", 6379));
    assert_false(matches("redis.dc2.test:6379", "redis.dc2.test", 6380));
    assert_true(matches("a.test:8000-8100", "a.test", 8050));
    assert_false(matches("a.test:8000-8100", "a.test", 8101));
    assert_true(matches("10.20.0.0/16", "10.20.3.4", 22));
    assert_false(matches("10.20.0.0/16", "10.21.3.4", 22));
    assert_true(matches("10.20.1.1", "10.20.1.1", 22));
    assert_false(matches("10.20.0.0/16", "ten.example", 22));
    assert_true(matches("[2001:db8::/32]:443", "2001:db8::1", 443));
    assert_false(matches("[2001:db8::/32]:443", "2001:db8::1", 80));
    assert_true(matches("2001:db8::/32", "2001:db8:0:1::5", 80));
    assert_true(matches("[::1]", "::1", 9));
    assert_true(matches("0.0.0.0/0", "192.0.2.1", 9));
}

static void errors(void **state) {
    const char *bad[] = {"",          "a.test:0",   "a.test:65536", "a.test:90-80", "a*.test", "*.",
                         "a..test",   "10.0.0.1/8", "10.0.0.0/33",  "[::1",         "[::1]x",  "a b",
                         "300.1.1.1", "a.test:",    "a.test:1-",    "*.*.test"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pol_match m;
        char err[300] = "";
        assert_false(pol_match_parse(bad[i], &m, err, sizeof(err)));
        assert_true(strlen(err) > 0);
    }
    pol_match m;
    char err[300];
    pol_match_parse("10.0.0.1/8", &m, err, sizeof(err));
    assert_non_null(strstr(err, "did you mean 10.0.0.0/8?"));
}

static void dest_normalisation(void **state) {
    pol_dest d;
    assert_true(pol_dest_init(&d, "Orders.DC2.Test.", 80));
    assert_string_equal(d.host, "orders.dc2.test");
    assert_int_equal(d.family, 0);
    // An IPv4-mapped IPv6 literal is the IPv4 address: an IPv4 rule sees it as such.
    assert_true(pol_dest_init(&d, "::ffff:127.0.0.1", 80));
    assert_int_equal(d.family, AF_INET);
    assert_string_equal(d.host, "127.0.0.1");
    pol_match m;
    char err[300];
    assert_true(pol_match_parse("127.0.0.0/8", &m, err, sizeof(err)));
    assert_true(pol_match_test(&m, &d));
    assert_true(pol_dest_init(&d, "0:0:0:0:0:FFFF:7F00:1", 80));
    assert_true(pol_match_test(&m, &d));
    assert_true(pol_dest_init(&d, "::1.2.3.4", 80));  // IPv4-compatible (deprecated) is not mapped
    assert_int_equal(d.family, AF_INET6);
    assert_false(pol_dest_init(&d, "a_b c", 80));
    assert_false(pol_dest_init(&d, "", 80));
}

// One reading of an address: what the resolver would take for an address is one for the
// rules too (then an IPv4 rule and deny_addresses see it), or it is refused.
static void address_spellings(void **state) {
    pol_dest d;
    pol_match m;
    char err[300];
    assert_true(pol_match_parse("127.0.0.0/8", &m, err, sizeof(err)));
    // A trailing dot is the root: the address itself.
    assert_true(pol_dest_init(&d, "127.0.0.1.", 80));
    assert_int_equal(d.family, AF_INET);
    assert_string_equal(d.host, "127.0.0.1");
    assert_true(pol_match_test(&m, &d));
    // Spellings c-ares or libc read as addresses and inet_pton does not: refused.
    const char *const refused[] = {"127.000.000.001", "127.000.000.001.", "127.1",   "2130706433", "0177.0.0.1",
                                   "0x7f.0.0.1",      "127.0.0.1..",      "foo.123", "10.0.0.1.5"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        assert_false(pol_dest_init(&d, refused[i], 80));
    }
    assert_non_null(strstr(pol_dest_problem("127.000.000.001"), "numeric label"));
    assert_non_null(strstr(pol_dest_problem("a b"), "not a valid host name"));
    // Names with digits elsewhere are names; a numeric TLD never is one.
    assert_true(pol_dest_init(&d, "host1.dc2.test", 80));
    assert_int_equal(d.family, 0);
    assert_true(pol_dest_init(&d, "0x7f000001", 80));  // a name to c-ares (not digits and dots)
    assert_int_equal(d.family, 0);
    // The same text in a rule's match is a config error, not a name that never matches.
    assert_false(pol_match_parse("foo.123:80", &m, err, sizeof(err)));
    assert_non_null(strstr(err, "numeric label"));
    assert_false(pol_match_parse("127.000.000.001", &m, err, sizeof(err)));
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(forms), cmocka_unit_test(errors),
                                       cmocka_unit_test(dest_normalisation), cmocka_unit_test(address_spellings)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
