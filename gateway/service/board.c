// board: live tunnels, the last failures, start and reload (see board.h).
#include "gateway/service/board.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

const char *const gw_board_protos[] = {"socks5", "socks4", "http-connect", "http", "forward", "transparent", "other"};
const size_t gw_board_num_protos = sizeof(gw_board_protos) / sizeof(gw_board_protos[0]);

static atomic_long g_live[GW_BOARD_LISTENERS][sizeof(gw_board_protos) / sizeof(gw_board_protos[0])];
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static gw_board_failure g_ring[GW_BOARD_FAILURES];
static size_t g_next, g_count;
static atomic_llong g_started, g_reload;
static atomic_int g_reload_ok;

static size_t proto_index(const char *proto) {
    for (size_t i = 0; proto != NULL && i + 1 < gw_board_num_protos; i++) {
        if (strcmp(proto, gw_board_protos[i]) == 0) {
            return i;
        }
    }
    return gw_board_num_protos - 1;
}

void gw_board_live(size_t listener, const char *proto, int delta) {
    if (listener < GW_BOARD_LISTENERS) {
        atomic_fetch_add_explicit(&g_live[listener][proto_index(proto)], delta, memory_order_relaxed);
    }
}

long gw_board_live_count(size_t listener, size_t proto) {
    return listener < GW_BOARD_LISTENERS && proto < gw_board_num_protos
               ? atomic_load_explicit(&g_live[listener][proto], memory_order_relaxed)
               : 0;
}

void gw_board_failure_note(const gw_board_failure *f) {
    pthread_mutex_lock(&g_lock);
    g_ring[g_next] = *f;
    g_next = (g_next + 1) % GW_BOARD_FAILURES;
    g_count += g_count < GW_BOARD_FAILURES;
    pthread_mutex_unlock(&g_lock);
}

size_t gw_board_failures(gw_board_failure *out, size_t cap) {
    pthread_mutex_lock(&g_lock);
    size_t n = g_count < cap ? g_count : cap;
    for (size_t i = 0; i < n; i++) {
        out[i] = g_ring[(g_next + GW_BOARD_FAILURES - 1 - i) % GW_BOARD_FAILURES];
    }
    pthread_mutex_unlock(&g_lock);
    return n;
}

void gw_board_started(void) {
    atomic_store(&g_started, (long long)time(NULL));
}

void gw_board_reloaded(int ok) {
    atomic_store(&g_reload, (long long)time(NULL));
    atomic_store(&g_reload_ok, ok);
}

void gw_board_times(time_t *started, time_t *last_reload, int *last_ok) {
    *started = (time_t)atomic_load(&g_started);
    *last_reload = (time_t)atomic_load(&g_reload);
    *last_ok = atomic_load(&g_reload_ok);
}
