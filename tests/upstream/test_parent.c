// The conversation with an https:// parent proxy against an in-process BoringSSL server
// over socketpair(): the CONNECT request inside TLS (with Basic credentials), an answer
// split across two records with the destination's first bytes behind it in the second
// (read first by the relay), a 407, a parent certificate we do not trust (refused before
// anything is sent), and the rule's TLS nested inside the parent's: a record the parent's
// TLS holds decrypted while the socket is empty is reported as buffered (edge-triggered
// readiness would not say it again). No sleeps: every step is driven by hand.
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/selfsigned.h"

#include "gateway/upstream/parent.h"
#include "gateway/upstream/transport.h"

static SSL_CTX *parent_ctx, *dest_ctx, *inner_client_ctx;
static gw_identity *trusting, *untrusting;
static char trust_path[64], other_path[64];

typedef struct {
    int fds[2];   // [0] the gateway's socket to the parent, [1] the parent's
    SSL *parent;  // the parent's TLS server
    gw_upstream u;
    pol_via v;
    gw_parent_talk talk;
    char reason[900];
    gw_err err;
} pair;

static void nonblock(int fd) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static SSL_CTX *server_ctx(const char *cn, const char *san, const char *pem_out) {
    X509 *x = NULL;
    SSL_CTX *ctx = selfsigned_server_ctx(cn, san, &x);
    assert_non_null(ctx);
    if (pem_out != NULL) {
        FILE *f = fopen(pem_out, "w");
        assert_non_null(f);
        assert_true(PEM_write_X509(f, x));
        fclose(f);
    }
    X509_free(x);
    return ctx;
}

static gw_identity *verify_only(const char *trust) {
    gw_identity_spec spec;
    memset(&spec, 0, sizeof(spec));
    spec.name = strdup("parent");
    spec.trust = strdup(trust);
    spec.verify_only = 1;
    spec.tls_min = TLS1_2_VERSION;
    spec.tls_max = TLS1_3_VERSION;
    spec.verify_depth = 4;
    char err[600];
    gw_identity *id = gw_identity_load(&spec, err, sizeof(err));
    if (id == NULL) {
        fail_msg("%s", err);
    }
    return id;
}

static int setup(void **state) {
    signal(SIGPIPE, SIG_IGN);
    snprintf(trust_path, sizeof(trust_path), "/tmp/mtlsgw-test-parent-%d.pem", (int)getpid());
    snprintf(other_path, sizeof(other_path), "/tmp/mtlsgw-test-parent-%d-other.pem", (int)getpid());
    parent_ctx = server_ctx("egress.test", "DNS:egress.test", trust_path);
    SSL_CTX *stranger = server_ctx("stranger.test", "DNS:egress.test", other_path);
    SSL_CTX_free(stranger);
    dest_ctx = server_ctx("orders.test", NULL, NULL);
    inner_client_ctx = SSL_CTX_new(TLS_method());
    SSL_CTX_set_verify(inner_client_ctx, SSL_VERIFY_NONE, NULL);  // (the rule's verification is not tested here)
    trusting = verify_only(trust_path);
    untrusting = verify_only(other_path);
    return 0;
}

static int teardown(void **state) {
    SSL_CTX_free(parent_ctx);
    SSL_CTX_free(dest_ctx);
    SSL_CTX_free(inner_client_ctx);
    gw_identity_free(trusting);
    gw_identity_free(untrusting);
    unlink(trust_path);
    unlink(other_path);
    return 0;
}

static void begin(pair *p, gw_identity *tls, const char *user) {
    memset(p, 0, sizeof(*p));
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p->fds), 0);
    nonblock(p->fds[0]);
    nonblock(p->fds[1]);
    gw_upstream_init(&p->u);
    p->u.fd = p->fds[0];
    p->v.kind = POL_VIA_HTTP;
    p->v.text = (char *)"https://egress.test:3129";
    p->v.host = (char *)"egress.test";
    p->v.port = 3129;
    p->v.tls = tls;
    p->v.user = user ? (char *)"egress" : NULL;
    p->v.password = user ? (char *)user : NULL;
    gw_parent_talk_init(&p->talk);
    p->parent = SSL_new(parent_ctx);
    SSL_set_fd(p->parent, p->fds[1]);
    SSL_set_accept_state(p->parent);
}

static void done(pair *p) {
    SSL_free(p->parent);
    close(p->fds[1]);
    gw_upstream_close(&p->u);  // frees the parent's TLS too, closes fds[0]
}

static gw_step step(pair *p) {
    return gw_parent_step(&p->talk, &p->u, &p->v, "orders.test:443", &p->err, p->reason, sizeof(p->reason));
}

// converse runs both sides until the parent read a whole CONNECT head (into |head|), or
// the gateway's side stopped waiting. Returns the gateway's last step.
static gw_step converse(pair *p, char *head, size_t cap) {
    size_t n = 0;
    gw_step st = GW_STEP_WANT_READ;
    for (int i = 0; i < 50; i++) {
        st = step(p);
        if (st == GW_STEP_FAILED || st == GW_STEP_DONE) {
            return st;
        }
        if (!SSL_is_init_finished(p->parent)) {
            SSL_do_handshake(p->parent);
            continue;
        }
        int r = SSL_read(p->parent, head + n, (int)(cap - 1 - n));
        n += r > 0 ? (size_t)r : 0;
        head[n] = '\0';
        if (strstr(head, "\r\n\r\n") != NULL) {
            return step(p);
        }
    }
    return st;
}

