// csr: the certificate signing request an ACME order is finalized with (RFC 2986): the
// identity's new key, CN the first name, every name in subjectAltName (DNS or IP).
#ifndef MTLSGW_ACME_CSR_H
#define MTLSGW_ACME_CSR_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

// gw_acme_csr signs a CSR for |names| with |key| (SHA-256): 1 with *|der| (to free) and
// *|der_len|, or 0 with |err|.
int gw_acme_csr(EVP_PKEY *key, const char *const *names, size_t num_names, uint8_t **der, size_t *der_len, char *err,
                size_t cap);

// gw_acme_csr_token is gw_acme_csr for a key in a PKCS#11 token: |key| is its public
// key, |token| signs (NULL: |key| is a private key and signs).
typedef struct gw_p11 gw_p11;
int gw_acme_csr_token(EVP_PKEY *key, gw_p11 *token, const char *const *names, size_t num_names, uint8_t **der,
                      size_t *der_len, char *err, size_t cap);

// gw_key_generate makes a new private key of |type|: "ec-p256", "ec-p384", "rsa-2048",
// "rsa-3072" or "ed25519". NULL for another type (or no memory).
EVP_PKEY *gw_key_generate(const char *type);

#endif
