// selfsigned: a fresh P-256 key and a self-signed certificate (an hour's validity) for the
// unit tests that need a TLS peer or a trust file. Header-only: each test links one layer.
#ifndef MTLSGW_TESTS_SELFSIGNED_H
#define MTLSGW_TESTS_SELFSIGNED_H

#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

// selfsigned makes the certificate for |cn|, with subjectAltName |san| ("IP:127.0.0.1")
// when not NULL; *|out_key| gets its key. NULL if BoringSSL refused a step.
static X509 *selfsigned(EVP_PKEY **out_key, const char *cn, const char *san) {
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    EVP_PKEY *key = EVP_PKEY_new();
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    int ok = ec && key && x && n && EC_KEY_generate_key(ec) && EVP_PKEY_assign_EC_KEY(key, ec);
    if (!ok) {
        EC_KEY_free(ec);
    }
    ok = ok && X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const uint8_t *)cn, -1, -1, 0) &&
         X509_set_subject_name(x, n) && X509_set_issuer_name(x, n) && X509_set_version(x, X509_VERSION_3) &&
         ASN1_INTEGER_set(X509_get_serialNumber(x), 1) && X509_gmtime_adj(X509_getm_notBefore(x), -60) &&
         X509_gmtime_adj(X509_getm_notAfter(x), 3600) && X509_set_pubkey(x, key);
    X509_NAME_free(n);
    if (ok && san != NULL) {
        X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, NULL, NID_subject_alt_name, san);
        ok = ext != NULL && X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    if (!ok || !X509_sign(x, key, EVP_sha256())) {
        X509_free(x);
        EVP_PKEY_free(key);
        return NULL;
    }
    *out_key = key;
    return x;
}

// selfsigned_server_ctx: a TLS 1.3 server context with a fresh key and a self-signed
// certificate for |cn| (|san| as above), issuing no tickets; *|out_cert| (if not NULL)
// gets a reference to the certificate. NULL if a step failed.
static inline SSL_CTX *selfsigned_server_ctx(const char *cn, const char *san, X509 **out_cert) {
    EVP_PKEY *key = NULL;
    X509 *x = selfsigned(&key, cn, san);
    SSL_CTX *ctx = x != NULL ? SSL_CTX_new(TLS_method()) : NULL;
    if (ctx != NULL && (!SSL_CTX_use_certificate(ctx, x) || !SSL_CTX_use_PrivateKey(ctx, key) ||
                        !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION))) {
        SSL_CTX_free(ctx);
        ctx = NULL;
    }
    if (ctx != NULL) {
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    if (ctx != NULL && out_cert != NULL) {
        *out_cert = x;
    } else {
        X509_free(x);
    }
    EVP_PKEY_free(key);
    return ctx;
}

#endif
