// config: loading and validating mtlsgw.conf (libconfig syntax) into an immutable,
// reference-counted snapshot. Two passes: libconfig parses the syntax, then every
// setting is checked for meaning; each problem becomes "file:line: setting: what was
// expected", and all of them are collected before giving up. `mtlsgw check` and `run`
// call exactly this code.
#ifndef MTLSGW_CONFIG_H
#define MTLSGW_CONFIG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "gateway/base/log.h"
#include "gateway/proto/errors.h"
#include "policy/callers.h"
#include "policy/match.h"
#include "policy/rules.h"

typedef struct gw_identity gw_identity;

typedef enum { POL_ACTION_DENY = 0, POL_ACTION_DIRECT, POL_ACTION_MTLS } pol_action;

// Listener protocol bits.
#define POL_PROTO_SOCKS5 1u
#define POL_PROTO_SOCKS4 2u
#define POL_PROTO_HTTP 4u

// What a transparent listener may sniff from the client's first bytes.
#define POL_SNIFF_HTTP 1u

// A rule's parent proxy (`via`): the tunnel is asked of it, the rule's mTLS runs inside.
// https:// is HTTP CONNECT over TLS to the parent itself.
typedef enum { POL_VIA_HTTP = 1, POL_VIA_SOCKS5 } pol_via_kind;
typedef struct {
    pol_via_kind kind;
    char *text;  // as written: "http://egress.corp:3128" (no credentials in it)
    char *host;  // a name or an IP literal
    uint16_t port;
    char *credentials_file;
    char *user, *password;  // read from credentials_file at load; NULL: none. Never logged.
    // https://: the identity that verifies the parent (its trust, CRL, pins, OCSP) and is
    // presented when the parent asks: `via_identity`, or one made from `via_trust` alone
    // (verifies, presents nothing; owned here).
    gw_identity *tls;
    int tls_owned;
} pol_via;

// What the tunnels (and http_proxy requests) of one rule did, for the status page: counted
// by the workers, read by the admin thread. Belongs to the snapshot (a reload starts anew).
typedef struct pol_rule_stats {
    atomic_long active;                       // tunnels routed by the rule, open now
    atomic_ullong total;                      // tunnels and requests it decided
    atomic_ullong failures[GW_RESULT_COUNT];  // refused or failed, by result
    pthread_mutex_t lock;                     // the last failure:
    time_t last_time;
    char last_result[32];
    char last_reason[400];
} pol_rule_stats;

typedef struct {
    pol_match match;
    char *match_text;
    pol_action action;
    gw_identity *identity;     // set for POL_ACTION_MTLS: the first of identities
    gw_identity **identities;  // `identity` (one, or a list chosen by the server's CA names)
    size_t num_identities;
    char *server_uri;         // a URI SAN (SPIFFE ID) the server must carry; server_name is then SNI only
    char *upstream_host;      // NULL: connect to the destination
    uint16_t upstream_port;   // with upstream_host: its port; alone: replaces the destination's
    char *server_name;        // NULL: the host connected to
    pol_callers *callers;     // `caller`: who may use the rule; NULL: everyone
    char *where;              // "file:line" of the rule
    int upstream_is_literal;  // upstream_host is an IP address the operator wrote
    uint64_t listeners;       // `listener`: bit i for listener i; 0: every listener
    char *listeners_text;     // as written ("a, b"), for people; NULL: every listener
    int preconnect;           // verified connections each worker keeps ready (one destination only)
    int early_data;           // TLS 1.3 early data on resumed sessions (mtls only)
    int tcp_fastopen;         // TCP Fast Open to the upstream: our first flight rides in the SYN
    pol_via *via;             // a parent proxy to go through; NULL: connect directly
    pol_rule_stats *stats;    // in the snapshot's rule_stats
} pol_rule;

typedef struct {
    char *name;
    char *address_text;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    unsigned protocols;  // POL_PROTO_* bits, 0 for a forward listener
    char *forward_host;  // forward listener: fixed destination
    uint16_t forward_port;
    char *unix_path;                  // "unix:PATH" listener: the socket's path (addr holds it too); else NULL
    unsigned unix_mode;               // its permissions (default 0660)
    uint32_t unix_owner, unix_group;  // chown to these; GW_CALLER_NONE: leave as made
    int transparent;                  // the destination is the connection's original one (SO_ORIGINAL_DST)
    unsigned sniff;                   // POL_SNIFF_* bits (transparent listeners)
} pol_listener;

