// socks: pure, incremental parsers for SOCKS5 (RFC 1928, RFC 1929) and SOCKS4/4a, and
// the reply encoders. No I/O and no allocation: each parser looks at (buf, len) and says
// how many bytes one whole message takes, that it needs more, or what is wrong.
#ifndef MTLSGW_SOCKS_H
#define MTLSGW_SOCKS_H

#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>
#include "gateway/proto/hostname.h"

typedef enum {
    GW_SOCKS_OK = 0,            // one message parsed; *out_consumed bytes
    GW_SOCKS_NEED_MORE,         // the message is not complete yet
    GW_SOCKS_ERR_VERSION,       // wrong version byte
    GW_SOCKS_ERR_COMMAND,       // well-formed, but not CONNECT (*out_consumed is valid)
    GW_SOCKS_ERR_ADDRESS_TYPE,  // unknown ATYP: the rest cannot be delimited
    GW_SOCKS_ERR_NAME,          // empty name, or a name with bytes no host name has
    GW_SOCKS_ERR_FORMAT,        // other malformed message (no methods, overlong field)
} gw_socks_status;

#define GW_SOCKS5_ATYP_IPV4 0x01
#define GW_SOCKS5_ATYP_DOMAIN 0x03
#define GW_SOCKS5_ATYP_IPV6 0x04

#define GW_SOCKS5_METHOD_NONE 0x00
#define GW_SOCKS5_METHOD_USERPASS 0x02
#define GW_SOCKS5_METHOD_UNACCEPTABLE 0xff

// A destination as the client asked for it. |host| is a NUL-terminated name or an IP
// literal (IPv6 without brackets).
typedef struct {
    char host[256];
    uint16_t port;
    uint8_t command;       // SOCKS command byte (1 = CONNECT)
    uint8_t address_type;  // SOCKS5 ATYP, or 0x01/0x03 for SOCKS4/4a
} gw_socks_request;

// gw_socks5_parse_greeting parses VER NMETHODS METHODS. On OK, *out_methods has bit m
// set for each offered method m < 8 (bit 8 for any method >= 8).
gw_socks_status gw_socks5_parse_greeting(const uint8_t *buf, size_t len, size_t *out_consumed, uint32_t *out_methods);

// gw_socks5_parse_userpass parses an RFC 1929 request into NUL-terminated |out_user| and
// |out_pass| (each at least 256 bytes).
gw_socks_status gw_socks5_parse_userpass(const uint8_t *buf, size_t len, size_t *out_consumed, char *out_user,
                                         char *out_pass);

// gw_socks5_parse_request parses VER CMD RSV ATYP DST.ADDR DST.PORT.
gw_socks_status gw_socks5_parse_request(const uint8_t *buf, size_t len, size_t *out_consumed,
                                        gw_socks_request *out_req);

// gw_socks4_parse_request parses a SOCKS4 or SOCKS4a request (VN CD DSTPORT DSTIP USERID
// NUL [HOST NUL]). |out_user| (256 bytes) receives USERID.
gw_socks_status gw_socks4_parse_request(const uint8_t *buf, size_t len, size_t *out_consumed, gw_socks_request *out_req,
                                        char *out_user);

// gw_socks5_encode_reply writes VER REP RSV ATYP BND.ADDR BND.PORT for |bound| (NULL or
// an unknown family gives 0.0.0.0:0) into |out| (at least 22 bytes); returns the length.
// gw_socks5_parse_reply parses what a SOCKS5 server answers a CONNECT with, as a client
// (the gateway asking a parent proxy) reads it: VER REP RSV ATYP BND.ADDR BND.PORT. On OK
// *out_rep is REP and *out_consumed the reply's length (nothing after it is taken).
gw_socks_status gw_socks5_parse_reply(const uint8_t *buf, size_t len, size_t *out_consumed, uint8_t *out_rep);

// What the gateway sends a SOCKS5 parent proxy, as a client: the username/password
// sub-negotiation (RFC 1929; each at most 255 bytes) and CONNECT host:port (an IP literal
// as an address, else the name for the parent to resolve). Return the length written to
// |out| (at least 3 + 255 + 255 bytes), or 0 if a part is too long.
size_t gw_socks5_encode_userpass(const char *user, const char *password, uint8_t *out);
size_t gw_socks5_encode_connect(const char *host, uint16_t port, uint8_t *out);

size_t gw_socks5_encode_reply(uint8_t rep, const struct sockaddr *bound, uint8_t *out);

// gw_socks4_encode_reply writes the 8-byte SOCKS4 reply (VN=0, CD=|code|).
size_t gw_socks4_encode_reply(uint8_t code, const struct sockaddr *bound, uint8_t *out);

#endif
