#include "policy/config.h"

#include <arpa/inet.h>
#include <libconfig.h>
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gateway/base/buffer.h"
#include "gateway/base/strbuf.h"
#include "gateway/base/xalloc.h"
#include "gateway/proto/http.h"
#include "gateway/tls/identity.h"
#include "policy/loader.h"
#include "policy/settings.h"
#include "policy/users.h"

static atomic_ullong g_generation;

const char *pol_action_name(pol_action a) {
    switch (a) {
        case POL_ACTION_DIRECT:
            return "direct";
        case POL_ACTION_MTLS:
            return "mtls";
        default:
            return "deny";
    }
}

static void load_resolver(loader *ld, const config_setting_t *root) {
    pol_config *cfg = ld->cfg;
    int bad = 0;
    const config_setting_t *g = pol_ld_get_aggregate(ld, root, "", "resolver", 1, &bad);
    pol_settings_read_ints(ld, g, "resolver", "resolver", cfg);
    if (g == NULL) {
        return;
    }
    pol_settings_check_members(ld, g, "resolver", "resolver");
    const config_setting_t *servers = pol_ld_get_aggregate(ld, g, "resolver", "servers", 0, &bad);
    if (servers != NULL && config_setting_length(servers) > 0) {
        char csv[2048] = "";
        for (int i = 0; i < config_setting_length(servers); i++) {
            const config_setting_t *e = config_setting_get_elem(servers, (unsigned)i);
            const char *v = config_setting_type(e) == CONFIG_TYPE_STRING ? config_setting_get_string(e) : NULL;
            struct sockaddr_storage ss;
            socklen_t sl;
            char with_port[300];
            int ok = v != NULL && strlen(v) < 256;
            if (ok) {
                // "ip" alone means port 53.
                struct in6_addr a6;
                struct in_addr a4;
                if (inet_pton(AF_INET, v, &a4) == 1) {
                    snprintf(with_port, sizeof(with_port), "%s:53", v);
                } else if (inet_pton(AF_INET6, v, &a6) == 1) {
                    snprintf(with_port, sizeof(with_port), "[%s]:53", v);
                } else {
                    snprintf(with_port, sizeof(with_port), "%s", v);
                }
                ok = pol_parse_socket_address(with_port, &ss, &sl);
            }
            if (!ok) {
                pol_ld_problem(ld, e, "resolver.servers",
                               "expected \"IP\" or \"IP:port\" of a DNS server, found %s%s%s", v ? "\"" : "",
                               v ? v : "a non-string", v ? "\"" : "");
                continue;
            }
            if (csv[0]) {
                strncat(csv, ",", sizeof(csv) - strlen(csv) - 1);
            }
            strncat(csv, with_port, sizeof(csv) - strlen(csv) - 1);
        }
        cfg->resolver.servers_csv = gw_xstrdup(csv);
    }
    const config_setting_t *hosts = pol_ld_get_aggregate(ld, g, "resolver", "hosts", 0, &bad);
    if (hosts != NULL) {
        int n = config_setting_length(hosts);
        cfg->resolver.hosts = gw_xcalloc((size_t)n + 1, sizeof(*cfg->resolver.hosts));
        for (int i = 0; i < n; i++) {
            const config_setting_t *h = config_setting_get_elem(hosts, (unsigned)i);
            char prefix[64];
            snprintf(prefix, sizeof(prefix), "resolver.hosts[%d]", i);
            if (config_setting_type(h) != CONFIG_TYPE_GROUP) {
                pol_ld_problem(ld, h, prefix, "expected { name = \"...\"; address = \"IP\"; }");
                continue;
            }
            pol_settings_check_members(ld, h, prefix, "resolver.hosts[]");
            const char *name = NULL, *addr = NULL;
            char path[96];
            pol_dest d;
            if (pol_ld_get_string(ld, h, prefix, "name", &name) != 1 || !pol_dest_init(&d, name, 1) || d.family != 0) {
                pol_ld_setting_path(path, sizeof(path), prefix, "name");
                pol_ld_problem(ld, h, path, "expected a host name");
                continue;
            }
            pol_dest a;
            if (pol_ld_get_string(ld, h, prefix, "address", &addr) != 1 || !pol_dest_init(&a, addr, 1) ||
                a.family == 0) {
                pol_ld_setting_path(path, sizeof(path), prefix, "address");
                pol_ld_problem(ld, h, path, "expected an IPv4 or IPv6 address");
                continue;
            }
            pol_host_entry *e = &cfg->resolver.hosts[cfg->resolver.num_hosts++];
            e->name = gw_xstrdup(d.host);
            e->family = a.family;
            memcpy(e->addr, a.addr, 16);
        }
    }
}

