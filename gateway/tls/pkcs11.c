#include "gateway/tls/pkcs11.h"

#include <errno.h>
#include <limits.h>
#include <openssl/bn.h>
#include <openssl/digest.h>
#include <openssl/ecdsa.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <p11-kit/uri.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gateway/base/log.h"
#include "gateway/base/xalloc.h"

#define MTLSGW_SIGNER_PATH "/usr/libexec/mtlsgw/mtlsgw-pkcs11"  // where the package puts it

#define HELLO_TIMEOUT_MS 30000  // a TPM or a smart card may take seconds to log in

struct gw_p11 {
    pthread_mutex_t lock;
    char *module, *uri, *pin;
    int uid, gid;
    uint64_t id;
    int control;     // our end of the signer's control socket; -1 when none
    pid_t pid;       // the signer; 0 when none
    uint64_t epoch;  // which signer: counts starts
    uint32_t next_req;
    char last_exit[120];  // how the signer of epoch - 1 (or this one, once reaped) ended
    uint64_t exit_epoch;
    pid_t exit_pid;  // the signer last_exit is about
    p11w_hello_ok info;
};

static atomic_ullong g_p11_ids;

int gw_p11_is_uri(const char *s) {
    return s != NULL && strncmp(s, "pkcs11:", 7) == 0;
}

static char *pin_source_path(const char *src) {
    if (strncmp(src, "file:", 5) == 0) {
        src += 5;
        if (strncmp(src, "//", 2) == 0) {
            src += 2;  // file:///path
        }
    }
    return src[0] == '/' ? gw_xstrdup(src) : NULL;
}

int gw_p11_uri_parse(const char *uri, char **out_module, char **out_pin_file, char *err, size_t cap) {
    *out_module = *out_pin_file = NULL;
    P11KitUri *u = p11_kit_uri_new();
    if (u == NULL) {
        snprintf(err, cap, "out of memory");
        return 0;
    }
    int r = p11_kit_uri_parse(uri, P11_KIT_URI_FOR_ANY, u);
    int ok = r == P11_KIT_URI_OK;
    if (!ok) {
        snprintf(err, cap, "\"%s\" is not a PKCS#11 URI (RFC 7512): %s", uri, p11_kit_uri_message(r));
    } else if (p11_kit_uri_any_unrecognized(u)) {
        snprintf(err, cap,
                 "\"%s\": an attribute p11-kit does not know; expected token, object, id, serial, "
                 "manufacturer, model, slot-id, type=private, module-path, pin-source",
                 uri);
        ok = 0;
    } else if (p11_kit_uri_get_pin_value(u) != NULL) {
        snprintf(err, cap,
                 "a PIN in the URI (pin-value) would be in the config for anyone who can read it: "
                 "put it in a file (mode 0600) named by key_password_file or pin-source");
        ok = 0;
    } else if (p11_kit_uri_get_attribute(u, CKA_LABEL) == NULL && p11_kit_uri_get_attribute(u, CKA_ID) == NULL) {
        snprintf(err, cap, "\"%s\" names no key: add object=LABEL or id=%%HEX", uri);
        ok = 0;
    }
    const char *pin = ok ? p11_kit_uri_get_pin_source(u) : NULL;
    if (ok && pin != NULL && (*out_pin_file = pin_source_path(pin)) == NULL) {
        snprintf(err, cap, "pin-source \"%s\": expected file:/absolute/path", pin);
        ok = 0;
    }
    const char *module = ok ? p11_kit_uri_get_module_path(u) : NULL;
    if (ok && module != NULL) {
        *out_module = gw_xstrdup(module);
    }
    p11_kit_uri_free(u);
    if (!ok) {
        free(*out_pin_file);
        *out_pin_file = NULL;
    }
    return ok;
}

