// tunnel: a tunnel's life around its phases: accept, the timers and readiness marks, the
// dispatch to each phase (tunnel_run), the error replies in each protocol, and the one way out
// (close, with the access-log line).
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
        .proto = proto_names[t->proto],
        .dest = dest[0] ? dest : NULL,
        .rule = t->rule ? t->rule->where : NULL,
        .action = t->rule ? pol_action_name(t->rule->action) : NULL,
        .identity = presented_identity(t),
        .upstream = t->upstream_text[0] ? t->upstream_text : NULL,
        .sni = t->rule && t->rule->action == POL_ACTION_MTLS && !gw_host_is_ip(t->dial.server_name) ? t->dial.server_name : NULL,
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
        .method = t->proto == P_HTTP_PROXY && t->http.method[0] ? t->http.method : NULL,
        .user = t->user,
        .status = t->proto == P_HTTP_PROXY ? t->http.status : 0,
    };
    gw_access_log(&r);
    gw_metrics_tunnel_done(t->rule ? (int)t->rule->action : -1, t->result, t->up_bytes, t->down_bytes);
}

// tunnel_close is the one way out: it logs the access line and releases everything.
void tunnel_close(gw_tunnel *t, gw_result result, const char *reason) {
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
    if (!(t->proto == P_HTTP_PROXY && t->http.http_idle)) {
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

// ---- replies ----

int tunnel_queue_down(gw_tunnel *t, const void *p, size_t len) {
    if (t->to_down == NULL && (t->to_down = gw_buf_get(&t->host->pool)) == NULL) {
        return 0;
    }
    return gw_buf_append(t->to_down, p, len) == len;
}

// queue_http_error queues the error response for |err|. |reason| is the tunnel's reason,
// which tunnel_set_reason caps at REASON_MAX: the one cap that makes the reply fit, so its
// Content-Length is always the length of the body sent.
static void queue_http_error(gw_tunnel *t, gw_err err, const char *reason) {
    const gw_err_info *info = gw_err_describe(err);
    const char *proxy_status = info->proxy_status;
    if ((err == GW_ERR_DENIED || err == GW_ERR_NO_RULE) && t->dest.family == 0) {
        proxy_status = "http_request_denied";  // a name, not an IP, was refused
    }
    char body[REASON_MAX + 1];
    size_t body_len = 0;
    char details[2 * REASON_MAX];
    size_t n = 0;
    for (const char *p = reason; *p && body_len < REASON_MAX - 1; p++) {
        char c = (unsigned char)*p < ' ' || *p == 0x7f ? ' ' : *p;
        body[body_len++] = c;
        if (c == '"' || c == '\\') {
            details[n++] = '\\';
        }
        details[n++] = c;
    }
    body[body_len++] = '\n';
    body[body_len] = '\0';
    details[n] = '\0';
    char head[3 * REASON_MAX + 512];
    int len = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\n", info->http_status,
                       gw_http_reason_phrase(info->http_status));
    if (proxy_status != NULL) {
        len += snprintf(head + len, sizeof(head) - (size_t)len, "Proxy-Status: mtlsgw; error=%s; details=\"%s\"\r\n",
                        proxy_status, details);
    }
    if (info->http_status == 407) {
        len += snprintf(head + len, sizeof(head) - (size_t)len, "Proxy-Authenticate: Basic realm=\"mtlsgw\"\r\n");
    }
    len += snprintf(head + len, sizeof(head) - (size_t)len,
                    "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                    body_len, body);
    assert((size_t)len < sizeof(head));
    tunnel_queue_down(t, head, (size_t)len);
}

// tunnel_reject answers the client with |err| in its protocol, then closes.
void tunnel_reject(gw_tunnel *t, gw_err err, const char *reason) {
    // A tunnel is answered once: never after it closed or while its last bytes flush.
    assert(t->state != T_CLOSED && t->state != T_FLUSHING);
    assert(err != GW_ERR_NONE);
    const gw_err_info *info = gw_err_describe(err);
    t->http.status = info->http_status;
    t->result = info->result;
    tunnel_set_reason(t, "%s", reason);
    gw_upstream_close(&t->upstream);
    gw_watcher_remove(t->host->loop, &t->upstream_io.w);
    res_query_detach(t->dial.query);
    t->dial.query = NULL;
    uint8_t reply[32];
    switch (t->proto) {
        case P_SOCKS5:
            tunnel_queue_down(t, reply, gw_socks5_encode_reply(info->socks5_rep, NULL, reply));
            break;
        case P_SOCKS4:
            tunnel_queue_down(t, reply, gw_socks4_encode_reply(info->socks4_code, NULL, reply));
            break;
        case P_HTTP_CONNECT:
        case P_HTTP_PROXY:
            queue_http_error(t, err, tunnel_reason_of(t) ? t->reason : reason);
            break;
        case P_TRANSPARENT:
            // No protocol to answer in: reset, so the client sees a failure, not an empty
            // stream that ended well. The access log has the reason.
            gw_socket_reset(t->client_fd);
            tunnel_close(t, GW_RESULT_NONE, NULL);
            return;
        default:
            break;  // forward listeners and unknown protocols: just close
    }
    // Discard what the client sent; keep reading so a close does not become a RST that
    // destroys the reply before the client reads it.
    gw_buf_put(&t->host->pool, t->to_up);
    gw_buf_put(&t->host->pool, t->http.from_client);
    gw_buf_put(&t->host->pool, t->http.from_up);
    t->to_up = t->http.from_client = t->http.from_up = NULL;
    t->http.http_idle = 0;
    t->state = T_FLUSHING;
    gw_timer_start(t->host->loop, &t->timer, 2000);
    if (gw_log_enabled(GW_LOG_DEBUG)) {
        gw_log(GW_LOG_DEBUG, "%s: %s", t->client_text, reason);
    }
}

void tunnel_queue_success(gw_tunnel *t) {
    uint8_t reply[32];
    struct sockaddr_storage bound;
    socklen_t bl = sizeof(bound);
    int have = getsockname(t->upstream.fd, (struct sockaddr *)&bound, &bl) == 0;
    switch (t->proto) {
        case P_SOCKS5:
            tunnel_queue_down(t, reply, gw_socks5_encode_reply(0, have ? (struct sockaddr *)&bound : NULL, reply));
            break;
        case P_SOCKS4:
            tunnel_queue_down(t, reply, gw_socks4_encode_reply(0x5a, have ? (struct sockaddr *)&bound : NULL, reply));
            break;
        case P_HTTP_CONNECT: {
            static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
            tunnel_queue_down(t, ok, sizeof(ok) - 1);
            break;
        }
        default:
            break;
    }
}

// ---- timers ----

static void on_timer(gw_loop *loop, gw_timer *timer) {
    gw_tunnel *t = timer->data;
    char reason[200];
    switch (t->state) {
        case T_DETECT:
        case T_SOCKS5_GREETING:
        case T_SOCKS5_AUTH:
        case T_SOCKS5_REQUEST:
        case T_SOCKS4_REQUEST:
        case T_HTTP_HEAD:
            tunnel_close(t, GW_RESULT_CLIENT_TIMEOUT, "client did not send a complete request in time");
            break;
        case T_SNIFF:
            tunnel_sniff_give_up(t);  // no whole HTTP head in time: relay it as opaque bytes
            tunnel_run(t);
            break;
        case T_RESOLVING:
            tunnel_reject(t, GW_ERR_DNS_TIMEOUT, "DNS lookup did not finish in time");
            tunnel_run(t);
            break;
        case T_CONNECTING:
            snprintf(reason, sizeof(reason), "connect to %s timed out after %d ms", t->upstream_text,
                     t->cfg->limits.connect_timeout_ms);
            t->dial.last_connect_err = GW_ERR_CONNECT_TIMEOUT;
            tunnel_set_reason(t, "%s", reason);
            gw_watcher_remove(loop, &t->upstream_io.w);
            gw_upstream_close(&t->upstream);
            tunnel_start_connect(t);
            break;
        case T_HANDSHAKING:
            // Waiting for a token's signature (key_timeout_ms longer than what was left of
            // the handshake's time): the key is what is missing, not the server. The
            // handshake goes on to fail with key_unavailable through on_key_ready.
            if (gw_keyops_expire(&t->upstream, "handshake_timeout_ms", t->cfg->limits.handshake_timeout_ms)) {
                break;
            }
            snprintf(reason, sizeof(reason), "TLS handshake with %s timed out after %d ms", t->upstream_text,
                     t->cfg->limits.handshake_timeout_ms);
            tunnel_reject(t, GW_ERR_HANDSHAKE_TIMEOUT, reason);
            tunnel_run(t);
            break;
        case T_CONFIRMING:
            // The server said nothing after the handshake: nothing says it rejected us.
            tunnel_established(t);
            tunnel_run(t);
            break;
        case T_RELAY:
        case T_HTTP_PROXY: {
            uint64_t idle_ms = (uint64_t)t->cfg->limits.idle_timeout_s * 1000;
            uint64_t now = gw_loop_now(loop);
            if (t->state == T_HTTP_PROXY && t->http.head_deadline != 0 && now >= t->http.head_deadline) {
                tunnel_close(t, GW_RESULT_CLIENT_TIMEOUT,
                             "client did not send a complete request head within handshake_timeout_ms");
            } else if (now - t->last_activity >= idle_ms) {
                tunnel_close(t, GW_RESULT_IDLE_TIMEOUT, "no data either way for idle_timeout_s");
            } else {
                uint64_t next = idle_ms - (now - t->last_activity);
                if (t->state == T_HTTP_PROXY && t->http.head_deadline != 0 && t->http.head_deadline - now < next) {
                    next = t->http.head_deadline - now;
                }
                gw_timer_start(loop, &t->timer, next);
            }
            break;
        }
        case T_FLUSHING:
            if (t->flush_reset) {
                gw_socket_reset(t->client_fd);  // the upstream's reset, passed on
            }
            tunnel_close(t, GW_RESULT_NONE, NULL);
            break;
        case T_CLOSED:
            break;
    }
}

static void on_yield_timer(gw_loop *loop, gw_timer *timer) {
    tunnel_run(timer->data);
}

// ---- events ----

static void mark(side *s, uint32_t events) {
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        s->readable = 1;
    }
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
        s->writable = 1;
    }
}

