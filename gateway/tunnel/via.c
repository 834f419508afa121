// via: a tunnel through the rule's parent proxy (DESIGN "Through a parent proxy"). Once
// TCP to the parent is up (T_VIA), the parent is asked for the destination: HTTP CONNECT
// (with Basic credentials) or SOCKS5 (RFC 1929 credentials). Its answers are read
// exactly: peeked, parsed by the same pure parsers as clients' heads, and only their own
// bytes taken, so whatever the destination sends after it stays in the socket for the
// rule's mTLS (or the plain relay) that follows on the same connection. Every failure is
// the parent's, said as such: 407 or refused credentials, a refusal (403, SOCKS REP 2), a
// failure to reach the destination, or nonsense.
#include "gateway/proto/socks.h"
#include "gateway/tunnel/internal.h"

enum {
    VIA_START = 0,  // (the dial sets it with T_VIA)
    VIA_SEND_CONNECT,
    VIA_READ_HEAD,
    VIA_SEND_GREETING,
    VIA_READ_METHOD,
    VIA_READ_AUTH,
    VIA_READ_REPLY,
    VIA_DONE,  // the parent said yes: the driver goes on with tunnel_after_parent
};

#define VIA_HEAD_MAX 4096

static const pol_via *via_of(const gw_tunnel *t) {
    return t->rule->via;
}

// queue sets what goes to the parent next.
static int queue(gw_tunnel *t, const void *p, size_t n) {
    if (n > sizeof(t->dial.via_out)) {
        return 0;
    }
    memcpy(t->dial.via_out, p, n);
    t->dial.via_out_len = n;
    t->dial.via_out_sent = 0;
    return 1;
}

// flush sends what is queued: 1 when all went, 0 to wait, -1 on an error.
static int flush(gw_tunnel *t) {
    while (t->dial.via_out_sent < t->dial.via_out_len) {
        ssize_t n = send(t->upstream.fd, t->dial.via_out + t->dial.via_out_sent,
                         t->dial.via_out_len - t->dial.via_out_sent, MSG_NOSIGNAL);
        if (n > 0) {
            t->dial.via_out_sent += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            t->upstream_io.writable = 0;
            return 0;
        } else {
            return -1;
        }
    }
    OPENSSL_cleanse(t->dial.via_out, t->dial.via_out_len);  // it may have held the password
    t->dial.via_out_len = t->dial.via_out_sent = 0;
    return 1;
}

// peek looks at what the parent sent without taking it: bytes, 0 for nothing yet, -1 for
// its close (or an error).
static ssize_t peek(gw_tunnel *t, uint8_t *buf, size_t cap) {
    for (;;) {
        ssize_t n = recv(t->upstream.fd, buf, cap, MSG_PEEK);
        if (n > 0) {
            return n;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            t->upstream_io.readable = 0;
            return 0;
        }
        return -1;
    }
}

// take removes |n| bytes already peeked.
static int take(gw_tunnel *t, size_t n) {
    uint8_t sink[VIA_HEAD_MAX];
    return recv(t->upstream.fd, sink, n, 0) == (ssize_t)n;
}

// failed: the parent's failure in words (|fmt| takes the parent, the target, a detail).
#define failed(t, err, fmt, detail) tunnel_fail((t), (err), fmt, via_of(t)->text, (t)->dial.via_target, (detail))

// words: the parent's reason phrase made safe for a reason (printable ASCII).
static void words(const char *p, size_t n, char *out, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++) {
        out[k++] = p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\' ? p[i] : '?';
    }
    out[k] = '\0';
}

static tunnel_step done(gw_tunnel *t) {
    t->dial.via_step = VIA_DONE;
    gw_metrics_via(via_of(t)->text, GW_VIA_OK);
    return STEP_NEXT;
}

int tunnel_via_done(const gw_tunnel *t) {
    return t->dial.via_step == VIA_DONE;
}

static tunnel_step http_connect(gw_tunnel *t) {
    const pol_via *v = via_of(t);
    char req[sizeof(t->dial.via_out)];
    size_t n = gw_http_connect_request(t->dial.via_target, v->user, v->password, req, sizeof(req));
    int ok = n > 0 && queue(t, req, n);
    OPENSSL_cleanse(req, sizeof(req));
    if (!ok) {
        return tunnel_fail(t, GW_ERR_INTERNAL, "the CONNECT request for the parent proxy does not fit");
    }
    t->dial.via_step = VIA_READ_HEAD;
    return STEP_NEXT;
}

