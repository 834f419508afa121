// peer: the NETLINK_SOCK_DIAG reply parser fed replies recorded from this kernel (a
// client socket owned by uid 65534 over IPv4 and IPv6, a TIME_WAIT entry, "no such
// socket") and malformed ones; the request builder; the live lookup and SO_PEERCRED.
#include <arpa/inet.h>
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/base/peer.h"

// Recorded with gw_sockdiag_build/recv as uid 65534: seq 77, client 127.0.0.1:50388,
// server 127.0.0.1:39577, ESTABLISHED.
static const uint8_t v4_established[] = {
    0x74, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x4d, 0x00, 0x00, 0x00, 0x10, 0x7a, 0x00, 0x00, 0x02,
    0x01, 0x00, 0x00, 0xc4, 0xd4, 0x9a, 0x99, 0x7f, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7f, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x25, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xfe, 0xff, 0x00, 0x00, 0x1b,
    0xe4, 0x02, 0x00, 0x05, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x15, 0x00, 0x01, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x16, 0x00, 0x52, 0x00, 0x00, 0x00,
};
// seq 5, client [::1]:53306, server [::1]:47773, ESTABLISHED, uid 65534.
static const uint8_t v6_established[] = {
    0x74, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x40, 0x7a, 0x00, 0x00, 0x0a,
    0x01, 0x00, 0x00, 0xd0, 0x3a, 0xba, 0x9d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x27, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xfe, 0xff, 0x00, 0x00, 0x6c,
    0xe4, 0x02, 0x00, 0x05, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x15, 0x00, 0x01, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x16, 0x00, 0x12, 0x00, 0x00, 0x00,
};
// seq 6, the same 4-tuple after both ends closed: TIME_WAIT (state 6), uid reads 0.
static const uint8_t v6_time_wait[] = {
    0x58, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x40, 0x7a, 0x00, 0x00, 0x0a, 0x06,
    0x03, 0x00, 0xd0, 0x3a, 0xba, 0x9d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x27, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x5c, 0xea, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};
// seq 7, a client port with no socket: NLMSG_ERROR -ENOENT.
static const uint8_t enoent[] = {
    0x5c, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x40, 0x7a, 0x00, 0x00, 0xfe, 0xff, 0xff,
    0xff, 0x48, 0x00, 0x00, 0x00, 0x14, 0x00, 0x01, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x06,
    0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x01, 0xba, 0x9d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
};

