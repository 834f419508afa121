#include "gateway/base/peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

int gw_peer_unix_cred(int fd, uint32_t *uid, int32_t *pid) {
    struct ucred cr;
    socklen_t len = sizeof(cr);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 || len != sizeof(cr)) {
        return 0;
    }
    *uid = cr.uid;
    *pid = cr.pid;
    return 1;
}

// An endpoint as the diag messages carry it: family, port (network order), address.
typedef struct {
    int family;
    uint16_t port;
    uint8_t addr[16];
} endpoint;

static int endpoint_of(const struct sockaddr *sa, endpoint *e) {
    memset(e, 0, sizeof(*e));
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        e->family = AF_INET;
        e->port = in->sin_port;
        memcpy(e->addr, &in->sin_addr, 4);
        return 1;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        e->port = in6->sin6_port;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {  // the kernel keeps such a socket as IPv4
            e->family = AF_INET;
            memcpy(e->addr, in6->sin6_addr.s6_addr + 12, 4);
        } else {
            e->family = AF_INET6;
            memcpy(e->addr, &in6->sin6_addr, 16);
        }
        return 1;
    }
    return 0;
}

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80  // linux/netfilter_ipv4.h
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80  // linux/netfilter_ipv6/ip6_tables.h
#endif

int gw_peer_original_dst(int fd, struct sockaddr_storage *out) {
    struct sockaddr_storage me;
    socklen_t ml = sizeof(me), ol = sizeof(*out);
    if (getsockname(fd, (struct sockaddr *)&me, &ml) != 0) {
        return 0;
    }
    memset(out, 0, sizeof(*out));
    int ok = me.ss_family == AF_INET6 ? getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, out, &ol) == 0
                                      : getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, out, &ol) == 0;
    endpoint o, m;
    if (!ok || !endpoint_of((struct sockaddr *)out, &o) || !endpoint_of((struct sockaddr *)&me, &m)) {
        return 0;
    }
    return !(o.family == m.family && o.port == m.port && memcmp(o.addr, m.addr, 16) == 0);
}

int gw_peer_is_loopback(const struct sockaddr *sa) {
    endpoint e;
    if (!endpoint_of(sa, &e)) {
        return 0;
    }
    static const uint8_t v6_loopback[16] = {[15] = 1};
    return e.family == AF_INET ? e.addr[0] == 127 : memcmp(e.addr, v6_loopback, 16) == 0;
}

int gw_sockdiag_open(gw_sockdiag *d) {
    d->seq = 0;
    d->fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_SOCK_DIAG);
    return d->fd >= 0;
}

void gw_sockdiag_close(gw_sockdiag *d) {
    if (d->fd >= 0) {
        close(d->fd);
        d->fd = -1;
    }
}

typedef struct {
    struct nlmsghdr nlh;
    struct inet_diag_req_v2 req;
} diag_request;

size_t gw_sockdiag_build(uint8_t *buf, size_t cap, uint32_t seq, const struct sockaddr *client,
                         const struct sockaddr *server) {
    endpoint c, s;
    if (cap < sizeof(diag_request) || !endpoint_of(client, &c) || !endpoint_of(server, &s) || c.family != s.family) {
        return 0;
    }
    diag_request r;
    memset(&r, 0, sizeof(r));
    r.nlh.nlmsg_len = sizeof(r);
    r.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    r.nlh.nlmsg_flags = NLM_F_REQUEST;
    r.nlh.nlmsg_seq = seq;
    r.req.sdiag_family = (uint8_t)c.family;
    r.req.sdiag_protocol = IPPROTO_TCP;
    r.req.idiag_states = ~0u;
    r.req.id.idiag_sport = c.port;
    r.req.id.idiag_dport = s.port;
    memcpy(r.req.id.idiag_src, c.addr, c.family == AF_INET ? 4 : 16);
    memcpy(r.req.id.idiag_dst, s.addr, s.family == AF_INET ? 4 : 16);
    r.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
    r.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    memcpy(buf, &r, sizeof(r));
    return sizeof(r);
}

// The endpoints of a diag message as the kernel keeps the socket: an AF_INET6 socket
// connected to an IPv4-mapped address (a dual-stack client, the default in Java and .NET)
// is reported with family AF_INET6 and ::ffff:a.b.c.d on both ends although it answers an
// AF_INET lookup; read it as the IPv4 socket it is, like endpoint_of does.
static void diag_endpoints(const struct inet_diag_msg *m, endpoint *src, endpoint *dst) {
    static const uint8_t mapped[12] = {[10] = 0xff, [11] = 0xff};
    const uint8_t *s = (const uint8_t *)m->id.idiag_src, *d = (const uint8_t *)m->id.idiag_dst;
    memset(src, 0, sizeof(*src));
    memset(dst, 0, sizeof(*dst));
    src->family = dst->family = m->idiag_family;
    src->port = m->id.idiag_sport;
    dst->port = m->id.idiag_dport;
    if (m->idiag_family == AF_INET6 && memcmp(s, mapped, 12) == 0 && memcmp(d, mapped, 12) == 0) {
        src->family = dst->family = AF_INET;
        memcpy(src->addr, s + 12, 4);
        memcpy(dst->addr, d + 12, 4);
    } else if (m->idiag_family == AF_INET) {
        memcpy(src->addr, s, 4);
        memcpy(dst->addr, d, 4);
    } else {
        memcpy(src->addr, s, 16);
        memcpy(dst->addr, d, 16);
    }
}

static int same_endpoint(const endpoint *a, const endpoint *b) {
    return a->family == b->family && a->port == b->port && memcmp(a->addr, b->addr, 16) == 0;
}

