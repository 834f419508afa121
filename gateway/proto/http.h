// http: pure parsers for HTTP/1.x message heads and proxy targets (picohttpparser style:
// a function over (buf, len), no I/O, no allocation; results point into |buf|).
#ifndef MTLSGW_HTTP_H
#define MTLSGW_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define GW_HTTP_MAX_HEADERS 100

typedef enum {
    GW_HTTP_OK = 0,
    GW_HTTP_NEED_MORE,
    GW_HTTP_ERR_SYNTAX,     // 400: malformed request line or header
    GW_HTTP_ERR_VERSION,    // 505: not HTTP/1.0 or HTTP/1.1
    GW_HTTP_ERR_TOO_LARGE,  // 431: more headers than GW_HTTP_MAX_HEADERS
} gw_http_status;

typedef struct {
    const char *name;
    size_t name_len;
    const char *value;  // without leading/trailing whitespace
    size_t value_len;
} gw_http_header;

typedef struct {
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    int minor_version;  // 0 or 1
    size_t head_len;    // bytes of the whole head, final CRLF CRLF included
    gw_http_header headers[GW_HTTP_MAX_HEADERS];
    size_t num_headers;
} gw_http_request;

typedef struct {
    int minor_version;
    int status;
    const char *reason;
    size_t reason_len;
    size_t head_len;
    gw_http_header headers[GW_HTTP_MAX_HEADERS];
    size_t num_headers;
} gw_http_response;

// gw_http_parse_request parses a request head. Lines end in CRLF; obs-fold, whitespace
// before ':', control bytes and bare CR are errors.
gw_http_status gw_http_parse_request(const char *buf, size_t len, gw_http_request *out_req);

// gw_http_parse_response parses a response head with the same strictness.
gw_http_status gw_http_parse_response(const char *buf, size_t len, gw_http_response *out_resp);

// gw_http_connect_request writes the CONNECT request the gateway sends a parent proxy for
// |target| ("host:port"), with Proxy-Authorization: Basic for |user| and |password| when
// |user| is not NULL. Returns its length, or 0 if it does not fit |cap|. The caller
// should wipe |out| after use (it holds the credentials).
size_t gw_http_connect_request(const char *target, const char *user, const char *password, char *out, size_t cap);

// gw_http_find_header returns the first header named |name| (case-insensitive) or NULL.
const gw_http_header *gw_http_find_header(const gw_http_header *headers, size_t n, const char *name);

// gw_http_token_eq compares |len| bytes at |s| with the NUL-terminated |lit| ignoring case.
int gw_http_token_eq(const char *s, size_t len, const char *lit);

// gw_parse_port reads a decimal port from 1 to 65535 (|len| bytes, digits only) into
// |*out_port|. Returns 0 for anything else.
int gw_parse_port(const char *s, size_t len, uint16_t *out_port);

// gw_http_parse_authority splits "host:port" or "[v6]:port" (|len| bytes) into
// |out_host| (256 bytes, brackets removed) and |out_port|. |default_port| is used when
// no port is given (0: a port is required). Returns 1 on success, 0 if malformed.
int gw_http_parse_authority(const char *s, size_t len, uint16_t default_port, char *out_host, uint16_t *out_port);

// gw_http_parse_absolute_uri splits "scheme://authority/path?query". |out_scheme| gets
// "http" or "https" (lower case, 8 bytes); |out_path| points at the path (or "" when
// absent: the caller sends "/"). Userinfo ("user@") is refused. Returns 1 or 0.
int gw_http_parse_absolute_uri(const char *s, size_t len, char *out_scheme, char *out_host, uint16_t *out_port,
                               const char **out_path, size_t *out_path_len);

// gw_http_basic_credentials decodes a Proxy-Authorization value of the Basic scheme
// ("Basic " then base64 of user:password) into |out| (|cap| bytes). Returns 1 with the
// decoded length in *|out_len| and the offset of the first ':' in *|out_colon|; 0 if the
// value is not Basic, not base64, longer than |cap|, or has no ':' (|out| may then hold
// part of it: the caller cleanses |out| either way).
int gw_http_basic_credentials(const char *value, size_t len, uint8_t *out, size_t cap, size_t *out_len,
                              size_t *out_colon);

#endif
