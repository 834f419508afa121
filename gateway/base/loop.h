// loop: a small epoll event loop with timers, one per worker thread.
//
// Watchers are registered edge-triggered: an owner keeps its own readiness flags and
// acts on them when its buffers allow (see tunnel.c). Events name a descriptor and a
// generation, looked up in the loop's table: a watcher removed during a batch of events
// is never called again, and objects closed during a batch are freed after it
// (gw_loop_defer_free), so stale epoll events never touch freed memory.
#ifndef MTLSGW_LOOP_H
#define MTLSGW_LOOP_H

#include <stddef.h>
#include <stdint.h>

typedef struct gw_loop gw_loop;
typedef struct gw_watcher gw_watcher;
typedef struct gw_timer gw_timer;

typedef void (*gw_io_fn)(gw_loop *loop, gw_watcher *watcher, uint32_t events);
typedef void (*gw_timer_fn)(gw_loop *loop, gw_timer *timer);

struct gw_watcher {
    int fd;
    uint32_t events;  // as registered with epoll, 0 when not registered
    gw_io_fn fn;      // NULL once removed: pending events for it are dropped
    void *data;
};

struct gw_timer {
    uint64_t deadline_ms;
    uint64_t seq;       // arming order: timers armed while timers run wait for the next round
    size_t heap_index;  // position in the loop's heap, SIZE_MAX when not armed
    gw_timer_fn fn;
    void *data;
};

// gw_loop_new returns a new loop or NULL on failure (errno set).
gw_loop *gw_loop_new(void);
// gw_loop_free closes the epoll descriptor and frees |loop|; watchers are the owners'.
void gw_loop_free(gw_loop *loop);

// gw_loop_run dispatches events and timers until gw_loop_stop is called (before or during
// the run); it can then be run again.
void gw_loop_run(gw_loop *loop);
void gw_loop_stop(gw_loop *loop);

// gw_loop_now returns the loop's cached monotonic time in milliseconds, refreshed
// after each epoll_wait.
uint64_t gw_loop_now(const gw_loop *loop);
// gw_monotonic_ms / gw_monotonic_us read the monotonic clock now (the one clock of the
// process; the loop caches it in milliseconds, see gw_loop_now).
uint64_t gw_monotonic_ms(void);
uint64_t gw_monotonic_us(void);

// gw_watcher_init prepares |w| for |fd|; nothing is registered yet.
void gw_watcher_init(gw_watcher *w, int fd, gw_io_fn fn, void *data);
// gw_watcher_set registers or changes the events (EPOLLIN, EPOLLOUT, EPOLLET...) of |w|.
// events == 0 removes it from epoll. Returns 1 on success, 0 on failure (errno set).
int gw_watcher_set(gw_loop *loop, gw_watcher *w, uint32_t events);
// gw_watcher_move hands |src|'s fd and registration to |dst| (its fn and data set by
// gw_watcher_init) with |events|: no epoll_ctl when the events stay the same (an
// upstream connection going into the pool and out again), else one. Events pending for
// |src| in this batch go to |dst|. Returns 1, or 0 (errno set) with neither registered.
int gw_watcher_move(gw_loop *loop, gw_watcher *dst, gw_watcher *src, uint32_t events);
// gw_watcher_remove unregisters |w| and drops its pending events. The fd stays open.
void gw_watcher_remove(gw_loop *loop, gw_watcher *w);
// gw_watcher_forget is gw_watcher_remove for a descriptor the caller closes right after:
// no epoll_ctl (close() ends the registration). Its events, pending or late, are dropped.
void gw_watcher_forget(gw_loop *loop, gw_watcher *w);

void gw_timer_init(gw_timer *t, gw_timer_fn fn, void *data);
// gw_timer_start arms |t| to fire once |after_ms| from now, re-arming it if armed.
void gw_timer_start(gw_loop *loop, gw_timer *t, uint64_t after_ms);
void gw_timer_stop(gw_loop *loop, gw_timer *t);

// gw_loop_defer_free calls free_fn(ptr) after the current batch of events. Used by
// objects that close themselves inside a callback.
void gw_loop_defer_free(gw_loop *loop, void (*free_fn)(void *), void *ptr);

// gw_loop_longest_turn_us says how long the longest turn of |loop| took (one batch of
// events with its timers and deferred frees): how long a tunnel could have waited on it.
uint64_t gw_loop_longest_turn_us(const gw_loop *loop);

#endif
