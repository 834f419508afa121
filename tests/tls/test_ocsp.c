// OCSP staples: the parser (fields of real responses, every truncation and single-byte
// change refused or parsed without reading out of bounds) and the check against a chain
// (good, revoked with its reason, another certificate's response, a forged signature,
// out of date and not yet valid by the clock given), with responses the openssl CLI made
// (ocsp_fixtures.h).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/tls/ocsp.h"
#include "ocsp_fixtures.h"

static X509 *cert(const unsigned char *der, size_t len) {
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    assert_non_null(x);
    return x;
}

static void parses_real_responses(void **state) {
    (void)state;
    gw_ocsp_response r;
    char err[200];
    assert_int_equal(gw_ocsp_parse(leaf_der, leaf_der_len, &r, err, sizeof(err)), 1);
    assert_int_equal(r.response_status, 0);
    assert_int_equal(r.num_singles, 1);
    assert_int_equal(r.singles[0].status, GW_OCSP_STATUS_GOOD);
    assert_int_equal(r.singles[0].has_next, 1);
    assert_int_equal(r.singles[0].next_update - r.singles[0].this_update, 7 * 86400);
    assert_int_equal(r.by_key, 0);
    assert_int_equal(gw_ocsp_parse(revoked_der, revoked_der_len, &r, err, sizeof(err)), 1);
    assert_int_equal(r.singles[0].status, GW_OCSP_STATUS_REVOKED);
    assert_int_equal(r.singles[0].reason, 1);  // keyCompromise
    assert_true(r.singles[0].revoked_at <= r.singles[0].this_update);
}

static void generalized_time(void **state) {
    (void)state;
    int64_t t;
    CBS c;
    CBS_init(&c, (const uint8_t *)"19700101000000Z", 15);
    assert_int_equal(gw_ocsp_time(&c, &t), 1);
    assert_int_equal(t, 0);
    CBS_init(&c, (const uint8_t *)"20260301120000Z", 15);  // after a February of 28 days
    assert_int_equal(gw_ocsp_time(&c, &t), 1);
    assert_int_equal(t, 1772366400);
    CBS_init(&c, (const uint8_t *)"20240229235959Z", 15);
    assert_int_equal(gw_ocsp_time(&c, &t), 1);
    assert_int_equal(t, 1709251199);
    const char *bad[] = {"2026030112000Z",  "20260301120000",  "20261301120000Z",
                         "20260301250000Z", "2026030112000aZ", "202603011200000Z"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CBS_init(&c, (const uint8_t *)bad[i], strlen(bad[i]));
        assert_int_equal(gw_ocsp_time(&c, &t), 0);
    }
}

static void truncated_and_mutated(void **state) {
    (void)state;
    gw_ocsp_response r;
    char err[200];
    uint8_t *buf = malloc(leaf_der_len);
    assert_non_null(buf);
    for (size_t n = 0; n < leaf_der_len; n++) {
        uint8_t *exact = malloc(n ? n : 1);  // exactly n bytes: ASan sees a read past them
        memcpy(exact, leaf_der, n);
        assert_int_equal(gw_ocsp_parse(exact, n, &r, err, sizeof(err)), 0);
        assert_non_null(strstr(err, "malformed OCSP response"));
        free(exact);
    }
    int parsed = 0;
    for (size_t i = 0; i < leaf_der_len; i++) {
        memcpy(buf, leaf_der, leaf_der_len);
        buf[i] ^= 0x41;
        parsed += gw_ocsp_parse(buf, leaf_der_len, &r, err, sizeof(err));
    }
    assert_true(parsed < (int)leaf_der_len);  // most changes break the structure
    free(buf);
    static const uint8_t unsuccessful[] = {0x30, 0x03, 0x0a, 0x01, 0x06};  // unauthorized, no body
    assert_int_equal(gw_ocsp_parse(unsuccessful, sizeof(unsuccessful), &r, err, sizeof(err)), 1);
    assert_int_equal(r.response_status, 6);
    static const uint8_t trailing[] = {0x30, 0x03, 0x0a, 0x01, 0x06, 0x00};
    assert_int_equal(gw_ocsp_parse(trailing, sizeof(trailing), &r, err, sizeof(err)), 0);
}

