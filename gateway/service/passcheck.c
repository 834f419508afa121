#include "gateway/service/passcheck.h"

#include <errno.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define MAX_QUEUED 64  // checks waiting for a thread, in the whole process
#define MAX_THREADS 4
#define CACHE_SLOTS 256  // verified credentials remembered per worker
#define CACHE_TTL_MS 60000
#define PASS_MAX 640

struct gw_passcheck_job {
    gw_passcheck_job *next;
    gw_passcheck *pc;
    atomic_int cancelled;
    pol_user user;  // a copy of the entry (its name pointer is not used off the loop)
    int found, ok;
    char pass[PASS_MAX];
    size_t pass_len;
    uint8_t cache_key[SHA256_DIGEST_LENGTH];
    gw_passcheck_cb cb;
    void *arg;
};

typedef struct {
    uint8_t key[SHA256_DIGEST_LENGTH];
    uint64_t expires_ms;
} cache_slot;

struct gw_passcheck {
    gw_loop *loop;
    int event_fd;
    gw_watcher w;
    pthread_mutex_t lock;    // guards done, refs, closing
    gw_passcheck_job *done;  // answered jobs, for the loop
    int refs;                // the worker's, plus one per job out
    int closing;
    uint8_t hmac_key[32];
    cache_slot cache[CACHE_SLOTS];
};

// The threads and their queue, shared by every worker; started on first use.
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    gw_passcheck_job *head, *tail;
    size_t queued;
    int started;
} g_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0};

static void passcheck_release(gw_passcheck *pc) {
    // Called with pc->lock held; frees |pc| when nothing refers to it any more.
    if (--pc->refs > 0) {
        pthread_mutex_unlock(&pc->lock);
        return;
    }
    pthread_mutex_unlock(&pc->lock);
    pthread_mutex_destroy(&pc->lock);
    close(pc->event_fd);
    OPENSSL_cleanse(pc, sizeof(*pc));
    free(pc);
}

static void job_free(gw_passcheck_job *j) {
    OPENSSL_cleanse(j, sizeof(*j));
    free(j);
}

static void *pool_main(void *arg) {
    for (;;) {
        pthread_mutex_lock(&g_pool.lock);
        while (g_pool.head == NULL) {
            pthread_cond_wait(&g_pool.cond, &g_pool.lock);
        }
        gw_passcheck_job *j = g_pool.head;
        g_pool.head = j->next;
        if (g_pool.head == NULL) {
            g_pool.tail = NULL;
        }
        g_pool.queued--;
        pthread_mutex_unlock(&g_pool.lock);
        j->next = NULL;
        if (!atomic_load(&j->cancelled)) {
            int right = pol_user_verify(&j->user, j->pass, j->pass_len);
            j->ok = j->found && right;
        }
        OPENSSL_cleanse(j->pass, sizeof(j->pass));
        gw_passcheck *pc = j->pc;
        pthread_mutex_lock(&pc->lock);
        if (pc->closing) {
            job_free(j);
        } else {
            j->next = pc->done;
            pc->done = j;
            uint64_t one = 1;
            if (write(pc->event_fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
                // The loop still finds the job on its next wake-up.
            }
        }
        passcheck_release(pc);  // unlocks
    }
    return NULL;
}

static int pool_start(void) {
    // Called with g_pool.lock held.
    if (g_pool.started) {
        return 1;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int n = ncpu > 1 ? (int)(ncpu / 2) : 1;
    n = n > MAX_THREADS ? MAX_THREADS : n;
    for (int i = 0; i < n; i++) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, pool_main, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            return g_pool.started;
        }
        pthread_setname_np(t, "mtlsgw-kdf");
        g_pool.started++;
    }
    return 1;
}

static size_t slot_of(const uint8_t *key) {
    return ((size_t)key[0] | (size_t)key[1] << 8) % CACHE_SLOTS;
}

static int cache_hit(gw_passcheck *pc, const uint8_t *key) {
    const cache_slot *s = &pc->cache[slot_of(key)];
    return s->expires_ms > gw_loop_now(pc->loop) && CRYPTO_memcmp(s->key, key, SHA256_DIGEST_LENGTH) == 0;
}

static void cache_put(gw_passcheck *pc, const uint8_t *key) {
    cache_slot *s = &pc->cache[slot_of(key)];
    memcpy(s->key, key, SHA256_DIGEST_LENGTH);
    s->expires_ms = gw_loop_now(pc->loop) + CACHE_TTL_MS;
}

