// relay: bytes both ways once established, with backpressure (interest follows buffers),
// half-close passed on as FIN / close_notify, resets passed on as resets, and the flush of
// an error reply.
#include "gateway/tunnel/internal.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>

// ---- the two sides behind one pair of operations ----
//
// Each side's read and write answer in one vocabulary: > 0 bytes moved, 0 the end of the
// stream (read only), IO_AGAIN (wait: the side's readiness flags already say for what), or
// IO_FAILED (the tunnel was failed or closed: stop). The client side is a plain socket; the
// upstream a plain socket (direct rules) or TLS. One read routine and one write routine then
// serve both directions, as nginx's ngx_stream_proxy_process does.
#define IO_AGAIN (-1)
#define IO_FAILED (-2)

typedef struct {
    ssize_t (*read)(gw_tunnel *t, uint8_t *p, size_t n);
    ssize_t (*write)(gw_tunnel *t, const uint8_t *p, size_t n);
    int (*can_read)(const gw_tunnel *t);
    int (*can_write)(const gw_tunnel *t);
} side_ops;

static ssize_t client_read(gw_tunnel *t, uint8_t *p, size_t n) {
    ssize_t r = read(t->client_fd, p, n);
    if (r >= 0) {
        return r;
    }
    if (errno == EAGAIN || errno == EINTR) {
        t->client_io.readable = errno == EINTR;
        return IO_AGAIN;
    }
    tunnel_client_failed(t, strerror(errno));
    return IO_FAILED;
}

static ssize_t client_write(gw_tunnel *t, const uint8_t *p, size_t n) {
    ssize_t r = send(t->client_fd, p, n, MSG_NOSIGNAL);
    if (r >= 0) {
        return r;
    }
    if (errno == EAGAIN || errno == EINTR) {
        t->client_io.writable = errno == EINTR;
        return IO_AGAIN;
    }
    if (tunnel_flowing(t)) {
        tunnel_client_failed(t, strerror(errno));
    } else {
        tunnel_close(t, GW_RESULT_NONE, strerror(errno));  // a reply the client did not take
    }
    return IO_FAILED;
}

static int client_can_read(const gw_tunnel *t) {
    return !t->client_io.eof && t->client_io.readable;
}

static int client_can_write(const gw_tunnel *t) {
    return t->client_io.writable;
}

static ssize_t plain_up_read(gw_tunnel *t, uint8_t *p, size_t n) {
    ssize_t r = read(t->upstream.fd, p, n);
    if (r >= 0) {
        return r;
    }
    if (errno == EAGAIN || errno == EINTR) {
        t->upstream_io.readable = errno == EINTR;
        return IO_AGAIN;
    }
    tunnel_upstream_failed(t, GW_RESULT_UPSTREAM_RESET, strerror(errno));
    return IO_FAILED;
}

// up_write_lost: the upstream no longer takes our bytes (it closed or reset while the
// client was still sending, as redis does after a protocol error). A relaying tunnel
// keeps reading what the upstream sent before, for the client, and drops what the client
// sends on; the read that finds the upstream's end then flushes and closes. Returns what
// the write routine returns then.
static ssize_t up_write_lost(gw_tunnel *t, gw_result result, const char *what) {
    if (t->state != T_RELAY) {
        tunnel_upstream_failed(t, result, what);
        return IO_FAILED;
    }
    t->result = result;
    tunnel_set_reason(t, "upstream stopped taking data while the client was still sending (%s); what it had sent "
                      "was passed on", what);
    t->upstream_io.write_dead = 1;
    t->upstream_io.shut = 1;  // nothing more goes that way, not even close_notify
    t->upstream_io.writable = 0;
    t->upstream_io.readable = 1;  // what it sent before its end is still to be read
    gw_buf_put(&t->host->pool, t->to_up);
    t->to_up = NULL;
    return IO_AGAIN;
}

static ssize_t plain_up_write(gw_tunnel *t, const uint8_t *p, size_t n) {
    ssize_t r = send(t->upstream.fd, p, n, MSG_NOSIGNAL);
    if (r >= 0) {
        return r;
    }
    if (errno == EAGAIN || errno == EINTR) {
        t->upstream_io.writable = errno == EINTR;
        return IO_AGAIN;
    }
    return up_write_lost(t, GW_RESULT_UPSTREAM_RESET, strerror(errno));
}

