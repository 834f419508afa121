// transport: plain and TLS reads and writes of an established upstream, one result type.
#include "gateway/upstream/transport.h"

#include <errno.h>
#include <openssl/err.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/upstream/parent.h"

static gw_io io_data(size_t n) {
    return (gw_io){.kind = GW_IO_DATA, .n = n};
}

static gw_io io_failed(gw_result result) {
    return (gw_io){.kind = GW_IO_FAILED, .result = result};
}

gw_io gw_socket_read(int fd, uint8_t *p, size_t n, gw_result on_error, char *reason, size_t reason_len) {
    ssize_t r;
    do {
        r = read(fd, p, n);
    } while (r < 0 && errno == EINTR);
    if (r > 0) {
        return io_data((size_t)r);
    }
    if (r == 0) {
        return (gw_io){.kind = GW_IO_EOF};
    }
    if (errno == EAGAIN) {
        return (gw_io){.kind = GW_IO_WANT_READ};
    }
    snprintf(reason, reason_len, "%s", strerror(errno));
    return io_failed(on_error);
}

gw_io gw_socket_write(int fd, const uint8_t *p, size_t n, gw_result on_error, char *reason, size_t reason_len) {
    ssize_t r;
    do {
        r = send(fd, p, n, MSG_NOSIGNAL);
    } while (r < 0 && errno == EINTR);
    if (r >= 0) {
        return io_data((size_t)r);
    }
    if (errno == EAGAIN) {
        return (gw_io){.kind = GW_IO_WANT_WRITE};
    }
    snprintf(reason, reason_len, "%s", strerror(errno));
    return io_failed(on_error);
}

// settle finishes a handshake that returned early (upstream.c decides; this maps its
// answer). GW_IO_DATA with n = 0 once done.
static gw_io settle(gw_upstream *u, char *reason, size_t reason_len) {
    gw_err err = GW_ERR_NONE;
    switch (gw_upstream_early_settle(u, &err, reason, reason_len)) {
        case GW_STEP_DONE:
            return io_data(0);
        case GW_STEP_WANT_READ:
            return (gw_io){.kind = GW_IO_WANT_READ};
        case GW_STEP_WANT_WRITE:
            return (gw_io){.kind = GW_IO_WANT_WRITE};
        default: {
            // No token keys with early data (the config refuses them): a key wait is a failure too.
            gw_io io = io_failed(gw_err_describe(err)->result);
            io.err = err;
            return io;
        }
    }
}

static int early_pending(const gw_upstream *u) {
    return u->early == GW_EARLY_SENDING || u->early == GW_EARLY_REJECTED;
}

static gw_io tls_read(gw_upstream *u, uint8_t *p, size_t n, int judge_rejection, char *reason, size_t reason_len) {
    if (early_pending(u)) {
        gw_io s = settle(u, reason, reason_len);
        if (s.kind != GW_IO_DATA) {
            return s;
        }
    }
    int r = SSL_read(u->ssl, p, (int)n);
    if (r > 0) {
        if (!u->confirmed) {
            gw_upstream_confirm(u);  // the server's first data: it accepted us
        }
        return io_data((size_t)r);
    }
    int e = SSL_get_error(u->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        return (gw_io){.kind = GW_IO_WANT_READ};
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        return (gw_io){.kind = GW_IO_WANT_WRITE};
    }
    if (!u->confirmed && judge_rejection) {
        gw_err err = gw_upstream_read_failure(u, r, reason, reason_len);
        gw_upstream_rejected(u);
        gw_io io = io_failed(gw_err_describe(err)->result);
        io.err = err;
        return io;
    }
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && r == 0)) {
        ERR_clear_error();
        return (gw_io){.kind = GW_IO_EOF, .truncated = e != SSL_ERROR_ZERO_RETURN};
    }
    uint32_t code = ERR_peek_error();
    if (u->alert >= 0) {
        snprintf(reason, reason_len, "upstream sent TLS alert %s", gw_tls_alert_name(u->alert));
    } else {
        snprintf(reason, reason_len, "TLS read from upstream failed: %s",
                 code ? ERR_reason_error_string(code) : strerror(errno));
    }
    ERR_clear_error();
    return io_failed(GW_RESULT_UPSTREAM_ERROR);
}

