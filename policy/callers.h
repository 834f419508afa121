// callers: who may use a rule (`caller = "user:NAME" | "uid:N" | "group:NAME" | "gid:N"`,
// one or a list). Names and group memberships are resolved when the config is loaded
// (and on every reload) into one sorted set of uids per rule, so matching on the data
// path is a binary search that never asks NSS (which may be LDAP or sssd, and block).
#ifndef MTLSGW_CALLERS_H
#define MTLSGW_CALLERS_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/base/peer.h"

typedef struct pol_callers {
    uint32_t *uids;  // sorted, no duplicates
    size_t num_uids, cap;
    char *text;  // as written, e.g. "user:orders, group:ops"
} pol_callers;

// The user database as one load sees it: passwd enumerated once (for primary groups).
typedef struct pol_userdb pol_userdb;
pol_userdb *pol_userdb_new(void);
void pol_userdb_free(pol_userdb *db);

// pol_callers_add adds the callers named by |spec| to |c|. Returns 1, or 0 with what was
// expected in |err|; 2 when it is valid but matches nobody (a group without members),
// with that warning in |err|.
int pol_callers_add(pol_callers *c, pol_userdb *db, const char *spec, char *err, size_t err_len);
// pol_callers_finish sorts the set (after the last pol_callers_add).
void pol_callers_finish(pol_callers *c);
void pol_callers_free(pol_callers *c);

// pol_callers_match says whether |uid| is one of |c|. A NULL |c| (no `caller` on the
// rule) matches everyone, GW_CALLER_NONE included; a set never matches GW_CALLER_NONE.
int pol_callers_match(const pol_callers *c, uint32_t uid);

// pol_caller_parse reads "NAME" (a user) or a number (a uid), as `explain --caller` and
// a UNIX listener's `owner` take them. Returns 1 with |*uid|, 0 if no such user.
int pol_caller_parse(const char *s, uint32_t *uid);
// pol_group_parse reads "NAME" (a group) or a number (a gid), as a UNIX listener's `group`.
int pol_group_parse(const char *s, uint32_t *gid);

#endif
