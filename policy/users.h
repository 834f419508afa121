// users: proxy users from auth.users_file. Each line is "NAME:sha256:SALT:HASH" (hex;
// HASH = SHA-256(SALT || password)), made with `mtlsgw passwd NAME`; '#' starts a comment.
// Passwords are checked in constant time and never kept in memory or logged.
#ifndef MTLSGW_USERS_H
#define MTLSGW_USERS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *name;
    size_t name_len;
    uint8_t salt[32];
    size_t salt_len;
    uint8_t hash[32];
} pol_user;

typedef struct pol_users {
    pol_user *users;
    size_t num_users;
} pol_users;

// pol_users_load reads |path|. Returns a table, or NULL with one problem per bad line
// written through |problem| ("file:line: ..." text, called once per problem).
pol_users *pol_users_load(const char *path, void (*problem)(void *arg, const char *msg), void *arg);
void pol_users_free(pol_users *u);

// pol_users_check says whether |name| / |pass| is a valid pair, in time that depends on
// neither whether the name exists nor where the password differs. Returns the user's name
// (owned by |u|, NUL-terminated), or NULL.
const char *pol_users_check(const pol_users *u, const char *name, size_t name_len, const char *pass, size_t pass_len);

// pol_users_make_line writes "NAME:sha256:SALT:HASH\n" for |pass| with a fresh random
// salt into |out|. Returns 1, or 0 if |name| is not a valid user name.
int pol_users_make_line(const char *name, const char *pass, size_t pass_len, char *out, size_t cap);

#endif
