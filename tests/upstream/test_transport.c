// The upstream transport against an in-process BoringSSL server over socketpair(): data
// both ways, nothing yet (want-read), close_notify (a clean end), a close without it (a
// truncated end), a fatal alert in words, a server that ends an unconfirmed connection
// (a rejection, when asked to judge), close_notify sent by shutdown, a write to a closed
// peer, and the plain transport's end and failure. No sleeps: every step is driven by
// hand on non-blocking sockets.
#include <errno.h>
#include <fcntl.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/selfsigned.h"

#include "gateway/upstream/transport.h"

static SSL_CTX *server_ctx, *client_ctx;

typedef struct {
    int fds[2];  // [0] ours (the gateway's upstream socket), [1] the server's
    SSL *server;
    gw_upstream u;
} pair;

static void nonblock(int fd) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

// make_server_ctx: a TLS 1.3 server with a fresh P-256 key and a self-signed certificate.
static SSL_CTX *make_server_ctx(void) {
    SSL_CTX *ctx = selfsigned_server_ctx("server.test", NULL, NULL);
    assert_non_null(ctx);
    return ctx;
}

static int setup(void **state) {
    signal(SIGPIPE, SIG_IGN);  // as the gateway does: a write to a closed peer is an error, not a signal
    server_ctx = make_server_ctx();
    client_ctx = SSL_CTX_new(TLS_method());
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL);  // verification is the handshake's, not the transport's
    return 0;
}

static int teardown(void **state) {
    SSL_CTX_free(server_ctx);
    SSL_CTX_free(client_ctx);
    return 0;
}

// connected: a finished handshake over a socketpair, confirmed unless |unconfirmed|.
static void connected(pair *p, int unconfirmed) {
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p->fds), 0);
    nonblock(p->fds[0]);
    nonblock(p->fds[1]);
    gw_upstream_init(&p->u);
    p->u.fd = p->fds[0];
    p->u.ssl = SSL_new(client_ctx);
    SSL_set_fd(p->u.ssl, p->fds[0]);
    SSL_set_app_data(p->u.ssl, &p->u);
    gw_tls_install_callbacks(p->u.ssl);  // the alert callback
    SSL_set_connect_state(p->u.ssl);
    p->server = SSL_new(server_ctx);
    SSL_set_fd(p->server, p->fds[1]);
    SSL_set_accept_state(p->server);
    int c = 0, s = 0;
    for (int i = 0; i < 20 && !(c == 1 && s == 1); i++) {
        if (c != 1) {
            c = SSL_do_handshake(p->u.ssl);
        }
        if (s != 1) {
            s = SSL_do_handshake(p->server);
        }
    }
    assert_int_equal(c, 1);
    assert_int_equal(s, 1);
    p->u.confirmed = !unconfirmed;
}

static void done(pair *p) {
    SSL_free(p->server);
    if (p->fds[1] >= 0) {
        close(p->fds[1]);
    }
    gw_upstream_close(&p->u);  // frees the SSL, closes fds[0]
}

// server_close closes the server's socket without close_notify.
static void server_close(pair *p) {
    close(p->fds[1]);
    p->fds[1] = -1;
}

static gw_io read_io(pair *p, uint8_t *buf, size_t n, int judge, char *reason) {
    reason[0] = '\0';
    return gw_upstream_read(&p->u, buf, n, judge, reason, 300);
}

static void data_both_ways(void **state) {
    pair p;
    connected(&p, 0);
    assert_int_equal(SSL_write(p.server, "hello", 5), 5);
    uint8_t buf[64];
    char reason[300];
    gw_io io = read_io(&p, buf, sizeof(buf), 0, reason);
    assert_int_equal(io.kind, GW_IO_DATA);
    assert_int_equal(io.n, 5);
    assert_memory_equal(buf, "hello", 5);
    io = gw_upstream_write(&p.u, (const uint8_t *)"ping", 4, reason, sizeof(reason));
    assert_int_equal(io.kind, GW_IO_DATA);
    assert_int_equal(io.n, 4);
    char got[8];
    assert_int_equal(SSL_read(p.server, got, sizeof(got)), 4);
    assert_memory_equal(got, "ping", 4);
    done(&p);
}

static void nothing_yet_wants_read(void **state) {
    pair p;
    connected(&p, 0);
    uint8_t buf[64];
    char reason[300];
    assert_int_equal(read_io(&p, buf, sizeof(buf), 0, reason).kind, GW_IO_WANT_READ);
    done(&p);
}

static void close_notify_is_a_clean_end(void **state) {
    pair p;
    connected(&p, 0);
    SSL_shutdown(p.server);
    uint8_t buf[64];
    char reason[300];
    gw_io io = read_io(&p, buf, sizeof(buf), 0, reason);
    assert_int_equal(io.kind, GW_IO_EOF);
    assert_false(io.truncated);
    done(&p);
}

