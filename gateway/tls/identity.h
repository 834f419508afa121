// identity: client identities (certificate chain + key + trust settings), each loaded
// once into a BoringSSL SSL_CTX that verifies the server during the handshake: chain,
// CRL, name and SPKI pins are checked when the server's Certificate arrives, before our
// own certificate is sent.
#ifndef MTLSGW_IDENTITY_H
#define MTLSGW_IDENTITY_H

#include <openssl/ssl.h>
#include <stdint.h>
#include <time.h>

#include "gateway/tls/pkcs11.h"

typedef struct {
    char *name;
    char *where;  // "file:line"
    char *certificate, *key, *key_password_file, *pkcs12, *pkcs12_password_file, *trust, *crl;
    char *pkcs11_module;   // with key = "pkcs11:...": the module (else the URI's module-path)
    int run_uid, run_gid;  // the `user` the gateway runs as (a token signer runs as it); -1: none
    int verify_depth;
    uint16_t tls_min, tls_max;  // TLS1_2_VERSION...
    char *ciphers;
    uint8_t (*pins)[32];
    size_t num_pins;
    int acme;         // renewed over ACME: the certificate (and key) may not exist yet
    int ocsp;         // gw_ocsp_mode: the server's OCSP staple checked in the handshake
    int ocsp_skew_s;  // leeway for its thisUpdate and nextUpdate
    int verify_only;  // trust (and crl) alone: verifies a server, presents nothing (pending)
} gw_identity_spec;

struct gw_identity {
    gw_identity_spec spec;
    SSL_CTX *ctx;
    uint64_t generation;  // unique per load in this process: part of session cache keys
    X509 *leaf;
    time_t not_before, not_after;
    char subject[256], issuer[256];
    char key_type[32];
    char serial[80];         // hex, as nginx's $ssl_client_serial shows it
    int metrics_slot;        // set by the gateway (gw_metrics_identity_slot); -1: none
    time_t crl_next_update;  // earliest nextUpdate of the CRLs in spec.crl; 0: no CRL
    char **crl_uncovered;    // subjects of CAs in spec.trust that no CRL comes from
    size_t num_crl_uncovered;
    gw_p11 *p11;           // key = "pkcs11:...": the token's signer; NULL for a key file
    uint16_t sigalgs[12];  // with p11: the signature algorithms the token can make
    size_t num_sigalgs;
    int pending;  // spec.acme and no certificate yet: verification only, nothing to present (leaf NULL)
};
typedef struct gw_identity gw_identity;

// What verification found, for error messages. A tunnel points the SSL's ex_data slot
// (gw_verify_ex_index) at one of these before the handshake.
typedef struct {
    int failed;
    long x509_error;         // X509_V_ERR_*, or 0 for a pin mismatch
    char expected[256];      // the name the certificate must carry (set by the caller)
    char expected_uri[256];  // server_uri: a URI SAN the certificate must carry instead ("" none)
    char reason[700];        // in words
    int ocsp;                // gw_ocsp_result: what the staple said (GW_OCSP_RESULT_NONE: not checked)
    char ocsp_info[400];     // with describe: the staple's responder, times and status in words
} gw_verify_result;

int gw_verify_ex_index(void);

// gw_x509_name_text writes |name| (NULL: none) one line, with control characters,
// quotes and backslashes as '?': safe in a log line and a Proxy-Status.
void gw_x509_name_text(X509_NAME *name, char *out, size_t cap);

// gw_tls_verify_cb is an identity's certificate verification (verify.c), installed on its
// SSL_CTX with the identity as |arg|: chain, CRLs, name or URI SAN and pins, in words on
// failure in the gw_verify_result of the SSL.
int gw_tls_verify_cb(X509_STORE_CTX *store_ctx, void *arg);

// Who takes the sessions a server sends over an SSL made from an identity's SSL_CTX:
// |take| returns 1 when it keeps the reference. Set per SSL (the upstream sets its session
// cache); an SSL without one keeps none.
typedef struct {
    int (*take)(SSL *ssl, SSL_SESSION *session);
} gw_session_taker;
void gw_tls_set_session_taker(SSL *ssl, const gw_session_taker *taker);

