// peer: which local user is on the other end of a client connection. For a UNIX socket
// the kernel's peer credentials (SO_PEERCRED); for TCP from this host, the owner of the
// client's socket in the kernel's socket table, asked for the exact 4-tuple over
// NETLINK_SOCK_DIAG (one request, one reply, no dump).
#ifndef MTLSGW_PEER_H
#define MTLSGW_PEER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

// No local caller is known (a remote client, or a lookup that found nothing).
#define GW_CALLER_NONE UINT32_MAX

// gw_peer_unix_cred reads the credentials of the process at the other end of the UNIX
// socket |fd| (as of its connect). Returns 1 with |*uid| and |*pid| set, 0 on failure.
int gw_peer_unix_cred(int fd, uint32_t *uid, int32_t *pid);

// gw_peer_original_dst reads where accepted TCP connection |fd| was going before a
// netfilter REDIRECT/DNAT (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST) into |out|. Returns 0
// when it was not redirected: no NAT entry, or the original destination is this very
// socket's own address (a client that connected to the listener directly, or a loop).
int gw_peer_original_dst(int fd, struct sockaddr_storage *out);

// gw_peer_is_loopback says whether |sa| is 127.0.0.0/8 or ::1 (IPv4-mapped counts as IPv4).
int gw_peer_is_loopback(const struct sockaddr *sa);

typedef struct {
    int fd;        // NETLINK_SOCK_DIAG socket, -1 when closed
    uint32_t seq;  // of the last request
} gw_sockdiag;

enum {
    GW_SOCKDIAG_FOUND = 1,   // the client's socket, with its owner
    GW_SOCKDIAG_ABSENT = 0,  // no such socket here (a remote client, or one already gone)
    GW_SOCKDIAG_ERROR = -1,  // the lookup itself failed
    GW_SOCKDIAG_OTHER = -2,  // gw_sockdiag_parse: a reply to another request
};

int gw_sockdiag_open(gw_sockdiag *d);
void gw_sockdiag_close(gw_sockdiag *d);

// gw_sockdiag_build writes the request for the TCP socket whose local end is |client| and
// whose remote end is |server| (the client's socket, seen from our accepted one) into
// |buf|. Returns its length, 0 if |cap| is too small or the families differ.
size_t gw_sockdiag_build(uint8_t *buf, size_t cap, uint32_t seq, const struct sockaddr *client,
                         const struct sockaddr *server);

// gw_sockdiag_parse reads one datagram |buf| (|len| bytes) received after request |seq|.
// FOUND only for a full socket that a process holds (inode not 0) with exactly the asked
// 4-tuple, in a state a connected client's socket is in (established or half-closed by
// the client); a dual-stack client (AF_INET6 socket with IPv4-mapped ends) counts as the
// IPv4 socket it is. A listener, a TIME_WAIT entry or a FIN_WAIT2 timewait minisocket of
// a client that already closed (owners read as uid 0), or an orphan, is ABSENT.
// Malformed input is ERROR; a well-formed reply with another sequence number is OTHER.
int gw_sockdiag_parse(const uint8_t *buf, size_t len, uint32_t seq, const struct sockaddr *client,
                      const struct sockaddr *server, uint32_t *uid);

// gw_sockdiag_owner asks for the owner of the client's socket and waits for the answer
// at most |wait_ms| (the kernel answers during the send; the wait is a bound, not a cost).
int gw_sockdiag_owner(gw_sockdiag *d, const struct sockaddr *client, const struct sockaddr *server, int wait_ms,
                      uint32_t *uid);

// gw_sockdiag_selftest makes a loopback connection and looks up its client socket, which
// must come back owned by |expect_uid| (our effective uid). 0: lookups do not work here
// (no inet_diag in the kernel, a seccomp filter, ...), so TCP clients have no caller.
int gw_sockdiag_selftest(gw_sockdiag *d, uint32_t expect_uid);

#endif
