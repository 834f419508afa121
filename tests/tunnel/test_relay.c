// The relay and dial over real loopback TCP, with no nginx: a forward listener's tunnel to
// an upstream this test accepts itself. Half-close passes on both ways; backpressure holds
// the client while the upstream reads nothing and then delivers every byte in order; the
// dial falls back from a refused address to the next; an upstream's reset reaches the
// client only after the bytes it sent before; an http_proxy exchange is rewritten to
// origin-form, its chunked response passed whole, the next request to the same
// destination rides the same upstream, and is sent again on a new connection when the
// server closes that one without a response. The loop runs until a condition holds (no
// fixed sleeps), bounded so a broken build fails instead of hanging.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/base/log.h"
#include "gateway/tunnel/internal.h"  // the tunnel's dial record, to see which address it used
#include "gateway/tunnel/tunnel.h"
#include "tests/config_text.h"

static gw_tunnel_host host;
static int up_listener = -1;
static uint16_t up_port;

static void on_closed(gw_tunnel_host *h) {}

static void on_stop(gw_loop *loop, gw_timer *t) {
    gw_loop_stop(loop);
}

static void run_for(int ms) {
    gw_timer t;
    gw_timer_init(&t, on_stop, NULL);
    gw_timer_start(host.loop, &t, (uint64_t)ms);
    gw_loop_run(host.loop);
    gw_timer_stop(host.loop, &t);
}

// until runs the loop in short turns until |cond| holds; fails the test after 10 s.
#define until(cond)                       \
    do {                                  \
        int turns_ = 0;                   \
        while (!(cond)) {                 \
            assert_true(++turns_ < 2000); \
            run_for(5);                   \
        }                                 \
    } while (0)

static int nonblock(int fd) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static int listen_loopback(uint16_t *port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int small = 65536;  // the test's ends of the connections buffer little
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    socklen_t l = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    *port = ntohs(a.sin_port);
    return fd;
}

static pol_config *load(void) {
    // up.test resolves to 127.0.0.2 (nobody listens there: refused) and then 127.0.0.1.
    pol_config *cfg = config_from_text(
        "listen = ( { name = \"f\"; address = \"127.0.0.1:1\"; forward = \"up.test:80\"; },\n"
        "           { name = \"p\"; address = \"127.0.0.1:2\"; } );\n"
        "resolver = { hosts = ( { name = \"up.test\"; address = \"127.0.0.2\"; },\n"
        "                       { name = \"up.test\"; address = \"127.0.0.1\"; } ); };\n"
        "rules = ( { match = \"up.test:80\"; action = \"direct\"; upstream_port = %u; } );\n"
        "deny_addresses = [ \"0.0.0.0/8\" ];\n",
        up_port);
    assert_non_null(cfg);
    return cfg;
}

typedef struct {
    int client;    // the test's end of the client connection
    int upstream;  // the test's end of the upstream connection
} conn;

// open_tunnel: a client connection accepted by the forward listener, and the upstream
// connection it made, accepted here.
static conn open_tunnel_on(size_t listener) {
    uint16_t port;
    int l = listen_loopback(&port);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int c = socket(AF_INET, SOCK_STREAM, 0);
    int small = 65536;
    setsockopt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof(a)), 0);
    int s = accept4(l, NULL, NULL, SOCK_NONBLOCK);
    assert_true(s >= 0);
    close(l);
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in peer;
    socklen_t pl = sizeof(peer);
    getpeername(s, (struct sockaddr *)&peer, &pl);
    gw_client_info client = {(struct sockaddr *)&peer, GW_CALLER_NONE, -1, NULL, 0, 0};
    gw_tunnel_accept(&host, s, &client, listener, GW_ERR_NONE);
    return (conn){nonblock(c), -1};
}

static conn open_tunnel(void) {
    conn k = open_tunnel_on(0);
    until((k.upstream = accept4(up_listener, NULL, NULL, SOCK_NONBLOCK)) >= 0);
    return k;
}

// read_until reads from |fd| into |buf| (running the loop between tries) until |end|
// appears; returns the length.
static size_t read_until(int fd, char *buf, size_t cap, const char *end) {
    size_t got = 0;
    buf[0] = '\0';
    for (int turns = 0; strstr(buf, end) == NULL; turns++) {
        assert_true(turns < 2000 && got < cap - 1);
        ssize_t r = read(fd, buf + got, cap - 1 - got);
        if (r > 0) {
            got += (size_t)r;
            buf[got] = '\0';
        } else {
            assert_true(r < 0 && errno == EAGAIN);  // no early end
            run_for(5);
        }
    }
    return got;
}

