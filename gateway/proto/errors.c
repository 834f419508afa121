#include "gateway/proto/errors.h"

#include <stddef.h>

static const gw_err_info infos[GW_ERR_COUNT] = {
    [GW_ERR_NONE] = {0x00, 0x5a, 200, NULL, GW_RESULT_OK},
    [GW_ERR_DENIED] = {0x02, 0x5b, 403, "destination_ip_prohibited", GW_RESULT_DENIED},
    [GW_ERR_NO_RULE] = {0x02, 0x5b, 403, "destination_ip_prohibited", GW_RESULT_DENIED},
    [GW_ERR_ADDRESS_DENIED] = {0x02, 0x5b, 403, "destination_ip_prohibited", GW_RESULT_DENIED},
    [GW_ERR_NOT_ALLOWED] = {0x02, 0x5b, 403, "http_request_denied", GW_RESULT_NOT_ALLOWED},
    [GW_ERR_DNS] = {0x04, 0x5b, 502, "dns_error", GW_RESULT_DNS_ERROR},
    [GW_ERR_DNS_TIMEOUT] = {0x04, 0x5b, 504, "dns_timeout", GW_RESULT_DNS_TIMEOUT},
    [GW_ERR_REFUSED] = {0x05, 0x5b, 502, "connection_refused", GW_RESULT_CONNECTION_REFUSED},
    [GW_ERR_NET_UNREACHABLE] = {0x03, 0x5b, 502, "destination_unavailable", GW_RESULT_UNREACHABLE},
    [GW_ERR_HOST_UNREACHABLE] = {0x04, 0x5b, 502, "destination_unavailable", GW_RESULT_UNREACHABLE},
    [GW_ERR_CONNECT_TIMEOUT] = {0x06, 0x5b, 504, "connection_timeout", GW_RESULT_CONNECT_TIMEOUT},
    [GW_ERR_HANDSHAKE_TIMEOUT] = {0x06, 0x5b, 504, "connection_timeout", GW_RESULT_HANDSHAKE_TIMEOUT},
    [GW_ERR_TLS_CERTIFICATE] = {0x01, 0x5b, 502, "tls_certificate_error", GW_RESULT_TLS_CERTIFICATE_ERROR},
    [GW_ERR_TLS_ALERT] = {0x01, 0x5b, 502, "tls_alert_received", GW_RESULT_TLS_ALERT_RECEIVED},
    [GW_ERR_TLS_TERMINATED] = {0x01, 0x5b, 502, "connection_terminated", GW_RESULT_CONNECTION_TERMINATED},
    [GW_ERR_TLS_PROTOCOL] = {0x01, 0x5b, 502, "tls_protocol_error", GW_RESULT_TLS_PROTOCOL_ERROR},
    [GW_ERR_BAD_COMMAND] = {0x07, 0x5b, 405, "http_request_error", GW_RESULT_BAD_REQUEST},
    [GW_ERR_BAD_ADDRESS_TYPE] = {0x08, 0x5b, 400, "http_request_error", GW_RESULT_BAD_REQUEST},
    [GW_ERR_BAD_REQUEST] = {0x01, 0x5b, 400, "http_request_error", GW_RESULT_BAD_REQUEST},
    [GW_ERR_HEADER_TOO_LARGE] = {0x01, 0x5b, 431, "http_request_error", GW_RESULT_BAD_REQUEST},
    [GW_ERR_AUTH] = {0x01, 0x5d, 407, NULL, GW_RESULT_AUTH_FAILED},
    [GW_ERR_LIMIT] = {0x01, 0x5b, 503, "connection_limit_reached", GW_RESULT_LIMIT},
    [GW_ERR_INTERNAL] = {0x01, 0x5b, 500, "proxy_internal_error", GW_RESULT_INTERNAL_ERROR},
    [GW_ERR_UPSTREAM_HTTP] = {0x01, 0x5b, 502, "http_protocol_error", GW_RESULT_UPSTREAM_HTTP_ERROR},
    [GW_ERR_UPSTREAM_CLOSED] = {0x01, 0x5b, 502, "http_response_incomplete", GW_RESULT_UPSTREAM_CLOSED},
    [GW_ERR_KEY_UNAVAILABLE] = {0x01, 0x5b, 503, "proxy_internal_error", GW_RESULT_KEY_UNAVAILABLE},
    [GW_ERR_NO_CERTIFICATE] = {0x01, 0x5b, 502, "proxy_internal_error", GW_RESULT_NO_CERTIFICATE},
    [GW_ERR_VIA_AUTH] = {0x01, 0x5b, 502, "proxy_auth_required", GW_RESULT_VIA_AUTH},
    [GW_ERR_VIA_REFUSED] = {0x02, 0x5b, 502, "http_request_denied", GW_RESULT_VIA_REFUSED},
    [GW_ERR_VIA_FAILED] = {0x01, 0x5b, 502, "destination_unavailable", GW_RESULT_VIA_FAILED},
    [GW_ERR_VIA_CERT] = {0x01, 0x5b, 502, "tls_certificate_error", GW_RESULT_VIA_TLS},
    [GW_ERR_VIA_TLS] = {0x01, 0x5b, 502, "tls_protocol_error", GW_RESULT_VIA_TLS},
};

