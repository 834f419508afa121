// passwd: `mtlsgw passwd NAME`, a line for auth.users_file.
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

// ---- passwd ----

static const char passwd_usage[] =
    "usage: mtlsgw passwd NAME\n\n"
    "Reads a password (from the terminal without echo, or the first line of stdin) and prints\n"
    "the auth.users_file line for NAME: NAME:scrypt:N:r:p:SALT:HASH (scrypt with N=2^15, r=8,\n"
    "p=1: 32 MiB and tens of milliseconds per check, run off the gateway's event loop).\n"
    "Append it to the users file (mode 0600) and reload. Older NAME:sha256 lines still work;\n"
    "`mtlsgw check` warns about each.\n";

int gw_cmd_passwd(int argc, char **argv) {
    gw_cmd_opts o;
    gw_cmd_parse(argc, argv, 0, passwd_usage, &o);
    if (o.num_args != 1) {
        fprintf(stderr, "mtlsgw passwd: one NAME is required\n\n%s", passwd_usage);
        return 2;
    }
    char pass[512];
    size_t len = 0;
    if (isatty(STDIN_FILENO)) {
        char *p = getpass("password: ");
        if (p == NULL) {
            return 1;
        }
        len = strlen(p);
        if (len >= sizeof(pass)) {
            len = sizeof(pass) - 1;
        }
        memcpy(pass, p, len);
        OPENSSL_cleanse(p, strlen(p));
    } else {
        if (fgets(pass, sizeof(pass), stdin) == NULL) {
            fprintf(stderr, "mtlsgw passwd: no password on stdin\n");
            return 1;
        }
        len = strcspn(pass, "\r\n");
    }
    if (len == 0) {
        fprintf(stderr, "mtlsgw passwd: the password is empty\n");
        return 1;
    }
    char line[1024];
    int ok = pol_users_make_line(o.args[0], pass, len, line, sizeof(line));
    OPENSSL_cleanse(pass, sizeof(pass));
    if (!ok) {
        fprintf(stderr, "mtlsgw passwd: \"%s\" is not a valid user name (1 to 255 bytes, no spaces or ':')\n",
                o.args[0]);
        return 2;
    }
    fputs(line, stdout);
    return 0;
}
