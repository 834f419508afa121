#include "gateway/commands.h"

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

#include "gateway/loop.h"
#include "gateway/netutil.h"
#include "gateway/report.h"
#include "gateway/sesscache.h"
#include "gateway/upstream.h"
#include "policy/identity.h"
#include "policy/users.h"
#include "resolver/resolver.h"

// ---- options ----

void gw_cmd_parse(int argc, char **argv, unsigned allowed, const char *usage, gw_cmd_opts *o) {
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},   {"help", no_argument, NULL, 'h'},
        {"json", no_argument, NULL, 'j'},           {"strict", no_argument, NULL, 's'},
        {"warn-days", required_argument, NULL, 'w'}, {"connect", no_argument, NULL, 'C'},
        {"subject", required_argument, NULL, 'S'},  {"san", required_argument, NULL, 'A'},
        {"key", required_argument, NULL, 'k'},      {"out", required_argument, NULL, 'o'},
        {NULL, 0, NULL, 0}};
    memset(o, 0, sizeof(*o));
    o->warn_days = 14;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        unsigned bit = 0;
        switch (c) {
            case 'h': fputs(usage, stdout); exit(0);
            case 'c': bit = GW_OPT_CONFIG, o->config = optarg; break;
            case 'j': bit = GW_OPT_JSON, o->json = 1; break;
            case 's': bit = GW_OPT_STRICT, o->strict = 1; break;
            case 'C': bit = GW_OPT_CONNECT, o->connect = 1; break;
            case 'S': bit = GW_OPT_SUBJECT, o->subject = optarg; break;
            case 'A': bit = GW_OPT_SAN, o->san = optarg; break;
            case 'k': bit = GW_OPT_KEY, o->key = optarg; break;
            case 'o': bit = GW_OPT_OUT, o->out = optarg; break;
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
            default: fputs(usage, stderr); exit(2);
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

// ---- identity list / check ----

static void rules_of(const pol_config *cfg, const pol_identity *id, char *out, size_t cap) {
    size_t n = 0;
    out[0] = '\0';
    for (size_t r = 0; r < cfg->num_rules; r++) {
        if (cfg->rules[r].identity == id && n + strlen(cfg->rules[r].where) + 3 < cap) {
            n += (size_t)snprintf(out + n, cap - n, "%s%s", n ? ", " : "", cfg->rules[r].where);
        }
    }
    if (n == 0) {
        snprintf(out, cap, "none (no rule uses it)");
    }
}

static int identity_list(const pol_config *cfg, const gw_cmd_opts *o) {
    time_t now = time(NULL);
    if (o->json) {
        gw_strbuf b = {0};
        gw_identities_json(&b, cfg, now, o->warn_days);
        fputs(b.p ? b.p : "[]\n", stdout);
        free(b.p);
        return 0;
    }
    if (cfg->num_identities == 0) {
        printf("no identities in %s\n", cfg->path);
    }
    for (size_t i = 0; i < cfg->num_identities; i++) {
        const pol_identity *id = cfg->identities[i];
        char sans[1024], na[40], rules[1024];
        gw_identity_sans(id, sans, sizeof(sans));
        gw_format_utc(id->not_after, na, sizeof(na));
        rules_of(cfg, id, rules, sizeof(rules));
        printf("%s%s  (%s)\n", i ? "\n" : "", id->spec.name, id->spec.where);
        printf("  subject    %s\n  issuer     %s\n  sans       %s\n  key        %s\n  serial     %s\n",
               id->subject, id->issuer, sans[0] ? sans : "-", id->key_type, id->serial);
        printf("  not after  %s  (%.1f days left)\n  status     %s\n  rules      %s\n", na,
               (double)(id->not_after - now) / 86400.0, gw_identity_status(id, now, o->warn_days), rules);
    }
    return 0;
}

// chain_problem checks that each certificate sent after the leaf issued the one before.
static int chain_problem(const pol_identity *id, char *out, size_t cap) {
    STACK_OF(X509) *chain = NULL;
    if (!SSL_CTX_get0_chain_certs(id->ctx, &chain) || chain == NULL) {
        return 0;
    }
    const X509 *prev = id->leaf;
    for (size_t i = 0; i < sk_X509_num(chain); i++) {
        X509 *c = sk_X509_value(chain, i);
        if (X509_NAME_cmp(X509_get_issuer_name(prev), X509_get_subject_name(c)) != 0) {
            char want[256], got[256];
            X509_NAME_oneline(X509_get_issuer_name(prev), want, sizeof(want));
            X509_NAME_oneline(X509_get_subject_name(c), got, sizeof(got));
            snprintf(out, cap, "chain out of order: certificate %zu should be %s, is %s", i + 1, want, got);
            return 1;
        }
        prev = c;
    }
    return 0;
}

// print_problem prints one finding of pol_identity_file_problems: a secret readable by
// others is a problem, a CRL that will fail handshakes a warning. |arg| counts warnings.
static void print_problem(void *arg, pol_problem_kind kind, const char *msg) {
    printf("  %s  %s\n", kind == POL_PROBLEM_CRL ? "WARNING" : "PROBLEM", msg);
    if (kind == POL_PROBLEM_CRL) {
        (*(int *)arg)++;
    }
}

static int identity_check(const pol_config *cfg, const gw_cmd_opts *o, const char *only) {
    time_t now = time(NULL);
    int problems = 0, warnings = 0, found = 0;
    for (size_t i = 0; i < cfg->num_identities; i++) {
        const pol_identity *id = cfg->identities[i];
        if (only != NULL && strcmp(only, id->spec.name) != 0) {
            continue;
        }
        found = 1;
        char na[40], msg[600];
        gw_format_utc(id->not_after, na, sizeof(na));
        double days = (double)(id->not_after - now) / 86400.0;
        const char *status = gw_identity_status(id, now, o->warn_days);
        int p = 0, w = 0;
        printf("%s (%s)\n", id->spec.name, id->spec.where);
        printf("  ok       key matches certificate (%s)\n", id->key_type);
        if (strcmp(status, "expired") == 0) {
            printf("  PROBLEM  certificate expired on %s\n", na);
            p++;
        } else if (strcmp(status, "not_yet_valid") == 0) {
            char nb[40];
            gw_format_utc(id->not_before, nb, sizeof(nb));
            printf("  PROBLEM  certificate not valid before %s\n", nb);
            p++;
        } else if (strcmp(status, "expiring") == 0) {
            printf("  WARNING  certificate expires %s: %.1f days left (warn below %d days, or a third of a short lifetime)\n",
                   na, days, o->warn_days);
            w++;
        } else {
            printf("  ok       valid until %s (%.1f days left)\n", na, days);
        }
        if (chain_problem(id, msg, sizeof(msg))) {
            printf("  PROBLEM  %s\n", msg);
            p++;
        } else {
            printf("  ok       chain in order\n");
        }
        printf("  ok       trust %s loaded\n", id->spec.trust);
        if (id->spec.crl != NULL) {
            char nu[40];
            gw_format_utc(id->crl_next_update, nu, sizeof(nu));
            printf("  ok       crl %s loaded (checked for every CA in the chain)%s%s\n", id->spec.crl,
                   id->crl_next_update ? ", next update " : "", id->crl_next_update ? nu : "");
        }
        const char *keyfile = id->spec.key ? id->spec.key : id->spec.pkcs12;
        int crl_warnings = 0;
        int reported = (int)pol_identity_file_problems(id, now, print_problem, &crl_warnings);
        if (reported == crl_warnings && keyfile != NULL) {
            printf("  ok       %s and its password file are not readable by group or others\n", keyfile);
        }
        p += reported - crl_warnings;
        w += crl_warnings;
        problems += p;
        warnings += w;
    }
    if (only != NULL && !found) {
        fprintf(stderr, "mtlsgw identity check: no identity named \"%s\" in %s\n", only, cfg->path);
        return 2;
    }
    printf("%d problem%s, %d warning%s\n", problems, problems == 1 ? "" : "s", warnings, warnings == 1 ? "" : "s");
    return problems > 0 || (o->strict && warnings > 0) ? 1 : 0;
}

// ---- identity new ----

static EVP_PKEY *generate_key(const char *type) {
    EVP_PKEY *pkey = EVP_PKEY_new();
    if (pkey == NULL) {
        return NULL;
    }
    if (strcmp(type, "ec-p256") == 0 || strcmp(type, "ec-p384") == 0) {
        EC_KEY *ec = EC_KEY_new_by_curve_name(strcmp(type, "ec-p256") == 0 ? NID_X9_62_prime256v1 : NID_secp384r1);
        if (ec != NULL && EC_KEY_generate_key(ec) && EVP_PKEY_assign_EC_KEY(pkey, ec)) {
            return pkey;
        }
        EC_KEY_free(ec);
    } else if (strcmp(type, "rsa-2048") == 0 || strcmp(type, "rsa-3072") == 0) {
        RSA *rsa = RSA_new();
        BIGNUM *e = BN_new();
        int ok = rsa && e && BN_set_word(e, RSA_F4) &&
                 RSA_generate_key_ex(rsa, strcmp(type, "rsa-2048") == 0 ? 2048 : 3072, e, NULL) &&
                 EVP_PKEY_assign_RSA(pkey, rsa);
        BN_free(e);
        if (ok) {
            return pkey;
        }
        RSA_free(rsa);
    } else if (strcmp(type, "ed25519") == 0) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
        EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
        if (kctx != NULL && EVP_PKEY_keygen_init(kctx) && EVP_PKEY_keygen(kctx, &pkey)) {
            EVP_PKEY_CTX_free(kctx);
            return pkey;
        }
        EVP_PKEY_CTX_free(kctx);
        return NULL;
    }
    EVP_PKEY_free(pkey);
    return NULL;
}

