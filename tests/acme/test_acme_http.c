// The ACME client's HTTPS against an in-process TLS server on loopback (a thread that
// answers one canned response per connection): a JSON body with its Replay-Nonce,
// Location and Retry-After, a chunked body, Retry-After as an HTTP-date, a body over the
// limit refused, a response cut off, a server whose certificate the trust does not
// hold, one whose name is not the URL's, and URLs that are not https.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/acme/http.h"
#include "tests/selfsigned.h"

static SSL_CTX *server_ctx;
static char trust_path[64], other_path[64];  // made per run (process id), removed at the end

// cert: a self-signed P-256 certificate for |san| (an IP), written to |path| if given.
static X509 *cert(EVP_PKEY **out_key, const char *san, char *path) {
    EVP_PKEY *key = NULL;
    X509 *x = selfsigned(&key, "acme.test", san);
    assert_non_null(x);
    if (path != NULL) {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
        assert_true(fd >= 0);
        FILE *f = fdopen(fd, "w");
        PEM_write_X509(f, x);
        fclose(f);
    }
    *out_key = key;
    return x;
}

static int setup(void **state) {
    signal(SIGPIPE, SIG_IGN);  // as the gateway does (http.h): a peer gone is an error, not a signal
    snprintf(trust_path, sizeof(trust_path), "/tmp/mtlsgw-acme-trust.%d", (int)getpid());
    snprintf(other_path, sizeof(other_path), "/tmp/mtlsgw-acme-other.%d", (int)getpid());
    EVP_PKEY *key, *other_key;
    X509 *x = cert(&key, "IP:127.0.0.1", trust_path);
    X509 *other = cert(&other_key, "IP:127.0.0.1", other_path);  // trusted by nobody here
    server_ctx = SSL_CTX_new(TLS_method());
    SSL_CTX_use_certificate(server_ctx, x);
    SSL_CTX_use_PrivateKey(server_ctx, key);
    X509_free(x);
    X509_free(other);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other_key);
    return 0;
}

static int teardown(void **state) {
    SSL_CTX_free(server_ctx);
    unlink(trust_path);
    unlink(other_path);
    return 0;
}

typedef struct {
    int lfd;
    const char *response;  // sent after the request head, then a close
    char request[4096];    // what came
} server;

static void *serve(void *arg) {
    server *s = arg;
    int c = accept(s->lfd, NULL, NULL);
    SSL *ssl = SSL_new(server_ctx);
    SSL_set_fd(ssl, c);
    if (SSL_accept(ssl) == 1) {
        size_t len = 0;
        while (len < sizeof(s->request) - 1 && strstr(s->request, "\r\n\r\n") == NULL) {
            int n = SSL_read(ssl, s->request + len, (int)(sizeof(s->request) - 1 - len));
            if (n <= 0) {
                break;
            }
            len += (size_t)n;
            s->request[len] = '\0';
        }
        SSL_write(ssl, s->response, (int)strlen(s->response));
        SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    close(c);
    return NULL;
}

// exchange runs one request against a server answering |response|; returns what
// gw_acme_http_do returned.
static int exchange_at(const char *host, const char *response, const char *trust, gw_acme_response *resp, char *err,
                       server *s) {
    memset(s, 0, sizeof(*s));
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof(a);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 4), 0);
    getsockname(s->lfd, (struct sockaddr *)&a, &l);
    s->response = response;
    pthread_t th;
    pthread_create(&th, NULL, serve, s);
    char url[128];
    snprintf(url, sizeof(url), "https://%s:%u/acme/new-order", host, ntohs(a.sin_port));
    char e[300];
    gw_acme_http *h = gw_acme_http_new(trust, e, sizeof(e));
    assert_non_null(h);
    err[0] = '\0';
    int r = gw_acme_http_do(h, "POST", url, "application/jose+json", "{\"x\":1}", 5000, resp, err, 300);
    pthread_join(th, NULL);
    close(s->lfd);
    gw_acme_http_free(h);
    return r;
}

static int exchange(const char *response, const char *trust, gw_acme_response *resp, char *err, server *s) {
    return exchange_at("127.0.0.1", response, trust, resp, err, s);
}

