// relay: a pump of bytes both ways once established, with backpressure (interest follows
// buffers), half-close passed on as FIN / close_notify, resets passed on as resets, and the
// flush of the last bytes before a close. It knows neither TLS nor HTTP: the upstream is
// read and written through its transport (gateway/upstream/transport.h).
#include "gateway/tunnel/internal.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include "gateway/upstream/transport.h"

// ---- the two sides ----
//
// Each side's read and write answer in one vocabulary: GW_IO_DATA, GW_IO_EOF (read
// only), GW_IO_WANT_* (wait: the side's readiness flags are updated here), or
// GW_IO_FAILED (*|out| says how the tunnel goes on). One read routine and one write
// routine then serve both directions, as nginx's ngx_stream_proxy_process does.

enum { CLIENT = 0, UPSTREAM = 1 };

// Over TLS a read may need the socket writable and a write readable (the flags say so).
static int can_read(const gw_tunnel *t, int which) {
    const side *s = which == CLIENT ? &t->client_io : &t->upstream_io;
    return !s->eof && (s->readable || (s->read_wants_write && s->writable));
}

static int can_write(const gw_tunnel *t, int which) {
    const side *s = which == CLIENT ? &t->client_io : &t->upstream_io;
    return s->writable || (s->write_wants_read && s->readable);
}

// wait_for records what an unfinished call waits for.
static void wait_for(side *s, gw_io_kind kind, int reading) {
    if (reading) {
        s->read_wants_write = kind == GW_IO_WANT_WRITE;
    } else {
        s->write_wants_read = kind == GW_IO_WANT_READ;
    }
    if (kind == GW_IO_WANT_READ) {
        s->readable = 0;
    } else {
        s->writable = 0;
    }
}

tunnel_step tunnel_client_failure(gw_tunnel *t, const tunnel_io_failure *f) {
    if (!f->reading && !tunnel_flowing(t)) {
        return tunnel_end(t, GW_RESULT_NONE, END_CLOSE, f->reason);  // a reply the client did not take
    }
    return tunnel_end(t, f->result, END_RESET_UPSTREAM, f->reason);  // its reset, passed on
}

// relay_failure decides what a failed read or write means for a relaying tunnel.
static tunnel_step relay_failure(gw_tunnel *t, const tunnel_io_failure *f) {
    if (!f->upstream) {
        return tunnel_client_failure(t, f);
    }
    if (!f->reading) {
        // The upstream no longer takes our bytes (it closed or reset while the client was
        // still sending, as redis does after a protocol error). The tunnel keeps reading
        // what the upstream sent before, for the client, and drops what the client sends
        // on; the read that finds the upstream's end then flushes and closes.
        t->result = f->result;
        tunnel_set_reason(t,
                          "upstream stopped taking data while the client was still sending (%s); what it had "
                          "sent was passed on",
                          f->reason);
        t->upstream_io.write_dead = 1;
        t->upstream_io.shut = 1;  // nothing more goes that way, not even close_notify
        t->upstream_io.writable = 0;
        t->upstream_io.readable = 1;  // what it sent before its end is still to be read
        gw_buf_put(&t->host->pool, t->to_up);
        t->to_up = NULL;
        return STEP_NEXT;
    }
    if (!t->upstream_io.write_dead || t->result == GW_RESULT_NONE || t->result == GW_RESULT_OK) {
        t->result = f->result;
        tunnel_clear_reason(t);
        tunnel_set_reason(t, "%s", f->reason);
    }
    t->upstream_io.eof = 1;
    return tunnel_flush_then_reset(t);
}

// read_target is where a read from a side goes: *|dst| (taken from the pool if need be),
// or NULL when there is nothing to read or no room. A side with nothing to read gives its
// empty buffer back: an idle tunnel holds none (the request's buffer, too, once parsed).
static gw_buf *read_target(gw_tunnel *t, gw_buf **dst, int readable) {
    if (!readable) {
        tunnel_release_if_empty(t, dst);
        return NULL;
    }
    if (*dst == NULL && (*dst = gw_buf_get(&t->host->pool)) == NULL) {
        return NULL;
    }
    return gw_buf_room(*dst) > 0 ? *dst : NULL;
}