static ssize_t tls_up_read(gw_tunnel *t, uint8_t *p, size_t n) {
    int r = SSL_read(t->upstream.ssl, p, (int)n);
    if (r > 0) {
        t->upstream_io.read_wants_write = 0;
        if (!t->upstream.confirmed) {
            gw_upstream_confirm(&t->upstream);  // the server's first data: it accepted us
        }
        return r;
    }
    int e = SSL_get_error(t->upstream.ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        t->upstream_io.readable = 0;
        t->upstream_io.read_wants_write = 0;
        return IO_AGAIN;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        t->upstream_io.read_wants_write = 1;
        t->upstream_io.writable = 0;
        return IO_AGAIN;
    }
    if (!t->upstream.confirmed && tunnel_is_plain_stream(t) && !t->client_first) {
        // The server ended a forward tunnel before sending anything, while its client was
        // still there: it rejected us. (If the client closed first, the server only
        // followed it.)
        char why[600];
        gw_err err = gw_upstream_read_failure(&t->upstream, r, why, sizeof(why));
        tunnel_upstream_failed(t, gw_err_describe(err)->result, why);
        return IO_FAILED;
    }
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && r == 0)) {
        t->upstream_io.truncated = e != SSL_ERROR_ZERO_RETURN;  // a plain EOF, no close_notify
        ERR_clear_error();
        return 0;
    }
    char reason[300];
    uint32_t code = ERR_peek_error();
    if (t->upstream.alert >= 0) {
        snprintf(reason, sizeof(reason), "upstream sent TLS alert %s", gw_tls_alert_name(t->upstream.alert));
    } else {
        snprintf(reason, sizeof(reason), "TLS read from upstream failed: %s",
                 code ? ERR_reason_error_string(code) : strerror(errno));
    }
    ERR_clear_error();
    tunnel_upstream_failed(t, GW_RESULT_UPSTREAM_ERROR, reason);
    return IO_FAILED;
}

static ssize_t tls_up_write(gw_tunnel *t, const uint8_t *p, size_t n) {
    int r = SSL_write(t->upstream.ssl, p, (int)n);
    if (r > 0) {
        t->upstream_io.write_wants_read = 0;
        return r;
    }
    int e = SSL_get_error(t->upstream.ssl, r);
    if (e == SSL_ERROR_WANT_WRITE) {
        t->upstream_io.writable = 0;
        t->upstream_io.write_wants_read = 0;
        return IO_AGAIN;
    }
    if (e == SSL_ERROR_WANT_READ) {
        t->upstream_io.write_wants_read = 1;
        t->upstream_io.readable = 0;
        return IO_AGAIN;
    }
    char reason[300];
    uint32_t code = ERR_peek_error();
    snprintf(reason, sizeof(reason), "TLS write to upstream failed: %s",
             code ? ERR_reason_error_string(code) : strerror(errno));
    ERR_clear_error();
    return up_write_lost(t, GW_RESULT_UPSTREAM_ERROR, reason);
}

// Over TLS a read may need the socket writable and a write readable (the flags say so).
static int up_can_read(const gw_tunnel *t) {
    return !t->upstream_io.eof &&
           (t->upstream_io.readable || (t->upstream_io.read_wants_write && t->upstream_io.writable));
}

static int up_can_write(const gw_tunnel *t) {
    return t->upstream_io.writable || (t->upstream_io.write_wants_read && t->upstream_io.readable);
}

static const side_ops client_ops = {client_read, client_write, client_can_read, client_can_write};
static const side_ops plain_up_ops = {plain_up_read, plain_up_write, up_can_read, up_can_write};
static const side_ops tls_up_ops = {tls_up_read, tls_up_write, up_can_read, up_can_write};

enum { CLIENT = 0, UPSTREAM = 1 };

static const side_ops *ops_of(const gw_tunnel *t, int which) {
    return which == CLIENT ? &client_ops : t->upstream.ssl != NULL ? &tls_up_ops : &plain_up_ops;
}

// read_target is where a read from a side that |can_read| goes: *|dst| (taken from the pool
// if need be) with its free room in *|out_room|, or NULL when there is nothing to read or no
// room. A side with nothing to read gives its empty buffer back: an idle tunnel holds none
// (the request's buffer, too, once it was parsed).
static gw_buf *read_target(gw_tunnel *t, gw_buf **dst, int can_read, size_t *out_room) {
    if (!can_read) {
        tunnel_release_if_empty(t, dst);
        return NULL;
    }
    if (*dst == NULL && (*dst = gw_buf_get(&t->host->pool)) == NULL) {
        return NULL;
    }
    *out_room = gw_buf_room(*dst);
    return *out_room > 0 ? *dst : NULL;
}

