#include "gateway/tls/identity.h"
#include "gateway/tls/ocsp.h"

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

static atomic_ullong g_identity_generation;

static int g_taker_index = -1;
static pthread_once_t g_taker_once = PTHREAD_ONCE_INIT;

static void init_taker_index(void) {
    g_taker_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

void gw_tls_set_session_taker(SSL *ssl, const gw_session_taker *taker) {
    pthread_once(&g_taker_once, init_taker_index);
    SSL_set_ex_data(ssl, g_taker_index, (void *)taker);
}

// on_new_session hands a session the server sent to the SSL's taker (none: not kept).
// Sessions are a context's callback in BoringSSL; whoever makes the SSL decides.
static int on_new_session(SSL *ssl, SSL_SESSION *session) {
    pthread_once(&g_taker_once, init_taker_index);
    const gw_session_taker *taker = SSL_get_ex_data(ssl, g_taker_index);
    return taker != NULL && taker->take(ssl, session);
}

uint16_t gw_tls_version_parse(const char *s) {
    if (strcmp(s, "1.2") == 0) {
        return TLS1_2_VERSION;
    }
    if (strcmp(s, "1.3") == 0) {
        return TLS1_3_VERSION;
    }
    return 0;
}

// last_ssl_error formats the most recent library error in words and clears the queue.
static const char *last_ssl_error(char *buf, size_t len) {
    uint32_t e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, len, "%s", r ? r : "unknown error");
    for (char *p = buf; *p; p++) {
        *p = *p == '_' ? ' ' : (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
    }
    ERR_clear_error();
    return buf;
}

static int readable(const char *setting, const char *path, char *err, size_t err_len) {
    if (access(path, R_OK) != 0) {
        snprintf(err, err_len, "%s: %s: %s", setting, path, strerror(errno));
        return 0;
    }
    return 1;
}

static int read_password(const char *setting, const char *path, char *out, size_t cap, char *err, size_t err_len) {
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        snprintf(err, err_len, "%s: %s: %s", setting, path, strerror(errno));
        return 0;
    }
    if (fgets(out, (int)cap, f) == NULL) {
        out[0] = '\0';
    }
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    return 1;
}

static int file_mentions(const char *path, const char *word) {
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return 0;
    }
    char line[256];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        found = strstr(line, word) != NULL;
    }
    fclose(f);
    return found;
}

static int password_cb(char *buf, int size, int rwflag, void *u) {
    const char *pass = u;
    if (pass == NULL) {
        return -1;  // encrypted key without key_password_file
    }
    size_t n = strlen(pass);
    if ((int)n > size) {
        return -1;
    }
    memcpy(buf, pass, n);
    return (int)n;
}

static time_t asn1_to_time(const ASN1_TIME *t) {
    int days = 0, secs = 0;
    if (!ASN1_TIME_diff(&days, &secs, NULL, t)) {
        return 0;
    }
    return time(NULL) + (time_t)days * 86400 + secs;
}

static void describe_key(EVP_PKEY *key, char *out, size_t len) {
    switch (EVP_PKEY_id(key)) {
        case EVP_PKEY_RSA:
            snprintf(out, len, "rsa-%d", EVP_PKEY_bits(key));
            break;
        case EVP_PKEY_EC: {
            int nid = EC_GROUP_get_curve_name(EC_KEY_get0_group(EVP_PKEY_get0_EC_KEY(key)));
            snprintf(out, len, "%s",
                     nid == NID_X9_62_prime256v1 ? "ec-p256"
                     : nid == NID_secp384r1      ? "ec-p384"
                     : nid == NID_secp521r1      ? "ec-p521"
                                                 : "ec");
            break;
        }
        case EVP_PKEY_ED25519:
            snprintf(out, len, "ed25519");
            break;
        default:
            snprintf(out, len, "other");
    }
}

// ---- verification during the handshake ----