static gw_identity *find_identity(pol_config *cfg, const char *name) {
    for (size_t i = 0; i < cfg->num_identities; i++) {
        if (strcmp(cfg->identities[i]->spec.name, name) == 0) {
            return cfg->identities[i];
        }
    }
    return NULL;
}

// rule_identity finds identity |name| for a rule, or reports why there is none.
static gw_identity *rule_identity(loader *ld, const config_setting_t *root, const config_setting_t *at,
                                  const char *path, const char *name, int identities_bad) {
    pol_config *cfg = ld->cfg;
    gw_identity *id = find_identity(cfg, name);
    if (id != NULL) {
        return id;
    }
    int known_name = 0;  // the identity exists but failed to load: reported there already
    const config_setting_t *ids = config_setting_get_member(root, "identities");
    for (int j = 0; identities_bad && ids && j < config_setting_length(ids); j++) {
        const char *nm;
        if (config_setting_lookup_string(config_setting_get_elem(ids, (unsigned)j), "name", &nm) &&
            strcmp(nm, name) == 0) {
            known_name = 1;
        }
    }
    if (!known_name) {
        pol_ld_problem(ld, at, path, "no identity is named \"%s\" (see identities)", name);
    } else {
        pol_errors_add(ld->errs, "%s:%d: %s: identity \"%s\" did not load (see above)", ld->file, pol_ld_line_of(at),
                       path, name);
    }
    return NULL;
}

// load_rule_identities reads `identity` of rule |g|: one name, or a list presented by what
// the server asks for (the first when it names no CA we have). The server is verified
// with the first identity's settings, so each other one must accept its TLS versions.
static void load_rule_identities(loader *ld, const config_setting_t *root, const config_setting_t *g, const char *path,
                                 int identities_bad, pol_rule *r) {
    const config_setting_t *s = config_setting_get_member(g, "identity");
    int t = config_setting_type(s);
    int n = t == CONFIG_TYPE_STRING                             ? 1
            : (t == CONFIG_TYPE_ARRAY || t == CONFIG_TYPE_LIST) ? config_setting_length(s)
                                                                : 0;
    if (n <= 0) {
        pol_ld_problem(ld, s, path, "expected an identity name, or a list [ \"new\", \"old\" ] of them");
        return;
    }
    r->identities = gw_xcalloc((size_t)n, sizeof(*r->identities));
    for (int i = 0; r->identities != NULL && i < n; i++) {
        const config_setting_t *e = t == CONFIG_TYPE_STRING ? s : config_setting_get_elem(s, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            pol_ld_problem(ld, e, path, "expected an identity name (a string) in the list");
            continue;
        }
        const char *name = config_setting_get_string(e);
        for (size_t j = 0; j < r->num_identities; j++) {
            if (strcmp(r->identities[j]->spec.name, name) == 0) {
                pol_ld_problem(ld, e, path, "identity \"%s\" is already in the list", name);
            }
        }
        gw_identity *id = rule_identity(ld, root, e, path, name, identities_bad);
        if (id == NULL) {
            continue;
        }
        const gw_identity *first = r->num_identities ? r->identities[0] : NULL;
        if (first != NULL && (id->spec.tls_min > first->spec.tls_min || id->spec.tls_max < first->spec.tls_max)) {
            pol_ld_problem(ld, e, path,
                           "identity \"%s\" does not accept every TLS version of \"%s\", whose "
                           "settings the handshake uses: give both the same tls_min and tls_max",
                           name, first->spec.name);
        }
        r->identities[r->num_identities++] = id;
    }
    r->identity = r->num_identities ? r->identities[0] : NULL;
}

