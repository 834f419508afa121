// responder: http-01 answers (see responder.h).
#include "gateway/acme/responder.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gateway/acme/jws.h"
#include "gateway/base/loop.h"
#include "gateway/proto/http.h"

#define MAX_TOKENS 16
#define MAX_CLIENTS 64
#define HEAD_MAX 2048
#define HEAD_DEADLINE_MS 5000
#define PREFIX "/.well-known/acme-challenge/"

typedef struct {
    char token[128];
    char answer[256];
} pending;

typedef struct {
    int fd;
    uint64_t deadline_ms;
    size_t len;
    char head[HEAD_MAX];
} client;

struct gw_acme_responder {
    int listen_fd;
    int wake[2];  // a byte here stops the thread
    pthread_t thread;
    pthread_mutex_t lock;
    pending tokens[MAX_TOKENS];
    client clients[MAX_CLIENTS];
};

static int base64url_token(const char *s) {
    return s[0] != '\0' && strlen(s) < sizeof(((pending *)0)->token) && gw_b64url_valid(s);
}

int gw_acme_responder_publish(gw_acme_responder *r, const char *token, const char *key_authorization) {
    if (!base64url_token(token) || strlen(key_authorization) >= sizeof(r->tokens[0].answer)) {
        return 0;
    }
    int ok = 0;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < MAX_TOKENS && !ok; i++) {
        if (r->tokens[i].token[0] == '\0' || strcmp(r->tokens[i].token, token) == 0) {
            snprintf(r->tokens[i].token, sizeof(r->tokens[i].token), "%s", token);
            snprintf(r->tokens[i].answer, sizeof(r->tokens[i].answer), "%s", key_authorization);
            ok = 1;
        }
    }
    pthread_mutex_unlock(&r->lock);
    return ok;
}

void gw_acme_responder_withdraw(gw_acme_responder *r, const char *token) {
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < MAX_TOKENS; i++) {
        if (strcmp(r->tokens[i].token, token) == 0) {
            memset(&r->tokens[i], 0, sizeof(r->tokens[i]));
        }
    }
    pthread_mutex_unlock(&r->lock);
}

static void reply(int fd, int status, const char *reason, const char *body, int with_body) {
    char out[512];
    size_t blen = strlen(body);
    int n = snprintf(out, sizeof(out),
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     status, reason, blen, with_body ? body : "");
    if (n > 0 && (size_t)n < sizeof(out)) {
        ssize_t w = send(fd, out, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;  // a client that cannot take 400 bytes at once gets nothing: it was not the CA
    }
}

// answer replies to the complete head in |c| (1), or says it is not complete yet (0).
static int answer(gw_acme_responder *r, client *c) {
    gw_http_request req;
    gw_http_status st = gw_http_parse_request(c->head, c->len, &req);
    if (st == GW_HTTP_NEED_MORE) {
        if (c->len < HEAD_MAX) {
            return 0;
        }
        reply(c->fd, 400, "Bad Request", "request head too large\n", 1);
        return 1;
    }
    if (st != GW_HTTP_OK) {
        reply(c->fd, 400, "Bad Request", "malformed request\n", 1);
        return 1;
    }
    int head = gw_http_token_eq(req.method, req.method_len, "HEAD");
    if (!head && !gw_http_token_eq(req.method, req.method_len, "GET")) {
        reply(c->fd, 405, "Method Not Allowed", "only GET\n", 1);
        return 1;
    }
    size_t plen = strlen(PREFIX);
    char token[128] = "";
    if (req.target_len > plen && req.target_len - plen < sizeof(token) && memcmp(req.target, PREFIX, plen) == 0) {
        memcpy(token, req.target + plen, req.target_len - plen);
        token[req.target_len - plen] = '\0';
    }
    char body[256] = "";
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; token[0] != '\0' && base64url_token(token) && i < MAX_TOKENS; i++) {
        if (strcmp(r->tokens[i].token, token) == 0) {
            snprintf(body, sizeof(body), "%s", r->tokens[i].answer);
        }
    }
    pthread_mutex_unlock(&r->lock);
    if (body[0] == '\0') {
        reply(c->fd, 404, "Not Found", "no such challenge\n", !head);
    } else {
        reply(c->fd, 200, "OK", body, !head);
    }
    return 1;
}