// parse_subject turns "/CN=ops/O=Example" into |name|.
static int parse_subject(const char *s, X509_NAME *name, char *err, size_t err_len) {
    if (s[0] != '/') {
        snprintf(err, err_len, "--subject must look like \"/CN=name/O=org\", not \"%s\"", s);
        return 0;
    }
    char *copy = strdup(s + 1);
    int ok = copy != NULL, any = 0;
    for (char *part = copy, *next; ok && part != NULL && *part; part = next) {
        next = strchr(part, '/');
        if (next != NULL) {
            *next++ = '\0';
        }
        char *eq = strchr(part, '=');
        if (eq == NULL || eq == part || eq[1] == '\0') {
            snprintf(err, err_len, "--subject: \"%s\" is not FIELD=value", part);
            ok = 0;
            break;
        }
        *eq = '\0';
        if (!X509_NAME_add_entry_by_txt(name, part, MBSTRING_UTF8, (const unsigned char *)eq + 1, -1, -1, 0)) {
            snprintf(err, err_len, "--subject: unknown field \"%s\" (use CN, O, OU, C, ST, L, ...)", part);
            ok = 0;
            break;
        }
        any = 1;
    }
    free(copy);
    if (ok && !any) {
        snprintf(err, err_len, "--subject is empty");
        ok = 0;
    }
    ERR_clear_error();
    return ok;
}

