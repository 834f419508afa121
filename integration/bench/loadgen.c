// loadgen: a small epoll load generator for the benchmark and the scale test, for what
// wrk cannot do: go through SOCKS5, and hold thousands of idle keep-alive tunnels.
//
//   loadgen close HOST:PORT SECONDS CONCURRENCY [--socks5 NAME:PORT]
//       new connection per request ("Connection: close"); prints
//       "requests N errors E p50_us P p99_us Q"
//   loadgen hold HOST:PORT COUNT [--socks5 NAME:PORT] [--from IP[,IP...]] [--path /P]
//       opens COUNT connections, one keep-alive request each ("established N"), then a
//       second request on every one while all are open ("exchanged N errors E"), then
//       holds them until standard input closes.
//
// Each request is "GET / HTTP/1.1" (or --path) for Host bench.test (or the SOCKS5 name); a reply must start with
// "HTTP/1.1 200" and is read to its Content-Length (hold) or to EOF (close).
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { S_CONNECTING, S_SOCKS_GREETING, S_SOCKS_REPLY, S_SEND, S_READ, S_IDLE, S_DONE };

typedef struct {
    int fd;
    int state;
    int requests;  // completed
    uint64_t t0;
    size_t got, want;  // reply bytes read; total expected (0: unknown yet)
    char buf[1024];
    size_t sent;
} conn;

static struct sockaddr_in g_target;
static char g_socks_host[256];
static uint16_t g_socks_port;
static int g_close_mode, g_ep;
static struct in_addr g_from[16];
static int g_num_from;
static char req_close[512], req_keep[512];

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int parse_hostport(const char *s, char *host, size_t cap, uint16_t *port) {
    const char *c = strrchr(s, ':');
    if (c == NULL || (size_t)(c - s) >= cap) {
        return 0;
    }
    memcpy(host, s, (size_t)(c - s));
    host[c - s] = '\0';
    *port = (uint16_t)atoi(c + 1);
    return *port != 0;
}

static void watch(conn *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(g_ep, op, c->fd, &ev);
}

static int conn_open(conn *c, int index) {
    memset(c, 0, sizeof(*c));
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        return 0;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (g_num_from > 0) {
        struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr = g_from[index % g_num_from]};
        bind(c->fd, (struct sockaddr *)&src, sizeof(src));
    }
    c->t0 = now_us();
    if (connect(c->fd, (struct sockaddr *)&g_target, sizeof(g_target)) != 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        return 0;
    }
    c->state = S_CONNECTING;
    watch(c, EPOLLOUT | EPOLLIN, EPOLL_CTL_ADD);
    return 1;
}

static void conn_close(conn *c) {
    if (c->fd >= 0) {
        close(c->fd);
    }
    c->fd = -1;
    c->state = S_DONE;
}

static void start_request(conn *c) {
    c->state = S_SEND;
    c->sent = 0;
    c->got = c->want = 0;
    watch(c, EPOLLOUT | EPOLLIN, EPOLL_CTL_MOD);
}

