// floor: what a resumed mTLS tunnel costs a gateway at the least on this machine, with
// this BoringSSL: the benchmark's "floor" row (bench.py), against which the gateway's CPU
// per new tunnel is compared (the target: at most 1.5 times it). Two parts, each measured
// without any waiting (a blocking proxy would pay a sleep and a wake-up per read, which
// an event loop does not, and would be no floor):
//
//   tls  the client side of a resumed TLS 1.3 handshake with a client certificate's
//        session (X25519, the key schedule, Finished), a request written and a response
//        and close_notify read, SSL_new to SSL_free: the client's calls alone are timed
//        (CLOCK_THREAD_CPUTIME_ID, its own cost taken off), against an in-process server
//        over memory BIOs with the benchmark's PKI.
//   tcp  half of what two loopback TCP connections cost with both ends in this thread
//        (socket, connect, accept, the tunnel's messages each way, both closes): a
//        tunnel holds one end of each.
//
//   mtlsgw_floor ITERATIONS CLIENT_CERT CLIENT_KEY SERVER_TRUST SERVER_CHAIN SERVER_KEY CLIENT_CA
//
// Prints "tls_us T tcp_us C floor_us F" (medians of 5 batches).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef OPENSSL_IS_BORINGSSL
#error "the floor is measured with BoringSSL, as the gateway is"
#endif

static double thread_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "floor: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

// ---- tls ----

static SSL_SESSION *g_session;  // the newest session the server gave

static int on_session(SSL *ssl, SSL_SESSION *s) {
    (void)ssl;
    SSL_SESSION_free(g_session);
    g_session = s;
    return 1;  // ours now
}

static double g_client_ns;  // the client's calls, summed

static const char request[] = "GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n";
static const char response[] =
    "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
    "Connection: close\r\n\r\nok\n";

// one_tls runs one tunnel's TLS: resumed handshake, request, response, close_notify both
// ways. The client's calls are timed in three blocks (TIMED_BLOCKS), the server's not.
#define TIMED_BLOCKS 3
static int one_tls(SSL_CTX *cctx, SSL_CTX *sctx) {
    BIO *cb, *sb;
    if (!BIO_new_bio_pair(&cb, 1 << 16, &sb, 1 << 16)) {
        die("BIO_new_bio_pair");
    }
    SSL *s = SSL_new(sctx);
    SSL_set_bio(s, sb, sb);
    SSL_set_accept_state(s);

    double t0 = thread_ns();  // the ClientHello
    SSL *c = SSL_new(cctx);
    SSL_set_bio(c, cb, cb);
    SSL_set_tlsext_host_name(c, "orders.dc2.test");
    if (g_session != NULL) {
        SSL_set_session(c, g_session);
    }
    SSL_set_connect_state(c);
    int cr = SSL_do_handshake(c);
    g_client_ns += thread_ns() - t0;

    SSL_do_handshake(s);  // ServerHello ... Finished (a full handshake: and the CertificateRequest)

    t0 = thread_ns();  // the server's flight, Finished, the request
    for (int i = 0; i < 3 && cr != 1; i++) {
        cr = SSL_do_handshake(c);
        if (cr != 1) {
            g_client_ns += thread_ns() - t0;
            SSL_do_handshake(s);
            t0 = thread_ns();
        }
    }
    int wr = cr == 1 ? SSL_write(c, request, sizeof(request) - 1) : -1;
    g_client_ns += thread_ns() - t0;
    if (wr <= 0) {
        die("handshake");
    }

    char buf[4096];
    int n = SSL_read(s, buf, sizeof(buf));  // the server finishes its handshake, sends tickets
    if (n <= 0 || SSL_write(s, response, sizeof(response) - 1) <= 0) {
        die("server");
    }
    SSL_shutdown(s);

    t0 = thread_ns();  // the tickets, the response, close_notify both ways, the end
    int got = 0, r;
    while ((r = SSL_read(c, buf, sizeof(buf))) > 0) {
        got += r;
    }
    SSL_shutdown(c);
    int resumed = SSL_session_reused(c);
    SSL_free(c);
    g_client_ns += thread_ns() - t0;

    SSL_free(s);
    if (got != (int)sizeof(response) - 1) {
        die("response");
    }
    return resumed;
}

static SSL_CTX *server_ctx(const char *chain, const char *key, const char *ca) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL || !SSL_CTX_use_certificate_chain_file(ctx, chain) ||
        !SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) || !SSL_CTX_load_verify_locations(ctx, ca, NULL)) {
        die("server certificate");
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_session_id_context(ctx, (const uint8_t *)"floor", 5);
    return ctx;
}