// load_pem_objects adds the certificates (or CRLs) of |path| to |ctx|'s store. With
// |keep|, the parsed objects are handed to the caller (who frees them) instead of freed.
static int load_pem_objects(SSL_CTX *ctx, const char *path, const char *setting, int want_crl,
                            STACK_OF(X509_INFO) * *keep, char *err, size_t err_len) {
    if (!readable(setting, path, err, err_len)) {
        return 0;
    }
    BIO *bio = BIO_new_file(path, "r");
    STACK_OF(X509_INFO) *infos = bio ? PEM_X509_INFO_read_bio(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (infos == NULL) {
        char e[200];
        snprintf(err, err_len, "%s: %s: not a PEM file (%s)", setting, path, last_ssl_error(e, sizeof(e)));
        return 0;
    }
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    int count = 0;
    for (size_t i = 0; i < sk_X509_INFO_num(infos); i++) {
        X509_INFO *info = sk_X509_INFO_value(infos, i);
        if (!want_crl && info->x509 != NULL && X509_STORE_add_cert(store, info->x509)) {
            count++;
        }
        if (want_crl && info->crl != NULL && X509_STORE_add_crl(store, info->crl)) {
            count++;
        }
    }
    ERR_clear_error();
    if (count > 0 && keep != NULL) {
        *keep = infos;
    } else {
        sk_X509_INFO_pop_free(infos, X509_INFO_free);
    }
    if (count == 0) {
        snprintf(err, err_len, "%s: %s: holds no %s", setting, path,
                 want_crl ? "CRL (-----BEGIN X509 CRL-----)" : "certificate (-----BEGIN CERTIFICATE-----)");
        return 0;
    }
    return 1;
}

// load_chain puts the certificate chain of |spec| into |ctx|.
static int load_chain(SSL_CTX *ctx, const gw_identity_spec *spec, char *err, size_t err_len) {
    char e[200];
    if (!readable("certificate", spec->certificate, err, err_len)) {
        return 0;
    }
    if (!SSL_CTX_use_certificate_chain_file(ctx, spec->certificate)) {
        snprintf(err, err_len, "certificate: %s: not a PEM certificate chain (%s)", spec->certificate,
                 last_ssl_error(e, sizeof(e)));
        return 0;
    }
    return 1;
}

// read_key_password reads key_password_file (the key's password, or a token's PIN) into
// |out|: 1 with *|have| set when there is one, 0 on error.
static int read_key_password(const gw_identity_spec *spec, char *out, size_t cap, int *have, char *err,
                             size_t err_len) {
    *have = 0;
    if (spec->key_password_file == NULL) {
        return 1;
    }
    if (!read_password("key_password_file", spec->key_password_file, out, cap, err, err_len)) {
        return 0;
    }
    *have = 1;
    return 1;
}

static int load_pem_identity(SSL_CTX *ctx, const gw_identity_spec *spec, char *err, size_t err_len) {
    char e[200];
    if (!readable("certificate", spec->certificate, err, err_len) || !readable("key", spec->key, err, err_len) ||
        !load_chain(ctx, spec, err, err_len)) {
        return 0;
    }
    char pass[1024];
    int have_pass = 0;
    if (!read_key_password(spec, pass, sizeof(pass), &have_pass, err, err_len)) {
        return 0;
    }
    BIO *bio = BIO_new_file(spec->key, "r");
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, password_cb, have_pass ? pass : NULL) : NULL;
    BIO_free(bio);
    OPENSSL_cleanse(pass, sizeof(pass));
    if (key == NULL) {
        // A wrong password shows up as any of several decoding errors; the file itself
        // says whether it is encrypted.
        int encrypted = file_mentions(spec->key, "ENCRYPTED");
        if (!have_pass && encrypted) {
            snprintf(err, err_len, "key: %s: the key is encrypted; set key_password_file", spec->key);
        } else if (have_pass && encrypted) {
            snprintf(err, err_len, "key_password_file: wrong password for %s", spec->key);
        } else {
            snprintf(err, err_len, "key: %s: not a PEM private key (%s)", spec->key, last_ssl_error(e, sizeof(e)));
        }
        ERR_clear_error();
        return 0;
    }
    int ok = SSL_CTX_use_PrivateKey(ctx, key) && SSL_CTX_check_private_key(ctx);
    EVP_PKEY_free(key);
    if (!ok) {
        snprintf(err, err_len, "key: %s does not match the certificate in %s", spec->key, spec->certificate);
        ERR_clear_error();
        return 0;
    }
    return 1;
}

