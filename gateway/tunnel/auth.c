// auth: proxy users (auth.users_file) for every door that carries credentials: SOCKS5's
// RFC 1929 and HTTP's Proxy-Authorization: Basic. A password check runs off the loop; its
// answer comes back as an event that advances the tunnel, which parses its request again.
#include "gateway/tunnel/internal.h"

int tunnel_check_credentials(gw_tunnel *t, const char *name, size_t name_len, const char *pass, size_t pass_len) {
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
                                           t->events->password_checked, t, &user, &t->front.auth_job);
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
            return -2;
        default:
            gw_metrics_password_check(GW_PASS_REJECTED);
            return 0;
    }
}

tunnel_step tunnel_http_authorized(gw_tunnel *t, const gw_http_request *hr) {
    if (t->cfg->users == NULL) {
        return STEP_NEXT;
    }
    const gw_http_header *h = gw_http_find_header(hr->headers, hr->num_headers, "Proxy-Authorization");
    if (h == NULL) {
        return tunnel_fail(t, GW_ERR_AUTH, "proxy authentication required (Proxy-Authorization: Basic)");
    }
    uint8_t decoded[600];
    size_t n = 0, colon = 0;
    int ok = gw_http_basic_credentials(h->value, h->value_len, decoded, sizeof(decoded), &n, &colon);
    char name[64] = "";
    if (ok) {
        snprintf(name, sizeof(name), "%.*s", (int)(colon < sizeof(name) - 1 ? colon : sizeof(name) - 1),
                 (const char *)decoded);
        ok =
            tunnel_check_credentials(t, (const char *)decoded, colon, (const char *)decoded + colon + 1, n - colon - 1);
        if (ok == 0) {
            ok = -3;  // a user and a password, not the right ones
        }
    }
    OPENSSL_cleanse(decoded, sizeof(decoded));
    switch (ok) {
        case 1:
            return STEP_NEXT;
        case -1:
            return STEP_WAIT;
        case -2:
            return tunnel_fail(t, GW_ERR_LIMIT, "too many proxy password checks waiting; try again");
        case -3:
            for (char *c = name; *c; c++) {
                *c = (unsigned char)*c < ' ' || *c == '"' ? '?' : *c;
            }
            return tunnel_fail(t, GW_ERR_AUTH, "proxy authentication failed for user \"%s\"", name);
        default:
            return tunnel_fail(t, GW_ERR_AUTH, "malformed Proxy-Authorization (expected Basic credentials)");
    }
}
