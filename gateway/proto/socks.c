#include "gateway/proto/socks.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

gw_socks_status gw_socks5_parse_greeting(const uint8_t *buf, size_t len, size_t *out_consumed, uint32_t *out_methods) {
    if (len < 1) {
        return GW_SOCKS_NEED_MORE;
    }
    if (buf[0] != 5) {
        return GW_SOCKS_ERR_VERSION;
    }
    if (len < 2) {
        return GW_SOCKS_NEED_MORE;
    }
    size_t n = buf[1];
    if (n == 0) {
        return GW_SOCKS_ERR_FORMAT;
    }
    if (len < 2 + n) {
        return GW_SOCKS_NEED_MORE;
    }
    uint32_t methods = 0;
    for (size_t i = 0; i < n; i++) {
        methods |= buf[2 + i] < 8 ? 1u << buf[2 + i] : 1u << 8;
    }
    *out_methods = methods;
    *out_consumed = 2 + n;
    return GW_SOCKS_OK;
}

gw_socks_status gw_socks5_parse_userpass(const uint8_t *buf, size_t len, size_t *out_consumed, char *out_user,
                                         char *out_pass) {
    if (len < 1) {
        return GW_SOCKS_NEED_MORE;
    }
    if (buf[0] != 1) {
        return GW_SOCKS_ERR_VERSION;
    }
    if (len < 2) {
        return GW_SOCKS_NEED_MORE;
    }
    size_t ulen = buf[1];
    if (len < 2 + ulen + 1) {
        return GW_SOCKS_NEED_MORE;
    }
    size_t plen = buf[2 + ulen];
    if (len < 3 + ulen + plen) {
        return GW_SOCKS_NEED_MORE;
    }
    if (ulen == 0) {
        return GW_SOCKS_ERR_FORMAT;
    }
    memcpy(out_user, buf + 2, ulen);
    out_user[ulen] = '\0';
    memcpy(out_pass, buf + 3 + ulen, plen);
    out_pass[plen] = '\0';
    // A NUL inside a field would truncate it silently: refuse instead.
    if (strlen(out_user) != ulen || strlen(out_pass) != plen) {
        return GW_SOCKS_ERR_FORMAT;
    }
    *out_consumed = 3 + ulen + plen;
    return GW_SOCKS_OK;
}

gw_socks_status gw_socks5_parse_request(const uint8_t *buf, size_t len, size_t *out_consumed,
                                        gw_socks_request *out_req) {
    if (len < 1) {
        return GW_SOCKS_NEED_MORE;
    }
    if (buf[0] != 5) {
        return GW_SOCKS_ERR_VERSION;
    }
    if (len < 4) {
        return GW_SOCKS_NEED_MORE;
    }
    if (buf[2] != 0) {
        return GW_SOCKS_ERR_FORMAT;
    }
    size_t addr_len;
    size_t off = 4;
    switch (buf[3]) {
        case GW_SOCKS5_ATYP_IPV4:
            addr_len = 4;
            break;
        case GW_SOCKS5_ATYP_IPV6:
            addr_len = 16;
            break;
        case GW_SOCKS5_ATYP_DOMAIN:
            if (len < 5) {
                return GW_SOCKS_NEED_MORE;
            }
            addr_len = buf[4];
            off = 5;
            break;
        default:
            return GW_SOCKS_ERR_ADDRESS_TYPE;
    }
    if (len < off + addr_len + 2) {
        return GW_SOCKS_NEED_MORE;
    }
    *out_consumed = off + addr_len + 2;
    out_req->command = buf[1];
    out_req->address_type = buf[3];
    out_req->port = (uint16_t)(buf[off + addr_len] << 8 | buf[off + addr_len + 1]);
    if (buf[3] == GW_SOCKS5_ATYP_IPV4) {
        inet_ntop(AF_INET, buf + 4, out_req->host, sizeof(out_req->host));
    } else if (buf[3] == GW_SOCKS5_ATYP_IPV6) {
        inet_ntop(AF_INET6, buf + 4, out_req->host, sizeof(out_req->host));
    } else {
        if (!gw_host_is_valid((const char *)buf + 5, addr_len)) {
            return GW_SOCKS_ERR_NAME;
        }
        memcpy(out_req->host, buf + 5, addr_len);
        out_req->host[addr_len] = '\0';
    }
    return out_req->command == 1 ? GW_SOCKS_OK : GW_SOCKS_ERR_COMMAND;
}

// find_nul returns the index of the first NUL in buf[from..len) within |max| bytes, -1
// if not there yet, -2 if |max| bytes passed without one.
static long find_nul(const uint8_t *buf, size_t len, size_t from, size_t max) {
    for (size_t i = from; i < len; i++) {
        if (buf[i] == 0) {
            return (long)i;
        }
        if (i - from >= max) {
            return -2;
        }
    }
    return len - from > max ? -2 : -1;
}