// test_signature has the token sign a random digest with |sigalg| and verifies it with
// the certificate's public key: the key in the token is the certificate's.
static int test_signature(gw_identity *id, EVP_PKEY *pub, uint16_t sigalg, char *err, size_t err_len) {
    uint8_t msg[32], tbs[128], raw[1024], sig[1100];
    size_t tbs_len = 0, raw_len = 0, sig_len = 0;
    uint32_t mech = 0;
    RAND_bytes(msg, sizeof(msg));
    char why[600];
    if (!gw_p11_prepare(sigalg, msg, sizeof(msg), tbs, &tbs_len, &mech)) {
        snprintf(err, err_len, "key: cannot prepare a test signature");
        return 0;
    }
    if (!gw_p11_sign(id->p11, mech, tbs, tbs_len, raw, &raw_len, sizeof(raw), GW_P11_SIGN_TIMEOUT_MS, why,
                     sizeof(why))) {
        snprintf(err, err_len, "key: %s: test signature failed: %s", id->spec.key, why);
        return 0;
    }
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok = gw_p11_finish(mech, raw, raw_len, sig, &sig_len, sizeof(sig)) && mctx != NULL &&
             EVP_DigestVerifyInit(mctx, &pctx, SSL_get_signature_algorithm_digest(sigalg), NULL, pub);
    if (ok && SSL_is_signature_algorithm_rsa_pss(sigalg)) {
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, -1);
    }
    ok = ok && EVP_DigestVerify(mctx, sig, sig_len, msg, sizeof(msg)) == 1;
    EVP_MD_CTX_free(mctx);
    ERR_clear_error();
    if (!ok) {
        snprintf(err, err_len,
                 "key: the key %s on token \"%s\" does not match the certificate in %s (a test "
                 "signature did not verify with its public key)",
                 id->spec.key, gw_p11_info(id->p11)->token, id->spec.certificate);
    }
    return ok;
}