static void close_without_notify_is_truncated(void **state) {
    pair p;
    connected(&p, 0);
    server_close(&p);
    uint8_t buf[64];
    char reason[300];
    gw_io io = read_io(&p, buf, sizeof(buf), 0, reason);
    assert_int_equal(io.kind, GW_IO_EOF);
    assert_true(io.truncated);
    done(&p);
}

static void fatal_alert_fails_in_words(void **state) {
    pair p;
    connected(&p, 0);
    SSL_send_fatal_alert(p.server, SSL_AD_INTERNAL_ERROR);
    uint8_t buf[64];
    char reason[300];
    gw_io io = read_io(&p, buf, sizeof(buf), 0, reason);
    assert_int_equal(io.kind, GW_IO_FAILED);
    assert_int_equal(io.result, GW_RESULT_UPSTREAM_ERROR);
    assert_string_equal(reason, "upstream sent TLS alert internal_error");
    done(&p);
}

static void unconfirmed_close_is_judged_a_rejection(void **state) {
    pair p;
    connected(&p, 1);
    server_close(&p);
    uint8_t buf[64];
    char reason[300];
    gw_io io = read_io(&p, buf, sizeof(buf), 1, reason);
    assert_int_equal(io.kind, GW_IO_FAILED);
    assert_int_equal(io.result, GW_RESULT_CONNECTION_TERMINATED);
    assert_non_null(strstr(reason, "our certificate was probably rejected"));
    done(&p);
}

static void unconfirmed_close_unjudged_is_an_end(void **state) {
    pair p;
    connected(&p, 1);
    server_close(&p);
    uint8_t buf[64];
    char reason[300];
    assert_int_equal(read_io(&p, buf, sizeof(buf), 0, reason).kind, GW_IO_EOF);
    done(&p);
}

static void first_data_confirms(void **state) {
    pair p;
    connected(&p, 1);
    assert_int_equal(SSL_write(p.server, "x", 1), 1);
    uint8_t buf[8];
    char reason[300];
    assert_int_equal(read_io(&p, buf, sizeof(buf), 1, reason).kind, GW_IO_DATA);
    assert_true(p.u.confirmed);
    done(&p);
}

static void shutdown_sends_close_notify(void **state) {
    pair p;
    connected(&p, 0);
    assert_int_equal(gw_upstream_shutdown(&p.u, 0).kind, GW_IO_DATA);
    char got[8];
    int r = SSL_read(p.server, got, sizeof(got));
    assert_int_equal(r, 0);
    assert_int_equal(SSL_get_error(p.server, r), SSL_ERROR_ZERO_RETURN);
    done(&p);
}

static void write_to_a_closed_peer_fails(void **state) {
    pair p;
    connected(&p, 0);
    server_close(&p);
    char reason[300] = "";
    gw_io io = gw_upstream_write(&p.u, (const uint8_t *)"data", 4, reason, sizeof(reason));
    assert_int_equal(io.kind, GW_IO_FAILED);
    assert_int_equal(io.result, GW_RESULT_UPSTREAM_ERROR);
    assert_non_null(strstr(reason, "TLS write to upstream failed"));
    done(&p);
}

static void plain_end_and_failure(void **state) {
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    nonblock(fds[0]);
    gw_upstream u;
    gw_upstream_init(&u);
    u.fd = fds[0];
    uint8_t buf[8];
    char reason[300] = "";
    assert_int_equal(gw_upstream_read(&u, buf, sizeof(buf), 0, reason, sizeof(reason)).kind, GW_IO_WANT_READ);
    assert_int_equal(write(fds[1], "ab", 2), 2);
    gw_io io = gw_upstream_read(&u, buf, sizeof(buf), 0, reason, sizeof(reason));
    assert_int_equal(io.kind, GW_IO_DATA);
    assert_int_equal(io.n, 2);
    close(fds[1]);
    assert_int_equal(gw_upstream_read(&u, buf, sizeof(buf), 0, reason, sizeof(reason)).kind, GW_IO_EOF);
    io = gw_upstream_write(&u, (const uint8_t *)"x", 1, reason, sizeof(reason));
    assert_int_equal(io.kind, GW_IO_FAILED);
    assert_int_equal(io.result, GW_RESULT_UPSTREAM_RESET);
    assert_string_equal(reason, strerror(EPIPE));
    gw_upstream_close(&u);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(data_both_ways),
        cmocka_unit_test(nothing_yet_wants_read),
        cmocka_unit_test(close_notify_is_a_clean_end),
        cmocka_unit_test(close_without_notify_is_truncated),
        cmocka_unit_test(fatal_alert_fails_in_words),
        cmocka_unit_test(unconfirmed_close_is_judged_a_rejection),
        cmocka_unit_test(unconfirmed_close_unjudged_is_an_end),
        cmocka_unit_test(first_data_confirms),
        cmocka_unit_test(shutdown_sends_close_notify),
        cmocka_unit_test(write_to_a_closed_peer_fails),
        cmocka_unit_test(plain_end_and_failure),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
