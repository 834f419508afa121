// http_proxy: the exchanges of an http_proxy client connection: each request head checked
// and rewritten to origin-form, bodies framed both ways, the upstream kept for the next
// request to the same destination.
#include "gateway/tunnel/internal.h"

// ---- HTTP forward proxy (http_proxy clients) ----
//
// A client connection carries one request after another. Each request head is checked,
// rewritten to origin-form into to_up and its body passed on as its framing says; each
// response head is rewritten into to_down and its body passed back. The upstream stays
// open for the next request to the same destination; another destination gets its own.

static tunnel_step reset_client(gw_tunnel *t, gw_result result, const char *reason) {
    // After part of a response went out, a FIN would let the client take a cut-off body
    // for a complete one: a RST cannot be mistaken.
    return tunnel_end(t, result, END_RESET_CLIENT, reason);
}

// drop_upstream closes the upstream connection; the client connection stays for its
// next request.
static void drop_upstream(gw_tunnel *t) {
    if (t->upstream_io.w.fd == t->upstream.fd) {
        gw_watcher_forget(t->host->loop, &t->upstream_io.w);  // closed right after
    } else {
        gw_watcher_remove(t->host->loop, &t->upstream_io.w);
    }
    gw_upstream_close(&t->upstream);
    t->upstream_io = (side){0};
    gw_watcher_init(&t->upstream_io.w, -1, t->events->upstream, t);
    gw_buf_put(&t->host->pool, t->http.from_up);
    gw_buf_put(&t->host->pool, t->to_up);
    t->http.from_up = t->to_up = NULL;
    t->http.resp_scanned = 0;
}

// release_upstream gives the upstream connection, idle between exchanges, to the
// worker's pool for the next request with its key from any client connection (the pool
// keeps it only if it is reusable); anything else is closed.
static void release_upstream(gw_tunnel *t) {
    if (t->upstream.fd < 0) {
        return;
    }
    int idle = t->http.x.req_phase == RQ_HEAD && t->http.x.resp_phase == RS_IDLE && t->http.x.up_keepalive &&
               gw_buf_len(t->to_up) == 0 && gw_buf_len(t->http.from_up) == 0 && !t->upstream_io.eof &&
               !t->upstream_io.error && !t->upstream_io.write_dead && t->cfg == t->host->cfg;
    if (!idle || t->host->upool == NULL) {
        drop_upstream(t);
        return;
    }
    gw_upool_put(t->host->upool, t->dial.pool_key, &t->upstream, t->upstream_text, &t->upstream_io.w);
    drop_upstream(t);  // what is left: the watcher, the buffers
}

