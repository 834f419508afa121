// http: the ACME client's HTTPS, blocking and bounded (it runs on the renewal thread,
// never on a worker): one connection per request, the CA's certificate verified against
// the configured trust (or the system's CAs) and its name, a deadline on every step, a
// response of at most GW_ACME_MAX_BODY bytes. Heads are parsed by gateway/proto's parsers.
// SIGPIPE must be ignored (the gateway and its commands do): a server gone is an error.
#ifndef MTLSGW_ACME_HTTP_H
#define MTLSGW_ACME_HTTP_H

#include <openssl/ssl.h>
#include <stddef.h>

#define GW_ACME_MAX_BODY (1024 * 1024)

typedef struct {
    int status;
    char *body;  // NUL-terminated (body_len bytes before it)
    size_t body_len;
    char nonce[256];         // Replay-Nonce, "" if none
    char location[1024];     // Location, "" if none
    char content_type[128];  // Content-Type, "" if none
    long retry_after_s;      // Retry-After in seconds (a date is turned into seconds), -1 if none
} gw_acme_response;

typedef struct gw_acme_http gw_acme_http;

// gw_acme_http_new: a client trusting the certificates in |trust_file| (NULL: the
// system's, /etc/ssl/certs/ca-certificates.crt). NULL with |err| saying why.
gw_acme_http *gw_acme_http_new(const char *trust_file, char *err, size_t cap);
void gw_acme_http_free(gw_acme_http *h);

// gw_acme_http_do sends |method| |url| (https only) with |body| (NULL: none) of
// |content_type|, and reads the response within |timeout_ms| for each step. Returns 1
// with *|resp| filled (free it with gw_acme_response_free), or 0 with |err| saying what
// failed (DNS, connect, TLS verification, a malformed or too large response).
int gw_acme_http_do(gw_acme_http *h, const char *method, const char *url, const char *content_type, const char *body,
                    int timeout_ms, gw_acme_response *resp, char *err, size_t cap);
void gw_acme_response_free(gw_acme_response *resp);

// gw_acme_parse_response takes a response apart from |buf| (|len| bytes: all that came so
// far; |eof| once nothing more will): head, framing (sized, chunked, or to the close),
// body. 1 with *|resp| filled (body allocated), 0 if more is needed (with |err| set when
// |eof| says none will come), -1 if it is malformed or too large (|err|). Pure: the
// fuzz harness's entry.
int gw_acme_parse_response(const char *buf, size_t len, int eof, gw_acme_response *resp, char *err, size_t cap);

#endif