int gw_p11_uri_object(const char *uri, char *label, size_t label_cap, char *id_hex, size_t id_cap) {
    label[0] = id_hex[0] = '\0';
    P11KitUri *u = p11_kit_uri_new();
    int ok = u != NULL && p11_kit_uri_parse(uri, P11_KIT_URI_FOR_ANY, u) == P11_KIT_URI_OK;
    CK_ATTRIBUTE *l = ok ? p11_kit_uri_get_attribute(u, CKA_LABEL) : NULL;
    CK_ATTRIBUTE *i = ok ? p11_kit_uri_get_attribute(u, CKA_ID) : NULL;
    if (l != NULL) {
        ok = l->ulValueLen < label_cap && memchr(l->pValue, '\0', l->ulValueLen) == NULL;
        if (ok) {
            memcpy(label, l->pValue, l->ulValueLen);
            label[l->ulValueLen] = '\0';
        }
    }
    if (ok && i != NULL) {
        ok = i->ulValueLen * 2 < id_cap;
        for (CK_ULONG k = 0; ok && k < i->ulValueLen; k++) {
            snprintf(id_hex + 2 * k, 3, "%02x", ((const uint8_t *)i->pValue)[k]);
        }
    }
    p11_kit_uri_free(u);
    return ok;
}

void gw_p11_uri_describe(const char *uri, char *out, size_t cap) {
    // The token and object parts, formatted by p11-kit without the query (module, PIN
    // source): "token=gw;object=ops" shown as "token=gw object=ops".
    P11KitUri *u = p11_kit_uri_new();
    char *text = NULL;
    if (u != NULL && p11_kit_uri_parse(uri, P11_KIT_URI_FOR_ANY, u) == P11_KIT_URI_OK) {
        p11_kit_uri_set_pin_source(u, NULL);
        p11_kit_uri_set_module_path(u, NULL);
        p11_kit_uri_set_module_name(u, NULL);
        p11_kit_uri_format(u, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, &text);
    }
    const char *shown = text != NULL && strncmp(text, "pkcs11:", 7) == 0 ? text + 7 : uri;
    snprintf(out, cap, "%s", shown);
    for (char *c = out; *c; c++) {
        *c = *c == ';' ? ' ' : *c;
    }
    free(text);
    p11_kit_uri_free(u);
}

// ---- the signer process ----

// signer_path finds mtlsgw-pkcs11 where this binary's own installation has it: beside it
// (a build tree), in ../libexec/mtlsgw/ (/usr/bin and /usr/local/bin installs), else the
// packaged path.
static const char *signer_path(char *buf, size_t cap) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    char *slash = n > 0 ? (self[n] = '\0', strrchr(self, '/')) : NULL;
    if (slash != NULL) {
        *slash = '\0';
        static const char *const rel[] = {"mtlsgw-pkcs11", "../libexec/mtlsgw/mtlsgw-pkcs11"};
        for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
            int w = snprintf(buf, cap, "%s/%s", self, rel[i]);
            if (w > 0 && (size_t)w < cap && access(buf, X_OK) == 0) {
                return buf;
            }
        }
    }
    return MTLSGW_SIGNER_PATH;
}

