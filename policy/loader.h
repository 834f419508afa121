// loader: what the config loader's files share: the loading context, and typed getters that
// turn every problem into "file:line: setting: what was expected" (unknown settings, with
// a "did you mean" for near misses). Private to policy/.
#ifndef MTLSGW_POLICY_LOADER_H
#define MTLSGW_POLICY_LOADER_H

#include <libconfig.h>

#include "gateway/tls/identity.h"
#include "policy/config.h"

typedef struct {
    pol_config *cfg;
    pol_errors *errs;
    const char *file;
    int user_uid, user_gid;  // the config's `user`, looked up once; -1 when none
} loader;

// pol_ld_line_of is the line |s| is on (0 for none).
int pol_ld_line_of(const config_setting_t *s);
// pol_ld_problem adds "file:line: setting: message" for |s|.
void pol_ld_problem(loader *ld, const config_setting_t *s, const char *setting, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
// pol_ld_check_members reports every member of |group| not in |known| (with a "did you
// mean" when one is close).
void pol_ld_check_members(loader *ld, const config_setting_t *group, const char *prefix, const char *const *known);
void pol_ld_setting_path(char *out, size_t cap, const char *prefix, const char *key);
// pol_ld_get_string: 1 found (|*out| set), 0 absent, -1 wrong type (reported).
int pol_ld_get_string(loader *ld, const config_setting_t *group, const char *prefix, const char *key, const char **out);
// pol_ld_get_int: as get_string, for an integer from |lo| to |hi|.
int pol_ld_get_int(loader *ld, const config_setting_t *group, const char *prefix, const char *key, long long lo,
                   long long hi, int *out);
// pol_ld_get_aggregate returns the group (|want_group|) or list/array |key| of |group|, or
// NULL when absent; a wrong type is reported and sets *|bad|.
const config_setting_t *pol_ld_get_aggregate(loader *ld, const config_setting_t *group, const char *prefix,
                                             const char *key, int want_group, int *bad);
// pol_ld_resolve_path makes |p| relative to the config file's folder (malloc'd).
char *pol_ld_resolve_path(loader *ld, const char *p);
// pol_ld_where_of returns "file:line" of |s| (malloc'd).
char *pol_ld_where_of(loader *ld, const config_setting_t *s);
// pol_ld_cidr_list reads the list of IP addresses / CIDRs |name| of |root| into |out|, or
// |defaults| (|num_defaults| of them) when the setting is absent.
void pol_ld_cidr_list(loader *ld, const config_setting_t *root, const char *name, const char *const *defaults,
                      int num_defaults, pol_cidr **out, size_t *out_len);

// pol_ld_identities reads `identities`, loading each identity's credentials (identities.c).
void pol_ld_identities(loader *ld, const config_setting_t *root);
// pol_ld_via_defaults checks the top-level via settings once (each rule reads them).
void pol_ld_via_defaults(loader *ld, const config_setting_t *root);
// pol_ld_rule_via reads `via` and `via_credentials_file` of rule |g| (or the top-level
// defaults in |root|) into r->via. Returns 0 after a problem.
int pol_ld_rule_via(loader *ld, const config_setting_t *root, const config_setting_t *g, const char *prefix,
                    pol_rule *r);
// pol_ld_acme reads the `acme` block of identity group |g| (named |name|) into the
// snapshot's acme list and marks |spec| as renewed over ACME. Returns 1 if there is one.
int pol_ld_acme(loader *ld, const config_setting_t *g, const char *prefix, const char *name, gw_identity_spec *spec);

// pol_ld_listeners reads `listen` (listeners.c).
void pol_ld_listeners(loader *ld, const config_setting_t *root);

// pol_ld_rule_listeners reads a rule's `listener` (one listener name or a list of them,
// listeners loaded first) into a mask (bit i: listener i) and its text, "a, b"
// (malloc'ed; stays NULL without the setting). Unknown names are file:line errors.
void pol_ld_rule_listeners(loader *ld, const config_setting_t *g, const char *prefix, uint64_t *out_mask,
                           char **out_text);
// pol_ld_callers reads the `caller` of rule |g| (a string or a list of them) resolved
// against |db|; NULL when absent or wrong (reported) (callers.c).
pol_callers *pol_ld_callers(loader *ld, const config_setting_t *g, const char *prefix, pol_userdb *db);

#endif
