// token: keys made and used on a PKCS#11 token for certificate requests (see token.c).
#ifndef MTLSGW_ACME_TOKEN_H
#define MTLSGW_ACME_TOKEN_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/tls/identity.h"
#include "gateway/tls/pkcs11.h"

// gw_token_public_key turns a KEYGEN answer (two length-prefixed strings: the curve OID
// and the point, or modulus and exponent) into a public key; NULL if malformed.
EVP_PKEY *gw_token_public_key(int ec, const uint8_t *p, size_t len);
// gw_token_open starts a signer for |uri| (its module-path and pin-source are required),
// as |uid|/|gid| when root (-1: as this process), with P11W_HELLO_* |flags|. NULL with
// |err| (and *|bad_arg| set when the URI itself is wrong).
gw_p11 *gw_token_open(const char *uri, int uid, int gid, uint32_t flags, int *bad_arg, char *err, size_t cap);
// gw_token_generate generates a key pair |key_type| (ec-p256, ec-p384, rsa-2048,
// rsa-3072) labelled with |uri|'s object= on |token| (opened with P11W_HELLO_NO_KEY; an
// existing object is refused) and returns its public key; the token then signs with it.
EVP_PKEY *gw_token_generate(gw_p11 *token, const char *uri, const char *key_type, int *bad_arg, char *err, size_t cap);
// gw_token_keygen is gw_token_open (no key) then gw_token_generate; *|out_token| then
// signs with the new key. NULL with |err| (and *|bad_arg| for a wrong argument).
EVP_PKEY *gw_token_keygen(const char *uri, const char *key_type, int uid, int gid, gw_p11 **out_token, int *bad_arg,
                          char *err, size_t cap);
// gw_token_sign_req replaces |*req| by the same request signed by |token|'s key (whose
// public key is |pub|, SHA-256). 0 with |err| if the token did not sign.
int gw_token_sign_req(X509_REQ **req, gw_p11 *token, EVP_PKEY *pub, char *err, size_t cap);

#endif
