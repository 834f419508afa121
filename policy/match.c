#include "policy/match.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/proto/hostname.h"
#include "gateway/proto/http.h"

void pol_prefix_mask(uint8_t *addr, size_t len, int prefix_len) {
    for (size_t i = 0; i < len; i++) {
        int bits = prefix_len - (int)i * 8;
        if (bits >= 8) {
            continue;
        }
        addr[i] = bits <= 0 ? 0 : (uint8_t)(addr[i] & (0xff << (8 - bits)));
    }
}

static void normalise_name(char *dst, const char *src, size_t len) {
    for (size_t i = 0; i < len; i++) {
        dst[i] = (char)tolower((unsigned char)src[i]);
    }
    if (len > 0 && dst[len - 1] == '.') {
        len--;
    }
    dst[len] = '\0';
}

static int parse_ports(const char *s, pol_match *out, char *err, size_t err_len) {
    const char *dash = strchr(s, '-');
    if (dash == NULL) {
        if (!gw_parse_port(s, strlen(s), &out->port_lo)) {
            snprintf(err, err_len, "a port from 1 to 65535 after ':', not \"%s\"", s);
            return 0;
        }
        out->port_hi = out->port_lo;
        return 1;
    }
    if (!gw_parse_port(s, (size_t)(dash - s), &out->port_lo) ||
        !gw_parse_port(dash + 1, strlen(dash + 1), &out->port_hi) || out->port_lo > out->port_hi) {
        snprintf(err, err_len, "a port range lo-hi with 1 <= lo <= hi <= 65535, not \"%s\"", s);
        return 0;
    }
    return 1;
}

// parse_cidr parses "addr" or "addr/len" for |family|.
static int parse_cidr(const char *s, int family, pol_match *out, char *err, size_t err_len) {
    char buf[64];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (alen >= sizeof(buf)) {
        snprintf(err, err_len, "an IP address or CIDR");
        return 0;
    }
    memcpy(buf, s, alen);
    buf[alen] = '\0';
    if (inet_pton(family, buf, out->addr) != 1) {
        snprintf(err, err_len, "a valid %s address, not \"%s\"", family == AF_INET ? "IPv4" : "IPv6", buf);
        return 0;
    }
    int max = family == AF_INET ? 32 : 128;
    out->prefix_len = max;
    if (slash != NULL) {
        char *end;
        long v = strtol(slash + 1, &end, 10);
        if (slash[1] == '\0' || *end != '\0' || v < 0 || v > max || !isdigit((unsigned char)slash[1])) {
            snprintf(err, err_len, "a prefix length from 0 to %d after '/'", max);
            return 0;
        }
        out->prefix_len = (int)v;
    }
    uint8_t masked[16];
    memcpy(masked, out->addr, 16);
    size_t bytes = family == AF_INET ? 4 : 16;
    pol_prefix_mask(masked, bytes, out->prefix_len);
    if (memcmp(masked, out->addr, bytes) != 0) {
        char net[64];
        inet_ntop(family, masked, net, sizeof(net));
        snprintf(err, err_len, "a network address without host bits: did you mean %s/%d?", net, out->prefix_len);
        return 0;
    }
    out->family = family;
    out->kind = POL_MATCH_CIDR;
    return 1;
}

int pol_match_parse(const char *s, pol_match *out, char *err, size_t err_len) {
    memset(out, 0, sizeof(*out));
    out->port_lo = 1;
    out->port_hi = 65535;
    size_t len = strlen(s);
    if (len == 0 || len > 300) {
        snprintf(err, err_len, "a host, *.suffix, *, IP or CIDR, optionally with :port");
        return 0;
    }
    char host[320];
    const char *ports = NULL;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':')) {
            snprintf(err, err_len, "\"[IPv6]\" or \"[IPv6]:port\"");
            return 0;
        }
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = '\0';
        ports = close[1] == ':' ? close + 2 : NULL;
        if (!parse_cidr(host, AF_INET6, out, err, err_len)) {
            return 0;
        }
        return ports == NULL || parse_ports(ports, out, err, err_len);
    }
    const char *first = strchr(s, ':');
    if (first != NULL && strchr(first + 1, ':') != NULL) {
        return parse_cidr(s, AF_INET6, out, err, err_len);  // bare IPv6, no port
    }
    size_t hlen = first ? (size_t)(first - s) : len;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    if (first != NULL && !parse_ports(first + 1, out, err, err_len)) {
        return 0;
    }
    if (strcmp(host, "*") == 0) {
        out->kind = POL_MATCH_ANY;
        return 1;
    }
    unsigned char c0 = (unsigned char)host[0];
    if (isdigit(c0) && strspn(host, "0123456789./") == hlen) {
        return parse_cidr(host, AF_INET, out, err, err_len);
    }
    const char *name = host;
    out->kind = POL_MATCH_HOST;
    if (strncmp(host, "*.", 2) == 0) {
        out->kind = POL_MATCH_SUFFIX;
        name = host + 2;
    }
    char norm[256];
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen > 254) {
        snprintf(err, err_len, "a host name, not \"%s\"", host);
        return 0;
    }
    normalise_name(norm, name, nlen);
    if (pol_name_is_numeric(norm)) {
        snprintf(err, err_len,
                 "a host name or an IP address in dotted-quad form; \"%s\" ends in a numeric label, "
                 "which no name does (a destination like it is refused)",
                 host);
        return 0;
    }
    if (!gw_host_is_dns_name(norm)) {
        snprintf(err, err_len,
                 "a host name (letters, digits, '-', '_', dots; '*' only as a leading \"*.\"), "
                 "not \"%s\"",
                 host);
        return 0;
    }
    strcpy(out->host, norm);
    return 1;
}

