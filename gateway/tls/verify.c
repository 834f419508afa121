// verify: the server's certificate judged during the handshake (chain, CRLs, the name or
// URI SAN, SPKI pins: verify_cb, before our certificate is sent) and put in words for the
// client and the access log; the SANs and CA names of certificates for people.
#include "gateway/tls/identity.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs8.h>
#include <openssl/pool.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gateway/base/xalloc.h"
#include "gateway/tls/ocsp.h"

static int g_verify_index = -1;
static pthread_once_t g_verify_once = PTHREAD_ONCE_INIT;

static void init_verify_index(void) {
    g_verify_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

int gw_verify_ex_index(void) {
    pthread_once(&g_verify_once, init_verify_index);
    return g_verify_index;
}

// One formatter for a certificate's subject alternative names, used by verification
// errors and by reports. An iPAddress of any length other than 4 or 16 bytes is not an
// address: it is shown as "IP:?" (typed) or skipped, never read past its length.
size_t gw_cert_sans(X509 *cert, int typed, char *out, size_t cap) {
    if (cap == 0) {
        return 0;
    }
    out[0] = '\0';
    GENERAL_NAMES *sans = cert ? X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL) : NULL;
    size_t n = 0, count = 0;
    for (size_t i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        char item[300] = "";
        const ASN1_STRING *s = NULL;
        const char *kind = NULL;
        if (g->type == GEN_DNS) {
            s = g->d.dNSName, kind = "DNS";
        } else if (g->type == GEN_URI && typed) {
            s = g->d.uniformResourceIdentifier, kind = "URI";
        } else if (g->type == GEN_EMAIL && typed) {
            s = g->d.rfc822Name, kind = "email";
        } else if (g->type == GEN_IPADD) {
            int l = ASN1_STRING_length(g->d.iPAddress);
            char ip[INET6_ADDRSTRLEN] = "?";
            if (l == 4 || l == 16) {
                inet_ntop(l == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(g->d.iPAddress), ip, sizeof(ip));
            } else if (!typed) {
                continue;  // not an address: nothing it could match
            }
            snprintf(item, sizeof(item), "%s%s", typed ? "IP:" : "", ip);
        } else {
            continue;
        }
        if (s != NULL) {
            // Names are shown as printable ASCII only: a hostile certificate's bytes do not
            // reach a log line or a header as they are.
            int l = ASN1_STRING_length(s);
            const unsigned char *d = ASN1_STRING_get0_data(s);
            size_t k = (size_t)snprintf(item, sizeof(item), "%s%s", typed ? kind : "", typed ? ":" : "");
            for (int j = 0; j < l && k + 1 < sizeof(item); j++) {
                item[k++] = d[j] >= 0x20 && d[j] < 0x7f && d[j] != '"' && d[j] != '\\' ? (char)d[j] : '?';
            }
            item[k] = '\0';
        }
        size_t il = strlen(item);
        if (n + il + 3 >= cap) {
            break;
        }
        n += (size_t)snprintf(out + n, cap - n, "%s%s", n ? ", " : "", item);
        count++;
    }
    GENERAL_NAMES_free(sans);
    return count;
}

void gw_x509_name_text(X509_NAME *name, char *out, size_t cap) {
    out[0] = '\0';
    if (name != NULL) {
        X509_NAME_oneline(name, out, (int)cap);
    }
    for (char *p = out; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\\') {
            *p = '?';
        }
    }
}