static int socket_error(int fd) {
    int e = 0;
    socklen_t l = sizeof(e);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l);
    return e;
}

// tunnel_client_failed ends a tunnel whose client connection broke (reset, error).
void tunnel_client_failed(gw_tunnel *t, const char *reason) {
    gw_socket_reset(t->upstream.fd);
    tunnel_close(t, GW_RESULT_CLIENT_RESET, reason);
}

static void on_client(gw_loop *loop, gw_watcher *w, uint32_t events) {
    gw_tunnel *t = w->data;
    mark(&t->client_io, events);
    if ((events & EPOLLERR) && (tunnel_flowing(t) || t->state == T_FLUSHING)) {
        // A reset is noticed even while backpressure keeps us from reading this side.
        int e = socket_error(t->client_fd);
        if (t->state == T_FLUSHING) {
            tunnel_close(t, GW_RESULT_NONE, NULL);
        } else {
            tunnel_client_failed(t, e ? strerror(e) : "connection reset");
        }
        return;
    }
    if ((events & (EPOLLHUP | EPOLLERR)) && tunnel_dialing(t)) {
        tunnel_close(t, GW_RESULT_CLIENT_CLOSED, "client went away before the tunnel was established");
        return;
    }
    tunnel_run(t);
}

void tunnel_on_upstream(gw_loop *loop, gw_watcher *w, uint32_t events) {
    gw_tunnel *t = w->data;
    mark(&t->upstream_io, events);
    // A relaying tunnel reads what the upstream sent before its reset first: the read
    // that finds the error comes after the data (redis answers, then resets).
    if ((events & EPOLLERR) && t->state == T_HTTP_PROXY) {
        int e = socket_error(t->upstream.fd);
        tunnel_upstream_failed(t, GW_RESULT_UPSTREAM_RESET, e ? strerror(e) : "connection reset");
        if (t->state == T_FLUSHING) {
            tunnel_flush_last(t);
        } else if (t->state == T_HTTP_PROXY) {
            tunnel_run(t);
        }
        return;
    }
    tunnel_run(t);
}

