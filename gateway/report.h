// report: what operators are told about identities, shared by `mtlsgw identity list`,
// `identity check` and the admin endpoint's /identities.
#ifndef MTLSGW_REPORT_H
#define MTLSGW_REPORT_H

#include <stddef.h>
#include <time.h>

#include "gateway/service/metrics.h"
#include "gateway/tls/identity.h"
#include "policy/config.h"

// gw_identity_status says "ok", "expiring", "expired", "not_yet_valid" or "pending" (an
// ACME identity without a certificate yet) at |now|.
// "expiring": fewer than |warn_days| days left, or, for a certificate that lives under
// 42 days, less than a third of its lifetime.
const char *gw_identity_status(const gw_identity *id, time_t now, int warn_days);

// gw_identity_sans writes the certificate's subject alternative names ("DNS:a, IP:b").
void gw_identity_sans(const gw_identity *id, char *out, size_t cap);

// gw_identities_json appends a JSON array describing every identity of |cfg|.
void gw_identities_json(gw_strbuf *b, const pol_config *cfg, time_t now, int warn_days);

// What the renewal over ACME of an identity last did and plans (from its state file).
typedef struct {
    const pol_acme *acme;  // NULL: the identity is not renewed over ACME
    time_t next;           // when the next renewal (or retry) is due
    time_t last_attempt, last_success;
    int failures;
    char result[16];  // "ok", "error", "rate_limited", "" none yet
    char error[600];
    char next_text[40], last_text[40];  // next and last_attempt as UTC text
} gw_acme_view;
void gw_acme_view_of(const pol_config *cfg, const gw_identity *id, gw_acme_view *out);

// gw_format_utc writes |t| as "2026-11-22T11:48:26Z".
void gw_format_utc(time_t t, char *out, size_t cap);

#endif
