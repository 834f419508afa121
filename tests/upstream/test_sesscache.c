// The session cache: keys never cross (one identity's session is never offered for
// another), TLS 1.3 sessions are taken once, TLS 1.2 ones reused, expired ones dropped,
// the cap holds with the least recently used keys going first, and a purge forgets the
// generations of replaced identities.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <cmocka.h>

#include "gateway/upstream/sesscache.h"

static SSL_CTX *ctx;

static SSL_SESSION *session(uint16_t version) {
    SSL_SESSION *s = SSL_SESSION_new(ctx);
    assert_non_null(s);
    assert_true(SSL_SESSION_set_protocol_version(s, version));
    SSL_SESSION_set_time(s, (uint64_t)time(NULL));
    SSL_SESSION_set_timeout(s, 3600);
    return s;
}

static void keys_never_cross_and_tls13_is_single_use(void **state) {
    gw_sesscache_clear();
    gw_sesscache_set_limit(100);
    SSL_SESSION *a = session(TLS1_3_VERSION);
    gw_sesscache_put("gen1|10.0.0.1:443|orders", 1, a);
    assert_null(gw_sesscache_take("gen2|10.0.0.1:443|orders"));  // another identity: nothing
    SSL_SESSION *got = gw_sesscache_take("gen1|10.0.0.1:443|orders");
    assert_ptr_equal(got, a);
    SSL_SESSION_free(got);
    assert_null(gw_sesscache_take("gen1|10.0.0.1:443|orders"));  // a TLS 1.3 ticket is used once
    size_t keys, sessions;
    gw_sesscache_stats(&keys, &sessions);
    assert_int_equal(sessions, 0);
    assert_int_equal(keys, 0);  // used up: the key goes too
}

static void tls12_is_reused_and_expired_dropped(void **state) {
    gw_sesscache_clear();
    SSL_SESSION *s = session(TLS1_2_VERSION);
    gw_sesscache_put("k", 1, s);
    for (int i = 0; i < 3; i++) {
        SSL_SESSION *got = gw_sesscache_take("k");
        assert_ptr_equal(got, s);  // a TLS 1.2 session resumes many times
        SSL_SESSION_free(got);
    }
    SSL_SESSION *old = session(TLS1_2_VERSION);
    SSL_SESSION_set_time(old, (uint64_t)time(NULL) - 7200);
    gw_sesscache_put("k", 1, old);        // replaces the reusable one
    assert_null(gw_sesscache_take("k"));  // and is expired
}

static void cap_drops_least_recently_used(void **state) {
    gw_sesscache_clear();
    gw_sesscache_set_limit(10);
    char key[32];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof(key), "name%d", i);
        gw_sesscache_put(key, 1, session(TLS1_3_VERSION));
        if (i == 5) {
            SSL_SESSION *keep = session(TLS1_3_VERSION);
            gw_sesscache_put("name0", 1, keep);  // name0 used again: recent
        }
    }
    size_t keys, sessions;
    gw_sesscache_stats(&keys, &sessions);
    assert_int_equal(sessions, 10);
    assert_true(keys <= 10);
    SSL_SESSION *s = gw_sesscache_take("name49");
    assert_non_null(s);  // the newest stay
    SSL_SESSION_free(s);
    assert_null(gw_sesscache_take("name10"));  // old ones went
    gw_sesscache_clear();
}

static void purge_forgets_replaced_generations(void **state) {
    gw_sesscache_clear();
    gw_sesscache_set_limit(100);
    gw_sesscache_put("a", 1, session(TLS1_2_VERSION));
    gw_sesscache_put("b", 2, session(TLS1_2_VERSION));
    gw_sesscache_put("c", 3, session(TLS1_2_VERSION));
    const uint64_t live[] = {2};
    gw_sesscache_purge(live, 1);
    size_t keys, sessions;
    gw_sesscache_stats(&keys, &sessions);
    assert_int_equal(keys, 1);
    assert_null(gw_sesscache_take("a"));
    SSL_SESSION *s = gw_sesscache_take("b");
    assert_non_null(s);
    SSL_SESSION_free(s);
    gw_sesscache_clear();
}

int main(void) {
    ctx = SSL_CTX_new(TLS_method());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keys_never_cross_and_tls13_is_single_use),
        cmocka_unit_test(tls12_is_reused_and_expired_dropped),
        cmocka_unit_test(cap_drops_least_recently_used),
        cmocka_unit_test(purge_forgets_replaced_generations),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    SSL_CTX_free(ctx);
    return rc;
}
