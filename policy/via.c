// via: a rule's parent proxy (DESIGN "Through a parent proxy"): `via` and
// `via_credentials_file` of the rule, or the top-level defaults for every rule; "none" in
// a rule goes direct. The credentials are read here, once per load, and kept only in the
// snapshot (never in a log line).
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/base/xalloc.h"
#include "gateway/proto/http.h"
#include "gateway/tls/identity.h"
#include "policy/loader.h"

void pol_via_free(pol_via *v) {
    if (v == NULL) {
        return;
    }
    free(v->text);
    free(v->host);
    free(v->credentials_file);
    if (v->tls_owned) {
        gw_identity_free(v->tls);
    }
    if (v->user != NULL) {
        memset(v->user, 0, strlen(v->user));
        free(v->user);
    }
    if (v->password != NULL) {
        memset(v->password, 0, strlen(v->password));
        free(v->password);
    }
    free(v);
}

// read_credentials reads "user:password" (the first line) of |path|.
static int read_credentials(loader *ld, const config_setting_t *s, const char *path_setting, pol_via *v) {
    char line[600];
    FILE *f = fopen(v->credentials_file, "re");
    if (f == NULL) {
        pol_ld_problem(ld, s, path_setting, "cannot read %s", v->credentials_file);
        return 0;
    }
    int got = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    line[got ? strcspn(line, "\r\n") : 0] = '\0';
    char *colon = strchr(line, ':');
    size_t ul = colon ? (size_t)(colon - line) : 0, pl = colon ? strlen(colon + 1) : 0;
    if (colon == NULL || ul == 0 || ul > 255 || pl > 255) {
        memset(line, 0, sizeof(line));
        pol_ld_problem(ld, s, path_setting,
                       "%s: expected one line \"user:password\" (each at most 255 bytes; the user without ':')",
                       v->credentials_file);
        return 0;
    }
    *colon = '\0';
    v->user = gw_xstrdup(line);
    v->password = gw_xstrdup(colon + 1);
    memset(line, 0, sizeof(line));
    char msg[PATH_MAX * 2 + 300];
    if (gw_file_mode_problem("via_credentials_file", v->credentials_file, msg, sizeof(msg))) {
        pol_ld_problem(ld, s, path_setting, "warning: %s", msg);
    }
    return 1;
}

// parse reads `via` |text| into a new pol_via, or NULL after a problem.
static pol_via *parse(loader *ld, const config_setting_t *s, const char *path, const char *text) {
    static const struct {
        const char *scheme;
        pol_via_kind kind;
    } schemes[] = {{"http://", POL_VIA_HTTP}, {"https://", POL_VIA_HTTP}, {"socks5://", POL_VIA_SOCKS5}};
    pol_via *v = gw_xcalloc(1, sizeof(*v));
    const char *rest = NULL;
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]) && rest == NULL; i++) {
        if (strncmp(text, schemes[i].scheme, strlen(schemes[i].scheme)) == 0) {
            rest = text + strlen(schemes[i].scheme);
            v->kind = schemes[i].kind;
        }
    }
    char host[256];
    if (rest == NULL || strchr(rest, '@') != NULL || strchr(rest, '/') != NULL ||
        !gw_http_parse_authority(rest, strlen(rest), 0, host, &v->port) || v->port == 0) {
        pol_ld_problem(ld, s, path,
                       "expected \"http://HOST:PORT\", \"https://HOST:PORT\" or \"socks5://HOST:PORT\" (credentials "
                       "go in via_credentials_file), found \"%s\"",
                       text);
    } else {
        v->host = gw_xstrdup(host);
        v->text = gw_xstrdup(text);
        return v;
    }
    pol_via_free(v);
    return NULL;
}

// lookup finds setting |key| of the rule |g| or, when the rule's via is the top-level
// one (|own_via| 0), of |root|: 1 with |*value|, |*at| and |path| set, 0 when absent.
static int lookup(loader *ld, const config_setting_t *root, const config_setting_t *g, const char *prefix, int own_via,
                  const char *key, const char **value, const config_setting_t **at, char *path, size_t cap) {
    if (pol_ld_get_string(ld, g, prefix, key, value) == 1) {
        *at = config_setting_get_member(g, key);
        pol_ld_setting_path(path, cap, prefix, key);
        return 1;
    }
    if (!own_via && pol_ld_get_string(ld, root, "", key, value) == 1) {
        *at = config_setting_get_member(root, key);
        pol_ld_setting_path(path, cap, "", key);
        return 1;
    }
    return 0;
}

