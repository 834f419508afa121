// ACME's JWS layer: base64url both ways and its refusals, the RFC 7638 thumbprint vector,
// RFC 7515's HS256 vector (appendix A.1), JWKs whose coordinates need their leading zero
// bytes, ES256 / ES384 / RS256 requests whose signatures verify over exactly the signed
// input (ECDSA as r || s, RFC 7518 section 3.4), and an External Account Binding.
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/nid.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/acme/jws.h"

static void base64url_round_trip_and_refusals(void **state) {
    static const uint8_t bytes[] = {0xfb, 0xff, 0xfe, 0x00, 0x3e, 0x3f};
    char *s = gw_b64url(bytes, sizeof(bytes));
    assert_string_equal(s, "-__-AD4_");  // '-' and '_' for '+' and '/', no padding
    uint8_t *out;
    size_t len;
    assert_true(gw_b64url_decode(s, &out, &len));
    assert_int_equal(len, sizeof(bytes));
    assert_memory_equal(out, bytes, len);
    free(out);
    free(s);
    s = gw_b64url(bytes, 1);
    assert_string_equal(s, "-w");
    free(s);
    assert_true(gw_b64url_decode("", &out, &len));
    assert_int_equal(len, 0);
    free(out);
    assert_false(gw_b64url_decode("+w", &out, &len));     // standard alphabet
    assert_false(gw_b64url_decode("-w==", &out, &len));   // padding
    assert_false(gw_b64url_decode("abcde", &out, &len));  // a length no bytes encode to
    assert_false(gw_b64url_decode("ab c", &out, &len));
}

