// log: the error log (levels) and the access log (one line per tunnel, logfmt or JSON).
// Each line is written with a single write(2) so lines from workers never interleave.
#ifndef MTLSGW_LOG_H
#define MTLSGW_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum { GW_LOG_ERROR = 0, GW_LOG_WARN, GW_LOG_INFO, GW_LOG_DEBUG } gw_log_level;
typedef enum { GW_LOG_TEXT = 0, GW_LOG_JSON } gw_log_format;

// gw_log_parse_level turns "error".."debug" into a level; returns 0 if unknown.
int gw_log_parse_level(const char *s, gw_log_level *out_level);

// gw_log_allow_owner names a uid besides our own whose files the access log may be (the
// service user, for a gateway started as root). An access-log path is never opened
// through a symbolic link, and a regular file there must have one link and be ours,
// root's or that user's: otherwise gw_log_configure fails (EPERM, ELOOP).
void gw_log_allow_owner(uint32_t uid);

// gw_log_configure sets the level, format and access-log destination ("stderr",
// "stdout", "off" or a file path, opened for append). Returns 1 on success, 0 if the
// file cannot be opened (errno set). Safe to call again (reload).
int gw_log_configure(gw_log_level level, gw_log_format format, const char *access);
// gw_log_reopen reopens the access log file (SIGUSR1, after log rotation).
void gw_log_reopen(void);
void gw_log_shutdown(void);

int gw_log_enabled(gw_log_level level);
void gw_log(gw_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// An access-log record. Strings may be NULL (logged as "-"); numbers < 0 are "-".
typedef struct {
    int64_t caller;  // uid of the local caller; < 0: not known
    const char *client, *listener, *proto, *dest, *rule, *action, *identity, *upstream, *sni, *tls, *result, *reason;
    int resumed;        // -1: no TLS
    const char *conn;   // how the upstream connection came: new, kept, pooled, preconnected (NULL: none)
    const char *early;  // TLS early data: "-" (none), accepted, rejected (NULL: no TLS connection)
    const char *ocsp;   // the server's OCSP staple: good, none, revoked, ... (NULL: not checked)
    const char *via;    // the parent proxy's address the tunnel went through (NULL: none)
    int64_t dns_ms, connect_ms, handshake_ms, duration_ms;
    uint64_t up_bytes, down_bytes;
    const char *user;    // the authenticated proxy user (NULL: the key is left out)
    const char *method;  // http_proxy requests only (NULL: the keys are left out)
    int status;
} gw_access_record;

void gw_access_log(const gw_access_record *r);
// gw_access_log_enabled says whether access lines go anywhere (log.access is not "off").
int gw_access_log_enabled(void);

// gw_logfmt_value appends |v| to |out| as a logfmt value (quoted when it has spaces,
// quotes, '=' or control bytes). Returns bytes written, never more than |cap|-1.
size_t gw_logfmt_value(char *out, size_t cap, const char *v);

#endif
