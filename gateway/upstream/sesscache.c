#include "gateway/upstream/sesscache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/base/hash.h"

#define SESSIONS_PER_KEY 64  // TLS 1.3 tickets are used once: enough for a burst of new tunnels
#define BUCKETS 4096

typedef struct entry {
    struct entry *lru_prev, *lru_next;  // least recently used first
    struct entry *bucket_next;
    uint64_t generation;  // of the identity the sessions belong to
    int accepted;         // the server accepted this identity here once: no need to wait for it again
    SSL_SESSION *sessions[SESSIONS_PER_KEY];
    size_t n;
    char key[];
} entry;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static entry *g_lru_head, *g_lru_tail;
static entry *g_buckets[BUCKETS];
static size_t g_keys, g_sessions, g_max_sessions = 4096;

static size_t hash_key(const char *k) {
    return (size_t)(gw_hash_string(GW_HASH_INIT, k) % BUCKETS);
}

static void lru_unlink(entry *e) {
    if (e->lru_prev) {
        e->lru_prev->lru_next = e->lru_next;
    } else {
        g_lru_head = e->lru_next;
    }
    if (e->lru_next) {
        e->lru_next->lru_prev = e->lru_prev;
    } else {
        g_lru_tail = e->lru_prev;
    }
    e->lru_prev = e->lru_next = NULL;
}

static void lru_append(entry *e) {
    e->lru_prev = g_lru_tail;
    e->lru_next = NULL;
    if (g_lru_tail) {
        g_lru_tail->lru_next = e;
    } else {
        g_lru_head = e;
    }
    g_lru_tail = e;
}

static entry *find(const char *key) {
    for (entry *e = g_buckets[hash_key(key)]; e; e = e->bucket_next) {
        if (strcmp(e->key, key) == 0) {
            return e;
        }
    }
    return NULL;
}

// drop removes |e| from the cache and frees it with its sessions. Called with the lock.
static void drop(entry *e) {
    entry **pp = &g_buckets[hash_key(e->key)];
    while (*pp && *pp != e) {
        pp = &(*pp)->bucket_next;
    }
    if (*pp) {
        *pp = e->bucket_next;
    }
    lru_unlink(e);
    for (size_t i = 0; i < e->n; i++) {
        SSL_SESSION_free(e->sessions[i]);
    }
    g_sessions -= e->n;
    g_keys--;
    free(e);
}

void gw_sesscache_set_limit(size_t max_sessions) {
    pthread_mutex_lock(&g_lock);
    g_max_sessions = max_sessions > 0 ? max_sessions : 1;
    while (g_sessions > g_max_sessions && g_lru_head != NULL) {
        drop(g_lru_head);
    }
    pthread_mutex_unlock(&g_lock);
}

void gw_sesscache_clear(void) {
    pthread_mutex_lock(&g_lock);
    while (g_lru_head != NULL) {
        drop(g_lru_head);
    }
    pthread_mutex_unlock(&g_lock);
}

void gw_sesscache_purge(const uint64_t *generations, size_t n) {
    pthread_mutex_lock(&g_lock);
    for (entry *e = g_lru_head, *next; e != NULL; e = next) {
        next = e->lru_next;
        int live = 0;
        for (size_t i = 0; i < n && !live; i++) {
            live = generations[i] == e->generation;
        }
        if (!live) {
            drop(e);
        }
    }
    pthread_mutex_unlock(&g_lock);
}

void gw_sesscache_stats(size_t *out_keys, size_t *out_sessions) {
    pthread_mutex_lock(&g_lock);
    *out_keys = g_keys;
    *out_sessions = g_sessions;
    pthread_mutex_unlock(&g_lock);
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
        if (expired(s, now) || SSL_SESSION_should_be_single_use(s)) {
            e->n--;
            g_sessions--;
            if (expired(s, now)) {
                SSL_SESSION_free(s);
                continue;
            }
            out = s;  // the cache's reference goes to the caller
        } else {
            SSL_SESSION_up_ref(s);
            out = s;
        }
    }
    if (e != NULL && e->n == 0 && !e->accepted) {
        drop(e);  // its tickets are used up: the key goes until new sessions come
    } else if (e != NULL) {
        lru_unlink(e);
        lru_append(e);
    }
    pthread_mutex_unlock(&g_lock);
    return out;
}

// find_or_add returns the entry of |key|, made if there is none, as the most recently
// used; NULL when out of memory. Called with the lock.
static entry *find_or_add(const char *key, uint64_t generation) {
    entry *e = find(key);
    if (e != NULL) {
        lru_unlink(e);
        lru_append(e);
        return e;
    }
    size_t len = strlen(key);
    e = calloc(1, sizeof(*e) + len + 1);
    if (e == NULL) {
        return NULL;
    }
    memcpy(e->key, key, len + 1);
    e->generation = generation;
    size_t b = hash_key(key);
    e->bucket_next = g_buckets[b];
    g_buckets[b] = e;
    lru_append(e);
    g_keys++;
    // Keys with no session left (only "accepted") count too: at most as many keys as sessions.
    while (g_keys > g_max_sessions && g_lru_head != NULL && g_lru_head != e) {
        drop(g_lru_head);
    }
    return e;
}

void gw_sesscache_put(const char *key, uint64_t generation, SSL_SESSION *session) {
    pthread_mutex_lock(&g_lock);
    entry *e = find_or_add(key, generation);
    if (e == NULL) {
        pthread_mutex_unlock(&g_lock);
        SSL_SESSION_free(session);
        return;
    }
    if (!SSL_SESSION_should_be_single_use(session)) {
        // A reusable (TLS 1.2) session replaces the ones before it.
        for (size_t i = 0; i < e->n; i++) {
            SSL_SESSION_free(e->sessions[i]);
        }
        g_sessions -= e->n;
        e->n = 0;
    }
    if (e->n == SESSIONS_PER_KEY) {
        SSL_SESSION_free(e->sessions[0]);
        memmove(e->sessions, e->sessions + 1, (SESSIONS_PER_KEY - 1) * sizeof(e->sessions[0]));
        e->n--;
        g_sessions--;
    }
    e->sessions[e->n++] = session;
    g_sessions++;
    // Over the cap, the least recently used keys go first; the one just used stays.
    while (g_sessions > g_max_sessions && g_lru_head != NULL && g_lru_head != e) {
        drop(g_lru_head);
    }
    while (g_sessions > g_max_sessions && e->n > 1) {
        SSL_SESSION_free(e->sessions[0]);
        memmove(e->sessions, e->sessions + 1, (e->n - 1) * sizeof(e->sessions[0]));
        e->n--;
        g_sessions--;
    }
    pthread_mutex_unlock(&g_lock);
}

void gw_sesscache_set_accepted(const char *key, uint64_t generation, int accepted) {
    pthread_mutex_lock(&g_lock);
    entry *e = accepted ? find_or_add(key, generation) : find(key);
    if (e != NULL) {
        e->accepted = accepted;
        if (!accepted && e->n == 0) {
            drop(e);
        }
    }
    pthread_mutex_unlock(&g_lock);
}

int gw_sesscache_accepted(const char *key) {
    pthread_mutex_lock(&g_lock);
    entry *e = find(key);
    int accepted = e != NULL && e->accepted;
    pthread_mutex_unlock(&g_lock);
    return accepted;
}