static struct sockaddr_in v4(const char *ip, uint16_t port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static struct sockaddr_in6 v6(const char *ip, uint16_t port) {
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    inet_pton(AF_INET6, ip, &a.sin6_addr);
    return a;
}

static int parse(const uint8_t *b, size_t n, uint32_t seq, const void *client, const void *server, uint32_t *uid) {
    return gw_sockdiag_parse(b, n, seq, (const struct sockaddr *)client, (const struct sockaddr *)server, uid);
}

static void recorded_replies(void **state) {
    struct sockaddr_in c4 = v4("127.0.0.1", 50388), s4 = v4("127.0.0.1", 39577);
    uint32_t uid = 1;
    assert_int_equal(parse(v4_established, sizeof(v4_established), 77, &c4, &s4, &uid), GW_SOCKDIAG_FOUND);
    assert_int_equal(uid, 65534);
    // The same client seen through an IPv4-mapped address is looked up as IPv4.
    struct sockaddr_in6 m4 = v6("::ffff:127.0.0.1", 50388), ms4 = v6("::ffff:127.0.0.1", 39577);
    uid = 1;
    assert_int_equal(parse(v4_established, sizeof(v4_established), 77, &m4, &ms4, &uid), GW_SOCKDIAG_FOUND);
    assert_int_equal(uid, 65534);
    struct sockaddr_in6 c6 = v6("::1", 53306), s6 = v6("::1", 47773);
    uid = 1;
    assert_int_equal(parse(v6_established, sizeof(v6_established), 5, &c6, &s6, &uid), GW_SOCKDIAG_FOUND);
    assert_int_equal(uid, 65534);
    uid = 1;
    assert_int_equal(parse(v6_time_wait, sizeof(v6_time_wait), 6, &c6, &s6, &uid), GW_SOCKDIAG_ABSENT);
    assert_int_equal(uid, 1);  // never "uid 0"
    struct sockaddr_in6 gone = v6("::1", 1);
    assert_int_equal(parse(enoent, sizeof(enoent), 7, &gone, &s6, &uid), GW_SOCKDIAG_ABSENT);
}

static void replies_for_something_else(void **state) {
    struct sockaddr_in c4 = v4("127.0.0.1", 50388), s4 = v4("127.0.0.1", 39577);
    uint32_t uid = 1;
    // An answer to an earlier request (another sequence number) is skipped, not taken.
    assert_int_equal(parse(v4_established, sizeof(v4_established), 78, &c4, &s4, &uid), GW_SOCKDIAG_OTHER);
    // Any other 4-tuple than the one asked for (the kernel may answer with a listener on
    // the client's port, or a socket of another address): not the client's.
    struct sockaddr_in other_port = v4("127.0.0.1", 50389), other_ip = v4("127.0.0.2", 50388);
    struct sockaddr_in other_server = v4("127.0.0.1", 39578);
    assert_int_equal(parse(v4_established, sizeof(v4_established), 77, &other_port, &s4, &uid), GW_SOCKDIAG_ABSENT);
    assert_int_equal(parse(v4_established, sizeof(v4_established), 77, &other_ip, &s4, &uid), GW_SOCKDIAG_ABSENT);
    assert_int_equal(parse(v4_established, sizeof(v4_established), 77, &c4, &other_server, &uid), GW_SOCKDIAG_ABSENT);
    struct sockaddr_in6 c6 = v6("::1", 50388), s6 = v6("::1", 39577);
    assert_int_equal(parse(v4_established, sizeof(v4_established), 77, &c6, &s6, &uid), GW_SOCKDIAG_ABSENT);
    // States a connected client's socket is not in: LISTEN, SYN_RECV, CLOSE.
    const uint8_t states[] = {TCP_LISTEN, TCP_SYN_RECV, TCP_CLOSE, TCP_TIME_WAIT, TCP_CLOSE_WAIT};
    for (size_t i = 0; i < sizeof(states); i++) {
        uint8_t b[sizeof(v4_established)];
        memcpy(b, v4_established, sizeof(b));
        b[NLMSG_HDRLEN + 1] = states[i];
        assert_int_equal(parse(b, sizeof(b), 77, &c4, &s4, &uid), GW_SOCKDIAG_ABSENT);
    }
    const uint8_t client_states[] = {TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2};
    for (size_t i = 0; i < sizeof(client_states); i++) {
        uint8_t b[sizeof(v4_established)];
        memcpy(b, v4_established, sizeof(b));
        b[NLMSG_HDRLEN + 1] = client_states[i];
        assert_int_equal(parse(b, sizeof(b), 77, &c4, &s4, &uid), GW_SOCKDIAG_FOUND);
    }
    assert_int_equal(uid, 65534);
}

static void malformed_replies(void **state) {
    struct sockaddr_in c4 = v4("127.0.0.1", 50388), s4 = v4("127.0.0.1", 39577);
    uint32_t uid = 1;
    // Every truncation is refused, never read past.
    for (size_t n = 0; n < sizeof(v4_established); n++) {
        uint8_t *b = malloc(n ? n : 1);  // exactly n bytes: ASan sees any over-read
        memcpy(b, v4_established, n);
        assert_int_not_equal(parse(b, n, 77, &c4, &s4, &uid), GW_SOCKDIAG_FOUND);
        free(b);
    }
    uint8_t b[sizeof(v4_established)];
    // A length beyond the datagram, or shorter than the diag message.
    memcpy(b, v4_established, sizeof(b));
    b[0] = (uint8_t)(sizeof(b) + 1);
    assert_int_equal(parse(b, sizeof(b), 77, &c4, &s4, &uid), GW_SOCKDIAG_ERROR);
    b[0] = NLMSG_HDRLEN + sizeof(struct inet_diag_msg) - 1;
    assert_int_equal(parse(b, sizeof(b), 77, &c4, &s4, &uid), GW_SOCKDIAG_ERROR);
    b[0] = 3;  // shorter than a netlink header
    assert_int_equal(parse(b, sizeof(b), 77, &c4, &s4, &uid), GW_SOCKDIAG_ERROR);
    // Another message type.
    memcpy(b, v4_established, sizeof(b));
    b[4] = NLMSG_DONE;
    assert_int_equal(parse(b, sizeof(b), 77, &c4, &s4, &uid), GW_SOCKDIAG_ERROR);
    // An error other than "no such socket" is an error, not an absence.
    uint8_t e[sizeof(enoent)];
    memcpy(e, enoent, sizeof(e));
    int32_t eperm = -EPERM;
    memcpy(e + NLMSG_HDRLEN, &eperm, sizeof(eperm));
    struct sockaddr_in6 gone = v6("::1", 1), s6 = v6("::1", 47773);
    assert_int_equal(parse(e, sizeof(e), 7, &gone, &s6, &uid), GW_SOCKDIAG_ERROR);
    // An error message too short for its code.
    memcpy(e, enoent, sizeof(e));
    e[0] = NLMSG_HDRLEN + 2;
    assert_int_equal(parse(e, sizeof(e), 7, &gone, &s6, &uid), GW_SOCKDIAG_ERROR);
    // Not an IP endpoint.
    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_int_equal(parse(v4_established, sizeof(v4_established), 77, &un, &s4, &uid), GW_SOCKDIAG_ERROR);
    assert_int_equal(uid, 1);
}

static void request_names_the_client_socket(void **state) {
    struct sockaddr_in c4 = v4("127.0.0.1", 50388), s4 = v4("127.0.0.2", 39577);
    uint8_t b[256];
    size_t n = gw_sockdiag_build(b, sizeof(b), 9, (struct sockaddr *)&c4, (struct sockaddr *)&s4);
    assert_int_equal(n, sizeof(struct nlmsghdr) + sizeof(struct inet_diag_req_v2));
    struct nlmsghdr h;
    struct inet_diag_req_v2 r;
    memcpy(&h, b, sizeof(h));
    memcpy(&r, b + sizeof(h), sizeof(r));
    assert_int_equal(h.nlmsg_type, SOCK_DIAG_BY_FAMILY);
    assert_int_equal(h.nlmsg_flags, NLM_F_REQUEST);  // one socket, no dump
    assert_int_equal(h.nlmsg_seq, 9);
    assert_int_equal(r.sdiag_family, AF_INET);
    assert_int_equal(r.sdiag_protocol, IPPROTO_TCP);
    assert_int_equal(ntohs(r.id.idiag_sport), 50388);  // the client's end is the "source"
    assert_int_equal(ntohs(r.id.idiag_dport), 39577);
    assert_memory_equal(r.id.idiag_src, &c4.sin_addr, 4);
    assert_memory_equal(r.id.idiag_dst, &s4.sin_addr, 4);
    struct sockaddr_in6 s6 = v6("::1", 1);
    assert_int_equal(gw_sockdiag_build(b, sizeof(b), 9, (struct sockaddr *)&c4, (struct sockaddr *)&s6), 0);
    assert_int_equal(gw_sockdiag_build(b, 10, 9, (struct sockaddr *)&c4, (struct sockaddr *)&s4), 0);
}

// Offsets in a reply: the netlink header, then struct inet_diag_msg.
#define DIAG_AT(field) (NLMSG_HDRLEN + offsetof(struct inet_diag_msg, field))

static void closed_clients_have_no_owner(void **state) {
    struct sockaddr_in c4 = v4("127.0.0.1", 50388), s4 = v4("127.0.0.1", 39577);
    // A client that sent its request and closed: once our kernel ACKs its FIN it is a
    // timewait minisocket in substate FIN_WAIT2, reported with uid 0 and inode 0 (and
    // before that an orphan in FIN_WAIT1, inode 0). Found, but nobody's: never root.
    const uint8_t states[] = {TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_ESTABLISHED};
    for (size_t i = 0; i < sizeof(states); i++) {
        uint8_t b[sizeof(v4_established)];
        memcpy(b, v4_established, sizeof(b));
        b[DIAG_AT(idiag_state)] = states[i];
        memset(b + DIAG_AT(idiag_uid), 0, 4);
        memset(b + DIAG_AT(idiag_inode), 0, 4);
        uint32_t uid = 1;
        assert_int_equal(parse(b, sizeof(b), 77, &c4, &s4, &uid), GW_SOCKDIAG_ABSENT);
        assert_int_equal(uid, 1);
    }
}

static void dual_stack_clients_are_ipv4(void **state) {
    // An AF_INET6 socket connected to ::ffff:127.0.0.1 answers the IPv4 lookup, and the
    // kernel reports it as it keeps it: family AF_INET6 with IPv4-mapped ends.
    uint8_t b[sizeof(v4_established)];
    memcpy(b, v4_established, sizeof(b));
    b[DIAG_AT(idiag_family)] = AF_INET6;
    uint8_t *src = b + DIAG_AT(id.idiag_src), *dst = b + DIAG_AT(id.idiag_dst);
    const uint8_t mapped[16] = {[10] = 0xff, [11] = 0xff, [12] = 127, [15] = 1};
    memcpy(src, mapped, 16);
    memcpy(dst, mapped, 16);
    struct sockaddr_in c4 = v4("127.0.0.1", 50388), s4 = v4("127.0.0.1", 39577);
    uint32_t uid = 1;
    assert_int_equal(parse(b, sizeof(b), 77, &c4, &s4, &uid), GW_SOCKDIAG_FOUND);
    assert_int_equal(uid, 65534);
    // Not the same as a real IPv6 socket of another address.
    struct sockaddr_in6 c6 = v6("::1", 50388), s6 = v6("::1", 39577);
    assert_int_equal(parse(b, sizeof(b), 77, &c6, &s6, &uid), GW_SOCKDIAG_ABSENT);
    // Only one end mapped: not an IPv4 socket, not ours.
    dst[10] = 0;
    assert_int_equal(parse(b, sizeof(b), 77, &c4, &s4, &uid), GW_SOCKDIAG_ABSENT);
    // A family that is neither: malformed.
    b[DIAG_AT(idiag_family)] = AF_UNIX;
    assert_int_equal(parse(b, sizeof(b), 77, &c4, &s4, &uid), GW_SOCKDIAG_ERROR);
}

// A listener on 127.0.0.1, with its address in |*a|.
static int listen_loopback(struct sockaddr_in *a) {
    *a = v4("127.0.0.1", 0);
    socklen_t al = sizeof(*a);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(l >= 0);
    assert_int_equal(bind(l, (struct sockaddr *)a, sizeof(*a)), 0);
    assert_int_equal(listen(l, 4), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)a, &al), 0);
    return l;
}

