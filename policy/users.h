// users: proxy users from auth.users_file. Each line is "NAME:scrypt:N:r:p:SALT:HASH"
// (hex; HASH = scrypt(password, SALT, N, r, p), 32 bytes), made with `mtlsgw passwd NAME`;
// the older "NAME:sha256:SALT:HASH" (HASH = SHA-256(SALT || password)) still loads, with
// a warning. '#' starts a comment. Passwords are compared in constant time and never kept
// in memory or logged. A scrypt check costs tens of milliseconds by design: the gateway
// runs it off its event loop (gateway/passcheck.c).
#ifndef MTLSGW_USERS_H
#define MTLSGW_USERS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { POL_HASH_SHA256 = 0, POL_HASH_SCRYPT } pol_hash_kind;

// scrypt parameters `mtlsgw passwd` writes: N = 2^15, r = 8, p = 1 (32 MiB, about 70 ms on
// one core of the 2-core test machine).
#define POL_SCRYPT_N 32768u
#define POL_SCRYPT_R 8u
#define POL_SCRYPT_P 1u
#define POL_SCRYPT_MAX_MEM (256u << 20)  // lines asking for more are refused at load

typedef struct {
    char *name;
    size_t name_len;
    pol_hash_kind kind;
    uint64_t n, r, p;  // scrypt only
    uint8_t salt[32];
    size_t salt_len;
    uint8_t hash[32];
} pol_user;

typedef struct pol_users {
    pol_user *users;
    size_t num_users;
    size_t num_legacy;  // sha256 lines (check warns about each)
} pol_users;

// pol_users_load reads |path|. Returns a table, or NULL with one problem per bad line
// written through |problem| ("file:line: ..." text, called once per problem).
pol_users *pol_users_load(const char *path, void (*problem)(void *arg, const char *msg), void *arg);
void pol_users_free(pol_users *u);

// pol_users_find returns the entry for |name| in time that does not depend on whether it
// exists. *|out_found| says whether it does; when it does not, the entry returned is a
// stand-in (another user's parameters) to verify against, so that an unknown name costs
// what a known one does. NULL only for an empty table.
const pol_user *pol_users_find(const pol_users *u, const char *name, size_t name_len, int *out_found);

// pol_user_verify says whether |pass| is |user|'s password (constant-time comparison).
// For a scrypt entry it takes tens of milliseconds: never call it on an event loop.
int pol_user_verify(const pol_user *user, const char *pass, size_t pass_len);

// pol_users_check is find + verify: the user's name (owned by |u|) or NULL. Blocking.
const char *pol_users_check(const pol_users *u, const char *name, size_t name_len, const char *pass, size_t pass_len);

// pol_users_make_line writes "NAME:scrypt:N:r:p:SALT:HASH\n" for |pass| with a fresh
// random salt and the POL_SCRYPT_* parameters into |out|. Returns 1, or 0 if |name| is not
// a valid user name.
int pol_users_make_line(const char *name, const char *pass, size_t pass_len, char *out, size_t cap);

#endif
