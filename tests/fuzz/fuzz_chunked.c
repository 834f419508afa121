// libFuzzer harness: the chunked-body scanner. The first byte picks how the rest is cut
// into pieces; the scanner must reach the same verdict (end offset or error) whether it
// sees the body whole or piece by piece, since a client decides where its writes end.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/proto/h1.h"

static long scan(const uint8_t *p, size_t len, size_t piece, int *out_done) {
    gw_chunked c;
    gw_chunked_init(&c);
    size_t off = 0;
    *out_done = 0;
    while (off < len) {
        size_t n = len - off < piece ? len - off : piece;
        long used = gw_chunked_scan(&c, p + off, n, out_done);
        if (used < 0) {
            return -1;
        }
        if ((size_t)used > n || (!*out_done && (size_t)used != n)) {
            abort();
        }
        off += (size_t)used;
        if (*out_done) {
            return (long)off;
        }
    }
    return (long)off;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) {
        return 0;
    }
    size_t piece = (size_t)data[0] % 17 + 1;
    int done_whole, done_pieces, done_bytes;
    long whole = scan(data + 1, size - 1, size, &done_whole);
    long pieces = scan(data + 1, size - 1, piece, &done_pieces);
    long bytes = scan(data + 1, size - 1, 1, &done_bytes);
    if (whole != pieces || whole != bytes || done_whole != done_pieces || done_whole != done_bytes) {
        abort();
    }
    // The decoder consumes exactly what the scanner does, and never writes more than it
    // consumed (it may decode in place).
    gw_chunked c;
    gw_chunked_init(&c);
    uint8_t *copy = malloc(size);
    memcpy(copy, data + 1, size - 1);
    size_t out_len = 0;
    int done = 0;
    long used = gw_chunked_decode(&c, copy, size - 1, copy, &out_len, &done);
    if (used != whole || (used >= 0 && (out_len > (size_t)used || done != done_whole))) {
        abort();
    }
    free(copy);
    return 0;
}