// load_pkcs11_identity loads the certificate chain from its file and opens the key in the
// token through a signer process: found, logged in, and proven to be the certificate's by
// a test signature. Handshakes sign through the key method (gateway/upstream/keyops.c).
static int load_pkcs11_identity(SSL_CTX *ctx, gw_identity *id, const gw_identity_spec *spec, char *err,
                                size_t err_len) {
    if (!load_chain(ctx, spec, err, err_len)) {
        return 0;
    }
    if (spec->pkcs11_module == NULL) {
        snprintf(err, err_len,
                 "pkcs11_module: required with a pkcs11: key (or module-path in the URI), e.g. "
                 "/usr/lib/softhsm/libsofthsm2.so");
        return 0;
    }
    if (!readable("pkcs11_module", spec->pkcs11_module, err, err_len)) {
        return 0;
    }
    char pin[256];
    int have_pin = 0;
    if (!read_key_password(spec, pin, sizeof(pin), &have_pin, err, err_len)) {
        return 0;
    }
    char why[600];
    id->p11 = gw_p11_open(spec->pkcs11_module, spec->key, have_pin ? pin : NULL, spec->run_uid, spec->run_gid, 0, why,
                          sizeof(why));
    OPENSSL_cleanse(pin, sizeof(pin));
    if (id->p11 == NULL) {
        snprintf(err, err_len, "key: %s: %s", spec->key, why);
        return 0;
    }
    const p11w_hello_ok *info = gw_p11_info(id->p11);
    X509 *leaf = SSL_CTX_get0_certificate(ctx);
    EVP_PKEY *pub = leaf ? X509_get_pubkey(leaf) : NULL;
    int type = pub ? EVP_PKEY_id(pub) : 0;
    int ok = 0;
    uint16_t test = 0, test2 = 0;
    size_t n = 0;
    if ((type == EVP_PKEY_EC) != (info->key_type == P11W_KEYTYPE_EC) ||
        (type == EVP_PKEY_RSA) != (info->key_type == P11W_KEYTYPE_RSA)) {
        snprintf(err, err_len, "key: the key %s on token \"%s\" is %s, the certificate's in %s is not", spec->key,
                 info->token, info->key_type == P11W_KEYTYPE_EC ? "an EC key" : "an RSA key", spec->certificate);
    } else if (type == EVP_PKEY_EC && !(info->mechs & P11W_HAS_ECDSA)) {
        snprintf(err, err_len, "key: token \"%s\" does not offer ECDSA signatures (CKM_ECDSA)", info->token);
    } else if (type == EVP_PKEY_EC) {
        int nid = EC_GROUP_get_curve_name(EC_KEY_get0_group(EVP_PKEY_get0_EC_KEY(pub)));
        test = nid == NID_X9_62_prime256v1 ? SSL_SIGN_ECDSA_SECP256R1_SHA256
               : nid == NID_secp384r1      ? SSL_SIGN_ECDSA_SECP384R1_SHA384
               : nid == NID_secp521r1      ? SSL_SIGN_ECDSA_SECP521R1_SHA512
                                           : 0;
        id->sigalgs[n++] = SSL_SIGN_ECDSA_SECP256R1_SHA256;
        id->sigalgs[n++] = SSL_SIGN_ECDSA_SECP384R1_SHA384;
        id->sigalgs[n++] = SSL_SIGN_ECDSA_SECP521R1_SHA512;
        ok = test != 0;
        if (!ok) {
            snprintf(err, err_len, "key: the certificate's EC curve is not P-256, P-384 or P-521");
        }
    } else if (type == EVP_PKEY_RSA && !(info->mechs & (P11W_HAS_RSA_PSS | P11W_HAS_RSA_PKCS))) {
        snprintf(err, err_len, "key: token \"%s\" offers neither CKM_RSA_PKCS_PSS nor CKM_RSA_PKCS", info->token);
    } else if (type == EVP_PKEY_RSA && !(info->mechs & P11W_HAS_RSA_PSS) && spec->tls_max >= TLS1_3_VERSION) {
        snprintf(err, err_len,
                 "key: token \"%s\" offers no RSA-PSS (CKM_RSA_PKCS_PSS), which TLS 1.3 needs with "
                 "an RSA key: set tls_max = \"1.2\"",
                 info->token);
    } else if (type == EVP_PKEY_RSA) {
        if (info->mechs & P11W_HAS_RSA_PSS) {
            id->sigalgs[n++] = SSL_SIGN_RSA_PSS_RSAE_SHA256;
            id->sigalgs[n++] = SSL_SIGN_RSA_PSS_RSAE_SHA384;
            id->sigalgs[n++] = SSL_SIGN_RSA_PSS_RSAE_SHA512;
            test = SSL_SIGN_RSA_PSS_RSAE_SHA256;
        }
        if (info->mechs & P11W_HAS_RSA_PKCS) {
            id->sigalgs[n++] = SSL_SIGN_RSA_PKCS1_SHA256;
            id->sigalgs[n++] = SSL_SIGN_RSA_PKCS1_SHA384;
            id->sigalgs[n++] = SSL_SIGN_RSA_PKCS1_SHA512;
            *(test ? &test2 : &test) = SSL_SIGN_RSA_PKCS1_SHA256;
        }
        ok = 1;
    } else {
        snprintf(err, err_len, "key: a key in a token must be EC or RSA");
    }
    id->num_sigalgs = n;
    ok = ok && test_signature(id, pub, test, err, err_len) &&
         (test2 == 0 || test_signature(id, pub, test2, err, err_len));
    ok = ok && SSL_CTX_set_signing_algorithm_prefs(ctx, id->sigalgs, id->num_sigalgs);
    EVP_PKEY_free(pub);
    return ok;
}

