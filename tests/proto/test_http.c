// HTTP head parser: every split point, merged data, strictness, targets.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/proto/http.h"

static void connect_every_split(void **state) {
    const char *msg =
        "CONNECT orders.dc2.test:443 HTTP/1.1\r\nHost: orders.dc2.test:443\r\nProxy-Connection: "
        "keep-alive\r\n\r\n\x16\x03\x01";
    size_t head = strlen(msg) - 3;
    gw_http_request r;
    for (size_t cut = 0; cut < head; cut++) {
        assert_int_equal(gw_http_parse_request(msg, cut, &r), GW_HTTP_NEED_MORE);
    }
    assert_int_equal(gw_http_parse_request(msg, strlen(msg), &r), GW_HTTP_OK);
    assert_int_equal(r.head_len, head);
    assert_true(gw_http_token_eq(r.method, r.method_len, "connect"));
    assert_int_equal(r.num_headers, 2);
    const gw_http_header *h = gw_http_find_header(r.headers, r.num_headers, "proxy-connection");
    assert_non_null(h);
    assert_int_equal(h->value_len, strlen("keep-alive"));
    char host[256];
    uint16_t port;
    assert_true(gw_http_parse_authority(r.target, r.target_len, 0, host, &port));
    assert_string_equal(host, "orders.dc2.test");
    assert_int_equal(port, 443);
}

static void strictness(void **state) {
    gw_http_request r;
    const char *bad[] = {
        "CONNECT a:1 HTTP/1.1\r\n folded\r\n\r\n",  // obs-fold
        "CONNECT a:1 HTTP/1.1\r\nX : y\r\n\r\n",    // space before colon
        "CONNECT a:1 HTTP/1.1\nX: y\n\n",           // bare LF
        "CONNECT a:1 HTTP/1.1\r\nX: a\rb\r\n\r\n",  // bare CR
        "CONNECT  a:1 HTTP/1.1\r\n\r\n",            // double space
        "\x16\x03\x01\x02\x00",                     // TLS, not HTTP
        "CONNECT a:1 HTTP/1.1\r\nX: \x01\r\n\r\n",  // control byte
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(gw_http_parse_request(bad[i], strlen(bad[i]), &r), GW_HTTP_ERR_SYNTAX);
    }
    const char *v2 = "GET / HTTP/2.0\r\n\r\n";
    assert_int_equal(gw_http_parse_request(v2, strlen(v2), &r), GW_HTTP_ERR_VERSION);
}

static void too_many_headers(void **state) {
    char buf[8192] = "CONNECT a:1 HTTP/1.1\r\n";
    for (int i = 0; i < GW_HTTP_MAX_HEADERS + 1; i++) {
        strcat(buf, "X: y\r\n");
    }
    strcat(buf, "\r\n");
    gw_http_request r;
    assert_int_equal(gw_http_parse_request(buf, strlen(buf), &r), GW_HTTP_ERR_TOO_LARGE);
}

static void authority_forms(void **state) {
    char host[256];
    uint16_t port;
    assert_true(gw_http_parse_authority("[::1]:8443", 10, 0, host, &port));
    assert_string_equal(host, "::1");
    assert_int_equal(port, 8443);
    assert_false(gw_http_parse_authority("a.test", 6, 0, host, &port));
    assert_true(gw_http_parse_authority("a.test", 6, 80, host, &port));
    assert_int_equal(port, 80);
    assert_false(gw_http_parse_authority("a.test:0", 8, 0, host, &port));
    assert_false(gw_http_parse_authority("a.test:65536", 12, 0, host, &port));
    assert_false(gw_http_parse_authority("a b:1", 5, 0, host, &port));
    assert_false(gw_http_parse_authority("::1:80", 6, 0, host, &port));
}