static void load_rules(loader *ld, const config_setting_t *root, int identities_bad) {
    int bad = 0;
    const config_setting_t *list = pol_ld_get_aggregate(ld, root, "", "rules", 0, &bad);
    pol_config *cfg = ld->cfg;
    cfg->index = pol_index_new();
    if (list == NULL) {
        return;  // no rules: everything is denied
    }
    int n = config_setting_length(list);
    cfg->rules = gw_xcalloc((size_t)n + 1, sizeof(*cfg->rules));
    pol_userdb *db = pol_userdb_new();
    for (int i = 0; i < n; i++) {
        const config_setting_t *g = config_setting_get_elem(list, (unsigned)i);
        char prefix[64], path[96];
        snprintf(prefix, sizeof(prefix), "rules[%d]", i);
        if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
            pol_ld_problem(ld, g, prefix, "expected a group { match = \"...\"; ... }");
            continue;
        }
        pol_settings_check_members(ld, g, prefix, "rules[]");
        int before = (int)pol_errors_count_fatal(ld->errs);
        pol_rule r;
        memset(&r, 0, sizeof(r));
        const char *match = NULL, *action = NULL, *upstream = NULL, *sni = NULL, *uri = NULL;
        pol_ld_setting_path(path, sizeof(path), prefix, "match");
        if (pol_ld_get_string(ld, g, prefix, "match", &match) == 0) {
            pol_ld_problem(ld, g, path, "required: host, *.suffix, *, IP or CIDR, optionally with :port");
        } else if (match != NULL) {
            char err[300];
            if (!pol_match_parse(match, &r.match, err, sizeof(err))) {
                pol_ld_problem(ld, config_setting_get_member(g, "match"), path, "expected %s", err);
            }
        }
        const config_setting_t *id_setting = config_setting_get_member(g, "identity");
        int has_identity = id_setting != NULL;
        r.action = has_identity ? POL_ACTION_MTLS : POL_ACTION_DENY;
        pol_ld_setting_path(path, sizeof(path), prefix, "action");
        if (pol_ld_get_string(ld, g, prefix, "action", &action) == 1) {
            if (strcmp(action, "mtls") == 0) {
                r.action = POL_ACTION_MTLS;
            } else if (strcmp(action, "direct") == 0) {
                r.action = POL_ACTION_DIRECT;
            } else if (strcmp(action, "deny") == 0) {
                r.action = POL_ACTION_DENY;
            } else {
                pol_ld_problem(ld, config_setting_get_member(g, "action"), path,
                               "expected \"mtls\", \"direct\" or \"deny\", found \"%s\"", action);
            }
        } else if (!has_identity) {
            pol_ld_problem(ld, g, path,
                           "required: set identity = \"...\" for mTLS, or action = \"direct\" or \"deny\"");
        }
        pol_ld_setting_path(path, sizeof(path), prefix, "identity");
        if (r.action == POL_ACTION_MTLS && !has_identity) {
            pol_ld_problem(ld, g, path, "required for action \"mtls\"");
        } else if (r.action != POL_ACTION_MTLS && has_identity) {
            pol_ld_problem(ld, config_setting_get_member(g, "identity"), path, "only used by action \"mtls\"");
        } else if (has_identity) {
            load_rule_identities(ld, root, g, path, identities_bad, &r);
        }
        pol_ld_setting_path(path, sizeof(path), prefix, "upstream");
        int has_upstream = pol_ld_get_string(ld, g, prefix, "upstream", &upstream) == 1;
        if (has_upstream) {
            char host[256];
            if (!gw_http_parse_authority(upstream, strlen(upstream), 0, host, &r.upstream_port)) {
                pol_ld_problem(ld, config_setting_get_member(g, "upstream"), path,
                               "expected \"host:port\" or \"[IPv6]:port\", found \"%s\"", upstream);
            } else {
                r.upstream_host = gw_xstrdup(host);
            }
        }
        int port = 0;
        if (pol_ld_get_int(ld, g, prefix, "upstream_port", 1, 65535, &port) == 1) {
            if (has_upstream) {
                pol_ld_setting_path(path, sizeof(path), prefix, "upstream_port");
                pol_ld_problem(ld, config_setting_get_member(g, "upstream_port"), path,
                               "give the port inside upstream = \"host:port\" instead");
            }
            r.upstream_port = (uint16_t)port;
        }
        if (pol_ld_get_string(ld, g, prefix, "server_name", &sni) == 1) {
            pol_dest d;
            pol_ld_setting_path(path, sizeof(path), prefix, "server_name");
            if (!pol_dest_init(&d, sni, 1)) {
                pol_ld_problem(ld, config_setting_get_member(g, "server_name"), path,
                               "expected a host name or IP address, found \"%s\"", sni);
            } else if (r.action != POL_ACTION_MTLS) {
                pol_ld_problem(ld, config_setting_get_member(g, "server_name"), path, "only used by action \"mtls\"");
            } else {
                r.server_name = gw_xstrdup(d.host);
            }
        }
        if (pol_ld_get_string(ld, g, prefix, "server_uri", &uri) == 1) {
            pol_ld_setting_path(path, sizeof(path), prefix, "server_uri");
            if (r.action != POL_ACTION_MTLS) {
                pol_ld_problem(ld, config_setting_get_member(g, "server_uri"), path, "only used by action \"mtls\"");
            } else if (strstr(uri, "://") == NULL || strlen(uri) >= 256) {
                pol_ld_problem(ld, config_setting_get_member(g, "server_uri"), path,
                               "expected a URI like \"spiffe://dc2.test/ns/prod/sa/orders\", found \"%s\"", uri);
            } else {
                r.server_uri = gw_xstrdup(uri);
            }
        }
        if (r.action == POL_ACTION_DENY && (has_upstream || port)) {
            pol_ld_problem(ld, g, prefix, "a deny rule takes no upstream");
        }
        pol_settings_read_ints(ld, g, prefix, "rules[]", &r);
        if (r.preconnect > 0) {
            pol_ld_setting_path(path, sizeof(path), prefix, "preconnect");
            const config_setting_t *pc = config_setting_get_member(g, "preconnect");
            int one = r.upstream_host != NULL || (r.match.kind == POL_MATCH_HOST && r.match.port_lo == r.match.port_hi);
            if (r.action != POL_ACTION_MTLS) {
                pol_ld_problem(ld, pc, path, "only used by action \"mtls\"");
            } else if (!one) {
                pol_ld_problem(ld, pc, path,
                               "needs one destination: a rule whose match is one host:port, or that has upstream");
            }
        }
        if (r.early_data) {
            pol_ld_setting_path(path, sizeof(path), prefix, "early_data");
            const config_setting_t *ed = config_setting_get_member(g, "early_data");
            if (r.action != POL_ACTION_MTLS) {
                pol_ld_problem(ld, ed, path, "only used by action \"mtls\"");
            }
            for (size_t k = 0; k < r.num_identities; k++) {
                if (r.identities[k]->p11 != NULL) {
                    // Early data the server rejects is sent again after the handshake,
                    // which may then be a full one: a token signing in the middle of the
                    // relay could hang it.
                    pol_ld_problem(ld, ed, path,
                                   "identity \"%s\" keeps its key in a token: early data needs a key file",
                                   r.identities[k]->spec.name);
                }
            }
        }
        pol_ld_rule_via(ld, root, g, prefix, &r);
        if (r.tcp_fastopen && r.action != POL_ACTION_MTLS && r.via == NULL) {
            // A plain connection may carry a server-speaks-first protocol: with nothing
            // of ours to write, a deferred SYN would never leave.
            pol_ld_setting_path(path, sizeof(path), prefix, "tcp_fastopen");
            pol_ld_problem(ld, config_setting_get_member(g, "tcp_fastopen"), path,
                           "only where the gateway speaks first: action \"mtls\", or a parent proxy (via)");
        }
        r.callers = pol_ld_callers(ld, g, prefix, db);
        pol_ld_rule_listeners(ld, g, prefix, &r.listeners, &r.listeners_text);
        r.where = pol_ld_where_of(ld, g);
        r.match_text = gw_xstrdup(match ? match : "");
        if ((int)pol_errors_count_fatal(ld->errs) != before) {
            free(r.where);
            free(r.match_text);
            free(r.upstream_host);
            free(r.server_name);
            free(r.server_uri);
            free(r.identities);
            free(r.listeners_text);
            pol_callers_free(r.callers);
            pol_via_free(r.via);
            continue;
        }
        cfg->rules[cfg->num_rules] = r;
        pol_index_add(cfg->index, &r.match, (uint32_t)cfg->num_rules, r.callers, r.listeners);
        cfg->callers_in_rules |= r.callers != NULL;
        cfg->num_rules++;
    }
    pol_userdb_free(db);
}

