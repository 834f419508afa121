// rule index: first match in file order, whatever the kind of pattern; the index agrees
// with a linear scan on random destinations; a large table stays indexed.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "policy/rules.h"

static pol_match parse(const char *s) {
    pol_match m;
    char err[300];
    assert_true(pol_match_parse(s, &m, err, sizeof(err)));
    return m;
}

static long lookup(pol_index *idx, const char *host, uint16_t port) {
    pol_dest d;
    assert_true(pol_dest_init(&d, host, port));
    return pol_index_lookup(idx, &d, GW_CALLER_NONE, -1);
}

static void first_match_wins(void **state) {
    const char *pats[] = {"redis.dc2.test:6379",
                          "*.dc2.test:80",
                          "10.20.0.0/16",
                          "*.example.org",
                          "10.20.30.0/24",
                          "orders.dc2.test",
                          "*"};
    pol_index *idx = pol_index_new();
    pol_match ms[7];
    for (uint32_t i = 0; i < 7; i++) {
        ms[i] = parse(pats[i]);
        assert_true(pol_index_add(idx, &ms[i], i, NULL, 0));
    }
    assert_int_equal(lookup(idx, "redis.dc2.test", 6379), 0);
    assert_int_equal(lookup(idx, "redis.dc2.test", 80), 1);
    assert_int_equal(lookup(idx, "orders.dc2.test", 80), 1);
    assert_int_equal(lookup(idx, "orders.dc2.test", 443), 5);
    assert_int_equal(lookup(idx, "10.20.30.1", 1), 2);  // /16 comes before /24
    assert_int_equal(lookup(idx, "a.b.example.org", 1), 3);
    assert_int_equal(lookup(idx, "example.org", 1), 6);
    assert_int_equal(lookup(idx, "192.0.2.1", 1), 6);
    pol_index_free(idx);
    pol_index *empty = pol_index_new();
    assert_int_equal(lookup(empty, "a.test", 1), -1);
    pol_index_free(empty);
}

static void agrees_with_linear_scan(void **state) {
    srand(7);
    const char *names[] = {"a", "b", "c", "dc2", "test", "example"};
    enum { N = 400 };
    pol_match *ms = calloc(N, sizeof(*ms));
    pol_index *idx = pol_index_new();
    for (uint32_t i = 0; i < N; i++) {
        char p[128];
        int kind = rand() % 4;
        if (kind == 0) {
            snprintf(p, sizeof(p), "%s.%s:%d", names[rand() % 6], names[rand() % 6], 1 + rand() % 5);
        } else if (kind == 1) {
            snprintf(p, sizeof(p), "*.%s", names[rand() % 6]);
        } else if (kind == 2) {
            int len = 8 * (1 + rand() % 4);
            unsigned a = (unsigned)(rand() % 4) << 24;
            a &= len == 32 ? 0xffffffffu : ~(0xffffffffu >> len);
            snprintf(p, sizeof(p), "%u.%u.%u.%u/%d", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255, len);
        } else {
            snprintf(p, sizeof(p), "%s.%s.%s", names[rand() % 6], names[rand() % 6], names[rand() % 6]);
        }
        ms[i] = parse(p);
        pol_index_add(idx, &ms[i], i, NULL, 0);
    }
    for (int k = 0; k < 3000; k++) {
        char h[64];
        if (rand() % 2) {
            snprintf(h, sizeof(h), "%s.%s.%s", names[rand() % 6], names[rand() % 6], names[rand() % 6]);
        } else {
            snprintf(h, sizeof(h), "%d.0.0.%d", rand() % 4, rand() % 3);
        }
        pol_dest d;
        assert_true(pol_dest_init(&d, h, (uint16_t)(1 + rand() % 5)));
        long want = -1;
        for (uint32_t i = 0; i < N && want < 0; i++) {
            if (pol_match_test(&ms[i], &d)) {
                want = i;
            }
        }
        assert_int_equal(pol_index_lookup(idx, &d, GW_CALLER_NONE, -1), want);
    }
    pol_index_free(idx);
    free(ms);
}

static void large_table(void **state) {
    pol_index *idx = pol_index_new();
    for (uint32_t i = 0; i < 100000; i++) {
        char p[64];
        snprintf(p, sizeof(p), "host%u.dc%u.test", i, i % 50);
        pol_match m = parse(p);
        assert_true(pol_index_add(idx, &m, i, NULL, 0));
    }
    assert_int_equal(lookup(idx, "host99999.dc49.test", 1), 99999);
    assert_int_equal(lookup(idx, "HOST12345.dc45.test.", 1), 12345);
    assert_int_equal(lookup(idx, "host12345.dc46.test", 1), -1);
    pol_index_free(idx);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(first_match_wins), cmocka_unit_test(agrees_with_linear_scan),
                                       cmocka_unit_test(large_table)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
