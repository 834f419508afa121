#include "gateway/base/netutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

void gw_format_addr(const struct sockaddr *sa, char *out, size_t len) {
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(out, len, "%s:%u", ip, ntohs(s4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            // An IPv4 client of a dual-stack listener is the IPv4 address it is.
            inet_ntop(AF_INET, s6->sin6_addr.s6_addr + 12, ip, sizeof(ip));
            snprintf(out, len, "%s:%u", ip, ntohs(s6->sin6_port));
            return;
        }
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(out, len, "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else {
        snprintf(out, len, "unix");
    }
}

socklen_t gw_sockaddr_from(struct sockaddr_storage *out, int family, const uint8_t *addr, uint16_t port) {
    memset(out, 0, sizeof(*out));
    if (family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)out;
        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, addr, 4);
        s4->sin_port = htons(port);
        return sizeof(*s4);
    }
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)out;
    s6->sin6_family = AF_INET6;
    memcpy(&s6->sin6_addr, addr, 16);
    s6->sin6_port = htons(port);
    return sizeof(*s6);
}

int gw_listen_socket(const struct sockaddr *sa, socklen_t len, int reuseport) {
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    }
    if (sa->sa_family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
        // Accepted sockets inherit it: no setsockopt per client.
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (bind(fd, sa, len) != 0 || listen(fd, 4096) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int gw_host_is_ip(const char *host) {
    uint8_t buf[16];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

void gw_socket_reset(int fd) {
    struct linger lg = {1, 0};
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
}

// stale_socket_gone removes the socket at |path| if no one accepts on it. 1: the path is
// free now; 0 with errno set: it is in use (EADDRINUSE) or not a socket (EEXIST).
static int stale_socket_gone(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) {
        return errno == ENOENT;
    }
    if (!S_ISSOCK(st.st_mode)) {
        errno = EEXIST;
        return 0;
    }
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    memcpy(un.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return 0;
    }
    int live = connect(fd, (struct sockaddr *)&un, sizeof(un)) == 0 || errno == EAGAIN;
    close(fd);
    if (live) {
        errno = EADDRINUSE;
        return 0;
    }
    return unlink(path) == 0 || errno == ENOENT;
}

int gw_listen_unix(const char *path, unsigned mode, uint32_t uid, uint32_t gid) {
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(un.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(un.sun_path, path, len + 1);
    if (!stale_socket_gone(path)) {
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    // Made owner-only (the umask covers bind's window), handed over, then opened to |mode|.
    mode_t old = umask(0177);
    int bound = bind(fd, (struct sockaddr *)&un, sizeof(un)) == 0, ok = bound;
    umask(old);
    // By path, but never through a symbolic link: if the folder is writable by someone
    // else (the service user), the socket may be replaced between bind and these calls,
    // and a link to /etc/shadow must not be handed over or opened up. The path must
    // still be a socket we own.
    struct stat st;
    if (ok && (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode) || st.st_uid != geteuid())) {
        ok = 0;
        errno = EPERM;
    }
    if (ok && (uid != UINT32_MAX || gid != UINT32_MAX)) {
        ok = fchownat(AT_FDCWD, path, (uid_t)uid, (gid_t)gid, AT_SYMLINK_NOFOLLOW) == 0;
    }
    ok = ok && fchmodat(AT_FDCWD, path, (mode_t)(mode & 0777), AT_SYMLINK_NOFOLLOW) == 0 && listen(fd, 4096) == 0;
    if (!ok) {
        int e = errno;
        close(fd);
        if (bound) {
            unlink(path);
        }
        errno = e;
        return -1;
    }
    return fd;
}
