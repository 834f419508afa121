#include "gateway/base/loop.h"

#include <stdatomic.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define GW_LOOP_BATCH 256

typedef struct {
    void (*fn)(void *);
    void *ptr;
} gw_deferred;

// What epoll knows of a descriptor, indexed by fd. An event carries the fd and the
// slot's generation, not a pointer: a watcher removed, moved or forgotten is found (or
// not) through its slot, so a stale event, even one for a descriptor closed meanwhile
// and kept open by a child between fork and exec, never reaches freed memory.
typedef struct {
    gw_watcher *w;    // who gets its events, NULL: nobody (they are dropped)
    uint32_t gen;     // bumped whenever the registration stops being w's
    uint32_t events;  // as registered with epoll, 0 when not registered
} gw_slot;

struct gw_loop {
    int epfd;
    gw_slot *slots;
    size_t num_slots;
    int stopping;
    uint64_t now_ms;
    uint64_t timer_seq;
    gw_timer **heap;  // binary min-heap on deadline_ms
    size_t heap_len, heap_cap;
    gw_deferred *deferred;
    size_t deferred_len, deferred_cap;
    struct epoll_event events[GW_LOOP_BATCH];
    int batch_len, batch_pos;
    _Atomic uint64_t longest_turn_us;  // the longest one turn (a batch, its timers) took
};

uint64_t gw_monotonic_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t gw_monotonic_ms(void) {
    return gw_monotonic_us() / 1000u;
}

gw_loop *gw_loop_new(void) {
    gw_loop *loop = calloc(1, sizeof(*loop));
    if (loop == NULL) {
        return NULL;
    }
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        free(loop);
        return NULL;
    }
    loop->now_ms = gw_monotonic_ms();
    return loop;
}

static void run_deferred(gw_loop *loop) {
    // A free function may defer more frees; take the list as it grows.
    for (size_t i = 0; i < loop->deferred_len; i++) {
        loop->deferred[i].fn(loop->deferred[i].ptr);
    }
    loop->deferred_len = 0;
}

void gw_loop_free(gw_loop *loop) {
    if (loop == NULL) {
        return;
    }
    run_deferred(loop);
    close(loop->epfd);
    free(loop->slots);
    free(loop->heap);
    free(loop->deferred);
    free(loop);
}

void gw_loop_stop(gw_loop *loop) {
    loop->stopping = 1;
}

uint64_t gw_loop_now(const gw_loop *loop) {
    return loop->now_ms;
}

void gw_watcher_init(gw_watcher *w, int fd, gw_io_fn fn, void *data) {
    w->fd = fd;
    w->events = 0;
    w->fn = fn;
    w->data = data;
}

// slot_of returns |fd|'s slot, growing the table as descriptors grow, or NULL (errno set).
static gw_slot *slot_of(gw_loop *loop, int fd) {
    if (fd < 0) {
        errno = EBADF;
        return NULL;
    }
    if ((size_t)fd >= loop->num_slots) {
        size_t n = loop->num_slots ? loop->num_slots : 256;
        while (n <= (size_t)fd) {
            n *= 2;
        }
        gw_slot *grown = realloc(loop->slots, n * sizeof(*grown));
        if (grown == NULL) {
            errno = ENOMEM;
            return NULL;
        }
        memset(grown + loop->num_slots, 0, (n - loop->num_slots) * sizeof(*grown));
        loop->slots = grown;
        loop->num_slots = n;
    }
    return &loop->slots[fd];
}

// attach registers |fd| for |events| on behalf of |w|, with one epoll_ctl at most: none
// when the registration is already what |w| wants (it goes on to |w|, with any events
// pending for it in this batch).
static int attach(gw_loop *loop, gw_watcher *w, uint32_t events) {
    gw_slot *s = slot_of(loop, w->fd);
    if (s == NULL) {
        return 0;
    }
    if (s->events != events) {
        int op = EPOLL_CTL_MOD;
        if (s->events == 0) {
            op = EPOLL_CTL_ADD;
            s->gen++;  // a new registration: nothing pending can be for it
        }
        struct epoll_event ev = {.events = events, .data.u64 = (uint64_t)(uint32_t)w->fd | (uint64_t)s->gen << 32};
        if (epoll_ctl(loop->epfd, op, w->fd, &ev) != 0) {
            return 0;
        }
        s->events = events;
    }
    s->w = w;
    w->events = events;
    return 1;
}

int gw_watcher_set(gw_loop *loop, gw_watcher *w, uint32_t events) {
    if (events == w->events) {
        return 1;
    }
    if (events == 0) {
        gw_watcher_remove(loop, w);
        return 1;
    }
    return attach(loop, w, events);
}

int gw_watcher_move(gw_loop *loop, gw_watcher *dst, gw_watcher *src, uint32_t events) {
    dst->fd = src->fd;
    src->events = 0;
    if (!attach(loop, dst, events)) {
        int e = errno;
        gw_slot *s = dst->fd >= 0 && (size_t)dst->fd < loop->num_slots ? &loop->slots[dst->fd] : NULL;
        if (s != NULL && s->events != 0) {
            epoll_ctl(loop->epfd, EPOLL_CTL_DEL, dst->fd, NULL);  // nothing may point at |src| now
            *s = (gw_slot){.gen = s->gen + 1};
        }
        dst->events = 0;
        errno = e;
        return 0;
    }
    return 1;
}

// detach: |w|'s registration is no longer anyone's; events pending for it are dropped.
static void detach(gw_loop *loop, gw_watcher *w, int unregister) {
    if (w->events != 0 && w->fd >= 0 && (size_t)w->fd < loop->num_slots) {
        gw_slot *s = &loop->slots[w->fd];
        if (unregister && s->events != 0) {
            epoll_ctl(loop->epfd, EPOLL_CTL_DEL, w->fd, NULL);
        }
        s->w = NULL;
        s->events = 0;
        s->gen++;
    }
    w->events = 0;
}