// side_read reads from side |which| into *|dst|. Returns 1 on progress (bytes, or the end
// of the stream), 0 for nothing, -1 with *|f| saying what failed.
static int side_read(gw_tunnel *t, int which, gw_buf **dst, tunnel_io_failure *f) {
    side *s = which == CLIENT ? &t->client_io : &t->upstream_io;
    gw_buf *b = read_target(t, dst, can_read(t, which));
    if (b == NULL) {
        return 0;
    }
    gw_io io;
    if (which == CLIENT) {
        io = gw_socket_read(t->client_fd, b->data + b->end, gw_buf_room(b), GW_RESULT_CLIENT_RESET, f->reason,
                            sizeof(f->reason));
    } else {
        // A tunnel the server ended before sending anything after a full handshake it had
        // not confirmed (a forward tunnel's, an http_proxy request's, or one to a server
        // that accepted this identity before), while its client was still there, was
        // rejected (if the client closed first, the server only followed).
        io = gw_upstream_read(&t->upstream, b->data + b->end, gw_buf_room(b), !t->client_first, f->reason,
                              sizeof(f->reason));
    }
    switch (io.kind) {
        case GW_IO_DATA:
            s->read_wants_write = 0;
            if (which == CLIENT && io.n < gw_buf_room(b) && !s->rdhup) {
                // Less than asked: the socket is empty now (what comes later is an event of
                // its own; a FIN that came before said EPOLLRDHUP). No read to hear EAGAIN.
                s->readable = 0;
            }
            b->end += (uint32_t)io.n;
            t->last_activity = gw_loop_now(t->host->loop);
            return 1;
        case GW_IO_WANT_READ:
        case GW_IO_WANT_WRITE:
            wait_for(s, io.kind, 1);
            tunnel_release_if_empty(t, dst);
            return 0;
        case GW_IO_EOF:
            s->eof = 1;
            s->truncated = io.truncated;
            if (which == CLIENT && t->up_bytes == 0 && gw_buf_len(t->to_up) == 0 && !t->upstream_io.eof &&
                t->down_bytes == 0) {
                t->client_first = 1;  // closed before sending anything (a TCP health check)
            }
            tunnel_release_if_empty(t, dst);
            return 1;
        default:
            f->upstream = which == UPSTREAM, f->reading = 1, f->result = io.result, f->err = io.err;
            return -1;
    }
}

// side_write writes *|src| toward side |which|, giving the buffer back once it is empty.
// Returns 1 on progress, 0 for nothing, -1 with *|f| saying what failed.
static int side_write(gw_tunnel *t, int which, gw_buf **src, tunnel_io_failure *f) {
    side *s = which == CLIENT ? &t->client_io : &t->upstream_io;
    if (which == UPSTREAM && s->write_dead) {
        gw_buf_put(&t->host->pool, *src);  // the upstream takes nothing more: dropped
        *src = NULL;
        return 0;
    }
    size_t len = gw_buf_len(*src);
    if (len == 0 || !can_write(t, which)) {
        return 0;
    }
    const uint8_t *p = (*src)->data + (*src)->start;
    gw_io io = which == CLIENT
                   ? gw_socket_write(t->client_fd, p, len, GW_RESULT_CLIENT_RESET, f->reason, sizeof(f->reason))
                   : gw_upstream_write(&t->upstream, p, len, f->reason, sizeof(f->reason));
    if (io.kind == GW_IO_WANT_READ || io.kind == GW_IO_WANT_WRITE) {
        wait_for(s, io.kind, 0);
        return 0;
    }
    if (io.kind != GW_IO_DATA) {
        f->upstream = which == UPSTREAM, f->reading = 0, f->result = io.result, f->err = GW_ERR_NONE;
        return -1;
    }
    s->write_wants_read = 0;
    (*src)->start += (uint32_t)io.n;
    if (which == UPSTREAM) {
        t->up_bytes += io.n;
    } else if (t->state == T_RELAY) {
        t->down_bytes += io.n;  // http_proxy counts its own rewritten bytes
    }
    t->last_activity = gw_loop_now(t->host->loop);
    if (gw_buf_len(*src) == 0) {
        gw_buf_put(&t->host->pool, *src);
        *src = NULL;
    }
    return 1;
}

