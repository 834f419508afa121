#include "gateway/upstream/keyops.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/base/log.h"
#include "gateway/tls/pkcs11.h"
#include "gateway/upstream/upstream.h"

enum { OP_PENDING, OP_DONE, OP_FAILED };

typedef struct channel channel;
typedef struct gw_key_op gw_key_op;

// One signature a handshake waits for.
struct gw_key_op {
    gw_key_op *prev, *next;  // in its channel's pending list while pending
    channel *ch;
    gw_upstream *u;
    uint32_t id, mech;
    int state;
    uint64_t start_us;  // when the request went out
    gw_timer timer;     // key_timeout_ms
    size_t sig_len;
    uint8_t sig[1024];
};

// A worker's channel to the signer of one key (one signer process: epoch).
struct channel {
    channel *next;
    gw_keyops *owner;
    uint64_t key_id, epoch;
    int fd;
    int dead;  // its signer went away: no new requests; freed after the batch
    gw_watcher w;
    gw_key_op *pending;
    int num_pending;
    gw_timer exit_wait;  // a signer that died: how it ended is known a moment after its sockets closed
    int exit_tries;
};

// Signatures one worker may have waiting on one signer. A token signs one at a time
// (a smart card in tens of milliseconds): beyond this, a flood of handshakes on a token
// identity fails at once with key_unavailable instead of every handshake waiting out
// key_timeout_ms in the queue.
#define KEYOPS_MAX_PENDING 32

static struct {
    atomic_uint_fast64_t counts[GW_KEY_RESULTS];
    atomic_uint_fast64_t signed_us;
} g_stats[GW_KEYOPS_MAX_SLOTS];

void gw_keyops_stats(int slot, uint64_t counts[GW_KEY_RESULTS], uint64_t *signed_us) {
    for (int r = 0; r < GW_KEY_RESULTS; r++) {
        counts[r] = slot >= 0 && slot < GW_KEYOPS_MAX_SLOTS
                        ? atomic_load_explicit(&g_stats[slot].counts[r], memory_order_relaxed)
                        : 0;
    }
    *signed_us = slot >= 0 && slot < GW_KEYOPS_MAX_SLOTS
                     ? atomic_load_explicit(&g_stats[slot].signed_us, memory_order_relaxed)
                     : 0;
}

static void count(const gw_upstream *u, gw_key_result r, uint64_t us) {
    int slot = u->identity ? u->identity->metrics_slot : -1;
    if (slot >= 0 && slot < GW_KEYOPS_MAX_SLOTS) {
        atomic_fetch_add_explicit(&g_stats[slot].counts[r], 1, memory_order_relaxed);
        if (r == GW_KEY_SIGNED) {
            atomic_fetch_add_explicit(&g_stats[slot].signed_us, us, memory_order_relaxed);
        }
    }
}

struct gw_keyops {
    gw_loop *loop;
    channel *channels;
    channel *dying;  // detached, waiting to learn how their signer ended (exit_wait)
    uint32_t next_id;
};

gw_keyops *gw_keyops_new(gw_loop *loop) {
    gw_keyops *k = calloc(1, sizeof(*k));
    if (k != NULL) {
        k->loop = loop;
    }
    return k;
}

static void unlink_op(gw_key_op *op) {
    if (op->ch == NULL) {
        return;
    }
    if (op->prev != NULL) {
        op->prev->next = op->next;
    } else {
        op->ch->pending = op->next;
    }
    if (op->next != NULL) {
        op->next->prev = op->prev;
    }
    op->ch->num_pending--;
    op->prev = op->next = NULL;
    op->ch = NULL;
}

