#include "gateway/errors.h"

#include <stddef.h>

static const gw_err_info infos[GW_ERR_COUNT] = {
    [GW_ERR_NONE] = {0x00, 0x5a, 200, NULL, "ok"},
    [GW_ERR_DENIED] = {0x02, 0x5b, 403, "destination_ip_prohibited", "denied"},
    [GW_ERR_NO_RULE] = {0x02, 0x5b, 403, "destination_ip_prohibited", "denied"},
    [GW_ERR_ADDRESS_DENIED] = {0x02, 0x5b, 403, "destination_ip_prohibited", "denied"},
    [GW_ERR_NOT_ALLOWED] = {0x02, 0x5b, 403, "http_request_denied", "not_allowed"},
    [GW_ERR_DNS] = {0x04, 0x5b, 502, "dns_error", "dns_error"},
    [GW_ERR_DNS_TIMEOUT] = {0x04, 0x5b, 504, "dns_timeout", "dns_timeout"},
    [GW_ERR_REFUSED] = {0x05, 0x5b, 502, "connection_refused", "connection_refused"},
    [GW_ERR_NET_UNREACHABLE] = {0x03, 0x5b, 502, "destination_unavailable", "unreachable"},
    [GW_ERR_HOST_UNREACHABLE] = {0x04, 0x5b, 502, "destination_unavailable", "unreachable"},
    [GW_ERR_CONNECT_TIMEOUT] = {0x06, 0x5b, 504, "connection_timeout", "connect_timeout"},
    [GW_ERR_HANDSHAKE_TIMEOUT] = {0x06, 0x5b, 504, "connection_timeout", "handshake_timeout"},
    [GW_ERR_TLS_CERTIFICATE] = {0x01, 0x5b, 502, "tls_certificate_error", "tls_certificate_error"},
    [GW_ERR_TLS_ALERT] = {0x01, 0x5b, 502, "tls_alert_received", "tls_alert_received"},
    [GW_ERR_TLS_TERMINATED] = {0x01, 0x5b, 502, "connection_terminated", "connection_terminated"},
    [GW_ERR_TLS_PROTOCOL] = {0x01, 0x5b, 502, "tls_protocol_error", "tls_protocol_error"},
    [GW_ERR_BAD_COMMAND] = {0x07, 0x5b, 405, "http_request_error", "bad_request"},
    [GW_ERR_BAD_ADDRESS_TYPE] = {0x08, 0x5b, 400, "http_request_error", "bad_request"},
    [GW_ERR_BAD_REQUEST] = {0x01, 0x5b, 400, "http_request_error", "bad_request"},
    [GW_ERR_HEADER_TOO_LARGE] = {0x01, 0x5b, 431, "http_request_error", "bad_request"},
    [GW_ERR_AUTH] = {0x01, 0x5d, 407, NULL, "auth_failed"},
    [GW_ERR_LIMIT] = {0x01, 0x5b, 503, "connection_limit_reached", "limit"},
    [GW_ERR_INTERNAL] = {0x01, 0x5b, 500, "proxy_internal_error", "internal_error"},
    [GW_ERR_UPSTREAM_HTTP] = {0x01, 0x5b, 502, "http_protocol_error", "upstream_http_error"},
    [GW_ERR_UPSTREAM_CLOSED] = {0x01, 0x5b, 502, "http_response_incomplete", "upstream_closed"},
};

const gw_err_info *gw_err_describe(gw_err err) {
    if ((unsigned)err >= GW_ERR_COUNT) {
        err = GW_ERR_INTERNAL;
    }
    return &infos[err];
}

const char *gw_http_reason_phrase(int status) {
    switch (status) {
        case 200: return "OK";
        case 400: return "Bad Request";
        case 403: return "Forbidden";
        case 405: return "Method Not Allowed";
        case 407: return "Proxy Authentication Required";
        case 408: return "Request Timeout";
        case 413: return "Content Too Large";
        case 431: return "Request Header Fields Too Large";
        case 500: return "Internal Server Error";
        case 501: return "Not Implemented";
        case 502: return "Bad Gateway";
        case 503: return "Service Unavailable";
        case 504: return "Gateway Timeout";
        case 505: return "HTTP Version Not Supported";
        default: return "Error";
    }
}
