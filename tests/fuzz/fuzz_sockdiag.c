// libFuzzer harness: the NETLINK_SOCK_DIAG reply parser (gateway/base/peer.c) on
// arbitrary datagrams. Besides memory errors it checks what caller rules rely on: an
// owner is only ever taken from a full socket (inode not 0) whose 4-tuple is exactly the
// one asked for, and a parse that finds nothing leaves the uid untouched.
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/base/peer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const uint8_t *data, size_t size, const struct sockaddr *client, const struct sockaddr *server) {
    uint8_t *copy = malloc(size ? size : 1);  // exactly |size| bytes: ASan sees any over-read
    memcpy(copy, data, size);
    uint32_t uid = 0xdeadbeef;
    int r = gw_sockdiag_parse(copy, size, 1, client, server, &uid);
    if (r != GW_SOCKDIAG_FOUND && uid != 0xdeadbeef) {
        abort();
    }
    if (r == GW_SOCKDIAG_FOUND) {
        struct inet_diag_msg m;
        if (size < NLMSG_HDRLEN + sizeof(m)) {
            abort();
        }
        memcpy(&m, copy + NLMSG_HDRLEN, sizeof(m));
        if (m.idiag_inode == 0 || m.idiag_uid != uid) {
            abort();
        }
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct sockaddr_in c4 = {.sin_family = AF_INET, .sin_port = htons(50388), .sin_addr.s_addr = htonl(0x7f000001)};
    struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = htons(39577), .sin_addr.s_addr = htonl(0x7f000001)};
    struct sockaddr_in6 c6 = {.sin6_family = AF_INET6, .sin6_port = htons(53306), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(47773), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    check(data, size, (struct sockaddr *)&c4, (struct sockaddr *)&s4);
    check(data, size, (struct sockaddr *)&c6, (struct sockaddr *)&s6);
    return 0;
}
