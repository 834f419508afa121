#include "gateway/upstream/upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/base/netutil.h"
#include "gateway/tls/ocsp.h"
#include "gateway/upstream/keyops.h"
#include "gateway/upstream/parent.h"
#include "gateway/upstream/sesscache.h"

void gw_upstream_init(gw_upstream *u) {
    memset(u, 0, sizeof(*u));
    u->fd = -1;
    u->alert = -1;
}

void gw_upstream_move(gw_upstream *dst, gw_upstream *src) {
    *dst = *src;
    if (dst->ssl != NULL) {
        SSL_set_app_data(dst->ssl, dst);  // the callbacks find it where it is now
    }
    dst->key_ready = NULL;  // the handshake is over: nobody to call about a key
    dst->key_arg = NULL;
    gw_upstream_init(src);
}

int gw_upstream_buffered(const gw_upstream *u) {
    BIO *rbio = u->ssl != NULL ? SSL_get_rbio(u->ssl) : NULL;
    return (rbio != NULL && BIO_ctrl_pending(rbio) > 0) || gw_parent_pending(u);
}

unsigned gw_upstream_ticket_wait_ms(const gw_upstream *u) {
    if (u->ssl == NULL || u->ticket_seen || u->identity == NULL ||
        (SSL_version(u->ssl) != TLS1_3_VERSION && u->early == GW_EARLY_NONE)) {
        return 0;
    }
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    int64_t rtt = u->rtt_ms;
    if (getsockopt(u->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 && len >= sizeof(ti) &&
        (int64_t)(ti.tcpi_rtt / 1000) > rtt) {
        rtt = ti.tcpi_rtt / 1000;  // microseconds
    }
    int64_t ms = 20 + 2 * (rtt > 0 ? rtt : 0);
    return ms < 1000 ? (unsigned)ms : 1000;
}

int gw_upstream_ocsp_result(const gw_upstream *u) {
    return u->verify != NULL ? u->verify->ocsp : u->ocsp;
}

const char *gw_upstream_ocsp_text(const gw_upstream *u) {
    int r = gw_upstream_ocsp_result(u);
    return r == GW_OCSP_RESULT_NONE ? NULL : gw_ocsp_result_name((gw_ocsp_result)r);
}

static void free_verify(gw_upstream *u) {
    if (u->verify != NULL) {
        u->ocsp = u->verify->ocsp;
        if (u->describe_cas && u->verify->ocsp_info[0] != '\0' && u->ocsp_note == NULL) {
            u->ocsp_note = strdup(u->verify->ocsp_info);
        }
        if (u->ssl != NULL) {
            SSL_set_ex_data(u->ssl, gw_verify_ex_index(), NULL);
        }
        free(u->verify);
        u->verify = NULL;
    }
}

void gw_upstream_close(gw_upstream *u) {
    gw_keyops_cancel(u);
    free(u->key_error);
    u->key_error = NULL;
    free_verify(u);
    free(u->early_copy);
    u->early_copy = NULL;
    free(u->ca_note);
    u->ca_note = NULL;
    free(u->ocsp_note);
    u->ocsp_note = NULL;
    for (size_t i = 0; i < u->num_held; i++) {
        SSL_SESSION_free(u->held[i]);
    }
    u->num_held = 0;
    if (u->ssl != NULL) {
        SSL_free(u->ssl);
        u->ssl = NULL;
        u->ra = NULL;
    }
    gw_parent_free(u->outer);  // (after the SSL whose BIO reads through it)
    u->outer = NULL;
    if (u->fd >= 0) {
        close(u->fd);
        u->fd = -1;
    }
}

gw_err gw_upstream_errno_err(int e) {
    switch (e) {
        case ECONNREFUSED:
            return GW_ERR_REFUSED;
        case ENETUNREACH:
        case ENETDOWN:
            return GW_ERR_NET_UNREACHABLE;
        case EHOSTUNREACH:
        case EHOSTDOWN:
        case EADDRNOTAVAIL:
            return GW_ERR_HOST_UNREACHABLE;
        case ETIMEDOUT:
            return GW_ERR_CONNECT_TIMEOUT;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
            return GW_ERR_INTERNAL;
        default:
            return GW_ERR_HOST_UNREACHABLE;
    }
}

static atomic_uint g_mark;

int gw_upstream_set_mark(uint32_t mark) {
    if (mark != 0) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) == 0;
        int e = errno;
        if (fd >= 0) {
            close(fd);
        }
        if (!ok) {
            errno = e;
            return 0;
        }
    }
    atomic_store(&g_mark, mark);
    return 1;
}

