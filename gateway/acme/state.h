// state: what the renewal of an ACME identity last did, kept beside its certificate
// (CERTIFICATE.acme-state.json) so that `identity list` and `identity check` can say it
// whether or not a gateway runs, and a restarted gateway keeps its backoff.
#ifndef MTLSGW_ACME_STATE_H
#define MTLSGW_ACME_STATE_H

#include <stddef.h>
#include <time.h>

typedef struct {
    time_t last_attempt;  // 0: never
    time_t last_success;
    time_t next_attempt;  // when a failed renewal is tried again (0: when due)
    int failures;         // in a row
    long long attempts;   // every attempt counted: `identity renew` waits for the next one
    char result[16];      // "ok", "error", "rate_limited"; "" none yet
    char error[600];      // the last failure in words
} gw_acme_state;

// gw_acme_state_path writes CERTIFICATE.acme-state.json into |out|.
void gw_acme_state_path(const char *certificate, char *out, size_t cap);
// gw_acme_state_read fills |st| from |path|: 1, or 0 (zeroed) when there is none or it
// does not parse.
int gw_acme_state_read(const char *path, gw_acme_state *st);
// gw_acme_state_write replaces |path| (a new file, then rename): 1, or 0 with errno.
int gw_acme_state_write(const char *path, const gw_acme_state *st);

// gw_acme_next_try: when a renewal that failed |failures| times in a row is tried again
// at |now|: 5 s doubling to 1 h, moved by |jitter_pct| (-20..20, random), at least the
// CA's Retry-After (|retry_after_s|, -1: none), but never later than a quarter of the
// time left before |not_after| (0: no certificate), so a valid one never lapses for want
// of a retry. Pure: the unit test's.
#define GW_ACME_RETRY_FIRST_S 5
#define GW_ACME_RETRY_MAX_S 3600
time_t gw_acme_next_try(int failures, long retry_after_s, time_t not_after, time_t now, int jitter_pct);

#endif
