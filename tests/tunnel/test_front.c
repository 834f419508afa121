// The tunnel's front door, driven over socketpair() with no nginx: split greetings, SOCKS5
// and SOCKS4 refusals, CONNECT and http_proxy errors with Proxy-Status, 407 with
// Proxy-Authenticate, 0xFF for a client that offers no password, and a client outside
// `allow` answered without its credentials being looked at. Everything is refused by rule
// or by the door itself, so no upstream is ever needed.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/base/log.h"
#include "gateway/tunnel/internal.h"  // a tunnel's password check, to wait for it
#include "gateway/tunnel/tunnel.h"
#include "policy/users.h"
#include "tests/config_text.h"

static gw_tunnel_host host;
static char users_path[64];

static void on_closed(gw_tunnel_host *h) {
    (void)h;
}

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

static int checks_under_way(void) {
    for (gw_tunnel *t = host.tunnels; t != NULL; t = gw_tunnel_next(t)) {
        if (t->front.auth_job != NULL) {
            return 1;
        }
    }
    return 0;
}

static pol_config *load(const char *extra) {
    pol_config *cfg = config_from_text(
        "listen = ( { name = \"p\"; address = \"127.0.0.1:1\"; } );\n"
        "limits = { handshake_timeout_ms = 2000; header_max = 1024; };\n"
        "rules = ( { match = \"*\"; action = \"deny\"; } );\n%s",
        extra);
    assert_non_null(cfg);
    return cfg;
}

static void use_config(pol_config *cfg) {
    pol_config_unref(host.cfg);
    host.cfg = cfg;
}

// exchange sends |parts| (each written, then the loop run a little: split arrivals) on a
// new client connection and returns what the gateway answered, up to its close.
static size_t exchange(gw_err admission, const char *const *parts, const size_t *lens, size_t n, char *out,
                       size_t cap) {
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000)};
    inet_pton(AF_INET, "127.0.0.1", &peer.sin_addr);
    gw_client_info client = {(struct sockaddr *)&peer, GW_CALLER_NONE, -1, NULL, 0, 0};
    gw_tunnel_accept(&host, sv[0], &client, 0, admission);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(write(sv[1], parts[i], lens[i]), (ssize_t)lens[i]);
        run_for(20);
    }
    // Password checks run off the loop: wait until none is under way (however slow this
    // machine or this build is), not for a fixed time.
    run_for(20);
    for (int i = 0; i < 1000 && checks_under_way(); i++) {
        run_for(10);
    }
    shutdown(sv[1], SHUT_WR);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    // Read the answer up to the gateway's close (every case here ends with one), running
    // the loop while nothing is there: no fixed wait decides what arrived.
    size_t got = 0;
    for (int turns = 0; got < cap - 1; turns++) {
        assert_true(turns < 2000);
        ssize_t r = read(sv[1], out + got, cap - 1 - got);
        if (r > 0) {
            got += (size_t)r;
        } else if (r == 0 || errno != EAGAIN) {
            break;
        } else {
            run_for(5);
        }
    }
    out[got] = '\0';
    close(sv[1]);
    run_for(1);
    return got;
}

static size_t one(gw_err admission, const char *req, size_t len, char *out, size_t cap) {
    const char *parts[] = {req};
    size_t lens[] = {len};
    return exchange(admission, parts, lens, 1, out, cap);
}

static void socks5_split_greeting_then_denied(void **state) {
    use_config(load(""));
    const char *parts[] = {"\x05", "\x01", "\x00", "\x05\x01\x00\x03\x0borders.test", "\x01\xbb"};
    size_t lens[] = {1, 1, 1, 16, 2};
    char out[256];
    size_t n = exchange(GW_ERR_NONE, parts, lens, 5, out, sizeof(out));
    assert_true(n >= 4);
    assert_memory_equal(out, "\x05\x00\x05\x02", 4);  // method "none", then REP 0x02 (denied by rule)
}

static void socks5_bind_and_address_type(void **state) {
    char out[256];
    size_t n = one(GW_ERR_NONE, "\x05\x01\x00\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50", 13, out, sizeof(out));
    assert_true(n >= 4);
    assert_memory_equal(out + 2, "\x05\x07", 2);  // BIND: command not supported
    n = one(GW_ERR_NONE, "\x05\x01\x00\x05\x01\x00\x09\x00", 8, out, sizeof(out));
    assert_true(n >= 4);
    assert_memory_equal(out + 2, "\x05\x08", 2);  // address type not supported
}

static void socks4_denied(void **state) {
    char out[64];
    size_t n = one(GW_ERR_NONE, "\x04\x01\x00\x50\x0a\x00\x00\x01user\x00", 13, out, sizeof(out));
    assert_true(n >= 2);
    assert_int_equal((unsigned char)out[1], 0x5b);
}

