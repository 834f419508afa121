#include "gateway/proto/h1.h"

#include <string.h>
#include <strings.h>

#define MAX_CHUNK_LINE 4096  // chunk size plus extensions
#define MAX_TRAILERS 16384   // all trailer lines together
#define MAX_LENGTH (1ull << 62)

// ---- header helpers ----

// next_token returns the next comma-separated token of |v| (|len| bytes) from |*pos|,
// trimmed of whitespace, or NULL when none is left.
static const char *next_token(const char *v, size_t len, size_t *pos, size_t *out_len) {
    while (*pos < len) {
        size_t s = *pos;
        while (s < len && (v[s] == ' ' || v[s] == '\t' || v[s] == ',')) {
            s++;
        }
        size_t e = s;
        while (e < len && v[e] != ',') {
            e++;
        }
        *pos = e;
        size_t te = e;
        while (te > s && (v[te - 1] == ' ' || v[te - 1] == '\t')) {
            te--;
        }
        if (te > s) {
            *out_len = te - s;
            return v + s;
        }
    }
    return NULL;
}

// has_option says whether any header named |name| lists |option| (Connection: a, b).
static int has_option(const gw_http_header *h, size_t n, const char *name, const char *option) {
    for (size_t i = 0; i < n; i++) {
        if (!gw_http_token_eq(h[i].name, h[i].name_len, name)) {
            continue;
        }
        size_t pos = 0, tl;
        const char *tok;
        while ((tok = next_token(h[i].value, h[i].value_len, &pos, &tl)) != NULL) {
            if (gw_http_token_eq(tok, tl, option)) {
                return 1;
            }
        }
    }
    return 0;
}

static size_t count_headers(const gw_http_header *h, size_t n, const char *name) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) {
        c += gw_http_token_eq(h[i].name, h[i].name_len, name);
    }
    return c;
}

// parse_length reads a Content-Length value: digits only, at most 2^62.
static int parse_length(const char *v, size_t len, uint64_t *out) {
    if (len == 0 || len > 19) {
        return 0;
    }
    uint64_t x = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9') {
            return 0;
        }
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    if (x > MAX_LENGTH) {
        return 0;
    }
    *out = x;
    return 1;
}

// transfer_codings checks the Transfer-Encoding headers: returns 1 when the last coding
// is chunked and chunked appears once, 0 otherwise.
static int ends_in_chunked(const gw_http_header *h, size_t n) {
    int chunked = 0, last_chunked = 0;
    for (size_t i = 0; i < n; i++) {
        if (!gw_http_token_eq(h[i].name, h[i].name_len, "Transfer-Encoding")) {
            continue;
        }
        size_t pos = 0, tl;
        const char *tok;
        while ((tok = next_token(h[i].value, h[i].value_len, &pos, &tl)) != NULL) {
            last_chunked = gw_http_token_eq(tok, tl, "chunked");
            chunked += last_chunked;
        }
    }
    return chunked == 1 && last_chunked;
}

const char *gw_h1_request_body(const gw_http_request *req, gw_body *out_body) {
    size_t te = count_headers(req->headers, req->num_headers, "Transfer-Encoding");
    size_t cl = count_headers(req->headers, req->num_headers, "Content-Length");
    out_body->kind = GW_BODY_NONE;
    out_body->length = 0;
    if (te > 0 && cl > 0) {
        return "request has both Content-Length and Transfer-Encoding";
    }
    if (te > 0) {
        if (req->minor_version == 0) {
            return "Transfer-Encoding is not allowed in an HTTP/1.0 request";
        }
        if (!ends_in_chunked(req->headers, req->num_headers)) {
            return "Transfer-Encoding must end in chunked";
        }
        out_body->kind = GW_BODY_CHUNKED;
        return NULL;
    }
    if (cl > 1) {
        return "request has more than one Content-Length";
    }
    if (cl == 1) {
        const gw_http_header *h = gw_http_find_header(req->headers, req->num_headers, "Content-Length");
        if (!parse_length(h->value, h->value_len, &out_body->length)) {
            return "request has an invalid Content-Length";
        }
        out_body->kind = out_body->length ? GW_BODY_LENGTH : GW_BODY_NONE;
    }
    return NULL;
}

