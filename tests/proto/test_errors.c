// The result/error vocabulary: every error has its wire codes (SOCKS5 REP, SOCKS4, HTTP
// status with its reason phrase) and a result, every result one distinct name that the
// access log and the metrics share.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/proto/errors.h"

static void every_error_has_codes(void **state) {
    for (int e = GW_ERR_NONE + 1; e < GW_ERR_COUNT; e++) {
        const gw_err_info *i = gw_err_describe((gw_err)e);
        assert_true(i->socks5_rep >= 0x01 && i->socks5_rep <= 0x08);
        assert_true(i->socks4_code == 0x5b || i->socks4_code == 0x5d);
        assert_true(i->http_status >= 400 && i->http_status <= 599);
        assert_string_not_equal(gw_http_reason_phrase(i->http_status), "Error");
        assert_true(i->result > GW_RESULT_OK && i->result < GW_RESULT_COUNT);
        // RFC 9209 has no type for a missing proxy authentication; everything else has one.
        if (e != GW_ERR_AUTH) {
            assert_non_null(i->proxy_status);
        }
    }
    assert_int_equal(gw_err_describe(GW_ERR_NONE)->result, GW_RESULT_OK);
    assert_int_equal(gw_err_describe((gw_err)9999)->result, GW_RESULT_INTERNAL_ERROR);  // out of range: internal
}

static void every_result_has_one_name(void **state) {
    assert_string_equal(gw_result_name(GW_RESULT_NONE), "-");
    for (int a = GW_RESULT_OK; a < GW_RESULT_COUNT; a++) {
        const char *n = gw_result_name((gw_result)a);
        assert_string_not_equal(n, "-");
        for (const char *c = n; *c; c++) {
            assert_true((*c >= 'a' && *c <= 'z') || *c == '_');  // a metric label value as it is
        }
        for (int b = a + 1; b < GW_RESULT_COUNT; b++) {
            assert_string_not_equal(n, gw_result_name((gw_result)b));
        }
    }
    assert_string_equal(gw_result_name(GW_RESULT_COUNT), "-");
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(every_error_has_codes),
                                       cmocka_unit_test(every_result_has_one_name)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