void tunnel_run(gw_tunnel *t) {
    switch (t->state) {
        case T_DETECT:
        case T_SOCKS5_GREETING:
        case T_SOCKS5_AUTH:
        case T_SOCKS5_REQUEST:
        case T_SOCKS4_REQUEST:
        case T_HTTP_HEAD:
            if (!tunnel_read_request(t)) {
                return;
            }
            tunnel_parse_request(t);
            if (t->client_io.eof && tunnel_reading_request(t)) {
                tunnel_close(t, GW_RESULT_CLIENT_CLOSED, "client closed before sending a complete request");
                return;
            }
            if (t->state == T_FLUSHING) {
                tunnel_flush_last(t);
            } else if (tunnel_reading_request(t)) {
                tunnel_relay_client_write(t);  // SOCKS5 method selection
            } else if (t->state == T_RELAY) {
                tunnel_relay(t);
            } else if (t->state == T_HTTP_PROXY) {
                tunnel_http_run(t);
            }
            return;
        case T_RESOLVING:
            return;
        case T_CONNECTING:
            tunnel_step_connecting(t);
            break;
        case T_HANDSHAKING:
        case T_CONFIRMING:
            tunnel_step_tls(t);
            break;
        case T_RELAY:
            tunnel_relay(t);
            return;
        case T_HTTP_PROXY:
            tunnel_http_run(t);
            return;
        case T_SNIFF:
            tunnel_sniff(t);
            if (t->state == T_RELAY) {
                tunnel_relay(t);
            }
            return;
        case T_FLUSHING:
            tunnel_flush_last(t);
            return;
        case T_CLOSED:
            return;
    }
    // A phase may have moved on: run the next one with the same readiness.
    if (t->state == T_HANDSHAKING && (t->upstream_io.readable || t->upstream_io.writable)) {
        tunnel_step_tls(t);
    }
    if (t->state == T_RELAY) {
        tunnel_relay(t);
    } else if (t->state == T_HTTP_PROXY) {
        tunnel_http_run(t);
    } else if (t->state == T_FLUSHING) {
        tunnel_flush_last(t);
    }
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
    const pol_listener *l = tunnel_listener_of(t);
    if (l->transparent) {
        tunnel_transparent_start(t, client->orig_dst);
        return;
    }
    if (l->forward_host != NULL) {
        t->proto = P_FORWARD_LISTENER;
        tunnel_route(t, l->forward_host, l->forward_port);
        if (t->state == T_FLUSHING) {
            // Nothing to answer in a plain TCP stream: close at once.
            tunnel_close(t, GW_RESULT_NONE, NULL);
        }
        return;
    }
    t->state = T_DETECT;
    gw_timer_start(w->loop, &t->timer, (uint64_t)t->cfg->limits.handshake_timeout_ms);
}
