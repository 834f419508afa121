// client: one ACME conversation (see client.h).
#include "gateway/acme/client.h"

#include <jansson.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gateway/acme/http.h"
#include "gateway/acme/jws.h"
#include "gateway/base/netutil.h"

char *gw_acme_key_authorization(EVP_PKEY *account_key, const char *token) {
    char *tp = gw_jwk_thumbprint(account_key);
    char *out = tp ? malloc(strlen(token) + strlen(tp) + 2) : NULL;
    if (out != NULL) {
        snprintf(out, strlen(token) + strlen(tp) + 2, "%s.%s", token, tp);
    }
    free(tp);
    return out;
}

char *gw_acme_dns01_value(const char *key_authorization) {
    uint8_t d[SHA256_DIGEST_LENGTH];
    SHA256((const uint8_t *)key_authorization, strlen(key_authorization), d);
    return gw_b64url(d, sizeof(d));
}

typedef struct {
    const gw_acme_params *p;
    gw_acme_http *http;
    json_t *dir;
    char nonce[256];
    char kid[1024];  // the account URL once known
    gw_acme_result *out;
    char *err;
    size_t cap;
} conv;

static const char *dir_url(conv *c, const char *name) {
    const char *u = json_string_value(json_object_get(c->dir, name));
    if (u == NULL) {
        snprintf(c->err, c->cap, "the ACME directory %s has no %s", c->p->directory_url, name);
    }
    return u;
}

int gw_acme_problem_text(const char *what, int status, const char *body, size_t body_len, char *out, size_t cap) {
    json_t *j = body_len ? json_loadb(body, body_len, 0, NULL) : NULL;
    const char *type = json_string_value(json_object_get(j, "type"));
    const char *detail = json_string_value(json_object_get(j, "detail"));
    const char *short_type = type && strncmp(type, "urn:ietf:params:acme:error:", 27) == 0 ? type + 27 : type;
    if (detail != NULL || short_type != NULL) {
        snprintf(out, cap, "%s: the CA answered %d: %s%s%s%s", what, status, detail ? detail : "",
                 detail && short_type ? " (" : "", short_type ? short_type : "", detail && short_type ? ")" : "");
    } else {
        snprintf(out, cap, "%s: the CA answered %d", what, status);
    }
    int rate_limited = short_type != NULL && strcmp(short_type, "rateLimited") == 0;
    json_decref(j);
    return rate_limited;
}

// problem puts the CA's problem document of a failed |what| in words.
static void problem(conv *c, const char *what, const gw_acme_response *r) {
    c->out->rate_limited = gw_acme_problem_text(what, r->status, r->body, r->body_len, c->err, c->cap);
    if (r->retry_after_s >= 0) {
        c->out->retry_after_s = r->retry_after_s;
    }
}

static int is_bad_nonce(const gw_acme_response *r) {
    if (r->status != 400 || r->body_len == 0) {
        return 0;
    }
    json_t *j = json_loads(r->body, 0, NULL);
    const char *type = json_string_value(json_object_get(j, "type"));
    int bad = type != NULL && strcmp(type, "urn:ietf:params:acme:error:badNonce") == 0;
    json_decref(j);
    return bad;
}

static int new_nonce(conv *c) {
    const char *url = dir_url(c, "newNonce");
    gw_acme_response r;
    if (url == NULL || !gw_acme_http_do(c->http, "GET", url, NULL, NULL, c->p->timeout_ms, &r, c->err, c->cap)) {
        return 0;
    }
    int ok = r.nonce[0] != '\0';
    if (ok) {
        snprintf(c->nonce, sizeof(c->nonce), "%s", r.nonce);
    } else {
        snprintf(c->err, c->cap, "the CA's newNonce (%s) gave no Replay-Nonce", url);
    }
    gw_acme_response_free(&r);
    return ok;
}

