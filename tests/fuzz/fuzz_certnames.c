// libFuzzer harness: the words a verification error is put in, for arbitrary (hostile)
// certificates. The first byte picks the X509_V_ERR_* case, the rest is DER: one
// certificate as the one the error is about and as the leaf. The output is always
// terminated, within its buffer, and holds only printable ASCII.
#include <openssl/x509.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/tls/identity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_text(const char *s, size_t cap) {
    size_t n = strnlen(s, cap);
    if (n >= cap) {
        abort();  // not terminated
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f) {
            abort();  // a byte from the certificate reached the text as it is
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const long errors[] = {
        X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH,      X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        X509_V_ERR_CERT_REVOKED,      X509_V_ERR_UNABLE_TO_GET_CRL,        X509_V_ERR_CRL_HAS_EXPIRED,
        X509_V_ERR_CERT_HAS_EXPIRED,  X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN};
    if (size < 1) {
        return 0;
    }
    long e = errors[data[0] % (sizeof(errors) / sizeof(errors[0]))];
    const uint8_t *p = data + 1;
    X509 *cert = d2i_X509(NULL, &p, (long)(size - 1));
    char out[700], sans[300];
    gw_verify_describe(e, cert, cert, "ops", "expected.example", out, sizeof(out));
    check_text(out, sizeof(out));
    gw_cert_sans(cert, 1, sans, sizeof(sans));
    check_text(sans, sizeof(sans));
    gw_cert_sans(cert, 0, sans, 7);  // a small buffer is still respected
    check_text(sans, 7);
    X509_free(cert);
    return 0;
}
