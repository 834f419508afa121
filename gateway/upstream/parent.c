// parent: the conversation with a parent proxy, and TLS to an https:// one (parent.h).
#include "gateway/upstream/parent.h"

#include <errno.h>
#include <openssl/err.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "gateway/base/netutil.h"
#include "gateway/proto/http.h"
#include "gateway/proto/socks.h"

enum {
    P_START = 0,
    P_TLS,  // https://: the handshake with the parent
    P_SEND_CONNECT,
    P_READ_HEAD,
    P_SEND_GREETING,
    P_READ_METHOD,
    P_READ_AUTH,
    P_READ_REPLY,
    P_DONE,
};

#define HEAD_MAX 4096

// The TLS to an https:// parent. |ahead| holds what was decrypted and not taken: while
// the parent's answer is read, and what came behind it, which the next read gets first.
struct gw_outer {
    SSL *ssl;
    int fd;
    gw_verify_result *verify;  // during the handshake
    int alert;                 // fatal alert from the parent, -1 none
    int closed;                // the parent's TLS ended (or failed) while reading ahead
    int cert_requested;        // the parent asked for our certificate
    uint8_t *ahead;
    size_t ahead_off, ahead_len;
};

void gw_parent_talk_init(gw_parent_talk *pt) {
    pt->step = P_START;
    pt->out_len = pt->out_sent = 0;
    pt->said[0] = '\0';
}

void gw_parent_tls_text(const gw_upstream *u, const pol_via *v, char *out, size_t cap) {
    out[0] = '\0';
    if (u->outer == NULL || !SSL_is_init_finished(u->outer->ssl)) {
        return;
    }
    SSL *ssl = u->outer->ssl;
    const CRYPTO_BUFFER *leaf = NULL;
    const STACK_OF(CRYPTO_BUFFER) *chain = SSL_get0_peer_certificates(ssl);
    char subject[256] = "?";
    if (chain != NULL && sk_CRYPTO_BUFFER_num(chain) > 0 && (leaf = sk_CRYPTO_BUFFER_value(chain, 0)) != NULL) {
        X509 *x = X509_parse_from_buffer((CRYPTO_BUFFER *)leaf);
        if (x != NULL) {
            gw_x509_name_text(X509_get_subject_name(x), subject, sizeof(subject));
            X509_free(x);
        }
    }
    const char *ours = !u->outer->cert_requested ? "it asked for no certificate of ours"
                       : v->tls->pending         ? "it asked for a certificate, we had none"
                                                 : "it asked for our certificate and got it";
    snprintf(out, cap, "%s %s, parent certificate %s verified with %s \"%s\"; %s", SSL_get_version(ssl),
             SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)), subject, v->tls_owned ? "via_trust" : "the trust of",
             v->tls_owned ? v->tls->spec.trust : v->tls->spec.name, ours);
}

void gw_parent_free(struct gw_outer *o) {
    if (o == NULL) {
        return;
    }
    if (o->ssl != NULL) {
        SSL_set_ex_data(o->ssl, gw_verify_ex_index(), NULL);
        SSL_free(o->ssl);
    }
    free(o->verify);
    free(o->ahead);
    free(o);
}

static void on_outer_info(const SSL *ssl, int where, int ret) {
    struct gw_outer *o = SSL_get_app_data(ssl);
    if (o != NULL && (where & SSL_CB_READ_ALERT) && ((ret >> 8) & 0xff) == SSL3_AL_FATAL) {
        o->alert = ret & 0xff;
    }
}

static int on_outer_cert_request(SSL *ssl, void *arg) {
    (void)arg;
    struct gw_outer *o = SSL_get_app_data(ssl);
    if (o != NULL) {
        o->cert_requested = 1;
    }
    return 1;
}