// post sends a JWS to |url| (|payload| NULL: POST-as-GET) and keeps the nonce it comes
// back with; a badNonce is sent again with it (at most three times). 1 with *|r| (the
// caller frees it) for any status, 0 if no answer came.
static int post(conv *c, const char *url, const json_t *payload, gw_acme_response *r) {
    for (int attempt = 0; attempt < 4; attempt++) {
        if (c->nonce[0] == '\0' && !new_nonce(c)) {
            return 0;
        }
        char *jws = gw_jws_sign(c->p->account_key, c->kid[0] ? c->kid : NULL, c->nonce, url, payload);
        c->nonce[0] = '\0';  // used
        if (jws == NULL) {
            snprintf(c->err, c->cap, "cannot sign the request to %s with the account key", url);
            return 0;
        }
        int ok =
            gw_acme_http_do(c->http, "POST", url, "application/jose+json", jws, c->p->timeout_ms, r, c->err, c->cap);
        free(jws);
        if (!ok) {
            return 0;
        }
        snprintf(c->nonce, sizeof(c->nonce), "%s", r->nonce);
        if (!is_bad_nonce(r) || attempt == 3) {
            return 1;
        }
        gw_acme_response_free(r);
    }
    return 0;
}

// post_json: post, then the JSON object of a 2xx answer (to json_decref), or NULL with
// the problem in words.
static json_t *post_json(conv *c, const char *what, const char *url, const json_t *payload, char *location,
                         size_t location_cap) {
    gw_acme_response r;
    if (!post(c, url, payload, &r)) {
        return NULL;
    }
    json_t *j = NULL;
    if (r.status / 100 != 2) {
        problem(c, what, &r);
    } else if ((j = json_loads(r.body, 0, NULL)) == NULL || !json_is_object(j)) {
        snprintf(c->err, c->cap, "%s: the CA's answer is not a JSON object", what);
        json_decref(j);
        j = NULL;
    } else if (location != NULL) {
        snprintf(location, location_cap, "%s", r.location);
    }
    gw_acme_response_free(&r);
    return j;
}

static int get_directory(conv *c) {
    gw_acme_response r;
    if (!gw_acme_http_do(c->http, "GET", c->p->directory_url, NULL, NULL, c->p->timeout_ms, &r, c->err, c->cap)) {
        return 0;
    }
    if (r.status != 200 || (c->dir = json_loads(r.body, 0, NULL)) == NULL || !json_is_object(c->dir)) {
        if (r.status != 200) {
            problem(c, "the ACME directory", &r);
        } else {
            snprintf(c->err, c->cap, "the ACME directory %s is not a JSON object", c->p->directory_url);
        }
        gw_acme_response_free(&r);
        return 0;
    }
    gw_acme_response_free(&r);
    return 1;
}

static int account(conv *c) {
    const char *url = dir_url(c, "newAccount");
    if (url == NULL) {
        return 0;
    }
    json_t *req = json_pack("{s:b}", "termsOfServiceAgreed", 1);
    json_t *contact = json_array();
    for (size_t i = 0; i < c->p->num_contact; i++) {
        json_array_append_new(contact, json_string(c->p->contact[i]));
    }
    json_object_set_new(req, "contact", contact);
    int eab_required = json_is_true(json_object_get(json_object_get(c->dir, "meta"), "externalAccountRequired"));
    if (c->p->eab_kid != NULL) {
        json_t *eab = gw_jws_eab(c->p->account_key, c->p->eab_kid, c->p->eab_hmac, c->p->eab_hmac_len, url);
        if (eab == NULL) {
            json_decref(req);
            snprintf(c->err, c->cap, "cannot sign the external account binding");
            return 0;
        }
        json_object_set_new(req, "externalAccountBinding", eab);
    } else if (eab_required) {
        json_decref(req);
        snprintf(c->err, c->cap,
                 "the CA requires External Account Binding (meta.externalAccountRequired): set acme.eab_kid and "
                 "acme.eab_hmac_file");
        return 0;
    }
    c->kid[0] = '\0';  // newAccount is signed with the key itself
    char location[1024] = "";
    json_t *acct = post_json(c, "creating the ACME account", url, req, location, sizeof(location));
    json_decref(req);
    if (acct == NULL) {
        return 0;
    }
    const char *status = json_string_value(json_object_get(acct, "status"));
    int ok = location[0] != '\0' && (status == NULL || strcmp(status, "valid") == 0);
    if (!ok) {
        snprintf(c->err, c->cap, "the ACME account is %s", status ? status : "without a URL (no Location)");
    } else {
        snprintf(c->kid, sizeof(c->kid), "%s", location);
    }
    json_decref(acct);
    return ok;
}

