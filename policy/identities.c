// identities: the `identities` section: each identity's settings checked, then its
// credentials loaded through gateway/tls (an SSL_CTX that verifies the server), with the
// file warnings `check` prints.
#include <openssl/base64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/base/xalloc.h"
#include "gateway/tls/identity.h"
#include "gateway/tls/ocsp.h"
#include "policy/loader.h"
#include "policy/settings.h"

typedef struct {
    loader *ld;
    const config_setting_t *where;
    const char *prefix;
} identity_warning_ctx;

static void identity_warning(void *arg, gw_problem_kind kind, const char *msg) {
    identity_warning_ctx *c = arg;
    pol_ld_problem(c->ld, c->where, c->prefix, "warning: %s", msg);
}

void pol_ld_identities(loader *ld, const config_setting_t *root) {
    int bad = 0;
    const config_setting_t *list = pol_ld_get_aggregate(ld, root, "", "identities", 0, &bad);
    if (list == NULL) {
        return;
    }
    pol_config *cfg = ld->cfg;
    int n = config_setting_length(list);
    cfg->identities = gw_xcalloc((size_t)n + 1, sizeof(*cfg->identities));
    for (int i = 0; i < n; i++) {
        const config_setting_t *g = config_setting_get_elem(list, (unsigned)i);
        char prefix[300];
        snprintf(prefix, sizeof(prefix), "identities[%d]", i);
        if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
            pol_ld_problem(ld, g, prefix, "expected a group { name = ...; certificate = ...; ... }");
            continue;
        }
        const char *name = NULL;
        if (pol_ld_get_string(ld, g, prefix, "name", &name) != 1) {
            pol_ld_problem(ld, g, prefix, "name: required, e.g. name = \"ops\";");
            continue;
        }
        snprintf(prefix, sizeof(prefix), "identities.%s", name);
        pol_settings_check_members(ld, g, prefix, "identities[]");
        int dup = 0;
        for (size_t j = 0; j < cfg->num_identities; j++) {
            dup |= strcmp(cfg->identities[j]->spec.name, name) == 0;
        }
        if (dup) {
            pol_ld_problem(ld, g, prefix, "another identity is already named \"%s\"", name);
            continue;
        }
        gw_identity_spec spec;
        memset(&spec, 0, sizeof(spec));
        spec.tls_min = TLS1_2_VERSION;
        spec.tls_max = TLS1_3_VERSION;
        int errors_before = (int)pol_errors_count_fatal(ld->errs);
        struct {
            const char *key;
            char **dst;
        } files[] = {{"certificate", &spec.certificate},
                     {"key", &spec.key},
                     {"key_password_file", &spec.key_password_file},
                     {"pkcs12", &spec.pkcs12},
                     {"pkcs12_password_file", &spec.pkcs12_password_file},
                     {"trust", &spec.trust},
                     {"crl", &spec.crl}};
        char path[400];
        for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
            const char *v;
            if (pol_ld_get_string(ld, g, prefix, files[f].key, &v) == 1) {
                // A key in a token is a PKCS#11 URI, not a path.
                *files[f].dst =
                    files[f].dst == &spec.key && gw_p11_is_uri(v) ? gw_xstrdup(v) : pol_ld_resolve_path(ld, v);
            }
        }
        const char *module;
        if (pol_ld_get_string(ld, g, prefix, "pkcs11_module", &module) == 1) {
            spec.pkcs11_module = pol_ld_resolve_path(ld, module);
        }
        spec.run_uid = ld->user_uid;
        spec.run_gid = ld->user_gid;
        if (gw_p11_is_uri(spec.key)) {
            char *uri_module = NULL, *uri_pin = NULL, err[600];
            pol_ld_setting_path(path, sizeof(path), prefix, "key");
            if (!gw_p11_uri_parse(spec.key, &uri_module, &uri_pin, err, sizeof(err))) {
                pol_ld_problem(ld, config_setting_get_member(g, "key"), path, "%s", err);
            }
            // key_password_file and pkcs11_module win over the URI's pin-source and module-path.
            if (spec.pkcs11_module == NULL) {
                spec.pkcs11_module = uri_module;
                uri_module = NULL;
            }
            if (spec.key_password_file == NULL) {
                spec.key_password_file = uri_pin;
                uri_pin = NULL;
            }
            free(uri_module);
            free(uri_pin);
        } else if (spec.pkcs11_module != NULL) {
            pol_ld_setting_path(path, sizeof(path), prefix, "pkcs11_module");
            pol_ld_problem(ld, config_setting_get_member(g, "pkcs11_module"), path,
                           "only for a key in a token: key = \"pkcs11:token=...;object=...\"");
        }
        pol_ld_acme(ld, g, prefix, name, &spec);
        if (spec.pkcs12 == NULL && (spec.certificate == NULL || spec.key == NULL)) {
            pol_ld_problem(ld, g, prefix, "needs certificate and key (PEM), or pkcs12");
        }
        if (spec.pkcs12 != NULL && (spec.certificate != NULL || spec.key != NULL)) {
            pol_ld_problem(ld, g, prefix, "give either pkcs12 or certificate + key, not both");
        }
        if (spec.trust == NULL) {
            pol_ld_setting_path(path, sizeof(path), prefix, "trust");
            pol_ld_problem(ld, g, path, "required: a PEM file of the CAs that sign the servers' certificates");
        }
        pol_settings_read_ints(ld, g, prefix, "identities[]", &spec);
        const char *v;
        if (pol_ld_get_string(ld, g, prefix, "tls_min", &v) == 1 && !(spec.tls_min = gw_tls_version_parse(v))) {
            pol_ld_setting_path(path, sizeof(path), prefix, "tls_min");
            pol_ld_problem(ld, config_setting_get_member(g, "tls_min"), path,
                           "expected \"1.2\" or \"1.3\", found \"%s\"", v);
        }
        if (pol_ld_get_string(ld, g, prefix, "tls_max", &v) == 1 && !(spec.tls_max = gw_tls_version_parse(v))) {
            pol_ld_setting_path(path, sizeof(path), prefix, "tls_max");
            pol_ld_problem(ld, config_setting_get_member(g, "tls_max"), path,
                           "expected \"1.2\" or \"1.3\", found \"%s\"", v);
        }
        if (spec.tls_min && spec.tls_max && spec.tls_min > spec.tls_max) {
            pol_ld_problem(ld, g, prefix, "tls_min is above tls_max");
        }
        if (pol_ld_get_string(ld, g, prefix, "ocsp", &v) == 1) {
            static const char *const modes[] = {"off", "if-stapled", "require"};
            spec.ocsp = -1;
            for (int m = 0; m < 3; m++) {
                spec.ocsp = strcmp(v, modes[m]) == 0 ? m : spec.ocsp;
            }
            if (spec.ocsp < 0) {
                pol_ld_setting_path(path, sizeof(path), prefix, "ocsp");
                pol_ld_problem(ld, config_setting_get_member(g, "ocsp"), path,
                               "expected \"off\", \"if-stapled\" or \"require\", found \"%s\"", v);
                spec.ocsp = 0;
            }
        }
        if (pol_ld_get_string(ld, g, prefix, "ciphers", &v) == 1 && v[0]) {
            spec.ciphers = gw_xstrdup(v);
        }
        const config_setting_t *pins = pol_ld_get_aggregate(ld, g, prefix, "pin_sha256", 0, &bad);
        if (pins != NULL && config_setting_length(pins) > 0) {
            int np = config_setting_length(pins);
            spec.pins = gw_xcalloc((size_t)np, 32);
            for (int j = 0; j < np; j++) {
                const config_setting_t *e = config_setting_get_elem(pins, (unsigned)j);
                const char *b64 = config_setting_type(e) == CONFIG_TYPE_STRING ? config_setting_get_string(e) : "";
                size_t out_len = 0;
                uint8_t out[64];
                if (!EVP_DecodeBase64(out, &out_len, sizeof(out), (const uint8_t *)b64, strlen(b64)) || out_len != 32) {
                    pol_ld_setting_path(path, sizeof(path), prefix, "pin_sha256");
                    pol_ld_problem(ld, e, path,
                                   "expected base64 of a 32-byte SHA-256 of the server's public key "
                                   "(openssl x509 -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 "
                                   "-binary | base64)");
                    continue;
                }
                memcpy(spec.pins[spec.num_pins++], out, 32);
            }
        }
        spec.name = gw_xstrdup(name);
        spec.where = pol_ld_where_of(ld, g);
        if ((int)pol_errors_count_fatal(ld->errs) != errors_before) {
            gw_identity_spec_free(&spec);
            continue;
        }
        char err[700];
        gw_identity *id = gw_identity_load(&spec, err, sizeof(err));
        if (id == NULL) {
            pol_ld_problem(ld, g, prefix, "%s", err);
            gw_identity_spec_free(&spec);
            continue;
        }
        cfg->identities[cfg->num_identities++] = id;
        if (id->spec.ocsp == GW_OCSP_REQUIRE) {
            pol_ld_problem(ld, g, prefix,
                           "warning: ocsp = \"require\" refuses every server that does not staple an OCSP response, "
                           "and the gateway cannot know beforehand which do: check each with `mtlsgw explain "
                           "--connect`");
        }
        if (id->pending) {
            pol_ld_problem(ld, g, prefix,
                           "warning: identity %s has no certificate yet: ACME order pending (%s is written when the "
                           "CA issues it)",
                           name, id->spec.certificate);
        }
        identity_warning_ctx wc = {ld, g, prefix};
        gw_identity_file_problems(id, time(NULL), identity_warning, &wc);
    }
}
