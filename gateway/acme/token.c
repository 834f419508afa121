// token: keys made and used on a PKCS#11 token for certificate requests (identity new
// --pkcs11, and ACME renewals of an identity whose key is a pkcs11: URI): the key pair
// generated there, its public key read from the signer's answer, a CSR signed there.
#include "gateway/acme/token.h"

#include <errno.h>
#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// gw_token_public_key turns the KEYGEN answer (two length-prefixed strings) into a key.
EVP_PKEY *gw_token_public_key(int ec, const uint8_t *p, size_t len) {
    uint32_t l1, l2;
    if (len < 4 || (memcpy(&l1, p, 4), l1 > len - 4) || len - 4 - l1 < 4 ||
        (memcpy(&l2, p + 4 + l1, 4), l2 != len - 8 - l1)) {
        return NULL;
    }
    const uint8_t *a = p + 4, *b = p + 8 + l1;
    EVP_PKEY *pkey = EVP_PKEY_new();
    if (pkey == NULL) {
        return NULL;
    }
    if (ec) {
        static const uint8_t p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
        static const uint8_t p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
        int nid = l1 == sizeof(p256) && memcmp(a, p256, l1) == 0   ? NID_X9_62_prime256v1
                  : l1 == sizeof(p384) && memcmp(a, p384, l1) == 0 ? NID_secp384r1
                                                                   : 0;
        // CKA_EC_POINT is the point inside a DER OCTET STRING (some tokens give it bare).
        CBS cbs, point;
        CBS_init(&cbs, b, l2);
        if (!CBS_get_asn1(&cbs, &point, CBS_ASN1_OCTETSTRING) || CBS_len(&cbs) != 0) {
            CBS_init(&point, b, l2);
        }
        EC_KEY *key = nid ? EC_KEY_new_by_curve_name(nid) : NULL;
        EC_POINT *pt = key ? EC_POINT_new(EC_KEY_get0_group(key)) : NULL;
        if (pt != NULL && EC_POINT_oct2point(EC_KEY_get0_group(key), pt, CBS_data(&point), CBS_len(&point), NULL) &&
            EC_KEY_set_public_key(key, pt) && EVP_PKEY_assign_EC_KEY(pkey, key)) {
            EC_POINT_free(pt);
            return pkey;
        }
        EC_POINT_free(pt);
        EC_KEY_free(key);
    } else {
        RSA *rsa = RSA_new();
        BIGNUM *n = BN_bin2bn(a, l1, NULL), *e = BN_bin2bn(b, l2, NULL);
        if (rsa != NULL && n != NULL && e != NULL && RSA_set0_key(rsa, n, e, NULL)) {
            n = e = NULL;
            if (EVP_PKEY_assign_RSA(pkey, rsa)) {
                return pkey;
            }
        }
        BN_free(n);
        BN_free(e);
        RSA_free(rsa);
    }
    EVP_PKEY_free(pkey);
    return NULL;
}

gw_p11 *gw_token_open(const char *uri, int uid, int gid, uint32_t flags, int *bad_arg, char *err, size_t cap) {
    char *module = NULL, *pin_file = NULL, e[700];
    gw_p11 *token = NULL;
    *bad_arg = 1;
    if (!gw_p11_uri_parse(uri, &module, &pin_file, e, sizeof(e))) {
        snprintf(err, cap, "--pkcs11: %s", e);
    } else if (module == NULL) {
        snprintf(err, cap,
                 "--pkcs11: the URI needs module-path=/path/to/module.so, e.g. "
                 "?module-path=/usr/lib/softhsm/libsofthsm2.so");
    } else if (pin_file == NULL) {
        snprintf(err, cap,
                 "--pkcs11: the URI needs pin-source=file:/path/to/pin (a file of mode 0600 holding the token's "
                 "user PIN)");
    } else {
        *bad_arg = 0;
        char pin[256] = "";
        FILE *f = fopen(pin_file, "re");
        if (f == NULL) {
            snprintf(err, cap, "pin-source %s: %s", pin_file, strerror(errno));
        } else {
            if (fgets(pin, sizeof(pin), f) == NULL) {
                pin[0] = '\0';
            }
            fclose(f);
            pin[strcspn(pin, "\r\n")] = '\0';
            token = gw_p11_open(module, uri, pin, uid, gid, flags, e, sizeof(e));
            OPENSSL_cleanse(pin, sizeof(pin));
            if (token == NULL) {
                snprintf(err, cap, "%s", e);
            }
        }
    }
    free(module);
    free(pin_file);
    return token;
}

