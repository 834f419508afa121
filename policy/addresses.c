// addresses: the questions asked of a snapshot about addresses: may this client use the
// proxy (allow) or the admin endpoint (admin.allow), may the gateway connect there
// (deny_addresses), and socket addresses as written in the config.
#include "gateway/base/xalloc.h"
#include "policy/config.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/proto/http.h"

int pol_parse_socket_address(const char *s, struct sockaddr_storage *out, socklen_t *out_len) {
    char host[256];
    uint16_t port;
    if (!gw_http_parse_authority(s, strlen(s), 0, host, &port)) {
        return 0;
    }
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *s4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        *out_len = sizeof(*s4);
        return 1;
    }
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        *out_len = sizeof(*s6);
        return 1;
    }
    return 0;
}

static int cidr_contains(const pol_cidr *c, int family, const uint8_t *addr) {
    if (c->family != family) {
        return 0;
    }
    size_t full = (size_t)c->prefix_len / 8;
    if (memcmp(c->addr, addr, full) != 0) {
        return 0;
    }
    int rest = c->prefix_len % 8;
    if (rest == 0) {
        return 1;
    }
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (addr[full] & mask) == (c->addr[full] & mask);
}

// unmap turns an IPv4-mapped IPv6 address into the IPv4 address it is.
static int unmap(int family, const uint8_t *addr, uint8_t out[16]) {
    static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memset(out, 0, 16);
    if (family == AF_INET6 && memcmp(addr, prefix, 12) == 0) {
        memcpy(out, addr + 12, 4);
        return AF_INET;
    }
    memcpy(out, addr, family == AF_INET ? 4 : 16);
    return family;
}

static int list_allows(const pol_cidr *list, size_t n, const struct sockaddr *sa) {
    uint8_t a[16];
    int family;
    if (sa->sa_family == AF_INET) {
        family = unmap(AF_INET, (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr, a);
    } else if (sa->sa_family == AF_INET6) {
        family = unmap(AF_INET6, (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr, a);
    } else {
        return sa->sa_family == AF_UNIX;
    }
    for (size_t i = 0; i < n; i++) {
        if (cidr_contains(&list[i], family, a)) {
            return 1;
        }
    }
    return 0;
}

int pol_config_allows(const pol_config *cfg, const struct sockaddr *sa) {
    return list_allows(cfg->allow, cfg->num_allow, sa);
}

int pol_config_admin_allows(const pol_config *cfg, const struct sockaddr *sa) {
    return list_allows(cfg->admin_allow, cfg->num_admin_allow, sa);
}

const pol_cidr *pol_config_denied_address(const pol_config *cfg, const pol_rule *r, int family, const uint8_t *addr) {
    static const pol_cidr unspecified[] = {{AF_INET, {0}, 32, "0.0.0.0"}, {AF_INET6, {0}, 128, "::"}};
    uint8_t a[16];
    family = unmap(family, addr, a);
    for (size_t i = 0; i < 2; i++) {
        if (cidr_contains(&unspecified[i], family, a)) {
            return &unspecified[i];  // Linux connects it to this host: never, whatever the list says
        }
    }
    if (r != NULL && r->upstream_is_literal && !cfg->deny_addresses_written) {
        return NULL;
    }
    for (size_t i = 0; i < cfg->num_deny_addresses; i++) {
        if (cidr_contains(&cfg->deny_addresses[i], family, a)) {
            return &cfg->deny_addresses[i];
        }
    }
    return NULL;
}

// sockaddr_parts reads the family (IPv4-mapped as IPv4), address and port of |sa|.
static int sockaddr_parts(const struct sockaddr *sa, uint8_t out[16], uint16_t *port) {
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        *port = ntohs(s4->sin_port);
        return unmap(AF_INET, (const uint8_t *)&s4->sin_addr, out);
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        *port = ntohs(s6->sin6_port);
        return unmap(AF_INET6, (const uint8_t *)&s6->sin6_addr, out);
    }
    return 0;
}

static int is_this_host(const pol_config *cfg, int family, const uint8_t *a) {
    static const uint8_t v6_loopback[16] = {[15] = 1};
    if ((family == AF_INET && a[0] == 127) || (family == AF_INET6 && memcmp(a, v6_loopback, 16) == 0)) {
        return 1;
    }
    for (size_t i = 0; i < cfg->num_local_addresses; i++) {
        if (cidr_contains(&cfg->local_addresses[i], family, a)) {
            return 1;
        }
    }
    return 0;
}

// listens_at says whether a socket bound to |bound| accepts connections to |a|:|port|.
static int listens_at(const pol_config *cfg, const struct sockaddr *bound, int family, const uint8_t *a,
                      uint16_t port) {
    uint8_t b[16];
    uint16_t bport;
    int bfamily = sockaddr_parts(bound, b, &bport);
    if (bfamily == 0 || bport != port) {
        return 0;
    }
    static const uint8_t any[16] = {0};
    if (memcmp(b, any, bfamily == AF_INET ? 4 : 16) == 0) {
        return is_this_host(cfg, family, a);  // a wildcard listener: every address of the host
    }
    return bfamily == family && memcmp(b, a, family == AF_INET ? 4 : 16) == 0;
}

const char *pol_config_own_address(const pol_config *cfg, int family, const uint8_t *addr, uint16_t port) {
    uint8_t a[16];
    family = unmap(family, addr, a);
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        const pol_listener *l = &cfg->listeners[i];
        if (l->unix_path == NULL && listens_at(cfg, (const struct sockaddr *)&l->addr, family, a, port)) {
            return l->name;
        }
    }
    if (cfg->admin_address_text != NULL && cfg->admin_addr.ss_family != AF_UNIX &&
        listens_at(cfg, (const struct sockaddr *)&cfg->admin_addr, family, a, port)) {
        return "admin";
    }
    return NULL;
}

int pol_config_load_local_addresses(pol_config *cfg) {
    struct ifaddrs *list;
    if (getifaddrs(&list) != 0) {
        return 0;
    }
    size_t n = 0;
    for (struct ifaddrs *i = list; i != NULL; i = i->ifa_next) {
        n += i->ifa_addr != NULL && (i->ifa_addr->sa_family == AF_INET || i->ifa_addr->sa_family == AF_INET6);
    }
    cfg->local_addresses = gw_xcalloc(n + 1, sizeof(*cfg->local_addresses));
    if (cfg->local_addresses == NULL) {
        freeifaddrs(list);
        return 0;
    }
    for (struct ifaddrs *i = list; i != NULL; i = i->ifa_next) {
        uint16_t port;
        if (i->ifa_addr == NULL || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6)) {
            continue;
        }
        pol_cidr *c = &cfg->local_addresses[cfg->num_local_addresses++];
        c->family = sockaddr_parts(i->ifa_addr, c->addr, &port);
        c->prefix_len = c->family == AF_INET ? 32 : 128;
    }
    freeifaddrs(list);
    return 1;
}