static void load_limits(loader *ld, const config_setting_t *root) {
    int bad = 0;
    const config_setting_t *g = pol_ld_get_aggregate(ld, root, "", "limits", 1, &bad);
    pol_settings_read_ints(ld, g, "limits", "limits", ld->cfg);
    if (g != NULL) {
        pol_settings_check_members(ld, g, "limits", "limits");
    }
    g = pol_ld_get_aggregate(ld, root, "", "upstream_pool", 1, &bad);
    pol_settings_read_ints(ld, g, "upstream_pool", "upstream_pool", ld->cfg);
    if (g != NULL) {
        pol_settings_check_members(ld, g, "upstream_pool", "upstream_pool");
    }
}

static void load_allow(loader *ld, const config_setting_t *root) {
    static const char *const loopback[] = {"127.0.0.0/8", "::1/128"};
    pol_ld_cidr_list(ld, root, "allow", loopback, 2, &ld->cfg->allow, &ld->cfg->num_allow);
}

// load_deny_addresses: addresses never connected to, whatever name or rule led there.
// The default fences this host (loopback, where its own services and the gateway listen),
// the unspecified addresses and link-local (cloud metadata). An IP literal `upstream` is
// the operator's own choice and passes the default list; inside a list the operator
// wrote, it could never be reached: a config error.
static void load_deny_addresses(loader *ld, const config_setting_t *root) {
    static const char *const fenced[] = {"0.0.0.0/8", "::/128",      "169.254.0.0/16",
                                         "fe80::/10", "127.0.0.0/8", "::1/128"};
    pol_config *cfg = ld->cfg;
    pol_ld_cidr_list(ld, root, "deny_addresses", fenced, 6, &cfg->deny_addresses, &cfg->num_deny_addresses);
    cfg->deny_addresses_written = config_setting_get_member(root, "deny_addresses") != NULL;
    for (size_t i = 0; i < cfg->num_rules; i++) {
        pol_rule *r = &cfg->rules[i];
        pol_dest d;
        if (r->upstream_host == NULL || !pol_dest_init(&d, r->upstream_host, 1) || d.family == 0) {
            continue;
        }
        r->upstream_is_literal = 1;
        const pol_cidr *c = pol_config_denied_address(cfg, r, d.family, d.addr);
        if (c != NULL) {
            pol_errors_add(ld->errs, "%s: upstream: %s is in deny_addresses (%s): the gateway never connects there",
                           r->where, r->upstream_host, c->text);
        }
    }
}