// outer_begin creates the TLS to the parent over u's socket, verified with v->tls.
static int outer_begin(gw_upstream *u, const pol_via *v) {
    struct gw_outer *o = calloc(1, sizeof(*o));
    if (o == NULL) {
        return 0;
    }
    o->fd = u->fd;
    o->alert = -1;
    u->outer = o;
    o->ssl = SSL_new(v->tls->ctx);
    o->verify = calloc(1, sizeof(*o->verify));
    if (o->ssl == NULL || o->verify == NULL || !SSL_set_fd(o->ssl, u->fd)) {
        return 0;
    }
    // The rule's SSL retries a write with what it wrote before, from its own buffer.
    SSL_set_mode(o->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_set_app_data(o->ssl, o);
    SSL_set_info_callback(o->ssl, on_outer_info);
    SSL_set_cert_cb(o->ssl, on_outer_cert_request, NULL);
    SSL_set_ex_data(o->ssl, gw_verify_ex_index(), o->verify);
    SSL_set_connect_state(o->ssl);
    snprintf(o->verify->expected, sizeof(o->verify->expected), "%s", v->host);
    return (gw_host_is_ip(v->host) || SSL_set_tlsext_host_name(o->ssl, v->host)) && gw_set_verify_name(o->ssl, v->host);
}

// outer_handshake advances the handshake with the parent.
static gw_step outer_handshake(gw_upstream *u, const pol_via *v, gw_err *err, char *reason, size_t cap) {
    struct gw_outer *o = u->outer;
    int r = SSL_do_handshake(o->ssl);
    if (r == 1) {
        SSL_set_ex_data(o->ssl, gw_verify_ex_index(), NULL);
        free(o->verify);
        o->verify = NULL;
        return GW_STEP_DONE;
    }
    int e = SSL_get_error(o->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        return e == SSL_ERROR_WANT_READ ? GW_STEP_WANT_READ : GW_STEP_WANT_WRITE;
    }
    uint32_t code = ERR_peek_error();
    *err = GW_ERR_VIA_TLS;
    if (o->verify->failed) {
        *err = GW_ERR_VIA_CERT;
        snprintf(reason, cap, "parent proxy %s: its certificate was rejected: %s", v->text, o->verify->reason);
    } else if (o->alert >= 0) {
        snprintf(reason, cap, "parent proxy %s sent TLS alert %s%s", v->text, gw_tls_alert_name(o->alert),
                 o->alert == 116 || o->alert == 42 || o->alert == 48
                     ? (v->tls->pending ? " (it wants a client certificate: set via_identity)"
                                        : " (it rejected our certificate)")
                     : "");
    } else if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && code == 0)) {
        snprintf(reason, cap, "parent proxy %s closed the connection during the TLS handshake", v->text);
    } else {
        snprintf(reason, cap, "parent proxy %s: TLS handshake failed: %s", v->text,
                 code ? ERR_reason_error_string(code) : strerror(errno));
    }
    ERR_clear_error();
    return GW_STEP_FAILED;
}

// ---- bytes to and from the parent: its socket, or its TLS ----

// send_out sends what is queued: 1 when all went, 0 to wait (|*want| says for what), -1 on
// an error.
static int send_out(gw_parent_talk *pt, gw_upstream *u, gw_step *want) {
    while (pt->out_sent < pt->out_len) {
        const uint8_t *p = pt->out + pt->out_sent;
        size_t n = pt->out_len - pt->out_sent;
        if (u->outer != NULL) {
            int r = SSL_write(u->outer->ssl, p, (int)n);
            if (r > 0) {
                pt->out_sent += (size_t)r;
                continue;
            }
            int e = SSL_get_error(u->outer->ssl, r);
            ERR_clear_error();
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                *want = e == SSL_ERROR_WANT_READ ? GW_STEP_WANT_READ : GW_STEP_WANT_WRITE;
                return 0;
            }
            return -1;
        }
        ssize_t r = send(u->fd, p, n, MSG_NOSIGNAL);
        if (r > 0) {
            pt->out_sent += (size_t)r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else if (r < 0 && (errno == EAGAIN || errno == EINPROGRESS)) {
            *want = GW_STEP_WANT_WRITE;
            return 0;
        } else {
            return -1;
        }
    }
    OPENSSL_cleanse(pt->out, pt->out_len);
    pt->out_len = pt->out_sent = 0;
    return 1;
}

