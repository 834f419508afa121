// commands: what the files of gateway/cli/ share: the option parser (options.c) and one
// entry point per command family.
#ifndef MTLSGW_COMMANDS_H
#define MTLSGW_COMMANDS_H

#include "policy/config.h"

// Options a command may take (bits for gw_cmd_parse's |allowed|).
enum {
    GW_OPT_JSON = 1u << 0,
    GW_OPT_STRICT = 1u << 1,
    GW_OPT_WARN_DAYS = 1u << 2,
    GW_OPT_CONNECT = 1u << 3,
    GW_OPT_SUBJECT = 1u << 4,
    GW_OPT_SAN = 1u << 5,
    GW_OPT_KEY = 1u << 6,
    GW_OPT_OUT = 1u << 7,
    GW_OPT_CONFIG = 1u << 8,
    GW_OPT_CALLER = 1u << 9,
    GW_OPT_PKCS11 = 1u << 10,
    GW_OPT_LISTENER = 1u << 11,
};

typedef struct {
    const char *config, *subject, *san, *key, *out, *caller, *pkcs11, *listener;
    int json, strict, connect, warn_days;
    char **args;  // the operands left after the options
    int num_args;
} gw_cmd_opts;

// gw_cmd_parse parses argv (argv[0] is the command's name) into |o|. --help prints
// |usage| and exits 0; an option outside |allowed| or a missing required -c exits 2.
void gw_cmd_parse(int argc, char **argv, unsigned allowed, const char *usage, gw_cmd_opts *o);

// gw_load_or_report loads |path| printing every problem (and warning) to stderr.
pol_config *gw_load_or_report(const char *path);

// The commands, each given argv from its own name on; each returns the exit status.
int gw_cmd_run(int argc, char **argv);       // run.c
int gw_cmd_check(int argc, char **argv);     // explain.c
int gw_cmd_explain(int argc, char **argv);   // explain.c
int gw_cmd_identity(int argc, char **argv);  // identity.c
int gw_cmd_passwd(int argc, char **argv);    // passwd.c
// gw_identity_renew renews ACME identity |name| now (renew.c): exit status.
int gw_identity_renew(const pol_config *cfg, const char *name);

// gw_explain_connect resolves, connects and handshakes twice to the upstream of rule |r|
// for |host|:|port| and prints what it saw. Returns the exit status (0: the server
// accepted our certificate).
int gw_explain_connect(const pol_config *cfg, const pol_rule *r, const char *host, uint16_t port);

#endif