typedef struct {
    char *name;  // normalised
    int family;
    uint8_t addr[16];
} pol_host_entry;

typedef struct {
    int family;
    uint8_t addr[16];
    int prefix_len;
    char *text;  // as written in the config
} pol_cidr;

// An identity's `acme` block: its certificate is obtained and renewed over ACME.
typedef enum { POL_ACME_HTTP01 = 0, POL_ACME_DNS01 } pol_acme_challenge;
typedef struct {
    char *identity;  // the identity's name (its certificate and key paths are where results go)
    char *where;     // "file:line" of the block
    char *directory;
    char *trust;        // PEM of the CAs for the ACME server's TLS; NULL: the system's
    char *account_key;  // made on first use (mode 0600)
    char **contact;
    size_t num_contact;
    char *eab_kid, *eab_hmac_file;  // External Account Binding, or NULL
    char **names;                   // DNS names or IPs for the certificate (CN: the first)
    size_t num_names;
    char key_type[16];         // ec-p256 | ec-p384 | rsa-2048 | rsa-3072
    int renew_before_pct;      // renew when this share of the lifetime is left; 0: renew_before_s
    long long renew_before_s;  // ... or this long before notAfter
    pol_acme_challenge challenge;
    char *http01_listen;  // as written; NULL without
    struct sockaddr_storage http01_addr;
    socklen_t http01_addr_len;
    char *dns01_hook;  // run as HOOK add|remove NAME VALUE
} pol_acme;

typedef struct pol_config {
    atomic_int refs;
    uint64_t generation;  // increases with every successful load in this process
    char *path;
    char *dir;  // folder of the config file: base for relative paths
    int workers;
    pol_listener *listeners;
    size_t num_listeners;
    struct {
        char *servers_csv;  // "ip:port,..." for ares_set_servers_ports_csv, NULL: resolv.conf
        int timeout_ms, tries, cache_max_ttl;
        pol_host_entry *hosts;
        size_t num_hosts;
    } resolver;
    gw_identity **identities;
    size_t num_identities;
    pol_acme *acme;  // the identities renewed over ACME
    size_t num_acme;
    pol_rule *rules;
    size_t num_rules;
    pol_rule_stats *rule_stats;  // one per rule
    pol_index *index;
    int callers_in_rules;  // some rule has `caller`: every client's caller must be known
    struct {
        int max_connections, connect_timeout_ms, handshake_timeout_ms, confirm_ms, idle_timeout_s, header_max,
            drain_timeout_s;
        int session_cache_size;          // TLS sessions cached in all (least recently used keys go first)
        int key_timeout_ms;              // a token's signature (PKCS#11 keys): how long a handshake waits for it
        int max_connections_per_client;  // one caller (uid) or remote address: its share of max_connections
        int happy_eyeballs_ms;           // RFC 8305: the next address is tried after this; 0: one after another
    } limits;
    struct {
        int idle_per_key;    // idle connections kept per key; 0: no pool
        int idle_total;      // idle connections kept per worker
        int idle_timeout_s;  // an idle connection is closed after this
        int max_requests;    // requests one upstream connection carries
    } upstream_pool;
    pol_cidr *allow;
    size_t num_allow;
    uint32_t upstream_mark;    // SO_MARK on every upstream socket; 0: none
    pol_cidr *deny_addresses;  // never connected to, after DNS (DESIGN: deny_addresses)
    size_t num_deny_addresses;
    int deny_addresses_written;  // the list is the operator's, not the default one
    pol_cidr *local_addresses;   // this host's interface addresses at load (wildcard listeners)
    size_t num_local_addresses;
    char *users_file;
    struct pol_users *users;  // auth.users_file loaded; NULL: no proxy authentication
    char *admin_address_text;
    pol_cidr *admin_allow;  // clients that may use the admin endpoint (default: loopback)
    size_t num_admin_allow;
    struct sockaddr_storage admin_addr;
    socklen_t admin_addr_len;
    gw_log_level log_level;
    gw_log_format log_format;
    char *log_access;
    char *user;                       // drop to this user when started as root
    struct pol_config *retired_next;  // in the supervisor's list of snapshots to free
} pol_config;

