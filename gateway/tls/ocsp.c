// ocsp: staples parsed with CBS and checked against the verified chain (see ocsp.h).
#include "gateway/tls/ocsp.h"

#include <openssl/digest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/obj.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#define TAG(n) (CBS_ASN1_CONTEXT_SPECIFIC | (n))
#define CTAG(n) (CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | (n))

// id-pkix-ocsp-basic, 1.3.6.1.5.5.7.48.1.1
static const uint8_t k_basic[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01};

static int fail(char *err, size_t cap, const char *what) {
    snprintf(err, cap, "malformed OCSP response: %s", what);
    return 0;
}

static int digits(const uint8_t *p, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 1;
}

int gw_ocsp_time(const CBS *t, int64_t *out) {
    const uint8_t *p = CBS_data(t);
    int y, mo, d, h, mi, s;
    if (CBS_len(t) != 15 || p[14] != 'Z' || !digits(p, 4, &y) || !digits(p + 4, 2, &mo) || !digits(p + 6, 2, &d) ||
        !digits(p + 8, 2, &h) || !digits(p + 10, 2, &mi) || !digits(p + 12, 2, &s) || mo < 1 || mo > 12 || d < 1 ||
        d > 31 || h > 23 || mi > 59 || s > 59) {
        return 0;
    }
    // Days from the civil date (Howard Hinnant's algorithm): no timegm, no time zone.
    int64_t yy = y - (mo <= 2);
    int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    int64_t yoe = yy - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    *out = days * 86400 + h * 3600 + mi * 60 + s;
    return 1;
}

static int get_time(CBS *in, int64_t *out) {
    CBS t;
    return CBS_get_asn1(in, &t, CBS_ASN1_GENERALIZEDTIME) && gw_ocsp_time(&t, out);
}

// alg_oid reads an AlgorithmIdentifier's OID (parameters, if any, are skipped).
static int alg_oid(CBS *in, CBS *oid) {
    CBS alg;
    return CBS_get_asn1(in, &alg, CBS_ASN1_SEQUENCE) && CBS_get_asn1(&alg, oid, CBS_ASN1_OBJECT);
}

static int parse_single(CBS *in, gw_ocsp_single *s, char *err, size_t cap) {
    CBS single, certid;
    memset(s, 0, sizeof(*s));
    s->reason = -1;
    if (!CBS_get_asn1(in, &single, CBS_ASN1_SEQUENCE) || !CBS_get_asn1(&single, &certid, CBS_ASN1_SEQUENCE) ||
        !alg_oid(&certid, &s->hash_oid) || !CBS_get_asn1(&certid, &s->name_hash, CBS_ASN1_OCTETSTRING) ||
        !CBS_get_asn1(&certid, &s->key_hash, CBS_ASN1_OCTETSTRING) ||
        !CBS_get_asn1(&certid, &s->serial, CBS_ASN1_INTEGER) || CBS_len(&certid) != 0) {
        return fail(err, cap, "bad CertID");
    }
    CBS status;
    unsigned tag;
    if (!CBS_get_any_asn1(&single, &status, &tag)) {
        return fail(err, cap, "no certStatus");
    }
    if (tag == TAG(0) && CBS_len(&status) == 0) {
        s->status = GW_OCSP_STATUS_GOOD;
    } else if (tag == TAG(2) && CBS_len(&status) == 0) {
        s->status = GW_OCSP_STATUS_UNKNOWN;
    } else if (tag == CTAG(1)) {
        s->status = GW_OCSP_STATUS_REVOKED;
        if (!get_time(&status, &s->revoked_at)) {
            return fail(err, cap, "bad revocationTime");
        }
        if (CBS_len(&status) > 0) {
            CBS r, e;
            if (!CBS_get_asn1(&status, &r, CTAG(0)) || !CBS_get_asn1(&r, &e, CBS_ASN1_ENUMERATED) || CBS_len(&r) != 0 ||
                CBS_len(&e) != 1 || CBS_data(&e)[0] > 10) {
                return fail(err, cap, "bad revocationReason");
            }
            s->reason = CBS_data(&e)[0];
        }
        if (CBS_len(&status) != 0) {
            return fail(err, cap, "bad RevokedInfo");
        }
    } else {
        return fail(err, cap, "bad certStatus");
    }
    if (!get_time(&single, &s->this_update)) {
        return fail(err, cap, "bad thisUpdate");
    }
    CBS next;
    int present = 0;
    if (!CBS_get_optional_asn1(&single, &next, &present, CTAG(0))) {
        return fail(err, cap, "bad nextUpdate");
    }
    if (present) {
        if (!get_time(&next, &s->next_update) || CBS_len(&next) != 0) {
            return fail(err, cap, "bad nextUpdate");
        }
        s->has_next = 1;
    }
    CBS ext;
    if (!CBS_get_optional_asn1(&single, &ext, NULL, CTAG(1)) || CBS_len(&single) != 0) {
        return fail(err, cap, "trailing data in a SingleResponse");
    }
    return 1;
}