const char *gw_h1_response_body(const gw_http_response *resp, int request_was_head, gw_body *out_body) {
    out_body->kind = GW_BODY_NONE;
    out_body->length = 0;
    if (resp->status < 200 || resp->status == 204 || resp->status == 304 || request_was_head) {
        return NULL;
    }
    if (count_headers(resp->headers, resp->num_headers, "Transfer-Encoding") > 0) {
        // A coding that does not end in chunked is delimited by the close.
        out_body->kind = ends_in_chunked(resp->headers, resp->num_headers) ? GW_BODY_CHUNKED : GW_BODY_CLOSE;
        return NULL;
    }
    size_t cl = count_headers(resp->headers, resp->num_headers, "Content-Length");
    if (cl > 1) {
        return "upstream response has more than one Content-Length";
    }
    if (cl == 1) {
        const gw_http_header *h = gw_http_find_header(resp->headers, resp->num_headers, "Content-Length");
        if (!parse_length(h->value, h->value_len, &out_body->length)) {
            return "upstream response has an invalid Content-Length";
        }
        out_body->kind = out_body->length ? GW_BODY_LENGTH : GW_BODY_NONE;
        return NULL;
    }
    out_body->kind = GW_BODY_CLOSE;
    return NULL;
}

int gw_h1_keep_alive(const gw_http_header *headers, size_t num_headers, int minor_version) {
    if (has_option(headers, num_headers, "Connection", "close") ||
        has_option(headers, num_headers, "Proxy-Connection", "close")) {
        return 0;
    }
    if (minor_version == 0) {
        return has_option(headers, num_headers, "Connection", "keep-alive") ||
               has_option(headers, num_headers, "Proxy-Connection", "keep-alive");
    }
    return 1;
}

// ---- chunked bodies ----

enum {
    CH_SIZE,     // hex digits of the chunk size
    CH_SIZE_WS,  // whitespace after the size, before ';' or CR
    CH_EXT,      // chunk extensions, up to CR
    CH_SIZE_LF,  // LF ending the size line
    CH_DATA,     // |remaining| data bytes
    CH_DATA_CR,  // CR after the data
    CH_DATA_LF,  // LF after the data
    CH_TRAILER,  // start of a trailer line (or of the final CRLF)
    CH_TRAILER_LINE,
    CH_TRAILER_LF,
    CH_LAST_LF,  // LF of the final CRLF
    CH_DONE,
};

void gw_chunked_init(gw_chunked *c) {
    memset(c, 0, sizeof(*c));
    c->state = CH_SIZE;
}

static int hex_value(uint8_t ch) {
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    ch |= 0x20;
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    return -1;
}

static void end_size_line(gw_chunked *c) {
    c->line_len = 0;
    c->digits = 0;
    c->state = CH_SIZE_LF;
}

// scan is gw_chunked_scan; with |data| set it also copies the chunks' data bytes there
// (never more than it consumes) and counts them in *|data_len|.
static long scan(gw_chunked *c, const uint8_t *p, size_t len, int *out_done, uint8_t *data, size_t *data_len);

long gw_chunked_scan(gw_chunked *c, const uint8_t *p, size_t len, int *out_done) {
    return scan(c, p, len, out_done, NULL, NULL);
}

long gw_chunked_decode(gw_chunked *c, const uint8_t *p, size_t len, uint8_t *out, size_t *out_len, int *out_done) {
    *out_len = 0;
    return scan(c, p, len, out_done, out, out_len);
}