static void sleep_s(long s) {
    struct timespec ts = {.tv_sec = s, .tv_nsec = 0};
    nanosleep(&ts, NULL);
}

// poll_until asks |url| (POST-as-GET) until its "status" is no longer one of |waiting|
// (a NULL-terminated list), at most wait_limit_s from |start|. The object, or NULL.
static json_t *poll_until(conv *c, const char *what, const char *url, const char *const *waiting, time_t start) {
    for (;;) {
        gw_acme_response r;
        if (!post(c, url, NULL, &r)) {
            return NULL;
        }
        json_t *j = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
        if (j == NULL) {
            if (r.status != 200) {
                problem(c, what, &r);
            } else {
                snprintf(c->err, c->cap, "%s: the CA's answer is not JSON", what);
            }
            gw_acme_response_free(&r);
            return NULL;
        }
        long wait = r.retry_after_s > 0 && r.retry_after_s < 30 ? r.retry_after_s : 1;
        gw_acme_response_free(&r);
        const char *status = json_string_value(json_object_get(j, "status"));
        int still = 0;
        for (size_t i = 0; status != NULL && waiting[i] != NULL; i++) {
            still |= strcmp(status, waiting[i]) == 0;
        }
        if (!still) {
            return j;
        }
        json_decref(j);
        if (time(NULL) - start + wait > c->p->wait_limit_s) {
            snprintf(c->err, c->cap, "%s: still %s after %d s", what, status, c->p->wait_limit_s);
            return NULL;
        }
        sleep_s(wait);
    }
}

// error_detail: the problem an authorization or order failed with, in words.
static void failed_detail(conv *c, const char *what, json_t *obj) {
    json_t *e = json_object_get(obj, "error");
    json_t *chs = json_object_get(obj, "challenges");
    for (size_t i = 0; e == NULL && i < json_array_size(chs); i++) {
        e = json_object_get(json_array_get(chs, i), "error");
    }
    const char *detail = json_string_value(json_object_get(e, "detail"));
    snprintf(c->err, c->cap, "%s: %s%s%s", what, json_string_value(json_object_get(obj, "status")), detail ? ": " : "",
             detail ? detail : "");
}

static int authorize(conv *c, const char *authz_url, time_t start) {
    char what[1200];
    json_t *az = post_json(c, "reading an authorization", authz_url, NULL, NULL, 0);
    if (az == NULL) {
        return 0;
    }
    const char *ident = json_string_value(json_object_get(json_object_get(az, "identifier"), "value"));
    snprintf(what, sizeof(what), "authorization of %s", ident ? ident : authz_url);
    const char *status = json_string_value(json_object_get(az, "status"));
    if (status != NULL && strcmp(status, "valid") == 0) {
        json_decref(az);
        return 1;  // authorized before (the CA reuses it)
    }
    json_t *chs = json_object_get(az, "challenges"), *ch = NULL;
    for (size_t i = 0; i < json_array_size(chs) && ch == NULL; i++) {
        const char *type = json_string_value(json_object_get(json_array_get(chs, i), "type"));
        ch = type && strcmp(type, c->p->challenge) == 0 ? json_array_get(chs, i) : NULL;
    }
    const char *token = json_string_value(json_object_get(ch, "token"));
    const char *ch_url = json_string_value(json_object_get(ch, "url"));
    if (ident == NULL || token == NULL || ch_url == NULL) {
        snprintf(c->err, c->cap, "%s: the CA offers no %s challenge", what, c->p->challenge);
        json_decref(az);
        return 0;
    }
    char *ka = gw_acme_key_authorization(c->p->account_key, token);
    char *value = ka && strcmp(c->p->challenge, "dns-01") == 0 ? gw_acme_dns01_value(ka) : NULL;
    const char *answer = value ? value : ka;
    int ok = answer != NULL && c->p->publish(c->p->arg, c->p->challenge, ident, token, answer, c->err, c->cap);
    json_t *done = NULL;
    if (ok) {
        json_t *empty = json_object();  // "respond to the challenge": an empty object
        json_t *r = post_json(c, what, ch_url, empty, NULL, 0);
        json_decref(empty);
        json_decref(r);
        static const char *const waiting[] = {"pending", "processing", NULL};
        done = r ? poll_until(c, what, authz_url, waiting, start) : NULL;
        c->p->withdraw(c->p->arg, c->p->challenge, ident, token, answer);
    }
    status = json_string_value(json_object_get(done, "status"));
    ok = done != NULL && status != NULL && strcmp(status, "valid") == 0;
    if (done != NULL && !ok) {
        failed_detail(c, what, done);
    }
    json_decref(done);
    json_decref(az);
    free(ka);
    free(value);
    return ok;
}