static void connect_inside_tls_with_credentials(void **state) {
    pair p;
    begin(&p, trusting, "s3cret");
    char head[2048] = "";
    assert_int_equal(converse(&p, head, sizeof(head)), GW_STEP_WANT_READ);
    assert_non_null(strstr(head, "CONNECT orders.test:443 HTTP/1.1\r\n"));
    assert_non_null(strstr(head, "Proxy-Authorization: Basic ZWdyZXNzOnMzY3JldA==\r\n"));  // egress:s3cret
    // The answer in two records; the destination's banner behind it in the second.
    const char *a = "HTTP/1.1 200 Connection established\r\n", *b = "\r\nSSH-2.0-banner\r\n";
    assert_int_equal(SSL_write(p.parent, a, (int)strlen(a)), (int)strlen(a));
    assert_int_equal(step(&p), GW_STEP_WANT_READ);  // half a head
    assert_int_equal(SSL_write(p.parent, b, (int)strlen(b)), (int)strlen(b));
    assert_int_equal(step(&p), GW_STEP_DONE);
    assert_string_equal(p.talk.said, "200 Connection established");
    assert_true(gw_upstream_buffered(&p.u));  // the banner, held by us (the socket is empty)
    uint8_t buf[64];
    char why[300];
    gw_io io = gw_upstream_read(&p.u, buf, sizeof(buf), 0, why, sizeof(why));  // a direct rule's relay
    assert_int_equal(io.kind, GW_IO_DATA);
    assert_int_equal(io.n, strlen("SSH-2.0-banner\r\n"));
    assert_memory_equal(buf, "SSH-2.0-banner\r\n", io.n);
    assert_false(gw_upstream_buffered(&p.u));
    io = gw_upstream_read(&p.u, buf, sizeof(buf), 0, why, sizeof(why));
    assert_int_equal(io.kind, GW_IO_WANT_READ);
    io = gw_upstream_write(&p.u, (const uint8_t *)"hello", 5, why, sizeof(why));
    assert_int_equal(io.kind, GW_IO_DATA);
    assert_int_equal(SSL_read(p.parent, buf, sizeof(buf)), 5);
    assert_memory_equal(buf, "hello", 5);
    done(&p);
}

static void auth_required_over_tls(void **state) {
    pair p;
    begin(&p, trusting, NULL);
    char head[2048] = "";
    assert_int_equal(converse(&p, head, sizeof(head)), GW_STEP_WANT_READ);
    assert_null(strstr(head, "Proxy-Authorization"));
    const char *a = "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n";
    SSL_write(p.parent, a, (int)strlen(a));
    assert_int_equal(step(&p), GW_STEP_FAILED);
    assert_int_equal(p.err, GW_ERR_VIA_AUTH);
    assert_non_null(strstr(p.reason, "wants credentials (via_credentials_file) for CONNECT orders.test:443: 407"));
    done(&p);
}

static void untrusted_parent_is_refused(void **state) {
    pair p;
    begin(&p, untrusting, "s3cret");
    char head[2048] = "";
    assert_int_equal(converse(&p, head, sizeof(head)), GW_STEP_FAILED);
    assert_int_equal(p.err, GW_ERR_VIA_CERT);
    assert_non_null(strstr(p.reason, "parent proxy https://egress.test:3129: its certificate was rejected"));
    assert_string_equal(head, "");  // nothing was sent to it
    done(&p);
}

// pump moves what |from| wrote into its BIO pair out through the parent's TLS as one
// record (or back): the destination's TLS inside the parent's.
static void to_parent(pair *p, BIO *net) {
    uint8_t buf[16384];
    int n = BIO_read(net, buf, sizeof(buf));
    if (n > 0) {
        assert_int_equal(SSL_write(p->parent, buf, n), n);
    }
}

static void from_parent(pair *p, BIO *net) {
    uint8_t buf[16384];
    int n = SSL_read(p->parent, buf, sizeof(buf));
    if (n > 0) {
        assert_int_equal(BIO_write(net, buf, n), n);
    }
}

