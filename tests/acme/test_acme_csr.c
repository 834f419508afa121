// The CSR an ACME order is finalized with: signed by the new key, CN the first name,
// every name in subjectAltName as DNS or IP; no names, or a name that is neither, refused.
// And the challenge answers: key authorization (token "." thumbprint) and its dns-01 TXT
// value (base64url SHA-256, 43 characters).
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/acme/client.h"
#include "gateway/acme/csr.h"
#include "gateway/acme/jws.h"

static EVP_PKEY *p256(void) {
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    assert_true(EC_KEY_generate_key(ec));
    EVP_PKEY *key = EVP_PKEY_new();
    assert_true(EVP_PKEY_assign_EC_KEY(key, ec));
    return key;
}

static void csr_names_and_signature(void **state) {
    EVP_PKEY *key = p256();
    const char *names[] = {"orders-client.dc2.test", "192.0.2.7", "2001:db8::7"};
    uint8_t *der;
    size_t len;
    char err[200];
    assert_true(gw_acme_csr(key, names, 3, &der, &len, err, sizeof(err)));
    const uint8_t *p = der;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)len);
    assert_non_null(req);
    assert_int_equal(X509_REQ_verify(req, key), 1);
    char cn[100];
    assert_true(X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(req), NID_commonName, cn, sizeof(cn)) > 0);
    assert_string_equal(cn, "orders-client.dc2.test");
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    GENERAL_NAMES *san = NULL;
    for (size_t i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name) {
            san = X509V3_EXT_d2i(e);
        }
    }
    assert_non_null(san);
    assert_int_equal(sk_GENERAL_NAME_num(san), 3);
    GENERAL_NAME *g = sk_GENERAL_NAME_value(san, 0);
    assert_int_equal(g->type, GEN_DNS);
    assert_memory_equal(ASN1_STRING_get0_data(g->d.dNSName), "orders-client.dc2.test", 22);
    g = sk_GENERAL_NAME_value(san, 1);
    assert_int_equal(g->type, GEN_IPADD);
    assert_int_equal(ASN1_STRING_length(g->d.iPAddress), 4);
    assert_memory_equal(ASN1_STRING_get0_data(g->d.iPAddress), "\xc0\x00\x02\x07", 4);
    g = sk_GENERAL_NAME_value(san, 2);
    assert_int_equal(g->type, GEN_IPADD);
    assert_int_equal(ASN1_STRING_length(g->d.iPAddress), 16);
    GENERAL_NAMES_free(san);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    free(der);
    EVP_PKEY_free(key);
}

static void csr_refusals(void **state) {
    EVP_PKEY *key = p256();
    uint8_t *der = NULL;
    size_t len;
    char err[200];
    assert_false(gw_acme_csr(key, NULL, 0, &der, &len, err, sizeof(err)));
    assert_non_null(strstr(err, "at least one name"));
    const char *bad[] = {"a.test,IP:10.0.0.1"};  // an injection into the SAN list
    assert_false(gw_acme_csr(key, bad, 1, &der, &len, err, sizeof(err)));
    assert_non_null(strstr(err, "not a DNS name or an IP address"));
    assert_null(der);
    EVP_PKEY_free(key);
}

static void challenge_answers(void **state) {
    EVP_PKEY *key = p256();
    char *tp = gw_jwk_thumbprint(key);
    char *ka = gw_acme_key_authorization(key, "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA");
    char want[200];
    snprintf(want, sizeof(want), "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.%s", tp);
    assert_string_equal(ka, want);
    char *txt = gw_acme_dns01_value(ka);
    assert_int_equal(strlen(txt), 43);
    uint8_t d[SHA256_DIGEST_LENGTH], *raw;
    size_t raw_len;
    SHA256((const uint8_t *)ka, strlen(ka), d);
    assert_true(gw_b64url_decode(txt, &raw, &raw_len));
    assert_int_equal(raw_len, 32);
    assert_memory_equal(raw, d, 32);
    free(raw);
    free(txt);
    free(ka);
    free(tp);
    EVP_PKEY_free(key);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(csr_names_and_signature),
        cmocka_unit_test(csr_refusals),
        cmocka_unit_test(challenge_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