static FILE *create_file(const char *path, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        fprintf(stderr, "mtlsgw identity new: cannot create %s: %s%s\n", path, strerror(errno),
                errno == EEXIST ? " (refusing to overwrite)" : "");
        return NULL;
    }
    fchmod(fd, mode);
    return fdopen(fd, "w");
}

static int identity_new(const gw_cmd_opts *o, const char *name) {
    const char *key_type = o->key ? o->key : "ec-p256";
    if (o->subject == NULL || o->out == NULL) {
        fprintf(stderr, "mtlsgw identity new: --subject and --out are required\n");
        return 2;
    }
    for (const char *p = name; *p; p++) {
        if (!(*p == '-' || *p == '_' || *p == '.' || (*p >= '0' && *p <= '9') || ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z'))) {
            fprintf(stderr, "mtlsgw identity new: NAME may hold letters, digits, '-', '_' and '.', not \"%s\"\n", name);
            return 2;
        }
    }
    char err[300];
    X509_REQ *req = X509_REQ_new();
    X509_NAME *subject = X509_NAME_new();
    EVP_PKEY *pkey = NULL;
    int rc = 1;
    if (req == NULL || subject == NULL) {
        goto out;
    }
    if (!parse_subject(o->subject, subject, err, sizeof(err))) {
        fprintf(stderr, "mtlsgw identity new: %s\n", err);
        rc = 2;
        goto out;
    }
    pkey = generate_key(key_type);
    if (pkey == NULL) {
        fprintf(stderr, "mtlsgw identity new: --key must be ec-p256, ec-p384, rsa-2048, rsa-3072 or ed25519, not \"%s\"\n",
                key_type);
        rc = 2;
        goto out;
    }
    if (!X509_REQ_set_version(req, 0) || !X509_REQ_set_subject_name(req, subject) || !X509_REQ_set_pubkey(req, pkey)) {
        goto out;
    }
    if (o->san != NULL) {
        X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, NULL, NID_subject_alt_name, o->san);
        if (ext == NULL) {
            fprintf(stderr, "mtlsgw identity new: --san must look like \"DNS:ops.example.com,IP:10.0.0.1\", not \"%s\"\n",
                    o->san);
            rc = 2;
            goto out;
        }
        STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
        int ok = exts != NULL && sk_X509_EXTENSION_push(exts, ext);
        if (!ok) {
            X509_EXTENSION_free(ext);
        }
        ok = ok && X509_REQ_add_extensions(req, exts);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
        if (!ok) {
            goto out;
        }
    }
    if (!X509_REQ_sign(req, pkey, EVP_PKEY_id(pkey) == EVP_PKEY_ED25519 ? NULL : EVP_sha256())) {
        goto out;
    }
    char key_path[4096], csr_path[4096];
    snprintf(key_path, sizeof(key_path), "%s/%s.key", o->out, name);
    snprintf(csr_path, sizeof(csr_path), "%s/%s.csr", o->out, name);
    FILE *kf = create_file(key_path, 0600);
    if (kf == NULL) {
        goto out;
    }
    int ok = PEM_write_PrivateKey(kf, pkey, NULL, NULL, 0, NULL, NULL);
    ok = fclose(kf) == 0 && ok;
    FILE *cf = ok ? create_file(csr_path, 0644) : NULL;
    if (cf == NULL) {
        unlink(key_path);
        goto out;
    }
    ok = PEM_write_X509_REQ(cf, req);
    ok = fclose(cf) == 0 && ok;
    if (!ok) {
        fprintf(stderr, "mtlsgw identity new: writing %s or %s failed\n", key_path, csr_path);
        unlink(key_path);
        unlink(csr_path);
        goto out;
    }
    printf("private key  %s  (%s, mode 0600: it never leaves this machine)\n", key_path, key_type);
    printf("request      %s\n\n", csr_path);
    printf("Next steps:\n"
           "  1. Send %s to the CA that the remote side trusts (its ssl_client_certificate).\n"
           "     With the openssl CA of the README, for example:\n"
           "       openssl x509 -req -in %s -CA client-ca.crt -CAkey client-ca.key \\\n"
           "         -days 30 -copy_extensions copy -out %s/%s.crt\n"
           "  2. Add the identity to the config and point a rule at it:\n"
           "       { name = \"%s\"; certificate = \"%s/%s.crt\"; key = \"%s\"; trust = \"server-ca.crt\"; }\n"
           "  3. mtlsgw identity check -c FILE %s, then reload (SIGHUP). A rotated pair\n"
           "     written over the same files is picked up without a signal.\n",
           csr_path, csr_path, o->out, name, name, o->out, name, key_path, name);
    rc = 0;
out:
    if (rc == 1) {
        unsigned long e = ERR_peek_error();
        fprintf(stderr, "mtlsgw identity new: failed%s%s\n", e ? ": " : "", e ? ERR_reason_error_string(e) : "");
    }
    ERR_clear_error();
    EVP_PKEY_free(pkey);
    X509_NAME_free(subject);
    X509_REQ_free(req);
    return rc;
}

