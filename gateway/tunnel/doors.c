// doors: the client protocols as values (sniproxy's struct Protocol). A door reads its
// request from the bytes the client sent and answers in its own protocol: success once the
// upstream is established, a refusal for any error in the phase the tunnel is in. The
// first byte picks the door of a proxy listener (door_detect); forward and transparent
// listeners have theirs from the start. Credentials are checked only for admitted clients.
#include "gateway/tunnel/internal.h"

// ---- reading the request ----

tunnel_step tunnel_read_request(gw_tunnel *t) {
    if (!t->client_io.readable || t->client_io.eof) {
        return STEP_WAIT;
    }
    if (t->to_up == NULL && (t->to_up = gw_buf_get(&t->host->pool)) == NULL) {
        return tunnel_end(t, GW_RESULT_INTERNAL_ERROR, END_CLOSE, "out of memory");
    }
    while (gw_buf_room(t->to_up) > 0) {
        size_t room = gw_buf_room(t->to_up);
        ssize_t n = read(t->client_fd, t->to_up->data + t->to_up->end, room);
        if (n > 0) {
            t->to_up->end += (uint32_t)n;
            if ((size_t)n < room && !t->client_io.rdhup) {
                t->client_io.readable = 0;  // the socket is empty now (see side_read in relay.c)
                return STEP_WAIT;
            }
            continue;
        }
        if (n == 0) {
            // The request may be complete: parse it first (a client may half-close).
            t->client_io.eof = 1;
            t->client_io.readable = 0;
            return STEP_WAIT;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN) {
            t->client_io.readable = 0;
            return STEP_WAIT;
        }
        return tunnel_end(t, GW_RESULT_CLIENT_ERROR, END_CLOSE, strerror(errno));
    }
    return STEP_WAIT;
}

static void consume(gw_tunnel *t, size_t n) {
    t->to_up->start += (uint32_t)n;
}

tunnel_step tunnel_take_request_head(gw_tunnel *t, gw_buf *b, gw_http_request *hr) {
    const uint8_t *p = b->data + b->start;
    size_t len = gw_buf_len(b);
    size_t limit = (size_t)t->cfg->limits.header_max;
    // Parse only once a head may be complete (short beginnings are parsed at once so that
    // a client speaking something else is refused early).
    if (len > 256 && !gw_h1_head_complete(p, len, &t->front.head_scanned)) {
        if (len >= limit || gw_buf_room(b) == 0) {
            return tunnel_fail(t, GW_ERR_HEADER_TOO_LARGE, "request head is larger than header_max");
        }
        return STEP_WAIT;
    }
    gw_http_status st = gw_http_parse_request((const char *)p, len, hr);
    if (st == GW_HTTP_NEED_MORE) {
        if (len >= limit || gw_buf_room(b) == 0) {
            return tunnel_fail(t, GW_ERR_HEADER_TOO_LARGE, "request head is larger than header_max");
        }
        return STEP_WAIT;
    }
    if (st == GW_HTTP_ERR_TOO_LARGE || (st == GW_HTTP_OK && hr->head_len > limit)) {
        return tunnel_fail(t, GW_ERR_HEADER_TOO_LARGE, "request head is larger than header_max");
    }
    if (st != GW_HTTP_OK) {
        return tunnel_fail(
            t, GW_ERR_BAD_REQUEST, "%s",
            st == GW_HTTP_ERR_VERSION ? "only HTTP/1.0 and HTTP/1.1 are supported" : "malformed HTTP request");
    }
    t->front.head_scanned = 0;
    return STEP_NEXT;
}

tunnel_step tunnel_want(gw_tunnel *t, const char *host, uint16_t port) {
    snprintf(t->dial.want_host, sizeof(t->dial.want_host), "%s", host);
    t->dial.want_port = port;
    t->state = T_ROUTE;
    return STEP_NEXT;
}

tunnel_step tunnel_unadmitted(gw_tunnel *t) {
    if (t->admission == GW_ERR_NONE) {
        return STEP_NEXT;
    }
    if (t->admission == GW_ERR_LIMIT && t->share_full) {
        return tunnel_fail(t, t->admission,
                           "this client (its caller, or its address) holds its whole share of max_connections "
                           "(max_connections_per_client = %d)",
                           t->cfg->limits.max_connections_per_client);
    }
    return tunnel_fail(
        t, t->admission, "%s",
        t->admission == GW_ERR_LIMIT ? "max_connections reached" : "client address is not in the allow list");
}

// ---- the first byte: which door ----

