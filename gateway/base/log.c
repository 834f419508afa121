#include "gateway/base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "gateway/base/strbuf.h"

// Read by every worker on every line, written on reload: atomics. The access log's
// descriptor is 1, 2 or g_slot, a number that stays open (and names the current file)
// for the life of the process: a worker that loaded it just before a reload still writes
// to a log, never to a number closed and reused meanwhile (a client's socket, say).
static atomic_int g_level = GW_LOG_INFO;
static atomic_int g_format = GW_LOG_TEXT;
static atomic_int g_access_fd = 2;
static atomic_int g_access_on = 1;
static int g_slot = -1;  // the access-log file's descriptor number, once there is one (g_lock)
static char g_access_path[4096];
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int gw_log_parse_level(const char *s, gw_log_level *out_level) {
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out_level = (gw_log_level)i;
            return 1;
        }
    }
    return 0;
}

static uid_t g_allowed_owner = (uid_t)-1;  // besides our own euid: the service user

static int open_access(const char *path) {
    if (strcmp(path, "stderr") == 0) {
        return 2;
    }
    if (strcmp(path, "stdout") == 0) {
        return 1;
    }
    if (strcmp(path, "off") == 0) {
        return -1;
    }
    // Never through a symbolic link, and only a file of ours: the log's folder may be
    // writable by the service user, who must not point a gateway started as root at
    // another file (a link, or a hard link to someone else's file).
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0640);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    if (S_ISREG(st.st_mode) &&
        (st.st_nlink != 1 || (st.st_uid != geteuid() && st.st_uid != 0 && st.st_uid != g_allowed_owner))) {
        close(fd);
        errno = EPERM;
        return -1;
    }
    if (!S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode)) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return fd;
}

void gw_log_allow_owner(uint32_t uid) {
    g_allowed_owner = (uid_t)uid;
}

// into_slot makes the file open at |fd| (> 2) the one g_slot names and returns g_slot: the
// first file's own number becomes the slot; later ones replace it there (dup3, atomic
// for writers). Called with g_lock held.
static int into_slot(int fd) {
    if (g_slot < 0) {
        g_slot = fd;
    } else if (fd != g_slot) {
        dup3(fd, g_slot, O_CLOEXEC);
        close(fd);
    }
    return g_slot;
}

int gw_log_configure(gw_log_level level, gw_log_format format, const char *access) {
    int fd = open_access(access);
    if (fd == -1 && strcmp(access, "off") != 0) {
        return 0;
    }
    pthread_mutex_lock(&g_lock);
    if (fd > 2) {
        fd = into_slot(fd);
    }
    if (fd >= 0) {
        atomic_store(&g_access_fd, fd);
    }
    atomic_store(&g_access_on, fd >= 0);
    snprintf(g_access_path, sizeof(g_access_path), "%s", access);
    atomic_store(&g_level, (int)level);
    atomic_store(&g_format, (int)format);
    pthread_mutex_unlock(&g_lock);
    return 1;
}

void gw_log_reopen(void) {
    pthread_mutex_lock(&g_lock);
    if (g_slot >= 0 && atomic_load(&g_access_fd) == g_slot) {
        int fd = open_access(g_access_path);
        if (fd > 2) {
            into_slot(fd);  // the same number, the new file: writers racing with us are fine
        }
    }
    pthread_mutex_unlock(&g_lock);
}

void gw_log_shutdown(void) {
    pthread_mutex_lock(&g_lock);
    atomic_store(&g_access_fd, 2);
    if (g_slot >= 0) {
        close(g_slot);
        g_slot = -1;
    }
    pthread_mutex_unlock(&g_lock);
}

int gw_log_enabled(gw_log_level level) {
    return (int)level <= atomic_load_explicit(&g_level, memory_order_relaxed);
}

static size_t format_time(char *out, size_t cap) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(out + n, cap - n, ".%03dZ", (int)(tv.tv_usec / 1000));
    return n;
}

static void write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;
        }
        buf += w;
        len -= (size_t)w;
    }
}