// check_callers_need_user: a gateway running as root would see its own connections (a
// loop through a rule) and root's alike as uid 0, and it never takes its own uid for a
// caller; caller rules then need `user`, so that root is a caller like any other.
static void check_callers_need_user(loader *ld) {
    pol_config *cfg = ld->cfg;
    if (!cfg->callers_in_rules || cfg->user != NULL || geteuid() != 0) {
        return;
    }
    for (size_t i = 0; i < cfg->num_rules; i++) {
        if (cfg->rules[i].callers != NULL) {
            pol_errors_add(
                ld->errs,
                "%s: rules[%zu].caller: caller rules need `user` when the gateway is started as root (it never "
                "takes its own uid for a caller, and would run as uid 0): add user = \"mtlsgw\"; or "
                "another service user",
                cfg->rules[i].where, i);
            return;
        }
    }
}

static void load_log(loader *ld, const config_setting_t *root) {
    pol_config *cfg = ld->cfg;
    cfg->log_level = GW_LOG_INFO;
    cfg->log_format = GW_LOG_TEXT;
    const char *access = "stderr";
    int bad = 0;
    const config_setting_t *g = pol_ld_get_aggregate(ld, root, "", "log", 1, &bad);
    if (g != NULL) {
        pol_settings_check_members(ld, g, "log", "log");
        const char *v;
        if (pol_ld_get_string(ld, g, "log", "level", &v) == 1 && !gw_log_parse_level(v, &cfg->log_level)) {
            pol_ld_problem(ld, config_setting_get_member(g, "level"), "log.level",
                           "expected \"error\", \"warn\", \"info\" or \"debug\", found \"%s\"", v);
        }
        if (pol_ld_get_string(ld, g, "log", "format", &v) == 1) {
            if (strcmp(v, "json") == 0) {
                cfg->log_format = GW_LOG_JSON;
            } else if (strcmp(v, "text") != 0) {
                pol_ld_problem(ld, config_setting_get_member(g, "format"), "log.format",
                               "expected \"text\" (logfmt) or \"json\", found \"%s\"", v);
            }
        }
        pol_ld_get_string(ld, g, "log", "access", &access);
    }
    if (strcmp(access, "stderr") == 0 || strcmp(access, "stdout") == 0 || strcmp(access, "off") == 0) {
        cfg->log_access = gw_xstrdup(access);
    } else {
        cfg->log_access = pol_ld_resolve_path(ld, access);
    }
}