static void describe_status(int status, char *out, size_t cap) {
    if (WIFSIGNALED(status)) {
        snprintf(out, cap, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    } else if (WIFEXITED(status)) {
        snprintf(out, cap, "exited with status %d", WEXITSTATUS(status));
    } else {
        snprintf(out, cap, "ended");
    }
}

// reap notes how the current signer ended, if it did (|block|: wait for it). Lock held.
static int reap(gw_p11 *k, int block) {
    if (k->pid <= 0) {
        return 1;
    }
    int status = 0;
    pid_t r;
    do {
        r = waitpid(k->pid, &status, block ? 0 : WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == 0) {
        return 0;
    }
    if (r == k->pid) {
        describe_status(status, k->last_exit, sizeof(k->last_exit));
    } else {
        snprintf(k->last_exit, sizeof(k->last_exit), "ended");
    }
    k->exit_epoch = k->epoch;
    k->exit_pid = k->pid;
    k->pid = 0;
    return 1;
}

// Signers that were told to stop but had not exited yet: never waited for where they
// are stopped (a worker, a retiring snapshot), reaped by gw_p11_reap_retired on the
// supervisor's tick, killed if they take longer than RETIRE_GRACE_MS.
#define RETIRE_MAX 256
#define RETIRE_GRACE_MS 2000
static struct {
    pid_t pid;
    struct timespec since;
} g_retired[RETIRE_MAX];
static size_t g_num_retired;
static pthread_mutex_t g_retired_lock = PTHREAD_MUTEX_INITIALIZER;

static void retire_pid(pid_t pid) {
    pthread_mutex_lock(&g_retired_lock);
    if (g_num_retired == RETIRE_MAX) {
        pthread_mutex_unlock(&g_retired_lock);
        kill(pid, SIGKILL);  // so many at once: no grace, and the child init reaps a zombie at our exit
        return;
    }
    g_retired[g_num_retired].pid = pid;
    clock_gettime(CLOCK_MONOTONIC, &g_retired[g_num_retired].since);
    g_num_retired++;
    pthread_mutex_unlock(&g_retired_lock);
}

size_t gw_p11_reap_retired(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&g_retired_lock);
    for (size_t i = 0; i < g_num_retired;) {
        int status;
        pid_t r = waitpid(g_retired[i].pid, &status, WNOHANG);
        if (r == g_retired[i].pid || (r < 0 && errno == ECHILD)) {
            g_retired[i] = g_retired[--g_num_retired];
            continue;
        }
        long ms =
            (now.tv_sec - g_retired[i].since.tv_sec) * 1000 + (now.tv_nsec - g_retired[i].since.tv_nsec) / 1000000;
        if (ms >= RETIRE_GRACE_MS) {
            kill(g_retired[i].pid, SIGKILL);  // reaped at the next tick
        }
        i++;
    }
    size_t left = g_num_retired;
    pthread_mutex_unlock(&g_retired_lock);
    return left;
}

// stop_signer closes the control socket (the signer exits on its end of file; with
// |kill_now| it is killed at once) and never waits for it: one that has not exited yet is
// left to gw_p11_reap_retired. Lock held.
static void stop_signer(gw_p11 *k, int kill_now) {
    if (k->control >= 0) {
        close(k->control);
        k->control = -1;
    }
    if (k->pid <= 0) {
        return;
    }
    if (kill_now) {
        kill(k->pid, SIGKILL);
    }
    if (reap(k, 0)) {
        return;
    }
    retire_pid(k->pid);
    snprintf(k->last_exit, sizeof(k->last_exit), "%s", kill_now ? "killed by signal 9 (Killed)" : "stopped");
    k->exit_epoch = k->epoch;
    k->exit_pid = k->pid;
    k->pid = 0;
}

static int send_msg(int fd, uint32_t type, uint32_t id, uint32_t arg, const void *data, size_t len) {
    uint8_t buf[P11W_MAX];
    if (sizeof(p11w_head) + len > sizeof(buf)) {
        errno = EMSGSIZE;
        return 0;
    }
    p11w_head h = {type, id, arg, (uint32_t)len};
    memcpy(buf, &h, sizeof(h));
    memcpy(buf + sizeof(h), data, len);
    return send(fd, buf, sizeof(h) + len, MSG_NOSIGNAL) == (ssize_t)(sizeof(h) + len);
}

// send_hello asks the signer to log in. Lock held.
static int send_hello(gw_p11 *k, uint32_t flags) {
    uint8_t buf[P11W_MAX - sizeof(p11w_head)];
    p11w_hello who = {k->uid, k->gid};
    size_t ml = strlen(k->module) + 1, ul = strlen(k->uri) + 1, pl = k->pin ? strlen(k->pin) + 1 : 1;
    if (sizeof(who) + ml + ul + pl > sizeof(buf)) {
        return 0;
    }
    memcpy(buf, &who, sizeof(who));
    memcpy(buf + sizeof(who), k->module, ml);
    memcpy(buf + sizeof(who) + ml, k->uri, ul);
    memcpy(buf + sizeof(who) + ml + ul, k->pin ? k->pin : "", pl);
    int ok = send_msg(k->control, P11W_HELLO, ++k->next_req, flags, buf, sizeof(who) + ml + ul + pl);
    OPENSSL_cleanse(buf, sizeof(buf));
    return ok;
}

// start_signer starts a signer with a new control socket and sends it the hello. Lock held.
static int start_signer(gw_p11 *k, uint32_t flags, char *err, size_t cap) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        snprintf(err, cap, "cannot make a socket for the PKCS#11 signer: %s", strerror(errno));
        return 0;
    }
    char buf[PATH_MAX + 20];
    const char *path = signer_path(buf, sizeof(buf));
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 3);  // dup2 clears close-on-exec
    posix_spawnattr_init(&attr);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGHUP);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGUSR1);
    sigaddset(&defaults, SIGPIPE);
    posix_spawnattr_setsigmask(&attr, &none);  // the gateway's threads block its signals
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {"mtlsgw-pkcs11", NULL};
    extern char **environ;
    pid_t pid;
    int r = posix_spawn(&pid, path, &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(sv[1]);
    if (r != 0) {
        snprintf(err, cap, "cannot start the PKCS#11 signer %s: %s", path, strerror(r));
        close(sv[0]);
        return 0;
    }
    k->control = sv[0];
    k->pid = pid;
    k->epoch++;
    if (!send_hello(k, flags)) {
        snprintf(err, cap, "cannot talk to the PKCS#11 signer: %s", strerror(errno));
        stop_signer(k, 1);
        return 0;
    }
    return 1;
}