static void on_done(gw_loop *loop, gw_watcher *w, uint32_t events) {
    gw_passcheck *pc = w->data;
    uint64_t v;
    while (read(pc->event_fd, &v, sizeof(v)) > 0) {
    }
    pthread_mutex_lock(&pc->lock);
    gw_passcheck_job *list = pc->done;
    pc->done = NULL;
    pthread_mutex_unlock(&pc->lock);
    while (list != NULL) {
        gw_passcheck_job *j = list;
        list = j->next;
        if (!atomic_load(&j->cancelled)) {
            if (j->ok) {
                cache_put(pc, j->cache_key);
            }
            j->cb(j->arg, j->ok);
        }
        job_free(j);
    }
}

gw_passcheck *gw_passcheck_new(gw_loop *loop) {
    gw_passcheck *pc = calloc(1, sizeof(*pc));
    if (pc == NULL) {
        return NULL;
    }
    pc->loop = loop;
    pc->refs = 1;
    pc->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (pc->event_fd < 0) {
        free(pc);
        return NULL;
    }
    pthread_mutex_init(&pc->lock, NULL);
    RAND_bytes(pc->hmac_key, sizeof(pc->hmac_key));
    gw_watcher_init(&pc->w, pc->event_fd, on_done, pc);
    gw_watcher_set(loop, &pc->w, EPOLLIN);
    return pc;
}

void gw_passcheck_free(gw_passcheck *pc) {
    if (pc == NULL) {
        return;
    }
    gw_watcher_remove(pc->loop, &pc->w);
    pthread_mutex_lock(&pc->lock);
    pc->closing = 1;
    gw_passcheck_job *list = pc->done;
    pc->done = NULL;
    while (list != NULL) {
        gw_passcheck_job *j = list;
        list = j->next;
        job_free(j);
    }
    passcheck_release(pc);  // unlocks; jobs still out hold their references
}

void gw_passcheck_cancel(gw_passcheck_job *job) {
    if (job != NULL) {
        atomic_store(&job->cancelled, 1);
    }
}

gw_pass_status gw_passcheck_start(gw_passcheck *pc, const pol_users *users, const char *name, size_t name_len,
                                  const char *pass, size_t pass_len, gw_passcheck_cb cb, void *arg,
                                  const char **out_user, gw_passcheck_job **out_job) {
    *out_user = NULL;
    *out_job = NULL;
    int found = 0;
    const pol_user *u = pol_users_find(users, name, name_len, &found);
    if (u == NULL || pass_len > PASS_MAX) {
        return GW_PASS_BAD;
    }
    if (u->kind == POL_HASH_SHA256) {
        // The legacy hash is fast: checked here, as before.
        int ok = pol_user_verify(u, pass, pass_len) && found;
        *out_user = ok ? u->name : NULL;
        return ok ? GW_PASS_OK : GW_PASS_BAD;
    }
    // The key names the credentials and the stored hash (a changed password misses), under
    // a key that lives only in this process.
    uint8_t key[SHA256_DIGEST_LENGTH];
    unsigned key_len = 0;
    HMAC_CTX h;
    HMAC_CTX_init(&h);
    uint8_t nl[2] = {(uint8_t)(name_len >> 8), (uint8_t)name_len};
    int hashed = HMAC_Init_ex(&h, pc->hmac_key, sizeof(pc->hmac_key), EVP_sha256(), NULL) && HMAC_Update(&h, nl, 2) &&
                 HMAC_Update(&h, (const uint8_t *)name, name_len) && HMAC_Update(&h, (const uint8_t *)pass, pass_len) &&
                 HMAC_Update(&h, u->hash, sizeof(u->hash)) && HMAC_Final(&h, key, &key_len);
    HMAC_CTX_cleanup(&h);
    if (hashed && found && cache_hit(pc, key)) {
        *out_user = u->name;
        return GW_PASS_CACHE_HIT;
    }
    gw_passcheck_job *j = calloc(1, sizeof(*j));
    if (j == NULL || !hashed) {
        free(j);
        return GW_PASS_BUSY;
    }
    j->pc = pc;
    j->user = *u;
    j->user.name = NULL;
    j->found = found;
    memcpy(j->pass, pass, pass_len);
    j->pass_len = pass_len;
    memcpy(j->cache_key, key, sizeof(key));
    j->cb = cb;
    j->arg = arg;
    pthread_mutex_lock(&g_pool.lock);
    if (g_pool.queued >= MAX_QUEUED || !pool_start()) {
        pthread_mutex_unlock(&g_pool.lock);
        job_free(j);
        return GW_PASS_BUSY;
    }
    pthread_mutex_lock(&pc->lock);
    pc->refs++;
    pthread_mutex_unlock(&pc->lock);
    if (g_pool.tail) {
        g_pool.tail->next = j;
    } else {
        g_pool.head = j;
    }
    g_pool.tail = j;
    g_pool.queued++;
    pthread_cond_signal(&g_pool.cond);
    pthread_mutex_unlock(&g_pool.lock);
    *out_user = found ? u->name : NULL;
    *out_job = j;
    return GW_PASS_PENDING;
}