gw_err gw_upstream_connect(gw_upstream *u, const struct sockaddr *sa, socklen_t len, char *reason, size_t reason_len) {
    char addr[80];
    gw_format_addr(sa, addr, sizeof(addr));
    u->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (u->fd < 0) {
        snprintf(reason, reason_len, "cannot open a socket to %s: %s", addr, strerror(errno));
        return gw_upstream_errno_err(errno);
    }
    int one = 1;
    setsockopt(u->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uint32_t mark = atomic_load(&g_mark);
    if (mark != 0 && setsockopt(u->fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) {
        // Unmarked, this connection could be redirected back to us: never send it.
        int e = errno;
        snprintf(reason, reason_len, "cannot set upstream_mark on the socket to %s: %s", addr, strerror(e));
        close(u->fd);
        u->fd = -1;
        return GW_ERR_INTERNAL;
    }
    // TCP Fast Open (RFC 7413): with a cookie from this server, connect() returns at once
    // and our first write (the ClientHello, a CONNECT) leaves in the SYN; without one, the
    // SYN asks for a cookie and the connect goes as any. A refusal then comes to that
    // write's or the handshake's read (classify says it as the connect's).
    if (u->fastopen && setsockopt(u->fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &one, sizeof(one)) != 0) {
        u->fastopen = 0;  // (a kernel without it: an ordinary connect)
    }
    if (connect(u->fd, sa, len) == 0 || errno == EINPROGRESS) {
        return GW_ERR_NONE;
    }
    int e = errno;
    snprintf(reason, reason_len, "connect to %s: %s", addr, strerror(e));
    close(u->fd);
    u->fd = -1;
    return gw_upstream_errno_err(e);
}

gw_err gw_upstream_connect_result(gw_upstream *u, char *reason, size_t reason_len) {
    int e = 0;
    socklen_t l = sizeof(e);
    if (getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &e, &l) != 0) {
        e = errno;
    }
    if (e == 0) {
        return GW_ERR_NONE;
    }
    snprintf(reason, reason_len, "connect: %s", strerror(e));
    return gw_upstream_errno_err(e);
}

// ---- TLS ----

// The read-ahead BIO. BoringSSL reads a record's 5-byte header and then its body, each
// with its own read(); this BIO reads whatever the socket has (up to a pool buffer) and
// serves both from it. The buffer is held only while it has bytes: an idle tunnel keeps
// none. Writes go straight to the socket, except while corked (gw_upstream_cork): then
// they gather in a buffer that one send() takes (the handshake's last flight and the
// first data in one segment).
struct gw_ra_bio {
    int fd;
    gw_buf_pool *pool;
    gw_buf *buf;        // read ahead, not yet taken
    gw_buf *out;        // written while corked and not yet taken by the socket
    uint8_t corked;     // writes gather in |out|
    uint8_t more;       // a FIN follows the next write: MSG_MORE lets them share a segment
    uint8_t fresh;      // nothing was written yet
    uint8_t skip_read;  // the socket cannot hold anything yet (nothing was asked)
};
typedef struct gw_ra_bio ra_bio;

static int ra_read(BIO *bio, char *out, int len) {
    ra_bio *ra = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (len <= 0) {
        return 0;
    }
    if (ra->buf == NULL && ra->skip_read) {
        // The ClientHello just left: a read could only say EAGAIN. The server's answer
        // comes as an event (edge-triggered: it arrives after this). (A read that came
        // back short says nothing of the kind: the FIN behind the data it returned takes
        // another read to see, and its event may be the one already taken.)
        ra->skip_read = 0;
        BIO_set_retry_read(bio);
        errno = EAGAIN;
        return -1;
    }
    if (ra->buf == NULL) {
        if ((size_t)len >= GW_BUF_SIZE) {
            ssize_t n = read(ra->fd, out, (size_t)len);  // as large as a buffer: no copy
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                BIO_set_retry_read(bio);
            }
            return (int)n;
        }
        if ((ra->buf = gw_buf_get(ra->pool)) == NULL) {
            errno = ENOMEM;
            return -1;
        }
        ssize_t n = read(ra->fd, ra->buf->data, GW_BUF_SIZE);
        if (n <= 0) {
            int e = errno;
            gw_buf_put(ra->pool, ra->buf);
            ra->buf = NULL;
            errno = e;
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                BIO_set_retry_read(bio);
            }
            return (int)n;
        }
        ra->buf->end = (uint32_t)n;
    }
    size_t n = gw_buf_len(ra->buf) < (size_t)len ? gw_buf_len(ra->buf) : (size_t)len;
    memcpy(out, ra->buf->data + ra->buf->start, n);
    ra->buf->start += (uint32_t)n;
    if (gw_buf_len(ra->buf) == 0) {
        gw_buf_put(ra->pool, ra->buf);
        ra->buf = NULL;
    }
    return (int)n;
}

