#include "gateway/proto/http.h"

#include <ctype.h>
#include <openssl/base64.h>
#include <openssl/mem.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "gateway/proto/hostname.h"

static int is_tchar(unsigned char c) {
    if (isalnum(c)) {
        return 1;
    }
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

// A field-value byte: VCHAR, obs-text, SP or HTAB.
static int is_value_char(unsigned char c) {
    return c == '\t' || (c >= ' ' && c != 0x7f);
}

int gw_http_token_eq(const char *s, size_t len, const char *lit) {
    return strlen(lit) == len && strncasecmp(s, lit, len) == 0;
}

const gw_http_header *gw_http_find_header(const gw_http_header *headers, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++) {
        if (gw_http_token_eq(headers[i].name, headers[i].name_len, name)) {
            return &headers[i];
        }
    }
    return NULL;
}

// find_crlf returns the offset of the "\r\n" ending the line at |p|, -1 if not there
// yet, -2 on a bare CR or LF.
static long find_crlf(const char *buf, size_t len, size_t p) {
    for (size_t i = p; i < len; i++) {
        if (buf[i] == '\n') {
            return -2;
        }
        if (buf[i] == '\r') {
            if (i + 1 >= len) {
                return -1;
            }
            return buf[i + 1] == '\n' ? (long)i : -2;
        }
    }
    return -1;
}

static int parse_version(const char *s, size_t len, int *out_minor) {
    if (len != 8 || memcmp(s, "HTTP/", 5) != 0 || !isdigit((unsigned char)s[5]) || s[6] != '.' ||
        !isdigit((unsigned char)s[7])) {
        return -1;
    }
    if (s[5] != '1' || (s[7] != '0' && s[7] != '1')) {
        return 0;
    }
    *out_minor = s[7] - '0';
    return 1;
}

// parse_headers parses header lines starting at |p| until the empty line.
static gw_http_status parse_headers(const char *buf, size_t len, size_t p, gw_http_header *headers, size_t *out_n,
                                    size_t *out_head_len) {
    size_t n = 0;
    for (;;) {
        long eol = find_crlf(buf, len, p);
        if (eol == -1) {
            return GW_HTTP_NEED_MORE;
        }
        if (eol == -2) {
            return GW_HTTP_ERR_SYNTAX;
        }
        size_t e = (size_t)eol;
        if (e == p) {
            *out_n = n;
            *out_head_len = e + 2;
            return GW_HTTP_OK;
        }
        if (buf[p] == ' ' || buf[p] == '\t') {
            return GW_HTTP_ERR_SYNTAX;  // obs-fold
        }
        if (n == GW_HTTP_MAX_HEADERS) {
            return GW_HTTP_ERR_TOO_LARGE;
        }
        size_t q = p;
        while (q < e && is_tchar((unsigned char)buf[q])) {
            q++;
        }
        if (q == p || q == e || buf[q] != ':') {
            return GW_HTTP_ERR_SYNTAX;
        }
        headers[n].name = buf + p;
        headers[n].name_len = q - p;
        q++;
        while (q < e && (buf[q] == ' ' || buf[q] == '\t')) {
            q++;
        }
        size_t vend = e;
        while (vend > q && (buf[vend - 1] == ' ' || buf[vend - 1] == '\t')) {
            vend--;
        }
        for (size_t i = q; i < vend; i++) {
            if (!is_value_char((unsigned char)buf[i])) {
                return GW_HTTP_ERR_SYNTAX;
            }
        }
        headers[n].value = buf + q;
        headers[n].value_len = vend - q;
        n++;
        p = e + 2;
    }
}