static SSL_CTX *client_ctx(const char *cert, const char *key, const char *trust) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (!SSL_CTX_use_certificate_chain_file(ctx, cert) || !SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) ||
        !SSL_CTX_load_verify_locations(ctx, trust, NULL)) {
        die("client certificate");
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx, on_session);
    return ctx;
}

// ---- tcp ----

static int listener(struct sockaddr_in *a) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    socklen_t len = sizeof(*a);
    *a = (struct sockaddr_in){.sin_family = AF_INET};
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (fd < 0 || bind(fd, (struct sockaddr *)a, sizeof(*a)) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)a, &len) != 0) {
        die("listen");
    }
    return fd;
}

// one_connection: connect, accept, the messages of |flights| (sizes in bytes, from the
// connecting side first, then alternating), both closed. On loopback each step's data is
// there when the next one reads it: no waits.
static void one_connection(int lfd, const struct sockaddr_in *a, const size_t *flights, size_t n) {
    static char buf[4096];
    int one = 1;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (c < 0 || connect(c, (const struct sockaddr *)a, sizeof(*a)) != 0) {
        die("connect");
    }
    int s = accept(lfd, NULL, NULL);
    for (size_t i = 0; i < n; i++) {
        int from = i % 2 ? s : c, to = i % 2 ? c : s;
        if (s < 0 || write(from, buf, flights[i]) != (ssize_t)flights[i] ||
            read(to, buf, sizeof(buf)) != (ssize_t)flights[i]) {
            die("exchange");
        }
    }
    close(c);
    close(s);
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// median_of_5 runs |batch| five times (|n| tunnels each) and returns the median ns per tunnel.
static double median_of_5(double (*batch)(int n, void *arg), int n, void *arg) {
    double v[5];
    for (int i = 0; i < 5; i++) {
        v[i] = batch(n, arg);
    }
    qsort(v, 5, sizeof(v[0]), cmp);
    return v[2];
}

typedef struct {
    SSL_CTX *cctx, *sctx;
} tls_arg;

static double tls_batch(int n, void *arg) {
    tls_arg *a = arg;
    g_client_ns = 0;
    for (int i = 0; i < n; i++) {
        if (!one_tls(a->cctx, a->sctx)) {
            die("a session was not resumed");
        }
    }
    return g_client_ns / n;
}

// The messages of a resumed tunnel as the benchmark's terminator (nginx stream) and its
// backend exchange them: the request and the response toward the client; toward the
// terminator the ClientHello (with its ticket), the server's flight, Finished with the
// request, and the tickets, the response and close_notify.
static const size_t client_side[] = {sizeof(request) - 1, sizeof(response) - 1};
static const size_t upstream_side[] = {957, 229, 141, 894};

static double tcp_batch(int n, void *arg) {
    (void)arg;
    struct sockaddr_in ga, sa;
    int gl = listener(&ga), sl = listener(&sa);
    double t0 = thread_ns();
    for (int i = 0; i < n; i++) {
        one_connection(gl, &ga, client_side, 2);
        one_connection(sl, &sa, upstream_side, 4);
    }
    double per = (thread_ns() - t0) / n / 2;  // a tunnel holds one end of each
    close(gl);
    close(sl);
    return per;
}

static double clock_cost_ns(void) {
    double sum = 0;
    for (int i = 0; i < 10000; i++) {
        double t0 = thread_ns();
        sum += thread_ns() - t0;
    }
    return sum / 10000;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s ITERATIONS CLIENT_CERT CLIENT_KEY SERVER_TRUST SERVER_CHAIN SERVER_KEY CLIENT_CA\n",
                argv[0]);
        return 2;
    }
    int n = atoi(argv[1]);
    if (n < 10 || n > 100000) {
        die("ITERATIONS: from 10 to 100000");
    }
    tls_arg a = {client_ctx(argv[2], argv[3], argv[4]), server_ctx(argv[5], argv[6], argv[7])};
    if (one_tls(a.cctx, a.sctx)) {  // the full handshake: a session to resume from now on
        die("the first handshake resumed a session it could not have");
    }
    if (g_session == NULL) {
        die("no session from the full handshake");
    }
    // What the clock itself costs in the timed blocks is taken off.
    double clock = clock_cost_ns();
    double tls = median_of_5(tls_batch, n, &a) - TIMED_BLOCKS * clock;
    double tcp = median_of_5(tcp_batch, n, NULL);
    printf("tls_us %.1f tcp_us %.1f floor_us %.1f\n", tls / 1e3, tcp / 1e3, (tls + tcp) / 1e3);
    SSL_CTX_free(a.cctx);
    SSL_CTX_free(a.sctx);
    SSL_SESSION_free(g_session);
    return 0;
}