// ra_flush sends what the cork gathered. Returns 1 once it all went (or there was
// nothing), 0 if the socket is full (the rest waits), -1 on an error (errno).
static int ra_flush(ra_bio *ra) {
    while (ra->out != NULL && gw_buf_len(ra->out) > 0) {
        ssize_t n = send(ra->fd, ra->out->data + ra->out->start, gw_buf_len(ra->out), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return errno == EAGAIN ? 0 : -1;
        }
        ra->out->start += (uint32_t)n;
    }
    gw_buf_put(ra->pool, ra->out);
    ra->out = NULL;
    return 1;
}

static int ra_write(BIO *bio, const char *in, int len) {
    ra_bio *ra = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (ra->corked) {
        if (ra->out == NULL && (ra->out = gw_buf_get(ra->pool)) == NULL) {
            errno = ENOMEM;
            return -1;
        }
        if (gw_buf_room(ra->out) >= (size_t)len) {
            gw_buf_append(ra->out, in, (size_t)len);
            return len;
        }
        ra->corked = 0;  // more than one buffer: what gathered goes first, then this
    }
    if (ra->out != NULL) {
        int r = ra_flush(ra);
        if (r <= 0) {
            if (r == 0) {
                BIO_set_retry_write(bio);
            }
            return -1;
        }
    }
    ssize_t n = send(ra->fd, in, (size_t)len, MSG_NOSIGNAL | (ra->more ? MSG_MORE : 0));
    if (n < 0 && (errno == EAGAIN || errno == EINTR || errno == EINPROGRESS)) {
        BIO_set_retry_write(bio);  // (EINPROGRESS: a Fast Open SYN that took none of it yet)
    }
    return (int)n;
}

static long ra_ctrl(BIO *bio, int cmd, long larg, void *parg) {
    ra_bio *ra = BIO_get_data(bio);
    switch (cmd) {
        case BIO_CTRL_FLUSH:
            return 1;
        case BIO_CTRL_PENDING:  // bytes read ahead and not yet taken
            return ra->buf != NULL ? (long)gw_buf_len(ra->buf) : 0;
        case BIO_C_GET_FD:  // SSL_get_fd and friends still see the socket
            if (parg != NULL) {
                *(int *)parg = ra->fd;
            }
            return ra->fd;
        default:
            return 0;
    }
}

static int ra_destroy(BIO *bio) {
    ra_bio *ra = BIO_get_data(bio);
    if (ra != NULL) {
        gw_buf_put(ra->pool, ra->buf);
        gw_buf_put(ra->pool, ra->out);
        free(ra);
        BIO_set_data(bio, NULL);
    }
    return 1;
}

static BIO_METHOD *g_ra_method;
static pthread_once_t g_ra_once = PTHREAD_ONCE_INIT;

