// front: the front door. The first byte picks the protocol; the SOCKS5 greeting,
// username/password and request, SOCKS4/4a, HTTP CONNECT and the first http_proxy head are
// read and checked here, credentials only for admitted clients.
#include "gateway/tunnel/internal.h"

// ---- request parsing ----

// tunnel_read_request reads what the client sent so far into to_up. Returns 0 if the tunnel
// closed (EOF or error before a complete request).
int tunnel_read_request(gw_tunnel *t) {
    if (!t->client_io.readable || t->client_io.eof) {
        return 1;
    }
    if (t->to_up == NULL && (t->to_up = gw_buf_get(&t->host->pool)) == NULL) {
        tunnel_close(t, GW_RESULT_INTERNAL_ERROR, "out of memory");
        return 0;
    }
    while (gw_buf_room(t->to_up) > 0) {
        ssize_t n = read(t->client_fd, t->to_up->data + t->to_up->end, gw_buf_room(t->to_up));
        if (n > 0) {
            t->to_up->end += (uint32_t)n;
            continue;
        }
        if (n == 0) {
            // The request may be complete: parse it first (a client may half-close).
            t->client_io.eof = 1;
            t->client_io.readable = 0;
            return 1;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN) {
            t->client_io.readable = 0;
            return 1;
        }
        tunnel_close(t, GW_RESULT_CLIENT_ERROR, strerror(errno));
        return 0;
    }
    return 1;
}

static void consume(gw_tunnel *t, size_t n) {
    t->to_up->start += (uint32_t)n;
}

static void on_passcheck(void *arg, int ok) {
    gw_tunnel *t = arg;
    t->front.auth_job = NULL;
    t->front.auth_state = ok ? AUTH_GRANTED : AUTH_DENIED;
    gw_metrics_password_check(ok ? GW_PASS_VERIFIED : GW_PASS_REJECTED);
    tunnel_run(t);
}

// check_credentials says whether |name| / |pass| is a proxy user: 1 yes (t->user set), 0
// no, -1 the answer is being worked out off the loop (the caller stops; the request is
// parsed again when it comes), -2 refused for now (too many checks waiting: the client
// got 503).
static int check_credentials(gw_tunnel *t, const char *name, size_t name_len, const char *pass, size_t pass_len) {
    switch (t->front.auth_state) {
        case AUTH_PENDING:
            return -1;
        case AUTH_GRANTED:
            t->front.auth_state = AUTH_NONE;
            t->user = t->front.auth_user;
            return 1;
        case AUTH_DENIED:
            t->front.auth_state = AUTH_NONE;
            return 0;
        default:
            break;
    }
    const char *user = NULL;
    gw_pass_status st = gw_passcheck_start(t->host->passcheck, t->cfg->users, name, name_len, pass, pass_len,
                                           on_passcheck, t, &user, &t->front.auth_job);
    switch (st) {
        case GW_PASS_OK:
        case GW_PASS_CACHE_HIT:
            gw_metrics_password_check(st == GW_PASS_OK ? GW_PASS_VERIFIED : GW_PASS_CACHED);
            t->user = user;
            return 1;
        case GW_PASS_PENDING:
            t->front.auth_state = AUTH_PENDING;
            t->front.auth_user = user;
            return -1;
        case GW_PASS_BUSY:
            gw_metrics_password_check(GW_PASS_QUEUE_FULL);
            t->proto = t->proto == P_SOCKS5 ? P_NONE : t->proto;  // no SOCKS5 reply fits mid-authentication
            tunnel_reject(t, GW_ERR_LIMIT, "too many proxy password checks waiting; try again");
            return -2;
        default:
            gw_metrics_password_check(GW_PASS_REJECTED);
            return 0;
    }
}

