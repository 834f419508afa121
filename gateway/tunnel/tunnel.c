// tunnel: a tunnel's life around one driver (ARCHITECTURE.md, "The driver"): accept, the
// event sources that record what happened, tunnel_advance that runs one phase function
// after another until one waits, the answer to a failure in the client's protocol, and the
// one way out (close, with the access-log line).
#include "gateway/tunnel/internal.h"

#include <netinet/tcp.h>

atomic_int gw_active_tunnels;
atomic_int gw_rejecting_tunnels;
atomic_int gw_share_counts[GW_SHARE_BUCKETS];

unsigned gw_share_bucket(const gw_client_info *client) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over a tag and the key's bytes
    uint8_t key[17] = {0};
    size_t n;
    if (client->caller != GW_CALLER_NONE) {
        key[0] = 'u';
        memcpy(key + 1, &client->caller, 4);
        n = 5;
    } else if (client->addr->sa_family == AF_INET && !gw_peer_is_loopback(client->addr)) {
        key[0] = '4';
        memcpy(key + 1, &((const struct sockaddr_in *)client->addr)->sin_addr, 4);
        n = 5;
    } else if (client->addr->sa_family == AF_INET6 && !gw_peer_is_loopback(client->addr)) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)client->addr;
        int mapped = IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr);
        key[0] = mapped ? '4' : '6';
        memcpy(key + 1, s6->sin6_addr.s6_addr + (mapped ? 12 : 0), mapped ? 4 : 8);
        n = mapped ? 5 : 9;
    } else {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        h = (h ^ key[i]) * 1099511628211ull;
    }
    return (unsigned)(h % GW_SHARE_BUCKETS) + 1;
}

gw_tunnel *gw_tunnel_next(gw_tunnel *t) {
    return t->next;
}

// ---- closing ----

static void tunnel_free(void *p) {
    free(((gw_tunnel *)p)->reason);
    free(p);
}

static void tunnel_close(gw_tunnel *t, gw_result result, const char *reason) {
    if (t->state == T_CLOSED) {
        return;
    }
    gw_loop *loop = t->host->loop;
    if (result != GW_RESULT_NONE && (t->result == GW_RESULT_NONE || t->result == GW_RESULT_OK)) {
        t->result = result;
    }
    if (reason != NULL && tunnel_reason_of(t) == NULL) {
        tunnel_set_reason(t, "%s", reason);
    }
    if (!(t->door->exchanges && t->http.http_idle)) {
        tunnel_log_access(t);
    }
    tunnel_uncount(t, 1);
    t->state = T_CLOSED;
    gw_timer_stop(loop, &t->timer);
    gw_timer_stop(loop, &t->yield_timer);
    res_query_detach(t->dial.query);
    t->dial.query = NULL;
    tunnel_drop_attempts(t);
    gw_passcheck_cancel(t->front.auth_job);
    t->front.auth_job = NULL;
    gw_watcher_forget(loop, &t->client_io.w);  // both closed right here: close() unregisters
    if (t->upstream_io.w.fd == t->upstream.fd) {
        gw_watcher_forget(loop, &t->upstream_io.w);
    } else {
        gw_watcher_remove(loop, &t->upstream_io.w);
    }
    close(t->client_fd);
    gw_upstream_close(&t->upstream);
    gw_buf_put(&t->host->pool, t->to_up);
    gw_buf_put(&t->host->pool, t->to_down);
    gw_buf_put(&t->host->pool, t->http.from_client);
    gw_buf_put(&t->host->pool, t->http.from_up);
    gw_buf_put(&t->host->pool, t->http.replay);
    t->to_up = t->to_down = t->http.from_client = t->http.from_up = t->http.replay = NULL;
    if (t->admission != GW_ERR_NONE) {
        atomic_fetch_sub(&gw_rejecting_tunnels, 1);
    } else {
        atomic_fetch_sub(&gw_active_tunnels, 1);
    }
    if (t->share != 0) {
        atomic_fetch_sub(&gw_share_counts[t->share - 1], 1);
    }
    gw_tunnel_host *w = t->host;
    if (t->prev) {
        t->prev->next = t->next;
    } else {
        w->tunnels = t->next;
    }
    if (t->next) {
        t->next->prev = t->prev;
    }
    assert(w->num_tunnels > 0);
    w->num_tunnels--;
    pol_config_unref(t->cfg);
    t->cfg = NULL;
    gw_loop_defer_free(loop, tunnel_free, t);
    w->on_closed(w);
}