static void ra_method_init(void) {
    BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOCKET, "mtlsgw read-ahead socket");
    if (m != NULL && BIO_meth_set_read(m, ra_read) && BIO_meth_set_write(m, ra_write) &&
        BIO_meth_set_ctrl(m, ra_ctrl) && BIO_meth_set_destroy(m, ra_destroy)) {
        g_ra_method = m;  // lives as long as the process
    } else {
        BIO_meth_free(m);
    }
}

// ra_bio_new wraps |fd| (not owned) reading ahead into buffers of |pool|, or NULL.
static BIO *ra_bio_new(int fd, gw_buf_pool *pool) {
    pthread_once(&g_ra_once, ra_method_init);
    ra_bio *ra = g_ra_method ? calloc(1, sizeof(*ra)) : NULL;
    BIO *bio = ra ? BIO_new(g_ra_method) : NULL;
    if (bio == NULL) {
        free(ra);
        return NULL;
    }
    ra->fd = fd;
    ra->pool = pool;
    BIO_set_data(bio, ra);
    BIO_set_init(bio, 1);
    return bio;
}

static int on_new_session(SSL *ssl, SSL_SESSION *session) {
    gw_upstream *u = SSL_get_app_data(ssl);
    if (u == NULL) {
        return 0;
    }
    u->ticket_seen = 1;
    if (u->confirmed) {
        gw_sesscache_put(u->sess_key, u->identity->generation, session);
    } else if (u->num_held < sizeof(u->held) / sizeof(u->held[0])) {
        u->held[u->num_held++] = session;
    } else {
        SSL_SESSION_free(session);
    }
    return 1;  // we own the reference
}

void gw_upstream_confirm(gw_upstream *u) {
    u->confirmed = 1;
    if (u->ssl != NULL && u->identity != NULL && gw_upstream_needs_confirm(u)) {
        gw_sesscache_set_accepted(u->sess_key, u->identity->generation, 1);
    }
    for (size_t i = 0; i < u->num_held; i++) {
        gw_sesscache_put(u->sess_key, u->identity->generation, u->held[i]);
    }
    u->num_held = 0;
}

static void on_info(const SSL *ssl, int where, int ret) {
    if (!(where & SSL_CB_READ_ALERT)) {
        return;
    }
    gw_upstream *u = SSL_get_app_data(ssl);
    int level = (ret >> 8) & 0xff, desc = ret & 0xff;
    // close_notify is a warning-level alert and not a failure.
    if (u != NULL && level == SSL3_AL_FATAL) {
        u->alert = desc;
    }
}

// set_presented makes |id| the identity presented and cached under.
static void set_presented(gw_upstream *u, const gw_identity *id) {
    u->identity = id;
    uint8_t in[8 + 32], digest[SHA256_DIGEST_LENGTH];
    memcpy(in, &id->generation, 8);
    memcpy(in + 8, u->where_digest, 32);
    SHA256(in, sizeof(in), digest);
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof(digest); i++) {
        u->sess_key[2 * i] = hex[digest[i] >> 4];
        u->sess_key[2 * i + 1] = hex[digest[i] & 15];
    }
    u->sess_key[2 * sizeof(digest)] = '\0';
}

static void note_cas(gw_upstream *u, const STACK_OF(CRYPTO_BUFFER) * names, const char *choice) {
    size_t cap = 2048, n = 0;
    char *out = malloc(cap);
    if (out == NULL) {
        return;
    }
    out[0] = '\0';
    for (size_t i = 0; names != NULL && i < sk_CRYPTO_BUFFER_num(names) && n + 260 < cap; i++) {
        const CRYPTO_BUFFER *b = sk_CRYPTO_BUFFER_value(names, i);
        const uint8_t *p = CRYPTO_BUFFER_data(b);
        X509_NAME *nm = d2i_X509_NAME(NULL, &p, (long)CRYPTO_BUFFER_len(b));
        char one[256] = "(unparsable name)";
        if (nm != NULL) {
            X509_NAME_oneline(nm, one, sizeof(one));
            X509_NAME_free(nm);
        }
        n += (size_t)snprintf(out + n, cap - n, "%s%s", n ? ", " : "", one);
    }
    snprintf(out + n, cap - n, "%s%s", n ? "; " : "none; ", choice);
    free(u->ca_note);
    u->ca_note = out;
}

