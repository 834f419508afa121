#include "policy/callers.h"

#include "policy/loader.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/base/xalloc.h"

typedef struct {
    uint32_t uid, gid;
} account;

struct pol_userdb {
    int loaded;
    account *accounts;  // every passwd entry: (uid, primary gid)
    size_t len;
};

pol_userdb *pol_userdb_new(void) {
    return gw_xcalloc(1, sizeof(pol_userdb));
}

void pol_userdb_free(pol_userdb *db) {
    if (db != NULL) {
        free(db->accounts);
        free(db);
    }
}

// load_accounts enumerates passwd once per load, the first time a group is asked for.
static void load_accounts(pol_userdb *db) {
    if (db->loaded) {
        return;
    }
    db->loaded = 1;
    size_t cap = 0;
    char buf[4096];
    struct passwd pw, *res;
    setpwent();
    while (getpwent_r(&pw, buf, sizeof(buf), &res) == 0 && res != NULL) {
        if (db->len == cap) {
            cap = cap ? cap * 2 : 64;
            account *a = realloc(db->accounts, cap * sizeof(*a));
            if (a == NULL) {
                break;
            }
            db->accounts = a;
        }
        db->accounts[db->len++] = (account){pw.pw_uid, pw.pw_gid};
    }
    endpwent();
}

static int push(pol_callers *c, uint32_t uid) {
    if (c->num_uids == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 4;
        uint32_t *v = realloc(c->uids, cap * sizeof(*v));
        if (v == NULL) {
            return 0;
        }
        c->uids = v;
        c->cap = cap;
    }
    c->uids[c->num_uids++] = uid;
    return 1;
}

// parse_id reads a decimal uid/gid (not -1, which means "none" to the kernel).
static int parse_id(const char *s, uint32_t *out) {
    if (*s < '0' || *s > '9') {
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v >= UINT32_MAX) {
        return 0;
    }
    *out = (uint32_t)v;
    return 1;
}

static int lookup_user(const char *name, uint32_t *uid) {
    char buf[4096];
    struct passwd pw, *res = NULL;
    if (getpwnam_r(name, &pw, buf, sizeof(buf), &res) != 0 || res == NULL) {
        return 0;
    }
    *uid = pw.pw_uid;
    return 1;
}

static int lookup_group(const char *name, struct group *gr, char *buf, size_t cap) {
    struct group *res = NULL;
    return name[0] != '\0' && getgrnam_r(name, gr, buf, cap, &res) == 0 && res != NULL;
}

// add_group adds every user whose primary group is |gid|, and every member listed for
// it in the group database (|gr|, NULL if the gid has no entry). Returns members added.
static size_t add_group(pol_callers *c, pol_userdb *db, uint32_t gid, const struct group *gr) {
    size_t before = c->num_uids;
    load_accounts(db);
    for (size_t i = 0; i < db->len; i++) {
        if (db->accounts[i].gid == gid) {
            push(c, db->accounts[i].uid);
        }
    }
    for (char **m = gr != NULL ? gr->gr_mem : NULL; m != NULL && *m != NULL; m++) {
        uint32_t uid;
        if (lookup_user(*m, &uid)) {
            push(c, uid);
        }
    }
    return c->num_uids - before;
}

static void append_text(pol_callers *c, const char *spec) {
    size_t old = c->text ? strlen(c->text) : 0, n = old + strlen(spec) + 3;
    char *t = realloc(c->text, n);
    if (t == NULL) {
        return;
    }
    snprintf(t + old, n - old, "%s%s", old ? ", " : "", spec);
    c->text = t;
}