// wait_reply reads the control socket until the reply to |id| arrives. Lock held.
static int wait_reply(gw_p11 *k, uint32_t id, uint8_t *buf, size_t cap, p11w_head *h, int timeout_ms, char *err,
                      size_t err_cap) {
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long spent = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        struct pollfd p = {k->control, POLLIN, 0};
        int r = spent < timeout_ms ? poll(&p, 1, (int)(timeout_ms - spent)) : 0;
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            snprintf(err, err_cap, "the PKCS#11 signer did not answer within %d ms (token busy or hung)", timeout_ms);
            stop_signer(k, 1);
            return 0;
        }
        ssize_t n = recv(k->control, buf, cap, 0);
        if (n <= 0) {
            stop_signer(k, 0);
            snprintf(err, err_cap, "the PKCS#11 signer %s", k->last_exit[0] ? k->last_exit : "went away");
            return 0;
        }
        if ((size_t)n < sizeof(*h)) {
            continue;
        }
        memcpy(h, buf, sizeof(*h));
        if (h->id != id || (size_t)n != sizeof(*h) + h->len) {
            continue;  // a late answer to a request given up on
        }
        if (h->arg != 0) {
            snprintf(err, err_cap, "%.*s", (int)h->len, (const char *)buf + sizeof(*h));
            return 0;
        }
        return 1;
    }
}

// ensure_running starts a new signer (without waiting for its login) when the last one
// died. Lock held.
static int ensure_running(gw_p11 *k, char *err, size_t cap) {
    if (k->pid > 0 && !reap(k, 0) && k->control >= 0) {
        return 1;
    }
    stop_signer(k, 1);
    int ok = start_signer(k, P11W_HELLO_NO_REPLY, err, cap);
    char where[200];
    gw_p11_uri_describe(k->uri, where, sizeof(where));
    if (ok) {
        gw_log(GW_LOG_WARN, "PKCS#11 signer for %s (pid %d) %s: started a new one (pid %d)", where, (int)k->exit_pid,
               k->last_exit[0] ? k->last_exit : "was stopped", (int)k->pid);
    } else {
        gw_log(GW_LOG_ERROR, "PKCS#11 signer for %s: %s", where, err);
    }
    return ok;
}