void gw_watcher_remove(gw_loop *loop, gw_watcher *w) {
    detach(loop, w, 1);
}

void gw_watcher_forget(gw_loop *loop, gw_watcher *w) {
    detach(loop, w, 0);  // close() removes it from epoll (or a child's copy keeps a stale one)
}

void gw_timer_init(gw_timer *t, gw_timer_fn fn, void *data) {
    t->deadline_ms = 0;
    t->heap_index = SIZE_MAX;
    t->fn = fn;
    t->data = data;
}

static void heap_swap(gw_loop *loop, size_t a, size_t b) {
    gw_timer *ta = loop->heap[a];
    loop->heap[a] = loop->heap[b];
    loop->heap[b] = ta;
    loop->heap[a]->heap_index = a;
    loop->heap[b]->heap_index = b;
}

static int earlier(const gw_timer *a, const gw_timer *b) {
    return a->deadline_ms < b->deadline_ms || (a->deadline_ms == b->deadline_ms && a->seq < b->seq);
}

static void heap_up(gw_loop *loop, size_t i) {
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!earlier(loop->heap[i], loop->heap[parent])) {
            break;
        }
        heap_swap(loop, i, parent);
        i = parent;
    }
}

static void heap_down(gw_loop *loop, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < loop->heap_len && earlier(loop->heap[l], loop->heap[m])) {
            m = l;
        }
        if (r < loop->heap_len && earlier(loop->heap[r], loop->heap[m])) {
            m = r;
        }
        if (m == i) {
            return;
        }
        heap_swap(loop, i, m);
        i = m;
    }
}

void gw_timer_stop(gw_loop *loop, gw_timer *t) {
    size_t i = t->heap_index;
    if (i == SIZE_MAX) {
        return;
    }
    loop->heap_len--;
    if (i != loop->heap_len) {
        loop->heap[i] = loop->heap[loop->heap_len];
        loop->heap[i]->heap_index = i;
        heap_down(loop, i);
        heap_up(loop, i);
    }
    t->heap_index = SIZE_MAX;
}

void gw_timer_start(gw_loop *loop, gw_timer *t, uint64_t after_ms) {
    gw_timer_stop(loop, t);
    if (loop->heap_len == loop->heap_cap) {
        size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
        gw_timer **heap = realloc(loop->heap, cap * sizeof(*heap));
        if (heap == NULL) {
            abort();  // out of memory while arming a timer: no safe way to continue
        }
        loop->heap = heap;
        loop->heap_cap = cap;
    }
    t->deadline_ms = loop->now_ms + after_ms;
    t->seq = loop->timer_seq++;
    t->heap_index = loop->heap_len;
    loop->heap[loop->heap_len++] = t;
    heap_up(loop, t->heap_index);
}

void gw_loop_defer_free(gw_loop *loop, void (*free_fn)(void *), void *ptr) {
    if (loop->deferred_len == loop->deferred_cap) {
        size_t cap = loop->deferred_cap ? loop->deferred_cap * 2 : 64;
        gw_deferred *d = realloc(loop->deferred, cap * sizeof(*d));
        if (d == NULL) {
            abort();
        }
        loop->deferred = d;
        loop->deferred_cap = cap;
    }
    loop->deferred[loop->deferred_len++] = (gw_deferred){free_fn, ptr};
}

static void run_timers(gw_loop *loop) {
    uint64_t seq_limit = loop->timer_seq;
    while (loop->heap_len > 0 && loop->heap[0]->deadline_ms <= loop->now_ms && loop->heap[0]->seq < seq_limit) {
        gw_timer *t = loop->heap[0];
        gw_timer_stop(loop, t);
        t->fn(loop, t);
    }
}

void gw_loop_run(gw_loop *loop) {
    while (!loop->stopping) {
        int timeout = -1;
        if (loop->heap_len > 0) {
            uint64_t d = loop->heap[0]->deadline_ms;
            timeout = d <= loop->now_ms ? 0 : (int)(d - loop->now_ms > 60000 ? 60000 : d - loop->now_ms);
        }
        int n = epoll_wait(loop->epfd, loop->events, GW_LOOP_BATCH, timeout);
        uint64_t turn_start = gw_monotonic_us();
        loop->now_ms = turn_start / 1000;
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            abort();  // EBADF/EINVAL: the loop itself is broken
        }
        loop->batch_len = n;
        for (loop->batch_pos = 0; loop->batch_pos < n;) {
            struct epoll_event *ev = &loop->events[loop->batch_pos++];
            uint32_t fd = (uint32_t)ev->data.u64, gen = (uint32_t)(ev->data.u64 >> 32);
            gw_slot *s = fd < loop->num_slots ? &loop->slots[fd] : NULL;
            if (s != NULL && s->gen == gen && s->w != NULL && s->w->fn != NULL) {
                s->w->fn(loop, s->w, ev->events);
            }
        }
        loop->batch_len = loop->batch_pos = 0;
        run_timers(loop);
        run_deferred(loop);
        uint64_t turn = gw_monotonic_us() - turn_start;
        if (turn > atomic_load_explicit(&loop->longest_turn_us, memory_order_relaxed)) {
            atomic_store_explicit(&loop->longest_turn_us, turn, memory_order_relaxed);
        }
    }
    run_deferred(loop);
    loop->stopping = 0;  // the loop may be run again
}

uint64_t gw_loop_longest_turn_us(const gw_loop *loop) {
    return atomic_load_explicit(&((gw_loop *)loop)->longest_turn_us, memory_order_relaxed);
}
