// buffer: fixed-size relay buffers from a per-worker pool. A tunnel takes a buffer when
// bytes arrive and gives it back as soon as it is empty, so idle tunnels hold none.
#ifndef MTLSGW_BUFFER_H
#define MTLSGW_BUFFER_H

#include <stddef.h>
#include <stdint.h>

// One TLS record's worth of plaintext. (32 KiB halves the writes of a bulk download but
// measured no cheaper per GB: the cost is the kernel's.)
#define GW_BUF_SIZE 16384
// The largest request head accepted (limits.header_max); it must fit one buffer.
#define GW_HEADER_MAX 16384

typedef struct gw_buf {
    struct gw_buf *next_free;
    uint32_t start, end;  // bytes [start, end) are pending
    uint8_t data[GW_BUF_SIZE];
} gw_buf;

// Relay buffers held by tunnels and kept free, in all workers (for /metrics), as each
// worker last published them: the relay itself touches no shared counter.
extern _Atomic long gw_buffers_in_use, gw_buffers_free;

typedef struct {
    gw_buf *free_list;
    size_t free_count, max_free;
    size_t low_free;  // the fewest free buffers since the last trim
    size_t in_use;
    long published_in_use, published_free;  // what gw_buf_pool_publish last added
} gw_buf_pool;

void gw_buf_pool_init(gw_buf_pool *pool, size_t max_free);
void gw_buf_pool_clear(gw_buf_pool *pool);

// gw_buf_pool_trim frees the buffers that stayed unused since the previous call (the low
// water mark of the free list), so a burst's buffers go back to the system once the
// burst is over. Returns how many were freed. Called once a second by the worker.
size_t gw_buf_pool_trim(gw_buf_pool *pool);

// gw_buf_pool_publish adds the change in |pool|'s counts since its last call to the
// process-wide gauges above (the worker calls it once a second, after trimming).
void gw_buf_pool_publish(gw_buf_pool *pool);

// gw_buf_get returns an empty buffer or NULL when out of memory.
gw_buf *gw_buf_get(gw_buf_pool *pool);
// gw_buf_put returns |b| (NULL is fine) to the pool.
void gw_buf_put(gw_buf_pool *pool, gw_buf *b);

static inline size_t gw_buf_len(const gw_buf *b) {
    return b ? b->end - b->start : 0;
}
// gw_buf_room is the free space at the end, compacting first when that helps.
size_t gw_buf_room(gw_buf *b);
// gw_buf_append copies up to |len| bytes; returns how many fit.
size_t gw_buf_append(gw_buf *b, const void *p, size_t len);

#endif