static void json_with_nonce_location_retry_after(void **state) {
    gw_acme_response r;
    char err[300];
    server s;
    int ok = exchange(
        "HTTP/1.1 201 Created\r\nReplay-Nonce: abc_-123\r\nLocation: https://127.0.0.1/order/7\r\n"
        "Retry-After: 30\r\nContent-Type: application/json\r\nContent-Length: 18\r\n\r\n"
        "{\"status\":\"ready\"}",
        trust_path, &r, err, &s);
    assert_true(ok);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.nonce, "abc_-123");
    assert_string_equal(r.location, "https://127.0.0.1/order/7");
    assert_string_equal(r.content_type, "application/json");
    assert_int_equal(r.retry_after_s, 30);
    assert_string_equal(r.body, "{\"status\":\"ready\"}");
    // The request: the path, the JOSE content type, its length, the body.
    assert_non_null(strstr(s.request, "POST /acme/new-order HTTP/1.1\r\n"));
    assert_non_null(strstr(s.request, "\r\nHost: 127.0.0.1:"));  // the port is part of it (URLs are made of it)
    assert_non_null(strstr(s.request, "Content-Type: application/jose+json\r\n"));
    assert_non_null(strstr(s.request, "Content-Length: 7\r\n"));
    gw_acme_response_free(&r);
}

static void chunked_body_and_http_date(void **state) {
    gw_acme_response r;
    char err[300], response[512];
    server s;
    time_t later = time(NULL) + 120;
    char date[64];
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", gmtime(&later));
    snprintf(response, sizeof(response),
             "HTTP/1.1 503 Service Unavailable\r\nRetry-After: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
             "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
             date);
    assert_true(exchange(response, trust_path, &r, err, &s));
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "hello world");
    assert_true(r.retry_after_s >= 110 && r.retry_after_s <= 120);
    assert_string_equal(r.nonce, "");
    gw_acme_response_free(&r);
}

static void body_over_the_limit_and_cut_off(void **state) {
    gw_acme_response r;
    char err[300], head[128];
    server s;
    snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", GW_ACME_MAX_BODY + 1);
    size_t n = strlen(head) + GW_ACME_MAX_BODY + 20000;
    char *big = malloc(n + 1);
    memset(big, 'a', n);
    memcpy(big, head, strlen(head));
    big[n] = '\0';
    assert_false(exchange(big, trust_path, &r, err, &s));
    assert_non_null(strstr(err, "larger than"));
    free(big);
    assert_false(exchange("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", trust_path, &r, err, &s));
    assert_non_null(strstr(err, "cut off"));
}

static void untrusted_server_refused(void **state) {
    gw_acme_response r;
    char err[300];
    server s;
    assert_false(exchange("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", other_path, &r, err, &s));
    assert_non_null(strstr(err, "not trusted"));
    assert_string_equal(s.request, "");  // nothing was sent to it
}

static void name_not_in_the_certificate_refused(void **state) {
    gw_acme_response r;
    char err[300];
    server s;
    // The certificate names 127.0.0.1 only; "localhost" reaches the same server.
    assert_false(exchange_at("localhost", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", trust_path, &r, err, &s));
    assert_non_null(strstr(err, "not trusted"));
    assert_string_equal(s.request, "");
}

static void only_https_urls(void **state) {
    char err[300];
    gw_acme_response r;
    gw_acme_http *h = gw_acme_http_new(trust_path, err, sizeof(err));
    assert_false(gw_acme_http_do(h, "GET", "http://127.0.0.1:1/dir", NULL, NULL, 1000, &r, err, sizeof(err)));
    assert_non_null(strstr(err, "not an https:// URL"));
    assert_false(gw_acme_http_do(h, "GET", "https://user@127.0.0.1/dir", NULL, NULL, 1000, &r, err, sizeof(err)));
    gw_acme_http_free(h);
    assert_null(gw_acme_http_new("/nonexistent/trust.pem", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/trust.pem"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(json_with_nonce_location_retry_after), cmocka_unit_test(chunked_body_and_http_date),
        cmocka_unit_test(body_over_the_limit_and_cut_off),      cmocka_unit_test(untrusted_server_refused),
        cmocka_unit_test(name_not_in_the_certificate_refused),  cmocka_unit_test(only_https_urls),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