// RFC 7638 section 3.1: the RSA key of RFC 7517 appendix A.1 and its thumbprint.
static void rfc7638_thumbprint(void **state) {
    static const char n64[] =
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
        "BJECPebWKRXjBZCiFV4n3oknj"
        "hMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
        "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQ"
        "vRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-"
        "kEgU8awapJz"
        "KnqDKgw";
    uint8_t *n;
    size_t n_len;
    assert_true(gw_b64url_decode(n64, &n, &n_len));
    RSA *rsa = RSA_new();
    BIGNUM *bn = BN_bin2bn(n, n_len, NULL), *e = BN_new();
    BN_set_word(e, 65537);
    assert_true(RSA_set0_key(rsa, bn, e, NULL));
    EVP_PKEY *key = EVP_PKEY_new();
    assert_true(EVP_PKEY_assign_RSA(key, rsa));
    assert_string_equal(gw_jws_alg(key), "RS256");
    char *tp = gw_jwk_thumbprint(key);
    assert_string_equal(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    json_t *jwk = gw_jwk_public(key);
    assert_string_equal(json_string_value(json_object_get(jwk, "n")), n64);
    assert_string_equal(json_string_value(json_object_get(jwk, "e")), "AQAB");
    json_decref(jwk);
    free(tp);
    free(n);
    EVP_PKEY_free(key);
}

// RFC 7515 appendix A.1: HS256 over the example's signing input.
static void rfc7515_hs256(void **state) {
    uint8_t *k;
    size_t k_len;
    assert_true(gw_b64url_decode(
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow", &k, &k_len));
    char *sig = gw_jws_hs256(k, k_len,
                             "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
                             "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0"
                             "cnVlfQ");
    assert_string_equal(sig, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
    free(sig);
    free(k);
}

static EVP_PKEY *ec_key(int nid) {
    EC_KEY *ec = EC_KEY_new_by_curve_name(nid);
    assert_true(EC_KEY_generate_key(ec));
    EVP_PKEY *key = EVP_PKEY_new();
    assert_true(EVP_PKEY_assign_EC_KEY(key, ec));
    return key;
}

// A P-256 key whose x coordinate has a leading zero byte (one in 256): the JWK keeps the
// full 32 bytes, as RFC 7518 section 6.2.1.2 asks.
static void jwk_coordinates_keep_their_width(void **state) {
    for (int tries = 0; tries < 20000; tries++) {
        EVP_PKEY *key = ec_key(NID_X9_62_prime256v1);
        const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(key);
        BIGNUM *x = BN_new(), *y = BN_new();
        assert_true(EC_POINT_get_affine_coordinates_GFp(EC_KEY_get0_group(ec), EC_KEY_get0_public_key(ec), x, y, NULL));
        int short_x = BN_num_bytes(x) < 32;
        if (short_x) {
            json_t *jwk = gw_jwk_public(key);
            uint8_t *raw, want[32];
            size_t len;
            assert_true(gw_b64url_decode(json_string_value(json_object_get(jwk, "x")), &raw, &len));
            assert_int_equal(len, 32);
            assert_true(BN_bn2bin_padded(want, 32, x));
            assert_memory_equal(raw, want, 32);
            assert_string_equal(json_string_value(json_object_get(jwk, "crv")), "P-256");
            assert_string_equal(json_string_value(json_object_get(jwk, "kty")), "EC");
            free(raw);
            json_decref(jwk);
        }
        BN_free(x);
        BN_free(y);
        EVP_PKEY_free(key);
        if (short_x) {
            return;
        }
    }
    fail_msg("no key with a short x coordinate in 20000 tries");
}

// decode_part: the base64url JSON part of a JWS, parsed.
static json_t *decode_part(const char *b64) {
    uint8_t *raw;
    size_t len;
    assert_true(gw_b64url_decode(b64, &raw, &len));
    json_t *j = json_loadb((const char *)raw, len, 0, NULL);
    free(raw);
    return j;
}

// verify_ecdsa checks |jws|'s signature as r || s over "protected.payload".
static void verify_ecdsa(const EVP_PKEY *key, json_t *jws, size_t width, const EVP_MD *md) {
    const char *p = json_string_value(json_object_get(jws, "protected"));
    const char *pl = json_string_value(json_object_get(jws, "payload"));
    char *input = malloc(strlen(p) + strlen(pl) + 2);
    strcpy(input, p);
    strcat(input, ".");
    strcat(input, pl);
    uint8_t digest[EVP_MAX_MD_SIZE], *sig;
    unsigned dlen;
    size_t sig_len;
    assert_true(EVP_Digest(input, strlen(input), digest, &dlen, md, NULL));
    assert_true(gw_b64url_decode(json_string_value(json_object_get(jws, "signature")), &sig, &sig_len));
    assert_int_equal(sig_len, 2 * width);
    ECDSA_SIG *es = ECDSA_SIG_new();
    BN_bin2bn(sig, width, es->r);
    BN_bin2bn(sig + width, width, es->s);
    assert_int_equal(ECDSA_do_verify(digest, dlen, es, EVP_PKEY_get0_EC_KEY((EVP_PKEY *)key)), 1);
    ECDSA_SIG_free(es);
    free(sig);
    free(input);
}

static void es256_new_account_request(void **state) {
    EVP_PKEY *key = ec_key(NID_X9_62_prime256v1);
    json_t *payload = json_pack("{s:b, s:[s]}", "termsOfServiceAgreed", 1, "contact", "mailto:ops@example.com");
    char *text = gw_jws_sign(key, NULL, "nonce-1", "https://ca.test/acme/new-account", payload);
    assert_non_null(text);
    json_t *jws = json_loads(text, 0, NULL);
    json_t *h = decode_part(json_string_value(json_object_get(jws, "protected")));
    assert_string_equal(json_string_value(json_object_get(h, "alg")), "ES256");
    assert_string_equal(json_string_value(json_object_get(h, "nonce")), "nonce-1");
    assert_string_equal(json_string_value(json_object_get(h, "url")), "https://ca.test/acme/new-account");
    assert_null(json_object_get(h, "kid"));
    json_t *jwk = gw_jwk_public(key);
    assert_true(json_equal(json_object_get(h, "jwk"), jwk));  // a new account names its key
    json_t *pl = decode_part(json_string_value(json_object_get(jws, "payload")));
    assert_true(json_equal(pl, payload));
    verify_ecdsa(key, jws, 32, EVP_sha256());
    json_decref(jwk);
    json_decref(pl);
    json_decref(h);
    json_decref(jws);
    json_decref(payload);
    free(text);
    EVP_PKEY_free(key);
}

static void es384_post_as_get_with_kid(void **state) {
    EVP_PKEY *key = ec_key(NID_secp384r1);
    char *text = gw_jws_sign(key, "https://ca.test/acme/acct/7", "n2", "https://ca.test/acme/order/1", NULL);
    json_t *jws = json_loads(text, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(jws, "payload")), "");  // POST-as-GET
    json_t *h = decode_part(json_string_value(json_object_get(jws, "protected")));
    assert_string_equal(json_string_value(json_object_get(h, "alg")), "ES384");
    assert_string_equal(json_string_value(json_object_get(h, "kid")), "https://ca.test/acme/acct/7");
    assert_null(json_object_get(h, "jwk"));
    verify_ecdsa(key, jws, 48, EVP_sha384());
    json_decref(h);
    json_decref(jws);
    free(text);
    EVP_PKEY_free(key);
}

static void rs256_signature_verifies(void **state) {
    RSA *rsa = RSA_new();
    BIGNUM *e = BN_new();
    BN_set_word(e, 65537);
    assert_true(RSA_generate_key_ex(rsa, 2048, e, NULL));
    BN_free(e);
    EVP_PKEY *key = EVP_PKEY_new();
    assert_true(EVP_PKEY_assign_RSA(key, rsa));
    json_t *payload = json_pack("{s:s}", "csr", "AAAA");
    char *text = gw_jws_sign(key, "https://ca.test/acct/1", "n3", "https://ca.test/finalize/1", payload);
    json_t *jws = json_loads(text, 0, NULL);
    const char *p = json_string_value(json_object_get(jws, "protected"));
    const char *pl = json_string_value(json_object_get(jws, "payload"));
    char input[4096];
    snprintf(input, sizeof(input), "%s.%s", p, pl);
    uint8_t *sig;
    size_t sig_len;
    assert_true(gw_b64url_decode(json_string_value(json_object_get(jws, "signature")), &sig, &sig_len));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_true(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key));
    assert_int_equal(EVP_DigestVerify(ctx, sig, sig_len, (const uint8_t *)input, strlen(input)), 1);
    EVP_MD_CTX_free(ctx);
    free(sig);
    json_decref(jws);
    json_decref(payload);
    free(text);
    EVP_PKEY_free(key);
}

static void keys_no_jws_algorithm_names_are_refused(void **state) {
    EVP_PKEY *key = ec_key(NID_secp521r1);
    assert_null(gw_jws_alg(key));
    assert_null(gw_jwk_public(key));
    assert_null(gw_jws_sign(key, NULL, "n", "https://ca.test/x", NULL));
    EVP_PKEY_free(key);
}

// RFC 8555 section 7.3.4: an HS256 JWS over the account key's JWK, its kid the CA's.
static void external_account_binding(void **state) {
    EVP_PKEY *key = ec_key(NID_X9_62_prime256v1);
    static const uint8_t hmac_key[] = "a secret the CA gave, thirty-two";
    json_t *eab = gw_jws_eab(key, "kid-1", hmac_key, sizeof(hmac_key) - 1, "https://ca.test/acme/new-account");
    assert_non_null(eab);
    json_t *h = decode_part(json_string_value(json_object_get(eab, "protected")));
    assert_string_equal(json_string_value(json_object_get(h, "alg")), "HS256");
    assert_string_equal(json_string_value(json_object_get(h, "kid")), "kid-1");
    assert_string_equal(json_string_value(json_object_get(h, "url")), "https://ca.test/acme/new-account");
    assert_null(json_object_get(h, "nonce"));  // no nonce in the inner JWS
    json_t *pl = decode_part(json_string_value(json_object_get(eab, "payload")));
    json_t *jwk = gw_jwk_public(key);
    assert_true(json_equal(pl, jwk));
    char input[2048];
    snprintf(input, sizeof(input), "%s.%s", json_string_value(json_object_get(eab, "protected")),
             json_string_value(json_object_get(eab, "payload")));
    uint8_t mac[32];
    unsigned mac_len;
    HMAC(EVP_sha256(), hmac_key, sizeof(hmac_key) - 1, (const uint8_t *)input, strlen(input), mac, &mac_len);
    char *want = gw_b64url(mac, mac_len);
    assert_string_equal(json_string_value(json_object_get(eab, "signature")), want);
    free(want);
    json_decref(jwk);
    json_decref(pl);
    json_decref(h);
    json_decref(eab);
    EVP_PKEY_free(key);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(base64url_round_trip_and_refusals),
        cmocka_unit_test(rfc7638_thumbprint),
        cmocka_unit_test(rfc7515_hs256),
        cmocka_unit_test(jwk_coordinates_keep_their_width),
        cmocka_unit_test(es256_new_account_request),
        cmocka_unit_test(es384_post_as_get_with_kid),
        cmocka_unit_test(rs256_signature_verifies),
        cmocka_unit_test(keys_no_jws_algorithm_names_are_refused),
        cmocka_unit_test(external_account_binding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
