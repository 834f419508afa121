// tunnel: a tunnel's life around one driver (ARCHITECTURE.md, "The driver"): accept, the
// event sources that record what happened, tunnel_advance that runs one phase function
// after another until one waits, the answer to a failure in the client's protocol, and the
// one way out (close, with the access-log line).
#include "gateway/tunnel/internal.h"

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

const pol_listener *tunnel_listener_of(const gw_tunnel *t) {
    return &t->cfg->listeners[t->listener_index];
}

// ---- closing ----

static void tunnel_free(void *p) {
    free(((gw_tunnel *)p)->reason);
    free(p);
}

void tunnel_set_reason(gw_tunnel *t, const char *fmt, ...) {
    if (t->reason == NULL && (t->reason = malloc(REASON_MAX)) == NULL) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->reason, REASON_MAX, fmt, ap);
    va_end(ap);
}

void tunnel_clear_reason(gw_tunnel *t) {
    if (t->reason != NULL) {
        t->reason[0] = '\0';
    }
}

const char *tunnel_reason_of(const gw_tunnel *t) {
    return t->reason != NULL && t->reason[0] ? t->reason : NULL;
}

// presented_identity names the identity this tunnel presented (or would have): of a rule
// with a list, the one the handshake chose; an upstream kept from an earlier http_proxy
// request for another rule does not count.
static const char *presented_identity(const gw_tunnel *t) {
    const pol_rule *r = t->rule;
    if (r == NULL || r->action != POL_ACTION_MTLS) {
        return NULL;
    }
    for (size_t i = 0; i < r->num_identities; i++) {
        if (t->upstream.identity == r->identities[i]) {
            return t->upstream.identity->spec.name;
        }
    }
    return r->identity->spec.name;
}

void tunnel_log_access(gw_tunnel *t) {
    char dest[300] = "";
    if (t->dest.host[0] && t->dest.family == AF_INET6) {
        snprintf(dest, sizeof(dest), "[%s]:%u", t->dest.host, t->dest.port);
    } else if (t->dest.host[0]) {
        snprintf(dest, sizeof(dest), "%s:%u", t->dest.host, t->dest.port);
    }
    const char *tls = NULL;
    int resumed = -1;
    if (t->upstream.ssl != NULL && SSL_is_init_finished(t->upstream.ssl)) {
        tls = SSL_get_version(t->upstream.ssl);
        resumed = SSL_session_reused(t->upstream.ssl) ? 1 : 0;
    }
    gw_access_record r = {
        .client = t->client_text,
        .caller = t->caller == GW_CALLER_NONE ? -1 : (int64_t)t->caller,
        .listener = tunnel_listener_of(t)->name,
        .proto = t->door->name,
        .dest = dest[0] ? dest : NULL,
        .rule = t->rule ? t->rule->where : NULL,
        .action = t->rule ? pol_action_name(t->rule->action) : NULL,
        .identity = presented_identity(t),
        .upstream = t->upstream_text[0] ? t->upstream_text : NULL,
        .sni = t->rule && t->rule->action == POL_ACTION_MTLS && !gw_host_is_ip(t->dial.server_name)
                   ? t->dial.server_name
                   : NULL,
        .tls = tls,
        .resumed = resumed,
        .dns_ms = t->dns_ms,
        .connect_ms = t->connect_ms,
        .handshake_ms = t->handshake_ms,
        .up_bytes = t->up_bytes,
        .down_bytes = t->down_bytes,
        .duration_ms = (int64_t)(gw_loop_now(t->host->loop) - t->t_start),
        .result = gw_result_name(t->result),
        .reason = tunnel_reason_of(t),
        .method = t->door == &door_http && t->http.x.method[0] ? t->http.x.method : NULL,
        .user = t->user,
        .status = t->door == &door_http ? t->http.x.status : 0,
    };
    gw_access_log(&r);
    gw_metrics_tunnel_done(t->rule ? (int)t->rule->action : -1, t->result, t->up_bytes, t->down_bytes);
}

