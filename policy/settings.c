// settings: the table of every setting of the config file.
#include "policy/settings.h"

#include <stddef.h>
#include <string.h>

#include "gateway/base/buffer.h"
#include "gateway/tls/identity.h"

#define INT(sec, nm, lo, hi, def, st, member) \
    { sec, nm, PST_INT, lo, hi, def, offsetof(st, member) }
#define INT_CUSTOM(sec, nm, lo, hi) \
    { sec, nm, PST_INT, lo, hi, 0, PST_NO_FIELD }
#define BOOL(sec, nm, def, st, member) \
    { sec, nm, PST_BOOL, 0, 1, def, offsetof(st, member) }
#define OF(sec, nm, type) \
    { sec, nm, type, 0, 0, 0, PST_NO_FIELD }

const pol_setting pol_settings[] = {
    // The top level.
    INT("", "workers", 0, 256, 0, pol_config, workers),  // 0: one per core
    OF("", "user", PST_STRING),
    OF("", "listen", PST_LIST),
    OF("", "resolver", PST_GROUP),
    OF("", "identities", PST_LIST),
    OF("", "rules", PST_LIST),
    OF("", "limits", PST_GROUP),
    OF("", "allow", PST_LIST),
    OF("", "deny_addresses", PST_LIST),
    OF("", "log", PST_GROUP),
    OF("", "admin", PST_GROUP),
    OF("", "auth", PST_GROUP),
    OF("", "upstream_pool", PST_GROUP),
    INT_CUSTOM("", "upstream_mark", 0, 0xffffffffLL),  // an unsigned 32-bit mark: read by the loader
    OF("", "via", PST_STRING),                         // the default parent proxy of every rule
    OF("", "via_credentials_file", PST_STRING),
    OF("", "via_identity", PST_STRING),  // an https:// parent: the identity verifying it (and presented)
    OF("", "via_trust", PST_STRING),     // an https:// parent: its CA file (nothing presented)
    // listen = ( { ... }, ... )
    OF("listen[]", "name", PST_STRING),
    OF("listen[]", "address", PST_STRING),
    OF("listen[]", "protocols", PST_LIST),
    OF("listen[]", "forward", PST_STRING),
    OF("listen[]", "mode", PST_STRING),
    OF("listen[]", "owner", PST_STRING),
    OF("listen[]", "group", PST_STRING),
    OF("listen[]", "transparent", PST_STRING),
    OF("listen[]", "sniff", PST_LIST),
    // resolver = { ... }
    OF("resolver", "servers", PST_LIST),
    INT("resolver", "timeout_ms", 10, 60000, 2000, pol_config, resolver.timeout_ms),
    INT("resolver", "tries", 1, 10, 2, pol_config, resolver.tries),
    INT("resolver", "cache_max_ttl", 0, 86400, 300, pol_config, resolver.cache_max_ttl),
    OF("resolver", "hosts", PST_LIST),
    OF("resolver.hosts[]", "name", PST_STRING),
    OF("resolver.hosts[]", "address", PST_STRING),
    // identities = ( { ... }, ... )
    OF("identities[]", "name", PST_STRING),
    OF("identities[]", "certificate", PST_STRING),
    OF("identities[]", "key", PST_STRING),
    OF("identities[]", "key_password_file", PST_STRING),
    OF("identities[]", "pkcs12", PST_STRING),
    OF("identities[]", "pkcs12_password_file", PST_STRING),
    OF("identities[]", "trust", PST_STRING),
    OF("identities[]", "crl", PST_STRING),
    INT("identities[]", "verify_depth", 1, 16, 4, gw_identity_spec, verify_depth),
    OF("identities[]", "tls_min", PST_STRING),
    OF("identities[]", "tls_max", PST_STRING),
    OF("identities[]", "ciphers", PST_STRING),
    OF("identities[]", "pin_sha256", PST_LIST),
    OF("identities[]", "pkcs11_module", PST_STRING),
    OF("identities[]", "ocsp", PST_STRING),                                            // off | if-stapled | require
    INT("identities[]", "ocsp_skew_s", 0, 86400, 300, gw_identity_spec, ocsp_skew_s),  // leeway for the staple's times
    OF("identities[]", "acme", PST_GROUP),
    // identities[].acme = { ... }: the certificate obtained and renewed over ACME
    OF("identities[].acme", "directory", PST_STRING),
    OF("identities[].acme", "trust", PST_STRING),
    OF("identities[].acme", "account_key", PST_STRING),
    OF("identities[].acme", "contact", PST_LIST),
    OF("identities[].acme", "eab_kid", PST_STRING),
    OF("identities[].acme", "eab_hmac_file", PST_STRING),
    OF("identities[].acme", "names", PST_LIST),
    OF("identities[].acme", "key_type", PST_STRING),
    OF("identities[].acme", "renew_before", PST_STRING),
    OF("identities[].acme", "challenge", PST_STRING),
    OF("identities[].acme", "http01_listen", PST_STRING),
    OF("identities[].acme", "dns01_hook", PST_STRING),
    // rules = ( { ... }, ... )
    OF("rules[]", "match", PST_STRING),
    OF("rules[]", "action", PST_STRING),
    OF("rules[]", "identity", PST_ANY),
    OF("rules[]", "upstream", PST_STRING),
    INT_CUSTOM("rules[]", "upstream_port", 1, 65535),
    OF("rules[]", "server_name", PST_STRING),
    OF("rules[]", "server_uri", PST_STRING),
    OF("rules[]", "caller", PST_ANY),
    OF("rules[]", "listener", PST_ANY),
    INT("rules[]", "preconnect", 0, 64, 0, pol_rule, preconnect),  // verified connections kept ready, per worker
    BOOL("rules[]", "early_data", 0, pol_rule, early_data),        // TLS 1.3 0-RTT on resumed sessions
    BOOL("rules[]", "tcp_fastopen", 0, pol_rule, tcp_fastopen),    // the first flight in the SYN (RFC 7413)
    OF("rules[]", "via", PST_STRING),  // parent proxy: http:// | https:// | socks5:// | "none"
    OF("rules[]", "via_credentials_file", PST_STRING),
    OF("rules[]", "via_identity", PST_STRING),
    OF("rules[]", "via_trust", PST_STRING),
    // limits = { ... }
    INT("limits", "max_connections", 1, 10000000, 20000, pol_config, limits.max_connections),
    INT("limits", "connect_timeout_ms", 10, 600000, 5000, pol_config, limits.connect_timeout_ms),
    INT("limits", "handshake_timeout_ms", 10, 600000, 10000, pol_config, limits.handshake_timeout_ms),
    INT("limits", "confirm_ms", 0, 60000, 200, pol_config, limits.confirm_ms),
    INT("limits", "idle_timeout_s", 1, 7 * 86400, 900, pol_config, limits.idle_timeout_s),
    INT("limits", "header_max", 1024, GW_HEADER_MAX, 16384, pol_config, limits.header_max),
    INT("limits", "drain_timeout_s", 0, 86400, 30, pol_config, limits.drain_timeout_s),
    INT("limits", "session_cache_size", 1, 1000000, 8192, pol_config, limits.session_cache_size),
    INT("limits", "key_timeout_ms", 10, 600000, 5000, pol_config, limits.key_timeout_ms),
    INT("limits", "max_connections_per_client", 0, 10000000, 0, pol_config,
        limits.max_connections_per_client),  // 0: a quarter of max_connections
    INT("limits", "happy_eyeballs_ms", 0, 10000, 250, pol_config, limits.happy_eyeballs_ms),
    // upstream_pool = { ... }: http_proxy upstream connections reused by later requests
    INT("upstream_pool", "idle_per_key", 0, 100000, 16, pol_config, upstream_pool.idle_per_key),  // 0: off
    INT("upstream_pool", "idle_total", 0, 1000000, 4096, pol_config, upstream_pool.idle_total),
    INT("upstream_pool", "idle_timeout_s", 1, 3600, 30, pol_config, upstream_pool.idle_timeout_s),
    INT("upstream_pool", "max_requests", 1, 100000000, 1000, pol_config, upstream_pool.max_requests),
    // log = { ... }
    OF("log", "level", PST_STRING),
    OF("log", "format", PST_STRING),
    OF("log", "access", PST_STRING),
    // admin = { ... }
    OF("admin", "address", PST_STRING),
    OF("admin", "allow", PST_LIST),
    // auth = { ... }
    OF("auth", "users_file", PST_STRING),
};

