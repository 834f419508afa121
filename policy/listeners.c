// listeners: the `listen` list. TCP listeners ("IP:port") and UNIX-socket listeners
// ("unix:PATH" with mode, owner, group); proxy protocols or a fixed forward destination.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "gateway/base/strbuf.h"
#include "gateway/base/xalloc.h"
#include "gateway/proto/http.h"
#include "policy/callers.h"
#include "policy/loader.h"
#include "policy/settings.h"

static const char *file_kind(mode_t m) {
    if (S_ISREG(m))
        return "regular file";
    if (S_ISDIR(m))
        return "directory";
    if (S_ISLNK(m))
        return "symbolic link";
    if (S_ISFIFO(m))
        return "FIFO";
    if (S_ISCHR(m) || S_ISBLK(m))
        return "device";
    return "file that is not a socket";
}

// load_unix_address fills |l| from "unix:PATH" (|address|) and the mode/owner/group of |g|.
static void load_unix_address(loader *ld, const config_setting_t *g, const char *prefix, pol_listener *l,
                              const char *address) {
    char path[96];
    pol_ld_setting_path(path, sizeof(path), prefix, "address");
    const config_setting_t *at = config_setting_get_member(g, "address");
    const char *p = address + 5;
    if (p[0] == '\0' || p[0] == '@') {
        pol_ld_problem(ld, at, path,
                       "expected \"unix:/path/to/socket\" (abstract names are not supported: "
                       "they have no permissions), found \"%s\"",
                       address);
        return;
    }
    l->unix_path = pol_ld_resolve_path(ld, p);
    struct sockaddr_un *un = (struct sockaddr_un *)&l->addr;
    if (l->unix_path == NULL || strlen(l->unix_path) >= sizeof(un->sun_path)) {
        pol_ld_problem(ld, at, path, "the socket path is longer than %zu bytes, the most a UNIX socket takes",
                       sizeof(un->sun_path) - 1);
        return;
    }
    for (size_t j = 0; j + 1 < ld->cfg->num_listeners; j++) {
        if (ld->cfg->listeners[j].unix_path != NULL && strcmp(ld->cfg->listeners[j].unix_path, l->unix_path) == 0) {
            pol_ld_problem(ld, at, path, "%s is already the socket of listen[%zu]", l->unix_path, j);
        }
    }
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, l->unix_path, strlen(l->unix_path) + 1);
    l->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(l->unix_path) + 1);
    struct stat st;
    if (lstat(l->unix_path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
        pol_ld_problem(ld, at, path, "%s is a %s; only a stale socket there is replaced", l->unix_path,
                       file_kind(st.st_mode));
    }
    const char *v;
    l->unix_mode = 0660;
    l->unix_owner = l->unix_group = GW_CALLER_NONE;
    if (pol_ld_get_string(ld, g, prefix, "mode", &v) == 1) {
        char *end;
        unsigned long m = strtoul(v, &end, 8);
        if (v[0] == '\0' || *end != '\0' || m > 0777 || strspn(v, "01234567") != strlen(v)) {
            pol_ld_setting_path(path, sizeof(path), prefix, "mode");
            pol_ld_problem(ld, config_setting_get_member(g, "mode"), path,
                           "expected octal permissions like \"0660\", found \"%s\"", v);
        } else {
            l->unix_mode = (unsigned)m;
            if (m & 0006) {
                pol_ld_setting_path(path, sizeof(path), prefix, "mode");
                pol_ld_problem(ld, config_setting_get_member(g, "mode"), path,
                               "warning: mode \"%s\" lets every local user connect", v);
            }
        }
    }
    if (pol_ld_get_string(ld, g, prefix, "owner", &v) == 1 && !pol_caller_parse(v, &l->unix_owner)) {
        pol_ld_setting_path(path, sizeof(path), prefix, "owner");
        pol_ld_problem(ld, config_setting_get_member(g, "owner"), path, "no user named \"%s\" on this system", v);
    }
    if (pol_ld_get_string(ld, g, prefix, "group", &v) == 1 && !pol_group_parse(v, &l->unix_group)) {
        pol_ld_setting_path(path, sizeof(path), prefix, "group");
        pol_ld_problem(ld, config_setting_get_member(g, "group"), path, "no group named \"%s\" on this system", v);
    }
}

