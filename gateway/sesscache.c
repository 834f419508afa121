#include "gateway/sesscache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SESSIONS_PER_KEY 64  // TLS 1.3 tickets are used once: enough for a burst of new tunnels

typedef struct entry {
    struct entry *next;  // insertion order, oldest first
    SSL_SESSION *sessions[SESSIONS_PER_KEY];
    size_t n;
    char key[];
} entry;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static entry *g_head, *g_tail;
static size_t g_len, g_max = 10000;

void gw_sesscache_init(size_t max_keys) {
    g_max = max_keys;
}

static void entry_free(entry *e) {
    for (size_t i = 0; i < e->n; i++) {
        SSL_SESSION_free(e->sessions[i]);
    }
    free(e);
}

// Entries are found through hash buckets and aged out in insertion order.
#define BUCKETS 4096
typedef struct bucket_item {
    struct bucket_item *next;
    entry *e;
} bucket_item;
static bucket_item *g_buckets[BUCKETS];

void gw_sesscache_clear(void) {
    pthread_mutex_lock(&g_lock);
    while (g_head != NULL) {
        entry *e = g_head;
        g_head = e->next;
        entry_free(e);
    }
    for (size_t i = 0; i < BUCKETS; i++) {
        while (g_buckets[i] != NULL) {
            bucket_item *it = g_buckets[i];
            g_buckets[i] = it->next;
            free(it);
        }
    }
    g_tail = NULL;
    g_len = 0;
    pthread_mutex_unlock(&g_lock);
}

static size_t hash_key(const char *k) {
    uint64_t h = 1469598103934665603ull;
    for (; *k; k++) {
        h = (h ^ (uint8_t)*k) * 1099511628211ull;
    }
    return (size_t)(h % BUCKETS);
}

static entry *find(const char *key) {
    for (bucket_item *it = g_buckets[hash_key(key)]; it; it = it->next) {
        if (strcmp(it->e->key, key) == 0) {
            return it->e;
        }
    }
    return NULL;
}

static void unbucket(entry *e) {
    bucket_item **pp = &g_buckets[hash_key(e->key)];
    while (*pp && (*pp)->e != e) {
        pp = &(*pp)->next;
    }
    if (*pp) {
        bucket_item *it = *pp;
        *pp = it->next;
        free(it);
    }
}

static int expired(const SSL_SESSION *s, uint64_t now) {
    return (uint64_t)SSL_SESSION_get_time(s) + SSL_SESSION_get_timeout(s) <= now;
}

SSL_SESSION *gw_sesscache_take(const char *key) {
    uint64_t now = (uint64_t)time(NULL);
    SSL_SESSION *out = NULL;
    pthread_mutex_lock(&g_lock);
    entry *e = find(key);
    while (e != NULL && e->n > 0 && out == NULL) {
        SSL_SESSION *s = e->sessions[e->n - 1];  // newest
        if (expired(s, now)) {
            SSL_SESSION_free(s);
            e->n--;
            continue;
        }
        if (SSL_SESSION_should_be_single_use(s)) {
            e->n--;
            out = s;
        } else {
            SSL_SESSION_up_ref(s);
            out = s;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return out;
}

void gw_sesscache_put(const char *key, SSL_SESSION *session) {
    pthread_mutex_lock(&g_lock);
    entry *e = find(key);
    if (e == NULL) {
        size_t len = strlen(key);
        e = calloc(1, sizeof(*e) + len + 1);
        bucket_item *it = malloc(sizeof(*it));
        if (e == NULL || it == NULL) {
            free(e);
            free(it);
            pthread_mutex_unlock(&g_lock);
            SSL_SESSION_free(session);
            return;
        }
        memcpy(e->key, key, len + 1);
        size_t b = hash_key(key);
        it->e = e;
        it->next = g_buckets[b];
        g_buckets[b] = it;
        if (g_tail) {
            g_tail->next = e;
        } else {
            g_head = e;
        }
        g_tail = e;
        g_len++;
        while (g_len > g_max && g_head != NULL && g_head != e) {
            entry *old = g_head;
            g_head = old->next;
            unbucket(old);
            entry_free(old);
            g_len--;
        }
    }
    if (!SSL_SESSION_should_be_single_use(session)) {
        // A reusable (TLS 1.2) session replaces the ones before it.
        for (size_t i = 0; i < e->n; i++) {
            SSL_SESSION_free(e->sessions[i]);
        }
        e->n = 0;
    }
    if (e->n == SESSIONS_PER_KEY) {
        SSL_SESSION_free(e->sessions[0]);
        memmove(e->sessions, e->sessions + 1, (SESSIONS_PER_KEY - 1) * sizeof(e->sessions[0]));
        e->n--;
    }
    e->sessions[e->n++] = session;
    pthread_mutex_unlock(&g_lock);
}
