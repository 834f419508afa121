// renewal: the ACME renewal thread and one renewal's steps (see renewal.h).
#include "gateway/renewal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gateway/acme/client.h"
#include "gateway/acme/csr.h"
#include "gateway/acme/jws.h"
#include "gateway/acme/responder.h"
#include "gateway/acme/state.h"
#include "gateway/acme/token.h"
#include "gateway/base/log.h"
#include "gateway/base/netutil.h"
#include "gateway/service/metrics.h"
#include "gateway/tls/identity.h"

#define HOOK_TIMEOUT_S 60

// ---- one renewal ----

typedef struct {
    gw_acme_responder *responder;  // http-01
    const char *hook;              // dns-01
} publisher;

// run_hook runs HOOK add|remove NAME VALUE and waits (at most HOOK_TIMEOUT_S).
static int run_hook(const char *hook, const char *verb, const char *name, const char *value, char *err, size_t cap) {
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, cap, "dns01_hook: cannot start %s: %s", hook, strerror(errno));
        return 0;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        pthread_sigmask(SIG_SETMASK, &none, NULL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, 0);
        }
        execl(hook, hook, verb, name, value, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    for (int waited = 0; waited < HOOK_TIMEOUT_S * 10; waited++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
                return 1;
            }
            snprintf(err, cap, "dns01_hook: \"%s %s %s\" failed (%s %d)", hook, verb, name,
                     WIFEXITED(status) ? "exit status" : "signal",
                     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            return 0;
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    snprintf(err, cap, "dns01_hook: \"%s %s %s\" did not finish in %d s", hook, verb, name, HOOK_TIMEOUT_S);
    return 0;
}

static int publish(void *arg, const char *challenge, const char *identifier, const char *token, const char *value,
                   char *err, size_t cap) {
    publisher *p = arg;
    if (strcmp(challenge, "http-01") == 0) {
        if (p->responder == NULL || !gw_acme_responder_publish(p->responder, token, value)) {
            snprintf(err, cap, "http-01: the challenge responder cannot take token %s", token);
            return 0;
        }
        return 1;
    }
    char name[300];
    snprintf(name, sizeof(name), "_acme-challenge.%s", identifier);
    return run_hook(p->hook, "add", name, value, err, cap);
}

static void withdraw(void *arg, const char *challenge, const char *identifier, const char *token, const char *value) {
    publisher *p = arg;
    if (strcmp(challenge, "http-01") == 0) {
        if (p->responder != NULL) {
            gw_acme_responder_withdraw(p->responder, token);
        }
        return;
    }
    char name[300], err[300];
    snprintf(name, sizeof(name), "_acme-challenge.%s", identifier);
    if (!run_hook(p->hook, "remove", name, value, err, sizeof(err))) {
        gw_log(GW_LOG_WARN, "acme: %s", err);
    }
}

// write_file replaces |path| with |len| bytes (a new file of |mode|, synced, renamed over).
static int write_file(const char *path, const void *data, size_t len, mode_t mode, char *err, size_t cap) {
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.acme-new", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    int ok = fd >= 0 && fchmod(fd, mode) == 0 && write(fd, data, len) == (ssize_t)len && fsync(fd) == 0;
    int e = errno;
    if (fd >= 0 && close(fd) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        unlink(tmp);
        snprintf(err, cap, "cannot write %s: %s", path, strerror(e));
    }
    return ok;
}

// pem_of writes |key| as PKCS#8 PEM into a malloc'd string.
static char *pem_of(EVP_PKEY *key, size_t *len) {
    BIO *b = BIO_new(BIO_s_mem());
    const uint8_t *p = NULL;
    size_t n = 0;
    char *out = NULL;
    if (b != NULL && PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) && BIO_mem_contents(b, &p, &n) &&
        (out = malloc(n + 1)) != NULL) {
        memcpy(out, p, n);
        out[n] = '\0';
        *len = n;
    }
    BIO_free(b);
    return out;
}

