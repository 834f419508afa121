// csr: the CSR of an ACME order (see csr.h).
#include "gateway/acme/csr.h"

#include <openssl/bn.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/acme/token.h"
#include "gateway/base/netutil.h"

int gw_acme_csr(EVP_PKEY *key, const char *const *names, size_t num_names, uint8_t **der, size_t *der_len, char *err,
                size_t cap) {
    return gw_acme_csr_token(key, NULL, names, num_names, der, der_len, err, cap);
}

int gw_acme_csr_token(EVP_PKEY *key, gw_p11 *token, const char *const *names, size_t num_names, uint8_t **der,
                      size_t *der_len, char *err, size_t cap) {
    if (num_names == 0) {
        snprintf(err, cap, "a certificate needs at least one name");
        return 0;
    }
    // "DNS:a,IP:192.0.2.1": the names were checked by the config (no commas in them).
    size_t san_cap = 16;
    for (size_t i = 0; i < num_names; i++) {
        san_cap += strlen(names[i]) + 5;
    }
    char *san = malloc(san_cap);
    X509_REQ *req = X509_REQ_new();
    X509_NAME *subject = X509_NAME_new();
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    int ok = 0;
    if (san == NULL || req == NULL || subject == NULL || exts == NULL) {
        snprintf(err, cap, "out of memory");
        goto done;
    }
    san[0] = '\0';
    for (size_t i = 0; i < num_names; i++) {
        if (strchr(names[i], ',') != NULL) {
            snprintf(err, cap, "%s: not a DNS name or an IP address", names[i]);
            goto done;
        }
        strcat(san, i ? "," : "");
        strcat(san, gw_host_is_ip(names[i]) ? "IP:" : "DNS:");
        strcat(san, names[i]);
    }
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, NULL, NID_subject_alt_name, san);
    if (ext == NULL || !sk_X509_EXTENSION_push(exts, ext)) {
        X509_EXTENSION_free(ext);
        snprintf(err, cap, "cannot encode the names %s", san);
        goto done;
    }
    // CN: the first name, when it fits (64 characters); the names that count are the SANs.
    if (strlen(names[0]) <= 64 &&
        !X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, (const uint8_t *)names[0], -1, -1, 0)) {
        snprintf(err, cap, "cannot encode the subject CN=%s", names[0]);
        goto done;
    }
    int len;
    uint8_t *p;
    if (!X509_REQ_set_version(req, X509_REQ_VERSION_1) || !X509_REQ_set_subject_name(req, subject) ||
        !X509_REQ_set_pubkey(req, key) || !X509_REQ_add_extensions(req, exts)) {
        snprintf(err, cap, "cannot build the CSR");
        goto done;
    }
    if (token != NULL && !gw_token_sign_req(&req, token, key, err, cap)) {
        goto done;  // (the token's words are in err)
    }
    if ((token == NULL && !X509_REQ_sign(req, key, EVP_sha256())) || (len = i2d_X509_REQ(req, NULL)) <= 0 ||
        (*der = malloc((size_t)len)) == NULL) {
        uint32_t code = ERR_peek_error();
        snprintf(err, cap, "cannot sign the CSR: %s", code ? ERR_reason_error_string(code) : "out of memory");
        goto done;
    }
    p = *der;
    *der_len = (size_t)i2d_X509_REQ(req, &p);
    ok = 1;
done:
    ERR_clear_error();
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_NAME_free(subject);
    X509_REQ_free(req);
    free(san);
    return ok;
}

EVP_PKEY *gw_key_generate(const char *type) {
    EVP_PKEY *pkey = EVP_PKEY_new();
    if (pkey == NULL) {
        return NULL;
    }
    if (strcmp(type, "ec-p256") == 0 || strcmp(type, "ec-p384") == 0) {
        EC_KEY *ec = EC_KEY_new_by_curve_name(strcmp(type, "ec-p256") == 0 ? NID_X9_62_prime256v1 : NID_secp384r1);
        if (ec != NULL && EC_KEY_generate_key(ec) && EVP_PKEY_assign_EC_KEY(pkey, ec)) {
            return pkey;
        }
        EC_KEY_free(ec);
    } else if (strcmp(type, "rsa-2048") == 0 || strcmp(type, "rsa-3072") == 0) {
        RSA *rsa = RSA_new();
        BIGNUM *e = BN_new();
        int ok = rsa && e && BN_set_word(e, RSA_F4) &&
                 RSA_generate_key_ex(rsa, strcmp(type, "rsa-2048") == 0 ? 2048 : 3072, e, NULL) &&
                 EVP_PKEY_assign_RSA(pkey, rsa);
        BN_free(e);
        if (ok) {
            return pkey;
        }
        RSA_free(rsa);
    } else if (strcmp(type, "ed25519") == 0) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
        EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
        if (kctx != NULL && EVP_PKEY_keygen_init(kctx) && EVP_PKEY_keygen(kctx, &pkey)) {
            EVP_PKEY_CTX_free(kctx);
            return pkey;
        }
        EVP_PKEY_CTX_free(kctx);
        return NULL;
    }
    EVP_PKEY_free(pkey);
    return NULL;
}
