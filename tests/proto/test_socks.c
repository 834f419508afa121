// SOCKS parsers: every split point, merged messages, and each error.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/proto/socks.h"

static void greeting_every_split(void **state) {
    const uint8_t msg[] = {5, 2, 0, 2};
    for (size_t cut = 0; cut < sizeof(msg); cut++) {
        size_t used = 0;
        uint32_t m = 0;
        assert_int_equal(gw_socks5_parse_greeting(msg, cut, &used, &m), GW_SOCKS_NEED_MORE);
    }
    size_t used = 0;
    uint32_t m = 0;
    assert_int_equal(gw_socks5_parse_greeting(msg, sizeof(msg), &used, &m), GW_SOCKS_OK);
    assert_int_equal(used, 4);
    assert_true(m & 1);
    assert_true(m & 4);
}

static void greeting_errors(void **state) {
    size_t used;
    uint32_t m;
    const uint8_t v4[] = {4, 1, 0};
    assert_int_equal(gw_socks5_parse_greeting(v4, 3, &used, &m), GW_SOCKS_ERR_VERSION);
    const uint8_t none[] = {5, 0};
    assert_int_equal(gw_socks5_parse_greeting(none, 2, &used, &m), GW_SOCKS_ERR_FORMAT);
}

static void request_domain_every_split_and_merged(void **state) {
    uint8_t msg[64];
    const char *host = "redis.dc2.test";
    size_t n = 0;
    msg[n++] = 5;
    msg[n++] = 1;
    msg[n++] = 0;
    msg[n++] = 3;
    msg[n++] = (uint8_t)strlen(host);
    memcpy(msg + n, host, strlen(host));
    n += strlen(host);
    msg[n++] = 0x18;
    msg[n++] = 0xeb;  // 6379
    for (size_t cut = 0; cut < n; cut++) {
        size_t used = 0;
        gw_socks_request req;
        assert_int_equal(gw_socks5_parse_request(msg, cut, &used, &req), GW_SOCKS_NEED_MORE);
    }
    // Merged with the application's first bytes: only the request is consumed.
    memcpy(msg + n, "PING\r\n", 6);
    size_t used = 0;
    gw_socks_request req;
    assert_int_equal(gw_socks5_parse_request(msg, n + 6, &used, &req), GW_SOCKS_OK);
    assert_int_equal(used, n);
    assert_string_equal(req.host, host);
    assert_int_equal(req.port, 6379);
}

static void request_ip_types(void **state) {
    const uint8_t v4[] = {5, 1, 0, 1, 10, 20, 0, 1, 0, 80};
    size_t used;
    gw_socks_request req;
    assert_int_equal(gw_socks5_parse_request(v4, sizeof(v4), &used, &req), GW_SOCKS_OK);
    assert_string_equal(req.host, "10.20.0.1");
    uint8_t v6[22] = {5, 1, 0, 4};
    v6[19] = 1;
    v6[20] = 1;
    v6[21] = 187;
    assert_int_equal(gw_socks5_parse_request(v6, sizeof(v6), &used, &req), GW_SOCKS_OK);
    assert_string_equal(req.host, "::1");
    assert_int_equal(req.port, 443);
}

static void request_errors(void **state) {
    size_t used;
    gw_socks_request req;
    const uint8_t bind[] = {5, 2, 0, 1, 127, 0, 0, 1, 0, 80};
    assert_int_equal(gw_socks5_parse_request(bind, sizeof(bind), &used, &req), GW_SOCKS_ERR_COMMAND);
    assert_int_equal(used, sizeof(bind));
    const uint8_t atyp[] = {5, 1, 0, 5, 1, 2};
    assert_int_equal(gw_socks5_parse_request(atyp, sizeof(atyp), &used, &req), GW_SOCKS_ERR_ADDRESS_TYPE);
    const uint8_t space[] = {5, 1, 0, 3, 3, 'a', ' ', 'b', 0, 80};
    assert_int_equal(gw_socks5_parse_request(space, sizeof(space), &used, &req), GW_SOCKS_ERR_NAME);
    const uint8_t empty[] = {5, 1, 0, 3, 0, 0, 80};
    assert_int_equal(gw_socks5_parse_request(empty, sizeof(empty), &used, &req), GW_SOCKS_ERR_NAME);
    const uint8_t rsv[] = {5, 1, 1, 1, 127, 0, 0, 1, 0, 80};
    assert_int_equal(gw_socks5_parse_request(rsv, sizeof(rsv), &used, &req), GW_SOCKS_ERR_FORMAT);
}