int tunnel_client_read(gw_tunnel *t, gw_buf **dst, tunnel_io_failure *f) {
    return side_read(t, CLIENT, dst, f);
}

int tunnel_up_read(gw_tunnel *t, gw_buf **dst, tunnel_io_failure *f) {
    return side_read(t, UPSTREAM, dst, f);
}

int tunnel_up_write(gw_tunnel *t, gw_buf **src, tunnel_io_failure *f) {
    return side_write(t, UPSTREAM, src, f);
}

int tunnel_client_write(gw_tunnel *t, gw_buf **src, tunnel_io_failure *f) {
    return side_write(t, CLIENT, src, f);
}

// shut_upstream passes the client's EOF on: close_notify over TLS, then FIN. When the
// upstream's end came already, the tunnel closes right after and close() sends the FIN.
static void shut_upstream(gw_tunnel *t) {
    int closing = t->upstream_io.eof && t->client_io.shut;
    if (gw_upstream_shutdown(&t->upstream, closing).kind == GW_IO_WANT_WRITE) {
        t->upstream_io.writable = 0;
        return;  // retried when writable
    }
    t->upstream_io.shut = 1;
}

// hold_close_notify says whether the client's EOF waits before going on: a TLS 1.3 server
// sends its session ticket after the handshake, and a client that closes at once would
// otherwise have our close_notify go first (after which the ticket is ignored, and the
// next tunnel cannot resume). Only our close_notify waits, about a round trip; the
// client's data has gone already.
static int hold_close_notify(gw_tunnel *t) {
    if (t->upstream_io.eof) {
        return 0;  // the server has ended: no ticket is coming
    }
    uint64_t now = gw_loop_now(t->host->loop);
    if (t->close_notify_at == 0) {
        unsigned ms = gw_upstream_ticket_wait_ms(&t->upstream);
        if (ms == 0) {
            return 0;
        }
        t->close_notify_at = now + ms;
    }
    if (t->upstream.ticket_seen || now >= t->close_notify_at) {
        return 0;
    }
    gw_timer_start(t->host->loop, &t->yield_timer, t->close_notify_at - now);
    return 1;
}

tunnel_step tunnel_flush_then_reset(gw_tunnel *t) {
    gw_watcher_remove(t->host->loop, &t->upstream_io.w);  // closed with the tunnel (its TLS facts are logged)
    gw_buf_put(&t->host->pool, t->to_up);
    t->to_up = NULL;
    t->state = T_FLUSHING;
    t->flush_reset = 1;
    gw_timer_stop(t->host->loop, &t->yield_timer);
    tunnel_set_timer(t, 2000);
    return STEP_NEXT;
}

