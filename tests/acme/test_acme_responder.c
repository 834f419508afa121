// The http-01 responder over loopback: a published token's key authorization (GET and
// HEAD), an unknown or withdrawn token, another path, a path that tries to climb out,
// another method, a malformed head, an oversized one, and a client that never finishes
// its head while another is answered.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/acme/responder.h"
#include "gateway/base/netutil.h"

static gw_acme_responder *resp;
static uint16_t port;

static int setup(void **state) {
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = gw_listen_socket((struct sockaddr *)&a, sizeof(a), 0);
    socklen_t l = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    port = ntohs(a.sin_port);
    char err[200];
    resp = gw_acme_responder_start(fd, err, sizeof(err));
    return resp == NULL;
}

static int teardown(void **state) {
    gw_acme_responder_stop(resp);
    return 0;
}

static int connect_to(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

// ask sends |request| and returns the whole answer (static), read to the close.
static const char *ask(const char *request, size_t len) {
    static char out[8192];
    int fd = connect_to();
    assert_int_equal(send(fd, request, len, 0), (ssize_t)len);
    size_t n = 0;
    ssize_t got;
    while (n < sizeof(out) - 1 && (got = read(fd, out + n, sizeof(out) - 1 - n)) > 0) {
        n += (size_t)got;
    }
    out[n] = '\0';
    close(fd);
    return out;
}

#define ASK(s) ask(s, sizeof(s) - 1)

static void published_token_answered(void **state) {
    assert_true(gw_acme_responder_publish(resp, "tok-EN_1", "tok-EN_1.thumb"));
    const char *a = ASK("GET /.well-known/acme-challenge/tok-EN_1 HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n");
    assert_non_null(strstr(a, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(a, "\r\n\r\ntok-EN_1.thumb"));
    a = ASK("HEAD /.well-known/acme-challenge/tok-EN_1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_non_null(strstr(a, "HTTP/1.1 200 OK\r\n"));
    assert_null(strstr(a, "thumb"));  // no body for HEAD
    gw_acme_responder_withdraw(resp, "tok-EN_1");
    a = ASK("GET /.well-known/acme-challenge/tok-EN_1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_non_null(strstr(a, "HTTP/1.1 404 "));
    assert_null(strstr(a, "thumb"));
}

static void everything_else_refused(void **state) {
    assert_true(gw_acme_responder_publish(resp, "t2", "t2.thumb"));
    assert_non_null(strstr(ASK("GET /.well-known/acme-challenge/other HTTP/1.1\r\nHost: x\r\n\r\n"), " 404 "));
    assert_non_null(strstr(ASK("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), " 404 "));
    assert_non_null(
        strstr(ASK("GET /.well-known/acme-challenge/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n"), " 404 "));
    assert_non_null(strstr(ASK("GET /.well-known/acme-challenge/t2?x HTTP/1.1\r\nHost: x\r\n\r\n"), " 404 "));
    assert_non_null(strstr(ASK("POST /.well-known/acme-challenge/t2 HTTP/1.1\r\nHost: x\r\n\r\n"), " 405 "));
    assert_non_null(strstr(ASK("GET /.well-known/acme-challenge/t2 HTTP/1.1\r\nHost x\r\n\r\n"), " 400 "));
    char big[4096];
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    assert_non_null(strstr(ask(big, sizeof(big)), " 400 "));
    assert_false(gw_acme_responder_publish(resp, "bad/token", "x"));  // not base64url
    gw_acme_responder_withdraw(resp, "t2");
}

static void a_silent_client_does_not_hold_the_others(void **state) {
    int quiet = connect_to();  // says nothing
    assert_true(gw_acme_responder_publish(resp, "t3", "t3.thumb"));
    assert_non_null(strstr(ASK("GET /.well-known/acme-challenge/t3 HTTP/1.1\r\nHost: x\r\n\r\n"), "t3.thumb"));
    char b[16];
    assert_int_equal(read(quiet, b, sizeof(b)), 0);  // dropped after its 5 s, without an answer
    close(quiet);
    gw_acme_responder_withdraw(resp, "t3");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(published_token_answered),
        cmocka_unit_test(everything_else_refused),
        cmocka_unit_test(a_silent_client_does_not_hold_the_others),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