// nested: a tunnel through the parent, and the destination's TLS server whose records
// travel inside the parent's TLS (*|net| is its side of the wire), handshake done.
static void nested(pair *p, SSL **out_dest, BIO **out_net) {
    begin(p, trusting, "s3cret");
    char head[2048] = "";
    assert_int_equal(converse(p, head, sizeof(head)), GW_STEP_WANT_READ);
    const char *ok = "HTTP/1.1 200 Connection established\r\n\r\n";
    SSL_write(p->parent, ok, (int)strlen(ok));
    assert_int_equal(step(p), GW_STEP_DONE);
    BIO *dest_bio = NULL, *net = NULL;
    assert_true(BIO_new_bio_pair(&dest_bio, 1 << 20, &net, 1 << 20));
    SSL *dest = SSL_new(dest_ctx);
    SSL_set_bio(dest, dest_bio, dest_bio);
    SSL_set_accept_state(dest);
    p->u.ssl = SSL_new(inner_client_ctx);
    BIO *nest = gw_parent_tls_bio(&p->u);
    assert_non_null(nest);
    SSL_set_bio(p->u.ssl, nest, nest);
    SSL_set_connect_state(p->u.ssl);
    int c = 0, s = 0;
    for (int i = 0; i < 20 && !(c == 1 && s == 1); i++) {
        if (c != 1) {
            c = SSL_do_handshake(p->u.ssl);
        }
        from_parent(p, net);
        if (s != 1) {
            s = SSL_do_handshake(dest);
        }
        to_parent(p, net);
    }
    assert_int_equal(c, 1);
    assert_int_equal(s, 1);
    *out_dest = dest;
    *out_net = net;
}

static void nested_tls_and_what_the_parent_holds(void **state) {
    pair p;
    SSL *dest;
    BIO *net;
    nested(&p, &dest, &net);
    // Two records of the destination's in one record of the parent's.
    assert_int_equal(SSL_write(dest, "first", 5), 5);
    assert_int_equal(SSL_write(dest, "second", 6), 6);
    to_parent(&p, net);
    uint8_t buf[64];
    char why[300];
    gw_io io = gw_upstream_read(&p.u, buf, sizeof(buf), 0, why, sizeof(why));
    assert_int_equal(io.kind, GW_IO_DATA);
    assert_int_equal(io.n, 5);
    assert_memory_equal(buf, "first", 5);
    assert_true(gw_upstream_buffered(&p.u));  // "second" waits in the parent's TLS, not in the socket
    io = gw_upstream_read(&p.u, buf, sizeof(buf), 0, why, sizeof(why));
    assert_int_equal(io.kind, GW_IO_DATA);
    assert_memory_equal(buf, "second", 6);
    assert_false(gw_upstream_buffered(&p.u));
    // Our side: out through both layers.
    io = gw_upstream_write(&p.u, (const uint8_t *)"request", 7, why, sizeof(why));
    assert_int_equal(io.kind, GW_IO_DATA);
    from_parent(&p, net);
    assert_int_equal(SSL_read(dest, buf, sizeof(buf)), 7);
    assert_memory_equal(buf, "request", 7);
    // Our end: close_notify inside, then to the parent.
    io = gw_upstream_shutdown(&p.u, 0);
    assert_int_equal(io.kind, GW_IO_DATA);
    from_parent(&p, net);
    assert_int_equal(SSL_read(dest, buf, sizeof(buf)), 0);
    assert_int_equal(SSL_get_error(dest, 0), SSL_ERROR_ZERO_RETURN);
    assert_int_equal(SSL_read(p.parent, buf, sizeof(buf)), 0);
    assert_int_equal(SSL_get_error(p.parent, 0), SSL_ERROR_ZERO_RETURN);
    SSL_free(dest);
    BIO_free(net);
    done(&p);
}

// bulk_through_both_layers: 4 MiB from the rule's TLS through the parent's to the
// destination, the socket filling up on the way (the parent reads every other turn), so
// writes are retried through both layers; every byte arrives, in order.
static void bulk_through_both_layers(void **state) {
    pair p;
    SSL *dest;
    BIO *net;
    nested(&p, &dest, &net);
    static uint8_t chunk[16384], in[16384];
    for (size_t i = 0; i < sizeof(chunk); i++) {
        chunk[i] = (uint8_t)(i * 7 + 3);
    }
    const size_t total = (size_t)4 << 20;
    size_t sent = 0, got = 0;
    int waits = 0, misplaced = 0;
    char why[300];
    for (int turn = 0; got < total && turn < 200000; turn++) {
        if (sent < total) {
            size_t off = sent % sizeof(chunk), n = sizeof(chunk) - off;
            n = n < total - sent ? n : total - sent;
            gw_io io = gw_upstream_write(&p.u, chunk + off, n, why, sizeof(why));
            if (io.kind == GW_IO_DATA) {
                sent += io.n;
            } else {
                assert_int_equal(io.kind, GW_IO_WANT_WRITE);
                waits++;
            }
        }
        if (turn % 2 == 0 || sent == total) {
            from_parent(&p, net);
        }
        int r;
        while ((r = SSL_read(dest, in, sizeof(in))) > 0) {
            for (int k = 0; k < r; k++) {
                misplaced += in[k] != chunk[(got + (size_t)k) % sizeof(chunk)];
            }
            got += (size_t)r;
        }
    }
    assert_int_equal(got, total);
    assert_int_equal(misplaced, 0);
    assert_true(waits > 0);  // the socket was full at times: retried writes went through
    SSL_free(dest);
    BIO_free(net);
    done(&p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(connect_inside_tls_with_credentials),
        cmocka_unit_test(auth_required_over_tls),
        cmocka_unit_test(untrusted_parent_is_refused),
        cmocka_unit_test(nested_tls_and_what_the_parent_holds),
        cmocka_unit_test(bulk_through_both_layers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
