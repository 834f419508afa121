// hash: the one non-cryptographic hash (64-bit FNV-1a) for hash tables and change
// signatures. Never for anything an attacker must not be able to collide on purpose.
#ifndef MTLSGW_HASH_H
#define MTLSGW_HASH_H

#include <stddef.h>
#include <stdint.h>

#define GW_HASH_INIT 1469598103934665603ull

// gw_hash_bytes folds |n| bytes at |p| into |h| (start with GW_HASH_INIT).
static inline uint64_t gw_hash_bytes(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 1099511628211ull;
    }
    return h;
}

// gw_hash_string folds the NUL-terminated |s| into |h|.
static inline uint64_t gw_hash_string(uint64_t h, const char *s) {
    for (; *s; s++) {
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    }
    return h;
}

#endif