int pol_callers_add(pol_callers *c, pol_userdb *db, const char *spec, char *err, size_t err_len) {
    const char *colon = strchr(spec, ':');
    const char *v = colon ? colon + 1 : "";
    size_t kind_len = colon ? (size_t)(colon - spec) : 0;
    uint32_t id;
    int r = 1;
    if (kind_len == 4 && strncmp(spec, "user", 4) == 0) {
        if (*v == '\0' || !lookup_user(v, &id)) {
            snprintf(err, err_len, "no user named \"%s\" in the user database (uid:N takes a number)", v);
            return 0;
        }
        push(c, id);
    } else if (kind_len == 3 && strncmp(spec, "uid", 3) == 0) {
        if (!parse_id(v, &id)) {
            snprintf(err, err_len, "expected uid:N with a number N, found \"%s\"", spec);
            return 0;
        }
        push(c, id);
    } else if ((kind_len == 5 && strncmp(spec, "group", 5) == 0) || (kind_len == 3 && strncmp(spec, "gid", 3) == 0)) {
        int by_name = spec[0] == 'g' && spec[1] == 'r';
        char buf[16384];
        struct group gr, *res = NULL;
        if (by_name) {
            if (!lookup_group(v, &gr, buf, sizeof(buf))) {
                snprintf(err, err_len, "no group named \"%s\" in the group database (gid:N takes a number)", v);
                return 0;
            }
            res = &gr;
            id = gr.gr_gid;
        } else {
            if (!parse_id(v, &id)) {
                snprintf(err, err_len, "expected gid:N with a number N, found \"%s\"", spec);
                return 0;
            }
            if (getgrgid_r(id, &gr, buf, sizeof(buf), &res) != 0) {
                res = NULL;
            }
        }
        if (add_group(c, db, id, res) == 0) {
            snprintf(err, err_len,
                     "warning: %s has no members (no user has it as primary or supplementary "
                     "group), so it matches no caller",
                     spec);
            r = 2;
        }
    } else {
        snprintf(err, err_len, "expected \"user:NAME\", \"uid:N\", \"group:NAME\" or \"gid:N\", found \"%s\"", spec);
        return 0;
    }
    append_text(c, spec);
    return r;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

void pol_callers_finish(pol_callers *c) {
    if (c->num_uids == 0) {
        return;
    }
    qsort(c->uids, c->num_uids, sizeof(*c->uids), cmp_u32);
    size_t out = 1;
    for (size_t i = 1; i < c->num_uids; i++) {
        if (c->uids[i] != c->uids[out - 1]) {
            c->uids[out++] = c->uids[i];
        }
    }
    c->num_uids = out;
}

void pol_callers_free(pol_callers *c) {
    if (c != NULL) {
        free(c->uids);
        free(c->text);
        free(c);
    }
}

int pol_callers_match(const pol_callers *c, uint32_t uid) {
    if (c == NULL) {
        return 1;
    }
    if (uid == GW_CALLER_NONE) {
        return 0;
    }
    size_t lo = 0, hi = c->num_uids;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->uids[mid] == uid) {
            return 1;
        }
        if (c->uids[mid] < uid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return 0;
}

int pol_caller_parse(const char *s, uint32_t *uid) {
    return parse_id(s, uid) || lookup_user(s, uid);
}

int pol_group_parse(const char *s, uint32_t *gid) {
    char buf[16384];
    struct group gr;
    if (parse_id(s, gid)) {
        return 1;
    }
    if (!lookup_group(s, &gr, buf, sizeof(buf))) {
        return 0;
    }
    *gid = gr.gr_gid;
    return 1;
}

// ---- the `caller` setting of a rule ----

pol_callers *pol_ld_callers(loader *ld, const config_setting_t *g, const char *prefix, pol_userdb *db) {
    const config_setting_t *s = config_setting_get_member(g, "caller");
    if (s == NULL) {
        return NULL;
    }
    char path[96];
    pol_ld_setting_path(path, sizeof(path), prefix, "caller");
    int t = config_setting_type(s);
    int n = t == CONFIG_TYPE_STRING                             ? 1
            : (t == CONFIG_TYPE_ARRAY || t == CONFIG_TYPE_LIST) ? config_setting_length(s)
                                                                : -1;
    if (n <= 0) {
        pol_ld_problem(ld, s, path, "expected \"user:NAME\", \"uid:N\", \"group:NAME\", \"gid:N\" or a list of them");
        return NULL;
    }
    pol_callers *c = gw_xcalloc(1, sizeof(*c));
    int ok = c != NULL;
    for (int i = 0; ok && i < n; i++) {
        const config_setting_t *e = t == CONFIG_TYPE_STRING ? s : config_setting_get_elem(s, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            pol_ld_problem(ld, e, path, "expected a string like \"user:NAME\" in the list");
            ok = 0;
            break;
        }
        char err[300];
        int r = pol_callers_add(c, db, config_setting_get_string(e), err, sizeof(err));
        if (r != 1) {
            pol_ld_problem(ld, e, path, "%s", err);
        }
        ok = r != 0;
    }
    if (!ok) {
        pol_callers_free(c);
        return NULL;
    }
    pol_callers_finish(c);
    return c;
}
