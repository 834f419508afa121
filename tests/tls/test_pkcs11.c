// PKCS#11 keys, without a token: URIs as the config takes them (p11-kit's parser, the
// module-path and pin-source query, what is refused), and the signature algorithms turned
// into what a token signs and back (ECDSA r || s into DER, checked by verifying with a
// real key; PKCS#1 DigestInfo; PSS digests), including malformed token answers.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/digest.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/mem.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>

#include "gateway/tls/pkcs11.h"

static void uri_accepted(void **state) {
    char *module = NULL, *pin = NULL, err[600];
    assert_true(gw_p11_is_uri("pkcs11:token=gw;object=ops"));
    assert_false(gw_p11_is_uri("pki/ops.key"));
    assert_false(gw_p11_is_uri(NULL));
    assert_true(gw_p11_uri_parse("pkcs11:token=gw;object=ops", &module, &pin, err, sizeof(err)));
    assert_null(module);
    assert_null(pin);
    assert_true(
        gw_p11_uri_parse("pkcs11:token=gw;id=%01%02?module-path=/usr/lib/softhsm/libsofthsm2.so"
                         "&pin-source=file:/etc/mtlsgw/ids/gw.pin",
                         &module, &pin, err, sizeof(err)));
    assert_string_equal(module, "/usr/lib/softhsm/libsofthsm2.so");
    assert_string_equal(pin, "/etc/mtlsgw/ids/gw.pin");
    free(module);
    free(pin);
    assert_true(gw_p11_uri_parse("pkcs11:object=ops?pin-source=file:///run/pin", &module, &pin, err, sizeof(err)));
    assert_string_equal(pin, "/run/pin");
    free(pin);
    assert_true(gw_p11_uri_parse("pkcs11:object=a%20b;type=private", &module, &pin, err, sizeof(err)));
}

static void uri_refused(void **state) {
    char *module = NULL, *pin = NULL, err[600];
    assert_false(gw_p11_uri_parse("pkcs12:token=gw;object=ops", &module, &pin, err, sizeof(err)));
    assert_non_null(strstr(err, "is not a PKCS#11 URI"));
    assert_false(gw_p11_uri_parse("pkcs11:token=gw", &module, &pin, err, sizeof(err)));
    assert_non_null(strstr(err, "names no key"));
    assert_false(gw_p11_uri_parse("pkcs11:object=ops?pin-value=1234", &module, &pin, err, sizeof(err)));
    assert_non_null(strstr(err, "pin-value"));
    assert_false(gw_p11_uri_parse("pkcs11:object=ops?pin-source=relative/pin", &module, &pin, err, sizeof(err)));
    assert_non_null(strstr(err, "file:/absolute/path"));
    assert_null(pin);
    assert_false(gw_p11_uri_parse("pkcs11:object=ops;colour=blue", &module, &pin, err, sizeof(err)));
    assert_non_null(strstr(err, "does not know"));
    assert_false(gw_p11_uri_parse("pkcs11:object=%zz", &module, &pin, err, sizeof(err)));
    assert_null(module);
    assert_null(pin);
}

static void uri_parts(void **state) {
    char label[64], id[64], out[200];
    assert_true(gw_p11_uri_object("pkcs11:token=gw;object=ops;id=%0a%ff", label, sizeof(label), id, sizeof(id)));
    assert_string_equal(label, "ops");
    assert_string_equal(id, "0aff");
    assert_true(gw_p11_uri_object("pkcs11:token=gw;id=%01", label, sizeof(label), id, sizeof(id)));
    assert_string_equal(label, "");
    assert_string_equal(id, "01");
    assert_false(gw_p11_uri_object("pkcs11:object=a-label-longer-than-eight", label, 8, id, sizeof(id)));
    assert_false(gw_p11_uri_object("nonsense", label, sizeof(label), id, sizeof(id)));
    gw_p11_uri_describe("pkcs11:token=gw;object=ops?module-path=/m.so&pin-source=file:/p", out, sizeof(out));
    assert_string_equal(out, "token=gw object=ops");
    // Every token and object attribute the URI names, as p11-kit formats them; never the query.
    gw_p11_uri_describe("pkcs11:manufacturer=x;serial=42;id=%01", out, sizeof(out));
    assert_string_equal(out, "manufacturer=x serial=42 id=%01");
    gw_p11_uri_describe("pkcs11:object=a%20b;token=gw?pin-source=file:/p", out, sizeof(out));
    assert_string_equal(out, "token=gw object=a%20b");
}