// on_cert_request runs when the server asks for our certificate: with several identities,
// the first whose chain is under a CA the server named is presented (none named, or none
// matching: the first, which the SSL was made with).
static int on_cert_request(SSL *ssl, void *arg) {
    gw_upstream *u = SSL_get_app_data(ssl);
    if (u == NULL) {
        return 1;
    }
    u->cert_requested = 1;
    if (u->num_candidates < 2 && !u->describe_cas) {
        return 1;
    }
    const STACK_OF(CRYPTO_BUFFER) *names = SSL_get0_server_requested_CAs(ssl);
    const gw_identity *pick = NULL;
    const gw_identity *first = NULL;  // the first with a certificate (an ACME one may wait for it)
    for (size_t i = 0; i < u->num_candidates && first == NULL; i++) {
        first = u->candidates[i]->pending ? NULL : u->candidates[i];
    }
    for (size_t i = 0; i < u->num_candidates && pick == NULL && names != NULL; i++) {
        if (u->candidates[i]->pending) {
            continue;
        }
        STACK_OF(X509) *chain = NULL;
        SSL_CTX_get0_chain_certs(u->candidates[i]->ctx, &chain);
        if (gw_chain_issued_by_named_ca(u->candidates[i]->leaf, chain, names)) {
            pick = u->candidates[i];
        }
    }
    char choice[300];
    if (pick != NULL) {
        snprintf(choice, sizeof(choice), "presented \"%s\": its chain is under a CA the server named", pick->spec.name);
    } else if (first != NULL) {
        pick = first;
        snprintf(choice, sizeof(choice), "presented \"%s\", the first: %s", pick->spec.name,
                 names == NULL || sk_CRYPTO_BUFFER_num(names) == 0 ? "the server named no CA"
                                                                   : "no identity is under a CA the server named");
    } else {
        pick = u->candidates[0];  // (a tunnel is refused before this when none has a certificate)
        snprintf(choice, sizeof(choice), "no identity has a certificate yet");
    }
    if (u->describe_cas) {
        note_cas(u, names, choice);
    }
    if (pick != u->candidates[0]) {
        // Every signature algorithm a key file may use; BoringSSL keeps those that fit
        // the key (a token identity's list is narrower: what the token offers).
        static const uint16_t any_key[] = {SSL_SIGN_ECDSA_SECP256R1_SHA256, SSL_SIGN_RSA_PSS_RSAE_SHA256,
                                           SSL_SIGN_RSA_PKCS1_SHA256,       SSL_SIGN_ECDSA_SECP384R1_SHA384,
                                           SSL_SIGN_RSA_PSS_RSAE_SHA384,    SSL_SIGN_RSA_PKCS1_SHA384,
                                           SSL_SIGN_ECDSA_SECP521R1_SHA512, SSL_SIGN_RSA_PSS_RSAE_SHA512,
                                           SSL_SIGN_RSA_PKCS1_SHA512,       SSL_SIGN_ED25519,
                                           SSL_SIGN_RSA_PKCS1_SHA1,         SSL_SIGN_ECDSA_SHA1};
        STACK_OF(X509) *chain = NULL;
        SSL_CTX_get0_chain_certs(pick->ctx, &chain);
        if (!SSL_use_certificate(ssl, pick->leaf)) {
            return 0;
        }
        if (pick->p11 != NULL) {
            SSL_set_private_key_method(ssl, &gw_token_key_method);
            if (!SSL_set_signing_algorithm_prefs(ssl, pick->sigalgs, pick->num_sigalgs)) {
                return 0;
            }
        } else {
            SSL_set_private_key_method(ssl, NULL);
            if (!SSL_use_PrivateKey(ssl, SSL_CTX_get0_privatekey(pick->ctx)) ||
                (u->candidates[0]->p11 != NULL &&
                 !SSL_set_signing_algorithm_prefs(ssl, any_key, sizeof(any_key) / sizeof(any_key[0])))) {
                return 0;
            }
        }
        if (!SSL_set1_chain(ssl, chain)) {
            return 0;
        }
    }
    set_presented(u, pick);
    return 1;
}