// parent_io maps a read or write over the TLS to an https:// parent (a direct rule's).
static gw_io parent_io(int r, int want, const char *what, char *reason, size_t reason_len) {
    if (r > 0) {
        return io_data((size_t)r);
    }
    if (r == 0) {
        return (gw_io){.kind = GW_IO_EOF};
    }
    if (want != 0) {
        return (gw_io){.kind = want == SSL_ERROR_WANT_READ ? GW_IO_WANT_READ : GW_IO_WANT_WRITE};
    }
    snprintf(reason, reason_len, "TLS %s the parent proxy failed: %s", what, strerror(errno));
    return io_failed(GW_RESULT_UPSTREAM_ERROR);
}

gw_io gw_upstream_read(gw_upstream *u, uint8_t *p, size_t n, int judge_rejection, char *reason, size_t reason_len) {
    if (u->ssl == NULL && u->outer != NULL) {
        int want = 0;
        int r = gw_parent_read(u, p, n, &want);
        return parent_io(r, want, "read from", reason, reason_len);
    }
    return u->ssl != NULL ? tls_read(u, p, n, judge_rejection, reason, reason_len)
                          : gw_socket_read(u->fd, p, n, GW_RESULT_UPSTREAM_RESET, reason, reason_len);
}

gw_io gw_upstream_write(gw_upstream *u, const uint8_t *p, size_t n, char *reason, size_t reason_len) {
    if (u->ssl == NULL && u->outer != NULL) {
        int want = 0;
        int r = gw_parent_write(u, p, n, &want);
        return parent_io(r == 0 ? -1 : r, want, "write to", reason, reason_len);
    }
    if (u->ssl == NULL) {
        return gw_socket_write(u->fd, p, n, GW_RESULT_UPSTREAM_RESET, reason, reason_len);
    }
    if (u->early == GW_EARLY_REJECTED || (u->early == GW_EARLY_SENDING && u->early_len >= GW_EARLY_MAX)) {
        gw_io s = settle(u, reason, reason_len);  // what did not fit waits for the handshake
        if (s.kind != GW_IO_DATA) {
            return s;
        }
    }
    int sending_early = u->early == GW_EARLY_SENDING;
    if (sending_early && n > GW_EARLY_MAX - u->early_len) {
        n = GW_EARLY_MAX - u->early_len;
    }
    int r = SSL_write(u->ssl, p, (int)n);
    if (r > 0) {
        if (sending_early && SSL_in_early_data(u->ssl)) {
            // Sent as early data: kept until the server says whether it took it.
            uint8_t *grown = realloc(u->early_copy, u->early_len + (size_t)r);
            if (grown == NULL) {
                snprintf(reason, reason_len, "out of memory for a copy of the early data");
                return io_failed(GW_RESULT_INTERNAL_ERROR);
            }
            memcpy(grown + u->early_len, p, (size_t)r);
            u->early_copy = grown;
            u->early_len += (size_t)r;
        } else if (sending_early) {
            gw_upstream_early_settle(u, &(gw_err){GW_ERR_NONE}, reason,
                                     reason_len);  // the write finished the handshake
        }
        return io_data((size_t)r);
    }
    int e = SSL_get_error(u->ssl, r);
    if (e == SSL_ERROR_EARLY_DATA_REJECTED) {
        gw_io s = settle(u, reason, reason_len);  // resets, then sends the copy again
        return s.kind == GW_IO_DATA ? gw_upstream_write(u, p, n, reason, reason_len) : s;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        return (gw_io){.kind = GW_IO_WANT_WRITE};
    }
    if (e == SSL_ERROR_WANT_READ) {
        return (gw_io){.kind = GW_IO_WANT_READ};
    }
    uint32_t code = ERR_peek_error();
    snprintf(reason, reason_len, "TLS write to upstream failed: %s",
             code ? ERR_reason_error_string(code) : strerror(errno));
    ERR_clear_error();
    return io_failed(GW_RESULT_UPSTREAM_ERROR);
}

gw_io gw_upstream_shutdown(gw_upstream *u, int closing) {
    if (u->ssl != NULL) {
        gw_upstream_fin_follows(u, 1);
        int r = SSL_shutdown(u->ssl);
        gw_upstream_fin_follows(u, 0);
        if (r < 0) {
            int e = SSL_get_error(u->ssl, r);
            ERR_clear_error();
            if (e == SSL_ERROR_WANT_WRITE) {
                return (gw_io){.kind = GW_IO_WANT_WRITE};
            }
        }
    }
    if (u->outer != NULL && !gw_parent_shutdown(u)) {
        return (gw_io){.kind = GW_IO_WANT_WRITE};  // (our close_notify inside went; the parent's goes next)
    }
    if (!closing) {
        shutdown(u->fd, SHUT_WR);
    }
    return io_data(0);
}