// account_key reads the account key, or makes one (P-256, mode 0600) on first use.
static EVP_PKEY *account_key(const char *path, char *err, size_t cap) {
    FILE *f = fopen(path, "re");
    if (f != NULL) {
        EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        if (k == NULL || gw_jws_alg(k) == NULL) {
            snprintf(err, cap, "account_key %s: not a P-256, P-384 or RSA private key in PEM", path);
            EVP_PKEY_free(k);
            return NULL;
        }
        return k;
    }
    if (errno != ENOENT) {
        snprintf(err, cap, "account_key %s: %s", path, strerror(errno));
        return NULL;
    }
    EVP_PKEY *k = gw_key_generate("ec-p256");
    size_t len = 0;
    char *pem = k ? pem_of(k, &len) : NULL;
    int ok = pem != NULL && write_file(path, pem, len, 0600, err, cap);
    if (pem != NULL) {
        OPENSSL_cleanse(pem, len);
    }
    free(pem);
    if (!ok) {
        EVP_PKEY_free(k);
        return NULL;
    }
    gw_log(GW_LOG_INFO, "acme: made the account key %s", path);
    return k;
}

// eab_key reads the External Account Binding's HMAC key (base64url, as CAs hand it out).
static int eab_key(const char *path, uint8_t **key, size_t *len, char *err, size_t cap) {
    char buf[1024];
    FILE *f = fopen(path, "re");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f != NULL) {
        fclose(f);
    }
    if (f == NULL) {
        snprintf(err, cap, "eab_hmac_file %s: %s", path, strerror(errno));
        return 0;
    }
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) {
        buf[--n] = '\0';
    }
    int ok = n > 0 && gw_b64url_decode(buf, key, len);
    OPENSSL_cleanse(buf, sizeof(buf));
    if (!ok) {
        snprintf(err, cap, "eab_hmac_file %s: expected the HMAC key in base64url, as the CA gave it", path);
    }
    return ok;
}

// leaf_check reads notBefore/notAfter and the serial of the first certificate of |pem| and checks it
// is for |key|.
static int leaf_check(const char *pem, EVP_PKEY *key, time_t *nb, time_t *na, char *serial, size_t serial_cap) {
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    EVP_PKEY *pub = x ? X509_get_pubkey(x) : NULL;
    int ok = pub != NULL && EVP_PKEY_cmp(pub, key) == 1;  // (a token's key: its public half)
    EVP_PKEY_free(pub);
    if (ok) {
        int days = 0, secs = 0;
        time_t now = time(NULL);
        *nb = ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notBefore(x)) ? now + (time_t)days * 86400 + secs : 0;
        *na = ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)) ? now + (time_t)days * 86400 + secs : 0;
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(x), NULL);
        char *hex = bn ? BN_bn2hex(bn) : NULL;
        snprintf(serial, serial_cap, "%s", hex ? hex : "?");
        OPENSSL_free(hex);
        BN_free(bn);
    }
    X509_free(x);
    return ok;
}

// open_token starts a signer for the identity's token key (its module and PIN file as the
// identity loads them), or one to generate a key with (P11W_HELLO_NO_KEY).
static gw_p11 *open_token(const gw_identity_spec *spec, uint32_t flags, char *err, size_t cap) {
    char pin[256] = "", e[700];
    FILE *f = spec->key_password_file ? fopen(spec->key_password_file, "re") : NULL;
    if (f != NULL) {
        if (fgets(pin, sizeof(pin), f) == NULL) {
            pin[0] = '\0';
        }
        fclose(f);
        pin[strcspn(pin, "\r\n")] = '\0';
    }
    gw_p11 *t = gw_p11_open(spec->pkcs11_module, spec->key, pin, spec->run_uid, spec->run_gid, flags, e, sizeof(e));
    OPENSSL_cleanse(pin, sizeof(pin));
    if (t == NULL) {
        snprintf(err, cap, "%s", e);
    }
    return t;
}