gw_p11 *gw_p11_open(const char *module, const char *uri, const char *pin, int uid, int gid, uint32_t flags, char *err,
                    size_t cap) {
    gw_p11 *k = gw_xcalloc(1, sizeof(*k));
    if (k == NULL || (k->module = gw_xstrdup(module)) == NULL || (k->uri = gw_xstrdup(uri)) == NULL ||
        (pin != NULL && (k->pin = gw_xstrdup(pin)) == NULL)) {
        snprintf(err, cap, "out of memory");
        if (k != NULL) {
            free(k->module);
            free(k->uri);
            free(k);
        }
        return NULL;
    }
    pthread_mutex_init(&k->lock, NULL);
    k->control = -1;
    k->uid = uid;
    k->gid = gid;
    k->id = atomic_fetch_add(&g_p11_ids, 1) + 1;
    pthread_mutex_lock(&k->lock);
    int ok = start_signer(k, flags, err, cap);
    if (ok) {
        uint8_t buf[P11W_MAX];
        p11w_head h;
        ok = wait_reply(k, k->next_req, buf, sizeof(buf), &h, HELLO_TIMEOUT_MS, err, cap);
        if (ok && h.len == sizeof(k->info)) {
            memcpy(&k->info, buf + sizeof(h), sizeof(k->info));
        } else if (ok) {
            snprintf(err, cap, "the PKCS#11 signer answered in a form this gateway does not know");
            ok = 0;
        }
    }
    pthread_mutex_unlock(&k->lock);
    if (!ok) {
        gw_p11_free(k);
        return NULL;
    }
    return k;
}

void gw_p11_free(gw_p11 *k) {
    if (k == NULL) {
        return;
    }
    pthread_mutex_lock(&k->lock);
    stop_signer(k, 0);
    pthread_mutex_unlock(&k->lock);
    pthread_mutex_destroy(&k->lock);
    if (k->pin != NULL) {
        OPENSSL_cleanse(k->pin, strlen(k->pin));
    }
    free(k->pin);
    free(k->module);
    free(k->uri);
    free(k);
}

const p11w_hello_ok *gw_p11_info(const gw_p11 *k) {
    return &k->info;
}

uint64_t gw_p11_id(const gw_p11 *k) {
    return k->id;
}

static int request(gw_p11 *k, uint32_t type, uint32_t arg, const void *in, size_t in_len, uint8_t *out, size_t *out_len,
                   size_t cap, int timeout_ms, char *err, size_t err_cap) {
    pthread_mutex_lock(&k->lock);
    int ok = ensure_running(k, err, err_cap);
    uint32_t id = ++k->next_req;
    if (ok && !send_msg(k->control, type, id, arg, in, in_len)) {
        snprintf(err, err_cap, "cannot reach the PKCS#11 signer: %s", strerror(errno));
        stop_signer(k, 1);
        ok = 0;
    }
    uint8_t buf[P11W_MAX];
    p11w_head h;
    if (ok && (ok = wait_reply(k, id, buf, sizeof(buf), &h, timeout_ms, err, err_cap))) {
        if (h.len > cap) {
            snprintf(err, err_cap, "the PKCS#11 signer's answer is too long");
            ok = 0;
        } else {
            memcpy(out, buf + sizeof(h), h.len);
            *out_len = h.len;
        }
    }
    pthread_mutex_unlock(&k->lock);
    return ok;
}

int gw_p11_sign(gw_p11 *k, uint32_t mech, const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len, size_t cap,
                int timeout_ms, char *err, size_t err_cap) {
    return request(k, P11W_SIGN, mech, in, in_len, out, out_len, cap, timeout_ms, err, err_cap);
}

int gw_p11_keygen(gw_p11 *k, uint32_t kind, const char *label, const char *id_hex, uint8_t *out, size_t *out_len,
                  size_t cap, char *err, size_t err_cap) {
    char in[400];
    size_t ll = strlen(label), il = strlen(id_hex);
    if (ll + il + 2 > sizeof(in)) {
        snprintf(err, err_cap, "label or id too long");
        return 0;
    }
    memcpy(in, label, ll + 1);
    memcpy(in + ll + 1, id_hex, il + 1);
    // RSA key generation on a slow token takes its time.
    return request(k, P11W_KEYGEN, kind, in, ll + il + 2, out, out_len, cap, 120000, err, err_cap);
}