void gw_tunnel_abort(gw_tunnel *t, const char *reason) {
    tunnel_close(t, GW_RESULT_ABORTED, reason);
}

void gw_tunnel_drain(gw_tunnel *t) {
    // An HTTP client connection between requests has nothing in flight: close it now.
    // Others finish; responses from now on say Connection: close.
    if (t->state == T_HTTP_PROXY && t->http.http_idle && gw_buf_len(t->to_down) == 0 &&
        gw_buf_len(t->http.from_client) == 0) {
        tunnel_close(t, GW_RESULT_OK, NULL);
    }
}

// answer_failure answers the client with the error a phase failed with, in its protocol,
// and moves to T_FLUSHING (or ends the tunnel when its protocol has no way to answer).
static tunnel_step answer_failure(gw_tunnel *t) {
    // A tunnel is answered once: never after it closed or while its last bytes flush.
    assert(t->state != T_CLOSED && t->state != T_FLUSHING);
    gw_err err = t->fail_err;
    t->fail_err = GW_ERR_NONE;
    const gw_err_info *info = gw_err_describe(err);
    t->http.x.status = info->http_status;
    t->result = info->result;
    const char *reason = tunnel_reason_of(t) ? t->reason : gw_err_describe(err)->proxy_status;
    tunnel_drop_dial(t);
    int after = t->door->reply_err(t, err, reason ? reason : "");
    if (gw_log_enabled(GW_LOG_DEBUG)) {
        gw_log(GW_LOG_DEBUG, "%s: %s (%s)", t->client_text, reason ? reason : "", tunnel_state_name(t->state));
    }
    if (after < 0) {
        return tunnel_end(t, GW_RESULT_NONE, END_RESET_CLIENT, NULL);
    }
    if (after == 0) {
        return tunnel_end(t, GW_RESULT_NONE, END_CLOSE, NULL);
    }
    // Discard what the client sent; keep reading so a close does not become a RST that
    // destroys the reply before the client reads it.
    gw_buf_put(&t->host->pool, t->to_up);
    gw_buf_put(&t->host->pool, t->http.from_client);
    gw_buf_put(&t->host->pool, t->http.from_up);
    t->to_up = t->http.from_client = t->http.from_up = NULL;
    t->http.http_idle = 0;
    t->state = T_FLUSHING;
    t->flush_reset = 0;
    t->flush_close = 0;
    tunnel_set_timer(t, 2000);
    return STEP_NEXT;
}

// ---- timers ----

// phase_timeout answers the current phase's timer.
static tunnel_step phase_timeout(gw_tunnel *t) {
    switch (t->state) {
        case T_DETECT:
        case T_SOCKS5_GREETING:
        case T_SOCKS5_AUTH:
        case T_SOCKS5_REQUEST:
        case T_SOCKS4_REQUEST:
        case T_HTTP_HEAD:
            if (t->front.auth_state == AUTH_PENDING && !t->front.auth_waited) {
                // The client sent all it had to: its password is being checked (a burst
                // of checks queues for the pool). Not its fault: one more period for it.
                t->front.auth_waited = 1;
                tunnel_set_timer(t, (uint64_t)t->cfg->limits.handshake_timeout_ms);
                return STEP_WAIT;
            }
            if (t->front.auth_state == AUTH_PENDING) {
                return tunnel_end(t, GW_RESULT_INTERNAL_ERROR, END_CLOSE,
                                  "the password check did not finish in time (the checks are overloaded)");
            }
            return tunnel_end(t, GW_RESULT_CLIENT_TIMEOUT, END_CLOSE, "client did not send a complete request in time");
        case T_SNIFF:
            return tunnel_sniff_give_up(t);  // no whole HTTP head in time: relay it as opaque bytes
        case T_ROUTE:
        case T_RESOLVING:
        case T_CONNECT_NEXT:
        case T_CONNECTING:
        case T_HANDSHAKING:
        case T_CONFIRMING:
        case T_ESTABLISHED:
            return tunnel_timeout_dial(t);
        case T_VIA:
            return tunnel_via_timeout(t);
        case T_RELAY: {
            uint64_t idle_ms = (uint64_t)t->cfg->limits.idle_timeout_s * 1000;
            uint64_t now = gw_loop_now(t->host->loop);
            if (now - t->last_activity >= idle_ms) {
                return tunnel_end(t, GW_RESULT_IDLE_TIMEOUT, END_CLOSE, "no data either way for idle_timeout_s");
            }
            tunnel_set_timer(t, idle_ms - (now - t->last_activity));
            return STEP_WAIT;
        }
        case T_HTTP_PROXY:
            return tunnel_http_timeout(t);
        case T_FLUSHING:
            return tunnel_end(t, GW_RESULT_NONE, t->flush_reset ? END_RESET_CLIENT : END_CLOSE, NULL);
        default:
            return STEP_WAIT;
    }
}