static int load_pkcs12_identity(SSL_CTX *ctx, const gw_identity_spec *spec, char *err, size_t err_len) {
    char e[200];
    if (!readable("pkcs12", spec->pkcs12, err, err_len)) {
        return 0;
    }
    char pass[1024] = "";
    if (spec->pkcs12_password_file != NULL &&
        !read_password("pkcs12_password_file", spec->pkcs12_password_file, pass, sizeof(pass), err, err_len)) {
        return 0;
    }
    BIO *bio = BIO_new_file(spec->pkcs12, "rb");
    PKCS12 *p12 = bio ? d2i_PKCS12_bio(bio, NULL) : NULL;
    BIO_free(bio);
    if (p12 == NULL) {
        snprintf(err, err_len, "pkcs12: %s: not a PKCS#12 file (%s)", spec->pkcs12, last_ssl_error(e, sizeof(e)));
        OPENSSL_cleanse(pass, sizeof(pass));
        return 0;
    }
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    STACK_OF(X509) *ca = NULL;
    int ok = PKCS12_parse(p12, pass, &key, &cert, &ca);
    PKCS12_free(p12);
    OPENSSL_cleanse(pass, sizeof(pass));
    if (!ok || key == NULL || cert == NULL) {
        uint32_t code = ERR_peek_last_error();
        if (ERR_GET_REASON(code) == PKCS8_R_INCORRECT_PASSWORD) {
            snprintf(err, err_len, "pkcs12_password_file: wrong password for %s", spec->pkcs12);
        } else {
            snprintf(err, err_len, "pkcs12: %s: %s", spec->pkcs12,
                     ok ? "holds no key and certificate" : last_ssl_error(e, sizeof(e)));
        }
        ERR_clear_error();
        EVP_PKEY_free(key);
        X509_free(cert);
        sk_X509_pop_free(ca, X509_free);
        return 0;
    }
    ok = SSL_CTX_use_certificate(ctx, cert) && SSL_CTX_use_PrivateKey(ctx, key) && SSL_CTX_check_private_key(ctx);
    for (size_t i = 0; ok && ca && i < sk_X509_num(ca); i++) {
        ok = SSL_CTX_add1_chain_cert(ctx, sk_X509_value(ca, i));
    }
    EVP_PKEY_free(key);
    X509_free(cert);
    sk_X509_pop_free(ca, X509_free);
    if (!ok) {
        snprintf(err, err_len, "pkcs12: %s: key and certificate do not match (%s)", spec->pkcs12,
                 last_ssl_error(e, sizeof(e)));
        return 0;
    }
    return 1;
}

// note_crl_coverage records the earliest nextUpdate of the CRLs and the trusted CAs that
// no CRL comes from (each would fail every handshake through it).
static int note_crl_coverage(gw_identity *id, STACK_OF(X509_INFO) * trust, STACK_OF(X509_INFO) * crls) {
    for (size_t i = 0; i < sk_X509_INFO_num(crls); i++) {
        X509_CRL *crl = sk_X509_INFO_value(crls, i)->crl;
        const ASN1_TIME *next = crl ? X509_CRL_get0_nextUpdate(crl) : NULL;
        if (next != NULL) {
            time_t t = asn1_to_time(next);
            if (id->crl_next_update == 0 || t < id->crl_next_update) {
                id->crl_next_update = t;
            }
        }
    }
    for (size_t i = 0; i < sk_X509_INFO_num(trust); i++) {
        X509 *ca = sk_X509_INFO_value(trust, i)->x509;
        if (ca == NULL) {
            continue;
        }
        int covered = 0;
        for (size_t j = 0; j < sk_X509_INFO_num(crls) && !covered; j++) {
            X509_CRL *crl = sk_X509_INFO_value(crls, j)->crl;
            covered = crl != NULL && X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)) == 0;
        }
        if (covered) {
            continue;
        }
        char subject[256];
        gw_x509_name_text(X509_get_subject_name(ca), subject, sizeof(subject));
        char **grown = realloc(id->crl_uncovered, (id->num_crl_uncovered + 1) * sizeof(*grown));
        if (grown == NULL) {
            return 0;
        }
        id->crl_uncovered = grown;
        if ((grown[id->num_crl_uncovered] = gw_xstrdup(subject)) == NULL) {
            return 0;
        }
        id->num_crl_uncovered++;
    }
    return 1;
}

static void free_crl_notes(gw_identity *id) {
    for (size_t i = 0; i < id->num_crl_uncovered; i++) {
        free(id->crl_uncovered[i]);
    }
    free(id->crl_uncovered);
    id->crl_uncovered = NULL;
    id->num_crl_uncovered = 0;
}