static const char identity_usage[] =
    "usage: mtlsgw identity list -c FILE [--json] [--warn-days N]\n"
    "       mtlsgw identity check -c FILE [NAME] [--warn-days N] [--strict]\n"
    "       mtlsgw identity new NAME --subject \"/CN=...\" [--san DNS:a,IP:b]\n"
    "                            [--key ec-p256|ec-p384|rsa-2048|rsa-3072|ed25519] --out DIR\n"
    "\n"
    "list   every identity: subject, issuer, SANs, key type, serial, expiry, status and the\n"
    "       rules that use it (--json: one JSON array, as the admin /identities page)\n"
    "check  key matches certificate, chain order, expiry, trust, key file permissions;\n"
    "       exit 1 on a problem (with --strict also on a warning: fewer than --warn-days\n"
    "       days left, default 14, or under a third of a short certificate's lifetime)\n"
    "new    a new private key (mode 0600) and a certificate signing request for your CA\n";

int gw_cmd_identity(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(identity_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    gw_cmd_opts o;
    if (strcmp(sub, "new") == 0) {
        gw_cmd_parse(argc - 1, argv + 1, GW_OPT_SUBJECT | GW_OPT_SAN | GW_OPT_KEY | GW_OPT_OUT, identity_usage, &o);
        if (o.num_args != 1) {
            fprintf(stderr, "mtlsgw identity new: exactly one NAME is required\n\n%s", identity_usage);
            return 2;
        }
        return identity_new(&o, o.args[0]);
    }
    if (strcmp(sub, "list") != 0 && strcmp(sub, "check") != 0) {
        fprintf(stderr, "mtlsgw identity: unknown subcommand \"%s\"\n\n%s", sub, identity_usage);
        return 2;
    }
    int list = strcmp(sub, "list") == 0;
    gw_cmd_parse(argc - 1, argv + 1,
                 GW_OPT_CONFIG | GW_OPT_WARN_DAYS | (list ? GW_OPT_JSON : GW_OPT_STRICT), identity_usage, &o);
    if (o.num_args > (list ? 0 : 1)) {
        fprintf(stderr, "mtlsgw identity %s: unexpected argument \"%s\"\n\n%s", sub, o.args[list ? 0 : 1], identity_usage);
        return 2;
    }
    pol_config *cfg = gw_load_or_report(o.config);
    if (cfg == NULL) {
        return 1;
    }
    int rc = list ? identity_list(cfg, &o) : identity_check(cfg, &o, o.num_args ? o.args[0] : NULL);
    pol_config_unref(cfg);
    return rc;
}

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
        fprintf(stderr, "mtlsgw passwd: \"%s\" is not a valid user name (1 to 255 bytes, no spaces or ':')\n", o.args[0]);
        return 2;
    }
    fputs(line, stdout);
    return 0;
}