static long scan(gw_chunked *c, const uint8_t *p, size_t len, int *out_done, uint8_t *data, size_t *data_len) {
    size_t i = 0;
    *out_done = 0;
    while (i < len) {
        uint8_t ch = p[i];
        switch (c->state) {
            case CH_SIZE: {
                int v = hex_value(ch);
                if (v >= 0) {
                    if (c->digits == 15) {
                        return -1;  // 2^60 or more: no real chunk is that large
                    }
                    c->remaining = c->remaining * 16 + (uint64_t)v;
                    c->digits += c->remaining != 0;  // leading zeros do not count
                } else if (c->line_len == 0) {
                    return -1;
                } else if (ch == ' ' || ch == '\t') {
                    c->state = CH_SIZE_WS;
                } else if (ch == ';') {
                    c->state = CH_EXT;
                } else if (ch == '\r') {
                    end_size_line(c);
                } else {
                    return -1;
                }
                i++;
                c->line_len++;
                break;
            }
            case CH_SIZE_WS:
                if (ch == ';') {
                    c->state = CH_EXT;
                } else if (ch == '\r') {
                    end_size_line(c);
                } else if (ch != ' ' && ch != '\t') {
                    return -1;
                }
                i++;
                c->line_len++;
                break;
            case CH_EXT:
                if (ch == '\r') {
                    end_size_line(c);
                } else if (ch == '\n' || (ch < ' ' && ch != '\t') || ch == 0x7f) {
                    return -1;
                }
                i++;
                c->line_len++;
                break;
            case CH_SIZE_LF:
                if (ch != '\n') {
                    return -1;
                }
                i++;
                c->state = c->remaining ? CH_DATA : CH_TRAILER;
                break;
            case CH_DATA: {
                size_t take = len - i;
                if (take > c->remaining) {
                    take = (size_t)c->remaining;
                }
                if (data != NULL) {
                    memmove(data + *data_len, p + i, take);  // |data| may be |p| itself
                    *data_len += take;
                }
                c->remaining -= take;
                i += take;
                if (c->remaining == 0) {
                    c->state = CH_DATA_CR;
                }
                break;
            }
            case CH_DATA_CR:
                if (ch != '\r') {
                    return -1;
                }
                i++;
                c->state = CH_DATA_LF;
                break;
            case CH_DATA_LF:
                if (ch != '\n') {
                    return -1;
                }
                i++;
                c->state = CH_SIZE;
                c->digits = 0;
                c->line_len = 0;
                break;
            case CH_TRAILER:
                if (ch == '\r') {
                    c->state = CH_LAST_LF;
                } else if (ch == '\n' || ch == ' ' || ch == '\t') {
                    return -1;
                } else {
                    c->state = CH_TRAILER_LINE;
                }
                i++;
                c->trailer_len++;
                break;
            case CH_TRAILER_LINE:
                if (ch == '\r') {
                    c->state = CH_TRAILER_LF;
                } else if (ch == '\n' || (ch < ' ' && ch != '\t') || ch == 0x7f) {
                    return -1;
                }
                i++;
                c->trailer_len++;
                break;
            case CH_TRAILER_LF:
                if (ch != '\n') {
                    return -1;
                }
                i++;
                c->state = CH_TRAILER;
                break;
            case CH_LAST_LF:
                if (ch != '\n') {
                    return -1;
                }
                i++;
                c->state = CH_DONE;
                *out_done = 1;
                return (long)i;
            case CH_DONE:
                *out_done = 1;
                return (long)i;
        }
        if (c->line_len > MAX_CHUNK_LINE || c->trailer_len > MAX_TRAILERS) {
            return -1;
        }
    }
    *out_done = c->state == CH_DONE;
    return (long)i;
}

// ---- head rewrites ----

typedef struct {
    char *out;
    size_t cap, len;
    int overflow;
} writer;

static void put(writer *w, const void *p, size_t n) {
    if (w->len + n > w->cap) {
        w->overflow = 1;
        return;
    }
    memcpy(w->out + w->len, p, n);
    w->len += n;
}

static void puts_(writer *w, const char *s) {
    put(w, s, strlen(s));
}

static int is_hop_by_hop(const char *name, size_t len) {
    static const char *const hop[] = {"Connection", "Keep-Alive",          "Proxy-Connection",   "TE",
                                      "Upgrade",    "Proxy-Authorization", "Proxy-Authenticate", "Trailer"};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++) {
        if (gw_http_token_eq(name, len, hop[i])) {
            return 1;
        }
    }
    return 0;
}

// is_proxy_header: every Proxy-* header is meant for the proxy, and a bare "Proxy" header
// would become HTTP_PROXY in a CGI-style origin (httpoxy): none of them goes on.
static int is_proxy_header(const char *name, size_t len) {
    return gw_http_token_eq(name, len, "Proxy") || (len >= 6 && strncasecmp(name, "Proxy-", 6) == 0);
}