// idempotent says whether |method| may be sent twice with the effect of once (RFC 9110
// §9.2.2): only those are retried on a new connection.
static int idempotent(const char *method) {
    static const char *const ok[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (strcmp(method, ok[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

static const char early_field[] = "Early-Data: 1\r\n";  // RFC 8470

int tunnel_http_early_ok(const gw_tunnel *t) {
    static const char *const safe[] = {"GET", "HEAD", "OPTIONS", "TRACE"};
    int is_safe = 0;
    for (size_t i = 0; i < sizeof(safe) / sizeof(safe[0]); i++) {
        is_safe |= strcmp(t->http.x.method, safe[i]) == 0;
    }
    return is_safe && t->http.x.req_body.kind == GW_BODY_NONE && t->to_up != NULL && gw_buf_len(t->to_up) >= 4 &&
           gw_buf_room(t->to_up) >= sizeof(early_field) - 1;
}

void tunnel_http_mark_early(gw_tunnel *t) {
    // to_up holds the head alone (no body), ending in the blank line: the field goes
    // before it.
    gw_buf *b = t->to_up;
    if (b == NULL || gw_buf_len(b) < 4 || gw_buf_room(b) < sizeof(early_field) - 1 ||
        memcmp(b->data + b->end - 4, "\r\n\r\n", 4) != 0) {
        return;
    }
    b->end -= 2;
    gw_buf_append(b, early_field, sizeof(early_field) - 1);
    gw_buf_append(b, "\r\n", 2);
}

// keep_replay keeps a copy of a request about to go over a connection that carried
// requests before (kept or pooled): the server may have closed it meanwhile, and an
// idempotent request that got no response byte is then sent again on a new connection.
// Only a request that is here whole (head and body) is kept.
static void keep_replay(gw_tunnel *t) {
    http_exchange *x = &t->http.x;
    if (x->replay_considered || t->upstream.fd < 0) {
        return;
    }
    x->replay_considered = 1;
    if ((t->conn_kind != CONN_KEPT && t->conn_kind != CONN_POOLED) || x->retried || x->req_phase != RQ_DONE ||
        !idempotent(x->method) || gw_buf_len(t->to_up) == 0) {
        return;
    }
    if (t->http.replay == NULL && (t->http.replay = gw_buf_get(&t->host->pool)) == NULL) {
        return;  // out of buffers: this request is not retried
    }
    t->http.replay->start = t->http.replay->end = 0;
    gw_buf_append(t->http.replay, t->to_up->data + t->to_up->start, gw_buf_len(t->to_up));
}

// retry sends the request again on a new connection, if it may be: it went over a kept
// or pooled connection the server closed before any response byte, and it is idempotent
// and was kept whole. Returns STEP_NEXT (routed anew) or STEP_WAIT (it may not).
static tunnel_step retry(gw_tunnel *t) {
    http_exchange *x = &t->http.x;
    if (t->http.replay == NULL || x->retried || x->resp_sent || gw_buf_len(t->http.from_up) > 0 || t->down_bytes > 0) {
        return STEP_WAIT;
    }
    gw_log(GW_LOG_INFO,
           "%s: %s %s:%u: the %s connection to %s was closed by the server before a response: sent "
           "again on a new connection",
           t->client_text, x->method, t->dest.host, t->dest.port, tunnel_conn_name(t->conn_kind), t->upstream_text);
    gw_buf *req = t->http.replay;
    t->http.replay = NULL;
    drop_upstream(t);
    t->to_up = req;
    x->retried = 1;
    x->reuse = 0;
    x->resp_phase = RS_HEAD;
    t->dial.fresh = 1;
    t->conn_kind = CONN_NEW;
    tunnel_clear_reason(t);
    return tunnel_want(t, t->dest.host, t->dest.port);
}

// closed_before_response fails a request whose upstream ended before any response byte:
// sent again when it may be, else 502 with the reason.
static tunnel_step closed_before_response(gw_tunnel *t, gw_err err, const char *reason) {
    if (retry(t) == STEP_NEXT) {
        return STEP_NEXT;
    }
    if ((t->conn_kind == CONN_KEPT || t->conn_kind == CONN_POOLED) && !t->http.x.retried &&
        !idempotent(t->http.x.method)) {
        return tunnel_fail(t, err, "%s (a reused connection; %s is not idempotent: not sent again)", reason,
                           t->http.x.method);
    }
    return tunnel_fail(t, err, "%s", reason);
}

tunnel_step tunnel_http_upstream_failed(gw_tunnel *t, const tunnel_io_failure *f) {
    if (t->http.x.resp_phase == RS_IDLE) {
        drop_upstream(t);  // a kept-alive upstream went away between requests
        return STEP_NEXT;
    }
    if (!t->http.x.resp_sent && f->err == GW_ERR_NONE) {
        return closed_before_response(t, GW_ERR_UPSTREAM_CLOSED, f->reason);
    }
    if (!t->http.x.resp_sent) {
        // The request went out right after a full handshake: a server that rejected our
        // certificate says so now, with an alert or a close, in the handshake's words.
        return tunnel_fail(t, f->err != GW_ERR_NONE ? f->err : GW_ERR_UPSTREAM_CLOSED, "%s", f->reason);
    }
    return reset_client(t, f->result, f->reason);
}

static tunnel_step upstream_http_error(gw_tunnel *t, const char *reason) {
    if (t->http.x.resp_sent) {
        return reset_client(t, GW_RESULT_UPSTREAM_HTTP_ERROR, reason);
    }
    return tunnel_fail(t, GW_ERR_UPSTREAM_HTTP, "%s", reason);
}

// move_framed passes bytes of one message body from *|src| to *|dst|: no further than
// the framing in |body| / |chunks| says the body goes. Sets *|out_done| at the body's
// end. Returns the bytes moved, or -1 if a chunked body is malformed.
static long move_framed(gw_tunnel *t, gw_buf **src, gw_buf **dst, gw_body *body, gw_chunked *chunks, int dechunk,
                        int *out_done) {
    *out_done = 0;
    gw_buf *s = *src;
    size_t avail = gw_buf_len(s);
    if (avail == 0) {
        return 0;
    }
    if (*dst == NULL && (*dst = gw_buf_get(&t->host->pool)) == NULL) {
        return 0;
    }
    size_t room = gw_buf_room(*dst);
    size_t n = avail < room ? avail : room;
    if (n == 0) {
        return 0;
    }
    const uint8_t *p = s->data + s->start;
    if (body->kind == GW_BODY_LENGTH) {
        if (n > body->length) {
            n = (size_t)body->length;
        }
        body->length -= n;
        *out_done = body->length == 0;
    } else if (body->kind == GW_BODY_CHUNKED && dechunk) {
        // Only the chunks' data goes on: decoded straight into |dst| (never more bytes
        // than consumed, and |n| fits its room).
        size_t data = 0;
        long k = gw_chunked_decode(chunks, p, n, (*dst)->data + (*dst)->end, &data, out_done);
        if (k < 0) {
            return -1;
        }
        (*dst)->end += (uint32_t)data;
        s->start += (uint32_t)k;
        if (gw_buf_len(s) == 0) {
            gw_buf_put(&t->host->pool, s);
            *src = NULL;
        }
        return k;
    } else if (body->kind == GW_BODY_CHUNKED) {
        long k = gw_chunked_scan(chunks, p, n, out_done);
        if (k < 0) {
            return -1;
        }
        n = (size_t)k;
    }
    if (n == avail && gw_buf_len(*dst) == 0) {
        // All of it is body: hand the buffer over instead of copying.
        gw_buf *empty = *dst;
        *dst = s;
        gw_buf_put(&t->host->pool, empty);
        *src = NULL;
    } else {
        gw_buf_append(*dst, p, n);
        s->start += (uint32_t)n;
        if (gw_buf_len(s) == 0) {
            gw_buf_put(&t->host->pool, s);
            *src = NULL;
        }
    }
    return (long)n;
}

// The exchange's steps return 1 on progress, 0 for nothing, or -1 with *|out| the step
// that ends the exchange's turn (a failure, a close, or a new route).
static int http_move_request_body(gw_tunnel *t, tunnel_step *out) {
    if (t->http.x.req_phase != RQ_BODY) {
        return 0;
    }
    int done;
    long n = move_framed(t, &t->http.from_client, &t->to_up, &t->http.x.req_body, &t->http.x.req_chunks, 0, &done);
    if (n < 0) {
        *out = t->http.x.resp_sent ? reset_client(t, GW_RESULT_BAD_REQUEST, "malformed chunked request body")
                                   : tunnel_fail(t, GW_ERR_BAD_REQUEST, "malformed chunked request body");
        return -1;
    }
    if (done) {
        t->http.x.req_phase = RQ_DONE;
    }
    return n > 0 || done;
}

// tunnel_http_start_request takes the request head |hr| at the start of from_client: checks it,
// keeps the current upstream if it goes to the same destination (else routes anew), and
// writes the head in origin-form into to_up. On failure the client gets its error.
tunnel_step tunnel_http_start_request(gw_tunnel *t, const gw_http_request *hr) {
    t->http.http_idle = 0;
    t->t_start = gw_loop_now(t->host->loop);
    t->up_bytes = t->down_bytes = 0;
    t->dns_ms = t->connect_ms = t->handshake_ms = -1;
    t->result = GW_RESULT_NONE;
    tunnel_clear_reason(t);
    // A new exchange record: from here on, a failure is this request's.
    int kept_up = t->http.x.up_keepalive;
    t->http.x = (http_exchange){.req_phase = RQ_HEAD, .resp_phase = RS_HEAD, .up_keepalive = kept_up};
    t->dial.fresh = 0;
    snprintf(t->http.x.method, sizeof(t->http.x.method), "%.*s", (int)(hr->method_len > 20 ? 20 : hr->method_len),
             hr->method);
    if (t->cfg != t->host->cfg) {
        // Reloaded since the last request: each request is routed like a new tunnel, with
        // the current rules, identities and users (listeners are the same in every snapshot).
        if (t->upstream.fd >= 0) {
            drop_upstream(t);
        }
        tunnel_uncount(t, 0);  // its rule's count belongs to the old snapshot
        t->rule = NULL;        // it and t->user belonged to the old snapshot
        t->user = NULL;
        t->front.auth_state = AUTH_NONE;  // so did a check's answer: the new users file decides
        pol_config_unref(t->cfg);
        t->cfg = pol_config_ref(t->host->cfg);
    }
    if (tunnel_unadmitted(t) == STEP_FAIL) {
        return STEP_FAIL;
    }
    tunnel_step auth = tunnel_http_authorized(t, hr);
    if (auth == STEP_WAIT) {
        t->http.x.resp_phase = RS_IDLE;  // the head stays in from_client, taken again after the check
        return STEP_WAIT;
    }
    if (auth != STEP_NEXT) {
        return auth;
    }
    if (gw_http_token_eq(hr->method, hr->method_len, "CONNECT")) {
        return tunnel_fail(t, GW_ERR_BAD_REQUEST,
                           "CONNECT after a forwarded request is not supported: open a new connection");
    }
    char scheme[8], host[256];
    uint16_t port;
    const char *path;
    size_t path_len;
    if (!gw_http_parse_absolute_uri(hr->target, hr->target_len, scheme, host, &port, &path, &path_len)) {
        return tunnel_fail(t, GW_ERR_BAD_REQUEST, "%s",
                           hr->target_len > 0 && hr->target[0] == '/'
                               ? "this is a proxy: the request target must be an absolute http:// URI"
                               : "request target is not a valid http:// URI");
    }
    if (strcmp(scheme, "https") == 0) {
        return tunnel_fail(t, GW_ERR_BAD_REQUEST, "https:// URLs go through CONNECT: set https_proxy for them");
    }
    size_t hosts = 0;
    for (size_t i = 0; i < hr->num_headers; i++) {
        hosts += gw_http_token_eq(hr->headers[i].name, hr->headers[i].name_len, "Host");
    }
    if (hosts > 1 || (hosts == 0 && hr->minor_version == 1)) {
        return tunnel_fail(t, GW_ERR_BAD_REQUEST, "%s",
                           hosts ? "request has more than one Host header" : "HTTP/1.1 request without a Host header");
    }
    const char *framing = gw_h1_request_body(hr, &t->http.x.req_body);
    if (framing != NULL) {
        return tunnel_fail(t, GW_ERR_BAD_REQUEST, "%s", framing);
    }
    pol_dest d;
    if (!pol_dest_init(&d, host, port)) {
        return tunnel_fail(t, GW_ERR_BAD_REQUEST, "request target \"%s\" %s", host, pol_dest_problem(host));
    }
    int reuse = t->upstream.fd >= 0 && d.port == t->dest.port && strcmp(d.host, t->dest.host) == 0;
    if (!reuse && t->upstream.fd >= 0) {
        t->http.x.resp_phase = RS_IDLE;  // between exchanges, as far as that connection is concerned
        release_upstream(t);             // another destination: the connection may serve someone else
        t->http.x.resp_phase = RS_HEAD;
    }
    t->http.x.client_minor = hr->minor_version;
    t->http.x.client_keepalive = gw_h1_keep_alive(hr->headers, hr->num_headers, hr->minor_version);
    t->http.x.up_keepalive = 1;
    t->http.x.req_is_head = gw_http_token_eq(hr->method, hr->method_len, "HEAD");
    if (t->to_up == NULL && (t->to_up = gw_buf_get(&t->host->pool)) == NULL) {
        return tunnel_fail(t, GW_ERR_INTERNAL, "out of memory");
    }
    const char *authority = hr->target + strlen(scheme) + 3;
    // With the pool on, the upstream connection is kept whether or not the client keeps its own.
    int up_close = !t->http.x.client_keepalive && t->cfg->upstream_pool.idle_per_key == 0;
    size_t n = gw_h1_write_request(hr, path, path_len, authority, (size_t)(path - authority), up_close,
                                   (char *)t->to_up->data + t->to_up->end, gw_buf_room(t->to_up));
    if (n == 0) {
        return tunnel_fail(t, GW_ERR_HEADER_TOO_LARGE, "request head is too large once rewritten for the origin");
    }
    t->to_up->end += (uint32_t)n;
    t->http.from_client->start += (uint32_t)hr->head_len;
    tunnel_release_if_empty(t, &t->http.from_client);
    t->http.x.req_phase = t->http.x.req_body.kind == GW_BODY_NONE ? RQ_DONE : RQ_BODY;
    gw_chunked_init(&t->http.x.req_chunks);
    // The body bytes already here are checked before anything goes upstream.
    tunnel_step out;
    if (http_move_request_body(t, &out) < 0) {
        return out;
    }
    t->http.x.reuse = reuse;
    if (reuse) {
        t->conn_kind = CONN_KEPT;
        return STEP_NEXT;  // over the kept upstream: the exchange goes on
    }
    return tunnel_want(t, host, port);
}

// http_take_response reads a response head from from_up and writes it for the client
// into to_down.
static int http_take_response(gw_tunnel *t, tunnel_step *out) {
    gw_buf *b = t->http.from_up;
    size_t len = gw_buf_len(b);
    if (len == 0 || gw_buf_len(t->to_down) > 0) {
        return 0;
    }
    const uint8_t *p = b->data + b->start;
    gw_http_response hr;
    gw_http_status st = GW_HTTP_NEED_MORE;
    if (gw_h1_head_complete(p, len, &t->http.resp_scanned)) {
        st = gw_http_parse_response((const char *)p, len, &hr);
    }
    if (st == GW_HTTP_NEED_MORE) {
        if (gw_buf_room(b) == 0) {
            *out = upstream_http_error(t, "upstream response head is larger than 16 KiB");
            return -1;
        }
        return 0;
    }
    t->http.resp_scanned = 0;
    if (st != GW_HTTP_OK) {
        *out = upstream_http_error(t, "upstream sent a malformed response head");
        return -1;
    }
    if (hr.status == 101) {
        *out = upstream_http_error(t, "upstream switched protocols (101), which a forwarded request cannot carry");
        return -1;
    }
    if (hr.status < 200) {
        // 100 Continue and the like: HTTP/1.1 clients get them; the final head follows.
        if (t->http.x.client_minor == 1 && tunnel_queue_down(t, p, hr.head_len)) {
            t->down_bytes += hr.head_len;
        }
        b->start += (uint32_t)hr.head_len;
        tunnel_release_if_empty(t, &t->http.from_up);
        return 1;
    }
    const char *framing = gw_h1_response_body(&hr, t->http.x.req_is_head, &t->http.x.resp_body);
    if (framing != NULL) {
        *out = upstream_http_error(t, framing);
        return -1;
    }
    // A response that ends with the close, or one that came before its request was
    // sent whole, ends both connections after it.
    int clean = t->http.x.resp_body.kind != GW_BODY_CLOSE && t->http.x.req_phase == RQ_DONE;
    t->http.x.up_keepalive = clean && gw_h1_keep_alive(hr.headers, hr.num_headers, hr.minor_version);
    // An HTTP/1.0 client cannot read chunked framing: it gets the data, ended by the close.
    t->http.x.resp_dechunk = t->http.x.resp_body.kind == GW_BODY_CHUNKED && t->http.x.client_minor == 0;
    t->http.x.client_keepalive = t->http.x.client_keepalive && clean && !t->host->draining && !t->http.x.resp_dechunk;
    if (t->to_down == NULL && (t->to_down = gw_buf_get(&t->host->pool)) == NULL) {
        return 0;
    }
    size_t n = gw_h1_write_response(&hr, t->http.x.client_minor, t->http.x.client_keepalive, t->http.x.resp_dechunk,
                                    (char *)t->to_down->data + t->to_down->end, gw_buf_room(t->to_down));
    if (n == 0) {
        *out = upstream_http_error(t, "upstream response head is too large");
        return -1;
    }
    t->to_down->end += (uint32_t)n;
    t->down_bytes += n;
    t->http.x.status = hr.status;
    t->http.x.resp_sent = 1;
    b->start += (uint32_t)hr.head_len;
    tunnel_release_if_empty(t, &t->http.from_up);
    t->http.x.resp_phase = t->http.x.resp_body.kind == GW_BODY_NONE ? RS_DONE : RS_BODY;
    gw_chunked_init(&t->http.x.resp_chunks);
    return 1;
}

static int http_move_response_body(gw_tunnel *t, tunnel_step *out) {
    if (t->http.x.resp_phase != RS_BODY) {
        return 0;
    }
    int done;
    long n = move_framed(t, &t->http.from_up, &t->to_down, &t->http.x.resp_body, &t->http.x.resp_chunks,
                         t->http.x.resp_dechunk, &done);
    if (n < 0) {
        *out = reset_client(t, GW_RESULT_UPSTREAM_HTTP_ERROR, "upstream sent a malformed chunked body");
        return -1;
    }
    t->down_bytes += (uint64_t)n;
    if (done) {
        t->http.x.resp_phase = RS_DONE;
    }
    return n > 0 || done;
}

// http_upstream_eof handles the upstream's EOF once its bytes were taken.
static int http_upstream_eof(gw_tunnel *t, tunnel_step *out) {
    switch (t->http.x.resp_phase) {
        case RS_IDLE:
            drop_upstream(t);
            return 1;
        case RS_DONE:
            t->http.x.up_keepalive = 0;
            return 1;
        case RS_HEAD:
            *out = closed_before_response(t, GW_ERR_UPSTREAM_CLOSED,
                                          "upstream closed the connection before sending a response");
            return -1;
        default:
            break;
    }
    if (t->http.x.resp_body.kind == GW_BODY_CLOSE && !t->upstream_io.truncated) {
        t->http.x.resp_phase = RS_DONE;  // the close ends this response
        t->http.x.up_keepalive = 0;
        return 1;
    }
    *out = reset_client(t, GW_RESULT_UPSTREAM_CLOSED,
                        t->http.x.resp_body.kind == GW_BODY_CLOSE
                            ? "upstream closed without TLS close_notify: the response may be cut off"
                            : "upstream closed in the middle of the response body");
    return -1;
}

// http_exchange_done logs the finished exchange and readies the connection for the
// next request, or (the client does not keep it) flushes the response, sends FIN and
// waits for the client's close, as after an error reply.
static int http_exchange_done(gw_tunnel *t, tunnel_step *out) {
    t->result = GW_RESULT_OK;
    tunnel_log_access(t);
    t->result = GW_RESULT_NONE;
    tunnel_clear_reason(t);
    t->http.x.req_phase = RQ_HEAD;
    t->http.x.resp_phase = RS_IDLE;
    t->http.http_idle = 1;
    gw_buf_put(&t->host->pool, t->http.replay);
    t->http.replay = NULL;
    t->upstream.requests++;
    if (t->upstream.requests >= (unsigned)t->cfg->upstream_pool.max_requests) {
        t->http.x.up_keepalive = 0;  // it carried its share
    }
    if (!t->http.x.up_keepalive && t->upstream.fd >= 0) {
        drop_upstream(t);
    }
    if (t->http.x.client_keepalive) {
        return 1;
    }
    release_upstream(t);
    // The client said "Connection: close" (or cannot keep it): with nothing more from it,
    // the connection closes once the response is written, as nginx does; bytes it sent
    // after its last request make the flush wait for its close instead (a close with
    // unread bytes would be a reset that may destroy the response).
    t->flush_close = gw_buf_len(t->http.from_client) == 0;
    gw_buf_put(&t->host->pool, t->http.from_client);
    t->http.from_client = NULL;
    t->state = T_FLUSHING;
    t->flush_reset = 0;
    tunnel_set_timer(t, (uint64_t)t->cfg->limits.idle_timeout_s * 1000);
    *out = STEP_NEXT;
    return -1;
}

// http_next_head takes the next request head from from_client once the connection is
// between exchanges.
static int http_next_head(gw_tunnel *t, tunnel_step *out) {
    if (!(t->http.x.req_phase == RQ_HEAD && t->http.x.resp_phase == RS_IDLE && gw_buf_len(t->to_up) == 0 &&
          gw_buf_len(t->http.from_client) > 0 && t->front.auth_job == NULL)) {
        return 0;
    }
    gw_http_request hr;
    t->http.http_idle = 0;
    if (t->http.head_deadline == 0) {
        // A later request head has the first head's time from its first byte on: a client
        // that trickles it cannot hold the connection by idle_timeout_s.
        uint64_t limit = (uint64_t)t->cfg->limits.handshake_timeout_ms;
        t->http.head_deadline = gw_loop_now(t->host->loop) + limit;
        tunnel_set_timer(t, limit);
    }
    tunnel_step s = tunnel_take_request_head(t, t->http.from_client, &hr);
    if (s == STEP_WAIT) {
        return 0;
    }
    if (s == STEP_NEXT) {
        t->http.head_deadline = 0;
        s = tunnel_http_start_request(t, &hr);
        if (s == STEP_WAIT || (s == STEP_NEXT && t->state == T_HTTP_PROXY)) {
            return 1;  // a password check under way, or the kept upstream takes it
        }
    }
    *out = s;
    return -1;
}

// io turns a failed read or write into the exchange's step: the upstream's failure is
// this request's (answered, or the client reset after part of a response), the client's
// ends the connection.
static int io(gw_tunnel *t, int r, const tunnel_io_failure *f, tunnel_step *out) {
    if (r < 0) {
        *out = f->upstream ? tunnel_http_upstream_failed(t, f) : tunnel_client_failure(t, f);
    }
    return r;
}

tunnel_step tunnel_phase_http(gw_tunnel *t) {
    tunnel_step out = STEP_WAIT;
    tunnel_io_failure f;
    int progress, rounds = 0;
    if (t->upstream_io.error && t->upstream.fd >= 0 && t->upstream.confirmed) {
        // A reset: what the upstream sent before it was read with the data; the error
        // decides now. (Before the server confirmed us, the read says why: a server that
        // rejects our certificate may reset the connection after its alert.)
        int e = 0;
        socklen_t l = sizeof(e);
        getsockopt(t->upstream.fd, SOL_SOCKET, SO_ERROR, &e, &l);
        t->upstream_io.error = 0;
        tunnel_io_failure rf = {.upstream = 1, .result = GW_RESULT_UPSTREAM_RESET, .err = GW_ERR_NONE};
        snprintf(rf.reason, sizeof(rf.reason), "%s", e ? strerror(e) : "connection reset");
        return tunnel_http_upstream_failed(t, &rf);
    }
#define STEP(expr)          \
    do {                    \
        int r_ = (expr);    \
        if (r_ < 0) {       \
            return out;     \
        }                   \
        progress |= r_ > 0; \
    } while (0)
    do {
        progress = 0;
        STEP(io(t, tunnel_client_read(t, &t->http.from_client, &f), &f, &out));
        STEP(http_next_head(t, &out));
        // A client that half-closed still gets the answers to every request it sent.
        if (t->client_io.eof && t->http.x.req_phase == RQ_BODY && gw_buf_len(t->http.from_client) == 0) {
            return tunnel_end(t, GW_RESULT_CLIENT_CLOSED, END_CLOSE, "client closed in the middle of the request body");
        }
        if (t->client_io.eof && t->http.x.req_phase == RQ_HEAD && t->http.x.resp_phase == RS_IDLE &&
            gw_buf_len(t->to_up) == 0 && gw_buf_len(t->to_down) == 0) {
            if (gw_buf_len(t->http.from_client) > 0) {
                return tunnel_end(t, GW_RESULT_CLIENT_CLOSED, END_CLOSE,
                                  "client closed before sending a complete request");
            }
            release_upstream(t);  // the client is done with it; others may not be
            return tunnel_end(t, GW_RESULT_OK, END_CLOSE, NULL);
        }
        STEP(http_move_request_body(t, &out));
        if (t->upstream.fd >= 0) {
            keep_replay(t);
            STEP(io(t, tunnel_up_write(t, &t->to_up, &f), &f, &out));
            STEP(io(t, tunnel_up_read(t, &t->http.from_up, &f), &f, &out));
        }
        if (t->http.x.resp_phase == RS_HEAD) {
            STEP(http_take_response(t, &out));
        }
        STEP(http_move_response_body(t, &out));
        if (t->http.x.resp_phase == RS_IDLE && gw_buf_len(t->http.from_up) > 0) {
            drop_upstream(t);  // bytes nobody asked for: this connection is not to be trusted
        }
        STEP(io(t, tunnel_client_write(t, &t->to_down, &f), &f, &out));
        if (t->upstream_io.eof && t->upstream.fd >= 0 &&
            (gw_buf_len(t->http.from_up) == 0 || t->http.x.resp_phase == RS_IDLE)) {
            STEP(http_upstream_eof(t, &out));
        }
        if (t->http.x.req_phase == RQ_DONE && t->http.x.resp_phase == RS_DONE) {
            STEP(http_exchange_done(t, &out));
        }
    } while (progress && ++rounds < 16);
#undef STEP
    if (progress) {
        tunnel_yield(t);
    }
    return STEP_WAIT;
}

tunnel_step tunnel_http_timeout(gw_tunnel *t) {
    uint64_t idle_ms = (uint64_t)t->cfg->limits.idle_timeout_s * 1000;
    uint64_t now = gw_loop_now(t->host->loop);
    if (t->http.head_deadline != 0 && now >= t->http.head_deadline) {
        return tunnel_end(t, GW_RESULT_CLIENT_TIMEOUT, END_CLOSE,
                          "client did not send a complete request head within handshake_timeout_ms");
    }
    if (now - t->last_activity >= idle_ms) {
        return tunnel_end(t, GW_RESULT_IDLE_TIMEOUT, END_CLOSE, "no data either way for idle_timeout_s");
    }
    uint64_t next = idle_ms - (now - t->last_activity);
    if (t->http.head_deadline != 0 && t->http.head_deadline - now < next) {
        next = t->http.head_deadline - now;
    }
    tunnel_set_timer(t, next);
    return STEP_WAIT;
}