// token_key: an identity whose key is in a PKCS#11 token keeps that key: its public half
// is the current certificate's, or the one saved when we generated it
// (CERTIFICATE.acme-pub.pem); with neither (the first order) the key pair is generated on
// the token under the URI's object= label, as `identity new --pkcs11` does. Returns the
// public key with *|token| open to sign, or NULL with |err|.
static EVP_PKEY *token_key(const pol_acme *a, const gw_identity_spec *spec, X509 *leaf, gw_p11 **token, char *err,
                           size_t cap) {
    char pub_path[4200];
    snprintf(pub_path, sizeof(pub_path), "%s.acme-pub.pem", spec->certificate);
    EVP_PKEY *pub = NULL;
    FILE *f = fopen(pub_path, "re");
    if (f != NULL) {
        pub = PEM_read_PUBKEY(f, NULL, NULL, NULL);
        fclose(f);
    }
    if (pub == NULL && leaf != NULL) {
        pub = X509_get_pubkey(leaf);
    }
    if (pub != NULL) {
        *token = open_token(spec, 0, err, cap);
        if (*token == NULL) {
            EVP_PKEY_free(pub);
            return NULL;
        }
        return pub;
    }
    *token = open_token(spec, P11W_HELLO_NO_KEY, err, cap);
    int bad_arg = 0;
    char e[800];
    pub = *token ? gw_token_generate(*token, spec->key, a->key_type, &bad_arg, e, sizeof(e)) : NULL;
    if (*token != NULL && pub == NULL) {
        snprintf(err, cap, "generating the key on the token: %s", e);
        return NULL;
    }
    if (pub == NULL) {
        return NULL;
    }
    BIO *b = BIO_new(BIO_s_mem());
    const uint8_t *p = NULL;
    size_t n = 0;
    if (b == NULL || !PEM_write_bio_PUBKEY(b, pub) || !BIO_mem_contents(b, &p, &n) ||
        !write_file(pub_path, p, n, 0644, err, cap)) {
        gw_log(GW_LOG_WARN, "acme: identity %s: the new token key's public half was not saved to %s", a->identity,
               pub_path);
    }
    BIO_free(b);
    gw_log(GW_LOG_INFO, "acme: identity %s: generated a %s key on the token (%s)", a->identity, a->key_type, spec->key);
    return pub;
}

// renew obtains a certificate for |a| and writes key and chain over the identity's files.
static int renew(const pol_acme *a, const gw_identity_spec *spec, X509 *leaf, gw_acme_responder *responder,
                 gw_acme_result *res, time_t *nb, time_t *na, char *err, size_t cap) {
    memset(res, 0, sizeof(*res));
    res->retry_after_s = -1;
    EVP_PKEY *acct = account_key(a->account_key, err, cap);
    if (acct == NULL) {
        return 0;
    }
    uint8_t *hmac = NULL;
    size_t hmac_len = 0;
    if (a->eab_hmac_file != NULL && !eab_key(a->eab_hmac_file, &hmac, &hmac_len, err, cap)) {
        EVP_PKEY_free(acct);
        return 0;
    }
    gw_p11 *token = NULL;
    EVP_PKEY *key =
        gw_p11_is_uri(spec->key) ? token_key(a, spec, leaf, &token, err, cap) : gw_key_generate(a->key_type);
    uint8_t *csr = NULL;
    size_t csr_len = 0;
    int ok = key != NULL &&
             gw_acme_csr_token(key, token, (const char *const *)a->names, a->num_names, &csr, &csr_len, err, cap);
    if (key == NULL && token == NULL && !gw_p11_is_uri(spec->key)) {
        snprintf(err, cap, "cannot make a %s key", a->key_type);
    }
    publisher pub = {responder, a->dns01_hook};
    gw_acme_params p = {.directory_url = a->directory,
                        .trust_file = a->trust,
                        .account_key = acct,
                        .contact = (const char *const *)a->contact,
                        .num_contact = a->num_contact,
                        .eab_kid = a->eab_kid,
                        .eab_hmac = hmac,
                        .eab_hmac_len = hmac_len,
                        .names = (const char *const *)a->names,
                        .num_names = a->num_names,
                        .challenge = pol_acme_challenge_name(a->challenge),
                        .publish = publish,
                        .withdraw = withdraw,
                        .arg = &pub};
    ok = ok && gw_acme_obtain(&p, csr, csr_len, res, err, cap);
    char serial[80] = "?";
    if (ok && !leaf_check(res->chain_pem, key, nb, na, serial, sizeof(serial))) {
        snprintf(err, cap, "the CA's certificate is not for the key we sent (or does not parse)");
        ok = 0;
    }
    // The key first: a new key beside the old certificate does not load (the running pair
    // stays), and the certificate's rename completes the pair. A token's key stays there.
    size_t pem_len = 0;
    char *pem = ok && token == NULL ? pem_of(key, &pem_len) : NULL;
    ok = ok && (token != NULL || (pem != NULL && write_file(spec->key, pem, pem_len, 0600, err, cap))) &&
         write_file(spec->certificate, res->chain_pem, strlen(res->chain_pem), 0644, err, cap);
    if (ok) {
        gw_log(GW_LOG_INFO, "acme: identity %s renewed: serial %s, valid until %lld; wrote %s and %s", a->identity,
               serial, (long long)*na, spec->certificate, spec->key);
    }
    if (pem != NULL) {
        OPENSSL_cleanse(pem, pem_len);
        free(pem);
    }
    if (hmac != NULL) {
        OPENSSL_cleanse(hmac, hmac_len);
        free(hmac);
    }
    free(csr);
    EVP_PKEY_free(key);
    EVP_PKEY_free(acct);
    gw_p11_free(token);
    return ok;
}

