// report: what operators are told about identities, shared by `mtlsgw identity list`,
// `identity check` and the admin endpoint's /identities.
#ifndef MTLSGW_REPORT_H
#define MTLSGW_REPORT_H

#include <stddef.h>
#include <time.h>

#include "gateway/service/metrics.h"
#include "gateway/tls/identity.h"
#include "policy/config.h"

// gw_identity_status says "ok", "expiring", "expired" or "not_yet_valid" at |now|.
// "expiring": fewer than |warn_days| days left, or, for a certificate that lives under
// 42 days, less than a third of its lifetime.
const char *gw_identity_status(const gw_identity *id, time_t now, int warn_days);

// gw_identity_sans writes the certificate's subject alternative names ("DNS:a, IP:b").
void gw_identity_sans(const gw_identity *id, char *out, size_t cap);

// gw_identities_json appends a JSON array describing every identity of |cfg|.
void gw_identities_json(gw_strbuf *b, const pol_config *cfg, time_t now, int warn_days);

// gw_format_utc writes |t| as "2026-11-22T11:48:26Z".
void gw_format_utc(time_t t, char *out, size_t cap);

#endif