static void drop(client *c) {
    close(c->fd);
    c->fd = -1;
}

static void *serve(void *arg) {
    gw_acme_responder *r = arg;
    struct pollfd p[MAX_CLIENTS + 2];
    for (;;) {
        size_t n = 0;
        p[n++] = (struct pollfd){.fd = r->wake[0], .events = POLLIN};
        p[n++] = (struct pollfd){.fd = r->listen_fd, .events = POLLIN};
        uint64_t now = gw_monotonic_ms(), next = now + HEAD_DEADLINE_MS;
        for (size_t i = 0; i < MAX_CLIENTS; i++) {
            client *c = &r->clients[i];
            if (c->fd >= 0 && c->deadline_ms <= now) {
                drop(c);  // no head in time
            }
            p[n++] = (struct pollfd){.fd = c->fd, .events = POLLIN};  // fd -1: ignored by poll
            if (c->fd >= 0 && c->deadline_ms < next) {
                next = c->deadline_ms;
            }
        }
        if (poll(p, n, (int)(next - now)) < 0 && errno != EINTR) {
            break;
        }
        if (p[0].revents) {
            break;
        }
        if (p[1].revents & POLLIN) {
            for (size_t i = 0; i < MAX_CLIENTS; i++) {
                if (r->clients[i].fd < 0) {
                    int fd = accept4(r->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) {
                        break;
                    }
                    r->clients[i] = (client){.fd = fd, .deadline_ms = gw_monotonic_ms() + HEAD_DEADLINE_MS};
                }
            }
        }
        for (size_t i = 0; i < MAX_CLIENTS; i++) {
            client *c = &r->clients[i];
            if (c->fd < 0 || !(p[i + 2].revents & (POLLIN | POLLHUP | POLLERR)) || p[i + 2].fd != c->fd) {
                continue;
            }
            ssize_t got = read(c->fd, c->head + c->len, HEAD_MAX - c->len);
            if (got <= 0) {
                if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
                    drop(c);
                }
                continue;
            }
            c->len += (size_t)got;
            if (answer(r, c)) {
                drop(c);
            }
        }
    }
    return NULL;
}

gw_acme_responder *gw_acme_responder_start(int listen_fd, char *err, size_t cap) {
    gw_acme_responder *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(err, cap, "out of memory");
        close(listen_fd);
        return NULL;
    }
    r->listen_fd = listen_fd;
    fcntl(listen_fd, F_SETFL, fcntl(listen_fd, F_GETFL) | O_NONBLOCK);
    for (size_t i = 0; i < MAX_CLIENTS; i++) {
        r->clients[i].fd = -1;
    }
    pthread_mutex_init(&r->lock, NULL);
    if (pipe2(r->wake, O_CLOEXEC) != 0) {
        snprintf(err, cap, "cannot start the http-01 responder: %s", strerror(errno));
        close(listen_fd);
        free(r);
        return NULL;
    }
    int e = pthread_create(&r->thread, NULL, serve, r);
    if (e != 0) {
        snprintf(err, cap, "cannot start the http-01 responder: %s", strerror(e));
        close(r->wake[0]);
        close(r->wake[1]);
        close(listen_fd);
        free(r);
        return NULL;
    }
    return r;
}

void gw_acme_responder_stop(gw_acme_responder *r) {
    if (r == NULL) {
        return;
    }
    ssize_t w = write(r->wake[1], "x", 1);
    (void)w;
    pthread_join(r->thread, NULL);
    for (size_t i = 0; i < MAX_CLIENTS; i++) {
        if (r->clients[i].fd >= 0) {
            close(r->clients[i].fd);
        }
    }
    close(r->wake[0]);
    close(r->wake[1]);
    close(r->listen_fd);
    pthread_mutex_destroy(&r->lock);
    free(r);
}