static int is_loopback(const struct sockaddr *sa) {
    if (sa->sa_family == AF_INET) {
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    }
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

static void load_admin(loader *ld, const config_setting_t *root) {
    pol_config *cfg = ld->cfg;
    int bad = 0;
    const config_setting_t *g = pol_ld_get_aggregate(ld, root, "", "admin", 1, &bad);
    if (g == NULL) {
        return;
    }
    pol_settings_check_members(ld, g, "admin", "admin");
    static const char *const loopback[] = {"127.0.0.0/8", "::1/128"};
    int explicit_allow = config_setting_get_member(g, "allow") != NULL;
    pol_ld_cidr_list(ld, g, "admin.allow", loopback, 2, &cfg->admin_allow, &cfg->num_admin_allow);
    const char *v;
    if (pol_ld_get_string(ld, g, "admin", "address", &v) == 1) {
        if (!pol_parse_socket_address(v, &cfg->admin_addr, &cfg->admin_addr_len)) {
            pol_ld_problem(ld, config_setting_get_member(g, "address"), "admin.address",
                           "expected \"IPv4:port\" or \"[IPv6]:port\", found \"%s\"", v);
        } else if (!is_loopback((const struct sockaddr *)&cfg->admin_addr) && !explicit_allow) {
            // /metrics and /identities describe every identity and destination: reachable
            // from elsewhere only when the operator says from where.
            pol_ld_problem(ld, config_setting_get_member(g, "address"), "admin.address",
                           "%s is not a loopback address: set admin.allow to the networks that may read /metrics and "
                           "/identities (e.g. allow = [ \"10.0.0.0/8\" ];)",
                           v);
        } else {
            cfg->admin_address_text = gw_xstrdup(v);
        }
    }
}

static void users_problem(void *arg, const char *msg) {
    pol_errors_add(((loader *)arg)->errs, "%s", msg);
}

static void load_auth(loader *ld, const config_setting_t *root) {
    pol_config *cfg = ld->cfg;
    int bad = 0;
    const config_setting_t *g = pol_ld_get_aggregate(ld, root, "", "auth", 1, &bad);
    if (g == NULL) {
        return;
    }
    pol_settings_check_members(ld, g, "auth", "auth");
    const char *v;
    if (pol_ld_get_string(ld, g, "auth", "users_file", &v) != 1) {
        pol_ld_problem(ld, g, "auth.users_file",
                       "expected the path of a users file (lines made by: mtlsgw passwd NAME)");
        return;
    }
    cfg->users_file = pol_ld_resolve_path(ld, v);
    size_t before = pol_errors_count_fatal(ld->errs);
    cfg->users = pol_users_load(cfg->users_file, users_problem, ld);
    if (cfg->users == NULL && pol_errors_count_fatal(ld->errs) == before) {
        pol_ld_problem(ld, config_setting_get_member(g, "users_file"), "auth.users_file", "cannot load %s",
                       cfg->users_file);
    } else if (cfg->users != NULL && cfg->users->num_users == 0) {
        pol_ld_problem(ld, config_setting_get_member(g, "users_file"), "auth.users_file",
                       "%s has no users: nobody could use the proxy", cfg->users_file);
    }
    struct stat st;
    char msg[PATH_MAX * 2 + 300];
    if (cfg->users != NULL && stat(cfg->users_file, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO))) {
        pol_ld_problem(ld, config_setting_get_member(g, "users_file"), "auth.users_file",
                       "warning: %s has mode %04o: readable by others; chmod 600 it", cfg->users_file,
                       (unsigned)(st.st_mode & 07777));
    } else if (cfg->users != NULL && gw_file_writable_problem("users file", cfg->users_file, msg, sizeof(msg))) {
        pol_ld_problem(ld, config_setting_get_member(g, "users_file"), "auth.users_file", "warning: %s", msg);
    }
}

