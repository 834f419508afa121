// jws: base64url, JWK, thumbprints and JWS for ACME (see jws.h).
#include "gateway/acme/jws.h"

#include <openssl/base64.h>
#include <openssl/bn.h>
#include <openssl/digest.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/hmac.h>
#include <openssl/nid.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

char *gw_b64url(const uint8_t *p, size_t n) {
    size_t cap;
    if (!EVP_EncodedLength(&cap, n)) {
        return NULL;
    }
    char *out = malloc(cap);
    if (out == NULL) {
        return NULL;
    }
    size_t len = EVP_EncodeBlock((uint8_t *)out, p, n);
    while (len > 0 && out[len - 1] == '=') {
        len--;
    }
    out[len] = '\0';
    for (size_t i = 0; i < len; i++) {
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    }
    return out;
}

int gw_b64url_valid(const char *s) {
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) {
            return 0;
        }
    }
    return 1;
}

int gw_b64url_decode(const char *s, uint8_t **out, size_t *out_len) {
    size_t n = strlen(s);
    if (n % 4 == 1 || !gw_b64url_valid(s)) {
        return 0;  // no number of bytes encodes to that length; or not the alphabet
    }
    char *std = malloc(n + 3);
    if (std == NULL) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        std[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    }
    size_t padded = n;
    while (padded % 4 != 0) {
        std[padded++] = '=';
    }
    size_t max;
    uint8_t *buf = EVP_DecodedLength(&max, padded) ? malloc(max + 1) : NULL;
    size_t len = 0;
    int ok = buf != NULL && EVP_DecodeBase64(buf, &len, max, (const uint8_t *)std, padded);
    free(std);
    if (!ok) {
        free(buf);
        return 0;
    }
    *out = buf;
    *out_len = len;
    return 1;
}

// ---- keys ----

static int ec_size(const EVP_PKEY *key) {
    const EC_KEY *ec = EVP_PKEY_get0_EC_KEY((EVP_PKEY *)key);
    if (ec == NULL) {
        return 0;
    }
    switch (EC_GROUP_get_curve_name(EC_KEY_get0_group(ec))) {
        case NID_X9_62_prime256v1:
            return 32;
        case NID_secp384r1:
            return 48;
        default:
            return 0;
    }
}

const char *gw_jws_alg(const EVP_PKEY *key) {
    if (key == NULL) {
        return NULL;
    }
    switch (EVP_PKEY_id(key)) {
        case EVP_PKEY_EC:
            return ec_size(key) == 32 ? "ES256" : ec_size(key) == 48 ? "ES384" : NULL;
        case EVP_PKEY_RSA:
            return EVP_PKEY_bits(key) >= 2048 ? "RS256" : NULL;
        default:
            return NULL;
    }
}

// bn_b64url: |bn| big-endian in |width| bytes (0: its own length), base64url.
static char *bn_b64url(const BIGNUM *bn, size_t width) {
    size_t n = width ? width : BN_num_bytes(bn);
    uint8_t *buf = malloc(n ? n : 1);
    char *out = NULL;
    if (buf != NULL && BN_bn2bin_padded(buf, n, bn)) {
        out = gw_b64url(buf, n);
    }
    free(buf);
    return out;
}

json_t *gw_jwk_public(const EVP_PKEY *key) {
    const char *alg = gw_jws_alg(key);
    if (alg == NULL) {
        return NULL;
    }
    char *a = NULL, *b = NULL;
    json_t *jwk = NULL;
    if (alg[0] == 'E') {
        const EC_KEY *ec = EVP_PKEY_get0_EC_KEY((EVP_PKEY *)key);
        size_t w = (size_t)ec_size(key);
        BIGNUM *x = BN_new(), *y = BN_new();
        if (x != NULL && y != NULL &&
            EC_POINT_get_affine_coordinates_GFp(EC_KEY_get0_group(ec), EC_KEY_get0_public_key(ec), x, y, NULL)) {
            a = bn_b64url(x, w);
            b = bn_b64url(y, w);
        }
        BN_free(x);
        BN_free(y);
        if (a != NULL && b != NULL) {
            jwk = json_pack("{s:s, s:s, s:s, s:s}", "crv", w == 32 ? "P-256" : "P-384", "kty", "EC", "x", a, "y", b);
        }
    } else {
        const RSA *rsa = EVP_PKEY_get0_RSA((EVP_PKEY *)key);
        const BIGNUM *n = NULL, *e = NULL;
        RSA_get0_key(rsa, &n, &e, NULL);
        if (n != NULL && e != NULL) {
            a = bn_b64url(e, 0);
            b = bn_b64url(n, 0);
        }
        if (a != NULL && b != NULL) {
            jwk = json_pack("{s:s, s:s, s:s}", "e", a, "kty", "RSA", "n", b);
        }
    }
    free(a);
    free(b);
    return jwk;
}