// ---- the driver ----

static int socket_error(int fd) {
    int e = 0;
    socklen_t l = sizeof(e);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l);
    return e;
}

static tunnel_step run_phase(gw_tunnel *t) {
    if (t->fail_err != GW_ERR_NONE) {
        return STEP_FAIL;  // recorded before the driver ran (at accept)
    }
    if (t->timed_out) {
        t->timed_out = 0;
        return phase_timeout(t);
    }
    if (t->client_io.error && (tunnel_flowing(t) || t->state == T_FLUSHING)) {
        // A reset is noticed even while backpressure keeps us from reading this side.
        if (t->state == T_FLUSHING) {
            return tunnel_end(t, GW_RESULT_NONE, END_CLOSE, NULL);
        }
        int e = socket_error(t->client_fd);
        return tunnel_end(t, GW_RESULT_CLIENT_RESET, END_RESET_UPSTREAM, e ? strerror(e) : "connection reset");
    }
    if ((t->client_io.hup || t->client_io.error) && tunnel_dialing(t)) {
        return tunnel_end(t, GW_RESULT_CLIENT_CLOSED, END_CLOSE, "client went away before the tunnel was established");
    }
    switch (t->state) {
        case T_DETECT:
        case T_SOCKS5_GREETING:
        case T_SOCKS5_AUTH:
        case T_SOCKS5_REQUEST:
        case T_SOCKS4_REQUEST:
        case T_HTTP_HEAD: {
            tunnel_step s = tunnel_read_request(t);
            if (s != STEP_WAIT) {
                return s;
            }
            tunnel_state before = t->state;
            s = t->door->read_request(t);
            if (s == STEP_WAIT && t->client_io.eof && t->state == before) {
                return tunnel_end(t, GW_RESULT_CLIENT_CLOSED, END_CLOSE,
                                  "client closed before sending a complete request");
            }
            if (s == STEP_WAIT && gw_buf_len(t->to_down) > 0) {
                tunnel_io_failure f;
                if (tunnel_client_write(t, &t->to_down, &f) < 0) {  // SOCKS5 method selection
                    return tunnel_client_failure(t, &f);
                }
            }
            return s;
        }
        case T_SNIFF:
            return tunnel_phase_sniff(t);
        case T_ROUTE:
            return tunnel_phase_route(t);
        case T_RESOLVING:
            return tunnel_phase_resolving(t);
        case T_CONNECT_NEXT:
            return tunnel_phase_connect_next(t);
        case T_CONNECTING:
            return tunnel_phase_connecting(t);
        case T_VIA: {
            tunnel_step s = tunnel_phase_via(t);
            return s == STEP_NEXT && tunnel_via_done(t) ? tunnel_after_parent(t) : s;
        }
        case T_HANDSHAKING:
        case T_CONFIRMING:
            return tunnel_phase_tls(t);
        case T_ESTABLISHED: {
            tunnel_step s = tunnel_phase_established(t);
            if (t->state == T_RELAY) {
                t->door->reply_ok(t);  // the success reply (none for plain streams and http_proxy)
            }
            return s;
        }
        case T_RELAY:
            return tunnel_phase_relay(t);
        case T_HTTP_PROXY:
            return tunnel_phase_http(t);
        case T_FLUSHING:
            return tunnel_phase_flush(t);
        default:
            return STEP_WAIT;
    }
}

static void finish(gw_tunnel *t) {
    switch (t->end_how) {
        case END_RESET_CLIENT:
            gw_socket_reset(t->client_fd);
            break;
        case END_RESET_UPSTREAM:
            gw_socket_reset(t->upstream.fd);
            break;
        default:
            break;
    }
    tunnel_close(t, GW_RESULT_NONE, NULL);
}