// fill reads from the parent's TLS into |ahead| until it holds |cap| bytes (at most
// HEAD_MAX) or nothing more is there: 1 when it may continue, -1 when the TLS ended or
// failed with nothing read ahead.
static int fill(struct gw_outer *o, size_t cap) {
    cap = cap < HEAD_MAX ? cap : HEAD_MAX;
    if (o->ahead == NULL && (o->ahead = malloc(HEAD_MAX)) == NULL) {
        return -1;
    }
    if (o->ahead_off > 0) {
        memmove(o->ahead, o->ahead + o->ahead_off, o->ahead_len);
        o->ahead_off = 0;
    }
    while (o->ahead_len < cap && !o->closed) {
        int r = SSL_read(o->ssl, o->ahead + o->ahead_len, (int)(cap - o->ahead_len));
        if (r > 0) {
            o->ahead_len += (size_t)r;
            continue;
        }
        int e = SSL_get_error(o->ssl, r);
        ERR_clear_error();
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            break;
        }
        o->closed = 1;
    }
    return o->closed && o->ahead_len == 0 ? -1 : 1;
}

// peek looks at what the parent sent without taking it: bytes, 0 for nothing yet, -1 for
// its close (or an error).
static ssize_t peek(gw_upstream *u, uint8_t *buf, size_t cap) {
    if (u->outer != NULL) {
        if (fill(u->outer, cap) < 0) {
            return -1;
        }
        size_t n = u->outer->ahead_len < cap ? u->outer->ahead_len : cap;
        memcpy(buf, u->outer->ahead + u->outer->ahead_off, n);
        return (ssize_t)n;
    }
    for (;;) {
        ssize_t n = recv(u->fd, buf, cap, MSG_PEEK);
        if (n > 0) {
            return n;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        return n < 0 && errno == EAGAIN ? 0 : -1;
    }
}

static void outer_take(struct gw_outer *o, size_t n) {
    o->ahead_off += n;
    o->ahead_len -= n;
    if (o->ahead_len == 0) {
        free(o->ahead);  // the common case: nothing came behind the answer
        o->ahead = NULL;
        o->ahead_off = 0;
    }
}

// take removes |n| bytes already peeked.
static int take(gw_upstream *u, size_t n) {
    if (u->outer != NULL) {
        outer_take(u->outer, n);
        return 1;
    }
    uint8_t sink[HEAD_MAX];
    return recv(u->fd, sink, n, 0) == (ssize_t)n;
}

// ---- the conversation ----

typedef struct {
    gw_parent_talk *pt;
    gw_upstream *u;
    const pol_via *v;
    const char *target;
    gw_err *err;
    char *reason;
    size_t cap;
} talk;

static void queue(talk *k, const void *p, size_t n) {
    memcpy(k->pt->out, p, n);  // (every message fits: the largest is 3 + 255 + 255 bytes)
    k->pt->out_len = n;
    k->pt->out_sent = 0;
}

// fail: the parent's failure in words (|fmt| takes the parent, the target, a detail).
#define fail(k, e, fmt, detail) \
    (*(k)->err = (e), snprintf((k)->reason, (k)->cap, fmt, (k)->v->text, (k)->target, (detail)), GW_STEP_FAILED)

// words: the parent's reason phrase made safe for a reason (printable ASCII).
static void words(const char *p, size_t n, char *out, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++) {
        out[k++] = p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\' ? p[i] : '?';
    }
    out[k] = '\0';
}