tunnel_step tunnel_phase_relay(gw_tunnel *t) {
    int progress, rounds = 0;
    tunnel_io_failure f;
    do {
        progress = 0;
        // One routine for both directions: from the client toward upstream, then back.
        for (int from = CLIENT; from <= UPSTREAM; from++) {
            gw_buf **b = from == CLIENT ? &t->to_up : &t->to_down;
            int r = side_read(t, from, b, &f);
            if (r < 0) {
                return relay_failure(t, &f);
            }
            progress |= r;
            if ((r = side_write(t, !from, b, &f)) < 0) {
                return relay_failure(t, &f);
            }
            progress |= r;
        }
        if (t->client_io.eof && gw_buf_len(t->to_up) == 0 && !t->upstream_io.shut && !hold_close_notify(t)) {
            shut_upstream(t);
        }
        if (t->upstream_io.eof && gw_buf_len(t->to_down) == 0 && !t->client_io.shut) {
            if (!t->client_io.eof || !t->upstream_io.shut) {
                shutdown(t->client_fd, SHUT_WR);  // else the tunnel closes now: close() sends the FIN
            }
            t->client_io.shut = 1;
        }
        if (t->upstream_io.write_dead && t->upstream_io.eof) {
            // The upstream is done both ways while the client is still sending into the
            // void: flush what the upstream sent, then end at once (as the upstream did),
            // once the client's socket has taken every byte. Draining a client that keeps
            // writing would only make it wait out the flush deadline to learn the end.
            return tunnel_flush_then_reset(t);
        }
        if (t->client_io.eof && t->upstream_io.eof && t->upstream_io.shut && t->client_io.shut) {
            if (t->client_first && t->up_bytes == 0) {
                return tunnel_end(t, GW_RESULT_CLIENT_CLOSED, END_CLOSE,
                                  "client closed the connection before sending anything");
            }
            return tunnel_end(t, GW_RESULT_OK, END_CLOSE, NULL);
        }
    } while (progress && ++rounds < 16);
    // Interest follows buffers: a round ends holding no empty buffer (an idle tunnel holds none).
    assert(t->to_up == NULL || gw_buf_len(t->to_up) > 0);
    assert(t->to_down == NULL || gw_buf_len(t->to_down) > 0);
    if (progress) {
        tunnel_yield(t);  // let other tunnels run; continue right after this batch
    }
    return STEP_WAIT;
}

tunnel_step tunnel_phase_flush(gw_tunnel *t) {
    tunnel_io_failure f;
    while (gw_buf_len(t->to_down) > 0 && t->client_io.writable) {
        int r = side_write(t, CLIENT, &t->to_down, &f);
        if (r < 0) {
            return tunnel_client_failure(t, &f);
        }
        if (r == 0) {
            break;
        }
    }
    if (gw_buf_len(t->to_down) > 0) {
        return STEP_WAIT;
    }
    if (t->flush_reset) {
        // Pass the upstream's reset on only once the client has everything: a reset
        // throws away what is still in our socket's send queue.
        int queued = 0;
        if (ioctl(t->client_fd, SIOCOUTQ, &queued) == 0 && queued > 0) {
            gw_timer_start(t->host->loop, &t->yield_timer, 5);
            return STEP_WAIT;
        }
        return tunnel_end(t, GW_RESULT_NONE, END_RESET_CLIENT, NULL);
    }
    if (t->flush_close) {
        // Nothing more from the client since its last request (the socket was empty at
        // the last read, or one read now says so): close() sends the FIN after the response.
        char b[512];
        ssize_t n = t->client_io.readable ? read(t->client_fd, b, sizeof(b)) : -1;
        if (!t->client_io.readable || n == 0 || (n < 0 && errno == EAGAIN)) {
            return tunnel_end(t, GW_RESULT_NONE, END_CLOSE, NULL);
        }
        t->flush_close = 0;  // it sent more: wait for its close
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
            tunnel_yield(t);
            return STEP_WAIT;
        }
        ssize_t n = read(t->client_fd, sink, sizeof(sink));
        if (n > 0) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            t->client_io.readable = errno == EINTR;
            return STEP_WAIT;
        }
        return tunnel_end(t, GW_RESULT_NONE, END_CLOSE, NULL);
    }
    return STEP_WAIT;
}

void tunnel_release_if_empty(gw_tunnel *t, gw_buf **b) {
    if (*b != NULL && gw_buf_len(*b) == 0) {
        gw_buf_put(&t->host->pool, *b);
        *b = NULL;
    }
}
