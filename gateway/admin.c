#include "gateway/admin.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "gateway/errors.h"
#include "gateway/http.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/netutil.h"
#include "gateway/report.h"
#include "gateway/worker.h"

static struct {
    int fd;
    pthread_t thread;
    int running;
    atomic_int stop, draining;
    pthread_mutex_t lock;  // guards cfg
    pol_config *cfg;
} g_admin = {.fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER};

static pol_config *current_config(void) {
    pthread_mutex_lock(&g_admin.lock);
    pol_config *cfg = pol_config_ref(g_admin.cfg);
    pthread_mutex_unlock(&g_admin.lock);
    return cfg;
}

void gw_admin_set_config(pol_config *cfg) {
    pol_config_ref(cfg);
    pthread_mutex_lock(&g_admin.lock);
    pol_config *old = g_admin.cfg;
    g_admin.cfg = cfg;
    pthread_mutex_unlock(&g_admin.lock);
    pol_config_unref(old);
}

void gw_admin_set_draining(void) {
    atomic_store(&g_admin.draining, 1);
}

static void write_all(int fd, const char *p, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) {
                continue;
            }
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

static void respond(int fd, int status, const char *type, const char *body, int head_only) {
    char head[256];
    size_t len = strlen(body);
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
                     "Connection: close\r\n\r\n",
                     status, gw_http_reason_phrase(status), type, len);
    write_all(fd, head, (size_t)n);
    if (!head_only) {
        write_all(fd, body, len);
    }
}

static void serve(int fd) {
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char buf[8192];
    size_t len = 0;
    gw_http_request req;
    gw_http_status st = GW_HTTP_NEED_MORE;
    while (len < sizeof(buf)) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) {
                continue;
            }
            return;
        }
        len += (size_t)n;
        st = gw_http_parse_request(buf, len, &req);
        if (st != GW_HTTP_NEED_MORE) {
            break;
        }
    }
    if (st != GW_HTTP_OK) {
        respond(fd, 400, "text/plain", "malformed request\n", 0);
        return;
    }
    int head = gw_http_token_eq(req.method, req.method_len, "HEAD");
    if (!head && !gw_http_token_eq(req.method, req.method_len, "GET")) {
        respond(fd, 405, "text/plain", "only GET and HEAD\n", 0);
        return;
    }
    size_t plen = req.target_len;
    const char *q = memchr(req.target, '?', plen);
    if (q != NULL) {
        plen = (size_t)(q - req.target);
    }
    pol_config *cfg = current_config();
    if (gw_http_token_eq(req.target, plen, "/metrics")) {
        char *page = gw_metrics_render(cfg, atomic_load(&gw_active_tunnels));
        if (page != NULL) {
            respond(fd, 200, "text/plain; version=0.0.4; charset=utf-8", page, head);
        } else {
            respond(fd, 500, "text/plain", "out of memory\n", head);
        }
        free(page);
    } else if (gw_http_token_eq(req.target, plen, "/healthz")) {
        if (atomic_load(&g_admin.draining)) {
            respond(fd, 503, "text/plain", "draining\n", head);
        } else {
            respond(fd, 200, "text/plain", "ok\n", head);
        }
    } else if (gw_http_token_eq(req.target, plen, "/identities")) {
        gw_strbuf b = {0};
        gw_identities_json(&b, cfg, time(NULL), 14);
        if (!b.failed) {
            respond(fd, 200, "application/json", b.p, head);
        } else {
            respond(fd, 500, "text/plain", "out of memory\n", head);
        }
        free(b.p);
    } else {
        respond(fd, 404, "text/plain", "not found: try /metrics, /healthz or /identities\n", head);
    }
    pol_config_unref(cfg);
}

static void *admin_main(void *arg) {
    while (!atomic_load(&g_admin.stop)) {
        struct pollfd p = {g_admin.fd, POLLIN, 0};
        if (poll(&p, 1, 250) <= 0) {
            continue;
        }
        int fd = accept4(g_admin.fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                usleep(100000);
            }
            continue;
        }
        serve(fd);
        close(fd);
    }
    return NULL;
}

int gw_admin_bind(const pol_config *cfg) {
    g_admin.fd = gw_listen_socket((const struct sockaddr *)&cfg->admin_addr, cfg->admin_addr_len, 0);
    return g_admin.fd >= 0;
}

int gw_admin_start(pol_config *cfg) {
    if (g_admin.fd < 0 && !gw_admin_bind(cfg)) {
        return 0;
    }
    gw_admin_set_config(cfg);
    atomic_store(&g_admin.stop, 0);
    if (pthread_create(&g_admin.thread, NULL, admin_main, NULL) != 0) {
        close(g_admin.fd);
        g_admin.fd = -1;
        return 0;
    }
    g_admin.running = 1;
    return 1;
}

void gw_admin_stop(void) {
    if (g_admin.running) {
        atomic_store(&g_admin.stop, 1);
        pthread_join(g_admin.thread, NULL);
        g_admin.running = 0;
    }
    if (g_admin.fd >= 0) {
        close(g_admin.fd);
        g_admin.fd = -1;
    }
    pthread_mutex_lock(&g_admin.lock);
    pol_config *old = g_admin.cfg;
    g_admin.cfg = NULL;
    pthread_mutex_unlock(&g_admin.lock);
    pol_config_unref(old);
}