// step advances |c| on readiness. Returns 1 when a request completed, -1 on an error,
// 0 otherwise.
static int step(conn *c) {
    for (;;) {
        switch (c->state) {
            case S_CONNECTING: {
                int e = 0;
                socklen_t l = sizeof(e);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &l);
                if (e != 0) {
                    return -1;
                }
                if (g_socks_port == 0) {
                    start_request(c);
                    continue;
                }
                uint8_t g[3] = {5, 1, 0};
                if (write(c->fd, g, 3) != 3) {
                    return errno == EAGAIN ? 0 : -1;
                }
                c->state = S_SOCKS_GREETING;
                c->got = 0;
                watch(c, EPOLLIN, EPOLL_CTL_MOD);
                return 0;
            }
            case S_SOCKS_GREETING:
            case S_SOCKS_REPLY: {
                size_t need = c->state == S_SOCKS_GREETING ? 2 : 10;
                ssize_t n = read(c->fd, c->buf + c->got, need - c->got);
                if (n <= 0) {
                    return n < 0 && errno == EAGAIN ? 0 : -1;
                }
                c->got += (size_t)n;
                if (c->got < need) {
                    return 0;
                }
                if (c->state == S_SOCKS_GREETING) {
                    if (c->buf[0] != 5 || c->buf[1] != 0) {
                        return -1;
                    }
                    uint8_t r[300];
                    size_t hl = strlen(g_socks_host);
                    r[0] = 5, r[1] = 1, r[2] = 0, r[3] = 3, r[4] = (uint8_t)hl;
                    memcpy(r + 5, g_socks_host, hl);
                    r[5 + hl] = (uint8_t)(g_socks_port >> 8), r[6 + hl] = (uint8_t)g_socks_port;
                    if (write(c->fd, r, 7 + hl) != (ssize_t)(7 + hl)) {
                        return -1;
                    }
                    c->state = S_SOCKS_REPLY;
                    c->got = 0;
                    return 0;
                }
                if (c->buf[1] != 0) {
                    return -1;  // REP: the gateway refused
                }
                start_request(c);
                continue;
            }
            case S_SEND: {
                const char *r = g_close_mode ? req_close : req_keep;
                size_t len = strlen(r);
                ssize_t n = write(c->fd, r + c->sent, len - c->sent);
                if (n < 0) {
                    return errno == EAGAIN ? 0 : -1;
                }
                c->sent += (size_t)n;
                if (c->sent < len) {
                    return 0;
                }
                c->state = S_READ;
                watch(c, EPOLLIN, EPOLL_CTL_MOD);
                continue;
            }
            case S_READ: {
                char tmp[4096];
                ssize_t n = read(c->fd, tmp, sizeof(tmp));
                if (n < 0) {
                    return errno == EAGAIN ? 0 : -1;
                }
                if (n == 0) {
                    if (g_close_mode && c->got >= 12 && memcmp(c->buf, "HTTP/1.1 200", 12) == 0) {
                        c->requests++;
                        return 1;
                    }
                    return -1;
                }
                size_t keep = sizeof(c->buf) - 1 - c->got;
                memcpy(c->buf + c->got, tmp, (size_t)n < keep ? (size_t)n : keep);
                c->got += (size_t)n < keep ? (size_t)n : keep;
                c->buf[c->got] = '\0';
                if (g_close_mode) {
                    continue;
                }
                if (c->want == 0) {
                    char *end = strstr(c->buf, "\r\n\r\n");
                    char *cl = strcasestr(c->buf, "\r\nContent-Length:");
                    if (end == NULL) {
                        continue;
                    }
                    if (memcmp(c->buf, "HTTP/1.1 200", 12) != 0 || cl == NULL) {
                        return -1;
                    }
                    c->want = (size_t)(end + 4 - c->buf) + (size_t)atol(cl + 17);
                }
                if (c->got >= c->want) {
                    c->requests++;
                    c->state = S_IDLE;
                    watch(c, EPOLLIN, EPOLL_CTL_MOD);
                    return 1;
                }
                continue;
            }
            case S_IDLE: {
                char tmp[64];
                ssize_t n = read(c->fd, tmp, sizeof(tmp));
                return n < 0 && errno == EAGAIN ? 0 : -1;  // an idle tunnel must stay quiet and open
            }
            default:
                return 0;
        }
    }
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int run_close(int seconds, int concurrency) {
    g_close_mode = 1;
    conn *cs = calloc((size_t)concurrency, sizeof(conn));
    size_t lat_cap = 1 << 22, nlat = 0;
    uint64_t *lat = malloc(lat_cap * sizeof(uint64_t));
    long errors = 0;
    uint64_t end = now_us() + (uint64_t)seconds * 1000000u;
    for (int i = 0; i < concurrency; i++) {
        errors += !conn_open(&cs[i], i);
    }
    struct epoll_event evs[256];
    while (now_us() < end) {
        int n = epoll_wait(g_ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            int r = step(c);
            if (r != 0) {
                if (r > 0 && nlat < lat_cap) {
                    lat[nlat++] = now_us() - c->t0;
                }
                errors += r < 0;
                int index = (int)(c - cs);
                conn_close(c);
                if (!conn_open(c, index)) {
                    errors++;
                }
            }
        }
    }
    qsort(lat, nlat, sizeof(uint64_t), cmp_u64);
    printf("requests %zu errors %ld p50_us %llu p99_us %llu\n", nlat, errors,
           (unsigned long long)(nlat ? lat[nlat / 2] : 0), (unsigned long long)(nlat ? lat[nlat * 99 / 100] : 0));
    fflush(stdout);
    for (int i = 0; i < concurrency; i++) {
        conn_close(&cs[i]);
    }
    free(cs);
    free(lat);
    return 0;
}