void gw_verify_describe(long e, X509 *cur, X509 *leaf, const char *identity, const char *expected, char *out,
                        size_t cap) {
    char subject[256], issuer[256], names[300];
    gw_x509_name_text(cur ? X509_get_subject_name(cur) : NULL, subject, sizeof(subject));
    gw_x509_name_text(cur ? X509_get_issuer_name(cur) : NULL, issuer, sizeof(issuer));
    const char *want = expected && expected[0] ? expected : "the requested name";
    switch (e) {
        case X509_V_ERR_HOSTNAME_MISMATCH:
        case X509_V_ERR_IP_ADDRESS_MISMATCH:
            if (gw_cert_sans(leaf, 0, names, sizeof(names)) > 0) {
                snprintf(out, cap, "certificate is for %s, not %s", names, want);
            } else {
                char leaf_subject[256];
                gw_x509_name_text(leaf ? X509_get_subject_name(leaf) : NULL, leaf_subject, sizeof(leaf_subject));
                snprintf(out, cap,
                         "certificate has no DNS or IP subjectAltName, so it is for no name (its subject %s is "
                         "never used as a name), not %s",
                         leaf_subject[0] ? leaf_subject : "-", want);
            }
            break;
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
            snprintf(out, cap, "%s: issuer %s is not in the trust of identity \"%s\"", X509_verify_cert_error_string(e),
                     issuer, identity);
            break;
        case X509_V_ERR_CERT_REVOKED:
            snprintf(out, cap, "certificate revoked: %s is in the CRL of identity \"%s\"", subject, identity);
            break;
        case X509_V_ERR_UNABLE_TO_GET_CRL:
            snprintf(out, cap,
                     "no CRL from %s in the crl file of identity \"%s\" (needed to check %s): with crl set, "
                     "every CA in the server's chain needs a CRL",
                     issuer, identity, subject);
            break;
        case X509_V_ERR_CRL_HAS_EXPIRED:
            snprintf(out, cap,
                     "the CRL from %s in the crl file of identity \"%s\" is past its nextUpdate: "
                     "fetch a new one",
                     issuer, identity);
            break;
        case X509_V_ERR_CRL_NOT_YET_VALID:
            snprintf(out, cap, "the CRL from %s in the crl file of identity \"%s\" is not valid yet", issuer, identity);
            break;
        default:
            snprintf(out, cap, "%s: %s", X509_verify_cert_error_string(e), subject);
    }
}

static int spki_sha256(X509 *cert, uint8_t out[32]) {
    uint8_t *der = NULL;
    int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    if (len <= 0) {
        return 0;
    }
    SHA256(der, (size_t)len, out);
    OPENSSL_free(der);
    return 1;
}

static void describe_failure(X509_STORE_CTX *store_ctx, const gw_identity *id, gw_verify_result *res) {
    long e = X509_STORE_CTX_get_error(store_ctx);
    res->failed = 1;
    res->x509_error = e;
    gw_verify_describe(e, X509_STORE_CTX_get_current_cert(store_ctx), X509_STORE_CTX_get0_cert(store_ctx),
                       id->spec.name, res->expected, res->reason, sizeof(res->reason));
}

// has_uri_san says whether |cert| carries the URI subjectAltName |uri| (exactly).
static int has_uri_san(X509 *cert, const char *uri) {
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    int found = 0;
    for (size_t i = 0; names != NULL && i < sk_GENERAL_NAME_num(names) && !found; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type == GEN_URI) {
            const ASN1_IA5STRING *s = g->d.uniformResourceIdentifier;
            found =
                (size_t)ASN1_STRING_length(s) == strlen(uri) && memcmp(ASN1_STRING_get0_data(s), uri, strlen(uri)) == 0;
        }
    }
    GENERAL_NAMES_free(names);
    return found;
}

int gw_chain_issued_by_named_ca(X509 *leaf, const STACK_OF(X509) * chain, const STACK_OF(CRYPTO_BUFFER) * names) {
    size_t n_chain = chain ? sk_X509_num(chain) : 0;
    for (size_t i = 0; names != NULL && i < sk_CRYPTO_BUFFER_num(names); i++) {
        const CRYPTO_BUFFER *b = sk_CRYPTO_BUFFER_value(names, i);
        const uint8_t *p = CRYPTO_BUFFER_data(b);
        X509_NAME *want = d2i_X509_NAME(NULL, &p, (long)CRYPTO_BUFFER_len(b));
        if (want == NULL) {
            continue;
        }
        int hit = 0;
        for (size_t c = 0; c <= n_chain && !hit; c++) {
            X509 *cert = c == 0 ? leaf : sk_X509_value(chain, c - 1);
            hit = cert != NULL && (X509_NAME_cmp(X509_get_issuer_name(cert), want) == 0 ||
                                   (c > 0 && X509_NAME_cmp(X509_get_subject_name(cert), want) == 0));
        }
        X509_NAME_free(want);
        if (hit) {
            return 1;
        }
    }
    return 0;
}

