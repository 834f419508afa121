// match: the `match` patterns of rules, and destination normalisation. Pure functions.
//
//   host | *.suffix | * | IPv4 | IPv4/len | IPv6 | IPv6/len, then optionally :port or
//   :lo-hi. IPv6 with a port goes in brackets: [2001:db8::/32]:443.
#ifndef MTLSGW_MATCH_H
#define MTLSGW_MATCH_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    POL_MATCH_ANY = 0,  // "*"
    POL_MATCH_HOST,     // exact host name
    POL_MATCH_SUFFIX,   // "*.suffix": any name below suffix, not suffix itself
    POL_MATCH_CIDR,     // IP address or prefix (an address is a full-length prefix)
} pol_match_kind;

typedef struct {
    pol_match_kind kind;
    char host[256];    // HOST/SUFFIX: lower case, no trailing dot, no "*."
    int family;        // CIDR: AF_INET or AF_INET6
    uint8_t addr[16];  // CIDR: network address (host bits zero)
    int prefix_len;
    uint16_t port_lo, port_hi;  // 1..65535 when no port is given
} pol_match;

// pol_match_parse parses |s|. On failure returns 0 and writes what was expected into
// |err| (|err_len| bytes).
int pol_match_parse(const char *s, pol_match *out, char *err, size_t err_len);

// A destination, normalised: host lower case without trailing dot, or an IP literal.
typedef struct {
    char host[256];
    int family;  // 0 for a name, AF_INET/AF_INET6 for an IP literal
    uint8_t addr[16];
    uint16_t port;
} pol_dest;

// pol_dest_init normalises |host| (a name or IP literal, IPv6 without brackets) and
// |port| into |out|. The text is read once, as the resolver will read it: one trailing dot
// is dropped before the address check ("127.0.0.1." is 127.0.0.1), and a name whose last
// label is numeric (127.000.000.001, 127.1, 2130706433) is refused, since resolvers read
// such text as an address. Returns 0 if |host| is not a valid name or literal.
int pol_dest_init(pol_dest *out, const char *host, uint16_t port);

// pol_dest_problem says, for a |host| that pol_dest_init refused, why (words that
// follow the host in a message).
const char *pol_dest_problem(const char *host);

// pol_name_is_numeric says whether the last label of |name| is all digits.
int pol_name_is_numeric(const char *name);

// pol_match_test says whether |m| matches |d| (a linear check; lookups use rules.c).
int pol_match_test(const pol_match *m, const pol_dest *d);

// pol_prefix_mask zeroes the bits of |addr| (|len| bytes) beyond |prefix_len|.
void pol_prefix_mask(uint8_t *addr, size_t len, int prefix_len);

#endif