// side_read reads from side |which| into *|dst|. Returns 1 on progress (bytes, or the end
// of the stream), 0 for nothing, -1 if the tunnel failed or closed.
static int side_read(gw_tunnel *t, int which, gw_buf **dst) {
    const side_ops *ops = ops_of(t, which);
    size_t room;
    gw_buf *b = read_target(t, dst, ops->can_read(t), &room);
    if (b == NULL) {
        return 0;
    }
    ssize_t n = ops->read(t, b->data + b->end, room);
    if (n == IO_FAILED) {
        return -1;
    }
    if (n == IO_AGAIN || n == 0) {
        if (n == 0) {
            (which == CLIENT ? &t->client_io : &t->upstream_io)->eof = 1;
            if (which == CLIENT && t->up_bytes == 0 && gw_buf_len(t->to_up) == 0 && !t->upstream_io.eof &&
                t->down_bytes == 0) {
                t->client_first = 1;  // closed before sending anything (a TCP health check)
            }
        }
        tunnel_release_if_empty(t, dst);  // an idle tunnel holds no buffer
        return n == 0;
    }
    b->end += (uint32_t)n;
    t->last_activity = gw_loop_now(t->host->loop);
    return 1;
}

// side_write writes *|src| toward side |which|, giving the buffer back once it is empty.
// Returns 1 on progress, 0 for nothing, -1 if the tunnel failed or closed.
static int side_write(gw_tunnel *t, int which, gw_buf **src) {
    const side_ops *ops = ops_of(t, which);
    if (which == UPSTREAM && t->upstream_io.write_dead) {
        tunnel_release_if_empty(t, src);
        if (*src != NULL) {
            gw_buf_put(&t->host->pool, *src);  // the upstream takes nothing more: dropped
            *src = NULL;
        }
        return 0;
    }
    size_t len = gw_buf_len(*src);
    if (len == 0 || !ops->can_write(t)) {
        return 0;
    }
    ssize_t n = ops->write(t, (*src)->data + (*src)->start, len);
    if (n == IO_FAILED) {
        return -1;
    }
    if (n == IO_AGAIN) {
        return 0;
    }
    (*src)->start += (uint32_t)n;
    if (which == UPSTREAM) {
        t->up_bytes += (uint64_t)n;
    } else if (t->state == T_RELAY) {
        t->down_bytes += (uint64_t)n;  // http_proxy counts its own rewritten bytes
    }
    t->last_activity = gw_loop_now(t->host->loop);
    if (gw_buf_len(*src) == 0) {
        gw_buf_put(&t->host->pool, *src);
        *src = NULL;
    }
    return 1;
}

int tunnel_client_read(gw_tunnel *t, gw_buf **dst) {
    return side_read(t, CLIENT, dst);
}

int tunnel_up_read(gw_tunnel *t, gw_buf **dst) {
    return side_read(t, UPSTREAM, dst);
}

int tunnel_relay_up_write(gw_tunnel *t) {
    return side_write(t, UPSTREAM, &t->to_up);
}

int tunnel_relay_client_write(gw_tunnel *t) {
    return side_write(t, CLIENT, &t->to_down);
}

// shut_upstream passes the client's EOF on: close_notify over TLS, then FIN.
static void shut_upstream(gw_tunnel *t) {
    if (t->upstream.ssl != NULL) {
        int r = SSL_shutdown(t->upstream.ssl);
        if (r < 0) {
            int e = SSL_get_error(t->upstream.ssl, r);
            ERR_clear_error();
            if (e == SSL_ERROR_WANT_WRITE) {
                t->upstream_io.writable = 0;
                return;  // retried when writable
            }
        }
    }
    shutdown(t->upstream.fd, SHUT_WR);
    t->upstream_io.shut = 1;
}

// flush_and_close moves a relaying tunnel whose upstream is gone to T_FLUSHING: what is
// left for the client goes out, then FIN (or the reset, with flush_reset), bounded by the
// flush deadline.
static void flush_and_close(gw_tunnel *t) {
    gw_watcher_remove(t->host->loop, &t->upstream_io.w);  // closed with the tunnel (its TLS facts are logged)
    gw_buf_put(&t->host->pool, t->to_up);
    t->to_up = NULL;
    t->state = T_FLUSHING;
    gw_timer_stop(t->host->loop, &t->yield_timer);
    gw_timer_start(t->host->loop, &t->timer, 2000);
    tunnel_flush_last(t);
}

