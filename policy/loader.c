#include "policy/loader.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/base/xalloc.h"
#include "policy/match.h"
void pol_errors_init(pol_errors *errs) {
    memset(errs, 0, sizeof(*errs));
}

void pol_errors_free(pol_errors *errs) {
    for (size_t i = 0; i < errs->len; i++) {
        free(errs->lines[i]);
    }
    free(errs->lines);
    memset(errs, 0, sizeof(*errs));
}

void pol_errors_add(pol_errors *errs, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (errs->len == errs->cap) {
        size_t cap = errs->cap ? errs->cap * 2 : 8;
        char **lines = realloc(errs->lines, cap * sizeof(*lines));
        if (lines == NULL) {
            return;
        }
        errs->lines = lines;
        errs->cap = cap;
    }
    char *line = gw_xstrdup(buf);
    if (line == NULL) {
        return;
    }
    errs->lines[errs->len++] = line;
    if (strstr(buf, ": warning: ") != NULL || strncmp(buf, "warning: ", 9) == 0) {
        errs->warnings++;
    }
}

size_t pol_errors_count_fatal(const pol_errors *errs) {
    return errs->len - errs->warnings;
}

int pol_ld_line_of(const config_setting_t *s) {
    return s ? (int)config_setting_source_line(s) : 0;
}

void pol_ld_problem(loader *ld, const config_setting_t *s, const char *setting, const char *fmt, ...) {
    char msg[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pol_errors_add(ld->errs, "%s:%d: %s: %s", ld->file, pol_ld_line_of(s), setting, msg);
}

static const char *type_name(int type) {
    switch (type) {
        case CONFIG_TYPE_GROUP:
            return "a group { }";
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
            return "an integer";
        case CONFIG_TYPE_FLOAT:
            return "a number";
        case CONFIG_TYPE_STRING:
            return "a string";
        case CONFIG_TYPE_BOOL:
            return "true/false";
        case CONFIG_TYPE_ARRAY:
            return "an array [ ]";
        case CONFIG_TYPE_LIST:
            return "a list ( )";
        default:
            return "a value";
    }
}

// check_members rejects settings of |group| not named in |known| (NULL-terminated).

// edit_distance is the Levenshtein distance of two short names (capped at 32 bytes).
static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 32 || lb > 32) {
        return 99;
    }
    size_t prev[33], cur[33];
    for (size_t j = 0; j <= lb; j++) {
        prev[j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof(prev));
    }
    return prev[lb];
}

void pol_ld_check_members(loader *ld, const config_setting_t *group, const char *prefix, const char *const *known) {
    int n = config_setting_length(group);
    for (int i = 0; i < n; i++) {
        const config_setting_t *m = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(m);
        int ok = 0;
        for (const char *const *k = known; *k; k++) {
            if (name && strcmp(name, *k) == 0) {
                ok = 1;
            }
        }
        if (!ok) {
            char list[512] = "";
            for (const char *const *k = known; *k; k++) {
                strncat(list, *k, sizeof(list) - strlen(list) - 3);
                if (k[1]) {
                    strncat(list, ", ", sizeof(list) - strlen(list) - 1);
                }
            }
            char path[256];
            pol_ld_setting_path(path, sizeof(path), prefix, name ? name : "?");
            const char *best = NULL;
            size_t best_d = 3;  // suggest only close misspellings
            for (const char *const *k = known; name && *k; k++) {
                size_t d = edit_distance(name, *k);
                if (d < best_d) {
                    best_d = d;
                    best = *k;
                }
            }
            if (best != NULL) {
                pol_ld_problem(ld, m, path, "unknown setting; did you mean \"%s\"? (expected one of: %s)", best, list);
            } else {
                pol_ld_problem(ld, m, path, "unknown setting; expected one of: %s", list);
            }
        }
    }
}

void pol_ld_setting_path(char *out, size_t cap, const char *prefix, const char *key) {
    snprintf(out, cap, "%s%s%s", prefix, prefix[0] ? "." : "", key);
}