static const char *const result_names[GW_RESULT_COUNT] = {
    [GW_RESULT_NONE] = "-",
    [GW_RESULT_OK] = "ok",
    [GW_RESULT_DENIED] = "denied",
    [GW_RESULT_NOT_ALLOWED] = "not_allowed",
    [GW_RESULT_DNS_ERROR] = "dns_error",
    [GW_RESULT_DNS_TIMEOUT] = "dns_timeout",
    [GW_RESULT_CONNECTION_REFUSED] = "connection_refused",
    [GW_RESULT_UNREACHABLE] = "unreachable",
    [GW_RESULT_CONNECT_TIMEOUT] = "connect_timeout",
    [GW_RESULT_HANDSHAKE_TIMEOUT] = "handshake_timeout",
    [GW_RESULT_TLS_CERTIFICATE_ERROR] = "tls_certificate_error",
    [GW_RESULT_TLS_ALERT_RECEIVED] = "tls_alert_received",
    [GW_RESULT_CONNECTION_TERMINATED] = "connection_terminated",
    [GW_RESULT_TLS_PROTOCOL_ERROR] = "tls_protocol_error",
    [GW_RESULT_BAD_REQUEST] = "bad_request",
    [GW_RESULT_AUTH_FAILED] = "auth_failed",
    [GW_RESULT_LIMIT] = "limit",
    [GW_RESULT_INTERNAL_ERROR] = "internal_error",
    [GW_RESULT_UPSTREAM_HTTP_ERROR] = "upstream_http_error",
    [GW_RESULT_UPSTREAM_CLOSED] = "upstream_closed",
    [GW_RESULT_CLIENT_TIMEOUT] = "client_timeout",
    [GW_RESULT_CLIENT_CLOSED] = "client_closed",
    [GW_RESULT_CLIENT_ERROR] = "client_error",
    [GW_RESULT_CLIENT_RESET] = "client_reset",
    [GW_RESULT_UPSTREAM_ERROR] = "upstream_error",
    [GW_RESULT_UPSTREAM_RESET] = "upstream_reset",
    [GW_RESULT_IDLE_TIMEOUT] = "idle_timeout",
    [GW_RESULT_ABORTED] = "aborted",
    [GW_RESULT_KEY_UNAVAILABLE] = "key_unavailable",
    [GW_RESULT_NO_CERTIFICATE] = "no_certificate",
    [GW_RESULT_VIA_AUTH] = "parent_auth_failed",
    [GW_RESULT_VIA_REFUSED] = "parent_refused",
    [GW_RESULT_VIA_FAILED] = "parent_error",
    [GW_RESULT_VIA_TLS] = "parent_tls_failed",
};

const char *gw_result_name(gw_result r) {
    return (unsigned)r < GW_RESULT_COUNT && result_names[r] != NULL ? result_names[r] : "-";
}

const gw_err_info *gw_err_describe(gw_err err) {
    if ((unsigned)err >= GW_ERR_COUNT) {
        err = GW_ERR_INTERNAL;
    }
    return &infos[err];
}

const char *gw_http_reason_phrase(int status) {
    switch (status) {
        case 200:
            return "OK";
        case 400:
            return "Bad Request";
        case 403:
            return "Forbidden";
        case 405:
            return "Method Not Allowed";
        case 407:
            return "Proxy Authentication Required";
        case 408:
            return "Request Timeout";
        case 413:
            return "Content Too Large";
        case 431:
            return "Request Header Fields Too Large";
        case 500:
            return "Internal Server Error";
        case 501:
            return "Not Implemented";
        case 502:
            return "Bad Gateway";
        case 503:
            return "Service Unavailable";
        case 504:
            return "Gateway Timeout";
        case 505:
            return "HTTP Version Not Supported";
        default:
            return "Error";
    }
}
