// mtlsgw: the command line: usage, version, and dispatch to each command.
#include <ares.h>
#include <libconfig.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#include "gateway/cli/commands.h"
#include "gateway/tls/identity.h"
#include "gateway/upstream/upstream.h"
#include "resolver/resolver.h"

static const char usage[] =
    "usage: mtlsgw COMMAND [OPTIONS]   (mtlsgw COMMAND --help for each)\n"
    "\n"
    "Commands:\n"
    "  run -c FILE                          run the gateway in the foreground\n"
    "  check -c FILE                        validate the config and load every identity; exit 1 on errors\n"
    "  explain -c FILE HOST[:PORT] [--caller USER|UID] [--connect]\n"
    "                                       which rule decides HOST:PORT (default port 443); --connect\n"
    "                                       also resolves, connects and handshakes twice\n"
    "  identity list -c FILE [--json]       identities: subject, SANs, key, expiry, rules using them\n"
    "  identity check -c FILE [NAME] [--warn-days N] [--strict]\n"
    "                                       key, chain, expiry, trust, key file mode; exit 1 on problems\n"
    "  identity new NAME --subject \"/CN=..\" [--san ..] [--key TYPE] [--pkcs11 URI] --out DIR\n"
    "                                       new private key (mode 0600) and a CSR for your CA;\n"
    "                                       --pkcs11: the key generated on a PKCS#11 token\n"
    "  identity renew NAME -c FILE          renew an identity with an acme block now (through the\n"
    "                                       running gateway's admin endpoint when it answers)\n"
    "  passwd NAME                          a line for auth.users_file (password from stdin)\n"
    "  version                              versions of mtlsgw, BoringSSL, c-ares and libconfig\n"
    "\n"
    "Signals (run): SIGHUP reloads the config, SIGTERM/SIGINT drain and stop,\n"
    "SIGUSR1 reopens the access log. Changed identity files are reloaded without a signal.\n"
    "\n"
    "Clients: SOCKS5, SOCKS4a, HTTP CONNECT and http_proxy requests on a proxy listener\n"
    "(e.g. http_proxy=http://127.0.0.1:1080 curl http://orders.dc2.test/), or any TCP\n"
    "client on a forward listener.\n";

static int cmd_version(void) {
    printf("mtlsgw %s\n", MTLSGW_VERSION);
    printf("BoringSSL (API version %d, %s)\n", BORINGSSL_API_VERSION, OPENSSL_VERSION_TEXT);
    printf("c-ares %s\n", ares_version(NULL));
    printf("libconfig %d.%d.%d\n", LIBCONFIG_VER_MAJOR, LIBCONFIG_VER_MINOR, LIBCONFIG_VER_REVISION);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        return cmd_version();
    }
    if (!res_library_init()) {
        fprintf(stderr, "mtlsgw: c-ares initialisation failed\n");
        return 1;
    }
    int rc;
    if (strcmp(cmd, "run") == 0) {
        rc = gw_cmd_run(argc - 1, argv + 1);
    } else if (strcmp(cmd, "check") == 0) {
        rc = gw_cmd_check(argc - 1, argv + 1);
    } else if (strcmp(cmd, "explain") == 0) {
        rc = gw_cmd_explain(argc - 1, argv + 1);
    } else if (strcmp(cmd, "identity") == 0) {
        rc = gw_cmd_identity(argc - 1, argv + 1);
    } else if (strcmp(cmd, "passwd") == 0) {
        rc = gw_cmd_passwd(argc - 1, argv + 1);
    } else {
        fprintf(stderr, "mtlsgw: unknown command \"%s\"\n\n%s", cmd, usage);
        rc = 2;
    }
    res_library_cleanup();
    return rc;
}
