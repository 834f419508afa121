// The base layer: the loop's timers (order, re-arming, stopping), watchers removed in the
// middle of a batch, forgotten (closed without EPOLL_CTL_DEL) or moved, the buffer pool's
// trim, and the one JSON escaper.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/base/buffer.h"
#include "gateway/base/loop.h"
#include "gateway/base/strbuf.h"

static char order[16];
static size_t fired;

static void on_timer(gw_loop *loop, gw_timer *t) {
    order[fired++] = *(const char *)t->data;
    if (fired == 3) {
        gw_loop_stop(loop);
    }
}

static void timers_fire_in_deadline_order(void **state) {
    gw_loop *loop = gw_loop_new();
    assert_non_null(loop);
    gw_timer a, b, c, d;
    gw_timer_init(&a, on_timer, "a");
    gw_timer_init(&b, on_timer, "b");
    gw_timer_init(&c, on_timer, "c");
    gw_timer_init(&d, on_timer, "d");
    fired = 0;
    gw_timer_start(loop, &c, 30);
    gw_timer_start(loop, &a, 10);
    gw_timer_start(loop, &b, 50);
    gw_timer_start(loop, &d, 5);
    gw_timer_stop(loop, &d);       // stopped: never fires
    gw_timer_start(loop, &b, 20);  // re-armed earlier
    gw_loop_run(loop);
    assert_int_equal(fired, 3);
    assert_memory_equal(order, "abc", 3);
    gw_loop_free(loop);
}

typedef struct {
    gw_watcher w;
    int calls;
    gw_watcher *other;  // removed by this watcher's callback
} probe;

static void on_ready(gw_loop *loop, gw_watcher *w, uint32_t events) {
    probe *p = w->data;
    p->calls++;
    if (p->other != NULL) {
        gw_watcher_remove(loop, p->other);  // in the same batch: its event must be dropped
    }
    gw_watcher_remove(loop, w);
    gw_loop_stop(loop);
}

static void watcher_removed_mid_batch_is_not_called(void **state) {
    gw_loop *loop = gw_loop_new();
    int s1[2], s2[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, s1), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, s2), 0);
    assert_int_equal(write(s1[1], "x", 1), 1);  // both readable before the loop runs
    assert_int_equal(write(s2[1], "x", 1), 1);
    probe p1 = {0}, p2 = {0};
    gw_watcher_init(&p1.w, s1[0], on_ready, &p1);
    gw_watcher_init(&p2.w, s2[0], on_ready, &p2);
    p1.other = &p2.w;
    p2.other = &p1.w;
    assert_true(gw_watcher_set(loop, &p1.w, EPOLLIN));
    assert_true(gw_watcher_set(loop, &p2.w, EPOLLIN));
    gw_loop_run(loop);
    // Whichever ran first removed the other, whose event in that batch was dropped.
    assert_int_equal(p1.calls + p2.calls, 1);
    gw_loop_free(loop);
    close(s1[0]), close(s1[1]), close(s2[0]), close(s2[1]);
}

typedef struct {
    gw_watcher w;
    int calls;
} counter;

static void on_count(gw_loop *loop, gw_watcher *w, uint32_t events) {
    ((counter *)w->data)->calls++;
    gw_loop_stop(loop);
}

