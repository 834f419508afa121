// transport: bytes over an established upstream connection, plain or TLS, behind one
// pair of calls with one result type (redis's ConnectionType, nginx's c->recv/c->send).
// The relay and the http exchange move bytes through it and know neither TLS nor its
// alerts. Everything a connection is lives in the gw_upstream (socket, SSL, the server's
// alert, whether it accepted us), so a connection can be handed from one tunnel to
// another (the upstream pool) by moving that struct.
#ifndef MTLSGW_TRANSPORT_H
#define MTLSGW_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/proto/errors.h"
#include "gateway/upstream/upstream.h"

typedef enum {
    GW_IO_DATA = 0,    // n bytes moved
    GW_IO_WANT_READ,   // try again once the socket is readable (TLS may need that to write)
    GW_IO_WANT_WRITE,  // try again once the socket is writable (TLS may need that to read)
    GW_IO_EOF,         // read: the server ended its stream (truncated: with no close_notify)
    GW_IO_FAILED,      // result and the reason say why; the connection is of no more use
} gw_io_kind;

typedef struct {
    gw_io_kind kind;
    size_t n;          // GW_IO_DATA: bytes moved
    int truncated;     // GW_IO_EOF over TLS: the stream ended without close_notify
    gw_result result;  // GW_IO_FAILED: how the tunnel ends because of it
    gw_err err;        // GW_IO_FAILED with judge_rejection: the error to answer a client with; else NONE
} gw_io;

// gw_socket_read and gw_socket_write move bytes over a plain non-blocking socket (the
// client's, or a direct upstream) in the same vocabulary; a failure is |on_error|.
gw_io gw_socket_read(int fd, uint8_t *p, size_t n, gw_result on_error, char *reason, size_t reason_len);
gw_io gw_socket_write(int fd, const uint8_t *p, size_t n, gw_result on_error, char *reason, size_t reason_len);

// gw_upstream_read reads up to |n| bytes into |p|. The server's first data confirms the
// connection (its sessions go to the cache). With |judge_rejection|, a connection the
// server has not accepted yet that ends or fails (after a TLS 1.3 handshake, which a
// forward listener does not wait to confirm) is reported as the rejection it is, with the
// handshake's words; else an end is an end. |reason| gets words on GW_IO_FAILED.
gw_io gw_upstream_read(gw_upstream *u, uint8_t *p, size_t n, int judge_rejection, char *reason, size_t reason_len);

// gw_upstream_write writes up to |n| bytes from |p|.
gw_io gw_upstream_write(gw_upstream *u, const uint8_t *p, size_t n, char *reason, size_t reason_len);

// gw_upstream_shutdown ends our direction: close_notify over TLS, then FIN (in one
// segment). With |closing| the FIN is left to the close() that follows at once (one
// syscall less). GW_IO_DATA once done, GW_IO_WANT_WRITE to be called again when the
// socket is writable.
gw_io gw_upstream_shutdown(gw_upstream *u, int closing);

#endif
