// HTTP/1 framing for the forward proxy: body framing decisions, the chunked scanner at
// every split point, head rewrites and the head-completeness scan.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/proto/h1.h"

static gw_http_request parse_req(const char *s) {
    gw_http_request r;
    assert_int_equal(gw_http_parse_request(s, strlen(s), &r), GW_HTTP_OK);
    return r;
}

static gw_http_response parse_resp(const char *s) {
    gw_http_response r;
    assert_int_equal(gw_http_parse_response(s, strlen(s), &r), GW_HTTP_OK);
    return r;
}

static void request_framing(void **state) {
    gw_body b;
    gw_http_request r = parse_req("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_null(gw_h1_request_body(&r, &b));
    assert_int_equal(b.kind, GW_BODY_NONE);
    r = parse_req("POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n");
    assert_null(gw_h1_request_body(&r, &b));
    assert_int_equal(b.kind, GW_BODY_LENGTH);
    assert_int_equal(b.length, 42);
    r = parse_req("POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_null(gw_h1_request_body(&r, &b));
    assert_int_equal(b.kind, GW_BODY_NONE);
    r = parse_req("POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n");
    assert_null(gw_h1_request_body(&r, &b));
    assert_int_equal(b.kind, GW_BODY_CHUNKED);
    const char *bad[] = {
        "POST http://a/ HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
        "POST http://a/ HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
        "POST http://a/ HTTP/1.1\r\nContent-Length: 4, 4\r\n\r\n",
        "POST http://a/ HTTP/1.1\r\nContent-Length: +4\r\n\r\n",
        "POST http://a/ HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
        "POST http://a/ HTTP/1.1\r\nContent-Length: \r\n\r\n",
        "POST http://a/ HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
        "POST http://a/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = parse_req(bad[i]);
        if (gw_h1_request_body(&r, &b) == NULL) {
            fail_msg("accepted: %s", bad[i]);
        }
    }
}

static void response_framing(void **state) {
    gw_body b;
    gw_http_response r = parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n");
    assert_null(gw_h1_response_body(&r, 0, &b));
    assert_int_equal(b.kind, GW_BODY_LENGTH);
    assert_int_equal(b.length, 7);
    assert_null(gw_h1_response_body(&r, 1, &b));  // HEAD
    assert_int_equal(b.kind, GW_BODY_NONE);
    const char *empty[] = {"HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                           "HTTP/1.1 100 Continue\r\n\r\n"};
    for (size_t i = 0; i < 3; i++) {
        r = parse_resp(empty[i]);
        assert_null(gw_h1_response_body(&r, 0, &b));
        assert_int_equal(b.kind, GW_BODY_NONE);
    }
    r = parse_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
    assert_null(gw_h1_response_body(&r, 0, &b));
    assert_int_equal(b.kind, GW_BODY_CHUNKED);
    r = parse_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert_null(gw_h1_response_body(&r, 0, &b));
    assert_int_equal(b.kind, GW_BODY_CLOSE);
    r = parse_resp("HTTP/1.0 200 OK\r\n\r\n");
    assert_null(gw_h1_response_body(&r, 0, &b));
    assert_int_equal(b.kind, GW_BODY_CLOSE);
    r = parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
    assert_non_null(gw_h1_response_body(&r, 0, &b));
    r = parse_resp("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n");
    assert_non_null(gw_h1_response_body(&r, 0, &b));
}

static void keep_alive(void **state) {
    gw_http_request r = parse_req("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_true(gw_h1_keep_alive(r.headers, r.num_headers, 1));
    r = parse_req("GET http://a/ HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n");
    assert_false(gw_h1_keep_alive(r.headers, r.num_headers, 1));
    r = parse_req("GET http://a/ HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n");
    assert_false(gw_h1_keep_alive(r.headers, r.num_headers, 1));
    r = parse_req("GET http://a/ HTTP/1.0\r\n\r\n");
    assert_false(gw_h1_keep_alive(r.headers, r.num_headers, 0));
    r = parse_req("GET http://a/ HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert_true(gw_h1_keep_alive(r.headers, r.num_headers, 0));
}

// scan_all feeds |body| (followed by |tail|) to a fresh scanner in pieces cut at |cut|
// and returns how many bytes belong to the body (-1 if refused, -2 if never done).
static long scan_split(const char *msg, size_t len, size_t cut) {
    gw_chunked c;
    gw_chunked_init(&c);
    size_t pos = 0;
    size_t pieces[2] = {cut, len - cut};
    for (int i = 0; i < 2; i++) {
        int done = 0;
        long n = gw_chunked_scan(&c, (const uint8_t *)msg + pos, pieces[i], &done);
        if (n < 0) {
            return -1;
        }
        pos += (size_t)n;
        if (done) {
            return (long)pos;
        }
        assert_int_equal((size_t)n, pieces[i]);  // not done: every byte was body
    }
    return -2;
}

static void chunked_every_split(void **state) {
    const char *body = "5\r\nhello\r\n1A;name=\"v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n";
    char msg[256];
    snprintf(msg, sizeof(msg), "%sGET http://next/ HTTP/1.1\r\n\r\n", body);
    size_t blen = strlen(body), mlen = strlen(msg);
    for (size_t cut = 0; cut <= mlen; cut++) {
        assert_int_equal(scan_split(msg, mlen, cut), (long)blen);
    }
    // Byte by byte.
    gw_chunked c;
    gw_chunked_init(&c);
    size_t i;
    int done = 0;
    for (i = 0; i < mlen && !done; i++) {
        assert_int_equal(gw_chunked_scan(&c, (const uint8_t *)msg + i, 1, &done), 1);
    }
    assert_int_equal(i, blen);
    const char *simple = "0\r\n\r\n";
    assert_int_equal(scan_split(simple, strlen(simple), 2), 5);
    const char *upper = "A\r\n0123456789\r\n0000\r\n\r\n";
    assert_int_equal(scan_split(upper, strlen(upper), 7), (long)strlen(upper));
}

static void chunked_malformed(void **state) {
    const char *bad[] = {
        "zz\r\nhello\r\n0\r\n\r\n",  // not hex
        "\r\n",                      // no size
        "5\r\nhelloX\r\n0\r\n\r\n",  // data longer than its size
        "5\nhello\r\n0\r\n\r\n",     // bare LF
        "5\r\nhello\r\n0\r\n\n",     // bare LF at the end
        "-5\r\nhello\r\n",           // sign
        "1000000000000000\r\n",      // 2^60: too large
        "5 x\r\nhello\r\n",          // junk after the size
        "0\r\n folded: x\r\n\r\n",   // trailer starting with whitespace
        "5;a\x01\r\nhello\r\n",      // control byte in an extension
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        for (size_t cut = 0; cut <= strlen(bad[k]); cut++) {
            if (scan_split(bad[k], strlen(bad[k]), cut) != -1) {
                fail_msg("accepted %s cut at %zu", bad[k], cut);
            }
        }
    }
    // A chunk-size line longer than allowed.
    char longext[6000] = "5;";
    memset(longext + 2, 'x', 5000);
    strcpy(longext + 5002, "\r\nhello\r\n0\r\n\r\n");
    assert_int_equal(scan_split(longext, strlen(longext), 100), -1);
    // Leading zeros do not make a size too large.
    const char *zeros = "0000000000000000000005\r\nhello\r\n0\r\n\r\n";
    assert_int_equal(scan_split(zeros, strlen(zeros), 3), (long)strlen(zeros));
}

static void rewrite_request(void **state) {
    const char *in =
        "POST http://Orders.dc2.test:8080/a/b?c=d HTTP/1.1\r\n"
        "Host: wrong.example\r\n"
        "Proxy-Connection: keep-alive\r\n"
        "Proxy-Authorization: Basic c2VjcmV0\r\n"
        "Connection: X-Hop, Content-Length\r\n"
        "X-Hop: 1\r\n"
        "Keep-Alive: 5\r\n"
        "TE: trailers\r\n"
        "Upgrade: h2c\r\n"
        "Proxy: http://evil.example:8080\r\n"
        "proxy-status: forged\r\n"
        "Proxy-Foo: 1\r\n"
        "Proxyish: stays\r\n"
        "Content-Length: 3\r\n"
        "X-End: 2\r\n\r\n";
    gw_http_request r = parse_req(in);
    char out[1024];
    const char *auth = r.target + 7;
    const char *path = strchr(auth, '/');
    size_t n = gw_h1_write_request(&r, path, (size_t)(r.target + r.target_len - path), auth, (size_t)(path - auth), 0,
                                   out, sizeof(out));
    assert_true(n > 0);
    out[n] = '\0';
    assert_string_equal(out,
                        "POST /a/b?c=d HTTP/1.1\r\n"
                        "Host: Orders.dc2.test:8080\r\n"
                        "Proxyish: stays\r\n"
                        "Content-Length: 3\r\n"
                        "X-End: 2\r\n\r\n");
    n = gw_h1_write_request(&r, "", 0, "a", 1, 1, out, sizeof(out));
    out[n] = '\0';
    assert_non_null(strstr(out, "POST / HTTP/1.1\r\nHost: a\r\n"));
    assert_non_null(strstr(out, "Connection: close\r\n\r\n"));
    n = gw_h1_write_request(&r, "?q", 2, "a", 1, 0, out, sizeof(out));
    out[n] = '\0';
    assert_non_null(strstr(out, "POST /?q HTTP/1.1\r\n"));
    assert_int_equal(gw_h1_write_request(&r, "/", 1, "a", 1, 0, out, 40), 0);  // does not fit
}

static void rewrite_response(void **state) {
    gw_http_response r = parse_resp(
        "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
        "Transfer-Encoding: chunked\r\nContent-Length: 10\r\nX-End: 2\r\n\r\n");
    char out[512];
    size_t n = gw_h1_write_response(&r, 1, 1, 0, out, sizeof(out));
    out[n] = '\0';
    assert_string_equal(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-End: 2\r\n\r\n");
    n = gw_h1_write_response(&r, 0, 1, 0, out, sizeof(out));
    out[n] = '\0';
    assert_non_null(strstr(out, "HTTP/1.0 200 OK\r\n"));
    assert_non_null(strstr(out, "Connection: keep-alive\r\n\r\n"));
    n = gw_h1_write_response(&r, 1, 0, 0, out, sizeof(out));
    out[n] = '\0';
    assert_non_null(strstr(out, "Connection: close\r\n\r\n"));
    // For an HTTP/1.0 client a chunked body loses its framing: no Transfer-Encoding, and
    // the close ends it.
    n = gw_h1_write_response(&r, 0, 0, 1, out, sizeof(out));
    out[n] = '\0';
    assert_string_equal(out, "HTTP/1.0 200 OK\r\nX-End: 2\r\nConnection: close\r\n\r\n");
    r = parse_resp("HTTP/1.1 204\r\n\r\n");
    n = gw_h1_write_response(&r, 1, 1, 0, out, sizeof(out));
    out[n] = '\0';
    assert_string_equal(out, "HTTP/1.1 204 \r\n\r\n");
}

// The decoder takes the framing off at every split point and in place, and agrees with
// the scanner on where the body ends.
static void chunked_decode_every_split(void **state) {
    const char *body = "4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";
    size_t len = strlen(body), end = len - 4;
    for (size_t cut = 0; cut <= len; cut++) {
        gw_chunked c;
        gw_chunked_init(&c);
        uint8_t buf[128], out[128];
        memcpy(buf, body, len);
        size_t got = 0, used = 0, data;
        int done = 0;
        long k = gw_chunked_decode(&c, buf, cut, out, &data, &done);
        assert_true(k >= 0);
        used += (size_t)k;
        got += data;
        if (!done) {
            // The rest decoded in place, over its own input.
            k = gw_chunked_decode(&c, buf + used, len - used, buf + used, &data, &done);
            assert_true(k >= 0);
            memcpy(out + got, buf + used, data);
            used += (size_t)k;
            got += data;
        }
        assert_true(done);
        assert_int_equal(used, end);
        assert_int_equal(got, 24);
        assert_memory_equal(out, "Wikipedia in \r\n\r\nchunks.", 24);
    }
    gw_chunked c;
    gw_chunked_init(&c);
    uint8_t out[16];
    size_t data;
    int done;
    assert_int_equal(gw_chunked_decode(&c, (const uint8_t *)"4\r\nabcdX", 8, out, &data, &done), -1);
}

static void head_complete(void **state) {
    const char *msg = "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\nBODY";
    size_t end = strlen(msg) - 4;
    for (size_t cut = 0; cut < end; cut++) {
        size_t scanned = 0;
        assert_false(gw_h1_head_complete((const uint8_t *)msg, cut, &scanned));
        assert_int_equal(scanned, cut);
        // Continue from where it stopped: found exactly when the head is whole.
        assert_true(gw_h1_head_complete((const uint8_t *)msg, end, &scanned));
    }
    size_t scanned = 0;
    assert_true(gw_h1_head_complete((const uint8_t *)"GET / HTTP/1.1\n", 15, &scanned));  // bare LF
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_framing),
        cmocka_unit_test(response_framing),
        cmocka_unit_test(keep_alive),
        cmocka_unit_test(chunked_every_split),
        cmocka_unit_test(chunked_malformed),
        cmocka_unit_test(rewrite_request),
        cmocka_unit_test(rewrite_response),
        cmocka_unit_test(head_complete),
        cmocka_unit_test(chunked_decode_every_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