// closed: the parent ended the connection before it answered. A parent that asked for our
// certificate in a handshake in which we had none to give (via_trust) does that (TLS 1.2
// servers, and TLS 1.3 ones that judge it after the handshake, as nginx does).
static gw_step closed(talk *k) {
    int e = errno;
    const struct gw_outer *o = k->u->outer;
    if (o == NULL && k->u->fastopen && (e == ECONNREFUSED || e == ETIMEDOUT || e == EHOSTUNREACH || e == ENETUNREACH)) {
        // TCP Fast Open: the connect's outcome came with our first words' (errno names it).
        *k->err = gw_upstream_errno_err(e);
        snprintf(k->reason, k->cap, "parent proxy %s: connect: %s (TCP Fast Open: the SYN carried CONNECT %s)",
                 k->v->text, strerror(e), k->target);
        return GW_STEP_FAILED;
    }
    if (o != NULL && o->cert_requested && k->v->tls->pending) {
        return fail(k, GW_ERR_VIA_TLS,
                    "parent proxy %s asked for a client certificate, we had none (set via_identity), and it closed "
                    "the connection before it answered CONNECT %s%s",
                    "");
    }
    if (o != NULL && o->alert >= 0) {
        return fail(k, GW_ERR_VIA_TLS, "parent proxy %s ended CONNECT %s with TLS alert %s before it answered",
                    gw_tls_alert_name(o->alert));
    }
    return fail(k, GW_ERR_VIA_FAILED, "parent proxy %s closed the connection before it answered CONNECT %s%s", "");
}

static gw_step http_connect(talk *k) {
    char req[sizeof(k->pt->out)];
    size_t n = gw_http_connect_request(k->target, k->v->user, k->v->password, req, sizeof(req));
    if (n > 0) {
        queue(k, req, n);
    }
    OPENSSL_cleanse(req, sizeof(req));
    if (n == 0) {
        return fail(k, GW_ERR_INTERNAL, "the CONNECT request for parent proxy %s to %s does not fit%s", "");
    }
    k->pt->step = P_READ_HEAD;
    return GW_STEP_DONE;
}

static gw_step http_head(talk *k) {
    uint8_t buf[HEAD_MAX];
    ssize_t n = peek(k->u, buf, sizeof(buf));
    if (n == 0) {
        return GW_STEP_WANT_READ;
    }
    if (n < 0) {
        return closed(k);
    }
    gw_http_response resp;
    gw_http_status st = gw_http_parse_response((const char *)buf, (size_t)n, &resp);
    if (st == GW_HTTP_NEED_MORE && (size_t)n < sizeof(buf)) {
        // (EPOLLET: a short peek means the socket is empty for now; over TLS, that the
        // parent's TLS holds nothing more, or ended)
        return k->u->outer != NULL && k->u->outer->closed ? closed(k) : GW_STEP_WANT_READ;
    }
    if (st != GW_HTTP_OK) {
        return fail(k, GW_ERR_VIA_FAILED, "parent proxy %s answered CONNECT %s with %s",
                    st == GW_HTTP_NEED_MORE ? "a head over 4096 bytes" : "a malformed HTTP head");
    }
    char reason[200], detail[260];
    words(resp.reason, resp.reason_len, reason, sizeof(reason));
    snprintf(detail, sizeof(detail), "%d %s", resp.status, reason);
    if (resp.status / 100 == 2) {
        snprintf(k->pt->said, sizeof(k->pt->said), "%s", detail);
        // Only the head is taken: bytes behind it (a server that speaks first) stay.
        if (!take(k->u, resp.head_len)) {
            return fail(k, GW_ERR_INTERNAL, "reading the answer of parent proxy %s to CONNECT %s failed%s", "");
        }
        k->pt->step = P_DONE;
        return GW_STEP_DONE;
    }
    if (resp.status == 407) {
        return fail(k, GW_ERR_VIA_AUTH,
                    k->v->user ? "parent proxy %s refused our credentials for CONNECT %s: %s"
                               : "parent proxy %s wants credentials (via_credentials_file) for CONNECT %s: %s",
                    detail);
    }
    if (resp.status == 403 || resp.status == 401 || resp.status == 405) {
        return fail(k, GW_ERR_VIA_REFUSED, "parent proxy %s refused CONNECT %s: %s", detail);
    }
    return fail(k, GW_ERR_VIA_FAILED, "parent proxy %s could not open CONNECT %s: %s", detail);
}