int gw_ocsp_parse(const uint8_t *der, size_t len, gw_ocsp_response *out, char *err, size_t cap) {
    memset(out, 0, sizeof(*out));
    CBS in, resp, status, bytes_outer;
    CBS_init(&in, der, len);
    uint64_t st;
    if (!CBS_get_asn1(&in, &resp, CBS_ASN1_SEQUENCE) || CBS_len(&in) != 0 ||
        !CBS_get_asn1(&resp, &status, CBS_ASN1_ENUMERATED) || CBS_len(&status) != 1) {
        return fail(err, cap, "not an OCSPResponse");
    }
    st = CBS_data(&status)[0];
    out->response_status = (int)st;
    if (st != 0) {
        return CBS_len(&resp) == 0 ? 1 : fail(err, cap, "an unsuccessful response with a body");
    }
    CBS bytes, type, octets;
    if (!CBS_get_asn1(&resp, &bytes_outer, CTAG(0)) || CBS_len(&resp) != 0 ||
        !CBS_get_asn1(&bytes_outer, &bytes, CBS_ASN1_SEQUENCE) || CBS_len(&bytes_outer) != 0 ||
        !CBS_get_asn1(&bytes, &type, CBS_ASN1_OBJECT) || !CBS_get_asn1(&bytes, &octets, CBS_ASN1_OCTETSTRING) ||
        CBS_len(&bytes) != 0) {
        return fail(err, cap, "no responseBytes");
    }
    if (!CBS_mem_equal(&type, k_basic, sizeof(k_basic))) {
        return fail(err, cap, "not a basic OCSP response");
    }
    CBS basic, tbs_el, tbs;
    if (!CBS_get_asn1(&octets, &basic, CBS_ASN1_SEQUENCE) || CBS_len(&octets) != 0 ||
        !CBS_get_asn1_element(&basic, &tbs_el, CBS_ASN1_SEQUENCE)) {
        return fail(err, cap, "bad BasicOCSPResponse");
    }
    out->tbs = tbs_el;
    CBS_init(&tbs, CBS_data(&tbs_el), CBS_len(&tbs_el));
    CBS body;
    if (!CBS_get_asn1(&tbs, &body, CBS_ASN1_SEQUENCE)) {
        return fail(err, cap, "bad ResponseData");
    }
    CBS version;
    int has_version = 0;
    if (!CBS_get_optional_asn1(&body, &version, &has_version, CTAG(0))) {
        return fail(err, cap, "bad version");
    }
    if (has_version) {
        uint64_t v;
        if (!CBS_get_asn1_uint64(&version, &v) || v != 0 || CBS_len(&version) != 0) {
            return fail(err, cap, "unknown version");
        }
    }
    CBS rid;
    unsigned rid_tag;
    if (!CBS_get_any_asn1(&body, &rid, &rid_tag)) {
        return fail(err, cap, "no responderID");
    }
    if (rid_tag == CTAG(1)) {
        if (!CBS_get_asn1_element(&rid, &out->responder, CBS_ASN1_SEQUENCE) || CBS_len(&rid) != 0) {
            return fail(err, cap, "bad responderID byName");
        }
    } else if (rid_tag == CTAG(2)) {
        out->by_key = 1;
        if (!CBS_get_asn1(&rid, &out->responder, CBS_ASN1_OCTETSTRING) || CBS_len(&rid) != 0 ||
            CBS_len(&out->responder) != SHA_DIGEST_LENGTH) {
            return fail(err, cap, "bad responderID byKey");
        }
    } else {
        return fail(err, cap, "bad responderID");
    }
    if (!get_time(&body, &out->produced_at)) {
        return fail(err, cap, "bad producedAt");
    }
    CBS singles;
    if (!CBS_get_asn1(&body, &singles, CBS_ASN1_SEQUENCE)) {
        return fail(err, cap, "no responses");
    }
    while (CBS_len(&singles) > 0) {
        if (out->num_singles == GW_OCSP_MAX_SINGLES) {
            return fail(err, cap, "more than 8 responses");
        }
        if (!parse_single(&singles, &out->singles[out->num_singles++], err, cap)) {
            return 0;
        }
    }
    CBS ext;
    if (!CBS_get_optional_asn1(&body, &ext, NULL, CTAG(1)) || CBS_len(&body) != 0 || CBS_len(&tbs) != 0) {
        return fail(err, cap, "trailing data in ResponseData");
    }
    CBS sig;
    uint8_t unused;
    if (!alg_oid(&basic, &out->sig_oid) || !CBS_get_asn1(&basic, &sig, CBS_ASN1_BITSTRING) ||
        !CBS_get_u8(&sig, &unused) || unused != 0) {
        return fail(err, cap, "bad signature");
    }
    out->signature = sig;
    CBS certs_outer, certs;
    int has_certs = 0;
    if (!CBS_get_optional_asn1(&basic, &certs_outer, &has_certs, CTAG(0))) {
        return fail(err, cap, "bad certs");
    }
    if (has_certs) {
        if (!CBS_get_asn1(&certs_outer, &certs, CBS_ASN1_SEQUENCE) || CBS_len(&certs_outer) != 0) {
            return fail(err, cap, "bad certs");
        }
        while (CBS_len(&certs) > 0) {
            if (out->num_certs == GW_OCSP_MAX_CERTS) {
                return fail(err, cap, "more than 4 certificates");
            }
            if (!CBS_get_asn1_element(&certs, &out->certs[out->num_certs++], CBS_ASN1_SEQUENCE)) {
                return fail(err, cap, "bad certificate");
            }
        }
    }
    if (CBS_len(&basic) != 0) {
        return fail(err, cap, "trailing data in BasicOCSPResponse");
    }
    if (out->num_singles == 0) {
        return fail(err, cap, "no SingleResponse");
    }
    return 1;
}

