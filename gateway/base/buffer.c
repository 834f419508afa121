#include "gateway/base/buffer.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

_Atomic long gw_buffers_in_use, gw_buffers_free;

void gw_buf_pool_init(gw_buf_pool *pool, size_t max_free) {
    memset(pool, 0, sizeof(*pool));
    pool->max_free = max_free;
}

void gw_buf_pool_clear(gw_buf_pool *pool) {
    while (pool->free_list != NULL) {
        gw_buf *b = pool->free_list;
        pool->free_list = b->next_free;
        free(b);
    }
    pool->free_count = 0;
    gw_buf_pool_publish(pool);
}

void gw_buf_pool_publish(gw_buf_pool *pool) {
    long in_use = (long)pool->in_use, free_count = (long)pool->free_count;
    atomic_fetch_add_explicit(&gw_buffers_in_use, in_use - pool->published_in_use, memory_order_relaxed);
    atomic_fetch_add_explicit(&gw_buffers_free, free_count - pool->published_free, memory_order_relaxed);
    pool->published_in_use = in_use;
    pool->published_free = free_count;
}

size_t gw_buf_pool_trim(gw_buf_pool *pool) {
    size_t n = pool->low_free < pool->free_count ? pool->low_free : pool->free_count;
    for (size_t i = 0; i < n; i++) {
        gw_buf *b = pool->free_list;
        pool->free_list = b->next_free;
        free(b);
    }
    pool->free_count -= n;
    pool->low_free = pool->free_count;
    return n;
}

gw_buf *gw_buf_get(gw_buf_pool *pool) {
    gw_buf *b = pool->free_list;
    if (b != NULL) {
        pool->free_list = b->next_free;
        pool->free_count--;
        if (pool->free_count < pool->low_free) {
            pool->low_free = pool->free_count;
        }
    } else {
        b = malloc(sizeof(*b));
        if (b == NULL) {
            return NULL;
        }
    }
    b->next_free = NULL;
    b->start = b->end = 0;
    pool->in_use++;
    return b;
}

void gw_buf_put(gw_buf_pool *pool, gw_buf *b) {
    if (b == NULL) {
        return;
    }
    pool->in_use--;
    if (pool->free_count >= pool->max_free) {
        free(b);
        return;
    }
    b->next_free = pool->free_list;
    pool->free_list = b;
    pool->free_count++;
}

size_t gw_buf_room(gw_buf *b) {
    if (b->start == b->end) {
        b->start = b->end = 0;
    } else if (b->end == GW_BUF_SIZE && b->start > 0) {
        memmove(b->data, b->data + b->start, b->end - b->start);
        b->end -= b->start;
        b->start = 0;
    }
    return GW_BUF_SIZE - b->end;
}

size_t gw_buf_append(gw_buf *b, const void *p, size_t len) {
    size_t room = gw_buf_room(b);
    if (len > room) {
        len = room;
    }
    memcpy(b->data + b->end, p, len);
    b->end += (uint32_t)len;
    return len;
}