// An ECDSA signature made the way a token makes it (r || s, each the size of the order)
// must come out as DER that verifies.
static void ecdsa_round_trip(void **state) {
    EC_KEY *key = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    assert_true(EC_KEY_generate_key(key));
    const uint8_t msg[] = "the handshake transcript";
    uint8_t tbs[128];
    size_t tbs_len = 0;
    uint32_t mech = 0;
    assert_true(gw_p11_prepare(SSL_SIGN_ECDSA_SECP256R1_SHA256, msg, sizeof(msg), tbs, &tbs_len, &mech));
    assert_int_equal(mech, P11W_MECH_ECDSA);
    assert_int_equal(tbs_len, 32);
    ECDSA_SIG *sig = ECDSA_do_sign(tbs, tbs_len, key);
    uint8_t raw[64];
    assert_true(BN_bn2bin_padded(raw, 32, sig->r) && BN_bn2bin_padded(raw + 32, 32, sig->s));
    ECDSA_SIG_free(sig);
    uint8_t der[200];
    size_t der_len = 0;
    assert_true(gw_p11_finish(mech, raw, sizeof(raw), der, &der_len, sizeof(der)));
    assert_int_equal(ECDSA_verify(0, tbs, tbs_len, der, der_len, key), 1);
    raw[10] ^= 1;
    assert_true(gw_p11_finish(mech, raw, sizeof(raw), der, &der_len, sizeof(der)));
    assert_int_not_equal(ECDSA_verify(0, tbs, tbs_len, der, der_len, key), 1);
    // Malformed answers: odd length, empty, longer than any curve, no room.
    assert_false(gw_p11_finish(mech, raw, 63, der, &der_len, sizeof(der)));
    assert_false(gw_p11_finish(mech, raw, 0, der, &der_len, sizeof(der)));
    uint8_t big[300] = {1};
    assert_false(gw_p11_finish(mech, big, sizeof(big), der, &der_len, sizeof(der)));
    assert_false(gw_p11_finish(mech, raw, sizeof(raw), der, &der_len, 8));
    EC_KEY_free(key);
}

static void rsa_forms(void **state) {
    const uint8_t msg[] = "transcript";
    uint8_t tbs[128], digest[32];
    size_t tbs_len = 0;
    uint32_t mech = 0;
    SHA256(msg, sizeof(msg), digest);
    // PKCS#1 v1.5: the DigestInfo of SHA-256 (19 bytes of prefix, then the digest).
    assert_true(gw_p11_prepare(SSL_SIGN_RSA_PKCS1_SHA256, msg, sizeof(msg), tbs, &tbs_len, &mech));
    assert_int_equal(mech, P11W_MECH_RSA_PKCS);
    assert_int_equal(tbs_len, 19 + 32);
    assert_memory_equal(tbs + 19, digest, 32);
    assert_int_equal(tbs[0], 0x30);
    // PSS: the digest; the mechanism names the hash.
    assert_true(gw_p11_prepare(SSL_SIGN_RSA_PSS_RSAE_SHA256, msg, sizeof(msg), tbs, &tbs_len, &mech));
    assert_int_equal(mech, P11W_MECH_PSS_SHA256);
    assert_memory_equal(tbs, digest, 32);
    assert_true(gw_p11_prepare(SSL_SIGN_RSA_PSS_RSAE_SHA384, msg, sizeof(msg), tbs, &tbs_len, &mech));
    assert_int_equal(mech, P11W_MECH_PSS_SHA384);
    assert_int_equal(tbs_len, 48);
    assert_true(gw_p11_prepare(SSL_SIGN_RSA_PSS_RSAE_SHA512, msg, sizeof(msg), tbs, &tbs_len, &mech));
    assert_int_equal(mech, P11W_MECH_PSS_SHA512);
    // Algorithms a token key cannot make here.
    assert_false(gw_p11_prepare(SSL_SIGN_ED25519, msg, sizeof(msg), tbs, &tbs_len, &mech));
    assert_false(gw_p11_prepare(0x0000, msg, sizeof(msg), tbs, &tbs_len, &mech));
    // An RSA signature passes through as it is, if it fits.
    uint8_t sig[256], out[256];
    size_t out_len = 0;
    memset(sig, 7, sizeof(sig));
    assert_true(gw_p11_finish(P11W_MECH_RSA_PKCS, sig, sizeof(sig), out, &out_len, sizeof(out)));
    assert_int_equal(out_len, 256);
    assert_false(gw_p11_finish(P11W_MECH_PSS_SHA256, sig, sizeof(sig), out, &out_len, 100));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(uri_accepted),     cmocka_unit_test(uri_refused), cmocka_unit_test(uri_parts),
        cmocka_unit_test(ecdsa_round_trip), cmocka_unit_test(rsa_forms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