const size_t pol_num_settings = sizeof(pol_settings) / sizeof(pol_settings[0]);

void pol_settings_check_members(loader *ld, const config_setting_t *group, const char *prefix, const char *section) {
    const char *known[sizeof(pol_settings) / sizeof(pol_settings[0]) + 1];
    size_t n = 0;
    for (size_t i = 0; i < pol_num_settings; i++) {
        if (strcmp(pol_settings[i].section, section) == 0) {
            known[n++] = pol_settings[i].name;
        }
    }
    known[n] = NULL;
    pol_ld_check_members(ld, group, prefix, known);
}

void pol_settings_read_ints(loader *ld, const config_setting_t *group, const char *prefix, const char *section,
                            void *base) {
    for (size_t i = 0; i < pol_num_settings; i++) {
        const pol_setting *s = &pol_settings[i];
        if ((s->type != PST_INT && s->type != PST_BOOL) || s->field == PST_NO_FIELD ||
            strcmp(s->section, section) != 0) {
            continue;
        }
        int *dst = (int *)((char *)base + s->field);
        *dst = (int)s->dflt;
        if (group == NULL) {
            continue;
        }
        if (s->type == PST_INT) {
            pol_ld_get_int(ld, group, prefix, s->name, s->min, s->max, dst);
            continue;
        }
        const config_setting_t *b = config_setting_get_member(group, s->name);
        if (b == NULL) {
            continue;
        }
        if (config_setting_type(b) != CONFIG_TYPE_BOOL) {
            char path[256];
            pol_ld_setting_path(path, sizeof(path), prefix, s->name);
            pol_ld_problem(ld, b, path, "expected true or false");
        } else {
            *dst = config_setting_get_bool(b);
        }
    }
}
