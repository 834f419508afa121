#include "policy/rules.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/base/hash.h"
#include "gateway/base/xalloc.h"

typedef struct {
    uint32_t rule;
    uint16_t port_lo, port_hi;
    const pol_callers *callers;  // NULL: any caller
    uint64_t listeners;          // bit i: listener i; 0: any listener
} entry;

typedef struct {
    entry *v;
    uint32_t len, cap;
} entry_list;

typedef struct {
    uint8_t *key;  // NULL: empty slot
    size_t key_len;
    uint64_t hash;
    entry_list list;
} slot;

typedef struct {
    slot *slots;
    size_t cap, len;  // cap is a power of two
} table;

struct pol_index {
    table exact, suffix, cidr;
    entry_list any;
    // Prefix lengths in use, per family: lookups try only these.
    uint8_t v4_lens[33], v6_lens[129];
};

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    return gw_hash_bytes(GW_HASH_INIT, p, n);
}

static int list_push(entry_list *l, const pol_match *m, uint32_t rule, const pol_callers *callers, uint64_t listeners) {
    if (l->len == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 2;
        entry *v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL) {
            return 0;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->len++] = (entry){rule, m->port_lo, m->port_hi, callers, listeners};
    return 1;
}

static int serves_listener(uint64_t listeners, int listener) {
    return listeners == 0 || (listener >= 0 && listener < 64 && (listeners >> listener) & 1);
}

// list_first returns the first rule in |l| whose ports include |port|, whose callers
// include |caller| and whose listeners |listener|, or -1. Entries are in rule order, so
// the first hit is the lowest.
static long list_first(const entry_list *l, uint16_t port, uint32_t caller, int listener) {
    for (uint32_t i = 0; i < l->len; i++) {
        if (port >= l->v[i].port_lo && port <= l->v[i].port_hi && serves_listener(l->v[i].listeners, listener) &&
            pol_callers_match(l->v[i].callers, caller)) {
            return l->v[i].rule;
        }
    }
    return -1;
}

static slot *table_find(const table *t, const uint8_t *key, size_t len, uint64_t h) {
    if (t->cap == 0) {
        return NULL;
    }
    for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        slot *s = &t->slots[i];
        if (s->key == NULL) {
            return s;
        }
        if (s->hash == h && s->key_len == len && memcmp(s->key, key, len) == 0) {
            return s;
        }
    }
}

static int table_grow(table *t) {
    size_t cap = t->cap ? t->cap * 2 : 64;
    slot *slots = gw_xcalloc(cap, sizeof(*slots));
    if (slots == NULL) {
        return 0;
    }
    table nt = {slots, cap, t->len};
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i].key != NULL) {
            *table_find(&nt, t->slots[i].key, t->slots[i].key_len, t->slots[i].hash) = t->slots[i];
        }
    }
    free(t->slots);
    *t = nt;
    return 1;
}

static entry_list *table_get_or_add(table *t, const uint8_t *key, size_t len) {
    if ((t->len + 1) * 4 > t->cap * 3 && !table_grow(t)) {
        return NULL;
    }
    uint64_t h = hash_bytes(key, len);
    slot *s = table_find(t, key, len, h);
    if (s->key == NULL) {
        s->key = gw_xmalloc(len ? len : 1);
        if (s->key == NULL) {
            return NULL;
        }
        memcpy(s->key, key, len);
        s->key_len = len;
        s->hash = h;
        t->len++;
    }
    return &s->list;
}

static const entry_list *table_get(const table *t, const uint8_t *key, size_t len) {
    slot *s = table_find(t, key, len, hash_bytes(key, len));
    return s != NULL && s->key != NULL ? &s->list : NULL;
}

static void table_free(table *t) {
    for (size_t i = 0; i < t->cap; i++) {
        free(t->slots[i].key);
        free(t->slots[i].list.v);
    }
    free(t->slots);
}

pol_index *pol_index_new(void) {
    return gw_xcalloc(1, sizeof(pol_index));
}

void pol_index_free(pol_index *idx) {
    if (idx == NULL) {
        return;
    }
    table_free(&idx->exact);
    table_free(&idx->suffix);
    table_free(&idx->cidr);
    free(idx->any.v);
    free(idx);
}

// CIDR keys: family byte, prefix length, then the masked address.
static size_t cidr_key(uint8_t *key, int family, int prefix_len, const uint8_t *addr) {
    size_t n = family == AF_INET ? 4 : 16;
    key[0] = (uint8_t)family;
    key[1] = (uint8_t)prefix_len;
    memcpy(key + 2, addr, n);
    pol_prefix_mask(key + 2, n, prefix_len);
    return n + 2;
}

int pol_index_add(pol_index *idx, const pol_match *m, uint32_t rule, const pol_callers *callers, uint64_t listeners) {
    entry_list *l = NULL;
    switch (m->kind) {
        case POL_MATCH_ANY:
            l = &idx->any;
            break;
        case POL_MATCH_HOST:
            l = table_get_or_add(&idx->exact, (const uint8_t *)m->host, strlen(m->host));
            break;
        case POL_MATCH_SUFFIX:
            l = table_get_or_add(&idx->suffix, (const uint8_t *)m->host, strlen(m->host));
            break;
        case POL_MATCH_CIDR: {
            uint8_t key[18];
            size_t n = cidr_key(key, m->family, m->prefix_len, m->addr);
            l = table_get_or_add(&idx->cidr, key, n);
            if (m->family == AF_INET) {
                idx->v4_lens[m->prefix_len] = 1;
            } else {
                idx->v6_lens[m->prefix_len] = 1;
            }
            break;
        }
    }
    return l != NULL && list_push(l, m, rule, callers, listeners);
}

static long better(long best, long candidate) {
    return candidate >= 0 && (best < 0 || candidate < best) ? candidate : best;
}

long pol_index_lookup(const pol_index *idx, const pol_dest *d, uint32_t caller, int listener) {
    long best = list_first(&idx->any, d->port, caller, listener);
    if (d->family != 0) {
        int max = d->family == AF_INET ? 32 : 128;
        const uint8_t *lens = d->family == AF_INET ? idx->v4_lens : idx->v6_lens;
        for (int len = max; len >= 0; len--) {
            if (!lens[len]) {
                continue;
            }
            uint8_t key[18];
            size_t n = cidr_key(key, d->family, len, d->addr);
            const entry_list *l = table_get(&idx->cidr, key, n);
            if (l != NULL) {
                best = better(best, list_first(l, d->port, caller, listener));
            }
        }
        return best;
    }
    size_t hl = strlen(d->host);
    const entry_list *l = table_get(&idx->exact, (const uint8_t *)d->host, hl);
    if (l != NULL) {
        best = better(best, list_first(l, d->port, caller, listener));
    }
    // "*.b.c" is stored as "b.c": try every proper suffix that starts after a dot.
    for (size_t i = 0; i < hl; i++) {
        if (d->host[i] != '.') {
            continue;
        }
        const char *suf = d->host + i + 1;
        l = table_get(&idx->suffix, (const uint8_t *)suf, hl - i - 1);
        if (l != NULL) {
            best = better(best, list_first(l, d->port, caller, listener));
        }
    }
    return best;
}
