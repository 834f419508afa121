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
    } schemes[] = {{"http://", POL_VIA_HTTP}, {"socks5://", POL_VIA_SOCKS5}};
    pol_via *v = gw_xcalloc(1, sizeof(*v));
    const char *rest = NULL;
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]) && rest == NULL; i++) {
        if (strncmp(text, schemes[i].scheme, strlen(schemes[i].scheme)) == 0) {
            rest = text + strlen(schemes[i].scheme);
            v->kind = schemes[i].kind;
        }
    }
    char host[256];
    if (strncmp(text, "https://", 8) == 0) {
        pol_ld_problem(ld, s, path,
                       "TLS to the parent (https://) is not supported by this version: use http:// or "
                       "socks5:// (the end-to-end mTLS runs inside the tunnel either way)");
    } else if (rest == NULL || strchr(rest, '@') != NULL || strchr(rest, '/') != NULL ||
               !gw_http_parse_authority(rest, strlen(rest), 0, host, &v->port) || v->port == 0) {
        pol_ld_problem(ld, s, path,
                       "expected \"http://HOST:PORT\" or \"socks5://HOST:PORT\" (credentials go in "
                       "via_credentials_file), found \"%s\"",
                       text);
    } else {
        v->host = gw_xstrdup(host);
        v->text = gw_xstrdup(text);
        return v;
    }
    pol_via_free(v);
    return NULL;
}

void pol_ld_via_defaults(loader *ld, const config_setting_t *root) {
    const config_setting_t *cred = config_setting_get_member(root, "via_credentials_file");
    if (cred != NULL && config_setting_get_member(root, "via") == NULL) {
        pol_ld_problem(ld, cred, "via_credentials_file", "only used with via (the default parent proxy)");
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
            if (config_setting_get_member(g, "via_credentials_file") != NULL) {
                pol_ld_setting_path(path, sizeof(path), prefix, "via_credentials_file");
                pol_ld_problem(ld, config_setting_get_member(g, "via_credentials_file"), path, "only used with via");
                return 0;
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
    if (r->preconnect > 0) {
        pol_ld_setting_path(path, sizeof(path), prefix, "preconnect");
        pol_ld_problem(ld, config_setting_get_member(g, "preconnect"), path,
                       "not with via in this version (pre-connected tunnels dial the destination directly)");
    }
    r->via = v;
    return 1;
}