static void socks4a_every_split(void **state) {
    const uint8_t msg[] = {4, 1, 0, 80, 0, 0, 0, 1, 'u', 0, 'w', 'e', 'b', '.', 't', 0, 'X'};
    size_t n = sizeof(msg) - 1;
    char user[256];
    for (size_t cut = 0; cut < n; cut++) {
        size_t used;
        gw_socks_request req;
        assert_int_equal(gw_socks4_parse_request(msg, cut, &used, &req, user), GW_SOCKS_NEED_MORE);
    }
    size_t used;
    gw_socks_request req;
    assert_int_equal(gw_socks4_parse_request(msg, sizeof(msg), &used, &req, user), GW_SOCKS_OK);
    assert_int_equal(used, n);
    assert_string_equal(req.host, "web.t");
    assert_string_equal(user, "u");
    assert_int_equal(req.port, 80);
}

static void socks4_plain_and_errors(void **state) {
    const uint8_t msg[] = {4, 1, 1, 187, 192, 0, 2, 7, 0};
    size_t used;
    gw_socks_request req;
    char user[256];
    assert_int_equal(gw_socks4_parse_request(msg, sizeof(msg), &used, &req, user), GW_SOCKS_OK);
    assert_string_equal(req.host, "192.0.2.7");
    const uint8_t bind[] = {4, 2, 0, 80, 127, 0, 0, 1, 0};
    assert_int_equal(gw_socks4_parse_request(bind, sizeof(bind), &used, &req, user), GW_SOCKS_ERR_COMMAND);
    uint8_t long_user[300] = {4, 1, 0, 80, 127, 0, 0, 1};
    memset(long_user + 8, 'a', sizeof(long_user) - 8);
    assert_int_equal(gw_socks4_parse_request(long_user, sizeof(long_user), &used, &req, user), GW_SOCKS_ERR_FORMAT);
}

static void userpass(void **state) {
    const uint8_t msg[] = {1, 3, 'b', 'o', 'b', 2, 'p', 'w'};
    char u[256], p[256];
    size_t used;
    for (size_t cut = 0; cut < sizeof(msg); cut++) {
        assert_int_equal(gw_socks5_parse_userpass(msg, cut, &used, u, p), GW_SOCKS_NEED_MORE);
    }
    assert_int_equal(gw_socks5_parse_userpass(msg, sizeof(msg), &used, u, p), GW_SOCKS_OK);
    assert_string_equal(u, "bob");
    assert_string_equal(p, "pw");
}

static void replies(void **state) {
    uint8_t out[32];
    assert_int_equal(gw_socks5_encode_reply(4, NULL, out), 10);
    assert_int_equal(out[1], 4);
    assert_int_equal(out[3], 1);
    assert_int_equal(gw_socks4_encode_reply(0x5b, NULL, out), 8);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 0x5b);
}

