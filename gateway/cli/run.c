// run: `mtlsgw run`: its options, then the supervisor (gateway/supervisor.c) runs the
// gateway until it stops.
#include <stdio.h>

#include "gateway/cli/commands.h"
#include "gateway/supervisor.h"
#include "policy/config.h"

static const char run_usage[] =
    "usage: mtlsgw run -c FILE\n\n"
    "Runs the gateway in the foreground (systemd Type=simple). SIGHUP reloads the config,\n"
    "identities, users and resolver settings (a bad config is refused and the running one\n"
    "kept; listen addresses, workers, user and admin.address need a restart), SIGTERM/SIGINT stop\n"
    "accepting and drain tunnels for up to limits.drain_timeout_s, SIGUSR1 reopens the access\n"
    "log. Identity files (certificate, key, trust, CRL) are polled every second and reloaded\n"
    "once a change has settled.\n\n"
    "Started as root, it switches to the config's `user` once the listeners are bound. With\n"
    "auth.users_file set, clients must authenticate (SOCKS5 username/password or\n"
    "Proxy-Authorization: Basic; lines made by `mtlsgw passwd NAME`), checked only for clients\n"
    "in `allow`. Addresses in deny_addresses (default: 0.0.0.0/8, ::/128, 169.254.0.0/16,\n"
    "fe80::/10, 127.0.0.0/8, ::1/128; a rule's upstream IP literal passes the default list)\n"
    "are never connected to, whatever name resolves to them, nor are the gateway's own\n"
    "listeners and admin endpoint.\n\n"
    "Rules with `caller` (user:NAME, uid:N, group:NAME, gid:N) serve only those local users:\n"
    "the owner of a TCP client's socket on this host (NETLINK_SOCK_DIAG), or a UNIX-socket\n"
    "client's peer credentials (listen address \"unix:PATH\", with mode, owner, group). Remote\n"
    "clients have no caller, nor does the gateway's own uid (started as root, caller rules\n"
    "need `user`). The access log says caller=UID.\n\n"
    "A listener with transparent = true serves connections a netfilter REDIRECT/DNAT sent to\n"
    "it (the original destination; sniff = [\"http\"] routes by the Host of an HTTP head);\n"
    "upstream_mark sets SO_MARK on upstream sockets (needs CAP_NET_ADMIN) so that the\n"
    "redirect can leave them alone.\n\n"
    "An identity whose key is a PKCS#11 URI (key = \"pkcs11:token=...;object=...\") gets a\n"
    "signer process (mtlsgw-pkcs11, running as `user`) that loads pkcs11_module and logs in\n"
    "with the PIN in key_password_file; handshakes wait for its signatures without blocking\n"
    "a worker, at most limits.key_timeout_ms (then key_unavailable, HTTP 503, and the\n"
    "signer is restarted). A signer that dies is started again for the next handshake.\n";

int gw_cmd_run(int argc, char **argv) {
    gw_cmd_opts o;
    gw_cmd_parse(argc, argv, GW_OPT_CONFIG, run_usage, &o);
    if (o.num_args > 0) {
        fprintf(stderr, "mtlsgw run: unexpected argument \"%s\"\n\n%s", o.args[0], run_usage);
        return 2;
    }
    const char *path = o.config;
    gw_supervisor_prepare();  // before loading: a token's signer is a child whose end is waited for
    pol_config *cfg = gw_load_or_report(path);
    if (cfg == NULL) {
        return 1;
    }
    return gw_supervisor_run(path, cfg);
}
