// libFuzzer harness: `match` pattern parsing and destination normalisation. A pattern
// that parses has a sane port range and prefix, and a pattern for an exact host matches
// that host.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "policy/match.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char s[600];
    if (size >= sizeof(s)) {
        return 0;
    }
    memcpy(s, data, size);
    s[size] = '\0';
    pol_match m;
    char err[300];
    if (pol_match_parse(s, &m, err, sizeof(err))) {
        if (m.port_lo < 1 || m.port_lo > m.port_hi) {
            abort();
        }
        if (m.kind == POL_MATCH_CIDR && (m.prefix_len < 0 || m.prefix_len > (m.family == AF_INET ? 32 : 128))) {
            abort();
        }
        if (m.kind == POL_MATCH_HOST) {
            pol_dest d;
            if (pol_dest_init(&d, m.host, m.port_lo) && !pol_match_test(&m, &d)) {
                abort();
            }
        }
    } else if (strnlen(err, sizeof(err)) == 0) {
        abort();  // a refusal always says what was expected
    }
    pol_dest d;
    if (pol_dest_init(&d, s, 443)) {
        pol_match_test(&m, &d);
    }
    return 0;
}
