// status: the admin endpoint's status page (GET /) and its machine-readable twin
// (GET /status.json): identities, rules and their counts, live tunnels, the last failures,
// handshake charts, reloads and uptime, read from what the workers already publish
// (metrics, the board, each rule's counters). Every value that came from a client, a
// certificate or DNS is escaped; no key material, PIN or password is in either.
#ifndef MTLSGW_STATUS_H
#define MTLSGW_STATUS_H

#include <stddef.h>

#include "policy/config.h"

// gw_status_html renders the page (|refresh_s| > 0: it reloads itself that often) and
// writes the Content-Security-Policy its inline style needs into |csp|. NULL: no memory.
char *gw_status_html(const pol_config *cfg, long active_tunnels, int refresh_s, char *csp, size_t csp_cap);
// gw_status_json: the same data as JSON.
char *gw_status_json(const pol_config *cfg, long active_tunnels);

#endif