gw_http_status gw_http_parse_request(const char *buf, size_t len, gw_http_request *out_req) {
    long eol = find_crlf(buf, len, 0);
    // Fail early on a line that is clearly not a request line, even before its end.
    size_t scan = eol >= 0 ? (size_t)eol : len;
    size_t p = 0;
    while (p < scan && is_tchar((unsigned char)buf[p])) {
        p++;
    }
    if ((p < scan && buf[p] != ' ') || (eol >= 0 && p == scan)) {
        return GW_HTTP_ERR_SYNTAX;
    }
    if (eol == -2) {
        return GW_HTTP_ERR_SYNTAX;
    }
    if (eol == -1) {
        return GW_HTTP_NEED_MORE;
    }
    size_t e = (size_t)eol;
    if (p == 0) {
        return GW_HTTP_ERR_SYNTAX;
    }
    out_req->method = buf;
    out_req->method_len = p;
    size_t t = p + 1;
    size_t q = t;
    while (q < e && (unsigned char)buf[q] > ' ' && (unsigned char)buf[q] != 0x7f) {
        q++;
    }
    if (q == t || q >= e || buf[q] != ' ') {
        return GW_HTTP_ERR_SYNTAX;
    }
    out_req->target = buf + t;
    out_req->target_len = q - t;
    int v = parse_version(buf + q + 1, e - q - 1, &out_req->minor_version);
    if (v < 0) {
        return GW_HTTP_ERR_SYNTAX;
    }
    if (v == 0) {
        return GW_HTTP_ERR_VERSION;
    }
    return parse_headers(buf, len, e + 2, out_req->headers, &out_req->num_headers, &out_req->head_len);
}

gw_http_status gw_http_parse_response(const char *buf, size_t len, gw_http_response *out_resp) {
    long eol = find_crlf(buf, len, 0);
    if (eol == -2) {
        return GW_HTTP_ERR_SYNTAX;
    }
    if (eol == -1) {
        return len > 0 && (len > 5 ? memcmp(buf, "HTTP/", 5) : memcmp(buf, "HTTP/", len)) != 0 ? GW_HTTP_ERR_SYNTAX
                                                                                               : GW_HTTP_NEED_MORE;
    }
    size_t e = (size_t)eol;
    if (e < 12 || buf[8] != ' ') {
        return GW_HTTP_ERR_SYNTAX;
    }
    int v = parse_version(buf, 8, &out_resp->minor_version);
    if (v <= 0) {
        return v < 0 ? GW_HTTP_ERR_SYNTAX : GW_HTTP_ERR_VERSION;
    }
    if (!isdigit((unsigned char)buf[9]) || !isdigit((unsigned char)buf[10]) || !isdigit((unsigned char)buf[11]) ||
        (e > 12 && buf[12] != ' ')) {
        return GW_HTTP_ERR_SYNTAX;
    }
    out_resp->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    if (out_resp->status < 100) {
        return GW_HTTP_ERR_SYNTAX;
    }
    out_resp->reason = e > 12 ? buf + 13 : buf + e;
    out_resp->reason_len = e > 12 ? e - 13 : 0;
    for (size_t i = 0; i < out_resp->reason_len; i++) {
        if (!is_value_char((unsigned char)out_resp->reason[i])) {
            return GW_HTTP_ERR_SYNTAX;
        }
    }
    return parse_headers(buf, len, e + 2, out_resp->headers, &out_resp->num_headers, &out_resp->head_len);
}

int gw_parse_port(const char *s, size_t len, uint16_t *out_port) {
    if (len == 0 || len > 5) {
        return 0;
    }
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i])) {
            return 0;
        }
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v == 0 || v > 65535) {
        return 0;
    }
    *out_port = (uint16_t)v;
    return 1;
}