// One pool of certificate buffers for every identity and load: the servers' chains that
// every tunnel and cached session holds are stored once. It lives as long as the process
// (BoringSSL requires it to outlive every SSL_CTX, SSL and SSL_SESSION).
static CRYPTO_BUFFER_POOL *g_cert_pool;
static pthread_once_t g_cert_pool_once = PTHREAD_ONCE_INIT;

static void cert_pool_init(void) {
    g_cert_pool = CRYPTO_BUFFER_POOL_new();
}

gw_identity *gw_identity_load(gw_identity_spec *spec, char *err, size_t err_len) {
    pthread_once(&g_cert_pool_once, cert_pool_init);
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    gw_identity *id = gw_xcalloc(1, sizeof(*id));
    if (ctx == NULL || id == NULL) {
        snprintf(err, err_len, "out of memory");
        SSL_CTX_free(ctx);
        free(id);
        return NULL;
    }
    char e[200];
    int ok = SSL_CTX_set_min_proto_version(ctx, spec->tls_min) && SSL_CTX_set_max_proto_version(ctx, spec->tls_max);
    if (ok && spec->ciphers != NULL && !SSL_CTX_set_strict_cipher_list(ctx, spec->ciphers)) {
        snprintf(err, err_len, "ciphers: \"%s\" is not a valid cipher list (%s)", spec->ciphers,
                 last_ssl_error(e, sizeof(e)));
        ok = 0;
    } else if (ok && spec->verify_only) {
        id->pending = 1;  // nothing to present, by design
    } else if (ok && spec->acme && spec->certificate != NULL &&
               (access(spec->certificate, F_OK) != 0 ||
                (!gw_p11_is_uri(spec->key) && spec->key != NULL && access(spec->key, F_OK) != 0))) {
        id->pending = 1;  // ACME obtains them; until then nothing to present
    } else if (ok) {
        ok = spec->pkcs12               ? load_pkcs12_identity(ctx, spec, err, err_len)
             : gw_p11_is_uri(spec->key) ? load_pkcs11_identity(ctx, id, spec, err, err_len)
                                        : load_pem_identity(ctx, spec, err, err_len);
    }
    STACK_OF(X509_INFO) *trust = NULL, *crls = NULL;
    ok = ok && load_pem_objects(ctx, spec->trust, "trust", 0, &trust, err, err_len);
    if (ok && spec->crl != NULL) {
        ok = load_pem_objects(ctx, spec->crl, "crl", 1, &crls, err, err_len);
        if (ok) {
            // Every certificate of the chain is checked against its issuer's CRL, the
            // intermediates too (as nginx's proxy_ssl_crl does): a revoked intermediate
            // is refused, and a CA without a CRL in the file fails the handshake.
            X509_STORE_set_flags(SSL_CTX_get_cert_store(ctx), X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
            ok = note_crl_coverage(id, trust, crls);
            if (!ok) {
                snprintf(err, err_len, "out of memory");
            }
        }
    }
    sk_X509_INFO_pop_free(trust, X509_INFO_free);
    sk_X509_INFO_pop_free(crls, X509_INFO_free);
    if (!ok) {
        SSL_CTX_free(ctx);
        free_crl_notes(id);
        gw_p11_free(id->p11);
        free(id);
        return NULL;
    }
    id->spec = *spec;
    memset(spec, 0, sizeof(*spec));
    id->ctx = ctx;
    id->generation = atomic_fetch_add(&g_identity_generation, 1) + 1;
    id->metrics_slot = -1;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (id->spec.ocsp != GW_OCSP_OFF) {
        SSL_CTX_enable_ocsp_stapling(ctx);  // status_request in the ClientHello
    }
    SSL_CTX_set_verify_depth(ctx, id->spec.verify_depth);
    SSL_CTX_set_cert_verify_callback(ctx, gw_tls_verify_cb, id);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    if (g_cert_pool != NULL) {
        SSL_CTX_set0_buffer_pool(ctx, g_cert_pool);
    }
    // Partial writes and moving buffers: the relay writes from ring buffers.
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    X509 *leaf = SSL_CTX_get0_certificate(ctx);
    if (leaf != NULL) {
        id->leaf = leaf;
        X509_NAME_oneline(X509_get_subject_name(leaf), id->subject, sizeof(id->subject));
        X509_NAME_oneline(X509_get_issuer_name(leaf), id->issuer, sizeof(id->issuer));
        id->not_before = asn1_to_time(X509_get0_notBefore(leaf));
        id->not_after = asn1_to_time(X509_get0_notAfter(leaf));
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(leaf), NULL);
        char *hex = bn ? BN_bn2hex(bn) : NULL;
        snprintf(id->serial, sizeof(id->serial), "%s", hex ? hex : "?");
        for (char *c = id->serial; *c; c++) {
            *c = (char)toupper((unsigned char)*c);  // as nginx's $ssl_client_serial shows it
        }
        OPENSSL_free(hex);
        BN_free(bn);
        EVP_PKEY *pub = X509_get_pubkey(leaf);
        if (pub != NULL) {
            describe_key(pub, id->key_type, sizeof(id->key_type));
            EVP_PKEY_free(pub);
        }
    }
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    return id;
}