static json_t *identifiers(const gw_acme_params *p) {
    json_t *a = json_array();
    for (size_t i = 0; i < p->num_names; i++) {
        json_array_append_new(
            a, json_pack("{s:s, s:s}", "type", gw_host_is_ip(p->names[i]) ? "ip" : "dns", "value", p->names[i]));
    }
    return a;
}

static int order(conv *c, const uint8_t *csr, size_t csr_len) {
    time_t start = time(NULL);
    const char *url = dir_url(c, "newOrder");
    if (url == NULL) {
        return 0;
    }
    json_t *req = json_pack("{s:o}", "identifiers", identifiers(c->p));
    char order_url[1024] = "";
    json_t *o = post_json(c, "creating the order", url, req, order_url, sizeof(order_url));
    json_decref(req);
    if (o == NULL) {
        return 0;
    }
    json_t *azs = json_object_get(o, "authorizations");
    int ok = order_url[0] != '\0' && json_array_size(azs) > 0;
    if (!ok) {
        snprintf(c->err, c->cap, "the CA's order has no URL or no authorizations");
    }
    for (size_t i = 0; ok && i < json_array_size(azs); i++) {
        const char *az = json_string_value(json_array_get(azs, i));
        ok = az != NULL && authorize(c, az, start);
    }
    char *csr64 = ok ? gw_b64url(csr, csr_len) : NULL;
    const char *finalize = json_string_value(json_object_get(o, "finalize"));
    json_t *fin = NULL;
    if (csr64 != NULL && finalize != NULL) {
        json_t *body = json_pack("{s:s}", "csr", csr64);
        fin = post_json(c, "finalizing the order", finalize, body, NULL, 0);
        json_decref(body);
    } else if (ok) {
        snprintf(c->err, c->cap, "the CA's order has no finalize URL");
    }
    static const char *const waiting[] = {"pending", "ready", "processing", NULL};
    json_t *done = fin ? poll_until(c, "the order", order_url, waiting, start) : NULL;
    const char *status = json_string_value(json_object_get(done, "status"));
    const char *cert_url = json_string_value(json_object_get(done, "certificate"));
    ok = done != NULL && status != NULL && strcmp(status, "valid") == 0 && cert_url != NULL;
    if (done != NULL && !ok) {
        failed_detail(c, "the order", done);
    }
    if (ok) {
        gw_acme_response r = {0};
        ok = post(c, cert_url, NULL, &r);
        if (ok && r.status == 200 && strstr(r.body, "-----BEGIN CERTIFICATE-----") != NULL) {
            c->out->chain_pem = r.body;  // taken over
            r.body = NULL;
        } else if (ok) {
            problem(c, "downloading the certificate", &r);
            ok = 0;
        }
        gw_acme_response_free(&r);
    }
    json_decref(done);
    json_decref(fin);
    json_decref(o);
    free(csr64);
    return ok;
}

int gw_acme_obtain(const gw_acme_params *p, const uint8_t *csr_der, size_t csr_len, gw_acme_result *out, char *err,
                   size_t cap) {
    memset(out, 0, sizeof(*out));
    out->retry_after_s = -1;
    err[0] = '\0';
    gw_acme_params params = *p;
    params.timeout_ms = p->timeout_ms > 0 ? p->timeout_ms : 10000;
    params.wait_limit_s = p->wait_limit_s > 0 ? p->wait_limit_s : 120;
    conv c = {.p = &params, .out = out, .err = err, .cap = cap};
    c.http = gw_acme_http_new(p->trust_file, err, cap);
    int ok = c.http != NULL && get_directory(&c) && account(&c) && order(&c, csr_der, csr_len);
    json_decref(c.dir);
    gw_acme_http_free(c.http);
    if (!ok && err[0] == '\0') {
        snprintf(err, cap, "the ACME conversation with %s failed", p->directory_url);
    }
    return ok;
}