void gw_log(gw_log_level level, const char *fmt, ...) {
    if (!gw_log_enabled(level)) {
        return;
    }
    char line[2048];
    size_t n = 0;
    char ts[40];
    format_time(ts, sizeof(ts));
    char msg[1600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (atomic_load(&g_format) == GW_LOG_JSON) {
        n = (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts, level_names[level]);
        n += gw_json_string(line + n, sizeof(line) - n - 2, msg);
        line[n++] = '}';
    } else {
        n = (size_t)snprintf(line, sizeof(line), "ts=%s level=%s msg=", ts, level_names[level]);
        n += gw_logfmt_value(line + n, sizeof(line) - n - 1, msg);
    }
    line[n++] = '\n';
    write_all(2, line, n);
}

size_t gw_logfmt_value(char *out, size_t cap, const char *v) {
    if (cap == 0) {
        return 0;
    }
    if (v == NULL || *v == '\0') {
        v = "-";
    }
    int quote = 0;
    for (const char *p = v; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f) {
            quote = 1;
            break;
        }
    }
    size_t n = 0;
    if (!quote) {
        while (*v && n + 1 < cap) {
            out[n++] = *v++;
        }
        out[n] = '\0';
        return n;
    }
    if (n + 1 < cap) {
        out[n++] = '"';
    }
    for (; *v && n + 6 < cap; v++) {
        unsigned char c = (unsigned char)*v;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < ' ' || c == 0x7f) {
            n += (size_t)snprintf(out + n, cap - n, "\\x%02x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    if (n + 1 < cap) {
        out[n++] = '"';
    }
    out[n] = '\0';
    return n;
}

static size_t put_str(char *line, size_t n, size_t cap, const char *key, const char *v, int json) {
    if (n + 64 >= cap) {
        return n;
    }
    if (json) {
        n += (size_t)snprintf(line + n, cap - n, "%s\"%s\":", n > 1 ? "," : "", key);
        if (v == NULL) {
            n += (size_t)snprintf(line + n, cap - n, "null");
        } else {
            n += gw_json_string(line + n, cap - n, v);
        }
    } else {
        n += (size_t)snprintf(line + n, cap - n, "%s%s=", n > 0 ? " " : "", key);
        n += gw_logfmt_value(line + n, cap - n, v);
    }
    return n;
}

static size_t put_num(char *line, size_t n, size_t cap, const char *key, int64_t v, int json) {
    if (n + 64 >= cap) {
        return n;
    }
    if (v < 0) {
        return put_str(line, n, cap, key, NULL, json);
    }
    if (json) {
        return n + (size_t)snprintf(line + n, cap - n, ",\"%s\":%lld", key, (long long)v);
    }
    return n + (size_t)snprintf(line + n, cap - n, " %s=%lld", key, (long long)v);
}

int gw_access_log_enabled(void) {
    return atomic_load_explicit(&g_access_on, memory_order_relaxed);
}

void gw_access_log(const gw_access_record *r) {
    if (!atomic_load(&g_access_on)) {
        return;
    }
    int fd = atomic_load(&g_access_fd);
    int json = atomic_load(&g_format) == GW_LOG_JSON;
    char line[4096];
    size_t cap = sizeof(line) - 2, n = 0;
    char ts[40];
    format_time(ts, sizeof(ts));
    if (json) {
        line[n++] = '{';
    }
    n = put_str(line, n, cap, "ts", ts, json);
    n = put_str(line, n, cap, "client", r->client, json);
    n = put_num(line, n, cap, "caller", r->caller, json);
    if (r->user != NULL) {
        n = put_str(line, n, cap, "user", r->user, json);
    }
    n = put_str(line, n, cap, "listener", r->listener, json);
    n = put_str(line, n, cap, "proto", r->proto, json);
    n = put_str(line, n, cap, "dest", r->dest, json);
    n = put_str(line, n, cap, "rule", r->rule, json);
    n = put_str(line, n, cap, "action", r->action, json);
    n = put_str(line, n, cap, "identity", r->identity, json);
    n = put_str(line, n, cap, "upstream", r->upstream, json);
    if (r->via != NULL) {
        n = put_str(line, n, cap, "via", r->via, json);
    }
    n = put_str(line, n, cap, "sni", r->sni, json);
    n = put_str(line, n, cap, "tls", r->tls, json);
    n = put_num(line, n, cap, "resumed", r->resumed, json);
    n = put_str(line, n, cap, "conn", r->conn, json);
    if (r->early != NULL) {
        n = put_str(line, n, cap, "early", r->early, json);
    }
    if (r->ocsp != NULL) {
        n = put_str(line, n, cap, "ocsp", r->ocsp, json);
    }
    n = put_num(line, n, cap, "dns_ms", r->dns_ms, json);
    n = put_num(line, n, cap, "connect_ms", r->connect_ms, json);
    n = put_num(line, n, cap, "handshake_ms", r->handshake_ms, json);
    n = put_num(line, n, cap, "up_bytes", (int64_t)r->up_bytes, json);
    n = put_num(line, n, cap, "down_bytes", (int64_t)r->down_bytes, json);
    n = put_num(line, n, cap, "duration_ms", r->duration_ms, json);
    if (r->method != NULL) {
        n = put_str(line, n, cap, "method", r->method, json);
        n = put_num(line, n, cap, "status", r->status > 0 ? r->status : -1, json);
    }
    n = put_str(line, n, cap, "result", r->result, json);
    n = put_str(line, n, cap, "reason", r->reason, json);
    if (json) {
        line[n++] = '}';
    }
    line[n++] = '\n';
    write_all(fd, line, n);
}