// load_transparent reads `transparent` and `sniff` of listener |g|. |other_kind|: it also
// names protocols or a forward destination, which a transparent listener has neither of.
static void load_transparent(loader *ld, const config_setting_t *g, const char *prefix, pol_listener *l,
                             int other_kind) {
    char path[96];
    const config_setting_t *tr = config_setting_get_member(g, "transparent");
    if (tr != NULL) {
        pol_ld_setting_path(path, sizeof(path), prefix, "transparent");
        if (config_setting_type(tr) != CONFIG_TYPE_BOOL) {
            pol_ld_problem(ld, tr, path, "expected true or false");
        } else if (config_setting_get_bool(tr)) {
            l->transparent = 1;
            if (other_kind) {
                pol_ld_problem(ld, tr, path,
                               "a transparent listener takes the destination from the connection: "
                               "remove protocols and forward");
            } else if (l->unix_path != NULL) {
                pol_ld_problem(ld, tr, path, "only for an IP:port listener (netfilter redirects TCP)");
            }
            l->protocols = 0;
        }
    }
    const config_setting_t *sn = config_setting_get_member(g, "sniff");
    if (sn == NULL) {
        return;
    }
    pol_ld_setting_path(path, sizeof(path), prefix, "sniff");
    int t = config_setting_type(sn);
    if (!l->transparent) {
        pol_ld_problem(ld, sn, path, "only for a transparent listener (transparent = true)");
    } else if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) {
        pol_ld_problem(ld, sn, path, "expected an array like [\"http\"]");
    }
    for (int j = 0; t != CONFIG_TYPE_STRING && j < config_setting_length(sn); j++) {
        const config_setting_t *e = config_setting_get_elem(sn, (unsigned)j);
        const char *v = config_setting_type(e) == CONFIG_TYPE_STRING ? config_setting_get_string(e) : "";
        if (strcmp(v, "http") == 0) {
            l->sniff |= POL_SNIFF_HTTP;
        } else {
            pol_ld_problem(ld, e, path, "expected \"http\" (the only protocol sniffed), found \"%s\"", v);
        }
    }
}

void pol_ld_listeners(loader *ld, const config_setting_t *root) {
    int bad = 0;
    const config_setting_t *list = pol_ld_get_aggregate(ld, root, "", "listen", 0, &bad);
    if (list == NULL) {
        if (!bad) {
            pol_ld_problem(ld, root, "listen",
                           "at least one listener is required, e.g. listen = ( { name = "
                           "\"proxy\"; address = \"127.0.0.1:1080\"; } );");
        }
        return;
    }
    int n = config_setting_length(list);
    if (n == 0) {
        pol_ld_problem(ld, list, "listen", "at least one listener is required");
        return;
    }
    pol_config *cfg = ld->cfg;
    cfg->listeners = gw_xcalloc((size_t)n, sizeof(*cfg->listeners));
    for (int i = 0; i < n; i++) {
        const config_setting_t *g = config_setting_get_elem(list, (unsigned)i);
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "listen[%d]", i);
        if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
            pol_ld_problem(ld, g, prefix, "expected a group { name = ...; address = ...; }");
            continue;
        }
        pol_settings_check_members(ld, g, prefix, "listen[]");
        pol_listener *l = &cfg->listeners[cfg->num_listeners++];
        const char *name = NULL, *address = NULL, *forward = NULL;
        char path[96];
        if (pol_ld_get_string(ld, g, prefix, "name", &name) == 0) {
            pol_ld_setting_path(path, sizeof(path), prefix, "name");
            pol_ld_problem(ld, g, path, "required: a name for logs and metrics, e.g. \"proxy\"");
        }
        if (name != NULL) {
            for (size_t j = 0; j + 1 < cfg->num_listeners; j++) {
                if (cfg->listeners[j].name && strcmp(cfg->listeners[j].name, name) == 0) {
                    pol_ld_setting_path(path, sizeof(path), prefix, "name");
                    pol_ld_problem(ld, g, path, "\"%s\" is already the name of listen[%zu]", name, j);
                }
            }
            l->name = gw_xstrdup(name);
        }
        pol_ld_setting_path(path, sizeof(path), prefix, "address");
        int r = pol_ld_get_string(ld, g, prefix, "address", &address);
        if (r == 0) {
            pol_ld_problem(ld, g, path, "required: \"IP:port\" or \"unix:PATH\", e.g. \"127.0.0.1:1080\"");
        } else if (r == 1 && strncmp(address, "unix:", 5) == 0) {
            load_unix_address(ld, g, prefix, l, address);
            l->address_text = gw_xstrdup(address);
        } else if (r == 1) {
            static const char *const unix_only[] = {"mode", "owner", "group"};
            for (size_t k = 0; k < 3; k++) {
                const config_setting_t *u = config_setting_get_member(g, unix_only[k]);
                if (u != NULL) {
                    pol_ld_setting_path(path, sizeof(path), prefix, unix_only[k]);
                    pol_ld_problem(ld, u, path, "only for a UNIX-socket listener (address = \"unix:PATH\")");
                }
            }
            pol_ld_setting_path(path, sizeof(path), prefix, "address");
            if (!pol_parse_socket_address(address, &l->addr, &l->addr_len)) {
                pol_ld_problem(ld, config_setting_get_member(g, "address"), path,
                               "expected \"IPv4:port\", \"[IPv6]:port\" or \"unix:PATH\", found \"%s\"", address);
            }
            l->address_text = gw_xstrdup(address);
        }
        r = pol_ld_get_string(ld, g, prefix, "forward", &forward);
        if (r == 1) {
            char host[256];
            pol_ld_setting_path(path, sizeof(path), prefix, "forward");
            if (!gw_http_parse_authority(forward, strlen(forward), 0, host, &l->forward_port)) {
                pol_ld_problem(ld, config_setting_get_member(g, "forward"), path,
                               "expected \"host:port\" of the fixed destination, found \"%s\"", forward);
            } else {
                l->forward_host = gw_xstrdup(host);
            }
        }
        const config_setting_t *protos = config_setting_get_member(g, "protocols");
        pol_ld_setting_path(path, sizeof(path), prefix, "protocols");
        if (protos != NULL && forward != NULL) {
            pol_ld_problem(ld, protos, path, "a forward listener speaks no proxy protocol; remove it");
        } else if (protos != NULL) {
            int t = config_setting_type(protos);
            if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) {
                pol_ld_problem(ld, protos, path, "expected an array like [\"socks5\", \"socks4\", \"http\"]");
            }
            for (int j = 0; j < config_setting_length(protos); j++) {
                const config_setting_t *e = config_setting_get_elem(protos, (unsigned)j);
                const char *v = config_setting_type(e) == CONFIG_TYPE_STRING ? config_setting_get_string(e) : "";
                if (strcmp(v, "socks5") == 0) {
                    l->protocols |= POL_PROTO_SOCKS5;
                } else if (strcmp(v, "socks4") == 0) {
                    l->protocols |= POL_PROTO_SOCKS4;
                } else if (strcmp(v, "http") == 0) {
                    l->protocols |= POL_PROTO_HTTP;
                } else {
                    pol_ld_problem(ld, e, path, "expected \"socks5\", \"socks4\" or \"http\", found \"%s\"", v);
                }
            }
            if (l->protocols == 0 && config_setting_length(protos) == 0) {
                pol_ld_problem(ld, protos, path, "expected at least one of \"socks5\", \"socks4\", \"http\"");
            }
        } else if (forward == NULL) {
            l->protocols = POL_PROTO_SOCKS5 | POL_PROTO_SOCKS4 | POL_PROTO_HTTP;
        }
        load_transparent(ld, g, prefix, l, protos != NULL || forward != NULL);
    }
}

