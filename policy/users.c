#include "policy/users.h"

#include <openssl/mem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
            int d = c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : -1;
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

pol_users *pol_users_load(const char *path, void (*problem)(void *arg, const char *msg), void *arg) {
    FILE *f = fopen(path, "r");
    char msg[600];
    if (f == NULL) {
        snprintf(msg, sizeof(msg), "%s:0: cannot read the users file: %m", path);
        problem(arg, msg);
        return NULL;
    }
    pol_users *u = calloc(1, sizeof(*u));
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
        char *f1 = strchr(p, ':'), *f2 = f1 ? strchr(f1 + 1, ':') : NULL, *f3 = f2 ? strchr(f2 + 1, ':') : NULL;
        pol_user user = {0};
        size_t hash_len = 0;
        if (f1 == NULL || f2 == NULL || f3 == NULL || !valid_name(p, (size_t)(f1 - p)) ||
            (size_t)(f2 - f1 - 1) != 6 || strncmp(f1 + 1, "sha256", 6) != 0 ||
            !unhex(f2 + 1, (size_t)(f3 - f2 - 1), user.salt, sizeof(user.salt), &user.salt_len) ||
            !unhex(f3 + 1, strlen(f3 + 1), user.hash, sizeof(user.hash), &hash_len) || hash_len != 32) {
            snprintf(msg, sizeof(msg), "%s:%d: expected NAME:sha256:SALT:HASH (make the line with: mtlsgw passwd NAME)",
                     path, lineno);
            problem(arg, msg);
            bad = 1;
            continue;
        }
        user.name_len = (size_t)(f1 - p);
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
        user.name = strndup(p, user.name_len);
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

const char *pol_users_check(const pol_users *u, const char *name, size_t name_len, const char *pass, size_t pass_len) {
    // Every user is compared; the password is hashed with the matching user's salt, or
    // the last user's when none matches, so the time says nothing about either.
    if (u == NULL || u->num_users == 0) {
        return NULL;
    }
    const pol_user *match = &u->users[u->num_users - 1];
    unsigned found = 0;
    for (size_t i = 0; i < u->num_users; i++) {
        const pol_user *c = &u->users[i];
        unsigned same = c->name_len == name_len && name_len <= 255;
        uint8_t a[256] = {0}, b[256] = {0};
        memcpy(a, c->name, c->name_len);
        memcpy(b, name, name_len <= 255 ? name_len : 255);
        same &= CRYPTO_memcmp(a, b, sizeof(a)) == 0;
        if (same) {
            match = c;
        }
        found |= same;
    }
    uint8_t d[32];
    digest(match->salt, match->salt_len, pass, pass_len, d);
    int ok = CRYPTO_memcmp(d, match->hash, sizeof(d)) == 0;
    OPENSSL_cleanse(d, sizeof(d));
    return (found & (unsigned)ok) ? match->name : NULL;
}

int pol_users_make_line(const char *name, const char *pass, size_t pass_len, char *out, size_t cap) {
    if (!valid_name(name, strlen(name))) {
        return 0;
    }
    uint8_t salt[16], d[32];
    RAND_bytes(salt, sizeof(salt));
    digest(salt, sizeof(salt), pass, pass_len, d);
    size_t n = (size_t)snprintf(out, cap, "%s:sha256:", name);
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