EVP_PKEY *gw_token_generate(gw_p11 *token, const char *uri, const char *key_type, int *bad_arg, char *err, size_t cap) {
    char label[128], id_hex[130], e[700];
    uint32_t kind = strcmp(key_type, "ec-p256") == 0    ? P11W_KEY_EC_P256
                    : strcmp(key_type, "ec-p384") == 0  ? P11W_KEY_EC_P384
                    : strcmp(key_type, "rsa-2048") == 0 ? P11W_KEY_RSA_2048
                    : strcmp(key_type, "rsa-3072") == 0 ? P11W_KEY_RSA_3072
                                                        : 0;
    *bad_arg = 1;
    if (kind == 0) {
        snprintf(err, cap, "--key for a token must be ec-p256, ec-p384, rsa-2048 or rsa-3072, not \"%s\"", key_type);
        return NULL;
    }
    if (!gw_p11_uri_object(uri, label, sizeof(label), id_hex, sizeof(id_hex)) || label[0] == '\0') {
        snprintf(err, cap, "--pkcs11: name the new key with object=LABEL in the URI");
        return NULL;
    }
    *bad_arg = 0;
    uint8_t pub[P11W_MAX];
    size_t pub_len = 0;
    EVP_PKEY *pkey = NULL;
    if (!gw_p11_keygen(token, kind, label, id_hex, pub, &pub_len, sizeof(pub), e, sizeof(e))) {
        snprintf(err, cap, "%s", e);
    } else if ((pkey = gw_token_public_key(kind == P11W_KEY_EC_P256 || kind == P11W_KEY_EC_P384, pub, pub_len)) ==
               NULL) {
        snprintf(err, cap, "the token's public key could not be read");
    }
    return pkey;
}

EVP_PKEY *gw_token_keygen(const char *uri, const char *key_type, int uid, int gid, gw_p11 **out_token, int *bad_arg,
                          char *err, size_t cap) {
    char label[128], id_hex[130];
    if (!gw_p11_uri_object(uri, label, sizeof(label), id_hex, sizeof(id_hex)) || label[0] == '\0') {
        *bad_arg = 1;
        snprintf(err, cap, "--pkcs11: name the new key with object=LABEL in the URI");
        return NULL;
    }
    gw_p11 *token = gw_token_open(uri, uid, gid, P11W_HELLO_NO_KEY, bad_arg, err, cap);
    EVP_PKEY *pkey = token ? gw_token_generate(token, uri, key_type, bad_arg, err, cap) : NULL;
    if (pkey == NULL) {
        gw_p11_free(token);
        return NULL;
    }
    *out_token = token;
    return pkey;
}

// gw_token_sign_req signs |*req| with the token's key: its CertificationRequestInfo, then
// the algorithm and the signature around it (RFC 2986), parsed back into |*req|.
int gw_token_sign_req(X509_REQ **req, gw_p11 *token, EVP_PKEY *pub, char *err_out, size_t err_cap) {
    static const uint8_t ecdsa_sha256[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
    static const uint8_t ecdsa_sha384[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03};
    static const uint8_t rsa_sha256[] = {0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                         0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00};
    int ec = EVP_PKEY_id(pub) == EVP_PKEY_EC;
    int p384 = ec && EC_GROUP_get_curve_name(EC_KEY_get0_group(EVP_PKEY_get0_EC_KEY(pub))) == NID_secp384r1;
    uint16_t sigalg = !ec    ? SSL_SIGN_RSA_PKCS1_SHA256
                      : p384 ? SSL_SIGN_ECDSA_SECP384R1_SHA384
                             : SSL_SIGN_ECDSA_SECP256R1_SHA256;
    const uint8_t *alg = !ec ? rsa_sha256 : p384 ? ecdsa_sha384 : ecdsa_sha256;
    size_t alg_len = !ec ? sizeof(rsa_sha256) : sizeof(ecdsa_sha256);
    uint8_t *tbs = NULL, tbs_sig[128], raw[1024], sig[1100];
    size_t tbs_sig_len = 0, raw_len = 0, sig_len = 0;
    uint32_t mech = 0;
    char err[600];
    int tbs_len = i2d_re_X509_REQ_tbs(*req, &tbs);
    int ok = tbs_len > 0 && gw_p11_prepare(sigalg, tbs, (size_t)tbs_len, tbs_sig, &tbs_sig_len, &mech);
    if (ok && !gw_p11_sign(token, mech, tbs_sig, tbs_sig_len, raw, &raw_len, sizeof(raw), GW_P11_SIGN_TIMEOUT_MS, err,
                           sizeof(err))) {
        snprintf(err_out, err_cap, "the token did not sign the request: %s", err);
        ok = 0;
    }
    ok = ok && gw_p11_finish(mech, raw, raw_len, sig, &sig_len, sizeof(sig));
    CBB cbb, seq, bits;
    uint8_t *der = NULL;
    size_t der_len = 0;
    ok = ok && CBB_init(&cbb, 0);
    if (ok) {
        ok = CBB_add_asn1(&cbb, &seq, CBS_ASN1_SEQUENCE) && CBB_add_bytes(&seq, tbs, (size_t)tbs_len) &&
             CBB_add_bytes(&seq, alg, alg_len) && CBB_add_asn1(&seq, &bits, CBS_ASN1_BITSTRING) &&
             CBB_add_u8(&bits, 0) && CBB_add_bytes(&bits, sig, sig_len) && CBB_finish(&cbb, &der, &der_len);
        if (!ok) {
            CBB_cleanup(&cbb);
        }
    }
    OPENSSL_free(tbs);
    const uint8_t *p = der;
    X509_REQ *signed_req = ok ? d2i_X509_REQ(NULL, &p, (long)der_len) : NULL;
    OPENSSL_free(der);
    if (signed_req == NULL || X509_REQ_verify(signed_req, pub) != 1) {
        X509_REQ_free(signed_req);
        if (ok) {
            snprintf(err_out, err_cap, "the token's signature of the request does not verify");
        }
        ERR_clear_error();
        return 0;
    }
    X509_REQ_free(*req);
    *req = signed_req;
    return 1;
}