static void set_error(gw_upstream *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(gw_upstream *u, const char *fmt, ...) {
    char text[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    free(u->key_error);
    u->key_error = strdup(text);  // NULL (no memory): the handshake still fails, in general words
}

// finish_op ends |op| (no longer pending) and lets its tunnel go on. The tunnel may
// close inside the call: nothing of |op| is touched after it.
static void finish_op(gw_loop *loop, gw_key_op *op, gw_key_result result) {
    unlink_op(op);
    gw_timer_stop(loop, &op->timer);
    op->state = result == GW_KEY_SIGNED ? OP_DONE : OP_FAILED;
    gw_upstream *u = op->u;
    count(u, result, gw_monotonic_us() - op->start_us);
    if (u->key_ready != NULL) {
        u->key_ready(u->key_arg);
    }
}

// fail_pending fails every signature still waiting on |ch|: its signer |ended| so.
static void fail_pending(gw_keyops *k, channel *ch, const char *ended) {
    while (ch->pending != NULL) {
        gw_key_op *op = ch->pending;
        const gw_identity *id = op->u->identity;
        set_error(op->u, "the PKCS#11 signer of identity \"%s\" (token \"%s\") %s before it signed", id->spec.name,
                  id->p11 ? gw_p11_info(id->p11)->token : "?", ended);
        finish_op(k->loop, op, GW_KEY_FAILED);
    }
}

// on_exit_wait asks again how a dead signer ended: its sockets close a moment before its
// parent may reap it. Never a sleep on the loop: a timer, 2 ms apart, 25 times at most.
static void on_exit_wait(gw_loop *loop, gw_timer *timer) {
    channel *ch = timer->data;
    char ended[200] = "closed its channel";
    const gw_identity *id = ch->pending != NULL ? ch->pending->u->identity : NULL;
    int known = id != NULL && id->p11 != NULL && gw_p11_exit_text(id->p11, ch->epoch, ended, sizeof(ended));
    if (!known && ch->pending != NULL && ++ch->exit_tries < 25) {
        gw_timer_start(loop, &ch->exit_wait, 2);
        return;
    }
    for (channel **p = &ch->owner->dying; *p != NULL; p = &(*p)->next) {
        if (*p == ch) {
            *p = ch->next;
            break;
        }
    }
    fail_pending(ch->owner, ch, ended);
    gw_loop_defer_free(loop, free, ch);
}

// detach_channel takes |ch| out of service: its signer is gone. Pending signatures fail
// with how it ended (|why|, or what its exit status says once known).
static void detach_channel(gw_keyops *k, channel *ch, const char *why) {
    if (ch->dead) {
        return;
    }
    ch->dead = 1;
    gw_watcher_remove(k->loop, &ch->w);
    close(ch->fd);
    ch->fd = -1;
    for (channel **p = &k->channels; *p != NULL; p = &(*p)->next) {
        if (*p == ch) {
            *p = ch->next;
            break;
        }
    }
    if (why == NULL && ch->pending != NULL) {
        ch->next = k->dying;
        k->dying = ch;
        gw_timer_init(&ch->exit_wait, on_exit_wait, ch);
        ch->exit_tries = 0;
        on_exit_wait(k->loop, &ch->exit_wait);
        return;
    }
    fail_pending(k, ch, why != NULL ? why : "closed its channel");
    gw_loop_defer_free(k->loop, free, ch);
}

static void on_channel(gw_loop *loop, gw_watcher *w, uint32_t events) {
    channel *ch = w->data;
    gw_keyops *k = ch->owner;
    uint8_t buf[P11W_MAX];
    while (!ch->dead) {
        ssize_t n = recv(ch->fd, buf, sizeof(buf), 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        if (n <= 0) {
            detach_channel(k, ch, NULL);
            return;
        }
        p11w_head h;
        if ((size_t)n < sizeof(h)) {
            continue;
        }
        memcpy(&h, buf, sizeof(h));
        gw_key_op *op = ch->pending;
        while (op != NULL && op->id != h.id) {
            op = op->next;
        }
        if (op == NULL || (size_t)n != sizeof(h) + h.len) {
            continue;  // an answer after the tunnel gave up on it
        }
        if (h.arg != 0) {
            set_error(op->u, "the token of identity \"%s\" did not sign: %.*s", op->u->identity->spec.name, (int)h.len,
                      (const char *)buf + sizeof(h));
            finish_op(loop, op, GW_KEY_FAILED);
        } else if (h.len > sizeof(op->sig)) {
            set_error(op->u, "the token's signature is too long");
            finish_op(loop, op, GW_KEY_FAILED);
        } else {
            memcpy(op->sig, buf + sizeof(h), h.len);
            op->sig_len = h.len;
            finish_op(loop, op, GW_KEY_SIGNED);
        }
    }
}

// expire_op gives up on |op|: the token did not sign within |limit| (|ms|). The signer
// is restarted: a hung module or token gets a new process (and login) for the next one.
static void expire_op(gw_loop *loop, gw_key_op *op, const char *limit, int ms) {
    gw_upstream *u = op->u;
    const gw_identity *id = u->identity;
    set_error(u,
              "the token of identity \"%s\" (token \"%s\") did not sign within %s (%d ms); its signer is "
              "restarted",
              id->spec.name, gw_p11_info(id->p11)->token, limit, ms);
    gw_log(GW_LOG_WARN, "identity %s: the PKCS#11 signer did not answer within %s (%d ms): restarting it",
           id->spec.name, limit, ms);
    channel *ch = op->ch;
    unlink_op(op);
    if (ch != NULL) {
        gw_p11_restart(id->p11, ch->epoch);
        detach_channel(ch->owner, ch, "was restarted after a signature timed out");
    }
    finish_op(loop, op, GW_KEY_TIMEOUT);
}

static void on_op_timeout(gw_loop *loop, gw_timer *timer) {
    gw_key_op *op = timer->data;
    expire_op(loop, op, "key_timeout_ms", op->u->key_timeout_ms);
}

int gw_keyops_expire(gw_upstream *u, const char *limit, int ms) {
    gw_key_op *op = u->key_op;
    if (op == NULL || op->state != OP_PENDING || u->keyops == NULL) {
        return 0;
    }
    expire_op(u->keyops->loop, op, limit, ms);
    return 1;
}

static channel *get_channel(gw_keyops *k, gw_p11 *key, char *err, size_t cap) {
    uint64_t id = gw_p11_id(key);
    for (channel *ch = k->channels; ch != NULL; ch = ch->next) {
        if (ch->key_id == id && !ch->dead) {
            return ch;
        }
    }
    channel *ch = calloc(1, sizeof(*ch));
    if (ch == NULL) {
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    ch->fd = gw_p11_channel(key, &ch->epoch, err, cap);
    if (ch->fd < 0) {
        free(ch);
        return NULL;
    }
    ch->owner = k;
    ch->key_id = id;
    gw_watcher_init(&ch->w, ch->fd, on_channel, ch);
    if (!gw_watcher_set(k->loop, &ch->w, EPOLLIN | EPOLLRDHUP | EPOLLET)) {
        snprintf(err, cap, "cannot watch the signer channel: %s", strerror(errno));
        close(ch->fd);
        free(ch);
        return NULL;
    }
    ch->next = k->channels;
    k->channels = ch;
    return ch;
}

// send_request sends the signature request of |op| over a channel to |key|'s signer; a
// channel found dead (the signer exited since) is replaced once.
static int send_request(gw_keyops *k, gw_p11 *key, gw_key_op *op, const uint8_t *tbs, size_t len, char *err,
                        size_t cap) {
    uint8_t buf[sizeof(p11w_head) + 256];
    if (len > 256) {
        snprintf(err, cap, "input too long");
        return 0;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        channel *ch = get_channel(k, key, err, cap);
        if (ch == NULL) {
            return 0;
        }
        if (ch->num_pending >= KEYOPS_MAX_PENDING) {
            snprintf(err, cap,
                     "the PKCS#11 signer has %d signatures of this worker waiting already: refused at "
                     "once rather than queued",
                     ch->num_pending);
            return 0;
        }
        p11w_head h = {P11W_SIGN, op->id, op->mech, (uint32_t)len};
        memcpy(buf, &h, sizeof(h));
        memcpy(buf + sizeof(h), tbs, len);
        if (send(ch->fd, buf, sizeof(h) + len, MSG_NOSIGNAL) == (ssize_t)(sizeof(h) + len)) {
            op->ch = ch;
            op->next = ch->pending;
            if (ch->pending != NULL) {
                ch->pending->prev = op;
            }
            ch->pending = op;
            ch->num_pending++;
            return 1;
        }
        int e = errno;
        if (e == EAGAIN) {
            snprintf(err, cap, "the PKCS#11 signer has too many signatures waiting");
            return 0;
        }
        detach_channel(k, ch, "closed its channel");
        snprintf(err, cap, "cannot reach the PKCS#11 signer: %s", strerror(e));
    }
    return 0;
}

static void free_op(gw_upstream *u) {
    if (u->key_op != NULL) {
        unlink_op(u->key_op);
        if (u->keyops != NULL) {
            gw_timer_stop(u->keyops->loop, &u->key_op->timer);
        }
        free(u->key_op);
        u->key_op = NULL;
    }
}

void gw_keyops_cancel(gw_upstream *u) {
    free_op(u);
}

static enum ssl_private_key_result_t token_sign(SSL *ssl, uint8_t *out, size_t *out_len, size_t max_out,
                                                uint16_t sigalg, const uint8_t *in, size_t in_len) {
    gw_upstream *u = SSL_get_app_data(ssl);
    const gw_identity *id = u ? u->identity : NULL;
    if (u == NULL || id == NULL || id->p11 == NULL) {
        return ssl_private_key_failure;
    }
    free(u->key_error);
    u->key_error = NULL;
    free_op(u);
    uint8_t tbs[128];
    size_t tbs_len = 0;
    uint32_t mech = 0;
    if (!gw_p11_prepare(sigalg, in, in_len, tbs, &tbs_len, &mech)) {
        set_error(u, "the server asked for signature algorithm 0x%04x, which a token key cannot make", sigalg);
        return ssl_private_key_failure;
    }
    char err[600];
    if (u->keyops == NULL) {
        uint8_t raw[1024];
        size_t raw_len = 0;
        if (!gw_p11_sign(id->p11, mech, tbs, tbs_len, raw, &raw_len, sizeof(raw), GW_P11_SIGN_TIMEOUT_MS, err,
                         sizeof(err))) {
            set_error(u, "the token of identity \"%s\" did not sign: %s", id->spec.name, err);
            return ssl_private_key_failure;
        }
        if (!gw_p11_finish(mech, raw, raw_len, out, out_len, max_out)) {
            set_error(u, "the token's signature is malformed");
            return ssl_private_key_failure;
        }
        return ssl_private_key_success;
    }
    gw_key_op *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        set_error(u, "out of memory");
        return ssl_private_key_failure;
    }
    op->u = u;
    op->mech = mech;
    op->id = ++u->keyops->next_id;
    op->state = OP_PENDING;
    op->start_us = gw_monotonic_us();
    gw_timer_init(&op->timer, on_op_timeout, op);
    if (!send_request(u->keyops, id->p11, op, tbs, tbs_len, err, sizeof(err))) {
        set_error(u, "identity \"%s\": %s", id->spec.name, err);
        count(u, GW_KEY_FAILED, 0);
        free(op);
        return ssl_private_key_failure;
    }
    u->key_op = op;
    gw_timer_start(u->keyops->loop, &op->timer, (uint64_t)(u->key_timeout_ms > 0 ? u->key_timeout_ms : 5000));
    return ssl_private_key_retry;
}

static enum ssl_private_key_result_t token_complete(SSL *ssl, uint8_t *out, size_t *out_len, size_t max_out) {
    gw_upstream *u = SSL_get_app_data(ssl);
    gw_key_op *op = u ? u->key_op : NULL;
    if (op == NULL) {
        return ssl_private_key_failure;
    }
    if (op->state == OP_PENDING) {
        return ssl_private_key_retry;
    }
    int ok = op->state == OP_DONE;
    if (ok && !gw_p11_finish(op->mech, op->sig, op->sig_len, out, out_len, max_out)) {
        set_error(u, "the token's signature is malformed");
        ok = 0;
    }
    free_op(u);
    return ok ? ssl_private_key_success : ssl_private_key_failure;
}

static enum ssl_private_key_result_t token_decrypt(SSL *ssl, uint8_t *out, size_t *out_len, size_t max_out,
                                                   const uint8_t *in, size_t in_len) {
    return ssl_private_key_failure;  // a TLS client never decrypts with its key
}

const SSL_PRIVATE_KEY_METHOD gw_token_key_method = {token_sign, token_decrypt, token_complete};

void gw_keyops_free(gw_keyops *k) {
    if (k == NULL) {
        return;
    }
    while (k->dying != NULL) {
        channel *ch = k->dying;
        k->dying = ch->next;
        gw_timer_stop(k->loop, &ch->exit_wait);
        while (ch->pending != NULL) {
            gw_key_op *op = ch->pending;
            unlink_op(op);
            gw_timer_stop(k->loop, &op->timer);
        }
        free(ch);
    }
    while (k->channels != NULL) {
        channel *ch = k->channels;
        k->channels = ch->next;
        gw_watcher_remove(k->loop, &ch->w);
        close(ch->fd);
        while (ch->pending != NULL) {
            gw_key_op *op = ch->pending;
            unlink_op(op);
            gw_timer_stop(k->loop, &op->timer);
        }
        free(ch);
    }
    free(k);
}
