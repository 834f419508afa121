// libFuzzer harness: the HTTP request and response head parsers, the framing decisions
// and head rewrites of the forward proxy, and the authority / absolute-URI splitters.
// Checks that results point inside the input and that a rewritten head is itself a
// well-formed request the parser accepts.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/proto/h1.h"
#include "gateway/proto/http.h"

static int inside(const char *p, size_t n, const uint8_t *data, size_t size) {
    return n == 0 || ((const uint8_t *)p >= data && (const uint8_t *)p + n <= data + size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *buf = (const char *)data;
    static gw_http_request req, again;
    static gw_http_response resp;
    static char out[20000];

    size_t scanned = 0;
    gw_h1_head_complete(data, size, &scanned);
    if (scanned > size) {
        abort();
    }

    gw_http_status st = gw_http_parse_request(buf, size, &req);
    if (st == GW_HTTP_OK) {
        if (req.head_len > size || !inside(req.method, req.method_len, data, size) ||
            !inside(req.target, req.target_len, data, size) || req.num_headers > GW_HTTP_MAX_HEADERS) {
            abort();
        }
        for (size_t i = 0; i < req.num_headers; i++) {
            if (!inside(req.headers[i].name, req.headers[i].name_len, data, size) ||
                !inside(req.headers[i].value, req.headers[i].value_len, data, size)) {
                abort();
            }
        }
        gw_body body;
        gw_h1_request_body(&req, &body);
        gw_h1_keep_alive(req.headers, req.num_headers, req.minor_version);
        char scheme[8], host[256];
        uint16_t port;
        const char *path;
        size_t path_len;
        if (gw_http_parse_absolute_uri(req.target, req.target_len, scheme, host, &port, &path, &path_len)) {
            if (strnlen(host, sizeof(host)) == sizeof(host) || !inside(path, path_len, data, size)) {
                abort();
            }
            size_t n = gw_h1_write_request(&req, path, path_len, host, strlen(host), 0, out, sizeof(out));
            if (n > sizeof(out)) {
                abort();
            }
            gw_http_status st2 = n > 0 ? gw_http_parse_request(out, n, &again) : GW_HTTP_OK;
            if (st2 != GW_HTTP_OK && !(st2 == GW_HTTP_ERR_TOO_LARGE && req.num_headers + 2 > GW_HTTP_MAX_HEADERS)) {
                abort();  // what we send upstream must be a request we would accept
            }
        }
        gw_http_parse_authority(req.target, req.target_len, 0, host, &port);
    }

    st = gw_http_parse_response(buf, size, &resp);
    if (st == GW_HTTP_OK) {
        if (resp.head_len > size || resp.status < 100 || resp.status > 999) {
            abort();
        }
        gw_body body;
        gw_h1_response_body(&resp, size & 1, &body);
        size_t n = gw_h1_write_response(&resp, 1, size & 2, size & 4, out, sizeof(out));
        if (n > sizeof(out)) {
            abort();
        }
        static gw_http_response back;
        // What the client gets must parse too (our header count limit aside: we may add
        // a Connection header to a response that already had the most we accept).
        gw_http_status st2 = n > 0 ? gw_http_parse_response(out, n, &back) : GW_HTTP_OK;
        if (st2 != GW_HTTP_OK && !(st2 == GW_HTTP_ERR_TOO_LARGE && resp.num_headers + 1 > GW_HTTP_MAX_HEADERS)) {
            abort();
        }
    }
    return 0;
}