int pol_name_is_numeric(const char *name) {
    const char *last = strrchr(name, '.');
    last = last ? last + 1 : name;
    return *last != '\0' && strspn(last, "0123456789") == strlen(last);
}

int pol_dest_init(pol_dest *out, const char *host, uint16_t port) {
    memset(out, 0, sizeof(*out));
    out->port = port;
    size_t len = strlen(host);
    if (len == 0 || len > 254) {
        return 0;
    }
    // One reading of the text, the resolver's: one trailing dot is the root, so
    // "127.0.0.1." is the address 127.0.0.1, for the rules as for the connect.
    char text[256];
    memcpy(text, host, len + 1);
    if (len > 1 && text[len - 1] == '.') {
        text[--len] = '\0';
    }
    if (inet_pton(AF_INET, text, out->addr) == 1) {
        out->family = AF_INET;
        strcpy(out->host, text);
        return 1;
    }
    if (inet_pton(AF_INET6, host, out->addr) == 1) {
        static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(out->addr, v4mapped, 12) == 0) {
            // ::ffff:a.b.c.d is the IPv4 address a.b.c.d: for rules, deny_addresses and
            // the log alike, so that an address form cannot pass an IPv4 rule.
            memmove(out->addr, out->addr + 12, 4);
            memset(out->addr + 4, 0, 12);
            out->family = AF_INET;
            inet_ntop(AF_INET, out->addr, out->host, sizeof(out->host));
            return 1;
        }
        out->family = AF_INET6;
        inet_ntop(AF_INET6, out->addr, out->host, sizeof(out->host));
        return 1;
    }
    normalise_name(out->host, text, len);
    // No top-level domain is numeric: a name that ends in digits is an address in some
    // other spelling (127.000.000.001, 2130706433, 127.1) that c-ares or libc would read
    // as one while a rule reads it as a name. Refused rather than guessed.
    return gw_host_is_dns_name(out->host) && !pol_name_is_numeric(out->host);
}

const char *pol_dest_problem(const char *host) {
    char text[256];
    size_t len = strlen(host);
    if (len == 0 || len > 254) {
        return "is not a valid host name or address";
    }
    memcpy(text, host, len + 1);
    if (len > 1 && text[len - 1] == '.') {
        text[len - 1] = '\0';
    }
    if (pol_name_is_numeric(text) && strchr(text, ':') == NULL) {
        return "ends in a numeric label: an address written other than as a.b.c.d is refused";
    }
    return "is not a valid host name or address";
}

int pol_match_test(const pol_match *m, const pol_dest *d) {
    if (d->port < m->port_lo || d->port > m->port_hi) {
        return 0;
    }
    switch (m->kind) {
        case POL_MATCH_ANY:
            return 1;
        case POL_MATCH_HOST:
            return d->family == 0 && strcmp(m->host, d->host) == 0;
        case POL_MATCH_SUFFIX: {
            size_t hl = strlen(d->host), sl = strlen(m->host);
            return d->family == 0 && hl > sl + 1 && d->host[hl - sl - 1] == '.' &&
                   strcmp(d->host + hl - sl, m->host) == 0;
        }
        case POL_MATCH_CIDR: {
            if (d->family != m->family) {
                return 0;
            }
            uint8_t a[16];
            memcpy(a, d->addr, 16);
            pol_prefix_mask(a, m->family == AF_INET ? 4 : 16, m->prefix_len);
            return memcmp(a, m->addr, m->family == AF_INET ? 4 : 16) == 0;
        }
    }
    return 0;
}
