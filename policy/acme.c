// acme: an identity's `acme` block (DESIGN "Identities that renew themselves"): where its
// certificate comes from over ACME, checked into a pol_acme of the snapshot. The renewal
// itself runs in the gateway (gateway/renewal.c).
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gateway/base/netutil.h"
#include "gateway/base/xalloc.h"
#include "gateway/proto/hostname.h"
#include "gateway/tls/identity.h"
#include "policy/loader.h"
#include "policy/settings.h"

static const char *const key_types[] = {"ec-p256", "ec-p384", "rsa-2048", "rsa-3072"};

const char *pol_acme_challenge_name(pol_acme_challenge c) {
    return c == POL_ACME_DNS01 ? "dns-01" : "http-01";
}

// parse_renew_before reads "33%" (of the lifetime left) or a duration "90m", "48h", "7d".
static int parse_renew_before(const char *v, pol_acme *a) {
    char *end;
    long long n = strtoll(v, &end, 10);
    if (end == v || n <= 0) {
        return 0;
    }
    if (strcmp(end, "%") == 0 && n < 100) {
        a->renew_before_pct = (int)n;
        return 1;
    }
    static const struct {
        const char *unit;
        long long s;
    } units[] = {{"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].unit) == 0 && n <= 3650LL * 86400 / units[i].s) {
            a->renew_before_s = n * units[i].s;
            return 1;
        }
    }
    return 0;
}

// string_list reads a list of strings into *out (each passed through |check|, which
// reports its own problem).
static size_t string_list(loader *ld, const config_setting_t *g, const char *prefix, const char *key, char ***out,
                          int (*check)(loader *, const config_setting_t *, const char *, const char *)) {
    int bad = 0;
    const config_setting_t *list = pol_ld_get_aggregate(ld, g, prefix, key, 0, &bad);
    char path[400];
    pol_ld_setting_path(path, sizeof(path), prefix, key);
    int n = list ? config_setting_length(list) : 0;
    *out = gw_xcalloc((size_t)n + 1, sizeof(char *));
    size_t got = 0;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        const char *v = config_setting_type(e) == CONFIG_TYPE_STRING ? config_setting_get_string(e) : NULL;
        if (v == NULL) {
            pol_ld_problem(ld, e, path, "expected a list of strings");
        } else if (check(ld, e, path, v)) {
            (*out)[got++] = gw_xstrdup(v);
        }
    }
    return got;
}

static int check_name(loader *ld, const config_setting_t *e, const char *path, const char *v) {
    if (gw_host_is_ip(v) || gw_host_is_dns_name(v)) {
        return 1;
    }
    pol_ld_problem(ld, e, path, "expected DNS names or IP addresses for the certificate, found \"%s\"", v);
    return 0;
}

static int check_contact(loader *ld, const config_setting_t *e, const char *path, const char *v) {
    if (strncmp(v, "mailto:", 7) == 0 && strchr(v + 7, '@') != NULL && strpbrk(v, " \t\r\n,") == NULL) {
        return 1;
    }
    pol_ld_problem(ld, e, path, "expected \"mailto:ADDRESS\", found \"%s\"", v);
    return 0;
}