static void checks_against_the_chain(void **state) {
    (void)state;
    X509 *ca = cert(ca_cer, ca_cer_len), *leaf = cert(leaf_cer, leaf_cer_len),
         *rev = cert(revoked_cer, revoked_cer_len);
    gw_ocsp_response r;
    char err[200], reason[600], info[400];
    assert_int_equal(gw_ocsp_parse(leaf_der, leaf_der_len, &r, err, sizeof(err)), 1);
    time_t now = (time_t)r.singles[0].this_update + 3600;
    assert_int_equal(
        gw_ocsp_check(leaf_der, leaf_der_len, leaf, ca, now, 300, reason, sizeof(reason), info, sizeof(info)),
        GW_OCSP_RESULT_GOOD);
    assert_non_null(strstr(info, "responder /CN=Fixture CA"));
    assert_non_null(strstr(info, "status good"));
    // The revoked one, with when and why.
    assert_int_equal(gw_ocsp_check(revoked_der, revoked_der_len, rev, ca, now, 300, reason, sizeof(reason), NULL, 0),
                     GW_OCSP_RESULT_REVOKED);
    assert_non_null(strstr(reason, "certificate revoked (OCSP): since "));
    assert_non_null(strstr(reason, "reason: key compromise"));
    // A response about another certificate.
    assert_int_equal(gw_ocsp_check(revoked_der, revoked_der_len, leaf, ca, now, 300, reason, sizeof(reason), NULL, 0),
                     GW_OCSP_RESULT_WRONG_CERT);
    // The clock: past nextUpdate (with and without the skew), thisUpdate ahead.
    time_t next = (time_t)r.singles[0].next_update;
    assert_int_equal(gw_ocsp_check(leaf_der, leaf_der_len, leaf, ca, next + 301, 300, reason, sizeof(reason), NULL, 0),
                     GW_OCSP_RESULT_STALE);
    assert_non_null(strstr(reason, "nextUpdate"));
    assert_int_equal(gw_ocsp_check(leaf_der, leaf_der_len, leaf, ca, next + 299, 300, reason, sizeof(reason), NULL, 0),
                     GW_OCSP_RESULT_GOOD);
    time_t before = (time_t)r.singles[0].this_update - 301;
    assert_int_equal(gw_ocsp_check(leaf_der, leaf_der_len, leaf, ca, before, 300, reason, sizeof(reason), NULL, 0),
                     GW_OCSP_RESULT_STALE);
    assert_non_null(strstr(reason, "in the future"));
    // A changed byte in the signed part, or in the signature: not the issuer's signature.
    uint8_t *forged = malloc(leaf_der_len);
    assert_non_null(forged);
    memcpy(forged, leaf_der, leaf_der_len);
    assert_int_equal(gw_ocsp_parse(leaf_der, leaf_der_len, &r, err, sizeof(err)), 1);
    forged[(size_t)(CBS_data(&r.signature) - leaf_der) + CBS_len(&r.signature) / 2] ^= 0x01;  // in the signature
    gw_ocsp_result res = gw_ocsp_check(forged, leaf_der_len, leaf, ca, now, 300, reason, sizeof(reason), NULL, 0);
    assert_true(res == GW_OCSP_RESULT_BAD_SIGNATURE || res == GW_OCSP_RESULT_MALFORMED);  // (DER of r and s)
    memcpy(forged, leaf_der, leaf_der_len);
    size_t at = 0;
    while (at + 17 < leaf_der_len && !(forged[at] == 0x18 && forged[at + 1] == 15 && forged[at + 16] == 'Z')) {
        at++;  // the first GeneralizedTime: producedAt, in the signed part
    }
    assert_true(at + 17 < leaf_der_len);
    forged[at + 15] ^= 0x01;  // its last digit: still a time, no longer what was signed
    assert_int_equal(gw_ocsp_parse(forged, leaf_der_len, &r, err, sizeof(err)), 1);
    assert_int_equal(gw_ocsp_check(forged, leaf_der_len, leaf, ca, now, 300, reason, sizeof(reason), NULL, 0),
                     GW_OCSP_RESULT_BAD_SIGNATURE);
    assert_non_null(strstr(reason, "bad signature"));
    // No issuer in the chain: nothing to check against.
    assert_int_equal(gw_ocsp_check(leaf_der, leaf_der_len, leaf, NULL, now, 300, reason, sizeof(reason), NULL, 0),
                     GW_OCSP_RESULT_BAD_SIGNATURE);
    // The leaf as the issuer: the response's signature and CertID do not fit.
    assert_int_equal(gw_ocsp_check(leaf_der, leaf_der_len, leaf, leaf, now, 300, reason, sizeof(reason), NULL, 0),
                     GW_OCSP_RESULT_BAD_SIGNATURE);
    assert_string_equal(gw_ocsp_result_name(GW_OCSP_RESULT_WRONG_CERT), "wrong_cert");
    assert_string_equal(gw_ocsp_result_name(GW_OCSP_RESULT_NONE), "-");
    free(forged);
    X509_free(ca);
    X509_free(leaf);
    X509_free(rev);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(parses_real_responses), cmocka_unit_test(generalized_time),
                                       cmocka_unit_test(truncated_and_mutated),
                                       cmocka_unit_test(checks_against_the_chain)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