// A descriptor closed without EPOLL_CTL_DEL (gw_watcher_forget) while a copy keeps its
// file open, as a child between fork and exec does: its registration outlives it, and
// when the number comes back for a new socket, events of the old registration must not
// reach the new watcher or the forgotten one.
static void forgotten_descriptor_events_go_nowhere(void **state) {
    gw_loop *loop = gw_loop_new();
    int a[2], b[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
    counter old = {0}, fresh = {0};
    gw_watcher_init(&old.w, a[0], on_count, &old);
    assert_true(gw_watcher_set(loop, &old.w, EPOLLIN | EPOLLET));
    int child_copy = dup(a[0]);
    int number = a[0];
    gw_watcher_forget(loop, &old.w);
    close(a[0]);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
    int reused = b[0] == number ? b[0] : (dup2(b[0], number), close(b[0]), number);
    gw_watcher_init(&fresh.w, reused, on_count, &fresh);
    assert_true(gw_watcher_set(loop, &fresh.w, EPOLLIN | EPOLLET));
    assert_int_equal(write(a[1], "x", 1), 1);  // the stale registration fires
    assert_int_equal(write(b[1], "y", 1), 1);  // and the new one
    gw_loop_run(loop);
    assert_int_equal(old.calls, 0);
    assert_int_equal(fresh.calls, 1);
    gw_loop_free(loop);
    close(child_copy), close(a[1]), close(reused), close(b[1]);
}

// An owner handing a registration to another with the same events (the upstream pool):
// the events go to the new owner.
static void moved_watcher_events_go_to_the_new_owner(void **state) {
    gw_loop *loop = gw_loop_new();
    int a[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
    counter first = {0}, second = {0};
    gw_watcher_init(&first.w, a[0], on_count, &first);
    assert_true(gw_watcher_set(loop, &first.w, EPOLLIN | EPOLLET));
    gw_watcher_init(&second.w, -1, on_count, &second);
    assert_true(gw_watcher_move(loop, &second.w, &first.w, EPOLLIN | EPOLLET));
    assert_int_equal(first.w.events, 0);
    assert_int_equal(write(a[1], "x", 1), 1);
    gw_loop_run(loop);
    assert_int_equal(first.calls, 0);
    assert_int_equal(second.calls, 1);
    gw_watcher_remove(loop, &second.w);
    gw_loop_free(loop);
    close(a[0]), close(a[1]);
}

static void pool_trim_frees_what_stayed_unused(void **state) {
    gw_buf_pool pool;
    gw_buf_pool_init(&pool, 256);
    gw_buf *b[10];
    for (int i = 0; i < 10; i++) {
        b[i] = gw_buf_get(&pool);
        assert_non_null(b[i]);
        assert_int_equal(gw_buf_len(b[i]), 0);
    }
    for (int i = 0; i < 10; i++) {
        gw_buf_put(&pool, b[i]);
    }
    assert_int_equal(pool.free_count, 10);
    gw_buf_pool_trim(&pool);            // marks the low water of this period
    gw_buf *again = gw_buf_get(&pool);  // one used again since
    gw_buf_put(&pool, again);
    size_t freed = gw_buf_pool_trim(&pool);
    assert_true(freed >= 9);  // those nobody took in a whole period go back
    assert_true(pool.free_count <= 1);
    gw_buf *c = gw_buf_get(&pool);
    assert_int_equal(gw_buf_append(c, "hello", 5), 5);
    c->start = 5;  // consumed: room is regained by compacting
    assert_int_equal(gw_buf_room(c), GW_BUF_SIZE);
    gw_buf_put(&pool, c);
    gw_buf_put(&pool, NULL);
    gw_buf_pool_clear(&pool);
}

static void one_json_escaper(void **state) {
    char out[64];
    gw_json_string(out, sizeof(out),
                   "a\"b\\c\n\x7f"
                   "d");
    assert_string_equal(out, "\"a\\\"b\\\\c\\u000a\\u007fd\"");
    gw_strbuf b = {0};
    gw_strbuf_json(&b,
                   "a\"b\\c\n\x7f"
                   "d");
    assert_false(b.failed);
    assert_string_equal(b.p, out);  // the admin pages and the access log agree
    free(b.p);
    gw_json_string(out, sizeof(out), NULL);
    assert_string_equal(out, "\"\"");
    char tiny[8];
    gw_json_string(tiny, sizeof(tiny), "0123456789");
    assert_true(strlen(tiny) < sizeof(tiny));  // cut, terminated
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(timers_fire_in_deadline_order),
        cmocka_unit_test(watcher_removed_mid_batch_is_not_called),
        cmocka_unit_test(forgotten_descriptor_events_go_nowhere),
        cmocka_unit_test(moved_watcher_events_go_to_the_new_owner),
        cmocka_unit_test(pool_trim_frees_what_stayed_unused),
        cmocka_unit_test(one_json_escaper),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
