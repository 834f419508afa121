// errors: every way a tunnel can fail before it is established, and what each client
// protocol says about it (README, "Errors a client sees").
#ifndef MTLSGW_ERRORS_H
#define MTLSGW_ERRORS_H

#include <stdint.h>

typedef enum {
    GW_ERR_NONE = 0,
    GW_ERR_DENIED,          // a deny rule matched
    GW_ERR_NO_RULE,         // no rule matched: default deny
    GW_ERR_NOT_ALLOWED,     // client address not in `allow`
    GW_ERR_ADDRESS_DENIED,  // every address to connect to is in deny_addresses
    GW_ERR_DNS,             // no such name / no address
    GW_ERR_DNS_TIMEOUT,
    GW_ERR_REFUSED,  // TCP RST on connect
    GW_ERR_NET_UNREACHABLE,
    GW_ERR_HOST_UNREACHABLE,
    GW_ERR_CONNECT_TIMEOUT,
    GW_ERR_HANDSHAKE_TIMEOUT,
    GW_ERR_TLS_CERTIFICATE,  // we rejected the server's certificate
    GW_ERR_TLS_ALERT,        // the server sent an alert (usually: rejected our certificate)
    GW_ERR_TLS_TERMINATED,   // the server closed right after the handshake
    GW_ERR_TLS_PROTOCOL,     // any other TLS failure
    GW_ERR_BAD_COMMAND,      // SOCKS BIND/UDP ASSOCIATE, HTTP method we do not proxy
    GW_ERR_BAD_ADDRESS_TYPE,
    GW_ERR_BAD_REQUEST,  // malformed request
    GW_ERR_HEADER_TOO_LARGE,
    GW_ERR_AUTH,             // proxy authentication failed
    GW_ERR_LIMIT,            // max_connections reached
    GW_ERR_INTERNAL,         // out of memory, descriptors, ...
    GW_ERR_UPSTREAM_HTTP,    // http_proxy: the origin's response is malformed
    GW_ERR_UPSTREAM_CLOSED,  // http_proxy: the origin closed before its response was complete
    GW_ERR_KEY_UNAVAILABLE,  // the identity's key (in a PKCS#11 token) did not sign
    GW_ERR_NO_CERTIFICATE,   // the identity has no certificate yet (its ACME order is pending)
    GW_ERR_VIA_AUTH,         // the parent proxy wants credentials, or refused ours
    GW_ERR_VIA_REFUSED,      // the parent proxy refused the destination
    GW_ERR_VIA_FAILED,       // the parent proxy failed to reach it, or answered nonsense
    GW_ERR_VIA_CERT,         // an https:// parent's certificate failed verification
    GW_ERR_VIA_TLS,          // TLS to an https:// parent failed otherwise (an alert, a close)
    GW_ERR_COUNT
} gw_err;

// How a tunnel (or one http_proxy request) ended: the access log's `result` and the
// metrics' `result` label, one vocabulary for both.
typedef enum {
    GW_RESULT_NONE = 0,  // not decided yet
    GW_RESULT_OK,
    GW_RESULT_DENIED,
    GW_RESULT_NOT_ALLOWED,
    GW_RESULT_DNS_ERROR,
    GW_RESULT_DNS_TIMEOUT,
    GW_RESULT_CONNECTION_REFUSED,
    GW_RESULT_UNREACHABLE,
    GW_RESULT_CONNECT_TIMEOUT,
    GW_RESULT_HANDSHAKE_TIMEOUT,
    GW_RESULT_TLS_CERTIFICATE_ERROR,
    GW_RESULT_TLS_ALERT_RECEIVED,
    GW_RESULT_CONNECTION_TERMINATED,
    GW_RESULT_TLS_PROTOCOL_ERROR,
    GW_RESULT_BAD_REQUEST,
    GW_RESULT_AUTH_FAILED,
    GW_RESULT_LIMIT,
    GW_RESULT_INTERNAL_ERROR,
    GW_RESULT_UPSTREAM_HTTP_ERROR,
    GW_RESULT_UPSTREAM_CLOSED,
    GW_RESULT_CLIENT_TIMEOUT,
    GW_RESULT_CLIENT_CLOSED,
    GW_RESULT_CLIENT_ERROR,
    GW_RESULT_CLIENT_RESET,
    GW_RESULT_UPSTREAM_ERROR,
    GW_RESULT_UPSTREAM_RESET,
    GW_RESULT_IDLE_TIMEOUT,
    GW_RESULT_ABORTED,
    GW_RESULT_KEY_UNAVAILABLE,
    GW_RESULT_NO_CERTIFICATE,
    GW_RESULT_VIA_AUTH,
    GW_RESULT_VIA_REFUSED,
    GW_RESULT_VIA_FAILED,
    GW_RESULT_VIA_TLS,
    GW_RESULT_COUNT
} gw_result;

// gw_result_name returns the name the access log and metrics use ("-" for none).
const char *gw_result_name(gw_result r);

typedef struct {
    uint8_t socks5_rep;
    uint8_t socks4_code;
    int http_status;
    const char *proxy_status;  // RFC 9209 error type, NULL for none
    gw_result result;          // how the tunnel ends
} gw_err_info;

// gw_err_describe returns the static mapping for |err|.
const gw_err_info *gw_err_describe(gw_err err);
// gw_http_reason_phrase returns the standard reason phrase for |status|.
const char *gw_http_reason_phrase(int status);

#endif
