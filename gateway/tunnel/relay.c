// relay: bytes both ways once established, with backpressure (interest follows buffers),
// half-close passed on as FIN / close_notify, resets passed on as resets, and the flush of
// an error reply.
#include "gateway/tunnel/internal.h"

// ---- relay ----

static int up_can_read(const gw_tunnel *t) {
    return t->upstream_io.readable || (t->upstream_io.read_wants_write && t->upstream_io.writable);
}

static int up_can_write(const gw_tunnel *t) {
    return t->upstream_io.writable || (t->upstream_io.write_wants_read && t->upstream_io.readable);
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

// Reads from the client into *|dst| (to_up, or from_client for HTTP). Returns 1 on
// progress, -1 if the tunnel closed.
int tunnel_client_read(gw_tunnel *t, gw_buf **dst) {
    size_t room;
    gw_buf *b = read_target(t, dst, !t->client_io.eof && t->client_io.readable, &room);
    if (b == NULL) {
        return 0;
    }
    ssize_t n = read(t->client_fd, b->data + b->end, room);
    if (n > 0) {
        b->end += (uint32_t)n;
        t->last_activity = gw_loop_now(t->host->loop);
        return 1;
    }
    if (n == 0) {
        t->client_io.eof = 1;
        tunnel_release_if_empty(t, dst);
        return 1;
    }
    if (errno == EAGAIN || errno == EINTR) {
        t->client_io.readable = errno == EINTR;
        tunnel_release_if_empty(t, dst);  // an idle tunnel holds no buffer
        return 0;
    }
    tunnel_client_failed(t, strerror(errno));
    return -1;
}

int tunnel_relay_up_write(gw_tunnel *t) {
    size_t len = gw_buf_len(t->to_up);
    if (len == 0 || !up_can_write(t)) {
        return 0;
    }
    const uint8_t *p = t->to_up->data + t->to_up->start;
    ssize_t n;
    if (t->upstream.ssl != NULL) {
        int r = SSL_write(t->upstream.ssl, p, (int)len);
        if (r <= 0) {
            int e = SSL_get_error(t->upstream.ssl, r);
            if (e == SSL_ERROR_WANT_WRITE) {
                t->upstream_io.writable = 0;
                t->upstream_io.write_wants_read = 0;
                return 0;
            }
            if (e == SSL_ERROR_WANT_READ) {
                t->upstream_io.write_wants_read = 1;
                t->upstream_io.readable = 0;
                return 0;
            }
            char reason[300];
            uint32_t code = ERR_peek_error();
            snprintf(reason, sizeof(reason), "TLS write to upstream failed: %s",
                     code ? ERR_reason_error_string(code) : strerror(errno));
            ERR_clear_error();
            tunnel_upstream_failed(t, GW_RESULT_UPSTREAM_ERROR, reason);
            return -1;
        }
        t->upstream_io.write_wants_read = 0;
        n = r;
    } else {
        n = send(t->upstream.fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                t->upstream_io.writable = errno == EINTR;
                return 0;
            }
            tunnel_upstream_failed(t, GW_RESULT_UPSTREAM_RESET, strerror(errno));
            return -1;
        }
    }
    t->to_up->start += (uint32_t)n;
    t->up_bytes += (uint64_t)n;
    t->last_activity = gw_loop_now(t->host->loop);
    if (gw_buf_len(t->to_up) == 0) {
        gw_buf_put(&t->host->pool, t->to_up);
        t->to_up = NULL;
    }
    return 1;
}