void tunnel_relay_upstream_failed(gw_tunnel *t, gw_result result, const char *reason) {
    if (!t->upstream_io.write_dead || (t->result == GW_RESULT_NONE || t->result == GW_RESULT_OK)) {
        t->result = result;
        tunnel_clear_reason(t);
        tunnel_set_reason(t, "%s", reason);
    }
    t->upstream_io.eof = 1;
    t->flush_reset = 1;
    flush_and_close(t);
}

void tunnel_relay(gw_tunnel *t) {
    int progress, rounds = 0;
    do {
        progress = 0;
        // One routine for both directions: from the client toward upstream, then back.
        for (int from = CLIENT; from <= UPSTREAM; from++) {
            gw_buf **b = from == CLIENT ? &t->to_up : &t->to_down;
            int r = side_read(t, from, b);
            if (r < 0) {
                return;
            }
            progress |= r;
            if ((r = side_write(t, !from, b)) < 0) {
                return;
            }
            progress |= r;
        }
        if (t->client_io.eof && gw_buf_len(t->to_up) == 0 && !t->upstream_io.shut) {
            shut_upstream(t);
        }
        if (t->upstream_io.eof && gw_buf_len(t->to_down) == 0 && !t->client_io.shut) {
            shutdown(t->client_fd, SHUT_WR);
            t->client_io.shut = 1;
        }
        if (t->upstream_io.write_dead && t->upstream_io.eof) {
            // The upstream is done both ways while the client is still sending into the
            // void: flush what the upstream sent, then end at once (as the upstream did),
            // once the client's socket has taken every byte. Draining a client that keeps
            // writing would only make it wait out the flush deadline to learn the end.
            t->flush_reset = 1;
            flush_and_close(t);
            return;
        }
        if (t->client_io.eof && t->upstream_io.eof && t->upstream_io.shut && t->client_io.shut) {
            if (t->client_first && t->up_bytes == 0) {
                tunnel_close(t, GW_RESULT_CLIENT_CLOSED, "client closed the connection before sending anything");
            } else {
                tunnel_close(t, GW_RESULT_OK, NULL);
            }
            return;
        }
    } while (progress && ++rounds < 16);
    // Interest follows buffers: a round ends holding no empty buffer (an idle tunnel holds none).
    assert(t->to_up == NULL || gw_buf_len(t->to_up) > 0);
    assert(t->to_down == NULL || gw_buf_len(t->to_down) > 0);
    if (progress) {
        // Let other tunnels run; continue right after this batch.
        gw_timer_start(t->host->loop, &t->yield_timer, 0);
    }
}

void tunnel_flush_last(gw_tunnel *t) {
    if (tunnel_relay_client_write(t) < 0) {
        return;
    }
    while (gw_buf_len(t->to_down) > 0 && t->client_io.writable) {
        if (tunnel_relay_client_write(t) <= 0) {
            break;
        }
    }
    if (gw_buf_len(t->to_down) > 0) {
        return;
    }
    if (t->flush_reset) {
        // Pass the upstream's reset on only once the client has everything: a reset
        // throws away what is still in our socket's send queue.
        int queued = 0;
        if (ioctl(t->client_fd, SIOCOUTQ, &queued) == 0 && queued > 0) {
            gw_timer_start(t->host->loop, &t->yield_timer, 5);
            return;
        }
        gw_socket_reset(t->client_fd);
        tunnel_close(t, GW_RESULT_NONE, NULL);
        return;
    }
    if (!t->client_io.shut) {
        shutdown(t->client_fd, SHUT_WR);
        t->client_io.shut = 1;
    }
    // Drain until the client closes (or the timer ends it), with the relay's budget: a
    // client that keeps streaming after its refusal gets 16 reads per turn, then the
    // other tunnels run.
    char sink[4096];
    int reads = 0;
    while (t->client_io.readable) {
        if (++reads > 16) {
            gw_timer_start(t->host->loop, &t->yield_timer, 0);
            return;
        }
        ssize_t n = read(t->client_fd, sink, sizeof(sink));
        if (n > 0) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            t->client_io.readable = errno == EINTR;
            return;
        }
        tunnel_close(t, GW_RESULT_NONE, NULL);
        return;
    }
}

// tunnel_release_if_empty returns an emptied buffer to the pool: an idle connection holds none.
void tunnel_release_if_empty(gw_tunnel *t, gw_buf **b) {
    if (*b != NULL && gw_buf_len(*b) == 0) {
        gw_buf_put(&t->host->pool, *b);
        *b = NULL;
    }
}
