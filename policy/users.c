#include "policy/users.h"

#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/base/xalloc.h"

static int valid_name(const char *s, size_t len) {
    if (len == 0 || len > 255) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == ':' || c == 0x7f) {
            return 0;
        }
    }
    return 1;
}

static int unhex(const char *s, size_t len, uint8_t *out, size_t cap, size_t *out_len) {
    if (len % 2 != 0 || len / 2 > cap || len == 0) {
        return 0;
    }
    for (size_t i = 0; i < len; i += 2) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char c = s[i + (size_t)k];
            int d = c >= '0' && c <= '9'                     ? c - '0'
                    : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10
                                                             : -1;
            if (d < 0) {
                return 0;
            }
            v = v * 16 + d;
        }
        out[i / 2] = (uint8_t)v;
    }
    *out_len = len / 2;
    return 1;
}

static void digest(const uint8_t *salt, size_t salt_len, const char *pass, size_t pass_len, uint8_t out[32]) {
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, salt, salt_len);
    SHA256_Update(&c, pass, pass_len);
    SHA256_Final(out, &c);
}

// parse_u64 reads a decimal field of |len| bytes.
static int parse_u64(const char *s, size_t len, uint64_t *out) {
    if (len == 0 || len > 10) {
        return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 1;
}

// parse_line reads "NAME:sha256:SALT:HASH" or "NAME:scrypt:N:r:p:SALT:HASH" at |p| into
// |user| (name not copied). Returns 0 if the line is not one of them.
static int parse_line(const char *p, pol_user *user) {
    const char *f[7];
    size_t nf = 0;
    f[nf++] = p;
    for (const char *c = p; *c && nf < 7; c++) {
        if (*c == ':') {
            f[nf++] = c + 1;
        }
    }
    size_t len[7];
    for (size_t i = 0; i < nf; i++) {
        len[i] = (i + 1 < nf ? (size_t)(f[i + 1] - f[i] - 1) : strlen(f[i]));
    }
    size_t hash_len = 0;
    if (nf == 4 && len[1] == 6 && strncmp(f[1], "sha256", 6) == 0 && strchr(f[3], ':') == NULL) {
        user->kind = POL_HASH_SHA256;
        return valid_name(p, len[0]) && unhex(f[2], len[2], user->salt, sizeof(user->salt), &user->salt_len) &&
               unhex(f[3], len[3], user->hash, sizeof(user->hash), &hash_len) && hash_len == 32;
    }
    if (nf == 7 && len[1] == 6 && strncmp(f[1], "scrypt", 6) == 0 && strchr(f[6], ':') == NULL) {
        user->kind = POL_HASH_SCRYPT;
        if (!valid_name(p, len[0]) || !parse_u64(f[2], len[2], &user->n) || !parse_u64(f[3], len[3], &user->r) ||
            !parse_u64(f[4], len[4], &user->p) ||
            !unhex(f[5], len[5], user->salt, sizeof(user->salt), &user->salt_len) ||
            !unhex(f[6], len[6], user->hash, sizeof(user->hash), &hash_len) || hash_len != 32) {
            return 0;
        }
        // A power of two from 2^10, memory (128 * N * r * p bytes) within the cap: a
        // hostile or mistyped line cannot make every check allocate gigabytes.
        return user->n >= 1024 && (user->n & (user->n - 1)) == 0 && user->r >= 1 && user->r <= 32 && user->p >= 1 &&
               user->p <= 16 && 128 * user->n * user->r * user->p <= POL_SCRYPT_MAX_MEM;
    }
    return 0;
}

pol_users *pol_users_load(const char *path, void (*problem)(void *arg, const char *msg), void *arg) {
    FILE *f = fopen(path, "r");
    char msg[600];
    if (f == NULL) {
        snprintf(msg, sizeof(msg), "%s:0: cannot read the users file: %m", path);
        problem(arg, msg);
        return NULL;
    }
    pol_users *u = gw_xcalloc(1, sizeof(*u));
    size_t cap = 0;
    char line[2048];
    int lineno = 0, bad = 0;
    while (u != NULL && fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        size_t len = strcspn(line, "\r\n");
        line[len] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (*p == '\0' || *p == '#') {
            continue;
        }
        pol_user user = {0};
        if (!parse_line(p, &user)) {
            snprintf(msg, sizeof(msg),
                     "%s:%d: expected NAME:scrypt:N:r:p:SALT:HASH, N a power of two from 1024, at most %u MiB "
                     "(make the line with: mtlsgw passwd NAME)",
                     path, lineno, POL_SCRYPT_MAX_MEM >> 20);
            problem(arg, msg);
            bad = 1;
            continue;
        }
        user.name_len = strcspn(p, ":");
        if (user.kind == POL_HASH_SHA256) {
            snprintf(msg, sizeof(msg),
                     "%s:%d: warning: user \"%.*s\" has an unsalted-speed sha256 hash that a stolen file gives up "
                     "quickly; make a new line with: mtlsgw passwd %.*s",
                     path, lineno, (int)user.name_len, p, (int)user.name_len, p);
            problem(arg, msg);
            u->num_legacy++;
        }
        for (size_t i = 0; i < u->num_users; i++) {
            if (u->users[i].name_len == user.name_len && memcmp(u->users[i].name, p, user.name_len) == 0) {
                snprintf(msg, sizeof(msg), "%s:%d: user \"%.*s\" is listed twice", path, lineno, (int)user.name_len, p);
                problem(arg, msg);
                bad = 1;
            }
        }
        if (u->num_users == cap) {
            cap = cap ? cap * 2 : 8;
            pol_user *n = realloc(u->users, cap * sizeof(*n));
            if (n == NULL) {
                bad = 1;
                break;
            }
            u->users = n;
        }
        user.name = gw_xstrndup(p, user.name_len);
        u->users[u->num_users++] = user;
    }
    OPENSSL_cleanse(line, sizeof(line));
    fclose(f);
    if (bad || u == NULL) {
        pol_users_free(u);
        return NULL;
    }
    return u;
}

void pol_users_free(pol_users *u) {
    if (u == NULL) {
        return;
    }
    for (size_t i = 0; i < u->num_users; i++) {
        free(u->users[i].name);
    }
    OPENSSL_cleanse(u->users, u->num_users * sizeof(*u->users));
    free(u->users);
    free(u);
}

const pol_user *pol_users_find(const pol_users *u, const char *name, size_t name_len, int *out_found) {
    // Every user is compared; with no match, the last user stands in, so the time says
    // nothing about whether the name exists.
    *out_found = 0;
    if (u == NULL || u->num_users == 0) {
        return NULL;
    }
    const pol_user *match = &u->users[u->num_users - 1];
    unsigned found = 0;
    uint8_t b[256] = {0};
    memcpy(b, name, name_len <= 255 ? name_len : 255);
    for (size_t i = 0; i < u->num_users; i++) {
        const pol_user *c = &u->users[i];
        unsigned same = c->name_len == name_len && name_len <= 255;
        uint8_t a[256] = {0};
        memcpy(a, c->name, c->name_len);
        same &= CRYPTO_memcmp(a, b, sizeof(a)) == 0;
        if (same) {
            match = c;
        }
        found |= same;
    }
    *out_found = (int)found;
    return match;
}

int pol_user_verify(const pol_user *user, const char *pass, size_t pass_len) {
    uint8_t d[32];
    int ok;
    if (user->kind == POL_HASH_SCRYPT) {
        ok = EVP_PBE_scrypt(pass, pass_len, user->salt, user->salt_len, user->n, user->r, user->p,
                            POL_SCRYPT_MAX_MEM + (1u << 20), d, sizeof(d)) == 1;
    } else {
        digest(user->salt, user->salt_len, pass, pass_len, d);
        ok = 1;
    }
    ok = ok && CRYPTO_memcmp(d, user->hash, sizeof(d)) == 0;
    OPENSSL_cleanse(d, sizeof(d));
    return ok;
}

const char *pol_users_check(const pol_users *u, const char *name, size_t name_len, const char *pass, size_t pass_len) {
    int found = 0;
    const pol_user *match = pol_users_find(u, name, name_len, &found);
    if (match == NULL) {
        return NULL;
    }
    int ok = pol_user_verify(match, pass, pass_len);
    return found && ok ? match->name : NULL;
}

int pol_users_make_line(const char *name, const char *pass, size_t pass_len, char *out, size_t cap) {
    if (!valid_name(name, strlen(name))) {
        return 0;
    }
    uint8_t salt[16], d[32];
    RAND_bytes(salt, sizeof(salt));
    if (!EVP_PBE_scrypt(pass, pass_len, salt, sizeof(salt), POL_SCRYPT_N, POL_SCRYPT_R, POL_SCRYPT_P,
                        POL_SCRYPT_MAX_MEM, d, sizeof(d))) {
        return 0;
    }
    size_t n = (size_t)snprintf(out, cap, "%s:scrypt:%u:%u:%u:", name, POL_SCRYPT_N, POL_SCRYPT_R, POL_SCRYPT_P);
    for (size_t i = 0; i < sizeof(salt) && n + 3 < cap; i++) {
        n += (size_t)snprintf(out + n, cap - n, "%02x", salt[i]);
    }
    n += (size_t)snprintf(out + n, cap - n, ":");
    for (size_t i = 0; i < sizeof(d) && n + 3 < cap; i++) {
        n += (size_t)snprintf(out + n, cap - n, "%02x", d[i]);
    }
    snprintf(out + n, cap - n, "\n");
    OPENSSL_cleanse(d, sizeof(d));
    return 1;
}