gw_socks_status gw_socks4_parse_request(const uint8_t *buf, size_t len, size_t *out_consumed, gw_socks_request *out_req,
                                        char *out_user) {
    if (len < 1) {
        return GW_SOCKS_NEED_MORE;
    }
    if (buf[0] != 4) {
        return GW_SOCKS_ERR_VERSION;
    }
    if (len < 9) {
        return GW_SOCKS_NEED_MORE;
    }
    long user_end = find_nul(buf, len, 8, 255);
    if (user_end == -2) {
        return GW_SOCKS_ERR_FORMAT;
    }
    if (user_end < 0) {
        return GW_SOCKS_NEED_MORE;
    }
    size_t end = (size_t)user_end + 1;
    int is_4a = buf[4] == 0 && buf[5] == 0 && buf[6] == 0 && buf[7] != 0;
    if (is_4a) {
        long host_end = find_nul(buf, len, end, 255);
        if (host_end == -2) {
            return GW_SOCKS_ERR_NAME;
        }
        if (host_end < 0) {
            return GW_SOCKS_NEED_MORE;
        }
        size_t hlen = (size_t)host_end - end;
        if (!gw_host_is_valid((const char *)buf + end, hlen)) {
            *out_consumed = (size_t)host_end + 1;
            return GW_SOCKS_ERR_NAME;
        }
        memcpy(out_req->host, buf + end, hlen);
        out_req->host[hlen] = '\0';
        out_req->address_type = GW_SOCKS5_ATYP_DOMAIN;
        end = (size_t)host_end + 1;
    } else {
        inet_ntop(AF_INET, buf + 4, out_req->host, sizeof(out_req->host));
        out_req->address_type = GW_SOCKS5_ATYP_IPV4;
    }
    memcpy(out_user, buf + 8, (size_t)user_end - 8 + 1);
    out_req->command = buf[1];
    out_req->port = (uint16_t)(buf[2] << 8 | buf[3]);
    *out_consumed = end;
    return out_req->command == 1 ? GW_SOCKS_OK : GW_SOCKS_ERR_COMMAND;
}

size_t gw_socks5_encode_reply(uint8_t rep, const struct sockaddr *bound, uint8_t *out) {
    out[0] = 5;
    out[1] = rep;
    out[2] = 0;
    if (bound != NULL && bound->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)bound;
        out[3] = GW_SOCKS5_ATYP_IPV6;
        memcpy(out + 4, &s6->sin6_addr, 16);
        memcpy(out + 20, &s6->sin6_port, 2);
        return 22;
    }
    out[3] = GW_SOCKS5_ATYP_IPV4;
    if (bound != NULL && bound->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)bound;
        memcpy(out + 4, &s4->sin_addr, 4);
        memcpy(out + 8, &s4->sin_port, 2);
    } else {
        memset(out + 4, 0, 6);
    }
    return 10;
}

size_t gw_socks4_encode_reply(uint8_t code, const struct sockaddr *bound, uint8_t *out) {
    out[0] = 0;
    out[1] = code;
    memset(out + 2, 0, 6);
    if (bound != NULL && bound->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)bound;
        memcpy(out + 2, &s4->sin_port, 2);
        memcpy(out + 4, &s4->sin_addr, 4);
    }
    return 8;
}

gw_socks_status gw_socks5_parse_reply(const uint8_t *buf, size_t len, size_t *out_consumed, uint8_t *out_rep) {
    if (len < 5) {
        return GW_SOCKS_NEED_MORE;
    }
    if (buf[0] != 0x05) {
        return GW_SOCKS_ERR_VERSION;
    }
    if (buf[2] != 0x00) {
        return GW_SOCKS_ERR_FORMAT;
    }
    size_t need;
    switch (buf[3]) {
        case GW_SOCKS5_ATYP_IPV4:
            need = 4 + 4 + 2;
            break;
        case GW_SOCKS5_ATYP_IPV6:
            need = 4 + 16 + 2;
            break;
        case GW_SOCKS5_ATYP_DOMAIN:
            need = 4 + 1 + (size_t)buf[4] + 2;
            break;
        default:
            return GW_SOCKS_ERR_ADDRESS_TYPE;
    }
    if (len < need) {
        return GW_SOCKS_NEED_MORE;
    }
    *out_consumed = need;
    *out_rep = buf[1];
    return GW_SOCKS_OK;
}

size_t gw_socks5_encode_userpass(const char *user, const char *password, uint8_t *out) {
    size_t ul = strlen(user), pl = strlen(password);
    if (ul == 0 || ul > 255 || pl > 255) {
        return 0;
    }
    out[0] = 0x01;
    out[1] = (uint8_t)ul;
    memcpy(out + 2, user, ul);
    out[2 + ul] = (uint8_t)pl;
    memcpy(out + 3 + ul, password, pl);
    return 3 + ul + pl;
}

size_t gw_socks5_encode_connect(const char *host, uint16_t port, uint8_t *out) {
    size_t n = 0;
    struct in6_addr a6;
    struct in_addr a4;
    out[n++] = 0x05, out[n++] = 0x01, out[n++] = 0x00;
    if (inet_pton(AF_INET, host, &a4) == 1) {
        out[n++] = GW_SOCKS5_ATYP_IPV4;
        memcpy(out + n, &a4, 4), n += 4;
    } else if (inet_pton(AF_INET6, host, &a6) == 1) {
        out[n++] = GW_SOCKS5_ATYP_IPV6;
        memcpy(out + n, &a6, 16), n += 16;
    } else {
        size_t hl = strlen(host);
        if (hl == 0 || hl > 255) {
            return 0;
        }
        out[n++] = GW_SOCKS5_ATYP_DOMAIN;
        out[n++] = (uint8_t)hl;
        memcpy(out + n, host, hl), n += hl;
    }
    out[n++] = (uint8_t)(port >> 8), out[n++] = (uint8_t)port;
    return n;
}