// get_string: 1 found (|*out| set), 0 absent, -1 wrong type (reported).
int pol_ld_get_string(loader *ld, const config_setting_t *group, const char *prefix, const char *key,
                      const char **out) {
    const config_setting_t *s = config_setting_get_member(group, key);
    if (s == NULL) {
        return 0;
    }
    char path[256];
    pol_ld_setting_path(path, sizeof(path), prefix, key);
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        pol_ld_problem(ld, s, path, "expected a string in double quotes, found %s", type_name(config_setting_type(s)));
        return -1;
    }
    *out = config_setting_get_string(s);
    return 1;
}

int pol_ld_get_int(loader *ld, const config_setting_t *group, const char *prefix, const char *key, long long lo,
                   long long hi, int *out) {
    const config_setting_t *s = config_setting_get_member(group, key);
    if (s == NULL) {
        return 0;
    }
    char path[256];
    pol_ld_setting_path(path, sizeof(path), prefix, key);
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) {
        pol_ld_problem(ld, s, path, "expected an integer from %lld to %lld, found %s", lo, hi, type_name(t));
        return -1;
    }
    long long v = config_setting_get_int64(s);
    if (v < lo || v > hi) {
        pol_ld_problem(ld, s, path, "expected an integer from %lld to %lld, found %lld", lo, hi, v);
        return -1;
    }
    *out = (int)v;
    return 1;
}

const config_setting_t *pol_ld_get_aggregate(loader *ld, const config_setting_t *group, const char *prefix,
                                             const char *key, int want_group, int *bad) {
    const config_setting_t *s = config_setting_get_member(group, key);
    if (s == NULL) {
        return NULL;
    }
    char path[256];
    pol_ld_setting_path(path, sizeof(path), prefix, key);
    int t = config_setting_type(s);
    int ok = want_group ? t == CONFIG_TYPE_GROUP : (t == CONFIG_TYPE_LIST || t == CONFIG_TYPE_ARRAY);
    if (!ok) {
        pol_ld_problem(ld, s, path, "expected %s, found %s",
                       want_group ? "a group { ... }" : "a list ( ... ) or array [ ... ]", type_name(t));
        *bad = 1;
        return NULL;
    }
    return s;
}

char *pol_ld_resolve_path(loader *ld, const char *p) {
    if (p[0] == '/') {
        return gw_xstrdup(p);
    }
    size_t n = strlen(ld->cfg->dir) + strlen(p) + 2;
    char *out = gw_xmalloc(n);
    if (out != NULL) {
        snprintf(out, n, "%s/%s", ld->cfg->dir, p);
    }
    return out;
}

char *pol_ld_where_of(loader *ld, const config_setting_t *s) {
    char buf[PATH_MAX + 16];
    snprintf(buf, sizeof(buf), "%s:%d", ld->file, pol_ld_line_of(s));
    return gw_xstrdup(buf);
}

// ---- sections ----

// load_cidr_list reads the list of IP addresses / CIDRs |name| of |root| into |out|, or
// |defaults| (|num_defaults| of them) when the setting is absent.
void pol_ld_cidr_list(loader *ld, const config_setting_t *root, const char *name, const char *const *defaults,
                      int num_defaults, pol_cidr **out, size_t *out_len) {
    int bad = 0;
    const char *dot = strrchr(name, '.');
    const config_setting_t *list = pol_ld_get_aggregate(ld, root, "", dot ? dot + 1 : name, 0, &bad);
    int n = list ? config_setting_length(list) : num_defaults;
    *out = gw_xcalloc((size_t)n + 1, sizeof(**out));
    *out_len = 0;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = list ? config_setting_get_elem(list, (unsigned)i) : NULL;
        const char *v =
            list ? (config_setting_type(e) == CONFIG_TYPE_STRING ? config_setting_get_string(e) : "") : defaults[i];
        pol_match m;
        char err[300];
        // A CIDR pattern without port is exactly what these lists take.
        if (!pol_match_parse(v, &m, err, sizeof(err)) || m.kind != POL_MATCH_CIDR || m.port_lo != 1 ||
            m.port_hi != 65535) {
            pol_ld_problem(ld, e ? e : list, name, "expected an IP address or CIDR like \"127.0.0.0/8\", found \"%s\"",
                           v);
            continue;
        }
        pol_cidr *c = &(*out)[(*out_len)++];
        c->family = m.family;
        memcpy(c->addr, m.addr, 16);
        c->prefix_len = m.prefix_len;
        c->text = gw_xstrdup(v);
    }
}