int gw_http_parse_authority(const char *s, size_t len, uint16_t default_port, char *out_host, uint16_t *out_port) {
    const char *host;
    size_t hlen;
    const char *rest;
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (close == NULL) {
            return 0;
        }
        host = s + 1;
        hlen = (size_t)(close - host);
        rest = close + 1;
        if (hlen == 0 || memchr(host, ':', hlen) == NULL) {
            return 0;
        }
    } else {
        const char *colon = memchr(s, ':', len);
        host = s;
        hlen = colon ? (size_t)(colon - s) : len;
        rest = s + hlen;
    }
    size_t rlen = len - (size_t)(rest - s);
    if (rlen == 0) {
        if (default_port == 0) {
            return 0;
        }
        *out_port = default_port;
    } else if (rest[0] != ':' || !gw_parse_port(rest + 1, rlen - 1, out_port)) {
        return 0;
    }
    if (!gw_host_is_valid(host, hlen) || (s[0] != '[' && memchr(host, ':', hlen))) {
        return 0;
    }
    memcpy(out_host, host, hlen);
    out_host[hlen] = '\0';
    return 1;
}

int gw_http_parse_absolute_uri(const char *s, size_t len, char *out_scheme, char *out_host, uint16_t *out_port,
                               const char **out_path, size_t *out_path_len) {
    size_t slen;
    uint16_t default_port;
    if (len >= 7 && strncasecmp(s, "http://", 7) == 0) {
        slen = 7;
        default_port = 80;
        strcpy(out_scheme, "http");
    } else if (len >= 8 && strncasecmp(s, "https://", 8) == 0) {
        slen = 8;
        default_port = 443;
        strcpy(out_scheme, "https");
    } else {
        return 0;
    }
    const char *a = s + slen;
    size_t alen = 0;
    while (slen + alen < len && a[alen] != '/' && a[alen] != '?') {
        alen++;
    }
    if (memchr(a, '@', alen) != NULL) {
        return 0;
    }
    if (!gw_http_parse_authority(a, alen, default_port, out_host, out_port)) {
        return 0;
    }
    *out_path = a + alen;
    *out_path_len = len - slen - alen;
    return 1;
}

int gw_http_basic_credentials(const char *value, size_t len, uint8_t *out, size_t cap, size_t *out_len,
                              size_t *out_colon) {
    if (len <= 6 || strncasecmp(value, "Basic ", 6) != 0) {
        return 0;
    }
    value += 6, len -= 6;
    while (len > 0 && *value == ' ') {
        value++, len--;
    }
    size_t n = 0;
    if (!EVP_DecodedLength(&n, len) || n > cap || !EVP_DecodeBase64(out, &n, cap, (const uint8_t *)value, len)) {
        return 0;
    }
    const uint8_t *colon = memchr(out, ':', n);
    if (colon == NULL) {
        return 0;
    }
    *out_len = n;
    *out_colon = (size_t)(colon - out);
    return 1;
}

size_t gw_http_connect_request(const char *target, const char *user, const char *password, char *out, size_t cap) {
    int n = snprintf(out, cap, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target);
    if (n < 0 || (size_t)n >= cap) {
        return 0;
    }
    if (user != NULL) {
        char plain[520];
        uint8_t b64[704];
        int pl = snprintf(plain, sizeof(plain), "%s:%s", user, password ? password : "");
        size_t need = 0;
        if (pl < 0 || (size_t)pl >= sizeof(plain) || !EVP_EncodedLength(&need, (size_t)pl) || need > sizeof(b64)) {
            OPENSSL_cleanse(plain, sizeof(plain));
            return 0;
        }
        EVP_EncodeBlock(b64, (const uint8_t *)plain, (size_t)pl);
        int m = snprintf(out + n, cap - (size_t)n, "Proxy-Authorization: Basic %s\r\n", (const char *)b64);
        OPENSSL_cleanse(plain, sizeof(plain));
        OPENSSL_cleanse(b64, sizeof(b64));
        if (m < 0 || (size_t)m >= cap - (size_t)n) {
            return 0;
        }
        n += m;
    }
    int m = snprintf(out + n, cap - (size_t)n, "\r\n");
    return m < 0 || (size_t)m >= cap - (size_t)n ? 0 : (size_t)(n + m);
}