// Reads from upstream into *|dst| (to_down, or from_up for HTTP).
int tunnel_up_read(gw_tunnel *t, gw_buf **dst) {
    size_t room;
    gw_buf *b = read_target(t, dst, !t->upstream_io.eof && up_can_read(t), &room);
    if (b == NULL) {
        return 0;
    }
    uint8_t *p = b->data + b->end;
    ssize_t n;
    if (t->upstream.ssl != NULL) {
        int r = SSL_read(t->upstream.ssl, p, (int)room);
        if (r <= 0) {
            int e = SSL_get_error(t->upstream.ssl, r);
            if (e == SSL_ERROR_WANT_READ) {
                t->upstream_io.readable = 0;
                t->upstream_io.read_wants_write = 0;
                tunnel_release_if_empty(t, dst);  // an idle tunnel holds no buffer
                return 0;
            }
            if (e == SSL_ERROR_WANT_WRITE) {
                t->upstream_io.read_wants_write = 1;
                t->upstream_io.writable = 0;
                tunnel_release_if_empty(t, dst);
                return 0;
            }
            if (!t->upstream.confirmed && t->proto == P_FORWARD_LISTENER) {
                // The server ended a forward tunnel before sending anything: it rejected us.
                char why[600];
                gw_err err = gw_upstream_read_failure(&t->upstream, r, why, sizeof(why));
                tunnel_upstream_failed(t, gw_err_describe(err)->result, why);
                return -1;
            }
            if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && r == 0)) {
                t->upstream_io.eof = 1;  // close_notify, or a plain EOF
                t->upstream_io.truncated = e != SSL_ERROR_ZERO_RETURN;
                ERR_clear_error();
                tunnel_release_if_empty(t, dst);
                return 1;
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
            return -1;
        }
        t->upstream_io.read_wants_write = 0;
        if (!t->upstream.confirmed) {
            gw_upstream_confirm(&t->upstream);  // the server's first data: it accepted us
        }
        n = r;
    } else {
        n = read(t->upstream.fd, p, room);
        if (n == 0) {
            t->upstream_io.eof = 1;
            tunnel_release_if_empty(t, dst);
            return 1;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                t->upstream_io.readable = errno == EINTR;
                tunnel_release_if_empty(t, dst);
                return 0;
            }
            tunnel_upstream_failed(t, GW_RESULT_UPSTREAM_RESET, strerror(errno));
            return -1;
        }
    }
    b->end += (uint32_t)n;
    t->last_activity = gw_loop_now(t->host->loop);
    return 1;
}

int tunnel_relay_client_write(gw_tunnel *t) {
    size_t len = gw_buf_len(t->to_down);
    if (len == 0 || !t->client_io.writable) {
        return 0;
    }
    ssize_t n = send(t->client_fd, t->to_down->data + t->to_down->start, len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) {
            t->client_io.writable = errno == EINTR;
            return 0;
        }
        if (t->state == T_RELAY || t->state == T_HTTP_PROXY) {
            tunnel_client_failed(t, strerror(errno));
        } else {
            tunnel_close(t, GW_RESULT_NONE, strerror(errno));
        }
        return -1;
    }
    t->to_down->start += (uint32_t)n;
    if (t->state == T_RELAY) {
        t->down_bytes += (uint64_t)n;
    }
    t->last_activity = gw_loop_now(t->host->loop);
    if (gw_buf_len(t->to_down) == 0) {
        gw_buf_put(&t->host->pool, t->to_down);
        t->to_down = NULL;
    }
    return 1;
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

void tunnel_relay(gw_tunnel *t) {
    int progress, rounds = 0;
    do {
        progress = 0;
        int r;
        if ((r = tunnel_client_read(t, &t->to_up)) < 0 || (progress |= r, (r = tunnel_relay_up_write(t)) < 0)) {
            return;
        }
        progress |= r;
        if ((r = tunnel_up_read(t, &t->to_down)) < 0 || (progress |= r, (r = tunnel_relay_client_write(t)) < 0)) {
            return;
        }
        progress |= r;
        if (t->client_io.eof && gw_buf_len(t->to_up) == 0 && !t->upstream_io.shut) {
            shut_upstream(t);
        }
        if (t->upstream_io.eof && gw_buf_len(t->to_down) == 0 && !t->client_io.shut) {
            shutdown(t->client_fd, SHUT_WR);
            t->client_io.shut = 1;
        }
        if (t->client_io.eof && t->upstream_io.eof && t->upstream_io.shut && t->client_io.shut) {
            tunnel_close(t, GW_RESULT_OK, NULL);
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
    if (!t->client_io.shut) {
        shutdown(t->client_fd, SHUT_WR);
        t->client_io.shut = 1;
    }
    // Drain until the client closes (or the timer ends it).
    char sink[4096];
    while (t->client_io.readable) {
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