// check_staple judges the server's OCSP staple (identity ocsp if-stapled or require)
// against the verified chain: the leaf and its issuer. A staple that is there must be
// good; none is fine with if-stapled.
static int check_staple(X509_STORE_CTX *store_ctx, SSL *ssl, const gw_identity *id, STACK_OF(X509) * chain,
                        gw_verify_result *res) {
    const uint8_t *staple = NULL;
    size_t len = 0;
    if (ssl != NULL) {
        SSL_get0_ocsp_response(ssl, &staple, &len);
    }
    char reason[600] = "", info[400] = "";
    gw_ocsp_result r;
    if (len == 0) {
        r = GW_OCSP_RESULT_NO_STAPLE;
        snprintf(reason, sizeof(reason), "the server sent no OCSP staple, and identity \"%s\" has ocsp = \"require\"",
                 id->spec.name);
    } else {
        X509 *leaf = chain && sk_X509_num(chain) > 0 ? sk_X509_value(chain, 0) : NULL;
        X509 *issuer = chain && sk_X509_num(chain) > 1 ? sk_X509_value(chain, 1) : NULL;
        r = gw_ocsp_check(staple, len, leaf, issuer, time(NULL), id->spec.ocsp_skew_s, reason, sizeof(reason), info,
                          sizeof(info));
    }
    if (res != NULL) {
        res->ocsp = (int)r;
        snprintf(res->ocsp_info, sizeof(res->ocsp_info), "%s", info);
    }
    if (r == GW_OCSP_RESULT_GOOD || (r == GW_OCSP_RESULT_NO_STAPLE && id->spec.ocsp != GW_OCSP_REQUIRE)) {
        return 1;
    }
    X509_STORE_CTX_set_error(
        store_ctx, r == GW_OCSP_RESULT_REVOKED ? X509_V_ERR_CERT_REVOKED : X509_V_ERR_APPLICATION_VERIFICATION);
    if (res != NULL) {
        res->failed = 1;
        res->x509_error = 0;
        snprintf(res->reason, sizeof(res->reason), "%s", reason);
    }
    return 0;
}

int gw_tls_verify_cb(X509_STORE_CTX *store_ctx, void *arg) {
    const gw_identity *id = arg;
    SSL *ssl = X509_STORE_CTX_get_ex_data(store_ctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    gw_verify_result *res = ssl ? SSL_get_ex_data(ssl, gw_verify_ex_index()) : NULL;
    if (X509_verify_cert(store_ctx) != 1) {
        if (res != NULL) {
            describe_failure(store_ctx, id, res);
        }
        return 0;
    }
    if (res != NULL && res->expected_uri[0] != '\0' &&
        !has_uri_san(X509_STORE_CTX_get0_cert(store_ctx), res->expected_uri)) {
        char sans[400];
        gw_cert_sans(X509_STORE_CTX_get0_cert(store_ctx), 1, sans, sizeof(sans));
        X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_HOSTNAME_MISMATCH);
        res->failed = 1;
        res->x509_error = X509_V_ERR_HOSTNAME_MISMATCH;
        snprintf(res->reason, sizeof(res->reason), "certificate is for %s, not URI %s (server_uri)",
                 sans[0] ? sans : "no subjectAltName", res->expected_uri);
        return 0;
    }
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(store_ctx);
    int pinned = id->spec.num_pins == 0;
    for (size_t i = 0; chain && i < sk_X509_num(chain) && !pinned; i++) {
        uint8_t h[32];
        if (!spki_sha256(sk_X509_value(chain, i), h)) {
            continue;
        }
        for (size_t p = 0; p < id->spec.num_pins; p++) {
            pinned |= memcmp(h, id->spec.pins[p], 32) == 0;
        }
    }
    if (!pinned) {
        X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_APPLICATION_VERIFICATION);
        if (res != NULL) {
            res->failed = 1;
            res->x509_error = 0;
            snprintf(res->reason, sizeof(res->reason),
                     "no key in the server's chain matches pin_sha256 of identity \"%s\"", id->spec.name);
        }
        return 0;
    }
    return id->spec.ocsp == GW_OCSP_OFF || check_staple(store_ctx, ssl, id, chain, res);
}

int gw_set_verify_name(SSL *ssl, const char *name) {
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    struct in6_addr a;
    if (inet_pton(AF_INET, name, &a) == 1 || inet_pton(AF_INET6, name, &a) == 1) {
        return X509_VERIFY_PARAM_set1_ip_asc(param, name);
    }
    // The name must be in a DNS subjectAltName: the subject CN is never a fallback.
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
    return X509_VERIFY_PARAM_set1_host(param, name, strlen(name));
}

// ---- loading ----
