// hostname: what a host name may be, in the two places it is judged. On the wire (SOCKS,
// CONNECT, absolute URIs) a name is refused when it holds a byte no host name or IP literal
// can hold; the policy then normalises it and requires a DNS name (labels of letters,
// digits, '-' and '_', at most 63 bytes each, 253 in all) or an IP literal.
#ifndef MTLSGW_HOSTNAME_H
#define MTLSGW_HOSTNAME_H

#include <stddef.h>

// gw_host_is_valid says whether |name| (|len| bytes) may be a DNS host name or IP literal:
// printable ASCII without spaces, '/', '\\', '@', '%' or control bytes, 1..253 bytes.
int gw_host_is_valid(const char *name, size_t len);

// gw_host_is_dns_name says whether the NUL-terminated, normalised |s| (lower case, no
// trailing dot) is a DNS host name.
int gw_host_is_dns_name(const char *s);

#endif
