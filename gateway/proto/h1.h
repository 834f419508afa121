// h1: HTTP/1.x message framing for the forward proxy (http_proxy clients): which body
// follows a head, a scanner that finds the end of a chunked body, and the head rewrites
// (absolute-form to origin-form, hop-by-hop headers out). Pure functions over buffers, no
// I/O, no allocation, like the parsers in http.h.
#ifndef MTLSGW_H1_H
#define MTLSGW_H1_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/proto/http.h"

typedef enum {
    GW_BODY_NONE = 0,  // no body: the message ends with its head
    GW_BODY_LENGTH,    // Content-Length bytes
    GW_BODY_CHUNKED,   // Transfer-Encoding ending in chunked
    GW_BODY_CLOSE,     // a response that ends when the server closes
} gw_body_kind;

typedef struct {
    gw_body_kind kind;
    uint64_t length;  // GW_BODY_LENGTH: bytes of body
} gw_body;

// gw_h1_request_body decides how the body of |req| is framed. Returns NULL, or the
// reason the request must be refused with 400 (both Content-Length and
// Transfer-Encoding, several or invalid Content-Lengths, a transfer coding that does not
// end in chunked, Transfer-Encoding in HTTP/1.0): ambiguous framing is how requests are
// smuggled, so none is passed on.
const char *gw_h1_request_body(const gw_http_request *req, gw_body *out_body);

// gw_h1_response_body decides how the body of |resp| is framed for a request whose
// method was HEAD if |request_was_head|. 1xx, 204 and 304 have no body. Returns NULL, or
// the reason the response cannot be passed on (502).
const char *gw_h1_response_body(const gw_http_response *resp, int request_was_head, gw_body *out_body);

// gw_h1_keep_alive says whether the sender of a message with these headers keeps the
// connection open afterwards: HTTP/1.1 unless "close" is among the Connection (or
// Proxy-Connection) options; HTTP/1.0 only with "keep-alive".
int gw_h1_keep_alive(const gw_http_header *headers, size_t num_headers, int minor_version);

// gw_chunked scans a chunked body as it passes through: the bytes are forwarded
// unchanged; the scanner only finds where the body ends and refuses malformed framing.
typedef struct {
    int state;
    uint64_t remaining;  // data bytes left in the current chunk
    uint32_t line_len;   // bytes in the current size or trailer line
    uint32_t trailer_len;
    uint8_t digits;
} gw_chunked;

void gw_chunked_init(gw_chunked *c);

// gw_chunked_scan advances over at most |len| bytes at |p|. Returns how many of them
// belong to the body (fewer than |len| only when the body ended, *out_done = 1), or -1
// if the framing is malformed (bad size, size too large, missing CRLF, a chunk-size or
// trailer line longer than allowed).
long gw_chunked_scan(gw_chunked *c, const uint8_t *p, size_t len, int *out_done);

// gw_chunked_decode is gw_chunked_scan that also takes the framing off: the chunks' data
// bytes among those it consumes go to |out| (at most as many as it consumes; |out| may
// be |p|), their count to *|out_len|. For clients that cannot read chunked (HTTP/1.0).
long gw_chunked_decode(gw_chunked *c, const uint8_t *p, size_t len, uint8_t *out, size_t *out_len, int *out_done);

// gw_h1_write_request writes the head of |req| for the origin server: the request line
// with |path| (origin-form; "" becomes "/"), "Host: |authority|", then every header
// except Host, the hop-by-hop ones (Connection, Keep-Alive, Proxy-Connection, TE, Upgrade,
// Proxy-Authorization, Proxy-Authenticate, Trailer), every other Proxy-* header and a
// bare Proxy header (httpoxy), and those named in Connection;
// "Connection: close" when |close| is set. Returns the head's length, or 0 if it does
// not fit in |cap| bytes.
size_t gw_h1_write_request(const gw_http_request *req, const char *path, size_t path_len, const char *authority,
                           size_t authority_len, int close, char *out, size_t cap);

// gw_h1_write_response writes the head of |resp| for a client speaking HTTP/1.|client_minor|:
// the status line in that version, the end-to-end headers (a Content-Length next to
// Transfer-Encoding is dropped), and the connection's fate: "Connection: close" unless
// |keep_alive|, "Connection: keep-alive" for a kept-alive HTTP/1.0 client. With
// |dechunk| Transfer-Encoding is dropped too: the body goes out without its chunked
// framing, ended by the close (for an HTTP/1.0 client; |keep_alive| must then be 0).
// Returns the length, or 0 if it does not fit.
size_t gw_h1_write_response(const gw_http_response *resp, int client_minor, int keep_alive, int dechunk, char *out,
                            size_t cap);

// gw_h1_head_complete says whether |len| bytes at |buf| may hold a whole head (a CRLF
// CRLF, or a bare LF the parser will refuse), looking only at bytes from |*scanned|
// on and remembering how far it looked: re-parsing a slowly arriving head on every read
// would cost quadratic time.
int gw_h1_head_complete(const uint8_t *buf, size_t len, size_t *scanned);

#endif