// ---- explain --connect ----

typedef struct {
    gw_loop *loop;
    int done;
    res_status status;
    res_addr addrs[RES_MAX_ADDRS];
    size_t n;
} lookup;

static void on_lookup(void *arg, res_status status, const res_addr *addrs, size_t n) {
    lookup *l = arg;
    l->done = 1;
    l->status = status;
    l->n = n < RES_MAX_ADDRS ? n : RES_MAX_ADDRS;
    memcpy(l->addrs, addrs, l->n * sizeof(*addrs));
    gw_loop_stop(l->loop);
}

static void on_lookup_timeout(gw_loop *loop, gw_timer *t) {
    gw_loop_stop(loop);
}

static double elapsed_ms(const struct timespec *since) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - since->tv_sec) * 1e3 + (double)(now.tv_nsec - since->tv_nsec) / 1e6;
}

// wait_fd waits until |fd| is readable (|events| POLLIN) or writable; 0 on timeout.
static int wait_fd(int fd, short events, int timeout_ms) {
    struct pollfd p = {fd, events, 0};
    int r;
    do {
        r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    return r > 0;
}

// handshake runs one connection to |sa| to its end: connect, handshake, the wait for the
// server's verdict on our certificate. Returns 1 if the server accepted us.
static int handshake(const pol_config *cfg, const pol_rule *r, const struct sockaddr *sa, socklen_t sl,
                     const char *sni, const char *key, int print_details) {
    gw_upstream u;
    gw_upstream_init(&u);
    char reason[700];
    gw_err err = gw_upstream_connect(&u, sa, sl, reason, sizeof(reason));
    if (err == GW_ERR_NONE && !wait_fd(u.fd, POLLOUT, cfg->limits.connect_timeout_ms)) {
        snprintf(reason, sizeof(reason), "connect timed out after %d ms", cfg->limits.connect_timeout_ms);
        err = GW_ERR_CONNECT_TIMEOUT;
    }
    if (err == GW_ERR_NONE) {
        err = gw_upstream_connect_result(&u, reason, sizeof(reason));
    }
    if (err != GW_ERR_NONE) {
        printf("connect      FAILED: %s\n", reason);
        gw_upstream_close(&u);
        return 0;
    }
    if (r->action != POL_ACTION_MTLS) {
        printf("connect      ok (plain TCP: action %s)\n", pol_action_name(r->action));
        gw_upstream_close(&u);
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!gw_upstream_tls_begin(&u, r->identity, sni, key, NULL)) {
        printf("tls          FAILED: cannot create a TLS connection\n");
        gw_upstream_close(&u);
        return 0;
    }
    gw_step st;
    while ((st = gw_upstream_tls_step(&u, &err, reason, sizeof(reason))) == GW_STEP_WANT_READ ||
           st == GW_STEP_WANT_WRITE) {
        if (!wait_fd(u.fd, st == GW_STEP_WANT_READ ? POLLIN : POLLOUT, cfg->limits.handshake_timeout_ms)) {
            st = GW_STEP_FAILED;
            snprintf(reason, sizeof(reason), "TLS handshake timed out after %d ms", cfg->limits.handshake_timeout_ms);
            break;
        }
    }
    double ms = elapsed_ms(&t0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (st == GW_STEP_FAILED) {
        printf("tls          FAILED after %.1f ms: %s\n", ms, reason);
        gw_upstream_close(&u);
        return 0;
    }
    SSL *ssl = u.ssl;
    int resumed = SSL_session_reused(ssl);
    if (print_details) {
        printf("tls          %s  %s  (%s handshake, %.1f ms)\n", SSL_get_version(ssl),
               SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)), resumed ? "resumed" : "full", ms);
        STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
        printf("server chain (verified: chain to the trust of \"%s\", name \"%s\"%s%s)\n", r->identity->spec.name, sni,
               r->identity->spec.crl ? ", CRL" : "", r->identity->spec.num_pins ? ", pins" : "");
        for (size_t i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
            X509 *c = sk_X509_value(chain, i);
            char subj[256], iss[256], na[40];
            X509_NAME_oneline(X509_get_subject_name(c), subj, sizeof(subj));
            X509_NAME_oneline(X509_get_issuer_name(c), iss, sizeof(iss));
            int days = 0, secs = 0;
            ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(c));
            gw_format_utc(time(NULL) + (time_t)days * 86400 + secs, na, sizeof(na));
            printf("  %zu  %s\n     issuer %s, not after %s\n", i, subj, iss, na);
        }
    } else {
        printf("tls          %s  (%s handshake, %.1f ms)\n", SSL_get_version(ssl), resumed ? "resumed" : "full", ms);
    }
    int accepted = 1;
    const char *why = "";
    if (!u.cert_requested && !resumed) {
        why = "the server did not ask for a client certificate";
    } else if (resumed) {
        why = "resumed: the server accepted this identity's session";
    } else if (SSL_version(ssl) < TLS1_3_VERSION) {
        why = "TLS 1.2: the server accepted it during the handshake";
    } else {
        // TLS 1.3: the verdict comes after the handshake, as in the gateway's confirm window.
        int limit = cfg->limits.confirm_ms > 0 ? cfg->limits.confirm_ms : 1000, graced = 0;
        why = "no answer within confirm_ms: nothing says it was rejected";
        for (;;) {
            st = gw_upstream_confirm_step(&u, &err, reason, sizeof(reason));
            if (st == GW_STEP_DONE) {
                why = "the server sent data";
                break;
            }
            if (st == GW_STEP_FAILED) {
                accepted = 0;
                why = reason;
                break;
            }
            int elapsed = (int)elapsed_ms(&t1);
            if (u.ticket_seen && !graced) {
                graced = 1;
                int grace = elapsed + (cfg->limits.confirm_ms > 0 ? cfg->limits.confirm_ms / 4 : 250);
                limit = grace < limit ? grace : limit;
                why = "the server sent a session ticket and did not close (an HTTP server may still answer 400 to requests)";
            }
            if (elapsed >= limit) {
                break;
            }
            wait_fd(u.fd, POLLIN, limit - elapsed);
        }
    }
    printf("client cert  %s: %s\n", accepted ? "accepted" : "REJECTED", why);
    if (accepted) {
        gw_upstream_confirm(&u);  // its sessions go to the cache, for the second handshake
    }
    gw_upstream_close(&u);
    return accepted;
}