// flush_upstream sends what the upstream's cork gathered during this run (tunnel_phase_tls
// corks it while the handshake may finish); what the socket does not take waits for it
// to be writable.
static void flush_upstream(gw_tunnel *t) {
    if (gw_upstream_uncork(&t->upstream) == 0) {
        t->upstream_io.writable = 0;
    }
}

// GW_TFO_HOLD_MS: how long a ClientHello whose SYN Fast Open deferred waits for the
// client's first bytes (hold_first_flight).
#define GW_TFO_HOLD_MS 10

// hold_first_flight keeps the ClientHello corked for a moment when Fast Open deferred the
// SYN and early data is offered but the client has sent nothing yet (a SOCKS or CONNECT
// client sends its first bytes once it has our reply): they then ride in the SYN with
// it, and the answer comes a round trip sooner. At most GW_TFO_HOLD_MS: a client that
// waits for the server to speak first loses that much, once.
static int hold_first_flight(gw_tunnel *t) {
    if (t->state != T_RELAY || !t->upstream.fastopen || t->upstream.early != GW_EARLY_SENDING || t->up_bytes > 0 ||
        gw_buf_len(t->to_up) > 0 || t->client_io.eof || t->tfo_hold_done) {
        return 0;
    }
    uint64_t now = gw_loop_now(t->host->loop);
    if (t->tfo_hold_until == 0) {
        struct tcp_info ti;
        socklen_t len = sizeof(ti);
        if (getsockopt(t->upstream.fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 || ti.tcpi_state != TCP_SYN_SENT) {
            t->tfo_hold_done = 1;  // the SYN left already (no cookie: an ordinary connect)
            return 0;
        }
        t->tfo_hold_until = now + GW_TFO_HOLD_MS;
    }
    if (now >= t->tfo_hold_until) {
        t->tfo_hold_done = 1;
        return 0;
    }
    if (t->yield_timer.heap_index == SIZE_MAX) {
        gw_timer_start(t->host->loop, &t->yield_timer, t->tfo_hold_until - now);  // (an armed one comes sooner)
    }
    return 1;
}

void tunnel_advance(gw_tunnel *t) {
    if (t->state == T_CLOSED) {
        return;
    }
    if (t->advancing) {
        t->again = 1;  // an event during a run (an answer given at once): one more round
        return;
    }
    t->advancing = 1;
    if (gw_upstream_out_pending(&t->upstream) && t->upstream_io.writable && !hold_first_flight(t)) {
        flush_upstream(t);  // what the socket did not take when the cork came off
    }
    do {
        t->again = 0;
        for (int guard = 0;; guard++) {
            assert(guard < 1000);
            tunnel_step s = run_phase(t);
            if (s == STEP_FAIL) {
                s = answer_failure(t);
            }
            if (s == STEP_CLOSE) {
                finish(t);  // freed after this batch: nothing here touches it again
                return;
            }
            if (s == STEP_WAIT) {
                break;
            }
        }
    } while (t->again);
    if (gw_upstream_out_pending(&t->upstream) && !hold_first_flight(t)) {
        flush_upstream(t);  // the handshake's last flight and the first data, in one segment
    }
    t->advancing = 0;
}

// ---- event sources: each records what it saw, then advances ----

// The answers that come back for a tunnel (phases hand these to whoever will call back,
// through t->events, so that only this file calls the driver).
static void on_resolved(void *arg, res_status status, const res_addr *addrs, size_t n) {
    gw_tunnel *t = arg;
    t->dial.query = NULL;
    t->dial.resolved = 1;
    t->dial.dns_status = status;
    // The addresses live only during this call: copied.
    t->dial.num_addrs = addrs != NULL && n < RES_MAX_ADDRS ? n : addrs != NULL ? RES_MAX_ADDRS : 0;
    if (t->dial.num_addrs > 0) {
        memcpy(t->dial.addrs, addrs, t->dial.num_addrs * sizeof(*addrs));
    }
    t->dns_ms = (int64_t)(gw_monotonic_ms() - t->t_phase);
    gw_metrics_dns(status == RES_OK          ? GW_DNS_OK
                   : status == RES_NOT_FOUND ? GW_DNS_NOT_FOUND
                   : status == RES_TIMEOUT   ? GW_DNS_TIMEOUT
                                             : GW_DNS_FAILED);
    tunnel_advance(t);
}

static void on_key_ready(void *arg) {
    gw_tunnel *t = arg;
    if (t->state == T_HANDSHAKING) {
        tunnel_advance(t);  // a token signed (or key_timeout_ms passed): the handshake goes on
    }
}

static void on_password_checked(void *arg, int ok) {
    gw_tunnel *t = arg;
    t->front.auth_job = NULL;
    t->front.auth_state = ok ? AUTH_GRANTED : AUTH_DENIED;
    gw_metrics_password_check(ok ? GW_PASS_VERIFIED : GW_PASS_REJECTED);
    tunnel_advance(t);  // the request is parsed again and takes the answer
}

static void on_upstream(gw_loop *loop, gw_watcher *w, uint32_t events);

static const tunnel_events event_table = {on_resolved, on_key_ready, on_password_checked, on_upstream};

static void on_timer(gw_loop *loop, gw_timer *timer) {
    gw_tunnel *t = timer->data;
    t->timed_out = 1;
    tunnel_advance(t);
}

static void on_yield_timer(gw_loop *loop, gw_timer *timer) {
    tunnel_advance(timer->data);
}

static void mark(side *s, uint32_t events) {
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        s->readable = 1;
    }
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        s->rdhup = 1;
    }
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
        s->writable = 1;
    }
    if (events & EPOLLERR) {
        s->error = 1;
    }
    if (events & EPOLLHUP) {
        s->hup = 1;
    }
}