static const gw_session_taker g_taker = {on_new_session};

void gw_tls_install_callbacks(SSL *ssl) {
    gw_tls_set_session_taker(ssl, &g_taker);
    SSL_set_info_callback(ssl, on_info);
    SSL_set_cert_cb(ssl, on_cert_request, NULL);
}

int gw_upstream_tls_begin(gw_upstream *u, const gw_identity *const *ids, size_t n, const char *server_name,
                          const char *server_uri, const char *where, gw_buf_pool *pool, int early_data) {
    const gw_identity *id = ids[0];
    u->identity = id;
    u->candidates = ids;
    u->num_candidates = n;
    u->ssl = SSL_new(id->ctx);
    if (u->ssl == NULL) {
        return 0;
    }
    if (u->outer != NULL) {
        BIO *bio = gw_parent_tls_bio(u);  // inside the TLS to the parent
        if (bio == NULL) {
            return 0;
        }
        SSL_set_bio(u->ssl, bio, bio);
    } else if (pool != NULL) {
        BIO *bio = ra_bio_new(u->fd, pool);
        if (bio == NULL) {
            return 0;
        }
        SSL_set_bio(u->ssl, bio, bio);  // the SSL owns it (one reference for both)
        u->ra = BIO_get_data(bio);
        u->ra->fresh = 1;
    } else if (!SSL_set_fd(u->ssl, u->fd)) {
        return 0;
    }
    SSL_set_app_data(u->ssl, u);
    gw_tls_install_callbacks(u->ssl);
    if (id->p11 != NULL) {
        SSL_set_private_key_method(u->ssl, &gw_token_key_method);  // the key stays in the token
    }
    u->verify = calloc(1, sizeof(*u->verify));
    if (u->verify == NULL) {
        return 0;
    }
    SSL_set_ex_data(u->ssl, gw_verify_ex_index(), u->verify);
    SSL_set_shed_handshake_config(u->ssl, 1);  // an established tunnel keeps less memory
    SSL_set_connect_state(u->ssl);
    snprintf(u->verify->expected, sizeof(u->verify->expected), "%s", server_uri ? server_uri : server_name);
    snprintf(u->verify->expected_uri, sizeof(u->verify->expected_uri), "%s", server_uri ? server_uri : "");
    // The key names the presented identity (its load generation), the upstream and the
    // names in full; a digest of it keeps every tunnel small and tells them apart as well.
    SHA256((const uint8_t *)where, strlen(where), u->where_digest);
    if (!gw_host_is_ip(server_name) && !SSL_set_tlsext_host_name(u->ssl, server_name)) {
        return 0;
    }
    if (server_uri == NULL && !gw_set_verify_name(u->ssl, server_name)) {
        return 0;
    }
    // A resumed handshake has no CertificateRequest: offer a session of the identity it
    // was made for, which then stays the one presented.
    for (size_t i = 0; i < n; i++) {
        set_presented(u, ids[i]);
        SSL_SESSION *s = gw_sesscache_take(u->sess_key);
        if (s != NULL) {
            if (early_data && SSL_SESSION_early_data_capable(s)) {
                SSL_set_early_data_enabled(u->ssl, 1);
            }
            SSL_set_session(u->ssl, s);
            SSL_SESSION_free(s);
            return 1;
        }
    }
    set_presented(u, id);
    return 1;
}

const char *gw_tls_alert_name(int alert) {
    switch (alert) {
        case 0:
            return "close_notify";
        case 10:
            return "unexpected_message";
        case 20:
            return "bad_record_mac";
        case 22:
            return "record_overflow";
        case 40:
            return "handshake_failure";
        case 42:
            return "bad_certificate";
        case 43:
            return "unsupported_certificate";
        case 44:
            return "certificate_revoked";
        case 45:
            return "certificate_expired";
        case 46:
            return "certificate_unknown";
        case 47:
            return "illegal_parameter";
        case 48:
            return "unknown_ca";
        case 49:
            return "access_denied";
        case 50:
            return "decode_error";
        case 51:
            return "decrypt_error";
        case 70:
            return "protocol_version";
        case 71:
            return "insufficient_security";
        case 80:
            return "internal_error";
        case 86:
            return "inappropriate_fallback";
        case 90:
            return "user_canceled";
        case 109:
            return "missing_extension";
        case 110:
            return "unsupported_extension";
        case 112:
            return "unrecognized_name";
        case 116:
            return "certificate_required";
        case 120:
            return "no_application_protocol";
        default:
            return "unknown_alert";
    }
}

