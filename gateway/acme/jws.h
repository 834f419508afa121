// jws: what an ACME client signs (RFC 8555 section 6.2): base64url (RFC 4648 section 5,
// no padding), a public key as a JWK and its thumbprint (RFC 7517, RFC 7638), requests as
// JWS in the flattened JSON serialization (RFC 7515) with ES256, ES384 or RS256
// (RFC 7518), and External Account Binding's HS256 JWS (RFC 8555 section 7.3.4). Pure
// functions over keys and bytes: no I/O, no state.
#ifndef MTLSGW_ACME_JWS_H
#define MTLSGW_ACME_JWS_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

// gw_b64url encodes |n| bytes: a NUL-terminated string to free(), or NULL (no memory).
char *gw_b64url(const uint8_t *p, size_t n);
// gw_b64url_valid: every character of |s| is in the base64url alphabet (A-Z a-z 0-9 - _).
int gw_b64url_valid(const char *s);
// gw_b64url_decode decodes |s| (no padding, no other alphabet): 1 with *|out| (to free(),
// *|out_len| bytes), 0 if |s| is not base64url.
int gw_b64url_decode(const char *s, uint8_t **out, size_t *out_len);

// gw_jws_alg names the JWS algorithm for |key|: "ES256" (P-256), "ES384" (P-384), "RS256"
// (RSA of 2048 bits or more), or NULL for any other key.
const char *gw_jws_alg(const EVP_PKEY *key);

// gw_jwk_public returns |key|'s public half as a JWK object ({"crv","kty","x","y"} or
// {"e","kty","n"}), or NULL for a key gw_jws_alg does not name.
json_t *gw_jwk_public(const EVP_PKEY *key);

// gw_jwk_thumbprint returns the base64url SHA-256 of the JWK's required members in
// lexicographic order without whitespace (RFC 7638): the account's part of an ACME key
// authorization. A string to free(), or NULL.
char *gw_jwk_thumbprint(const EVP_PKEY *key);

// gw_jws_sign signs an ACME request: the flattened JSON serialization {"protected",
// "payload", "signature"} as a string to free(), or NULL. The protected header has "alg",
// "kid" (the account URL) or, when |kid| is NULL (new account, key change), "jwk", the
// "nonce" when not NULL, and "url". A NULL |payload| is POST-as-GET (an empty payload).
char *gw_jws_sign(EVP_PKEY *key, const char *kid, const char *nonce, const char *url, const json_t *payload);

// gw_jws_hs256 returns the base64url HMAC-SHA256 of |signing_input| under |key|.
char *gw_jws_hs256(const uint8_t *key, size_t key_len, const char *signing_input);

// gw_jws_eab returns the externalAccountBinding object of a newAccount request: an HS256
// JWS whose payload is the account key's JWK, with "kid" the CA's key identifier and
// "url" the newAccount URL. NULL on failure.
json_t *gw_jws_eab(const EVP_PKEY *account_key, const char *eab_kid, const uint8_t *hmac_key, size_t hmac_len,
                   const char *url);

#endif
