// options: the option parser every command shares, and loading a config with its problems
// printed.
#include "gateway/cli/commands.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/bn.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gateway/base/loop.h"
#include "gateway/base/netutil.h"
#include "gateway/report.h"
#include "gateway/tls/identity.h"
#include "gateway/upstream/sesscache.h"
#include "gateway/upstream/upstream.h"
#include "policy/users.h"
#include "resolver/resolver.h"

// ---- options ----

void gw_cmd_parse(int argc, char **argv, unsigned allowed, const char *usage, gw_cmd_opts *o) {
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"strict", no_argument, NULL, 's'},
                                         {"warn-days", required_argument, NULL, 'w'},
                                         {"connect", no_argument, NULL, 'C'},
                                         {"subject", required_argument, NULL, 'S'},
                                         {"san", required_argument, NULL, 'A'},
                                         {"key", required_argument, NULL, 'k'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"caller", required_argument, NULL, 'u'},
                                         {"pkcs11", required_argument, NULL, 'P'},
                                         {"listener", required_argument, NULL, 'L'},
                                         {NULL, 0, NULL, 0}};
    memset(o, 0, sizeof(*o));
    o->warn_days = 14;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        unsigned bit = 0;
        switch (c) {
            case 'h':
                fputs(usage, stdout);
                exit(0);
            case 'c':
                bit = GW_OPT_CONFIG, o->config = optarg;
                break;
            case 'j':
                bit = GW_OPT_JSON, o->json = 1;
                break;
            case 's':
                bit = GW_OPT_STRICT, o->strict = 1;
                break;
            case 'C':
                bit = GW_OPT_CONNECT, o->connect = 1;
                break;
            case 'S':
                bit = GW_OPT_SUBJECT, o->subject = optarg;
                break;
            case 'A':
                bit = GW_OPT_SAN, o->san = optarg;
                break;
            case 'k':
                bit = GW_OPT_KEY, o->key = optarg;
                break;
            case 'o':
                bit = GW_OPT_OUT, o->out = optarg;
                break;
            case 'u':
                bit = GW_OPT_CALLER, o->caller = optarg;
                break;
            case 'P':
                bit = GW_OPT_PKCS11, o->pkcs11 = optarg;
                break;
            case 'L':
                bit = GW_OPT_LISTENER, o->listener = optarg;
                break;
            case 'w': {
                char *end;
                long v = strtol(optarg, &end, 10);
                if (*end != '\0' || v < 0 || v > 3650) {
                    fprintf(stderr, "mtlsgw %s: --warn-days takes a number of days from 0 to 3650\n", argv[0]);
                    exit(2);
                }
                bit = GW_OPT_WARN_DAYS, o->warn_days = (int)v;
                break;
            }
            default:
                fputs(usage, stderr);
                exit(2);
        }
        if (!(allowed & bit)) {
            fprintf(stderr, "mtlsgw %s: option %s is not used here\n\n%s", argv[0], argv[optind - 1], usage);
            exit(2);
        }
    }
    if ((allowed & GW_OPT_CONFIG) && o->config == NULL) {
        fprintf(stderr, "mtlsgw %s: -c FILE is required\n\n%s", argv[0], usage);
        exit(2);
    }
    o->args = argv + optind;
    o->num_args = argc - optind;
}

pol_config *gw_load_or_report(const char *path) {
    pol_errors errs;
    pol_errors_init(&errs);
    pol_config *cfg = pol_config_load(path, &errs);
    for (size_t i = 0; i < errs.len; i++) {
        fprintf(stderr, "%s\n", errs.lines[i]);
    }
    pol_errors_free(&errs);
    return cfg;
}