static tunnel_step detect_read(gw_tunnel *t) {
    if (gw_buf_len(t->to_up) == 0) {
        return STEP_WAIT;
    }
    uint8_t first = t->to_up->data[t->to_up->start];
    unsigned protos = tunnel_listener_of(t)->protocols;
    if (first == 5 && (protos & POL_PROTO_SOCKS5)) {
        t->door = &door_socks5;
        t->state = T_SOCKS5_GREETING;
    } else if (first == 4 && (protos & POL_PROTO_SOCKS4)) {
        t->door = &door_socks4;
        t->state = T_SOCKS4_REQUEST;
    } else if (protos & POL_PROTO_HTTP) {
        t->door = &door_connect;
        t->state = T_HTTP_HEAD;
    } else {
        return tunnel_fail(t, GW_ERR_BAD_REQUEST, "first byte 0x%02x is no protocol enabled on listener %s", first,
                           tunnel_listener_of(t)->name);
    }
    return STEP_NEXT;
}

static int flush_nothing(gw_tunnel *t, gw_err err, const char *reason) {
    return 1;  // nothing to say: FIN once the client's bytes are drained
}

static void reply_nothing(gw_tunnel *t) {}

const tunnel_door door_detect = {
    .name = "-", .read_request = detect_read, .reply_ok = reply_nothing, .reply_err = flush_nothing};

// ---- SOCKS5 (RFC 1928, with RFC 1929 username/password) ----

static tunnel_step socks5_greeting(gw_tunnel *t, const uint8_t *p, size_t len) {
    size_t used = 0;
    uint32_t methods = 0;
    gw_socks_status st = gw_socks5_parse_greeting(p, len, &used, &methods);
    if (st == GW_SOCKS_NEED_MORE) {
        return STEP_WAIT;
    }
    if (st != GW_SOCKS_OK) {
        return tunnel_fail(t, GW_ERR_BAD_REQUEST, "malformed SOCKS5 greeting");
    }
    consume(t, used);
    uint8_t want = t->cfg->users ? GW_SOCKS5_METHOD_USERPASS : GW_SOCKS5_METHOD_NONE;
    if (t->admission != GW_ERR_NONE) {
        // Not admitted: no credentials are asked for or checked; the request that follows
        // gets the refusal (0x02, or 0x01 over max_connections).
        want = methods & (1u << GW_SOCKS5_METHOD_NONE) ? GW_SOCKS5_METHOD_NONE : GW_SOCKS5_METHOD_USERPASS;
    }
    if (!(methods & (1u << want))) {
        return tunnel_fail(t, GW_ERR_AUTH, "%s",
                           t->cfg->users ? "proxy authentication required: the SOCKS5 client offered no "
                                           "username/password"
                                         : "SOCKS5 client offered no acceptable authentication method");
    }
    uint8_t ok[2] = {5, want};
    tunnel_queue_down(t, ok, 2);
    t->state = want == GW_SOCKS5_METHOD_USERPASS ? T_SOCKS5_AUTH : T_SOCKS5_REQUEST;
    return STEP_NEXT;
}

static tunnel_step socks5_auth(gw_tunnel *t, const uint8_t *p, size_t len) {
    size_t used = 0;
    char name[256] = "", pass[256] = "";
    gw_socks_status st = gw_socks5_parse_userpass(p, len, &used, name, pass);
    if (st == GW_SOCKS_NEED_MORE) {
        return STEP_WAIT;
    }
    int ok;
    if (t->admission != GW_ERR_NONE) {
        ok = st == GW_SOCKS_OK;  // not checked: any credentials get the same answer
    } else {
        ok = st == GW_SOCKS_OK ? tunnel_check_credentials(t, name, strlen(name), pass, strlen(pass)) : 0;
    }
    OPENSSL_cleanse(pass, sizeof(pass));
    if (ok == -1) {
        return STEP_WAIT;  // being checked: the request is parsed again with the answer
    }
    if (ok == -2) {
        return tunnel_fail(t, GW_ERR_LIMIT, "too many proxy password checks waiting; try again");
    }
    if (!ok) {
        return tunnel_fail(t, GW_ERR_AUTH,
                           st == GW_SOCKS_OK ? "proxy authentication failed for user \"%.64s\""
                                             : "malformed SOCKS5 username/password request%.0s",
                           name);
    }
    consume(t, used);
    uint8_t yes[2] = {1, 0};
    tunnel_queue_down(t, yes, 2);
    t->state = T_SOCKS5_REQUEST;
    return STEP_NEXT;
}