// parent_tls sets how an https:// parent is verified: via_identity (an identity of the
// config: its trust verifies the parent, its certificate is presented when asked) or
// via_trust (a CA file alone). Returns 0 after a problem.
static int parent_tls(loader *ld, const config_setting_t *root, const config_setting_t *g, const char *prefix,
                      int own_via, const config_setting_t *via_at, const char *via_path, pol_via *v) {
    const char *name = NULL, *trust = NULL;
    const config_setting_t *name_at = NULL, *trust_at = NULL;
    char name_path[128], trust_path[128];
    int has_name = lookup(ld, root, g, prefix, own_via, "via_identity", &name, &name_at, name_path, sizeof(name_path));
    int has_trust =
        lookup(ld, root, g, prefix, own_via, "via_trust", &trust, &trust_at, trust_path, sizeof(trust_path));
    int https = strncmp(v->text, "https://", 8) == 0;
    if (!https) {
        if (has_name || has_trust) {
            pol_ld_problem(ld, has_name ? name_at : trust_at, has_name ? name_path : trust_path,
                           "only used with an https:// parent (via = \"%s\")", v->text);
            return 0;
        }
        return 1;
    }
    if (has_name && has_trust) {
        pol_ld_problem(ld, trust_at, trust_path,
                       "give via_identity or via_trust, not both (the identity's trust "
                       "verifies the parent)");
        return 0;
    }
    if (!has_name && !has_trust) {
        pol_ld_problem(ld, via_at, via_path,
                       "an https:// parent is verified like any server: set via_trust (its CA file) or "
                       "via_identity (an identity whose trust verifies it and whose certificate it may ask for)");
        return 0;
    }
    if (has_name) {
        for (size_t i = 0; i < ld->cfg->num_identities && v->tls == NULL; i++) {
            if (strcmp(ld->cfg->identities[i]->spec.name, name) == 0) {
                v->tls = ld->cfg->identities[i];
            }
        }
        if (v->tls == NULL) {
            pol_ld_problem(ld, name_at, name_path, "no identity is named \"%s\"", name);
            return 0;
        }
        if (v->tls->p11 != NULL) {
            pol_ld_problem(ld, name_at, name_path,
                           "identity \"%s\" keeps its key in a token: a parent proxy's TLS needs a key file", name);
            return 0;
        }
        return 1;
    }
    gw_identity_spec spec;
    memset(&spec, 0, sizeof(spec));
    spec.name = gw_xstrdup(v->text);
    spec.where = pol_ld_where_of(ld, trust_at);
    spec.trust = pol_ld_resolve_path(ld, trust);
    spec.verify_only = 1;
    spec.tls_min = TLS1_2_VERSION;
    spec.tls_max = TLS1_3_VERSION;
    spec.verify_depth = 4;
    char err[600];
    v->tls = gw_identity_load(&spec, err, sizeof(err));
    if (v->tls == NULL) {
        pol_ld_problem(ld, trust_at, trust_path, "%s", err);
        gw_identity_spec_free(&spec);
        return 0;
    }
    v->tls_owned = 1;
    char msg[PATH_MAX * 2 + 300];
    if (gw_file_writable_problem("via_trust", v->tls->spec.trust, msg, sizeof(msg))) {
        pol_ld_problem(ld, trust_at, trust_path, "warning: %s", msg);
    }
    return 1;
}

void pol_ld_via_defaults(loader *ld, const config_setting_t *root) {
    static const char *const with_via[] = {"via_credentials_file", "via_identity", "via_trust"};
    for (size_t i = 0; i < sizeof(with_via) / sizeof(with_via[0]); i++) {
        const config_setting_t *s = config_setting_get_member(root, with_via[i]);
        if (s != NULL && config_setting_get_member(root, "via") == NULL) {
            pol_ld_problem(ld, s, with_via[i], "only used with via (the default parent proxy)");
        }
    }
}

int pol_ld_rule_via(loader *ld, const config_setting_t *root, const config_setting_t *g, const char *prefix,
                    pol_rule *r) {
    char path[128];
    const char *text = NULL, *cred = NULL;
    const config_setting_t *where = g, *cred_where = g;
    const char *where_prefix = prefix;
    if (pol_ld_get_string(ld, g, prefix, "via", &text) != 1) {
        if (pol_ld_get_string(ld, root, "", "via", &text) != 1) {
            static const char *const with_via[] = {"via_credentials_file", "via_identity", "via_trust"};
            for (size_t i = 0; i < sizeof(with_via) / sizeof(with_via[0]); i++) {
                if (config_setting_get_member(g, with_via[i]) != NULL) {
                    pol_ld_setting_path(path, sizeof(path), prefix, with_via[i]);
                    pol_ld_problem(ld, config_setting_get_member(g, with_via[i]), path, "only used with via");
                    return 0;
                }
            }
            return 1;
        }
        where = config_setting_get_member(root, "via");
        where_prefix = "";
    }
    if (strcmp(text, "none") == 0 || r->action == POL_ACTION_DENY) {
        if (r->action == POL_ACTION_DENY && where == g) {
            pol_ld_setting_path(path, sizeof(path), prefix, "via");
            pol_ld_problem(ld, where, path, "a deny rule takes no via");
            return 0;
        }
        return 1;  // this rule goes direct, whatever the default says (or connects nowhere)
    }
    pol_ld_setting_path(path, sizeof(path), where_prefix, "via");
    pol_via *v = parse(ld, where, path, text);
    if (v == NULL) {
        return 0;
    }
    if (pol_ld_get_string(ld, g, prefix, "via_credentials_file", &cred) == 1) {
        cred_where = config_setting_get_member(g, "via_credentials_file");
        pol_ld_setting_path(path, sizeof(path), prefix, "via_credentials_file");
    } else if (where_prefix[0] == '\0' && pol_ld_get_string(ld, root, "", "via_credentials_file", &cred) == 1) {
        cred_where = config_setting_get_member(root, "via_credentials_file");
        pol_ld_setting_path(path, sizeof(path), "", "via_credentials_file");
    }
    if (cred != NULL) {
        v->credentials_file = pol_ld_resolve_path(ld, cred);
        if (!read_credentials(ld, cred_where, path, v)) {
            pol_via_free(v);
            return 0;
        }
    }
    pol_ld_setting_path(path, sizeof(path), where_prefix, "via");
    if (!parent_tls(ld, root, g, prefix, where == g, where, path, v)) {
        pol_via_free(v);
        return 0;
    }
    r->via = v;
    return 1;
}