static tunnel_step http_head(gw_tunnel *t) {
    uint8_t buf[VIA_HEAD_MAX];
    ssize_t n = peek(t, buf, sizeof(buf));
    if (n == 0) {
        return STEP_WAIT;
    }
    if (n < 0) {
        gw_metrics_via(via_of(t)->text, GW_VIA_ERROR);
        return failed(t, GW_ERR_VIA_FAILED, "parent proxy %s closed the connection before it answered CONNECT %s%s",
                      "");
    }
    gw_http_response resp;
    gw_http_status st = gw_http_parse_response((const char *)buf, (size_t)n, &resp);
    if (st == GW_HTTP_NEED_MORE && (size_t)n < sizeof(buf)) {
        return STEP_WAIT;  // (EPOLLET: a short peek means the socket is empty for now)
    }
    if (st != GW_HTTP_OK) {
        gw_metrics_via(via_of(t)->text, GW_VIA_ERROR);
        return failed(t, GW_ERR_VIA_FAILED, "parent proxy %s answered CONNECT %s with %s",
                      st == GW_HTTP_NEED_MORE ? "a head over 4096 bytes" : "a malformed HTTP head");
    }
    char reason[200], detail[260];
    words(resp.reason, resp.reason_len, reason, sizeof(reason));
    snprintf(detail, sizeof(detail), "%d %s", resp.status, reason);
    if (resp.status / 100 == 2) {
        // Only the head is taken: bytes behind it (a server that speaks first) stay.
        if (!take(t, resp.head_len)) {
            return tunnel_fail(t, GW_ERR_INTERNAL, "reading the parent proxy's answer failed");
        }
        return done(t);
    }
    if (resp.status == 407) {
        gw_metrics_via(via_of(t)->text, GW_VIA_AUTH);
        return failed(t, GW_ERR_VIA_AUTH,
                      via_of(t)->user ? "parent proxy %s refused our credentials for CONNECT %s: %s"
                                      : "parent proxy %s wants credentials (via_credentials_file) for CONNECT %s: %s",
                      detail);
    }
    if (resp.status == 403 || resp.status == 401 || resp.status == 405) {
        gw_metrics_via(via_of(t)->text, GW_VIA_REFUSED);
        return failed(t, GW_ERR_VIA_REFUSED, "parent proxy %s refused CONNECT %s: %s", detail);
    }
    gw_metrics_via(via_of(t)->text, GW_VIA_ERROR);
    return failed(t, GW_ERR_VIA_FAILED, "parent proxy %s could not open CONNECT %s: %s", detail);
}

static tunnel_step socks_greeting(gw_tunnel *t) {
    static const uint8_t none[] = {0x05, 0x01, GW_SOCKS5_METHOD_NONE};
    static const uint8_t userpass[] = {0x05, 0x01, GW_SOCKS5_METHOD_USERPASS};
    if (via_of(t)->user != NULL) {
        queue(t, userpass, sizeof(userpass));
    } else {
        queue(t, none, sizeof(none));
    }
    t->dial.via_step = VIA_READ_METHOD;
    return STEP_NEXT;
}

// socks_request queues CONNECT via_target: a name (the parent resolves it) or an address.
static tunnel_step socks_request(gw_tunnel *t) {
    char host[256];
    uint16_t port = 0;
    uint8_t req[300];
    size_t n = gw_http_parse_authority(t->dial.via_target, strlen(t->dial.via_target), 0, host, &port)
                   ? gw_socks5_encode_connect(host, port, req)
                   : 0;
    if (n == 0) {
        return tunnel_fail(t, GW_ERR_INTERNAL, "cannot ask the parent proxy for %s", t->dial.via_target);
    }
    queue(t, req, n);
    t->dial.via_step = VIA_READ_REPLY;
    return STEP_NEXT;
}

// read_exact peeks for |n| bytes: 1 with them in |buf| (taken), 0 to wait, -1 closed.
static int read_exact(gw_tunnel *t, uint8_t *buf, size_t n) {
    ssize_t got = peek(t, buf, n);
    if (got < 0) {
        return -1;
    }
    if ((size_t)got < n) {
        return 0;
    }
    return take(t, n) ? 1 : -1;
}