// classify turns a failed SSL call into an error and words.
static gw_step classify(gw_upstream *u, int ret, int during_handshake, gw_err *out_err, char *reason,
                        size_t reason_len) {
    int e = SSL_get_error(u->ssl, ret);
    if (e == SSL_ERROR_WANT_READ) {
        return GW_STEP_WANT_READ;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        return GW_STEP_WANT_WRITE;
    }
    if (e == SSL_ERROR_WANT_PRIVATE_KEY_OPERATION) {
        return GW_STEP_WANT_KEY;
    }
    const char *who = u->identity ? u->identity->spec.name : "?";
    if (u->key_error != NULL) {
        *out_err = GW_ERR_KEY_UNAVAILABLE;
        snprintf(reason, reason_len, "%s", u->key_error);
    } else if (u->verify != NULL && u->verify->failed) {
        *out_err = GW_ERR_TLS_CERTIFICATE;
        snprintf(reason, reason_len, "upstream certificate rejected: %s", u->verify->reason);
    } else if (u->alert >= 0) {
        *out_err = GW_ERR_TLS_ALERT;
        if (u->cert_requested) {
            snprintf(reason, reason_len, "upstream rejected client certificate of identity \"%s\" (TLS alert %s)", who,
                     gw_tls_alert_name(u->alert));
        } else {
            snprintf(reason, reason_len, "upstream sent TLS alert %s", gw_tls_alert_name(u->alert));
        }
    } else if (during_handshake && u->fastopen && e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 &&
               (errno == ECONNREFUSED || errno == ETIMEDOUT || errno == EHOSTUNREACH || errno == ENETUNREACH)) {
        // TCP Fast Open: the connect's outcome came with the ClientHello's.
        *out_err = gw_upstream_errno_err(errno);
        snprintf(reason, reason_len, "connect: %s (TCP Fast Open: the SYN carried the ClientHello)", strerror(errno));
    } else if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) {
        *out_err = GW_ERR_TLS_TERMINATED;
        if (during_handshake) {
            snprintf(reason, reason_len, "upstream closed the connection during the TLS handshake%s%s",
                     ret < 0 && errno ? ": " : "", ret < 0 && errno ? strerror(errno) : "");
        } else {
            snprintf(reason, reason_len,
                     "upstream closed right after the handshake: our certificate was probably rejected "
                     "(identity \"%s\")",
                     who);
        }
    } else {
        *out_err = GW_ERR_TLS_PROTOCOL;
        uint32_t code = ERR_peek_error();
        const char *r = code ? ERR_reason_error_string(code) : NULL;
        snprintf(reason, reason_len, "TLS %s failed: %s", during_handshake ? "handshake" : "connection",
                 r ? r : strerror(errno));
    }
    ERR_clear_error();
    return GW_STEP_FAILED;
}

void gw_upstream_cork(gw_upstream *u) {
    if (u->ra != NULL) {
        u->ra->corked = 1;
    }
}

int gw_upstream_uncork(gw_upstream *u) {
    if (u->ra == NULL) {
        return 1;
    }
    u->ra->corked = 0;
    int r = ra_flush(u->ra);
    if (r < 0) {
        gw_buf_put(u->ra->pool, u->ra->out);  // the connection failed: its next read says so
        u->ra->out = NULL;
    }
    return r;
}

void gw_upstream_fin_follows(gw_upstream *u, int on) {
    if (u->ra != NULL) {
        u->ra->more = on != 0;
    }
}