// gw_identity_load builds the SSL_CTX for |spec|. With spec.verify_only it only
// verifies (an https:// parent proxy's via_trust) and is pending. With spec.acme and its certificate (or
// key file) not there yet, the identity is pending: the SSL_CTX verifies servers but has
// nothing to present. On success the identity takes over
// |spec|'s strings (and |spec| is zeroed); on failure |spec| is untouched, NULL is
// returned and the reason (naming the setting and file) is written into |err|.
gw_identity *gw_identity_load(gw_identity_spec *spec, char *err, size_t err_len);
// GW_P11_SIGN_TIMEOUT_MS bounds a signature asked for outside the event loop (the
// load-time test signature, explain, the CSR of identity new).
#define GW_P11_SIGN_TIMEOUT_MS 10000

// gw_identity_free frees |id| and everything it owns (NULL is fine).
void gw_identity_free(gw_identity *id);
// gw_identity_spec_free frees the strings of a spec that was not loaded.
void gw_identity_spec_free(gw_identity_spec *spec);

// gw_identity_key_mode_problem: if |path| is readable by group or others, writes a
// warning into |out| and returns 1.
int gw_identity_key_mode_problem(const char *path, char *out, size_t out_len);

// gw_identity_file_problems reports, through |cb| (one message each), what an operator
// must fix about |id|'s files: a key, key_password_file or pkcs12_password_file readable
// by group or others; any of its files (certificate, key, trust, crl, password files)
// writable by group or others, or in a folder they may write; with a crl, each trusted CA no CRL comes from, and a CRL
// past its nextUpdate at |now|. Returns how many it reported.
typedef enum { GW_PROBLEM_SECRET_MODE, GW_PROBLEM_CRL, GW_PROBLEM_WRITABLE } gw_problem_kind;
size_t gw_identity_file_problems(const gw_identity *id, time_t now,
                                 void (*cb)(void *arg, gw_problem_kind kind, const char *msg), void *arg);

// gw_file_mode_problem says whether |path| (a secret: key, PKCS#12 or password file) is
// readable by group or others; if so writes "WHAT PATH has mode ...: readable by others"
// into |out| and returns 1 (files.c, with the checks below).
int gw_file_mode_problem(const char *what, const char *path, char *out, size_t out_len);

// gw_file_writable_problem says whether |path| (a file the gateway trusts: config,
// trust, CRL, certificate, users, PIN) is writable by its group or others, or lies in a
// folder they may write without the sticky bit; if so writes what and by whom into |out|
// (words like "writable by others", from the bits set) and returns 1.
int gw_file_writable_problem(const char *what, const char *path, char *out, size_t out_len);

// gw_cert_sans writes the subject alternative names of |cert| into |out| (|cap| bytes):
// "DNS:a, IP:b, URI:c" with |typed|, else the DNS names and IP addresses alone ("a, b").
// Bytes outside printable ASCII are shown as '?'; an iPAddress that is not 4 or 16 bytes
// long is "IP:?" (typed) or left out. Returns how many names it wrote.
size_t gw_cert_sans(X509 *cert, int typed, char *out, size_t cap);

// gw_verify_describe puts verification error |x509_error| in words for the client and
// the access log: |cur| is the certificate it is about, |leaf| the server's, |identity|
// the identity whose settings failed it, |expected| the name required. Any of the
// certificates may be NULL or arbitrary (a hostile server's); |out| is always terminated.
void gw_verify_describe(long x509_error, X509 *cur, X509 *leaf, const char *identity, const char *expected, char *out,
                        size_t cap);

// gw_set_verify_name configures |ssl| to require |name| (a DNS name, or an IP literal
// checked against IP SANs) in the server certificate.
int gw_set_verify_name(SSL *ssl, const char *name);

// gw_chain_issued_by_named_ca says whether |leaf| or a certificate of |chain| (NULL:
// none) was issued by one of the CAs |names| (DER X.509 names, as a server's
// CertificateRequest lists them), or is one of them. Names compare as X.509 names
// (X509_NAME_cmp on their canonical form: case and string type of attribute values do
// not matter), not as bytes. Unparsable names are skipped.
int gw_chain_issued_by_named_ca(X509 *leaf, const STACK_OF(X509) * chain, const STACK_OF(CRYPTO_BUFFER) * names);

// gw_tls_version_parse turns "1.2"/"1.3" into TLS1_2_VERSION/TLS1_3_VERSION (0: bad).
uint16_t gw_tls_version_parse(const char *s);

#endif