char *gw_jwk_thumbprint(const EVP_PKEY *key) {
    json_t *jwk = gw_jwk_public(key);
    // Only the required members, sorted, no whitespace: what json_dumps makes of them.
    char *text = jwk ? json_dumps(jwk, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(jwk);
    if (text == NULL) {
        return NULL;
    }
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256((const uint8_t *)text, strlen(text), digest);
    free(text);
    return gw_b64url(digest, sizeof(digest));
}

// ---- signatures ----

// sign returns the JWS signature of |input| under |key| (ECDSA as r || s, each the
// curve's width: RFC 7518 section 3.4), base64url.
static char *sign(EVP_PKEY *key, const char *input) {
    const char *alg = gw_jws_alg(key);
    if (alg == NULL) {
        return NULL;
    }
    const EVP_MD *md = strcmp(alg, "ES384") == 0 ? EVP_sha384() : EVP_sha256();
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t len = 0;
    uint8_t *sig = NULL;
    char *out = NULL;
    if (ctx == NULL || !EVP_DigestSignInit(ctx, NULL, md, NULL, key) ||
        !EVP_DigestSign(ctx, NULL, &len, (const uint8_t *)input, strlen(input)) || (sig = malloc(len)) == NULL ||
        !EVP_DigestSign(ctx, sig, &len, (const uint8_t *)input, strlen(input))) {
        goto done;
    }
    if (alg[0] == 'R') {
        out = gw_b64url(sig, len);
        goto done;
    }
    ECDSA_SIG *es = ECDSA_SIG_from_bytes(sig, len);
    size_t w = (size_t)ec_size(key);
    uint8_t raw[96];
    if (es != NULL && BN_bn2bin_padded(raw, w, es->r) && BN_bn2bin_padded(raw + w, w, es->s)) {
        out = gw_b64url(raw, 2 * w);
    }
    ECDSA_SIG_free(es);
done:
    free(sig);
    EVP_MD_CTX_free(ctx);
    return out;
}

// jws: the flattened serialization of |header| over |payload_text| ("" for none), signed
// by |sig_fn|.
static json_t *flattened(json_t *header, const char *payload_text, char *(*sig_fn)(const void *, const char *),
                         const void *sig_arg) {
    char *h = json_dumps(header, JSON_COMPACT | JSON_SORT_KEYS);
    char *h64 = h ? gw_b64url((const uint8_t *)h, strlen(h)) : NULL;
    char *p64 = gw_b64url((const uint8_t *)payload_text, strlen(payload_text));
    char *input = NULL, *sig = NULL;
    json_t *out = NULL;
    if (h64 != NULL && p64 != NULL && (input = malloc(strlen(h64) + strlen(p64) + 2)) != NULL) {
        strcpy(input, h64);
        strcat(input, ".");
        strcat(input, p64);
        sig = sig_fn(sig_arg, input);
    }
    if (sig != NULL) {
        out = json_pack("{s:s, s:s, s:s}", "protected", h64, "payload", p64, "signature", sig);
    }
    free(h);
    free(h64);
    free(p64);
    free(input);
    free(sig);
    return out;
}

static char *sign_with_key(const void *key, const char *input) {
    return sign((EVP_PKEY *)key, input);
}

char *gw_jws_sign(EVP_PKEY *key, const char *kid, const char *nonce, const char *url, const json_t *payload) {
    const char *alg = gw_jws_alg(key);
    if (alg == NULL || url == NULL) {
        return NULL;
    }
    json_t *header = json_pack("{s:s, s:s}", "alg", alg, "url", url);
    if (header == NULL) {
        return NULL;
    }
    int ok = 1;
    if (kid != NULL) {
        ok = json_object_set_new(header, "kid", json_string(kid)) == 0;
    } else {
        json_t *jwk = gw_jwk_public(key);
        ok = jwk != NULL && json_object_set_new(header, "jwk", jwk) == 0;
    }
    if (ok && nonce != NULL) {
        ok = json_object_set_new(header, "nonce", json_string(nonce)) == 0;
    }
    char *payload_text = payload != NULL ? json_dumps(payload, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_t *jws = ok && (payload == NULL || payload_text != NULL)
                      ? flattened(header, payload_text ? payload_text : "", sign_with_key, key)
                      : NULL;
    char *out = jws ? json_dumps(jws, JSON_COMPACT) : NULL;
    json_decref(jws);
    json_decref(header);
    free(payload_text);
    return out;
}

char *gw_jws_hs256(const uint8_t *key, size_t key_len, const char *signing_input) {
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    if (HMAC(EVP_sha256(), key, key_len, (const uint8_t *)signing_input, strlen(signing_input), mac, &mac_len) ==
        NULL) {
        return NULL;
    }
    return gw_b64url(mac, mac_len);
}

typedef struct {
    const uint8_t *key;
    size_t len;
} hmac_key;

static char *sign_with_hmac(const void *arg, const char *input) {
    const hmac_key *k = arg;
    return gw_jws_hs256(k->key, k->len, input);
}

json_t *gw_jws_eab(const EVP_PKEY *account_key, const char *eab_kid, const uint8_t *hmac_key_bytes, size_t hmac_len,
                   const char *url) {
    json_t *jwk = gw_jwk_public(account_key);
    char *payload = jwk ? json_dumps(jwk, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(jwk);
    json_t *header = payload ? json_pack("{s:s, s:s, s:s}", "alg", "HS256", "kid", eab_kid, "url", url) : NULL;
    hmac_key k = {hmac_key_bytes, hmac_len};
    json_t *out = header ? flattened(header, payload, sign_with_hmac, &k) : NULL;
    json_decref(header);
    free(payload);
    return out;
}