// Collected problems, each "file:line: setting: message".
typedef struct {
    char **lines;
    size_t len, cap;
    size_t warnings;  // lines that start with "warning:" do not fail a load
} pol_errors;

void pol_errors_init(pol_errors *errs);
void pol_errors_free(pol_errors *errs);
void pol_errors_add(pol_errors *errs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
size_t pol_errors_count_fatal(const pol_errors *errs);

// pol_config_load reads and validates |path| and loads every identity. Returns a snapshot
// with one reference, or NULL with the reasons in |errs|. Warnings (for example a key file
// readable by others) are added to |errs| even on success.
pol_config *pol_config_load(const char *path, pol_errors *errs);

pol_config *pol_config_ref(pol_config *cfg);

// pol_config_unref drops a reference; the last one frees the snapshot, which may be slow
// (its identities' PKCS#11 signers are stopped). With a retirer set, the retirer is asked
// first: it returns 1 when it took the snapshot to free it elsewhere (redis's lazyfree:
// a worker never frees one), 0 to free it here.
void pol_config_unref(pol_config *cfg);
void pol_config_set_retirer(int (*retire)(pol_config *cfg));

// pol_config_free frees a snapshot no one refers to (what the last unref does).
void pol_config_free(pol_config *cfg);

// pol_config_lookup returns the rule that decides |d| for the local caller |caller| (a uid,
// or GW_CALLER_NONE) on listener |listener| (its index; -1: none in particular) or NULL
// (default deny).
const pol_rule *pol_config_lookup(const pol_config *cfg, const pol_dest *d, uint32_t caller, int listener);

// pol_config_allows says whether a client at |sa| may use the proxy (the `allow` list).
int pol_config_allows(const pol_config *cfg, const struct sockaddr *sa);

// pol_config_admin_allows says whether a client at |sa| may use the admin endpoint.
int pol_config_admin_allows(const pol_config *cfg, const struct sockaddr *sa);

// pol_config_denied_address says whether the gateway must not connect to |addr| (of
// |family|; IPv4-mapped IPv6 counts as IPv4) for rule |r| (NULL: any): the entry of
// deny_addresses that covers it, or a static entry for 0.0.0.0 and ::, which are refused
// even when the list is empty. An IP literal `upstream` of |r| is the operator's own
// choice: the default list does not apply to it (a list the operator wrote does, and the
// loader refuses an upstream inside it). NULL: allowed.
const pol_cidr *pol_config_denied_address(const pol_config *cfg, const pol_rule *r, int family, const uint8_t *addr);

// pol_config_own_address says whether |addr|:|port| is where this gateway itself listens:
// a TCP listener or the admin endpoint, a wildcard one at any loopback or interface
// address of the host. Returns that listener's name ("admin" for the admin endpoint), or
// NULL. The gateway never connects there, whatever the lists say: a loop would make the
// inner connection's caller the gateway's own uid.
const char *pol_config_own_address(const pol_config *cfg, int family, const uint8_t *addr, uint16_t port);

// pol_config_load_local_addresses fills |cfg|'s local_addresses with this host's interface
// addresses (getifaddrs). Returns 0 on failure.
int pol_config_load_local_addresses(pol_config *cfg);

// pol_config_resolver_equal says whether |a| and |b| have the same resolver settings.
int pol_config_resolver_equal(const pol_config *a, const pol_config *b);

void pol_via_free(pol_via *v);

// pol_config_acme is the `acme` block of identity |identity|, or NULL.
const pol_acme *pol_config_acme(const pol_config *cfg, const char *identity);
// pol_acme_due is when a certificate valid from |not_before| to |not_after| is to be
// renewed under |a|'s renew_before.
time_t pol_acme_due(const pol_acme *a, time_t not_before, time_t not_after);
const char *pol_acme_challenge_name(pol_acme_challenge c);
void pol_acme_free(pol_acme *a);

// pol_parse_socket_address parses "IPv4:port" or "[IPv6]:port" into |out|.
int pol_parse_socket_address(const char *s, struct sockaddr_storage *out, socklen_t *out_len);

// pol_rule_uses_identity says whether |id| is one of |r|'s identities.
int pol_rule_uses_identity(const pol_rule *r, const gw_identity *id);

// pol_action_name returns "deny", "direct" or "mtls".
const char *pol_action_name(pol_action a);

#endif
