// xalloc: allocations that abort with a message when memory is out.
#include "gateway/base/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void out_of_memory(size_t size) {
    char msg[96];
    int n = snprintf(msg, sizeof(msg), "mtlsgw: out of memory (allocating %zu bytes)\n", size);
    if (write(STDERR_FILENO, msg, (size_t)n) < 0) {
        // nothing more to say it with
    }
    abort();
}

void *gw_xmalloc(size_t size) {
    void *p = malloc(size ? size : 1);
    if (p == NULL) {
        out_of_memory(size);
    }
    return p;
}

void *gw_xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL) {
        out_of_memory(n * size);
    }
    return p;
}

void *gw_xrealloc(void *p, size_t size) {
    void *q = realloc(p, size ? size : 1);
    if (q == NULL) {
        out_of_memory(size);
    }
    return q;
}

char *gw_xstrdup(const char *s) {
    char *p = strdup(s);
    if (p == NULL) {
        out_of_memory(strlen(s) + 1);
    }
    return p;
}

char *gw_xstrndup(const char *s, size_t n) {
    char *p = strndup(s, n);
    if (p == NULL) {
        out_of_memory(n + 1);
    }
    return p;
}