static void live_dual_stack_and_closed_clients(void **state) {
    gw_sockdiag d;
    assert_true(gw_sockdiag_open(&d));
    struct sockaddr_in a;
    int l = listen_loopback(&a);
    // A dual-stack client (Java, .NET): AF_INET6 socket to ::ffff:127.0.0.1.
    int c = socket(AF_INET6, SOCK_STREAM, 0);
    assert_true(c >= 0);
    struct sockaddr_in6 to = v6("::ffff:127.0.0.1", ntohs(a.sin_port));
    assert_int_equal(connect(c, (struct sockaddr *)&to, sizeof(to)), 0);
    struct sockaddr_storage peer, me;
    socklen_t pl = sizeof(peer), ml = sizeof(me);
    int s = accept(l, (struct sockaddr *)&peer, &pl);
    assert_true(s >= 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&me, &ml), 0);
    uint32_t uid = GW_CALLER_NONE;
    assert_int_equal(gw_sockdiag_owner(&d, (struct sockaddr *)&peer, (struct sockaddr *)&me, 100, &uid),
                     GW_SOCKDIAG_FOUND);
    assert_int_equal(uid, geteuid());
    // The client closes: its FIN is ACKed by our kernel at once, and what remains of its
    // socket belongs to nobody (the FIN_WAIT2 minisocket the kernel reports as uid 0).
    close(c);
    char byte;
    assert_int_equal(recv(s, &byte, 1, 0), 0);  // the FIN has arrived
    uid = 12345;
    assert_int_equal(gw_sockdiag_owner(&d, (struct sockaddr *)&peer, (struct sockaddr *)&me, 100, &uid),
                     GW_SOCKDIAG_ABSENT);
    assert_int_equal(uid, 12345);
    close(s);
    close(l);
    gw_sockdiag_close(&d);
}