// read_all reads from |fd| (running the loop between tries) until |n| bytes or EOF.
static size_t read_all(int fd, char *buf, size_t n, int *eof) {
    size_t got = 0;
    *eof = 0;
    for (int turns = 0; got < n && !*eof; turns++) {
        assert_true(turns < 2000);
        ssize_t r = read(fd, buf + got, n - got);
        if (r > 0) {
            got += (size_t)r;
        } else if (r == 0) {
            *eof = 1;
        } else {
            assert_int_equal(errno, EAGAIN);
            run_for(5);
        }
    }
    return got;
}

static void finish_tunnel(conn *k) {
    close(k->client);
    close(k->upstream);
    until(host.tunnels == NULL);
}

// fresh: no tunnel left over from a test that failed half way.
static int fresh(void **state) {
    while (host.tunnels != NULL) {
        gw_tunnel_abort(host.tunnels, "next test");
    }
    return 0;
}

static void half_close_passes_on_both_ways(void **state) {
    conn k = open_tunnel();
    assert_int_equal(write(k.client, "hello", 5), 5);
    shutdown(k.client, SHUT_WR);
    char buf[16];
    int eof;
    assert_int_equal(read_all(k.upstream, buf, sizeof(buf), &eof), 5);
    assert_true(eof);  // the client's FIN, passed on
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(write(k.upstream, "world", 5), 5);  // the other way still flows
    shutdown(k.upstream, SHUT_WR);
    assert_int_equal(read_all(k.client, buf, sizeof(buf), &eof), 5);
    assert_true(eof);
    assert_memory_equal(buf, "world", 5);
    until(host.tunnels == NULL);  // both ways ended: the tunnel closed itself
    close(k.client);
    close(k.upstream);
}

static void dial_falls_back_to_the_next_address(void **state) {
    conn k = open_tunnel();
    gw_tunnel *t = host.tunnels;
    assert_non_null(t);
    assert_int_equal(t->dial.num_addrs, 2);
    assert_int_equal(t->dial.next_addr, 2);  // 127.0.0.2 refused, 127.0.0.1 taken
    char want[32];
    snprintf(want, sizeof(want), "127.0.0.1:%u", up_port);
    assert_string_equal(t->upstream_text, want);
    finish_tunnel(&k);
}

static void backpressure_holds_then_delivers_in_order(void **state) {
    conn k = open_tunnel();
    enum { TOTAL = 32 << 20 };  // more than loopback's socket buffers can hold
    char *out = malloc(TOTAL), *in = malloc(TOTAL);
    for (size_t i = 0; i < TOTAL; i++) {
        out[i] = (char)(i * 7 + i / 251);
    }
    // The upstream reads nothing: the client can write only what the sockets and one relay
    // buffer hold, and the gateway stops reading it.
    size_t sent = 0;
    int blocked = 0;
    for (int turns = 0; turns < 2000 && blocked < 3; turns++) {
        ssize_t w = write(k.client, out + sent, TOTAL - sent);
        if (w > 0) {
            sent += (size_t)w;
            blocked = 0;
        } else {
            blocked++;
        }
        run_for(2);
    }
    assert_int_equal(blocked, 3);
    assert_true(sent < TOTAL);  // held back
    gw_tunnel *t = host.tunnels;
    assert_true(t->to_up == NULL || gw_buf_len(t->to_up) <= 16384);  // one buffer, no more
    // Now the upstream reads: everything arrives, in order.
    size_t got = 0;
    for (int turns = 0; got < TOTAL; turns++) {
        assert_true(turns < 20000);
        if (sent < TOTAL) {
            ssize_t w = write(k.client, out + sent, TOTAL - sent);
            sent += w > 0 ? (size_t)w : 0;
        }
        ssize_t r = read(k.upstream, in + got, TOTAL - got);
        if (r > 0) {
            got += (size_t)r;
        } else {
            run_for(1);
        }
    }
    assert_memory_equal(in, out, TOTAL);
    free(out);
    free(in);
    finish_tunnel(&k);
}