int pol_ld_acme(loader *ld, const config_setting_t *g, const char *prefix, const char *name, gw_identity_spec *spec) {
    int bad = 0;
    char p[300], path[400];
    const config_setting_t *ag = pol_ld_get_aggregate(ld, g, prefix, "acme", 1, &bad);
    if (ag == NULL) {
        return 0;
    }
    snprintf(p, sizeof(p), "%s.acme", prefix);
    pol_settings_check_members(ld, ag, p, "identities[].acme");
    pol_acme a;
    memset(&a, 0, sizeof(a));
    a.identity = gw_xstrdup(name);
    a.where = pol_ld_where_of(ld, ag);
    const char *v;
    if (pol_ld_get_string(ld, ag, p, "directory", &v) == 1) {
        if (strncmp(v, "https://", 8) != 0 || strlen(v) < 10 || strpbrk(v, " \t\r\n\"<>") != NULL) {
            pol_ld_setting_path(path, sizeof(path), p, "directory");
            pol_ld_problem(ld, config_setting_get_member(ag, "directory"), path,
                           "expected the CA's ACME directory URL, https://..., found \"%s\"", v);
        }
        a.directory = gw_xstrdup(v);
    } else {
        pol_ld_setting_path(path, sizeof(path), p, "directory");
        pol_ld_problem(ld, ag, path,
                       "required: the CA's ACME directory URL, e.g. \"https://ca.internal:9000/acme/acme/directory\"");
    }
    if (pol_ld_get_string(ld, ag, p, "trust", &v) == 1) {
        a.trust = pol_ld_resolve_path(ld, v);
    }
    if (pol_ld_get_string(ld, ag, p, "account_key", &v) == 1) {
        a.account_key = pol_ld_resolve_path(ld, v);
    } else if (spec->certificate != NULL) {
        size_t n = strlen(spec->certificate) + sizeof(".acme-account.key");
        a.account_key = gw_xcalloc(n, 1);
        snprintf(a.account_key, n, "%s.acme-account.key", spec->certificate);
    }
    a.num_contact = string_list(ld, ag, p, "contact", &a.contact, check_contact);
    a.num_names = string_list(ld, ag, p, "names", &a.names, check_name);
    if (a.num_names == 0 && config_setting_get_member(ag, "names") == NULL) {
        pol_ld_setting_path(path, sizeof(path), p, "names");
        pol_ld_problem(ld, ag, path,
                       "required: the DNS names or IPs the certificate names, e.g. [ \"orders-client.dc2.example\" ]");
    }
    int has_kid = pol_ld_get_string(ld, ag, p, "eab_kid", &v) == 1;
    if (has_kid) {
        a.eab_kid = gw_xstrdup(v);
    }
    if (pol_ld_get_string(ld, ag, p, "eab_hmac_file", &v) == 1) {
        a.eab_hmac_file = pol_ld_resolve_path(ld, v);
    }
    if ((a.eab_kid == NULL) != (a.eab_hmac_file == NULL)) {
        pol_ld_problem(ld, ag, p, "External Account Binding needs both eab_kid and eab_hmac_file");
    }
    snprintf(a.key_type, sizeof(a.key_type), "ec-p256");
    if (pol_ld_get_string(ld, ag, p, "key_type", &v) == 1) {
        int ok = 0;
        for (size_t i = 0; i < sizeof(key_types) / sizeof(key_types[0]); i++) {
            ok |= strcmp(v, key_types[i]) == 0;
        }
        pol_ld_setting_path(path, sizeof(path), p, "key_type");
        if (!ok) {
            pol_ld_problem(ld, config_setting_get_member(ag, "key_type"), path,
                           "expected \"ec-p256\", \"ec-p384\", \"rsa-2048\" or \"rsa-3072\", found \"%s\"", v);
        } else {
            snprintf(a.key_type, sizeof(a.key_type), "%s", v);
        }
    }
    a.renew_before_pct = 33;
    if (pol_ld_get_string(ld, ag, p, "renew_before", &v) == 1) {
        a.renew_before_pct = 0;
        if (!parse_renew_before(v, &a)) {
            pol_ld_setting_path(path, sizeof(path), p, "renew_before");
            pol_ld_problem(ld, config_setting_get_member(ag, "renew_before"), path,
                           "expected a share of the lifetime left (\"33%%\") or a duration (\"90m\", \"48h\", \"7d\"), "
                           "found \"%s\"",
                           v);
            a.renew_before_pct = 33;
        }
    }
    a.challenge = POL_ACME_HTTP01;
    if (pol_ld_get_string(ld, ag, p, "challenge", &v) == 1) {
        if (strcmp(v, "dns-01") == 0) {
            a.challenge = POL_ACME_DNS01;
        } else if (strcmp(v, "http-01") != 0) {
            pol_ld_setting_path(path, sizeof(path), p, "challenge");
            pol_ld_problem(ld, config_setting_get_member(ag, "challenge"), path,
                           "expected \"http-01\" or \"dns-01\", found \"%s\"", v);
        }
    }
    int has_listen = pol_ld_get_string(ld, ag, p, "http01_listen", &v) == 1;
    pol_ld_setting_path(path, sizeof(path), p, "http01_listen");
    if (has_listen) {
        a.http01_listen = gw_xstrdup(v);
        if (!pol_parse_socket_address(v, &a.http01_addr, &a.http01_addr_len)) {
            pol_ld_problem(ld, config_setting_get_member(ag, "http01_listen"), path,
                           "expected \"IPv4:port\" or \"[IPv6]:port\" the CA connects to, found \"%s\"", v);
        }
    } else if (a.challenge == POL_ACME_HTTP01) {
        pol_ld_problem(ld, ag, path,
                       "required with challenge \"http-01\": the address the CA's validation connects to, e.g. "
                       "\"0.0.0.0:80\"");
    }
    int has_hook = pol_ld_get_string(ld, ag, p, "dns01_hook", &v) == 1;
    pol_ld_setting_path(path, sizeof(path), p, "dns01_hook");
    if (has_hook) {
        a.dns01_hook = pol_ld_resolve_path(ld, v);
        if (access(a.dns01_hook, X_OK) != 0) {
            pol_ld_problem(ld, config_setting_get_member(ag, "dns01_hook"), path,
                           "%s is not an executable program (run as HOOK add|remove NAME VALUE)", a.dns01_hook);
        }
    } else if (a.challenge == POL_ACME_DNS01) {
        pol_ld_problem(ld, ag, path,
                       "required with challenge \"dns-01\": a program run as HOOK add|remove NAME VALUE that "
                       "publishes the TXT record");
    }
    // Where the results go: certificate and key files (the key may be in a token).
    if (spec->pkcs12 != NULL || spec->certificate == NULL || spec->key == NULL) {
        pol_ld_problem(ld, ag, p,
                       "needs the identity's certificate and key paths (where what ACME issues is written), "
                       "not pkcs12");
    }
    if (spec->key_password_file != NULL && !gw_p11_is_uri(spec->key)) {
        pol_ld_problem(ld, ag, p, "writes the key it makes unencrypted (mode 0600): remove key_password_file");
    }
    // Secrets readable by others, and a hook others may replace, are reported.
    char msg[PATH_MAX * 2 + 300];
    const struct {
        const char *what, *path;
        int secret;
    } files[] = {{"account_key", a.account_key, 1},
                 {"eab_hmac_file", a.eab_hmac_file, 1},
                 {"dns01_hook", a.dns01_hook, 0},
                 {"trust", a.trust, 0}};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if (files[i].path != NULL &&
            (files[i].secret ? gw_file_mode_problem(files[i].what, files[i].path, msg, sizeof(msg))
                             : gw_file_writable_problem(files[i].what, files[i].path, msg, sizeof(msg)))) {
            pol_ld_setting_path(path, sizeof(path), p, files[i].what);
            pol_ld_problem(ld, config_setting_get_member(ag, files[i].what), path, "warning: %s", msg);
        }
    }
    spec->acme = 1;
    pol_config *cfg = ld->cfg;
    cfg->acme = gw_xrealloc(cfg->acme, (cfg->num_acme + 1) * sizeof(*cfg->acme));
    cfg->acme[cfg->num_acme++] = a;
    return 1;
}

void pol_acme_free(pol_acme *a) {
    free(a->identity);
    free(a->where);
    free(a->directory);
    free(a->trust);
    free(a->account_key);
    free(a->eab_kid);
    free(a->eab_hmac_file);
    free(a->dns01_hook);
    free(a->http01_listen);
    for (size_t i = 0; i < a->num_contact; i++) {
        free(a->contact[i]);
    }
    free(a->contact);
    for (size_t i = 0; i < a->num_names; i++) {
        free(a->names[i]);
    }
    free(a->names);
}

const pol_acme *pol_config_acme(const pol_config *cfg, const char *identity) {
    for (size_t i = 0; i < cfg->num_acme; i++) {
        if (strcmp(cfg->acme[i].identity, identity) == 0) {
            return &cfg->acme[i];
        }
    }
    return NULL;
}

time_t pol_acme_due(const pol_acme *a, time_t not_before, time_t not_after) {
    if (a->renew_before_pct > 0) {
        return not_after - (not_after - not_before) * a->renew_before_pct / 100;
    }
    return not_after - (time_t)a->renew_before_s;
}
