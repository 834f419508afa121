// client: one ACME conversation (RFC 8555) that obtains a certificate: the directory, a
// nonce, the account (made on first use, with External Account Binding when the CA asks
// for it), an order for the identifiers, each authorization's challenge answered through
// the caller's publish/withdraw, the order finalized with the caller's CSR, the chain
// downloaded. Blocking and bounded (the renewal thread's, never a worker's). Every
// request is a JWS (jws.h); a badNonce is retried with the nonce it came with.
#ifndef MTLSGW_ACME_CLIENT_H
#define MTLSGW_ACME_CLIENT_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *directory_url;
    const char *trust_file;  // for the ACME server's TLS; NULL: the system's CAs
    EVP_PKEY *account_key;
    const char *const *contact;  // "mailto:..." URLs
    size_t num_contact;
    const char *eab_kid;  // External Account Binding, or NULL
    const uint8_t *eab_hmac;
    size_t eab_hmac_len;
    const char *const *names;  // DNS names or IP literals for the certificate
    size_t num_names;
    const char *challenge;  // "http-01" or "dns-01"
    // publish makes |value| answer the challenge of |identifier|: for http-01 the key
    // authorization served at /.well-known/acme-challenge/|token|; for dns-01 the TXT
    // value of _acme-challenge.|identifier|. Returns 1, or 0 with |err|. withdraw undoes
    // it once the authorization is decided.
    int (*publish)(void *arg, const char *challenge, const char *identifier, const char *token, const char *value,
                   char *err, size_t cap);
    void (*withdraw)(void *arg, const char *challenge, const char *identifier, const char *token, const char *value);
    void *arg;
    int timeout_ms;    // each HTTPS exchange (default 10000)
    int wait_limit_s;  // validation and issuance together (default 120)
} gw_acme_params;

typedef struct {
    char *chain_pem;     // the certificate and its chain, PEM (to free); NULL on failure
    long retry_after_s;  // on failure: what the CA asked us to wait (-1: nothing said)
    int rate_limited;    // the CA said rateLimited
} gw_acme_result;

// gw_acme_key_authorization: |token| "." the account key's thumbprint (RFC 8555 section
// 8.1), to free(); NULL on failure.
char *gw_acme_key_authorization(EVP_PKEY *account_key, const char *token);
// gw_acme_dns01_value: the TXT value for a key authorization (section 8.4), to free().
char *gw_acme_dns01_value(const char *key_authorization);

// gw_acme_problem_text puts the CA's problem document (RFC 7807: "type", "detail") of a
// failed |what| answered with |status| in words into |out|. Returns 1 if the CA said
// rateLimited. Pure: the fuzz harness's entry.
int gw_acme_problem_text(const char *what, int status, const char *body, size_t body_len, char *out, size_t cap);

// gw_acme_obtain runs the conversation for a CSR (DER). Returns 1 with out->chain_pem,
// or 0 with |err| saying what failed in words (the CA's problem detail when it gave one)
// and out->retry_after_s.
int gw_acme_obtain(const gw_acme_params *p, const uint8_t *csr_der, size_t csr_len, gw_acme_result *out, char *err,
                   size_t cap);

#endif
