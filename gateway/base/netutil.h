// netutil: small socket helpers shared by listeners, upstream connects and commands.
#ifndef MTLSGW_NETUTIL_H
#define MTLSGW_NETUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

// gw_format_addr writes "ip:port" or "[ip6]:port" for |sa| into |out| (an IPv4-mapped
// IPv6 address as the IPv4 address).
void gw_format_addr(const struct sockaddr *sa, char *out, size_t len);
// gw_sockaddr_from writes a sockaddr for |family|/|addr|/|port| and returns its length.
socklen_t gw_sockaddr_from(struct sockaddr_storage *out, int family, const uint8_t *addr, uint16_t port);
// gw_listen_socket opens a non-blocking listening socket (SO_REUSEADDR, and
// SO_REUSEPORT when |reuseport|). Returns the fd or -1 (errno set).
int gw_listen_socket(const struct sockaddr *sa, socklen_t len, int reuseport);
// gw_listen_unix opens a non-blocking listening UNIX socket at |path| with permissions
// |mode|, then owner |uid| and group |gid| (UINT32_MAX: leave). A stale socket there (no
// one accepts on it) is replaced; a live one is EADDRINUSE, any other file EEXIST. The
// socket is never reachable with wider permissions than |mode| asks. Returns the fd or
// -1 (errno set).
int gw_listen_unix(const char *path, unsigned mode, uint32_t uid, uint32_t gid);
// gw_socket_reset makes the coming close() of |fd| send a RST (SO_LINGER 0): one side's
// reset passed on as a reset, so a cut-off stream is never taken for a complete one.
// A negative |fd| is ignored.
void gw_socket_reset(int fd);

// gw_host_is_ip says whether |host| is an IPv4 or IPv6 literal.
int gw_host_is_ip(const char *host);

#endif