// tunnel_http_authorized checks Proxy-Authorization: Basic when auth.users_file is set: 1 yes;
// 0 no (the client got 407 with Proxy-Authenticate, or 503); -1 the check is under way.
int tunnel_http_authorized(gw_tunnel *t, const gw_http_request *hr) {
    if (t->cfg->users == NULL) {
        return 1;
    }
    const gw_http_header *h = gw_http_find_header(hr->headers, hr->num_headers, "Proxy-Authorization");
    if (h == NULL) {
        tunnel_reject(t, GW_ERR_AUTH, "proxy authentication required (Proxy-Authorization: Basic)");
        return 0;
    }
    uint8_t decoded[600];
    size_t n = 0;
    const char *v = h->value;
    size_t vl = h->value_len;
    int ok = vl > 6 && strncasecmp(v, "Basic ", 6) == 0;
    if (ok) {
        v += 6, vl -= 6;
        while (vl > 0 && *v == ' ') {
            v++, vl--;
        }
        ok = EVP_DecodedLength(&n, vl) && n <= sizeof(decoded) &&
             EVP_DecodeBase64(decoded, &n, sizeof(decoded), (const uint8_t *)v, vl);
    }
    const uint8_t *colon = ok ? memchr(decoded, ':', n) : NULL;
    char name[64] = "";
    if (colon != NULL) {
        size_t nl = (size_t)(colon - decoded);
        snprintf(name, sizeof(name), "%.*s", (int)(nl < sizeof(name) - 1 ? nl : sizeof(name) - 1), (const char *)decoded);
        ok = check_credentials(t, (const char *)decoded, nl, (const char *)colon + 1, n - nl - 1);
    } else {
        ok = 0;
    }
    OPENSSL_cleanse(decoded, sizeof(decoded));
    if (ok < 0) {
        return ok == -1 ? -1 : 0;
    }
    if (!ok) {
        char reason[200];
        for (char *c = name; *c; c++) {
            *c = (unsigned char)*c < ' ' || *c == '"' ? '?' : *c;
        }
        snprintf(reason, sizeof(reason), colon ? "proxy authentication failed for user \"%s\""
                                               : "malformed Proxy-Authorization (expected Basic credentials)%s", name);
        tunnel_reject(t, GW_ERR_AUTH, reason);
        return 0;
    }
    return 1;
}

// tunnel_take_request_head parses the request head at the start of |b| (to_up or from_client).
// Returns 1 with |hr| filled, 0 if more bytes are needed, -1 if the client was answered
// with an error.
int tunnel_take_request_head(gw_tunnel *t, gw_buf *b, gw_http_request *hr) {
    const uint8_t *p = b->data + b->start;
    size_t len = gw_buf_len(b);
    size_t limit = (size_t)t->cfg->limits.header_max;
    // Parse only once a head may be complete (short beginnings are parsed at once so that
    // a client speaking something else is refused early).
    if (len > 256 && !gw_h1_head_complete(p, len, &t->front.head_scanned)) {
        if (len >= limit || gw_buf_room(b) == 0) {
            tunnel_reject(t, GW_ERR_HEADER_TOO_LARGE, "request head is larger than header_max");
            return -1;
        }
        return 0;
    }
    gw_http_status st = gw_http_parse_request((const char *)p, len, hr);
    if (st == GW_HTTP_NEED_MORE) {
        if (len >= limit || gw_buf_room(b) == 0) {
            tunnel_reject(t, GW_ERR_HEADER_TOO_LARGE, "request head is larger than header_max");
            return -1;
        }
        return 0;
    }
    if (st == GW_HTTP_ERR_TOO_LARGE || (st == GW_HTTP_OK && hr->head_len > limit)) {
        tunnel_reject(t, GW_ERR_HEADER_TOO_LARGE, "request head is larger than header_max");
        return -1;
    }
    if (st != GW_HTTP_OK) {
        tunnel_reject(t, GW_ERR_BAD_REQUEST,
               st == GW_HTTP_ERR_VERSION ? "only HTTP/1.0 and HTTP/1.1 are supported" : "malformed HTTP request");
        return -1;
    }
    t->front.head_scanned = 0;
    return 1;
}

