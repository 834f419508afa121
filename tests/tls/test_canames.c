// The CA-name matcher that picks an identity from a server's CertificateRequest: chains
// of several levels, names equal as X.509 names (case, string type) but not as bytes,
// names that differ, unparsable names, no names at all.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bytestring.h>
#include <openssl/pool.h>
#include <openssl/x509.h>

#include "gateway/tls/identity.h"

// name builds /O=o/CN=cn with |type| (MBSTRING_ASC gives a PrintableString or IA5String,
// V_ASN1_UTF8STRING a UTF8String).
static X509_NAME *name(const char *o, const char *cn, int type) {
    X509_NAME *n = X509_NAME_new();
    assert_true(X509_NAME_add_entry_by_txt(n, "O", type, (const uint8_t *)o, -1, -1, 0));
    assert_true(X509_NAME_add_entry_by_txt(n, "CN", type, (const uint8_t *)cn, -1, -1, 0));
    return n;
}

static X509 *cert(X509_NAME *subject, X509_NAME *issuer) {
    X509 *x = X509_new();
    assert_true(X509_set_subject_name(x, subject));
    assert_true(X509_set_issuer_name(x, issuer));
    X509_NAME_free(subject);
    X509_NAME_free(issuer);
    return x;
}

static STACK_OF(CRYPTO_BUFFER) * names_of(X509_NAME *const *ns, size_t n) {
    STACK_OF(CRYPTO_BUFFER) *s = sk_CRYPTO_BUFFER_new_null();
    for (size_t i = 0; i < n; i++) {
        uint8_t *der = NULL;
        int len = i2d_X509_NAME(ns[i], &der);
        assert_true(len > 0);
        sk_CRYPTO_BUFFER_push(s, CRYPTO_BUFFER_new(der, (size_t)len, NULL));
        OPENSSL_free(der);
        X509_NAME_free(ns[i]);
    }
    return s;
}

static void free_names(STACK_OF(CRYPTO_BUFFER) * s) {
    sk_CRYPTO_BUFFER_pop_free(s, CRYPTO_BUFFER_free);
}

static void issuer_of_leaf_or_of_the_chain(void **state) {
    // leaf <- Intermediate <- Root
    X509 *leaf = cert(name("t", "leaf", MBSTRING_ASC), name("t", "Intermediate", MBSTRING_ASC));
    X509 *inter = cert(name("t", "Intermediate", MBSTRING_ASC), name("t", "Root", MBSTRING_ASC));
    STACK_OF(X509) *chain = sk_X509_new_null();
    sk_X509_push(chain, inter);
    X509_NAME *root[] = {name("t", "Root", MBSTRING_ASC)};
    STACK_OF(CRYPTO_BUFFER) *n = names_of(root, 1);
    assert_true(gw_chain_issued_by_named_ca(leaf, chain, n));  // through the intermediate
    assert_false(gw_chain_issued_by_named_ca(leaf, NULL, n));  // the leaf alone is not under Root
    free_names(n);
    X509_NAME *direct[] = {name("t", "Intermediate", MBSTRING_ASC)};
    n = names_of(direct, 1);
    assert_true(gw_chain_issued_by_named_ca(leaf, NULL, n));  // the leaf's own issuer
    free_names(n);
    X509_NAME *other[] = {name("t", "Other CA", MBSTRING_ASC), name("u", "Root", MBSTRING_ASC)};
    n = names_of(other, 2);
    assert_false(gw_chain_issued_by_named_ca(leaf, chain, n));  // same CN, other O: another CA
    free_names(n);
    sk_X509_pop_free(chain, X509_free);
    X509_free(leaf);
}

static void equal_as_x509_names(void **state) {
    X509 *leaf = cert(name("mtlsgw-test", "leaf", MBSTRING_ASC), name("mtlsgw-test", "Client CA", MBSTRING_ASC));
    // The same name with other letter case and as UTF8String: equal under X.509's
    // comparison rules (RFC 5280 7.1), though not byte for byte.
    X509_NAME *n1[] = {name("MTLSGW-TEST", "client ca", V_ASN1_UTF8STRING)};
    STACK_OF(CRYPTO_BUFFER) *n = names_of(n1, 1);
    assert_true(gw_chain_issued_by_named_ca(leaf, NULL, n));
    free_names(n);
    X509_NAME *n2[] = {name("mtlsgw-test", "Client CA 2", MBSTRING_ASC)};
    n = names_of(n2, 1);
    assert_false(gw_chain_issued_by_named_ca(leaf, NULL, n));
    free_names(n);
    X509_free(leaf);
}

static void unparsable_or_no_names(void **state) {
    X509 *leaf = cert(name("t", "leaf", MBSTRING_ASC), name("t", "CA", MBSTRING_ASC));
    STACK_OF(CRYPTO_BUFFER) *n = sk_CRYPTO_BUFFER_new_null();
    assert_false(gw_chain_issued_by_named_ca(leaf, NULL, n));            // no names
    static const uint8_t junk[] = {0x30, 0x05, 0x31, 0x03, 0x30, 0x01};  // truncated
    sk_CRYPTO_BUFFER_push(n, CRYPTO_BUFFER_new(junk, sizeof(junk), NULL));
    assert_false(gw_chain_issued_by_named_ca(leaf, NULL, n));  // skipped, not a crash
    X509_NAME *ca[] = {name("t", "CA", MBSTRING_ASC)};
    uint8_t *der = NULL;
    int len = i2d_X509_NAME(ca[0], &der);
    sk_CRYPTO_BUFFER_push(n, CRYPTO_BUFFER_new(der, (size_t)len, NULL));
    OPENSSL_free(der);
    X509_NAME_free(ca[0]);
    assert_true(gw_chain_issued_by_named_ca(leaf, NULL, n));  // a good name after a bad one
    free_names(n);
    assert_false(gw_chain_issued_by_named_ca(leaf, NULL, NULL));
    X509_free(leaf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(issuer_of_leaf_or_of_the_chain),
        cmocka_unit_test(equal_as_x509_names),
        cmocka_unit_test(unparsable_or_no_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