pol_config *pol_config_load(const char *path, pol_errors *errs) {
    config_t lc;
    config_init(&lc);
    if (!config_read_file(&lc, path)) {
        if (config_error_type(&lc) == CONFIG_ERR_FILE_IO) {
            pol_errors_add(errs, "%s:0: cannot read the file: %m", path);
        } else {
            pol_errors_add(errs, "%s:%d: syntax error: %s", config_error_file(&lc) ? config_error_file(&lc) : path,
                           config_error_line(&lc), config_error_text(&lc));
        }
        config_destroy(&lc);
        return NULL;
    }
    pol_config *cfg = gw_xcalloc(1, sizeof(*cfg));
    atomic_init(&cfg->refs, 1);
    cfg->path = gw_xstrdup(path);
    char *slash = strrchr(cfg->path, '/');
    cfg->dir = slash ? gw_xstrndup(cfg->path, (size_t)(slash - cfg->path)) : gw_xstrdup(".");
    if (cfg->dir[0] == '\0') {
        free(cfg->dir);
        cfg->dir = gw_xstrdup("/");
    }
    loader ld = {cfg, errs, path, -1, -1};
    const config_setting_t *root = config_root_setting(&lc);
    size_t before = pol_errors_count_fatal(errs);
    pol_settings_check_members(&ld, root, "", "");
    pol_settings_read_ints(&ld, root, "", "", cfg);
    pol_ld_listeners(&ld, root);
    load_resolver(&ld, root);
    // Before the identities: a token's signer runs as the user the gateway will run as.
    const char *user;
    if (pol_ld_get_string(&ld, root, "", "user", &user) == 1) {
        struct passwd *pw = user[0] ? getpwnam(user) : NULL;
        if (user[0] == '\0') {
            pol_ld_problem(&ld, config_setting_get_member(root, "user"), "user", "expected a user name to run as");
        } else if (pw == NULL) {
            // Found now, so that `check` says it, not a failed start as root.
            pol_ld_problem(&ld, config_setting_get_member(root, "user"), "user", "no such user \"%s\" on this system",
                           user);
        } else {
            cfg->user = gw_xstrdup(user);
            ld.user_uid = (int)pw->pw_uid;
            ld.user_gid = (int)pw->pw_gid;
        }
    }
    size_t before_ids = pol_errors_count_fatal(errs);
    pol_ld_identities(&ld, root);
    pol_ld_via_defaults(&ld, root);
    load_rules(&ld, root, pol_errors_count_fatal(errs) != before_ids);
    cfg->rule_stats = gw_xcalloc(cfg->num_rules + 1, sizeof(*cfg->rule_stats));
    for (size_t i = 0; i < cfg->num_rules; i++) {
        pthread_mutex_init(&cfg->rule_stats[i].lock, NULL);
        cfg->rules[i].stats = &cfg->rule_stats[i];
    }
    load_limits(&ld, root);
    if (cfg->limits.max_connections_per_client == 0) {
        cfg->limits.max_connections_per_client = (cfg->limits.max_connections + 3) / 4;
    }
    load_allow(&ld, root);
    load_deny_addresses(&ld, root);
    check_callers_need_user(&ld);
    load_log(&ld, root);
    load_admin(&ld, root);
    if (!pol_config_load_local_addresses(cfg)) {
        pol_errors_add(errs, "%s:0: cannot list this host's addresses (getifaddrs: %m)", path);
    }
    load_auth(&ld, root);
    const config_setting_t *mark = config_setting_get_member(root, "upstream_mark");
    if (mark != NULL) {
        long long v = config_setting_type(mark) == CONFIG_TYPE_INT64 ? config_setting_get_int64(mark)
                      : config_setting_type(mark) == CONFIG_TYPE_INT ? config_setting_get_int(mark)
                                                                     : -1;
        if (v < 0 || v > 0xffffffffLL) {
            pol_ld_problem(&ld, mark, "upstream_mark", "expected a mark from 0 (none) to 0xffffffff, e.g. 0x4d47");
        } else {
            cfg->upstream_mark = (uint32_t)v;
        }
    }
    config_destroy(&lc);
    char msg[PATH_MAX * 2 + 300];
    if (gw_file_writable_problem("config file", path, msg, sizeof(msg))) {
        pol_errors_add(errs, "%s:1: warning: %s", path, msg);
    }
    if (pol_errors_count_fatal(errs) != before) {
        pol_config_unref(cfg);
        return NULL;
    }
    cfg->generation = atomic_fetch_add(&g_generation, 1) + 1;
    return cfg;
}

