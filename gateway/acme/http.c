// http: the ACME client's blocking HTTPS (see http.h).
#include "gateway/acme/http.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "gateway/base/netutil.h"
#include "gateway/proto/h1.h"
#include "gateway/proto/http.h"

#define SYSTEM_CAS "/etc/ssl/certs/ca-certificates.crt"

struct gw_acme_http {
    SSL_CTX *ctx;
};

gw_acme_http *gw_acme_http_new(const char *trust_file, char *err, size_t cap) {
    gw_acme_http *h = calloc(1, sizeof(*h));
    const char *file = trust_file ? trust_file : SYSTEM_CAS;
    if (h == NULL || (h->ctx = SSL_CTX_new(TLS_method())) == NULL) {
        snprintf(err, cap, "out of memory");
        free(h);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(h->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(h->ctx, SSL_VERIFY_PEER, NULL);
    if (!SSL_CTX_load_verify_locations(h->ctx, file, NULL)) {
        snprintf(err, cap, "%s: no CA certificates could be read for the ACME server's TLS", file);
        ERR_clear_error();
        gw_acme_http_free(h);
        return NULL;
    }
    return h;
}

void gw_acme_http_free(gw_acme_http *h) {
    if (h != NULL) {
        SSL_CTX_free(h->ctx);
        free(h);
    }
}

void gw_acme_response_free(gw_acme_response *resp) {
    free(resp->body);
    resp->body = NULL;
}

// dial connects to |host|:|port| within |timeout_ms|: a blocking socket with send and
// receive deadlines, or -1.
static int dial(const char *host, uint16_t port, int timeout_ms, char *err, size_t cap) {
    char service[8];
    snprintf(service, sizeof(service), "%u", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG}, *res = NULL;
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        snprintf(err, cap, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = res; a != NULL && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) {
            continue;
        }
        int r = connect(fd, a->ai_addr, a->ai_addrlen);
        if (r != 0 && errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int e = 0;
            socklen_t l = sizeof(e);
            r = poll(&p, 1, timeout_ms) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) == 0 && e == 0 ? 0 : -1;
            if (r != 0) {
                errno = e ? e : ETIMEDOUT;
            }
        }
        if (r != 0) {
            snprintf(err, cap, "cannot connect to %s:%u: %s", host, port, strerror(errno));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    return fd;
}

static void header_text(const gw_http_response *r, const char *name, char *out, size_t cap) {
    const gw_http_header *h = gw_http_find_header(r->headers, r->num_headers, name);
    out[0] = '\0';
    if (h != NULL && h->value_len < cap) {
        memcpy(out, h->value, h->value_len);
        out[h->value_len] = '\0';
    }
}

// retry_after: RFC 9110 section 10.2.3, delay-seconds or an HTTP-date; -1 if absent or
// neither.
static long retry_after(const gw_http_response *r) {
    char v[64];
    header_text(r, "Retry-After", v, sizeof(v));
    if (v[0] == '\0') {
        return -1;
    }
    char *end;
    long s = strtol(v, &end, 10);
    if (end != v && *end == '\0' && s >= 0) {
        return s;
    }
    struct tm tm = {0};
    const char *rest = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (rest == NULL || *rest != '\0') {
        return -1;
    }
    time_t at = timegm(&tm), now = time(NULL);
    return at > now ? (long)(at - now) : 0;
}

int gw_acme_parse_response(const char *buf, size_t len, int eof, gw_acme_response *resp, char *err, size_t cap) {
    gw_http_response r;
    if (gw_http_parse_response(buf, len, &r) != GW_HTTP_OK) {
        if (eof) {
            snprintf(err, cap, "the ACME server's response head is malformed or cut off");
        }
        return 0;
    }
    gw_body framing;
    const char *why = gw_h1_response_body(&r, 0, &framing);
    if (why != NULL) {
        snprintf(err, cap, "the ACME server's response: %s", why);
        return -1;
    }
    if (framing.kind == GW_BODY_LENGTH && framing.length > GW_ACME_MAX_BODY) {
        snprintf(err, cap, "the ACME server's response is larger than %d bytes", GW_ACME_MAX_BODY);
        return -1;
    }
    const uint8_t *p = (const uint8_t *)buf + r.head_len;
    size_t have = len - r.head_len, n = 0;
    if (!eof && ((framing.kind == GW_BODY_LENGTH && have < framing.length) || framing.kind == GW_BODY_CLOSE)) {
        return 0;  // not all there yet: no copy of what came so far on every read
    }
    uint8_t *body = malloc(have + 1);
    if (body == NULL) {
        snprintf(err, cap, "out of memory");
        return -1;
    }
    int complete = 0;
    if (framing.kind == GW_BODY_NONE) {
        complete = 1;
    } else if (framing.kind == GW_BODY_LENGTH) {
        complete = have >= framing.length;
        n = complete ? (size_t)framing.length : 0;
        memcpy(body, p, n);
    } else if (framing.kind == GW_BODY_CHUNKED) {
        gw_chunked c;
        gw_chunked_init(&c);
        complete = 0;
        if (gw_chunked_decode(&c, p, have, body, &n, &complete) < 0) {
            free(body);
            snprintf(err, cap, "the ACME server's chunked body is malformed");
            return -1;
        }
    } else {
        complete = eof;
        n = have;
        memcpy(body, p, n);
    }
    if (!complete) {
        free(body);
        if (eof) {
            snprintf(err, cap, "the ACME server's response body is cut off");
        }
        return 0;
    }
    body[n] = '\0';
    resp->status = r.status;
    resp->body = (char *)body;
    resp->body_len = n;
    header_text(&r, "Replay-Nonce", resp->nonce, sizeof(resp->nonce));
    header_text(&r, "Location", resp->location, sizeof(resp->location));
    header_text(&r, "Content-Type", resp->content_type, sizeof(resp->content_type));
    resp->retry_after_s = retry_after(&r);
    return 1;
}

int gw_acme_http_do(gw_acme_http *h, const char *method, const char *url, const char *content_type, const char *body,
                    int timeout_ms, gw_acme_response *resp, char *err, size_t cap) {
    memset(resp, 0, sizeof(*resp));
    char scheme[8], host[256];
    uint16_t port;
    const char *path;
    size_t path_len;
    if (!gw_http_parse_absolute_uri(url, strlen(url), scheme, host, &port, &path, &path_len) ||
        strcmp(scheme, "https") != 0) {
        snprintf(err, cap, "%s: not an https:// URL", url);
        return 0;
    }
    int fd = dial(host, port, timeout_ms, err, cap);
    if (fd < 0) {
        return 0;
    }
    SSL *ssl = SSL_new(h->ctx);
    char *buf = NULL;
    int ok = 0;
    if (ssl == NULL) {
        snprintf(err, cap, "out of memory");
        goto done;
    }
    X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
    if (gw_host_is_ip(host)
            ? !X509_VERIFY_PARAM_set1_ip_asc(vp, host)
            : !X509_VERIFY_PARAM_set1_host(vp, host, strlen(host)) || !SSL_set_tlsext_host_name(ssl, host)) {
        snprintf(err, cap, "cannot check the name %s", host);
        goto done;
    }
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        long v = SSL_get_verify_result(ssl);
        uint32_t code = ERR_peek_error();
        if (v != X509_V_OK) {
            snprintf(err, cap, "TLS with the ACME server %s: its certificate is not trusted: %s", host,
                     X509_verify_cert_error_string(v));
        } else {
            snprintf(err, cap, "TLS with the ACME server %s failed: %s", host,
                     code ? ERR_reason_error_string(code) : strerror(errno));
        }
        goto done;
    }
    size_t body_len = body ? strlen(body) : 0;
    char authority[300];  // the Host header: the URL's, port included unless 443
    snprintf(authority, sizeof(authority), strchr(host, ':') ? "[%s]" : "%s", host);
    if (port != 443) {
        snprintf(authority + strlen(authority), sizeof(authority) - strlen(authority), ":%u", port);
    }
    char head[2048];
    int hl =
        snprintf(head, sizeof(head),
                 "%s %.*s HTTP/1.1\r\nHost: %s\r\nUser-Agent: mtlsgw/" MTLSGW_VERSION
                 "\r\nAccept: application/json, application/pem-certificate-chain\r\n"
                 "Connection: close\r\nContent-Length: %zu\r\n%s%s%s\r\n",
                 method, (int)(path_len ? path_len : 1), path_len ? path : "/", authority, body_len,
                 content_type ? "Content-Type: " : "", content_type ? content_type : "", content_type ? "\r\n" : "");
    if (hl <= 0 || (size_t)hl >= sizeof(head) || SSL_write(ssl, head, hl) != hl ||
        (body_len > 0 && SSL_write(ssl, body, (int)body_len) != (int)body_len)) {
        snprintf(err, cap, "sending to the ACME server %s failed", host);
        goto done;
    }
    size_t cap_buf = GW_ACME_MAX_BODY + 16384, len = 0;
    if ((buf = malloc(cap_buf + 1)) == NULL) {
        snprintf(err, cap, "out of memory");
        goto done;
    }
    for (;;) {
        int n = SSL_read(ssl, buf + len, (int)(cap_buf - len));
        int eof = n == 0 || (n < 0 && SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN);
        if (n > 0) {
            len += (size_t)n;
        }
        if (len >= cap_buf) {
            snprintf(err, cap, "the ACME server's response is larger than %d bytes", GW_ACME_MAX_BODY);
            break;
        }
        int r = gw_acme_parse_response(buf, len, eof || n < 0, resp, err, cap);
        if (r != 0) {
            ok = r > 0;
            break;
        }
        if (n <= 0) {
            if (err[0] == '\0') {
                snprintf(err, cap, "the ACME server %s did not answer in time", host);
            }
            break;
        }
    }
done:
    ERR_clear_error();
    free(buf);
    SSL_free(ssl);
    close(fd);
    return ok;
}