// socks_request queues CONNECT target: a name (the parent resolves it) or an address.
static gw_step socks_request(talk *k) {
    char host[256];
    uint16_t port = 0;
    uint8_t req[300];
    size_t n = gw_http_parse_authority(k->target, strlen(k->target), 0, host, &port)
                   ? gw_socks5_encode_connect(host, port, req)
                   : 0;
    if (n == 0) {
        return fail(k, GW_ERR_INTERNAL, "cannot ask parent proxy %s for %s%s", "");
    }
    queue(k, req, n);
    k->pt->step = P_READ_REPLY;
    return GW_STEP_DONE;
}

// read_exact peeks for |n| bytes: 1 with them in |buf| (taken), 0 to wait, -1 closed.
static int read_exact(gw_upstream *u, uint8_t *buf, size_t n) {
    ssize_t got = peek(u, buf, n);
    if (got < 0) {
        return -1;
    }
    if ((size_t)got < n) {
        return 0;
    }
    return take(u, n) ? 1 : -1;
}

static gw_step socks_method_or_auth(talk *k) {
    uint8_t buf[2];
    int r = read_exact(k->u, buf, 2);
    if (r <= 0) {
        return r == 0 ? GW_STEP_WANT_READ : closed(k);
    }
    const pol_via *v = k->v;
    if (k->pt->step == P_READ_AUTH) {
        if (buf[0] != 0x01 || buf[1] != 0x00) {
            return fail(k, GW_ERR_VIA_AUTH, "parent proxy %s refused our credentials (RFC 1929) for CONNECT %s%s", "");
        }
        return socks_request(k);
    }
    if (buf[0] != 0x05 || (buf[1] != GW_SOCKS5_METHOD_NONE && buf[1] != GW_SOCKS5_METHOD_USERPASS)) {
        return fail(k, GW_ERR_VIA_AUTH,
                    v->user ? "parent proxy %s accepts none of our methods (username/password offered) for %s%s"
                            : "parent proxy %s wants credentials (via_credentials_file) for %s%s",
                    "");
    }
    if (buf[1] == GW_SOCKS5_METHOD_USERPASS) {
        if (v->user == NULL) {
            return fail(k, GW_ERR_VIA_FAILED, "parent proxy %s chose a method we did not offer for %s%s", "");
        }
        uint8_t auth[3 + 255 + 255];
        queue(k, auth, gw_socks5_encode_userpass(v->user, v->password, auth));
        OPENSSL_cleanse(auth, sizeof(auth));
        k->pt->step = P_READ_AUTH;
        return GW_STEP_DONE;
    }
    return socks_request(k);
}