int gw_explain_connect(const pol_config *cfg, const pol_rule *r, const char *host, uint16_t port) {
    const char *connect_host = r->upstream_host ? r->upstream_host : host;
    uint16_t connect_port = r->upstream_port ? r->upstream_port : port;
    const char *sni = r->server_name ? r->server_name : connect_host;
    char err[300];
    gw_loop *loop = gw_loop_new();
    res_resolver *res = loop ? res_resolver_new(loop, cfg, err, sizeof(err)) : NULL;
    if (res == NULL) {
        printf("resolve      FAILED: %s\n", loop ? err : strerror(errno));
        gw_loop_free(loop);
        return 1;
    }
    lookup l = {.loop = loop};
    gw_timer timer;
    gw_timer_init(&timer, on_lookup_timeout, NULL);
    res_query *q = res_resolve(res, connect_host, on_lookup, &l);
    if (!l.done) {
        gw_timer_start(loop, &timer, (uint64_t)cfg->resolver.timeout_ms * (uint64_t)cfg->resolver.tries * 2 + 1000);
        gw_loop_run(loop);
        gw_timer_stop(loop, &timer);
    }
    if (!l.done) {
        res_query_detach(q);
    }
    res_resolver_free(res);
    gw_loop_free(loop);
    if (!l.done || l.status != RES_OK) {
        printf("resolve      FAILED: %s: %s\n", connect_host, l.done ? res_status_text(l.status) : "timed out");
        return 1;
    }
    char list[600] = "";
    size_t n = 0;
    struct sockaddr_storage first;
    socklen_t first_len = 0;
    for (size_t i = 0; i < l.n; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = gw_sockaddr_from(&ss, l.addrs[i].family, l.addrs[i].addr, connect_port);
        char a[120];
        gw_format_addr((struct sockaddr *)&ss, a, sizeof(a));
        // The gateway never connects to an address in deny_addresses: neither does explain.
        const pol_cidr *denied = pol_config_denied_address(cfg, l.addrs[i].family, l.addrs[i].addr);
        if (denied != NULL) {
            size_t al = strlen(a);
            snprintf(a + al, sizeof(a) - al, " (in deny_addresses: %s)", denied->text);
        } else if (first_len == 0) {
            first = ss;
            first_len = sl;
        }
        if (n + strlen(a) + 3 < sizeof(list)) {
            n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", i ? ", " : "", a);
        }
    }
    printf("resolve      %s -> %s\n", connect_host, list);
    if (first_len == 0) {
        printf("result       FAILED: every address is in deny_addresses\n");
        return 1;
    }
    char key[600];
    snprintf(key, sizeof(key), "explain|%s|%u|%s", connect_host, connect_port, sni);
    printf("-- first connection\n");
    int ok = handshake(cfg, r, (struct sockaddr *)&first, first_len, sni, key, 1);
    if (ok && r->action == POL_ACTION_MTLS) {
        printf("-- second connection (session resumption)\n");
        ok = handshake(cfg, r, (struct sockaddr *)&first, first_len, sni, key, 0);
    }
    gw_sesscache_clear();
    printf("result       %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