// A SOCKS5 server's reply, as the gateway reads a parent proxy's: its exact length for
// each address type (nothing behind it taken), REP, and what is not a reply.
static void parent_replies(void **state) {
    (void)state;
    size_t used = 0;
    uint8_t rep = 0xee;
    static const uint8_t v4[] = {5, 0, 0, 1, 203, 0, 113, 2, 0x1f, 0x90, 'S', 'S', 'H'};
    assert_int_equal(gw_socks5_parse_reply(v4, sizeof(v4), &used, &rep), GW_SOCKS_OK);
    assert_int_equal(used, 10);  // the banner behind it stays
    assert_int_equal(rep, 0);
    static const uint8_t name[] = {5, 2, 0, 3, 4, 'p', 'a', 'r', 't', 0, 80};
    assert_int_equal(gw_socks5_parse_reply(name, sizeof(name), &used, &rep), GW_SOCKS_OK);
    assert_int_equal(used, sizeof(name));
    assert_int_equal(rep, 2);
    uint8_t v6[22] = {5, 5, 0, 4};
    assert_int_equal(gw_socks5_parse_reply(v6, sizeof(v6), &used, &rep), GW_SOCKS_OK);
    assert_int_equal(used, 22);
    assert_int_equal(rep, 5);
    for (size_t n = 0; n < sizeof(v6); n++) {
        assert_int_equal(gw_socks5_parse_reply(v6, n, &used, &rep), GW_SOCKS_NEED_MORE);
    }
    static const uint8_t v4ver[] = {4, 0, 0, 1, 1, 2, 3, 4, 0, 80};
    assert_int_equal(gw_socks5_parse_reply(v4ver, sizeof(v4ver), &used, &rep), GW_SOCKS_ERR_VERSION);
    static const uint8_t rsv[] = {5, 0, 1, 1, 1, 2, 3, 4, 0, 80};
    assert_int_equal(gw_socks5_parse_reply(rsv, sizeof(rsv), &used, &rep), GW_SOCKS_ERR_FORMAT);
    static const uint8_t atyp[] = {5, 0, 0, 9, 1, 2, 3, 4, 0, 80};
    assert_int_equal(gw_socks5_parse_reply(atyp, sizeof(atyp), &used, &rep), GW_SOCKS_ERR_ADDRESS_TYPE);
}

// What the gateway sends a SOCKS5 parent: RFC 1929 credentials and CONNECT, by name or
// address; parts too long are refused, not cut.
static void parent_requests(void **state) {
    (void)state;
    uint8_t out[600];
    static const uint8_t up[] = {1, 2, 'a', 'b', 3, 'x', 'y', 'z'};
    assert_int_equal(gw_socks5_encode_userpass("ab", "xyz", out), sizeof(up));
    assert_memory_equal(out, up, sizeof(up));
    char long_name[300];
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    assert_int_equal(gw_socks5_encode_userpass(long_name, "x", out), 0);
    assert_int_equal(gw_socks5_encode_userpass("", "x", out), 0);
    static const uint8_t byname[] = {5, 1, 0, 3, 4, 'h', 'o', 's', 't', 0x01, 0xbb};
    assert_int_equal(gw_socks5_encode_connect("host", 443, out), sizeof(byname));
    assert_memory_equal(out, byname, sizeof(byname));
    static const uint8_t v4[] = {5, 1, 0, 1, 203, 0, 113, 3, 0x18, 0xeb};
    assert_int_equal(gw_socks5_encode_connect("203.0.113.3", 6379, out), sizeof(v4));
    assert_memory_equal(out, v4, sizeof(v4));
    assert_int_equal(gw_socks5_encode_connect("2001:db8::1", 80, out), 4 + 16 + 2);
    assert_int_equal(out[3], GW_SOCKS5_ATYP_IPV6);
    assert_int_equal(gw_socks5_encode_connect(long_name, 80, out), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(greeting_every_split),
        cmocka_unit_test(greeting_errors),
        cmocka_unit_test(request_domain_every_split_and_merged),
        cmocka_unit_test(request_ip_types),
        cmocka_unit_test(request_errors),
        cmocka_unit_test(socks4a_every_split),
        cmocka_unit_test(socks4_plain_and_errors),
        cmocka_unit_test(userpass),
        cmocka_unit_test(replies),
        cmocka_unit_test(parent_replies),
        cmocka_unit_test(parent_requests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
