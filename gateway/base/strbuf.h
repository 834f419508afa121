// strbuf: a growing string (admin pages, reports), and the one JSON string escaper used by
// them and by the access log: '"' and '\\' escaped, control bytes and 0x7f as \\u00XX.
#ifndef MTLSGW_STRBUF_H
#define MTLSGW_STRBUF_H

#include <stddef.h>

// A growing string, for the admin pages.
typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} gw_strbuf;
void gw_strbuf_printf(gw_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// gw_strbuf_json appends |s| as a JSON string literal.
void gw_strbuf_json(gw_strbuf *b, const char *s);

// gw_json_string writes |v| (NULL: "") as a JSON string literal into |out| (|cap| bytes,
// always terminated, cut short if it does not fit) and returns its length.
size_t gw_json_string(char *out, size_t cap, const char *v);

#endif