static void live_lookups(void **state) {
    gw_sockdiag d;
    assert_true(gw_sockdiag_open(&d));
    assert_true(gw_sockdiag_selftest(&d, (uint32_t)geteuid()));
    assert_false(gw_sockdiag_selftest(&d, (uint32_t)geteuid() + 1));
    gw_sockdiag_close(&d);
    assert_int_equal(d.fd, -1);
    struct sockaddr_in c4 = v4("127.0.0.1", 1), s4 = v4("127.0.0.1", 2);
    uint32_t uid;
    assert_int_equal(gw_sockdiag_owner(&d, (struct sockaddr *)&c4, (struct sockaddr *)&s4, 10, &uid),
                     GW_SOCKDIAG_ERROR);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int32_t pid = 0;
    assert_true(gw_peer_unix_cred(sv[0], &uid, &pid));
    assert_int_equal(uid, geteuid());
    assert_int_equal(pid, getpid());
    close(sv[0]);
    close(sv[1]);
}

static void loopback_peers(void **state) {
    struct sockaddr_in a = v4("127.9.8.7", 1), b = v4("10.0.0.1", 1);
    struct sockaddr_in6 c = v6("::1", 1), m = v6("::ffff:127.0.0.1", 1), e = v6("2001:db8::1", 1);
    assert_true(gw_peer_is_loopback((struct sockaddr *)&a));
    assert_false(gw_peer_is_loopback((struct sockaddr *)&b));
    assert_true(gw_peer_is_loopback((struct sockaddr *)&c));
    assert_true(gw_peer_is_loopback((struct sockaddr *)&m));
    assert_false(gw_peer_is_loopback((struct sockaddr *)&e));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(recorded_replies),
        cmocka_unit_test(replies_for_something_else),
        cmocka_unit_test(malformed_replies),
        cmocka_unit_test(request_names_the_client_socket),
        cmocka_unit_test(closed_clients_have_no_owner),
        cmocka_unit_test(dual_stack_clients_are_ipv4),
        cmocka_unit_test(live_dual_stack_and_closed_clients),
        cmocka_unit_test(live_lookups),
        cmocka_unit_test(loopback_peers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