int gw_upstream_out_pending(const gw_upstream *u) {
    return u->ra != NULL && (u->ra->corked || u->ra->out != NULL);
}

gw_step gw_upstream_tls_step(gw_upstream *u, gw_err *out_err, char *reason, size_t reason_len) {
    if (u->ra != NULL && u->ra->fresh) {
        u->ra->fresh = 0;
        u->ra->skip_read = 1;  // this call writes the ClientHello: no answer can be there yet
    }
    int ret = SSL_do_handshake(u->ssl);
    if (u->ra != NULL) {
        u->ra->skip_read = 0;
    }
    if (ret == 1) {
        if (SSL_in_early_data(u->ssl)) {
            // The ClientHello left with a 0-RTT-capable session: early data may follow.
            // Verification stays ready, for the full handshake a refusal may lead to.
            u->early = GW_EARLY_SENDING;
            return GW_STEP_DONE;
        }
        free_verify(u);  // verified; no renegotiation will verify again
        return GW_STEP_DONE;
    }
    return classify(u, ret, 1, out_err, reason, reason_len);
}

gw_step gw_upstream_early_settle(gw_upstream *u, gw_err *out_err, char *reason, size_t reason_len) {
    if (u->early == GW_EARLY_SENDING) {
        int ret = SSL_do_handshake(u->ssl);
        if (ret == 1) {
            u->early = SSL_early_data_accepted(u->ssl) ? GW_EARLY_ACCEPTED : GW_EARLY_REJECTED;
        } else if (SSL_get_error(u->ssl, ret) == SSL_ERROR_EARLY_DATA_REJECTED) {
            // The connection goes on as one that never sent early data: the handshake
            // completes (resumed, or full and verified as any), then the copy is resent.
            SSL_reset_early_data_reject(u->ssl);
            u->early = GW_EARLY_REJECTED;
            u->early_resent = 0;
        } else {
            return classify(u, ret, 1, out_err, reason, reason_len);
        }
    }
    if (u->early == GW_EARLY_REJECTED) {
        int ret = SSL_do_handshake(u->ssl);
        if (ret != 1) {
            return classify(u, ret, 1, out_err, reason, reason_len);
        }
        while (u->early_resent < u->early_len) {
            int w = SSL_write(u->ssl, u->early_copy + u->early_resent, (int)(u->early_len - u->early_resent));
            if (w <= 0) {
                return classify(u, w, 0, out_err, reason, reason_len);
            }
            u->early_resent += (size_t)w;
        }
        u->early = GW_EARLY_RESENT;
    }
    free_verify(u);
    free(u->early_copy);
    u->early_copy = NULL;
    u->early_len = 0;
    return GW_STEP_DONE;
}

const char *gw_upstream_early_text(const gw_upstream *u) {
    switch (u->early) {
        case GW_EARLY_ACCEPTED:
            return "accepted";
        case GW_EARLY_REJECTED:
        case GW_EARLY_RESENT:
            return "rejected";
        default:
            return "-";
    }
}

int gw_upstream_needs_confirm(const gw_upstream *u) {
    return !SSL_session_reused(u->ssl) && u->cert_requested && SSL_version(u->ssl) >= TLS1_3_VERSION;
}

int gw_upstream_known_accepted(const gw_upstream *u) {
    return u->identity != NULL && gw_sesscache_accepted(u->sess_key);
}

void gw_upstream_rejected(gw_upstream *u) {
    if (u->identity != NULL) {
        gw_sesscache_set_accepted(u->sess_key, u->identity->generation, 0);
    }
}

gw_err gw_upstream_read_failure(gw_upstream *u, int ret, char *reason, size_t reason_len) {
    gw_err err = GW_ERR_TLS_PROTOCOL;
    classify(u, ret, 0, &err, reason, reason_len);
    return err;
}

gw_step gw_upstream_confirm_step(gw_upstream *u, gw_err *out_err, char *reason, size_t reason_len) {
    uint8_t b;
    int ret = SSL_peek(u->ssl, &b, 1);
    if (ret > 0) {
        return GW_STEP_DONE;
    }
    return classify(u, ret, 0, out_err, reason, reason_len);
}
