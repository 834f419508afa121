#include "gateway/base/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void gw_strbuf_printf(gw_strbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0 || b->failed) {
            b->failed = 1;
            return;
        }
        if (b->p != NULL && (size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap - b->len <= (size_t)n) {
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

void gw_strbuf_json(gw_strbuf *b, const char *s) {
    gw_strbuf_printf(b, "\"");
    for (; s != NULL && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            gw_strbuf_printf(b, "\\%c", c);
        } else if (c < 0x20 || c == 0x7f) {
            gw_strbuf_printf(b, "\\u%04x", c);
        } else {
            gw_strbuf_printf(b, "%c", c);
        }
    }
    gw_strbuf_printf(b, "\"");
}

size_t gw_json_string(char *out, size_t cap, const char *v) {
    if (cap < 3) {
        return 0;
    }
    if (v == NULL) {
        v = "";
    }
    size_t n = 0;
    out[n++] = '"';
    for (; *v && n + 8 < cap; v++) {
        unsigned char c = (unsigned char)*v;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n++] = '"';
    out[n] = '\0';
    return n;
}