// ---- the thread ----

typedef struct {
    char *name;
    gw_acme_state st;
    time_t cert_nb, cert_na;  // the certificate written last (the snapshot may not have it yet)
    int forced;
    int running;
} entry;

typedef struct {
    char *address;
    gw_acme_responder *r;
} responder_slot;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    int started, stop;
    pol_config *cfg;
    entry **entries;  // each allocated once: the thread uses one while the lock is let go
    size_t num_entries;
    responder_slot responders[16];
    size_t num_responders;
    void (*renewed)(void);
} g = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static gw_acme_responder *find_responder(const char *address) {
    for (size_t i = 0; address != NULL && i < g.num_responders; i++) {
        if (strcmp(g.responders[i].address, address) == 0) {
            return g.responders[i].r;
        }
    }
    return NULL;
}

// bind_responders starts a responder on each http01_listen address not served yet.
static int bind_responders(const pol_config *cfg) {
    int ok = 1;
    for (size_t i = 0; i < cfg->num_acme; i++) {
        const pol_acme *a = &cfg->acme[i];
        if (a->challenge != POL_ACME_HTTP01 || find_responder(a->http01_listen) != NULL ||
            g.num_responders == sizeof(g.responders) / sizeof(g.responders[0])) {
            continue;
        }
        char err[300];
        int fd = gw_listen_socket((const struct sockaddr *)&a->http01_addr, a->http01_addr_len, 0);
        gw_acme_responder *r = fd >= 0 ? gw_acme_responder_start(fd, err, sizeof(err)) : NULL;
        if (fd < 0) {
            snprintf(err, sizeof(err), "%s", strerror(errno));
        }
        if (r == NULL) {
            gw_log(GW_LOG_ERROR, "acme: identity %s: cannot answer http-01 on %s: %s", a->identity, a->http01_listen,
                   err);
            ok = 0;
            continue;
        }
        g.responders[g.num_responders].address = strdup(a->http01_listen);
        g.responders[g.num_responders++].r = r;
        gw_log(GW_LOG_INFO, "acme: answering http-01 challenges on %s", a->http01_listen);
    }
    return ok;
}

int gw_renewal_bind(const pol_config *cfg) {
    pthread_mutex_lock(&g.lock);
    int ok = bind_responders(cfg);
    pthread_mutex_unlock(&g.lock);
    return ok;
}

static entry *entry_for(const pol_acme *a, const gw_identity *id) {
    for (size_t i = 0; i < g.num_entries; i++) {
        if (strcmp(g.entries[i]->name, a->identity) == 0) {
            return g.entries[i];
        }
    }
    entry **grown = realloc(g.entries, (g.num_entries + 1) * sizeof(*grown));
    entry *e = calloc(1, sizeof(*e));
    if (grown != NULL) {
        g.entries = grown;
    }
    if (grown == NULL || e == NULL || (e->name = strdup(a->identity)) == NULL) {
        free(e);
        return NULL;
    }
    g.entries[g.num_entries++] = e;
    char path[4200];
    gw_acme_state_path(id->spec.certificate, path, sizeof(path));
    gw_acme_state_read(path, &e->st);  // a restart keeps the backoff
    return e;
}

static const gw_identity *identity_named(const pol_config *cfg, const char *name) {
    for (size_t i = 0; i < cfg->num_identities; i++) {
        if (strcmp(cfg->identities[i]->spec.name, name) == 0) {
            return cfg->identities[i];
        }
    }
    return NULL;
}

// due_of: when |e|'s identity is next renewed (by the newer of the snapshot's certificate
// and the one written last), or retried after a failure.
static time_t due_of(const pol_acme *a, const gw_identity *id, const entry *e, time_t now) {
    if (e->forced) {
        return now;
    }
    if (e->st.failures > 0) {
        return e->st.next_attempt;  // a renewal was wanted and failed: retried until it succeeds
    }
    time_t due = 0;
    if (e->cert_na > id->not_after || id->pending) {
        due = e->cert_na ? pol_acme_due(a, e->cert_nb, e->cert_na) : now;
    } else {
        due = pol_acme_due(a, id->not_before, id->not_after);
    }
    return e->st.next_attempt > due ? e->st.next_attempt : due;
}