// run_phase drives every connection until each has |target| completed requests.
static long run_phase(conn *cs, int count, int target, int timeout_s) {
    long errors = 0;
    int pending = 0;
    for (int i = 0; i < count; i++) {
        pending += cs[i].state != S_DONE && cs[i].requests < target;
    }
    uint64_t end = now_us() + (uint64_t)timeout_s * 1000000u;
    struct epoll_event evs[256];
    while (pending > 0 && now_us() < end) {
        int n = epoll_wait(g_ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            int r = step(c);
            if (r < 0) {
                errors++;
                pending -= c->requests < target;
                conn_close(c);
            } else if (r > 0 && c->requests == target) {
                pending--;
            }
        }
    }
    return errors + pending;
}

static int run_hold(int count) {
    struct rlimit rl = {(rlim_t)count + 100, (rlim_t)count + 100};
    setrlimit(RLIMIT_NOFILE, &rl);
    conn *cs = calloc((size_t)count, sizeof(conn));
    long errors = 0;
    // Open in waves, so the gateway's accept queue and the terminator are not flooded.
    for (int base = 0; base < count; base += 500) {
        int top = base + 500 < count ? base + 500 : count;
        for (int i = base; i < top; i++) {
            if (!conn_open(&cs[i], i)) {
                cs[i].state = S_DONE;
                errors++;
            }
        }
        errors += run_phase(cs, top, 1, 60);
    }
    int ok = 0;
    for (int i = 0; i < count; i++) {
        ok += cs[i].state == S_IDLE;
    }
    printf("established %d errors %ld\n", ok, errors);
    fflush(stdout);
    for (int i = 0; i < count; i++) {
        if (cs[i].state == S_IDLE) {
            start_request(&cs[i]);
        }
    }
    long errors2 = run_phase(cs, count, 2, 120);
    ok = 0;
    for (int i = 0; i < count; i++) {
        ok += cs[i].state == S_IDLE && cs[i].requests == 2;
    }
    printf("exchanged %d errors %ld\n", ok, errors2);
    fflush(stdout);
    char line[16];
    while (fgets(line, sizeof(line), stdin) != NULL) {
    }
    ok = 0;
    for (int i = 0; i < count; i++) {
        // Still open and quiet after the wait: nothing timed the idle tunnels out.
        if (cs[i].state == S_IDLE && step(&cs[i]) == 0) {
            ok++;
        }
        conn_close(&cs[i]);
    }
    printf("still_open %d\n", ok);
    fflush(stdout);
    free(cs);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr,
                "usage: loadgen close HOST:PORT SECONDS CONCURRENCY [--socks5 NAME:PORT] [--path /P]\n"
                "       loadgen hold HOST:PORT COUNT [--socks5 NAME:PORT] [--from IP,...] [--path /P]\n");
        return 2;
    }
    char host[64];
    uint16_t port;
    if (!parse_hostport(argv[2], host, sizeof(host), &port) || inet_pton(AF_INET, host, &g_target.sin_addr) != 1) {
        fprintf(stderr, "loadgen: bad target %s\n", argv[2]);
        return 2;
    }
    g_target.sin_family = AF_INET;
    g_target.sin_port = htons(port);
    int first_opt = strcmp(argv[1], "close") == 0 ? 5 : 4;
    const char *path = "/";
    for (int i = first_opt; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--socks5") == 0 &&
            parse_hostport(argv[i + 1], g_socks_host, sizeof(g_socks_host), &g_socks_port)) {
            continue;
        }
        if (strcmp(argv[i], "--path") == 0 && argv[i + 1][0] == '/') {
            path = argv[i + 1];
            continue;
        }
        if (strcmp(argv[i], "--from") == 0) {
            for (char *p = strtok(argv[i + 1], ","); p != NULL && g_num_from < 16; p = strtok(NULL, ",")) {
                inet_pton(AF_INET, p, &g_from[g_num_from++]);
            }
            continue;
        }
        fprintf(stderr, "loadgen: bad option %s\n", argv[i]);
        return 2;
    }
    char host_header[256] = "bench.test";
    if (g_socks_port != 0) {
        snprintf(host_header, sizeof(host_header), "%s", g_socks_host);
    }
    snprintf(req_close, sizeof(req_close), "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path,
             host_header);
    snprintf(req_keep, sizeof(req_keep), "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host_header);
    signal(SIGPIPE, SIG_IGN);
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    if (strcmp(argv[1], "close") == 0 && argc >= 5) {
        return run_close(atoi(argv[3]), atoi(argv[4]));
    }
    if (strcmp(argv[1], "hold") == 0) {
        return run_hold(atoi(argv[3]));
    }
    fprintf(stderr, "loadgen: unknown mode %s\n", argv[1]);
    return 2;
}