static gw_step socks_reply(talk *k) {
    uint8_t buf[300];
    ssize_t n = peek(k->u, buf, sizeof(buf));
    if (n <= 0) {
        return n == 0 ? GW_STEP_WANT_READ : closed(k);
    }
    size_t used = 0;
    uint8_t rep = 0;
    gw_socks_status st = gw_socks5_parse_reply(buf, (size_t)n, &used, &rep);
    if (st == GW_SOCKS_NEED_MORE) {
        return GW_STEP_WANT_READ;
    }
    if (st != GW_SOCKS_OK) {
        return fail(k, GW_ERR_VIA_FAILED, "parent proxy %s answered CONNECT %s with %s", "a malformed SOCKS5 reply");
    }
    if (!take(k->u, used)) {
        return fail(k, GW_ERR_INTERNAL, "reading the answer of parent proxy %s to CONNECT %s failed%s", "");
    }
    if (rep == 0x00) {
        snprintf(k->pt->said, sizeof(k->pt->said), "SOCKS5 reply 0 (succeeded)");
        k->pt->step = P_DONE;
        return GW_STEP_DONE;
    }
    static const char *const reps[] = {"succeeded",
                                       "general SOCKS server failure",
                                       "connection not allowed by ruleset",
                                       "network unreachable",
                                       "host unreachable",
                                       "connection refused",
                                       "TTL expired",
                                       "command not supported",
                                       "address type not supported"};
    char detail[80];
    snprintf(detail, sizeof(detail), "SOCKS5 reply %u (%s)", rep, rep < 9 ? reps[rep] : "unknown");
    return fail(
        k, rep == 0x02 ? GW_ERR_VIA_REFUSED : GW_ERR_VIA_FAILED,
        rep == 0x02 ? "parent proxy %s refused CONNECT %s: %s" : "parent proxy %s could not open CONNECT %s: %s",
        detail);
}

gw_step gw_parent_step(gw_parent_talk *pt, gw_upstream *u, const pol_via *v, const char *target, gw_err *err,
                       char *reason, size_t reason_len) {
    talk k = {pt, u, v, target, err, reason, reason_len};
    for (;;) {
        if (pt->out_len > 0) {
            gw_step want = GW_STEP_WANT_WRITE;
            int r = send_out(pt, u, &want);
            if (r < 0) {
                return fail(&k, GW_ERR_VIA_FAILED, "parent proxy %s: sending CONNECT %s failed%s", "");
            }
            if (r == 0) {
                return want;
            }
        }
        gw_step s = GW_STEP_DONE;
        switch (pt->step) {
            case P_START:
                if (v->tls != NULL) {
                    if (!outer_begin(u, v)) {
                        return fail(&k, GW_ERR_INTERNAL, "cannot create the TLS connection to parent proxy %s%s%s", "");
                    }
                    pt->step = P_TLS;
                } else {
                    pt->step = v->kind == POL_VIA_HTTP ? P_SEND_CONNECT : P_SEND_GREETING;
                }
                break;
            case P_TLS:
                s = outer_handshake(u, v, err, reason, reason_len);
                if (s == GW_STEP_DONE) {
                    pt->step = P_SEND_CONNECT;
                }
                break;
            case P_DONE:
                return GW_STEP_DONE;
            case P_SEND_CONNECT:
                s = http_connect(&k);
                break;
            case P_READ_HEAD:
                s = http_head(&k);
                break;
            case P_SEND_GREETING: {
                uint8_t greet[] = {0x05, 0x01, v->user != NULL ? GW_SOCKS5_METHOD_USERPASS : GW_SOCKS5_METHOD_NONE};
                queue(&k, greet, sizeof(greet));
                pt->step = P_READ_METHOD;
                break;
            }
            case P_READ_METHOD:
            case P_READ_AUTH:
                s = socks_method_or_auth(&k);
                break;
            default:
                s = socks_reply(&k);
                break;
        }
        if (s != GW_STEP_DONE) {
            return s;
        }
    }
}

// ---- the rule's bytes over the parent's TLS ----

static int outer_read(struct gw_outer *o, uint8_t *p, size_t n, int *want) {
    *want = 0;
    if (o->ahead_len > 0) {
        size_t k = n < o->ahead_len ? n : o->ahead_len;
        memcpy(p, o->ahead + o->ahead_off, k);
        outer_take(o, k);
        return (int)k;
    }
    int r = SSL_read(o->ssl, p, (int)n);
    if (r > 0) {
        return r;
    }
    int e = SSL_get_error(o->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *want = e;
        return -1;
    }
    uint32_t code = ERR_peek_error();
    ERR_clear_error();
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && code == 0 && r == 0)) {
        return 0;
    }
    errno = errno ? errno : EPROTO;
    return -1;
}