static void upstream_reset_comes_after_its_bytes(void **state) {
    conn k = open_tunnel();
    assert_int_equal(write(k.upstream, "last words", 10), 10);
    struct linger lg = {1, 0};
    setsockopt(k.upstream, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(k.upstream);  // a reset
    char buf[32];
    size_t got = 0;
    ssize_t r = 0;
    for (int turns = 0; turns < 2000; turns++) {
        r = read(k.client, buf + got, sizeof(buf) - got);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r == 0 || errno != EAGAIN) {
            break;
        }
        run_for(5);
    }
    assert_int_equal(got, 10);
    assert_memory_equal(buf, "last words", 10);  // everything it sent first
    assert_int_equal(r, -1);
    assert_int_equal(errno, ECONNRESET);  // then its reset, passed on
    close(k.client);
    until(host.tunnels == NULL);
}

static void http_exchange_rewrites_frames_and_keeps_the_upstream(void **state) {
    conn k = open_tunnel_on(1);
    const char *req = "GET http://up.test/x HTTP/1.1\r\nHost: up.test\r\n\r\n";
    assert_int_equal(write(k.client, req, strlen(req)), (ssize_t)strlen(req));
    until((k.upstream = accept4(up_listener, NULL, NULL, SOCK_NONBLOCK)) >= 0);
    char buf[1024];
    read_until(k.upstream, buf, sizeof(buf), "\r\n\r\n");
    assert_memory_equal(buf, "GET /x HTTP/1.1\r\n", 17);  // origin-form for the server
    assert_non_null(strstr(buf, "Host: up.test\r\n"));
    const char *resp = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_int_equal(write(k.upstream, resp, strlen(resp)), (ssize_t)strlen(resp));
    read_until(k.client, buf, sizeof(buf), "0\r\n\r\n");
    assert_memory_equal(buf, "HTTP/1.1 200 OK\r\n", 17);
    assert_non_null(strstr(buf, "5\r\nhello\r\n0\r\n\r\n"));  // the chunks, whole
    // The next request to the same destination goes over the same upstream connection.
    req = "GET http://up.test/y HTTP/1.1\r\nHost: up.test\r\n\r\n";
    assert_int_equal(write(k.client, req, strlen(req)), (ssize_t)strlen(req));
    read_until(k.upstream, buf, sizeof(buf), "\r\n\r\n");
    assert_memory_equal(buf, "GET /y HTTP/1.1\r\n", 17);
    assert_int_equal(accept4(up_listener, NULL, NULL, SOCK_NONBLOCK), -1);  // no second connection
    // The server closes that kept connection without a response: the GET (idempotent, no
    // response byte yet) is sent again, once, on a new connection, and its answer arrives.
    close(k.upstream);
    until((k.upstream = accept4(up_listener, NULL, NULL, SOCK_NONBLOCK)) >= 0);
    memset(buf, 0, sizeof(buf));
    read_until(k.upstream, buf, sizeof(buf), "\r\n\r\n");
    assert_memory_equal(buf, "GET /y HTTP/1.1\r\n", 17);
    resp = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond";
    assert_int_equal(write(k.upstream, resp, strlen(resp)), (ssize_t)strlen(resp));
    memset(buf, 0, sizeof(buf));
    read_until(k.client, buf, sizeof(buf), "second");
    assert_memory_equal(buf, "HTTP/1.1 200 OK\r\n", 17);
    finish_tunnel(&k);
}

int main(void) {
    gw_log_configure(GW_LOG_ERROR, GW_LOG_TEXT, "off");
    res_library_init();
    up_listener = listen_loopback(&up_port);
    host.loop = gw_loop_new();
    gw_buf_pool_init(&host.pool, 64);
    host.passcheck = gw_passcheck_new(host.loop);
    host.on_closed = on_closed;
    host.cfg = load();
    char err[200];
    host.resolver = res_resolver_new(host.loop, host.cfg, err, sizeof(err));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(half_close_passes_on_both_ways, fresh),
        cmocka_unit_test_setup(dial_falls_back_to_the_next_address, fresh),
        cmocka_unit_test_setup(backpressure_holds_then_delivers_in_order, fresh),
        cmocka_unit_test_setup(upstream_reset_comes_after_its_bytes, fresh),
        cmocka_unit_test_setup(http_exchange_rewrites_frames_and_keeps_the_upstream, fresh),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    while (host.tunnels != NULL) {
        gw_tunnel_abort(host.tunnels, "test over");
    }
    run_for(1);
    res_resolver_free(host.resolver);
    gw_passcheck_free(host.passcheck);
    gw_loop_free(host.loop);
    gw_buf_pool_clear(&host.pool);
    pol_config_unref(host.cfg);
    res_library_cleanup();
    close(up_listener);
    return rc;
}