pol_config *pol_config_ref(pol_config *cfg) {
    atomic_fetch_add(&cfg->refs, 1);
    return cfg;
}

static int (*g_retirer)(pol_config *cfg);

void pol_config_set_retirer(int (*retire)(pol_config *cfg)) {
    g_retirer = retire;
}

void pol_config_unref(pol_config *cfg) {
    if (cfg == NULL || atomic_fetch_sub(&cfg->refs, 1) != 1) {
        return;
    }
    if (g_retirer != NULL && g_retirer(cfg)) {
        return;  // freed elsewhere (the supervisor), never on the thread that let it go
    }
    pol_config_free(cfg);
}

void pol_config_free(pol_config *cfg) {
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        free(cfg->listeners[i].name);
        free(cfg->listeners[i].address_text);
        free(cfg->listeners[i].forward_host);
        free(cfg->listeners[i].unix_path);
    }
    free(cfg->listeners);
    free(cfg->resolver.servers_csv);
    for (size_t i = 0; i < cfg->resolver.num_hosts; i++) {
        free(cfg->resolver.hosts[i].name);
    }
    free(cfg->resolver.hosts);
    for (size_t i = 0; i < cfg->num_identities; i++) {
        gw_identity_free(cfg->identities[i]);
    }
    free(cfg->identities);
    for (size_t i = 0; i < cfg->num_acme; i++) {
        pol_acme_free(&cfg->acme[i]);
    }
    free(cfg->acme);
    for (size_t i = 0; i < cfg->num_rules; i++) {
        free(cfg->rules[i].match_text);
        free(cfg->rules[i].upstream_host);
        free(cfg->rules[i].server_name);
        free(cfg->rules[i].where);
        free(cfg->rules[i].listeners_text);
        pol_callers_free(cfg->rules[i].callers);
        free(cfg->rules[i].server_uri);
        free(cfg->rules[i].identities);
        pol_via_free(cfg->rules[i].via);
    }
    free(cfg->rules);
    for (size_t i = 0; cfg->rule_stats != NULL && i < cfg->num_rules; i++) {
        pthread_mutex_destroy(&cfg->rule_stats[i].lock);
    }
    free(cfg->rule_stats);
    pol_index_free(cfg->index);
    for (size_t i = 0; i < cfg->num_allow; i++) {
        free(cfg->allow[i].text);
    }
    free(cfg->allow);
    for (size_t i = 0; i < cfg->num_deny_addresses; i++) {
        free(cfg->deny_addresses[i].text);
    }
    free(cfg->deny_addresses);
    free(cfg->local_addresses);
    for (size_t i = 0; i < cfg->num_admin_allow; i++) {
        free(cfg->admin_allow[i].text);
    }
    free(cfg->admin_allow);
    free(cfg->users_file);
    pol_users_free(cfg->users);
    free(cfg->admin_address_text);
    free(cfg->log_access);
    free(cfg->user);
    free(cfg->path);
    free(cfg->dir);
    free(cfg);
}

int pol_rule_uses_identity(const pol_rule *r, const gw_identity *id) {
    for (size_t i = 0; i < r->num_identities; i++) {
        if (r->identities[i] == id) {
            return 1;
        }
    }
    return 0;
}

const pol_rule *pol_config_lookup(const pol_config *cfg, const pol_dest *d, uint32_t caller, int listener) {
    long i = pol_index_lookup(cfg->index, d, caller, listener);
    return i < 0 ? NULL : &cfg->rules[i];
}

static int same_string(const char *a, const char *b) {
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

int pol_config_resolver_equal(const pol_config *a, const pol_config *b) {
    if (!same_string(a->resolver.servers_csv, b->resolver.servers_csv) ||
        a->resolver.timeout_ms != b->resolver.timeout_ms || a->resolver.tries != b->resolver.tries ||
        a->resolver.cache_max_ttl != b->resolver.cache_max_ttl || a->resolver.num_hosts != b->resolver.num_hosts) {
        return 0;
    }
    for (size_t i = 0; i < a->resolver.num_hosts; i++) {
        const pol_host_entry *x = &a->resolver.hosts[i], *y = &b->resolver.hosts[i];
        if (strcmp(x->name, y->name) != 0 || x->family != y->family || memcmp(x->addr, y->addr, 16) != 0) {
            return 0;
        }
    }
    return 1;
}