static int outer_write(struct gw_outer *o, const uint8_t *p, size_t n, int *want) {
    *want = 0;
    int r = SSL_write(o->ssl, p, (int)n);
    if (r > 0) {
        return r;
    }
    int e = SSL_get_error(o->ssl, r);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *want = e;
    } else {
        errno = errno ? errno : EPROTO;
    }
    return -1;
}

int gw_parent_read(gw_upstream *u, uint8_t *p, size_t n, int *want) {
    return outer_read(u->outer, p, n, want);
}

int gw_parent_write(gw_upstream *u, const uint8_t *p, size_t n, int *want) {
    return outer_write(u->outer, p, n, want);
}

int gw_parent_shutdown(gw_upstream *u) {
    int r = SSL_shutdown(u->outer->ssl);
    if (r < 0) {
        int e = SSL_get_error(u->outer->ssl, r);
        ERR_clear_error();
        return e == SSL_ERROR_WANT_WRITE ? 0 : 1;
    }
    return 1;
}

static int outer_pending(const struct gw_outer *o) {
    return o != NULL && (o->ahead_len > 0 || SSL_pending(o->ssl) > 0 || SSL_has_pending(o->ssl));
}

int gw_parent_pending(const gw_upstream *u) {
    return outer_pending(u->outer);
}

// The BIO of the rule's SSL over the parent's TLS.
static int nest_read(BIO *bio, char *out, int len) {
    BIO_clear_retry_flags(bio);
    int want = 0;
    int r = len > 0 ? outer_read(BIO_get_data(bio), (uint8_t *)out, (size_t)len, &want) : 0;
    if (r < 0 && want == SSL_ERROR_WANT_READ) {
        BIO_set_retry_read(bio);
    } else if (r < 0 && want == SSL_ERROR_WANT_WRITE) {
        BIO_set_retry_write(bio);
    }
    return r;
}

static int nest_write(BIO *bio, const char *in, int len) {
    BIO_clear_retry_flags(bio);
    int want = 0;
    int r = len > 0 ? outer_write(BIO_get_data(bio), (const uint8_t *)in, (size_t)len, &want) : 0;
    if (r < 0 && want == SSL_ERROR_WANT_READ) {
        BIO_set_retry_read(bio);
    } else if (r < 0 && want == SSL_ERROR_WANT_WRITE) {
        BIO_set_retry_write(bio);
    }
    return r;
}

static long nest_ctrl(BIO *bio, int cmd, long larg, void *parg) {
    (void)larg;
    struct gw_outer *o = BIO_get_data(bio);
    switch (cmd) {
        case BIO_CTRL_FLUSH:
            return 1;
        case BIO_CTRL_PENDING:
            return outer_pending(o);
        case BIO_C_GET_FD:
            if (parg != NULL) {
                *(int *)parg = o->fd;
            }
            return o->fd;
        default:
            return 0;
    }
}

static BIO_METHOD *g_nest_method;
static pthread_once_t g_nest_once = PTHREAD_ONCE_INIT;

static void nest_method_init(void) {
    BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOURCE_SINK, "mtlsgw TLS in a parent's TLS");
    if (m != NULL && BIO_meth_set_read(m, nest_read) && BIO_meth_set_write(m, nest_write) &&
        BIO_meth_set_ctrl(m, nest_ctrl)) {
        g_nest_method = m;  // lives as long as the process
    } else {
        BIO_meth_free(m);
    }
}

BIO *gw_parent_tls_bio(gw_upstream *u) {
    if (u->outer == NULL) {
        return NULL;
    }
    pthread_once(&g_nest_once, nest_method_init);
    BIO *bio = g_nest_method != NULL ? BIO_new(g_nest_method) : NULL;
    if (bio != NULL) {
        BIO_set_data(bio, u->outer);  // (the gw_upstream may move; its parent TLS stays)
        BIO_set_init(bio, 1);
    }
    return bio;
}
