// libFuzzer harness: the SOCKS5 greeting, RFC 1929 and request parsers and the SOCKS4/4a
// parser on arbitrary bytes. Besides memory errors it checks what the relay relies on:
// a parser never claims more bytes than it was given, a parsed host is a valid,
// NUL-terminated name, and a message parses the same whole as with one more byte after it.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/proto/socks.h"

static void check_request(gw_socks_status st, size_t used, size_t len, const gw_socks_request *r) {
    if (st == GW_SOCKS_OK || st == GW_SOCKS_ERR_COMMAND) {
        if (used == 0 || used > len) {
            abort();
        }
    }
    if (st == GW_SOCKS_OK) {
        size_t hl = strnlen(r->host, sizeof(r->host));
        if (hl == sizeof(r->host) || !gw_host_is_valid(r->host, hl)) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t used = 0;
    uint32_t methods = 0;
    gw_socks_status st = gw_socks5_parse_greeting(data, size, &used, &methods);
    if (st == GW_SOCKS_OK && (used == 0 || used > size)) {
        abort();
    }

    char user[256], pass[256];
    st = gw_socks5_parse_userpass(data, size, &used, user, pass);
    if (st == GW_SOCKS_OK && (used > size || strnlen(user, 256) == 256 || strnlen(pass, 256) == 256)) {
        abort();
    }

    gw_socks_request r, r2;
    memset(&r, 0, sizeof(r));
    st = gw_socks5_parse_request(data, size, &used, &r);
    check_request(st, used, size, &r);
    if (st == GW_SOCKS_OK && used < size) {
        // The same message followed by anything: same result, same length.
        size_t used2 = 0;
        if (gw_socks5_parse_request(data, used, &used2, &r2) != GW_SOCKS_OK || used2 != used ||
            strcmp(r.host, r2.host) != 0 || r.port != r2.port) {
            abort();
        }
    }
    if (st == GW_SOCKS_OK && used > 1) {
        size_t used2 = 0;
        if (gw_socks5_parse_request(data, used - 1, &used2, &r2) != GW_SOCKS_NEED_MORE) {
            abort();  // a truncated message is never complete
        }
    }

    char user4[256];
    memset(&r, 0, sizeof(r));
    st = gw_socks4_parse_request(data, size, &used, &r, user4);
    check_request(st, used, size, &r);
    if (st == GW_SOCKS_OK) {
        size_t used2 = 0;
        if (gw_socks4_parse_request(data, used, &used2, &r2, user4) != GW_SOCKS_OK || used2 != used) {
            abort();
        }
    }

    // A parent proxy's reply, as the gateway reads it: never longer than what it has, and
    // the same length once whole.
    uint8_t rep = 0, rep2 = 0;
    st = gw_socks5_parse_reply(data, size, &used, &rep);
    if (st == GW_SOCKS_OK) {
        size_t used2 = 0;
        if (used > size || used > 4 + 1 + 255 + 2 || gw_socks5_parse_reply(data, used, &used2, &rep2) != GW_SOCKS_OK ||
            used2 != used || rep2 != rep ||
            gw_socks5_parse_reply(data, used - 1, &used2, &rep2) != GW_SOCKS_NEED_MORE) {
            abort();
        }
    }

    uint8_t reply[32];
    if (gw_socks5_encode_reply(data[0 % (size ? size : 1)], NULL, reply) > sizeof(reply)) {
        abort();
    }
    return 0;
}