void gw_identity_spec_free(gw_identity_spec *spec) {
    free(spec->name);
    free(spec->where);
    free(spec->certificate);
    free(spec->key);
    free(spec->key_password_file);
    free(spec->pkcs12);
    free(spec->pkcs12_password_file);
    free(spec->trust);
    free(spec->crl);
    free(spec->ciphers);
    free(spec->pins);
    free(spec->pkcs11_module);
    memset(spec, 0, sizeof(*spec));
}

void gw_identity_free(gw_identity *id) {
    if (id == NULL) {
        return;
    }
    SSL_CTX_free(id->ctx);
    gw_p11_free(id->p11);
    gw_identity_spec_free(&id->spec);
    free_crl_notes(id);
    free(id);
}

size_t gw_identity_file_problems(const gw_identity *id, time_t now,
                                 void (*cb)(void *arg, gw_problem_kind kind, const char *msg), void *arg) {
    const gw_identity_spec *sp = &id->spec;
    const struct {
        const char *what, *path;
    } secrets[] = {{"private key file", sp->key ? sp->key : sp->pkcs12},
                   {"key_password_file", sp->key_password_file},
                   {"pkcs12_password_file", sp->pkcs12_password_file}};
    char msg[PATH_MAX * 2 + 300];
    size_t n = 0;
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
        if (gw_file_mode_problem(secrets[i].what, secrets[i].path, msg, sizeof(msg))) {
            cb(arg, GW_PROBLEM_SECRET_MODE, msg);
            n++;
        }
    }
    // What the gateway trusts or presents must not be writable by anyone else either.
    const struct {
        const char *what, *path;
    } trusted[] = {{"certificate", sp->certificate},
                   {"private key file", sp->key != NULL && strncmp(sp->key, "pkcs11:", 7) != 0 ? sp->key : sp->pkcs12},
                   {"key_password_file", sp->key_password_file},
                   {"pkcs12_password_file", sp->pkcs12_password_file},
                   {"trust", sp->trust},
                   {"crl", sp->crl}};
    for (size_t i = 0; i < sizeof(trusted) / sizeof(trusted[0]); i++) {
        if (gw_file_writable_problem(trusted[i].what, trusted[i].path, msg, sizeof(msg))) {
            cb(arg, GW_PROBLEM_WRITABLE, msg);
            n++;
        }
    }
    if (sp->crl == NULL) {
        return n;
    }
    for (size_t i = 0; i < id->num_crl_uncovered; i++) {
        snprintf(msg, sizeof(msg),
                 "crl: no CRL from trusted CA %s in %s: with crl set every CA in a server's chain needs one, "
                 "so every handshake through this CA fails",
                 id->crl_uncovered[i], sp->crl);
        cb(arg, GW_PROBLEM_CRL, msg);
        n++;
    }
    if (id->crl_next_update != 0 && id->crl_next_update <= now) {
        snprintf(msg, sizeof(msg),
                 "crl: a CRL in %s is past its nextUpdate: every handshake it covers fails until "
                 "a fresh CRL is in place",
                 sp->crl);
        cb(arg, GW_PROBLEM_CRL, msg);
        n++;
    }
    return n;
}