// attempt runs one renewal of |a| (the lock is not held) and records what came of it.
static void attempt(const pol_acme *a, const gw_identity *id, entry *e, gw_acme_responder *responder, int once) {
    char err[1000] = "";
    gw_acme_result res;
    time_t nb = 0, na = 0, now = time(NULL);
    gw_log(GW_LOG_INFO, "acme: renewing identity %s (%s)", a->identity,
           id->pending ? "no certificate yet" : "renew_before reached or asked for");
    int ok = renew(a, &id->spec, id->leaf, responder, &res, &nb, &na, err, sizeof(err));
    free(res.chain_pem);
    pthread_mutex_lock(&g.lock);
    now = time(NULL);
    e->st.last_attempt = now;
    e->st.attempts++;
    if (ok) {
        e->st.last_success = now;
        e->st.failures = 0;
        e->st.next_attempt = 0;
        e->st.error[0] = '\0';
        snprintf(e->st.result, sizeof(e->st.result), "ok");
        e->cert_nb = nb;
        e->cert_na = na;
    } else {
        e->st.failures++;
        time_t valid_until = e->cert_na > id->not_after ? e->cert_na : (id->pending ? 0 : id->not_after);
        uint32_t r = 0;
        RAND_bytes((uint8_t *)&r, sizeof(r));
        e->st.next_attempt = gw_acme_next_try(e->st.failures, res.retry_after_s, valid_until, now, (int)(r % 41) - 20);
        snprintf(e->st.result, sizeof(e->st.result), "%s", res.rate_limited ? "rate_limited" : "error");
        snprintf(e->st.error, sizeof(e->st.error), "%.*s", (int)sizeof(e->st.error) - 1, err);
        if (!once) {
            gw_log(GW_LOG_ERROR,
                   "acme: identity %s: renewal failed (%d in a row): %s; the current %s; next try in %lld s",
                   a->identity, e->st.failures, err,
                   id->pending ? "identity still has no certificate" : "certificate stays",
                   (long long)(e->st.next_attempt - now));
        }
    }
    gw_metrics_acme_renewal(id->metrics_slot, ok                 ? GW_ACME_OK
                                              : res.rate_limited ? GW_ACME_RATE_LIMITED
                                                                 : GW_ACME_ERROR);
    char path[4200];
    gw_acme_state_path(id->spec.certificate, path, sizeof(path));
    if (!gw_acme_state_write(path, &e->st)) {
        gw_log(GW_LOG_WARN, "acme: cannot write %s: %s", path, strerror(errno));
    }
    pthread_mutex_unlock(&g.lock);
}

static void *thread_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&g.lock);
    while (!g.stop) {
        pol_config *cfg = pol_config_ref(g.cfg);
        time_t now = time(NULL), wake = now + 3600;
        const pol_acme *pick = NULL;
        const gw_identity *pick_id = NULL;
        entry *pick_e = NULL;
        for (size_t i = 0; i < cfg->num_acme; i++) {
            const pol_acme *a = &cfg->acme[i];
            const gw_identity *id = identity_named(cfg, a->identity);
            entry *e = id ? entry_for(a, id) : NULL;
            if (e == NULL) {
                continue;
            }
            time_t due = due_of(a, id, e, now);
            gw_metrics_acme_due(id->metrics_slot, due);
            if (due <= now && pick == NULL) {
                pick = a;
                pick_id = id;
                pick_e = e;
            } else if (due < wake) {
                wake = due;
            }
        }
        if (pick != NULL) {
            pick_e->forced = 0;
            pick_e->running = 1;
            gw_acme_responder *r = find_responder(pick->http01_listen);
            void (*renewed)(void) = g.renewed;
            pthread_mutex_unlock(&g.lock);
            attempt(pick, pick_id, pick_e, r, 0);
            pthread_mutex_lock(&g.lock);
            pick_e->running = 0;
            int done = pick_e->st.failures == 0;
            pthread_mutex_unlock(&g.lock);
            if (done && renewed != NULL) {
                renewed();
            }
            pol_config_unref(cfg);
            pthread_mutex_lock(&g.lock);
            continue;
        }
        struct timespec ts = {wake, 0};
        pthread_mutex_unlock(&g.lock);
        pol_config_unref(cfg);
        pthread_mutex_lock(&g.lock);
        if (!g.stop) {
            pthread_cond_timedwait(&g.cond, &g.lock, &ts);
        }
    }
    pthread_mutex_unlock(&g.lock);
    return NULL;
}