int gw_p11_channel(gw_p11 *k, uint64_t *epoch, char *err, size_t cap) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) {
        snprintf(err, cap, "cannot make a channel to the PKCS#11 signer: %s", strerror(errno));
        return -1;
    }
    pthread_mutex_lock(&k->lock);
    int ok = ensure_running(k, err, cap);
    if (ok) {
        p11w_head h = {P11W_CHANNEL, 0, 0, 0};
        struct iovec iov = {&h, sizeof(h)};
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } u;
        memset(&u, 0, sizeof(u));
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &sv[1], sizeof(int));
        if (sendmsg(k->control, &mh, MSG_NOSIGNAL) != (ssize_t)sizeof(h)) {
            snprintf(err, cap, "cannot reach the PKCS#11 signer: %s", strerror(errno));
            stop_signer(k, 1);
            ok = 0;
        }
        *epoch = k->epoch;
    }
    pthread_mutex_unlock(&k->lock);
    close(sv[1]);
    if (!ok) {
        close(sv[0]);
        return -1;
    }
    return sv[0];
}

void gw_p11_restart(gw_p11 *k, uint64_t epoch) {
    pthread_mutex_lock(&k->lock);
    if (k->epoch == epoch && k->pid > 0) {
        stop_signer(k, 1);
    }
    pthread_mutex_unlock(&k->lock);
}

int gw_p11_exit_text(gw_p11 *k, uint64_t epoch, char *out, size_t cap) {
    pthread_mutex_lock(&k->lock);
    if (k->epoch == epoch && k->pid > 0) {
        reap(k, 0);  // never waits: the caller asks again a moment later
    }
    int known = k->exit_epoch == epoch && k->last_exit[0];
    snprintf(out, cap, "%s", known ? k->last_exit : "closed its channel");
    pthread_mutex_unlock(&k->lock);
    return known;
}

// ---- signature algorithms ----

int gw_p11_prepare(uint16_t sigalg, const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len,
                   uint32_t *out_mech) {
    const EVP_MD *md = SSL_get_signature_algorithm_digest(sigalg);
    int type = SSL_get_signature_algorithm_key_type(sigalg);
    uint8_t digest[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    if (md == NULL || !EVP_Digest(in, in_len, digest, &dl, md, NULL)) {
        return 0;
    }
    if (type == EVP_PKEY_EC) {
        *out_mech = P11W_MECH_ECDSA;
    } else if (type == EVP_PKEY_RSA && SSL_is_signature_algorithm_rsa_pss(sigalg)) {
        int nid = EVP_MD_type(md);
        *out_mech = nid == NID_sha256   ? P11W_MECH_PSS_SHA256
                    : nid == NID_sha384 ? P11W_MECH_PSS_SHA384
                    : nid == NID_sha512 ? P11W_MECH_PSS_SHA512
                                        : 0;
        if (*out_mech == 0) {
            return 0;
        }
    } else if (type == EVP_PKEY_RSA) {
        uint8_t *msg = NULL;
        size_t ml = 0;
        int alloced = 0;
        if (!RSA_add_pkcs1_prefix(&msg, &ml, &alloced, EVP_MD_type(md), digest, dl) || ml > 128) {
            if (alloced) {
                OPENSSL_free(msg);
            }
            return 0;
        }
        memcpy(out, msg, ml);
        *out_len = ml;
        if (alloced) {
            OPENSSL_free(msg);
        }
        *out_mech = P11W_MECH_RSA_PKCS;
        return 1;
    } else {
        return 0;
    }
    memcpy(out, digest, dl);
    *out_len = dl;
    return 1;
}

int gw_p11_finish(uint32_t mech, const uint8_t *sig, size_t sig_len, uint8_t *out, size_t *out_len, size_t max) {
    if (mech != P11W_MECH_ECDSA) {
        if (sig_len > max) {
            return 0;
        }
        memcpy(out, sig, sig_len);
        *out_len = sig_len;
        return 1;
    }
    if (sig_len == 0 || sig_len % 2 != 0 || sig_len > 264) {
        return 0;
    }
    ECDSA_SIG *es = ECDSA_SIG_new();
    int ok = es != NULL && BN_bin2bn(sig, sig_len / 2, es->r) != NULL &&
             BN_bin2bn(sig + sig_len / 2, sig_len / 2, es->s) != NULL;
    uint8_t *der = NULL;
    size_t dl = 0;
    ok = ok && ECDSA_SIG_to_bytes(&der, &dl, es) && dl <= max;
    if (ok) {
        memcpy(out, der, dl);
        *out_len = dl;
    }
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
    return ok;
}