int gw_sockdiag_parse(const uint8_t *buf, size_t len, uint32_t seq, const struct sockaddr *client,
                      const struct sockaddr *server, uint32_t *uid) {
    endpoint c, s;
    struct nlmsghdr h;
    if (!endpoint_of(client, &c) || !endpoint_of(server, &s) || len < sizeof(h)) {
        return GW_SOCKDIAG_ERROR;
    }
    memcpy(&h, buf, sizeof(h));  // the buffer need not be aligned
    if (h.nlmsg_len < sizeof(h) || h.nlmsg_len > len) {
        return GW_SOCKDIAG_ERROR;
    }
    if (h.nlmsg_seq != seq) {
        return GW_SOCKDIAG_OTHER;
    }
    const uint8_t *payload = buf + NLMSG_HDRLEN;
    size_t plen = h.nlmsg_len >= NLMSG_HDRLEN ? h.nlmsg_len - NLMSG_HDRLEN : 0;
    if (h.nlmsg_type == NLMSG_ERROR) {
        struct nlmsgerr e;
        if (plen < sizeof(e.error)) {
            return GW_SOCKDIAG_ERROR;
        }
        memcpy(&e.error, payload, sizeof(e.error));
        return e.error == -ENOENT ? GW_SOCKDIAG_ABSENT : GW_SOCKDIAG_ERROR;
    }
    if (h.nlmsg_type != SOCK_DIAG_BY_FAMILY) {
        return GW_SOCKDIAG_ERROR;
    }
    struct inet_diag_msg m;
    if (plen < sizeof(m)) {
        return GW_SOCKDIAG_ERROR;
    }
    memcpy(&m, payload, sizeof(m));
    if (m.idiag_family != AF_INET && m.idiag_family != AF_INET6) {
        return GW_SOCKDIAG_ERROR;
    }
    endpoint src, dst;
    diag_endpoints(&m, &src, &dst);
    if (!same_endpoint(&src, &c) || !same_endpoint(&dst, &s)) {
        return GW_SOCKDIAG_ABSENT;  // e.g. a wildcard listener on the client's port
    }
    // Only a full socket that a process holds has an owner. A client that wrote its
    // request and closed is, once we ACK its FIN, a timewait minisocket in substate
    // FIN_WAIT2 (and before that an orphan): inode 0, uid 0. Found, but not attributable.
    if (m.idiag_inode == 0) {
        return GW_SOCKDIAG_ABSENT;
    }
    switch (m.idiag_state) {
        case TCP_ESTABLISHED:
        case TCP_FIN_WAIT1:
        case TCP_FIN_WAIT2:
            *uid = m.idiag_uid;
            return GW_SOCKDIAG_FOUND;
        default:  // TIME_WAIT, request sockets, closing: no owner to take
            return GW_SOCKDIAG_ABSENT;
    }
}

int gw_sockdiag_owner(gw_sockdiag *d, const struct sockaddr *client, const struct sockaddr *server, int wait_ms,
                      uint32_t *uid) {
    uint8_t req[sizeof(diag_request)];
    if (d->fd < 0) {
        return GW_SOCKDIAG_ERROR;
    }
    uint32_t seq = ++d->seq;
    size_t n = gw_sockdiag_build(req, sizeof(req), seq, client, server);
    if (n == 0) {
        return GW_SOCKDIAG_ERROR;
    }
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    ssize_t sent;
    do {
        sent = sendto(d->fd, req, n, 0, (struct sockaddr *)&kernel, sizeof(kernel));
    } while (sent < 0 && errno == EINTR);
    if (sent != (ssize_t)n) {
        return GW_SOCKDIAG_ERROR;
    }
    // Replies to earlier requests that timed out may still be queued: skip them (bounded).
    for (int tries = 0; tries < 8; tries++) {
        union {
            uint8_t b[1024];
            struct nlmsghdr align;
        } reply;
        ssize_t got = recv(d->fd, reply.b, sizeof(reply.b), MSG_DONTWAIT);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = d->fd, .events = POLLIN};
            if (poll(&p, 1, wait_ms) != 1) {
                return GW_SOCKDIAG_ERROR;
            }
            continue;
        }
        if (got <= 0) {
            return GW_SOCKDIAG_ERROR;
        }
        int r = gw_sockdiag_parse(reply.b, (size_t)got, seq, client, server, uid);
        if (r != GW_SOCKDIAG_OTHER) {
            return r;
        }
    }
    return GW_SOCKDIAG_ERROR;
}

int gw_sockdiag_selftest(gw_sockdiag *d, uint32_t expect_uid) {
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c = -1, s = -1, ok = 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in peer, me;
    socklen_t al = sizeof(a), pl = sizeof(peer), ml = sizeof(me);
    uint32_t uid = GW_CALLER_NONE;
    if (l >= 0 && bind(l, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(l, 1) == 0 &&
        getsockname(l, (struct sockaddr *)&a, &al) == 0 && (c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0 &&
        connect(c, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        (s = accept4(l, (struct sockaddr *)&peer, &pl, SOCK_CLOEXEC)) >= 0 &&
        getsockname(s, (struct sockaddr *)&me, &ml) == 0) {
        ok = gw_sockdiag_owner(d, (struct sockaddr *)&peer, (struct sockaddr *)&me, 100, &uid) == GW_SOCKDIAG_FOUND &&
             uid == expect_uid;
    }
    int fds[] = {s, c, l};
    for (size_t i = 0; i < 3; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    return ok;
}