int gw_renewal_start(pol_config *cfg, void (*renewed)(void)) {
    if (cfg->num_acme == 0) {
        g.cfg = pol_config_ref(cfg);  // a reload may add some: the thread starts then
        g.renewed = renewed;
        return 1;
    }
    pthread_mutex_lock(&g.lock);
    if (g.cfg == NULL) {
        g.cfg = pol_config_ref(cfg);
    }
    g.renewed = renewed;
    g.stop = 0;
    int ok = pthread_create(&g.thread, NULL, thread_main, NULL) == 0;
    g.started = ok;
    pthread_mutex_unlock(&g.lock);
    return ok;
}

void gw_renewal_set_config(pol_config *cfg) {
    pthread_mutex_lock(&g.lock);
    pol_config *old = g.cfg;
    g.cfg = pol_config_ref(cfg);
    bind_responders(cfg);  // new addresses (a port below 1024 needs the privileges given up: logged)
    int start = !g.started && cfg->num_acme > 0;
    pthread_cond_signal(&g.cond);
    pthread_mutex_unlock(&g.lock);
    if (old != NULL) {
        pol_config_unref(old);
    }
    if (start) {
        gw_renewal_start(cfg, g.renewed);
    }
}

int gw_renewal_request(const char *identity, char *err, size_t cap) {
    pthread_mutex_lock(&g.lock);
    const pol_acme *a = g.cfg ? pol_config_acme(g.cfg, identity) : NULL;
    const gw_identity *id = g.cfg ? identity_named(g.cfg, identity) : NULL;
    entry *e = a && id && g.started ? entry_for(a, id) : NULL;
    if (e != NULL) {
        e->forced = 1;
        pthread_cond_signal(&g.cond);
    } else if (id == NULL) {
        snprintf(err, cap, "no identity named \"%s\"", identity);
    } else {
        snprintf(err, cap, "identity %s has no acme block: it is not renewed over ACME", identity);
    }
    pthread_mutex_unlock(&g.lock);
    return e != NULL;
}

int gw_renewal_running(const char *identity) {
    pthread_mutex_lock(&g.lock);
    int r = 0;
    for (size_t i = 0; i < g.num_entries; i++) {
        if (strcmp(g.entries[i]->name, identity) == 0) {
            r = g.entries[i]->running || g.entries[i]->forced;
        }
    }
    pthread_mutex_unlock(&g.lock);
    return r;
}

void gw_renewal_stop(void) {
    pthread_mutex_lock(&g.lock);
    g.stop = 1;
    pthread_cond_signal(&g.cond);
    int started = g.started;
    pthread_mutex_unlock(&g.lock);
    if (started) {
        pthread_join(g.thread, NULL);  // (a renewal under way ends within its own deadlines)
    }
    for (size_t i = 0; i < g.num_responders; i++) {
        gw_acme_responder_stop(g.responders[i].r);
        free(g.responders[i].address);
    }
    g.num_responders = 0;
    for (size_t i = 0; i < g.num_entries; i++) {
        free(g.entries[i]->name);
        free(g.entries[i]);
    }
    free(g.entries);
    g.entries = NULL;
    g.num_entries = 0;
    if (g.cfg != NULL) {
        pol_config_unref(g.cfg);
        g.cfg = NULL;
    }
    g.started = 0;
}

int gw_renewal_once(const pol_config *cfg, const char *identity, char *err, size_t cap) {
    const pol_acme *a = pol_config_acme(cfg, identity);
    const gw_identity *id = identity_named(cfg, identity);
    if (id == NULL || a == NULL) {
        snprintf(err, cap, id == NULL ? "no identity named \"%s\"" : "identity %s has no acme block", identity);
        return 0;
    }
    if (a->challenge == POL_ACME_HTTP01 && !gw_renewal_bind(cfg)) {
        snprintf(err, cap, "cannot answer http-01 on %s (see above; is a gateway running with it?)", a->http01_listen);
        return 0;
    }
    pthread_mutex_lock(&g.lock);
    entry *e = entry_for(a, id);
    pthread_mutex_unlock(&g.lock);
    if (e == NULL) {
        snprintf(err, cap, "out of memory");
        return 0;
    }
    attempt(a, id, e, find_responder(a->http01_listen), 1);
    int ok = e->st.failures == 0;
    if (!ok) {
        snprintf(err, cap, "%s", e->st.error);
    }
    gw_renewal_stop();
    return ok;
}