// named_in_connection says whether a Connection header lists this header as hop-by-hop.
// The framing headers and Host stay whatever a client lists: dropping them on request
// would change how the next hop reads the message.
static int named_in_connection(const gw_http_header *h, size_t n, const char *name, size_t len) {
    if (gw_http_token_eq(name, len, "Content-Length") || gw_http_token_eq(name, len, "Transfer-Encoding") ||
        gw_http_token_eq(name, len, "Host")) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (!gw_http_token_eq(h[i].name, h[i].name_len, "Connection")) {
            continue;
        }
        size_t pos = 0, tl;
        const char *tok;
        while ((tok = next_token(h[i].value, h[i].value_len, &pos, &tl)) != NULL) {
            if (tl == len && strncasecmp(tok, name, len) == 0) {
                return 1;
            }
        }
    }
    return 0;
}

static void put_header(writer *w, const gw_http_header *h) {
    put(w, h->name, h->name_len);
    put(w, ": ", 2);
    put(w, h->value, h->value_len);
    put(w, "\r\n", 2);
}

size_t gw_h1_write_request(const gw_http_request *req, const char *path, size_t path_len, const char *authority,
                           size_t authority_len, int close, char *out, size_t cap) {
    writer w = {out, cap, 0, 0};
    put(&w, req->method, req->method_len);
    put(&w, " ", 1);
    if (path_len == 0 || path[0] != '/') {
        put(&w, "/", 1);  // "http://host" or "http://host?q"
    }
    put(&w, path, path_len);
    puts_(&w, req->minor_version ? " HTTP/1.1\r\nHost: " : " HTTP/1.0\r\nHost: ");
    put(&w, authority, authority_len);
    put(&w, "\r\n", 2);
    const gw_http_header *h = req->headers;
    size_t n = req->num_headers;
    for (size_t i = 0; i < n; i++) {
        if (gw_http_token_eq(h[i].name, h[i].name_len, "Host") || is_hop_by_hop(h[i].name, h[i].name_len) ||
            is_proxy_header(h[i].name, h[i].name_len) || named_in_connection(h, n, h[i].name, h[i].name_len)) {
            continue;
        }
        put_header(&w, &h[i]);
    }
    if (close) {
        puts_(&w, "Connection: close\r\n");
    }
    put(&w, "\r\n", 2);
    return w.overflow ? 0 : w.len;
}

size_t gw_h1_write_response(const gw_http_response *resp, int client_minor, int keep_alive, int dechunk, char *out,
                            size_t cap) {
    writer w = {out, cap, 0, 0};
    char status[16];
    memcpy(status, client_minor ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
    status[9] = (char)('0' + resp->status / 100);
    status[10] = (char)('0' + resp->status / 10 % 10);
    status[11] = (char)('0' + resp->status % 10);
    status[12] = ' ';
    put(&w, status, 13);
    put(&w, resp->reason, resp->reason_len);
    put(&w, "\r\n", 2);
    const gw_http_header *h = resp->headers;
    size_t n = resp->num_headers;
    int has_te = count_headers(h, n, "Transfer-Encoding") > 0;
    for (size_t i = 0; i < n; i++) {
        if (is_hop_by_hop(h[i].name, h[i].name_len) || named_in_connection(h, n, h[i].name, h[i].name_len) ||
            (has_te && gw_http_token_eq(h[i].name, h[i].name_len, "Content-Length")) ||
            (dechunk && gw_http_token_eq(h[i].name, h[i].name_len, "Transfer-Encoding"))) {
            continue;
        }
        put_header(&w, &h[i]);
    }
    if (!keep_alive) {
        puts_(&w, "Connection: close\r\n");
    } else if (client_minor == 0) {
        puts_(&w, "Connection: keep-alive\r\n");
    }
    put(&w, "\r\n", 2);
    return w.overflow ? 0 : w.len;
}

int gw_h1_head_complete(const uint8_t *buf, size_t len, size_t *scanned) {
    size_t i = *scanned;
    for (; i < len; i++) {
        if (buf[i] != '\n') {
            continue;
        }
        if (i == 0 || buf[i - 1] != '\r') {
            *scanned = i + 1;
            return 1;  // a bare LF: let the parser refuse it
        }
        if (i >= 3 && buf[i - 2] == '\n' && buf[i - 3] == '\r') {
            *scanned = i + 1;
            return 1;
        }
    }
    *scanned = len;
    return 0;
}