static void connect_and_http_proxy_errors(void **state) {
    char out[2048];
    const char *c = "CONNECT orders.test:443 HTTP/1.1\r\nHost: orders.test:443\r\n\r\n";
    one(GW_ERR_NONE, c, strlen(c), out, sizeof(out));
    assert_non_null(strstr(out, "HTTP/1.1 403 Forbidden\r\n"));
    assert_non_null(
        strstr(out, "Proxy-Status: mtlsgw; error=http_request_denied; details=\"orders.test:443 denied by rule "));
    const char *ip = "CONNECT 10.1.2.3:443 HTTP/1.1\r\nHost: x\r\n\r\n";
    one(GW_ERR_NONE, ip, strlen(ip), out, sizeof(out));
    assert_non_null(strstr(out, "error=destination_ip_prohibited"));  // an IP, not a name
    const char *bad = "CONNECT orders.test HTTP/1.1\r\n\r\n";
    one(GW_ERR_NONE, bad, strlen(bad), out, sizeof(out));
    assert_non_null(strstr(out, "HTTP/1.1 400 Bad Request\r\n"));
    const char *https = "GET https://orders.test/ HTTP/1.1\r\nHost: orders.test\r\n\r\n";
    one(GW_ERR_NONE, https, strlen(https), out, sizeof(out));
    assert_non_null(strstr(out, "400 Bad Request"));
    assert_non_null(strstr(out, "https:// URLs go through CONNECT"));
    char big[1500];
    int len = snprintf(big, sizeof(big),
                       "GET http://orders.test/ HTTP/1.1\r\nHost: orders.test\r\nX-Big: %01300d\r\n\r\n", 0);
    one(GW_ERR_NONE, big, (size_t)len, out, sizeof(out));
    assert_non_null(strstr(out, "431 Request Header Fields Too Large"));
    // Content-Length is the body sent.
    char *body = strstr(out, "\r\n\r\n");
    char *cl = strstr(out, "Content-Length: ");
    assert_non_null(body);
    assert_non_null(cl);
    assert_int_equal(strtoul(cl + 16, NULL, 10), strlen(body + 4));
}

static void authentication(void **state) {
    snprintf(users_path, sizeof(users_path), "/tmp/mtlsgw-front-users-%d", (int)getpid());
    char line[1024];
    assert_true(pol_users_make_line("alice", "pw", 2, line, sizeof(line)));
    FILE *f = fopen(users_path, "w");
    fputs(line, f);
    fclose(f);
    chmod(users_path, 0600);
    char extra[200];
    snprintf(extra, sizeof(extra), "auth = { users_file = \"%s\"; };\n", users_path);
    use_config(load(extra));
    unlink(users_path);
    char out[2048];
    const char *c = "CONNECT orders.test:443 HTTP/1.1\r\nHost: orders.test\r\n\r\n";
    one(GW_ERR_NONE, c, strlen(c), out, sizeof(out));
    assert_non_null(strstr(out, "HTTP/1.1 407 Proxy Authentication Required\r\n"));
    assert_non_null(strstr(out, "Proxy-Authenticate: Basic realm=\"mtlsgw\"\r\n"));
    // Right credentials (alice:pw): authenticated, then denied by the rule.
    const char *good = "CONNECT orders.test:443 HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic YWxpY2U6cHc=\r\n\r\n";
    one(GW_ERR_NONE, good, strlen(good), out, sizeof(out));
    assert_non_null(strstr(out, "HTTP/1.1 403"));
    const char *wrong =
        "CONNECT orders.test:443 HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic YWxpY2U6cHg=\r\n\r\n";
    one(GW_ERR_NONE, wrong, strlen(wrong), out, sizeof(out));
    assert_non_null(strstr(out, "HTTP/1.1 407"));
    // SOCKS5 offering only "no authentication": 0xFF.
    size_t n = one(GW_ERR_NONE, "\x05\x01\x00", 3, out, sizeof(out));
    assert_true(n >= 2);
    assert_memory_equal(out, "\x05\xff", 2);
    // SOCKS5 with the right password, split inside the credentials.
    const char *parts[] = {"\x05\x01\x02",
                           "\x01\x05"
                           "ali",
                           "ce\x02pw", "\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x50"};
    size_t lens[] = {3, 5, 5, 10};
    n = exchange(GW_ERR_NONE, parts, lens, 4, out, sizeof(out));
    assert_true(n >= 6);
    assert_memory_equal(out, "\x05\x02\x01\x00\x05\x02", 6);  // userpass, accepted, denied by rule
    // Outside allow: the same answer whatever the password, credentials never checked.
    char a[64], b[64];
    const char *right[] = {"\x05\x01\x02",
                           "\x01\x05"
                           "alice\x02pw",
                           "\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x50"};
    const char *bad[] = {"\x05\x01\x02",
                         "\x01\x05"
                         "alice\x02px",
                         "\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x50"};
    size_t l3[] = {3, 10, 10};
    size_t na = exchange(GW_ERR_NOT_ALLOWED, right, l3, 3, a, sizeof(a));
    size_t nb = exchange(GW_ERR_NOT_ALLOWED, bad, l3, 3, b, sizeof(b));
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    assert_memory_equal(a, "\x05\x02\x01\x00\x05\x02", 6);
    one(GW_ERR_NOT_ALLOWED, wrong, strlen(wrong), out, sizeof(out));
    assert_non_null(strstr(out, "HTTP/1.1 403"));  // not 407: the password was not looked at
}

int main(void) {
    gw_log_configure(GW_LOG_ERROR, GW_LOG_TEXT, "off");  // the replies are what is checked
    res_library_init();
    host.loop = gw_loop_new();
    gw_buf_pool_init(&host.pool, 64);
    host.passcheck = gw_passcheck_new(host.loop);
    host.on_closed = on_closed;
    host.cfg = load("");
    char err[200];
    host.resolver = res_resolver_new(host.loop, host.cfg, err, sizeof(err));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(socks5_split_greeting_then_denied),
        cmocka_unit_test(socks5_bind_and_address_type),
        cmocka_unit_test(socks4_denied),
        cmocka_unit_test(connect_and_http_proxy_errors),
        cmocka_unit_test(authentication),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    while (host.tunnels != NULL) {
        gw_tunnel_abort(host.tunnels, "test over");
    }
    res_resolver_free(host.resolver);
    gw_passcheck_free(host.passcheck);
    gw_loop_free(host.loop);
    gw_buf_pool_clear(&host.pool);
    pol_config_unref(host.cfg);
    res_library_cleanup();
    return rc;
}