static void on_client(gw_loop *loop, gw_watcher *w, uint32_t events) {
    gw_tunnel *t = w->data;
    mark(&t->client_io, events);
    tunnel_advance(t);
}

static void on_upstream(gw_loop *loop, gw_watcher *w, uint32_t events) {
    gw_tunnel *t = w->data;
    mark(&t->upstream_io, events);
    tunnel_advance(t);
}

void gw_tunnel_accept(gw_tunnel_host *w, int fd, const gw_client_info *client, size_t listener_index,
                      gw_err admission) {
    gw_tunnel *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        if (client->share != 0) {
            atomic_fetch_sub(&gw_share_counts[client->share - 1], 1);
        }
        close(fd);
        return;
    }
    if (admission != GW_ERR_NONE) {
        atomic_fetch_add(&gw_rejecting_tunnels, 1);
    } else {
        atomic_fetch_add(&gw_active_tunnels, 1);
    }
    t->host = w;
    t->cfg = pol_config_ref(w->cfg);
    t->listener_index = listener_index;
    t->admission = admission;
    t->share = client->share;
    t->share_full = client->share_full;
    t->client_fd = fd;
    t->door = &door_detect;
    gw_upstream_init(&t->upstream);
    t->dns_ms = t->connect_ms = t->handshake_ms = -1;
    t->t_start = gw_loop_now(w->loop);
    t->caller = client->caller;
    if (client->addr->sa_family == AF_UNIX) {
        snprintf(t->client_text, sizeof(t->client_text), "unix:%d", (int)client->pid);
    } else {
        gw_format_addr(client->addr, t->client_text, sizeof(t->client_text));
    }
    gw_timer_init(&t->timer, on_timer, t);
    gw_timer_init(&t->yield_timer, on_yield_timer, t);
    gw_watcher_init(&t->client_io.w, fd, on_client, t);
    t->events = &event_table;
    gw_watcher_init(&t->upstream_io.w, -1, on_upstream, t);
    t->next = w->tunnels;
    if (w->tunnels) {
        w->tunnels->prev = t;
    }
    w->tunnels = t;
    w->num_tunnels++;
    if (!gw_watcher_set(w->loop, &t->client_io.w, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)) {
        tunnel_close(t, GW_RESULT_INTERNAL_ERROR, strerror(errno));
        return;
    }
    // The door's first step only records (a destination, or an error to answer with); the
    // driver takes it from there.
    const pol_listener *l = tunnel_listener_of(t);
    if (l->transparent) {
        t->door = &door_transparent;
        tunnel_transparent_start(t, client->orig_dst);
    } else if (l->forward_host != NULL) {
        t->door = &door_forward;
        tunnel_want(t, l->forward_host, l->forward_port);
    } else {
        t->state = T_DETECT;
        tunnel_set_timer(t, (uint64_t)t->cfg->limits.handshake_timeout_ms);
    }
    tunnel_advance(t);
}