static tunnel_step socks5_request(gw_tunnel *t, const uint8_t *p, size_t len) {
    size_t used = 0;
    gw_socks_request req;
    switch (gw_socks5_parse_request(p, len, &used, &req)) {
        case GW_SOCKS_NEED_MORE:
            return STEP_WAIT;
        case GW_SOCKS_OK:
            consume(t, used);
            return tunnel_want(t, req.host, req.port);
        case GW_SOCKS_ERR_COMMAND:
            return tunnel_fail(t, GW_ERR_BAD_COMMAND, "SOCKS5 command 0x%02x is not supported (only CONNECT)",
                               req.command);
        case GW_SOCKS_ERR_ADDRESS_TYPE:
            return tunnel_fail(t, GW_ERR_BAD_ADDRESS_TYPE, "SOCKS5 address type is not IPv4, domain or IPv6");
        case GW_SOCKS_ERR_NAME:
            return tunnel_fail(t, GW_ERR_BAD_REQUEST, "SOCKS5 destination is not a valid host name");
        default:
            return tunnel_fail(t, GW_ERR_BAD_REQUEST, "malformed SOCKS5 request");
    }
}

static tunnel_step socks5_read(gw_tunnel *t) {
    const uint8_t *p = t->to_up->data + t->to_up->start;
    size_t len = gw_buf_len(t->to_up);
    switch (t->state) {
        case T_SOCKS5_GREETING:
            return socks5_greeting(t, p, len);
        case T_SOCKS5_AUTH:
            return socks5_auth(t, p, len);
        default:
            return socks5_request(t, p, len);
    }
}

// bound_address is where the upstream socket is bound, for the success replies.
static const struct sockaddr *bound_address(gw_tunnel *t, struct sockaddr_storage *ss) {
    socklen_t bl = sizeof(*ss);
    return getsockname(t->upstream.fd, (struct sockaddr *)ss, &bl) == 0 ? (struct sockaddr *)ss : NULL;
}

static void socks5_ok(gw_tunnel *t) {
    uint8_t reply[32];
    struct sockaddr_storage ss;
    tunnel_queue_down(t, reply, gw_socks5_encode_reply(0, bound_address(t, &ss), reply));
}

static int socks5_err(gw_tunnel *t, gw_err err, const char *reason) {
    switch (t->state) {
        case T_SOCKS5_GREETING: {
            // A broken greeting has no reply that fits; a greeting without an acceptable
            // method gets "no acceptable methods".
            uint8_t no[2] = {5, GW_SOCKS5_METHOD_UNACCEPTABLE};
            if (err == GW_ERR_AUTH) {
                tunnel_queue_down(t, no, 2);
            }
            return 1;
        }
        case T_SOCKS5_AUTH: {
            uint8_t no[2] = {1, 1};  // RFC 1929 has one failure (a full queue says 503 in the log)
            tunnel_queue_down(t, no, 2);
            return 1;
        }
        default: {
            uint8_t reply[32];
            tunnel_queue_down(t, reply, gw_socks5_encode_reply(gw_err_describe(err)->socks5_rep, NULL, reply));
            return 1;
        }
    }
}

const tunnel_door door_socks5 = {
    .name = "socks5", .has_replies = 1, .read_request = socks5_read, .reply_ok = socks5_ok, .reply_err = socks5_err};

// ---- SOCKS4 and SOCKS4a ----

static tunnel_step socks4_read(gw_tunnel *t) {
    size_t used = 0;
    gw_socks_request req;
    char user[256];
    gw_socks_status st =
        gw_socks4_parse_request(t->to_up->data + t->to_up->start, gw_buf_len(t->to_up), &used, &req, user);
    if (st == GW_SOCKS_NEED_MORE) {
        return STEP_WAIT;
    }
    if (tunnel_unadmitted(t) == STEP_FAIL) {
        return STEP_FAIL;
    }
    if (t->cfg->users != NULL) {
        return tunnel_fail(t, GW_ERR_AUTH,
                           "proxy authentication required: SOCKS4 carries no password (use SOCKS5 or HTTP)");
    }
    if (st == GW_SOCKS_OK) {
        consume(t, used);
        return tunnel_want(t, req.host, req.port);
    }
    if (st == GW_SOCKS_ERR_COMMAND) {
        return tunnel_fail(t, GW_ERR_BAD_COMMAND, "SOCKS4 command is not supported (only CONNECT)");
    }
    return tunnel_fail(t, GW_ERR_BAD_REQUEST, "malformed SOCKS4 request");
}