// pol_ld_rule_listeners reads a rule's `listener`: one listener name or a list of them; the
// rule then serves only clients that came in there (a UNIX socket folder per consumer,
// say). Listeners are loaded before rules.
void pol_ld_rule_listeners(loader *ld, const config_setting_t *g, const char *prefix, uint64_t *out_mask,
                           char **out_text) {
    const config_setting_t *s = config_setting_get_member(g, "listener");
    if (s == NULL) {
        return;
    }
    char path[96];
    pol_ld_setting_path(path, sizeof(path), prefix, "listener");
    int t = config_setting_type(s);
    int n = t == CONFIG_TYPE_STRING                             ? 1
            : (t == CONFIG_TYPE_ARRAY || t == CONFIG_TYPE_LIST) ? config_setting_length(s)
                                                                : -1;
    if (n <= 0) {
        pol_ld_problem(ld, s, path, "expected the name of a listener, or a list of them");
        return;
    }
    pol_config *cfg = ld->cfg;
    gw_strbuf text = {0};
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = t == CONFIG_TYPE_STRING ? s : config_setting_get_elem(s, (unsigned)i);
        const char *name = config_setting_type(e) == CONFIG_TYPE_STRING ? config_setting_get_string(e) : NULL;
        size_t found = cfg->num_listeners;
        for (size_t j = 0; name != NULL && j < cfg->num_listeners; j++) {
            if (strcmp(cfg->listeners[j].name, name) == 0) {
                found = j;
                break;
            }
        }
        if (found == cfg->num_listeners) {
            gw_strbuf names = {0};
            for (size_t j = 0; j < cfg->num_listeners; j++) {
                gw_strbuf_printf(&names, "%s\"%s\"", j ? ", " : "", cfg->listeners[j].name);
            }
            pol_ld_problem(ld, e, path, "no listener named \"%s\" (the listeners: %s)", name ? name : "?",
                           names.p ? names.p : "none");
            free(names.p);
            continue;
        }
        if (found >= 64) {
            pol_ld_problem(ld, e, path, "a rule can name only the first 64 listeners; \"%s\" is number %zu", name,
                           found + 1);
            continue;
        }
        *out_mask |= 1ull << found;
        gw_strbuf_printf(&text, "%s%s", i ? ", " : "", name);
    }
    *out_text = text.failed ? NULL : text.p;
    if (text.failed) {
        free(text.p);
    }
}