const char *gw_ocsp_result_name(gw_ocsp_result r) {
    static const char *const names[GW_OCSP_RESULT_COUNT] = {
        "-", "good", "none", "revoked", "unknown", "stale", "bad_signature", "wrong_cert", "malformed"};
    return (unsigned)r < GW_OCSP_RESULT_COUNT ? names[r] : "-";
}

static const char *reason_words(int r) {
    static const char *const words[] = {"unspecified",         "key compromise", "CA compromise",
                                        "affiliation changed", "superseded",     "cessation of operation",
                                        "certificate hold",    "(unused)",       "remove from CRL",
                                        "privilege withdrawn", "AA compromise"};
    return r >= 0 && r <= 10 ? words[r] : "no reason given";
}

static void utc(int64_t t, char *out, size_t cap) {
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

// hash_of: the digest CertID names (SHA-1 or SHA-2), or NULL.
static const EVP_MD *hash_of(const CBS *oid) {
    switch (OBJ_cbs2nid(oid)) {
        case NID_sha1:
            return EVP_sha1();
        case NID_sha256:
            return EVP_sha256();
        case NID_sha384:
            return EVP_sha384();
        case NID_sha512:
            return EVP_sha512();
        default:
            return NULL;
    }
}

// names_cert says whether CertID |s| is |leaf|'s under |issuer|.
static int names_cert(const gw_ocsp_single *s, X509 *leaf, X509 *issuer) {
    const EVP_MD *md = hash_of(&s->hash_oid);
    if (md == NULL) {
        return 0;
    }
    uint8_t name_h[EVP_MAX_MD_SIZE], key_h[EVP_MAX_MD_SIZE];
    unsigned nl = 0, kl = 0;
    uint8_t *name_der = NULL;
    int len = i2d_X509_NAME(X509_get_issuer_name(leaf), &name_der);
    const ASN1_BIT_STRING *key = X509_get0_pubkey_bitstr(issuer);
    int ok = len > 0 && key != NULL && EVP_Digest(name_der, (size_t)len, name_h, &nl, md, NULL) &&
             EVP_Digest(ASN1_STRING_get0_data(key), (size_t)ASN1_STRING_length(key), key_h, &kl, md, NULL);
    OPENSSL_free(name_der);
    if (!ok || !CBS_mem_equal(&s->name_hash, name_h, nl) || !CBS_mem_equal(&s->key_hash, key_h, kl)) {
        return 0;
    }
    uint8_t *serial = NULL;
    len = i2d_ASN1_INTEGER(X509_get_serialNumber(leaf), &serial);
    CBS c, content;
    int same = 0;
    if (len > 0) {
        CBS_init(&c, serial, (size_t)len);
        same = CBS_get_asn1(&c, &content, CBS_ASN1_INTEGER) &&
               CBS_mem_equal(&s->serial, CBS_data(&content), CBS_len(&content));
    }
    OPENSSL_free(serial);
    return same;
}

// is_responder says whether the ResponderID of |r| names |cert|.
static int is_responder(const gw_ocsp_response *r, X509 *cert) {
    if (r->by_key) {
        const ASN1_BIT_STRING *key = X509_get0_pubkey_bitstr(cert);
        uint8_t h[SHA_DIGEST_LENGTH];
        return key != NULL && SHA1(ASN1_STRING_get0_data(key), (size_t)ASN1_STRING_length(key), h) != NULL &&
               CBS_mem_equal(&r->responder, h, sizeof(h));
    }
    uint8_t *der = NULL;
    int len = i2d_X509_NAME(X509_get_subject_name(cert), &der);
    int same = len > 0 && CBS_mem_equal(&r->responder, der, (size_t)len);
    OPENSSL_free(der);
    return same;
}

// signed_by checks the response's signature with |key|.
static int signed_by(const gw_ocsp_response *r, EVP_PKEY *key) {
    const EVP_MD *md;
    switch (OBJ_cbs2nid(&r->sig_oid)) {
        case NID_sha256WithRSAEncryption:
        case NID_ecdsa_with_SHA256:
            md = EVP_sha256();
            break;
        case NID_sha384WithRSAEncryption:
        case NID_ecdsa_with_SHA384:
            md = EVP_sha384();
            break;
        case NID_sha512WithRSAEncryption:
        case NID_ecdsa_with_SHA512:
            md = EVP_sha512();
            break;
        case NID_ED25519:
            md = NULL;
            break;
        default:
            return 0;  // SHA-1 signatures and RSA-PSS are not taken
    }
    int id = EVP_PKEY_id(key), nid = OBJ_cbs2nid(&r->sig_oid);
    int rsa_alg =
        nid == NID_sha256WithRSAEncryption || nid == NID_sha384WithRSAEncryption || nid == NID_sha512WithRSAEncryption;
    if ((id == EVP_PKEY_RSA) != rsa_alg || (id == EVP_PKEY_ED25519) != (nid == NID_ED25519)) {
        return 0;  // an algorithm that does not fit the key
    }
    EVP_MD_CTX ctx;
    EVP_MD_CTX_init(&ctx);
    int ok =
        EVP_DigestVerifyInit(&ctx, NULL, md, NULL, key) &&
        EVP_DigestVerify(&ctx, CBS_data(&r->signature), CBS_len(&r->signature), CBS_data(&r->tbs), CBS_len(&r->tbs));
    EVP_MD_CTX_cleanup(&ctx);
    ERR_clear_error();
    return ok == 1;
}

// find_signer: the issuer when the ResponderID names it and it signed, else a delegated
// responder certificate from the response: issued and signed by |issuer|, with the
// id-kp-OCSPSigning extended key usage, valid at |now|, named by the ResponderID, and
// the signer. 1 if one signed; 0 with |reason|.
static int find_signer(const gw_ocsp_response *r, X509 *issuer, time_t now, char *reason, size_t cap) {
    EVP_PKEY *ikey = X509_get_pubkey(issuer);
    if (ikey == NULL) {
        snprintf(reason, cap, "OCSP staple: the issuer's key cannot be read");
        return 0;
    }
    int ok = is_responder(r, issuer) && signed_by(r, ikey);
    const char *why = "not signed by the issuer or by a responder certificate it issued";
    for (size_t i = 0; i < r->num_certs && !ok; i++) {
        const uint8_t *p = CBS_data(&r->certs[i]);
        X509 *c = d2i_X509(NULL, &p, (long)CBS_len(&r->certs[i]));
        if (c == NULL || !is_responder(r, c)) {
            X509_free(c);
            continue;
        }
        EVP_PKEY *ckey = X509_get_pubkey(c);
        int issued =
            X509_NAME_cmp(X509_get_issuer_name(c), X509_get_subject_name(issuer)) == 0 && X509_verify(c, ikey) == 1;
        int eku = (X509_get_extension_flags(c) & EXFLAG_XKUSAGE) && (X509_get_extended_key_usage(c) & XKU_OCSP_SIGN);
        int current = X509_cmp_time(X509_get0_notBefore(c), &now) < 0 && X509_cmp_time(X509_get0_notAfter(c), &now) > 0;
        if (!issued) {
            why = "signed by a responder certificate the server's issuer did not issue";
        } else if (!eku) {
            why = "signed by a responder certificate without the OCSPSigning extended key usage";
        } else if (!current) {
            why = "signed by a responder certificate that is not valid now";
        } else if (ckey != NULL && signed_by(r, ckey)) {
            ok = 1;
        }
        EVP_PKEY_free(ckey);
        X509_free(c);
    }
    EVP_PKEY_free(ikey);
    ERR_clear_error();
    if (!ok) {
        snprintf(reason, cap, "OCSP staple: bad signature: %s", why);
    }
    return ok;
}

gw_ocsp_result gw_ocsp_check(const uint8_t *der, size_t len, X509 *leaf, X509 *issuer, time_t now, int skew_s,
                             char *reason, size_t cap, char *info, size_t info_cap) {
    gw_ocsp_response r;
    char err[200];
    if (info != NULL && info_cap > 0) {
        info[0] = '\0';
    }
    if (!gw_ocsp_parse(der, len, &r, err, sizeof(err))) {
        snprintf(reason, cap, "OCSP staple: %s", err);
        return GW_OCSP_RESULT_MALFORMED;
    }
    if (r.response_status != 0) {
        snprintf(reason, cap, "OCSP staple: the responder answered status %d, not successful", r.response_status);
        return GW_OCSP_RESULT_MALFORMED;
    }
    if (issuer == NULL) {
        snprintf(reason, cap, "OCSP staple: the server's chain has no issuer to check it against");
        return GW_OCSP_RESULT_BAD_SIGNATURE;
    }
    const gw_ocsp_single *s = NULL;
    for (size_t i = 0; i < r.num_singles && s == NULL; i++) {
        s = names_cert(&r.singles[i], leaf, issuer) ? &r.singles[i] : NULL;
    }
    char pa[32], tu[32], nu[32] = "-";
    utc(r.produced_at, pa, sizeof(pa));
    if (info != NULL && s != NULL) {
        utc(s->this_update, tu, sizeof(tu));
        if (s->has_next) {
            utc(s->next_update, nu, sizeof(nu));
        }
        char responder[300] = "";
        if (r.by_key) {
            snprintf(responder, sizeof(responder), "key hash");
        } else {
            const uint8_t *p = CBS_data(&r.responder);
            X509_NAME *n = d2i_X509_NAME(NULL, &p, (long)CBS_len(&r.responder));
            if (n != NULL) {
                X509_NAME_oneline(n, responder, sizeof(responder));
            }
            X509_NAME_free(n);
        }
        snprintf(info, info_cap, "responder %s, produced %s, this update %s, next update %s, status %s", responder, pa,
                 tu, nu,
                 s->status == GW_OCSP_STATUS_GOOD      ? "good"
                 : s->status == GW_OCSP_STATUS_REVOKED ? "revoked"
                                                       : "unknown");
    }
    if (!find_signer(&r, issuer, now, reason, cap)) {
        return GW_OCSP_RESULT_BAD_SIGNATURE;
    }
    if (s == NULL) {
        snprintf(reason, cap,
                 "OCSP staple: it is about another certificate (no response for the server's serial "
                 "under its issuer)");
        return GW_OCSP_RESULT_WRONG_CERT;
    }
    if (s->this_update > (int64_t)now + skew_s) {
        utc(s->this_update, tu, sizeof(tu));
        snprintf(reason, cap, "OCSP staple: thisUpdate %s is in the future (skew %d s)", tu, skew_s);
        return GW_OCSP_RESULT_STALE;
    }
    if (s->has_next && s->next_update < (int64_t)now - skew_s) {
        snprintf(reason, cap, "OCSP staple: out of date: its nextUpdate %s has passed", nu);
        return GW_OCSP_RESULT_STALE;
    }
    if (s->status == GW_OCSP_STATUS_REVOKED) {
        char at[32];
        utc(s->revoked_at, at, sizeof(at));
        snprintf(reason, cap, "certificate revoked (OCSP): since %s, reason: %s", at, reason_words(s->reason));
        return GW_OCSP_RESULT_REVOKED;
    }
    if (s->status == GW_OCSP_STATUS_UNKNOWN) {
        snprintf(reason, cap, "OCSP staple: the responder does not know the certificate (status unknown)");
        return GW_OCSP_RESULT_UNKNOWN;
    }
    return GW_OCSP_RESULT_GOOD;
}