static void socks4_ok(gw_tunnel *t) {
    uint8_t reply[32];
    struct sockaddr_storage ss;
    tunnel_queue_down(t, reply, gw_socks4_encode_reply(0x5a, bound_address(t, &ss), reply));
}

static int socks4_err(gw_tunnel *t, gw_err err, const char *reason) {
    uint8_t reply[32];
    tunnel_queue_down(t, reply, gw_socks4_encode_reply(gw_err_describe(err)->socks4_code, NULL, reply));
    return 1;
}

const tunnel_door door_socks4 = {
    .name = "socks4", .has_replies = 1, .read_request = socks4_read, .reply_ok = socks4_ok, .reply_err = socks4_err};

// ---- HTTP: CONNECT, and the error responses of http_proxy too ----

static tunnel_step connect_read(gw_tunnel *t) {
    gw_http_request hr;
    tunnel_step s = tunnel_take_request_head(t, t->to_up, &hr);
    if (s != STEP_NEXT) {
        return s;
    }
    if (!gw_http_token_eq(hr.method, hr.method_len, "CONNECT")) {
        // An http_proxy request: the forward proxy's door takes over this connection, and
        // its exchange takes this head as its first (with the time left since accept).
        t->door = &door_http;
        t->http.from_client = t->to_up;
        t->to_up = NULL;
        t->http.head_deadline = t->t_start + (uint64_t)t->cfg->limits.handshake_timeout_ms;
        t->state = T_HTTP_PROXY;
        return STEP_NEXT;
    }
    if (tunnel_unadmitted(t) == STEP_FAIL) {
        return STEP_FAIL;
    }
    if ((s = tunnel_http_authorized(t, &hr)) != STEP_NEXT) {
        return s;
    }
    consume(t, hr.head_len);
    char host[256];
    uint16_t port;
    if (!gw_http_parse_authority(hr.target, hr.target_len, 0, host, &port)) {
        return tunnel_fail(t, GW_ERR_BAD_REQUEST, "CONNECT target must be host:port");
    }
    return tunnel_want(t, host, port);
}

static void connect_ok(gw_tunnel *t) {
    static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
    tunnel_queue_down(t, ok, sizeof(ok) - 1);
}

// http_err queues the error response for |err|. |reason| is the tunnel's reason, which
// tunnel_set_reason caps at REASON_MAX: the one cap that makes the reply fit, so its
// Content-Length is always the length of the body sent.
static int http_err(gw_tunnel *t, gw_err err, const char *reason) {
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
    int len =
        snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\n", info->http_status, gw_http_reason_phrase(info->http_status));
    if (proxy_status != NULL && t->dial.via_blame) {
        // RFC 9209 next-hop: the parent proxy the failure came from.
        len += snprintf(head + len, sizeof(head) - (size_t)len,
                        "Proxy-Status: mtlsgw; error=%s; next-hop=\"%s:%u\"; details=\"%s\"\r\n", proxy_status,
                        t->rule->via->host, t->rule->via->port, details);
    } else if (proxy_status != NULL) {
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
    return 1;
}

const tunnel_door door_connect = {.name = "http-connect",
                                  .has_replies = 1,
                                  .read_request = connect_read,
                                  .reply_ok = connect_ok,
                                  .reply_err = http_err};

// http_proxy requests: read by the exchange (http_proxy.c), answered like CONNECT.
static tunnel_step http_read(gw_tunnel *t) {
    return STEP_WAIT;
}

const tunnel_door door_http = {.name = "http",
                               .has_replies = 1,
                               .exchanges = 1,
                               .read_request = http_read,
                               .reply_ok = reply_nothing,
                               .reply_err = http_err};

// ---- plain streams: forward and transparent listeners ----

static int forward_err(gw_tunnel *t, gw_err err, const char *reason) {
    // Refused before any connection was tried: close at once. Later, FIN and drain.
    return t->state == T_ROUTE ? 0 : 1;
}

const tunnel_door door_forward = {.name = "forward",
                                  .plain_stream = 1,
                                  .read_request = http_read,
                                  .reply_ok = reply_nothing,
                                  .reply_err = forward_err};

static int transparent_err(gw_tunnel *t, gw_err err, const char *reason) {
    // No protocol to answer in: reset, so the client sees a failure, not an empty stream
    // that ended well. The access log has the reason.
    return -1;
}

const tunnel_door door_transparent = {.name = "transparent",
                                      .plain_stream = 1,
                                      .original_dest = 1,
                                      .read_request = http_read,
                                      .reply_ok = reply_nothing,
                                      .reply_err = transparent_err};