// tunnel_close is the one way out: it logs the access line and releases everything.
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
    if (!(t->door == &door_http && t->http.http_idle)) {
        tunnel_log_access(t);
    }
    t->state = T_CLOSED;
    gw_timer_stop(loop, &t->timer);
    gw_timer_stop(loop, &t->yield_timer);
    res_query_detach(t->dial.query);
    t->dial.query = NULL;
    gw_passcheck_cancel(t->front.auth_job);
    t->front.auth_job = NULL;
    gw_watcher_remove(loop, &t->client_io.w);
    gw_watcher_remove(loop, &t->upstream_io.w);
    close(t->client_fd);
    gw_upstream_close(&t->upstream);
    gw_buf_put(&t->host->pool, t->to_up);
    gw_buf_put(&t->host->pool, t->to_down);
    gw_buf_put(&t->host->pool, t->http.from_client);
    gw_buf_put(&t->host->pool, t->http.from_up);
    t->to_up = t->to_down = t->http.from_client = t->http.from_up = NULL;
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

int tunnel_queue_down(gw_tunnel *t, const void *p, size_t len) {
    if (t->to_down == NULL && (t->to_down = gw_buf_get(&t->host->pool)) == NULL) {
        return 0;
    }
    return gw_buf_append(t->to_down, p, len) == len;
}

void tunnel_set_timer(gw_tunnel *t, uint64_t ms) {
    gw_timer_start(t->host->loop, &t->timer, ms);
}

void tunnel_yield(gw_tunnel *t) {
    gw_timer_start(t->host->loop, &t->yield_timer, 0);
}

const char *tunnel_state_name(tunnel_state s) {
    static const char *const names[T_NUM_STATES] = {
        [T_DETECT] = "detect",
        [T_SOCKS5_GREETING] = "socks5-greeting",
        [T_SOCKS5_AUTH] = "socks5-auth",
        [T_SOCKS5_REQUEST] = "socks5-request",
        [T_SOCKS4_REQUEST] = "socks4-request",
        [T_HTTP_HEAD] = "http-head",
        [T_SNIFF] = "sniff",
        [T_ROUTE] = "route",
        [T_RESOLVING] = "resolving",
        [T_CONNECT_NEXT] = "connect-next",
        [T_CONNECTING] = "connecting",
        [T_HANDSHAKING] = "handshaking",
        [T_CONFIRMING] = "confirming",
        [T_ESTABLISHED] = "established",
        [T_RELAY] = "relay",
        [T_HTTP_PROXY] = "http-proxy",
        [T_FLUSHING] = "flushing",
        [T_CLOSED] = "closed",
    };
    return (unsigned)s < T_NUM_STATES && names[s] != NULL ? names[s] : "?";
}

// ---- what a phase tells the driver ----

tunnel_step tunnel_fail(gw_tunnel *t, gw_err err, const char *fmt, ...) {
    assert(err != GW_ERR_NONE);
    t->fail_err = err;
    char reason[REASON_MAX];  // the arguments may be the reason itself
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    tunnel_set_reason(t, "%s", reason);
    return STEP_FAIL;
}

tunnel_step tunnel_end(gw_tunnel *t, gw_result result, tunnel_end_how how, const char *reason) {
    if (result != GW_RESULT_NONE && (t->result == GW_RESULT_NONE || t->result == GW_RESULT_OK)) {
        t->result = result;
    }
    if (reason != NULL && tunnel_reason_of(t) == NULL) {
        tunnel_set_reason(t, "%s", reason);
    }
    t->end_how = how;
    return STEP_CLOSE;
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
                tunnel_step w;
                if (tunnel_client_write(t, &t->to_down, &w) < 0) {  // SOCKS5 method selection
                    return w;
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

void tunnel_advance(gw_tunnel *t) {
    if (t->state == T_CLOSED) {
        return;
    }
    if (t->advancing) {
        t->again = 1;  // an event during a run (an answer given at once): one more round
        return;
    }
    t->advancing = 1;
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
    t->advancing = 0;
}

// ---- event sources: each records what it saw, then advances ----

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

void tunnel_on_upstream(gw_loop *loop, gw_watcher *w, uint32_t events) {
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
    gw_watcher_init(&t->upstream_io.w, -1, tunnel_on_upstream, t);
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
