// The renewal's record and retry plan: the state file round trip (and what a damaged one
// gives), and the backoff: doubling from 5 s to 1 h, jitter within 20 %, Retry-After
// honoured, but never past a quarter of a valid certificate's remaining life.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/acme/state.h"

static void round_trip(void **state) {
    (void)state;
    char path[64];
    snprintf(path, sizeof(path), "/tmp/mtlsgw-state-%d.json", (int)getpid());
    gw_acme_state st = {.last_attempt = 1700000000,
                        .last_success = 1690000000,
                        .next_attempt = 1700000010,
                        .failures = 2,
                        .attempts = 7};
    snprintf(st.result, sizeof(st.result), "error");
    snprintf(st.error, sizeof(st.error), "the CA said \"no\"\n(twice)");
    assert_int_equal(gw_acme_state_write(path, &st), 1);
    gw_acme_state got;
    assert_int_equal(gw_acme_state_read(path, &got), 1);
    assert_int_equal(got.last_attempt, st.last_attempt);
    assert_int_equal(got.last_success, st.last_success);
    assert_int_equal(got.next_attempt, st.next_attempt);
    assert_int_equal(got.failures, 2);
    assert_int_equal(got.attempts, 7);
    assert_string_equal(got.result, "error");
    assert_string_equal(got.error, st.error);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"last_attempt\": -5, \"failures\": \"x\", \"error\": 7, \"result\": \"ok\"", f);  // cut short
    fclose(f);
    assert_int_equal(gw_acme_state_read(path, &got), 0);
    assert_int_equal(got.last_attempt, 0);
    assert_int_equal(got.failures, 0);
    assert_string_equal(got.error, "");
    f = fopen(path, "w");
    fputs("{\"last_attempt\": -5, \"failures\": \"x\", \"error\": 7}", f);  // wrong types: ignored
    fclose(f);
    assert_int_equal(gw_acme_state_read(path, &got), 1);
    assert_int_equal(got.last_attempt, 0);
    assert_int_equal(got.failures, 0);
    assert_string_equal(got.error, "");
    unlink(path);
    assert_int_equal(gw_acme_state_read(path, &got), 0);
}

static void backoff(void **state) {
    (void)state;
    time_t now = 1800000000;
    assert_int_equal(gw_acme_next_try(1, -1, 0, now, 0) - now, 5);
    assert_int_equal(gw_acme_next_try(2, -1, 0, now, 0) - now, 10);
    assert_int_equal(gw_acme_next_try(5, -1, 0, now, 0) - now, 80);
    assert_int_equal(gw_acme_next_try(30, -1, 0, now, 0) - now, 3600);  // at most an hour
    assert_int_equal(gw_acme_next_try(1000000, -1, 0, now, 0) - now, 3600);
    assert_int_equal(gw_acme_next_try(4, -1, 0, now, 20) - now, 48);  // jitter
    assert_int_equal(gw_acme_next_try(4, -1, 0, now, -20) - now, 32);
    assert_int_equal(gw_acme_next_try(4, -1, 0, now, 99) - now, 40);   // out of range: none
    assert_int_equal(gw_acme_next_try(1, 600, 0, now, 0) - now, 600);  // Retry-After wins
    assert_int_equal(gw_acme_next_try(8, 60, 0, now, 0) - now, 640);   // ... when longer
    // A certificate with 2 hours left: never later than a quarter of that (30 min), even
    // when the CA asks for a day.
    assert_int_equal(gw_acme_next_try(30, 86400, now + 7200, now, 0) - now, 1800);
    // With 10 s left: still the first step, not sooner.
    assert_int_equal(gw_acme_next_try(3, -1, now + 10, now, 0) - now, 5);
    // Expired: the backoff alone.
    assert_int_equal(gw_acme_next_try(3, -1, now - 10, now, 0) - now, 20);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(round_trip), cmocka_unit_test(backoff)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