static void absolute_uri(void **state) {
    char scheme[8], host[256];
    uint16_t port;
    const char *path;
    size_t plen;
    const char *u = "http://Orders.dc2.test/greet/danish?x=1";
    assert_true(gw_http_parse_absolute_uri(u, strlen(u), scheme, host, &port, &path, &plen));
    assert_string_equal(scheme, "http");
    assert_string_equal(host, "Orders.dc2.test");
    assert_int_equal(port, 80);
    assert_int_equal(plen, strlen("/greet/danish?x=1"));
    const char *s = "https://a.test:8443";
    assert_true(gw_http_parse_absolute_uri(s, strlen(s), scheme, host, &port, &path, &plen));
    assert_string_equal(scheme, "https");
    assert_int_equal(plen, 0);
    const char *userinfo = "http://user@a.test/";
    assert_false(gw_http_parse_absolute_uri(userinfo, strlen(userinfo), scheme, host, &port, &path, &plen));
}

static void response_head(void **state) {
    const char *msg = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    gw_http_response r;
    for (size_t cut = 0; cut < strlen(msg) - 5; cut++) {
        assert_int_equal(gw_http_parse_response(msg, cut, &r), GW_HTTP_NEED_MORE);
    }
    assert_int_equal(gw_http_parse_response(msg, strlen(msg), &r), GW_HTTP_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.head_len, strlen(msg) - 5);
    assert_int_equal(gw_http_parse_response("SSH-2.0", 7, &r), GW_HTTP_ERR_SYNTAX);
}

static void basic_credentials(void **state) {
    uint8_t out[64];
    size_t n = 0, colon = 0;
    const char *v = "Basic YWxpY2U6cHc=";  // alice:pw
    assert_true(gw_http_basic_credentials(v, strlen(v), out, sizeof(out), &n, &colon));
    assert_int_equal(n, 8);
    assert_int_equal(colon, 5);
    assert_memory_equal(out, "alice:pw", 8);
    v = "basic   YWxpY2U6cHc=";  // the scheme in any case, spaces before the value
    assert_true(gw_http_basic_credentials(v, strlen(v), out, sizeof(out), &n, &colon));
    v = "Basic YWxpY2U6";  // an empty password is still a user and a password
    assert_true(gw_http_basic_credentials(v, strlen(v), out, sizeof(out), &n, &colon));
    assert_int_equal(n, 6);
    assert_int_equal(colon, 5);
    const char *bad[] = {"Bearer YWxpY2U6cHc=", "Basic !!!!", "Basic YWxpY2U=", "Basic ", "Basic"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(gw_http_basic_credentials(bad[i], strlen(bad[i]), out, sizeof(out), &n, &colon));
    }
    uint8_t small[4];  // longer than the caller's room: refused, never written past it
    v = "Basic YWxpY2U6cHc=";
    assert_false(gw_http_basic_credentials(v, strlen(v), small, sizeof(small), &n, &colon));
}

// The CONNECT the gateway sends a parent proxy: Basic credentials when it has some, and
// nothing cut short when the buffer is too small.
static void connect_request(void **state) {
    (void)state;
    char out[300];
    size_t n = gw_http_connect_request("orders.dc2.test:443", NULL, NULL, out, sizeof(out));
    assert_string_equal(out, "CONNECT orders.dc2.test:443 HTTP/1.1\r\nHost: orders.dc2.test:443\r\n\r\n");
    assert_int_equal(n, strlen(out));
    n = gw_http_connect_request("[2001:db8::1]:443", "egress", "s3cret", out, sizeof(out));
    assert_string_equal(out,
                        "CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n"
                        "Proxy-Authorization: Basic ZWdyZXNzOnMzY3JldA==\r\n\r\n");
    assert_int_equal(n, strlen(out));
    gw_http_request req;
    assert_int_equal(gw_http_parse_request(out, n, &req), GW_HTTP_OK);  // what a parent parses
    assert_int_equal(gw_http_connect_request("orders.dc2.test:443", "egress", "s3cret", out, 60), 0);
    assert_int_equal(gw_http_connect_request("orders.dc2.test:443", NULL, NULL, out, 20), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(connect_every_split), cmocka_unit_test(strictness),      cmocka_unit_test(too_many_headers),
        cmocka_unit_test(authority_forms),     cmocka_unit_test(absolute_uri),    cmocka_unit_test(response_head),
        cmocka_unit_test(basic_credentials),   cmocka_unit_test(connect_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