void tunnel_parse_request(gw_tunnel *t) {
    gw_buf *b = t->to_up;
    if (b == NULL) {
        return;  // nothing read yet
    }
    const uint8_t *p = b->data + b->start;
    size_t len = gw_buf_len(b);
    size_t used = 0;
    gw_socks_request req;
    char user[256];
    if (t->state == T_DETECT) {
        if (len == 0) {
            return;
        }
        unsigned protos = tunnel_listener_of(t)->protocols;
        if (p[0] == 5 && (protos & POL_PROTO_SOCKS5)) {
            t->proto = P_SOCKS5;
            t->state = T_SOCKS5_GREETING;
        } else if (p[0] == 4 && (protos & POL_PROTO_SOCKS4)) {
            t->proto = P_SOCKS4;
            t->state = T_SOCKS4_REQUEST;
        } else if (protos & POL_PROTO_HTTP) {
            t->proto = P_HTTP_CONNECT;
            t->state = T_HTTP_HEAD;
        } else {
            char reason[120];
            snprintf(reason, sizeof(reason), "first byte 0x%02x is no protocol enabled on listener %s", p[0],
                     tunnel_listener_of(t)->name);
            tunnel_reject(t, GW_ERR_BAD_REQUEST, reason);
            return;
        }
    }
    switch (t->state) {
        case T_SOCKS5_GREETING: {
            uint32_t methods = 0;
            gw_socks_status st = gw_socks5_parse_greeting(p, len, &used, &methods);
            if (st == GW_SOCKS_NEED_MORE) {
                return;
            }
            if (st != GW_SOCKS_OK) {
                t->proto = P_NONE;  // no reply format fits a broken greeting
                tunnel_reject(t, GW_ERR_BAD_REQUEST, "malformed SOCKS5 greeting");
                return;
            }
            consume(t, used);
            uint8_t want = t->cfg->users ? GW_SOCKS5_METHOD_USERPASS : GW_SOCKS5_METHOD_NONE;
            if (t->admission != GW_ERR_NONE) {
                // Not admitted: no credentials are asked for or checked; the request that
                // follows gets the refusal (0x02, or 0x01 over max_connections).
                want = methods & (1u << GW_SOCKS5_METHOD_NONE) ? GW_SOCKS5_METHOD_NONE : GW_SOCKS5_METHOD_USERPASS;
            }
            if (!(methods & (1u << want))) {
                uint8_t no[2] = {5, GW_SOCKS5_METHOD_UNACCEPTABLE};
                t->proto = P_NONE;
                tunnel_reject(t, GW_ERR_AUTH,
                       t->cfg->users ? "proxy authentication required: the SOCKS5 client offered no username/password"
                                     : "SOCKS5 client offered no acceptable authentication method");
                tunnel_queue_down(t, no, 2);
                return;
            }
            uint8_t ok[2] = {5, want};
            tunnel_queue_down(t, ok, 2);
            t->state = want == GW_SOCKS5_METHOD_USERPASS ? T_SOCKS5_AUTH : T_SOCKS5_REQUEST;
            tunnel_parse_request(t);
            return;
        }
        case T_SOCKS5_AUTH: {
            char name[256] = "", pass[256] = "";
            gw_socks_status st = gw_socks5_parse_userpass(p, len, &used, name, pass);
            if (st == GW_SOCKS_NEED_MORE) {
                return;
            }
            int ok;
            if (t->admission != GW_ERR_NONE) {
                ok = st == GW_SOCKS_OK;  // not checked: any credentials get the same answer
            } else {
                ok = st == GW_SOCKS_OK ? check_credentials(t, name, strlen(name), pass, strlen(pass)) : 0;
            }
            OPENSSL_cleanse(pass, sizeof(pass));
            if (ok == -1) {
                return;  // being checked: the request is parsed again with the answer
            }
            if (ok == -2) {
                uint8_t no[2] = {1, 1};  // refused for now (503 in the log): RFC 1929 has one failure
                tunnel_queue_down(t, no, 2);
                return;
            }
            if (!ok) {
                uint8_t no[2] = {1, 1};
                char reason[400];
                snprintf(reason, sizeof(reason), st == GW_SOCKS_OK ? "proxy authentication failed for user \"%.64s\""
                                                                   : "malformed SOCKS5 username/password request",
                         name);
                t->proto = P_NONE;
                tunnel_reject(t, GW_ERR_AUTH, reason);
                tunnel_queue_down(t, no, 2);
                return;
            }
            consume(t, used);
            uint8_t yes[2] = {1, 0};
            tunnel_queue_down(t, yes, 2);
            t->state = T_SOCKS5_REQUEST;
            tunnel_parse_request(t);
            return;
        }
        case T_SOCKS5_REQUEST: {
            gw_socks_status st = gw_socks5_parse_request(p, len, &used, &req);
            switch (st) {
                case GW_SOCKS_NEED_MORE:
                    return;
                case GW_SOCKS_OK:
                    consume(t, used);
                    tunnel_route(t, req.host, req.port);
                    return;
                case GW_SOCKS_ERR_COMMAND: {
                    char reason[80];
                    snprintf(reason, sizeof(reason), "SOCKS5 command 0x%02x is not supported (only CONNECT)",
                             req.command);
                    tunnel_reject(t, GW_ERR_BAD_COMMAND, reason);
                    return;
                }
                case GW_SOCKS_ERR_ADDRESS_TYPE:
                    tunnel_reject(t, GW_ERR_BAD_ADDRESS_TYPE, "SOCKS5 address type is not IPv4, domain or IPv6");
                    return;
                case GW_SOCKS_ERR_NAME:
                    tunnel_reject(t, GW_ERR_BAD_REQUEST, "SOCKS5 destination is not a valid host name");
                    return;
                default:
                    tunnel_reject(t, GW_ERR_BAD_REQUEST, "malformed SOCKS5 request");
                    return;
            }
        }
        case T_SOCKS4_REQUEST: {
            gw_socks_status st = gw_socks4_parse_request(p, len, &used, &req, user);
            if (st == GW_SOCKS_NEED_MORE) {
                return;
            }
            if (tunnel_refuse_unadmitted(t)) {
                return;
            }
            if (t->cfg->users != NULL) {
                tunnel_reject(t, GW_ERR_AUTH, "proxy authentication required: SOCKS4 carries no password (use SOCKS5 or HTTP)");
                return;
            }
            if (st == GW_SOCKS_OK) {
                consume(t, used);
                tunnel_route(t, req.host, req.port);
            } else if (st == GW_SOCKS_ERR_COMMAND) {
                tunnel_reject(t, GW_ERR_BAD_COMMAND, "SOCKS4 command is not supported (only CONNECT)");
            } else {
                tunnel_reject(t, GW_ERR_BAD_REQUEST, "malformed SOCKS4 request");
            }
            return;
        }
        case T_HTTP_HEAD: {
            gw_http_request hr;
            int r = tunnel_take_request_head(t, b, &hr);
            if (r <= 0) {
                return;
            }
            if (!gw_http_token_eq(hr.method, hr.method_len, "CONNECT")) {
                // An http_proxy request: the forward proxy takes over this connection.
                t->proto = P_HTTP_PROXY;
                t->http.from_client = t->to_up;
                t->to_up = NULL;
                t->state = T_HTTP_PROXY;
                tunnel_http_start_request(t, &hr);
                return;
            }
            if (tunnel_refuse_unadmitted(t) || tunnel_http_authorized(t, &hr) != 1) {
                return;
            }
            consume(t, hr.head_len);
            char host[256];
            uint16_t port;
            if (!gw_http_parse_authority(hr.target, hr.target_len, 0, host, &port)) {
                tunnel_reject(t, GW_ERR_BAD_REQUEST, "CONNECT target must be host:port");
                return;
            }
            tunnel_route(t, host, port);
            return;
        }
        default:
            return;
    }
}