static tunnel_step socks_answer(gw_tunnel *t) {
    const pol_via *v = via_of(t);
    uint8_t buf[300];
    if (t->dial.via_step == VIA_READ_METHOD || t->dial.via_step == VIA_READ_AUTH) {
        int r = read_exact(t, buf, 2);
        if (r <= 0) {
            if (r < 0) {
                gw_metrics_via(v->text, GW_VIA_ERROR);
            }
            return r == 0
                       ? STEP_WAIT
                       : failed(t, GW_ERR_VIA_FAILED, "parent proxy %s closed the connection before CONNECT %s%s", "");
        }
        if (t->dial.via_step == VIA_READ_AUTH) {
            if (buf[0] != 0x01 || buf[1] != 0x00) {
                gw_metrics_via(v->text, GW_VIA_AUTH);
                return failed(t, GW_ERR_VIA_AUTH, "parent proxy %s refused our credentials (RFC 1929) for CONNECT %s%s",
                              "");
            }
            return socks_request(t);
        }
        if (buf[0] != 0x05 || (buf[1] != GW_SOCKS5_METHOD_NONE && buf[1] != GW_SOCKS5_METHOD_USERPASS)) {
            gw_metrics_via(v->text, GW_VIA_AUTH);
            return failed(t, GW_ERR_VIA_AUTH,
                          v->user ? "parent proxy %s accepts none of our methods (username/password offered) for %s%s"
                                  : "parent proxy %s wants credentials (via_credentials_file) for %s%s",
                          "");
        }
        if (buf[1] == GW_SOCKS5_METHOD_USERPASS) {
            if (v->user == NULL) {
                return failed(t, GW_ERR_VIA_FAILED, "parent proxy %s chose a method we did not offer for %s%s", "");
            }
            uint8_t auth[3 + 255 + 255];
            queue(t, auth, gw_socks5_encode_userpass(v->user, v->password, auth));
            OPENSSL_cleanse(auth, sizeof(auth));
            t->dial.via_step = VIA_READ_AUTH;
            return STEP_NEXT;
        }
        return socks_request(t);
    }
    ssize_t n = peek(t, buf, sizeof(buf));
    if (n <= 0) {
        if (n < 0) {
            gw_metrics_via(v->text, GW_VIA_ERROR);
        }
        return n == 0
                   ? STEP_WAIT
                   : failed(t, GW_ERR_VIA_FAILED, "parent proxy %s closed the connection before it answered %s%s", "");
    }
    size_t used = 0;
    uint8_t rep = 0;
    gw_socks_status st = gw_socks5_parse_reply(buf, (size_t)n, &used, &rep);
    if (st == GW_SOCKS_NEED_MORE) {
        return STEP_WAIT;
    }
    if (st != GW_SOCKS_OK) {
        gw_metrics_via(v->text, GW_VIA_ERROR);
        return failed(t, GW_ERR_VIA_FAILED, "parent proxy %s answered CONNECT %s with %s", "a malformed SOCKS5 reply");
    }
    if (!take(t, used)) {
        return tunnel_fail(t, GW_ERR_INTERNAL, "reading the parent proxy's answer failed");
    }
    if (rep == 0x00) {
        return done(t);
    }
    static const char *const reps[] = {"succeeded",
                                       "general SOCKS server failure",
                                       "connection not allowed by ruleset",
                                       "network unreachable",
                                       "host unreachable",
                                       "connection refused",
                                       "TTL expired",
                                       "command not supported",
                                       "address type not supported"};
    char detail[80];
    snprintf(detail, sizeof(detail), "SOCKS5 reply %u (%s)", rep, rep < 9 ? reps[rep] : "unknown");
    if (rep == 0x02) {
        gw_metrics_via(v->text, GW_VIA_REFUSED);
        return failed(t, GW_ERR_VIA_REFUSED, "parent proxy %s refused CONNECT %s: %s", detail);
    }
    gw_metrics_via(v->text, GW_VIA_ERROR);
    return failed(t, GW_ERR_VIA_FAILED, "parent proxy %s could not open CONNECT %s: %s", detail);
}

tunnel_step tunnel_phase_via(gw_tunnel *t) {
    for (;;) {
        if (t->dial.via_out_len > 0) {
            int r = flush(t);
            if (r < 0) {
                gw_metrics_via(via_of(t)->text, GW_VIA_ERROR);
                return failed(t, GW_ERR_VIA_FAILED, "parent proxy %s: sending CONNECT %s failed%s", "");
            }
            if (r == 0) {
                return STEP_WAIT;
            }
        }
        tunnel_step s = STEP_NEXT;
        switch (t->dial.via_step) {
            case VIA_START:
                t->dial.via_step = via_of(t)->kind == POL_VIA_HTTP ? VIA_SEND_CONNECT : VIA_SEND_GREETING;
                break;
            case VIA_DONE:
                return STEP_NEXT;
            case VIA_SEND_CONNECT:
                s = http_connect(t);
                break;
            case VIA_READ_HEAD:
                s = http_head(t);
                break;
            case VIA_SEND_GREETING:
                s = socks_greeting(t);
                break;
            default:
                s = socks_answer(t);
                break;
        }
        if (s != STEP_NEXT || t->state != T_VIA) {
            return s;
        }
    }
}

tunnel_step tunnel_via_timeout(gw_tunnel *t) {
    gw_metrics_via(via_of(t)->text, GW_VIA_TIMEOUT);
    char ms[40];
    snprintf(ms, sizeof(ms), "%d ms", t->cfg->limits.connect_timeout_ms);
    return failed(t, GW_ERR_CONNECT_TIMEOUT, "parent proxy %s did not answer CONNECT %s within connect_timeout_ms (%s)",
                  ms);
}
