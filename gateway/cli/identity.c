// identity: `mtlsgw identity list | check | new`.
#include "gateway/cli/commands.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/bn.h>
#include <openssl/bytestring.h>
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

#include "gateway/acme/csr.h"
#include "gateway/acme/token.h"
#include "gateway/base/loop.h"
#include "gateway/base/netutil.h"
#include "gateway/base/xalloc.h"
#include "gateway/report.h"
#include "gateway/tls/identity.h"
#include "gateway/upstream/sesscache.h"
#include "gateway/upstream/upstream.h"
#include "policy/users.h"
#include "resolver/resolver.h"

// ---- identity list / check ----

static void rules_of(const pol_config *cfg, const gw_identity *id, char *out, size_t cap) {
    size_t n = 0;
    out[0] = '\0';
    for (size_t r = 0; r < cfg->num_rules; r++) {
        const pol_rule *rule = &cfg->rules[r];
        if (!pol_rule_uses_identity(rule, id)) {
            continue;
        }
        int w = snprintf(out + n, cap - n, "%s%s%s%s%s%s%s%s%s%s%s", n ? ", " : "", rule->where,
                         rule->callers ? " (caller " : "", rule->callers ? rule->callers->text : "",
                         rule->callers ? ")" : "", rule->listeners_text ? " (listener " : "",
                         rule->listeners_text ? rule->listeners_text : "", rule->listeners_text ? ")" : "",
                         rule->server_uri ? " (server_uri " : "", rule->server_uri ? rule->server_uri : "",
                         rule->server_uri ? ")" : "");
        if (w < 0 || (size_t)w >= cap - n) {
            out[n] = '\0';
            break;
        }
        n += (size_t)w;
    }
    if (n == 0) {
        snprintf(out, cap, "none (no rule uses it)");
    }
}

// print_acme prints the ACME renewal state of |id| (nothing for an identity without acme).
static void print_acme(const pol_config *cfg, const gw_identity *id, time_t now) {
    gw_acme_view v;
    gw_acme_view_of(cfg, id, &v);
    if (v.acme == NULL) {
        return;
    }
    const char *next = v.next_text, *last = v.last_text;
    printf("  acme       %s (%s)\n", v.acme->directory, pol_acme_challenge_name(v.acme->challenge));
    if (v.next <= now) {
        printf("  renewal    due now%s\n", v.failures ? " (being retried)" : "");
    } else {
        printf("  renewal    next %s (in %.1f h)\n", next, (double)(v.next - now) / 3600.0);
    }
    if (v.last_attempt != 0) {
        printf("  last       %s at %s%s%s\n", v.result, last, v.failures ? ": " : "", v.failures ? v.error : "");
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
        const gw_identity *id = cfg->identities[i];
        char sans[1024], na[40], rules[1024];
        gw_identity_sans(id, sans, sizeof(sans));
        gw_format_utc(id->not_after, na, sizeof(na));
        rules_of(cfg, id, rules, sizeof(rules));
        printf("%s%s  (%s)\n", i ? "\n" : "", id->spec.name, id->spec.where);
        printf("  subject    %s\n  issuer     %s\n  sans       %s\n", id->subject, id->issuer, sans[0] ? sans : "-");
        if (id->p11 != NULL) {
            char where[300];
            gw_p11_uri_describe(id->spec.key, where, sizeof(where));
            printf("  key        pkcs11 %s  (%s, in token \"%s\", module %s)\n", where, id->key_type,
                   gw_p11_info(id->p11)->token, id->spec.pkcs11_module);
        } else {
            printf("  key        %s\n", id->key_type);
        }
        if (id->pending) {
            printf("  status     pending: no certificate yet (ACME order pending)\n  rules      %s\n", rules);
        } else {
            printf("  serial     %s\n", id->serial);
            printf("  not after  %s  (%.1f days left)\n  status     %s\n  rules      %s\n", na,
                   (double)(id->not_after - now) / 86400.0, gw_identity_status(id, now, o->warn_days), rules);
        }
        print_acme(cfg, id, now);
    }
    return 0;
}

// chain_problem checks that each certificate sent after the leaf issued the one before.
static int chain_problem(const gw_identity *id, char *out, size_t cap) {
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

// print_problem prints one finding of gw_identity_file_problems: a secret readable by
// others, or a trusted file writable by them, is a problem; a CRL that will fail
// handshakes a warning. |arg| counts warnings.
static void print_problem(void *arg, gw_problem_kind kind, const char *msg) {
    printf("  %s  %s\n", kind == GW_PROBLEM_CRL ? "WARNING" : "PROBLEM", msg);
    if (kind == GW_PROBLEM_CRL) {
        (*(int *)arg)++;
    }
}

static int identity_check(const pol_config *cfg, const gw_cmd_opts *o, const char *only) {
    time_t now = time(NULL);
    int problems = 0, warnings = 0, found = 0;
    for (size_t i = 0; i < cfg->num_identities; i++) {
        const gw_identity *id = cfg->identities[i];
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
        gw_acme_view v;
        gw_acme_view_of(cfg, id, &v);
        if (v.acme != NULL && v.failures > 0) {
            char last[40], next[40];
            gw_format_utc(v.last_attempt, last, sizeof(last));
            gw_format_utc(v.next, next, sizeof(next));
            printf("  WARNING  ACME renewal failed %d time%s in a row, last at %s: %s; next try %s\n", v.failures,
                   v.failures == 1 ? "" : "s", last, v.error, next);
            w++;
        } else if (v.acme != NULL && v.last_attempt != 0) {
            char last[40];
            gw_format_utc(v.last_success, last, sizeof(last));
            printf("  ok       renewed over ACME at %s\n", last);
        }
        if (id->pending) {
            printf(
                "  WARNING  identity %s has no certificate yet: ACME order pending (%s is written when %s issues it)\n",
                id->spec.name, id->spec.certificate, v.acme ? v.acme->directory : "the CA");
            warnings += w + 1;
            continue;
        }
        if (id->p11 != NULL) {
            const p11w_hello_ok *info = gw_p11_info(id->p11);
            printf(
                "  ok       key matches certificate (%s): a test signature by the key \"%s\" in token \"%s\" "
                "verified with the certificate's public key\n",
                id->key_type, info->object, info->token);
        } else {
            printf("  ok       key matches certificate (%s)\n", id->key_type);
        }
        if (strcmp(status, "expired") == 0) {
            printf("  PROBLEM  certificate expired on %s\n", na);
            p++;
        } else if (strcmp(status, "not_yet_valid") == 0) {
            char nb[40];
            gw_format_utc(id->not_before, nb, sizeof(nb));
            printf("  PROBLEM  certificate not valid before %s\n", nb);
            p++;
        } else if (strcmp(status, "expiring") == 0) {
            printf(
                "  WARNING  certificate expires %s: %.1f days left (warn below %d days, or a third of a short "
                "lifetime)\n",
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
        int reported = (int)gw_identity_file_problems(id, now, print_problem, &crl_warnings);
        if (reported == crl_warnings && id->p11 != NULL && id->spec.key_password_file != NULL) {
            printf("  ok       PIN file %s is not readable by group or others\n", id->spec.key_password_file);
        } else if (reported == crl_warnings && keyfile != NULL && id->p11 == NULL) {
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

// parse_subject turns "/CN=ops/O=Example" into |name|.
static int parse_subject(const char *s, X509_NAME *name, char *err, size_t err_len) {
    if (s[0] != '/') {
        snprintf(err, err_len, "--subject must look like \"/CN=name/O=org\", not \"%s\"", s);
        return 0;
    }
    char *copy = gw_xstrdup(s + 1);
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

// ---- identity new --pkcs11 ----

static int identity_new(const gw_cmd_opts *o, const char *name) {
    const char *key_type = o->key ? o->key : "ec-p256";
    if (o->subject == NULL || o->out == NULL) {
        fprintf(stderr, "mtlsgw identity new: --subject and --out are required\n");
        return 2;
    }
    for (const char *p = name; *p; p++) {
        if (!(*p == '-' || *p == '_' || *p == '.' || (*p >= '0' && *p <= '9') ||
              ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z'))) {
            fprintf(stderr, "mtlsgw identity new: NAME may hold letters, digits, '-', '_' and '.', not \"%s\"\n", name);
            return 2;
        }
    }
    char err[300];
    X509_REQ *req = X509_REQ_new();
    X509_NAME *subject = X509_NAME_new();
    EVP_PKEY *pkey = NULL;
    gw_p11 *token = NULL;
    int rc = 1, said = 0;  // said: the failure is on stderr already
    if (req == NULL || subject == NULL) {
        goto out;
    }
    if (!parse_subject(o->subject, subject, err, sizeof(err))) {
        fprintf(stderr, "mtlsgw identity new: %s\n", err);
        rc = 2;
        goto out;
    }
    if (o->pkcs11 != NULL) {
        // The folder and the request's name are checked first: a key made on the token
        // and then not written out would be left there for nothing.
        char csr_path[4096];
        snprintf(csr_path, sizeof(csr_path), "%s/%s.csr", o->out, name);
        if (mkdir(o->out, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "mtlsgw identity new: cannot create %s: %s\n", o->out, strerror(errno));
            goto out;
        }
        if (access(csr_path, F_OK) == 0) {
            fprintf(stderr, "mtlsgw identity new: %s exists (refusing to overwrite)\n", csr_path);
            goto out;
        }
        char terr[800];
        int bad_arg = 0;
        pkey = gw_token_keygen(o->pkcs11, key_type, -1, -1, &token, &bad_arg, terr, sizeof(terr));
        if (pkey == NULL) {
            fprintf(stderr, "mtlsgw identity new: %s\n", terr);
            rc = bad_arg ? 2 : 1;
            said = 1;
            goto out;
        }
    } else {
        pkey = gw_key_generate(key_type);
    }
    if (pkey == NULL) {
        fprintf(stderr,
                "mtlsgw identity new: --key must be ec-p256, ec-p384, rsa-2048, rsa-3072 or ed25519, not \"%s\"\n",
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
            fprintf(stderr,
                    "mtlsgw identity new: --san must look like \"DNS:ops.example.com,IP:10.0.0.1\", not \"%s\"\n",
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
    if (token != NULL && !gw_token_sign_req(&req, token, pkey, err, sizeof(err))) {
        fprintf(stderr, "mtlsgw identity new: %s\n", err);
        said = 1;
        goto out;
    }
    if (token == NULL && !X509_REQ_sign(req, pkey, EVP_PKEY_id(pkey) == EVP_PKEY_ED25519 ? NULL : EVP_sha256())) {
        goto out;
    }
    char key_path[4096], csr_path[4096];
    snprintf(key_path, sizeof(key_path), "%s/%s.key", o->out, name);
    snprintf(csr_path, sizeof(csr_path), "%s/%s.csr", o->out, name);
    if (mkdir(o->out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "mtlsgw identity new: cannot create %s: %s\n", o->out, strerror(errno));
        goto out;
    }
    if (token != NULL) {
        FILE *cf = create_file(csr_path, 0644);
        int ok = cf != NULL && PEM_write_X509_REQ(cf, req);
        if (cf != NULL && fclose(cf) != 0) {
            ok = 0;
        }
        if (!ok) {
            unlink(csr_path);
            goto out;
        }
        printf("private key  on the token: %s  (%s, generated there, not extractable: it never leaves the token)\n",
               o->pkcs11, key_type);
        printf("request      %s  (signed by the token)\n\n", csr_path);
        printf(
            "Next steps:\n"
            "  1. Send %s to the CA that the remote side trusts, e.g.\n"
            "       openssl x509 -req -in %s -CA client-ca.crt -CAkey client-ca.key -days 30 -out %s/%s.crt\n"
            "  2. Add the identity (module and PIN file from the URI, or pkcs11_module and key_password_file):\n"
            "       { name = \"%s\"; certificate = \"%s/%s.crt\"; key = \"%s\"; trust = \"server-ca.crt\"; }\n"
            "  3. mtlsgw identity check -c FILE %s, then reload (SIGHUP).\n",
            csr_path, csr_path, o->out, name, name, o->out, name, o->pkcs11, name);
        rc = 0;
        goto out;
    }
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
    printf(
        "Next steps:\n"
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
    if (rc == 1 && !said) {
        unsigned long e = ERR_peek_error();
        fprintf(stderr, "mtlsgw identity new: failed%s%s\n", e ? ": " : "", e ? ERR_reason_error_string(e) : "");
    }
    ERR_clear_error();
    EVP_PKEY_free(pkey);
    X509_NAME_free(subject);
    X509_REQ_free(req);
    gw_p11_free(token);
    return rc;
}

static const char identity_usage[] =
    "usage: mtlsgw identity list -c FILE [--json] [--warn-days N]\n"
    "       mtlsgw identity check -c FILE [NAME] [--warn-days N] [--strict]\n"
    "       mtlsgw identity new NAME --subject \"/CN=...\" [--san DNS:a,IP:b]\n"
    "                            [--key ec-p256|ec-p384|rsa-2048|rsa-3072|ed25519] --out DIR\n"
    "       mtlsgw identity new NAME --pkcs11 URI --subject \"/CN=...\" [--san ...] [--key ...] --out DIR\n"
    "       mtlsgw identity renew NAME -c FILE\n"
    "\n"
    "list   every identity: subject, issuer, SANs, key type, serial, expiry, status and the\n"
    "       rules that use it (--json: one JSON array, as the admin /identities page)\n"
    "check  key matches certificate, chain order, expiry, trust, key file permissions;\n"
    "       exit 1 on a problem (with --strict also on a warning: fewer than --warn-days\n"
    "       days left, default 14, or under a third of a short certificate's lifetime)\n"
    "new    a new private key (mode 0600) and a certificate signing request for your CA;\n"
    "       with --pkcs11 the key pair is generated on a PKCS#11 token (it never leaves it) and\n"
    "       the request is signed there: the URI names the new object and its module and PIN,\n"
    "       "
    "pkcs11:token=gw;object=app1?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/mtlsgw/ids/gw.pin\n"
    "       (an object of that label or id on the token is refused)\n"
    "renew  an identity with an acme block renewed now: through the running gateway when its\n"
    "       admin endpoint answers (POST /identities/NAME/renew), else in this process (which\n"
    "       then answers http-01 itself); prints the new serial and expiry, exit 1 on failure\n";

int gw_cmd_identity(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(identity_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    gw_cmd_opts o;
    if (strcmp(sub, "new") == 0) {
        gw_cmd_parse(argc - 1, argv + 1, GW_OPT_SUBJECT | GW_OPT_SAN | GW_OPT_KEY | GW_OPT_OUT | GW_OPT_PKCS11,
                     identity_usage, &o);
        if (o.num_args != 1) {
            fprintf(stderr, "mtlsgw identity new: exactly one NAME is required\n\n%s", identity_usage);
            return 2;
        }
        return identity_new(&o, o.args[0]);
    }
    if (strcmp(sub, "renew") == 0) {
        gw_cmd_parse(argc - 1, argv + 1, GW_OPT_CONFIG, identity_usage, &o);
        if (o.num_args != 1) {
            fprintf(stderr, "mtlsgw identity renew: exactly one NAME is required\n\n%s", identity_usage);
            return 2;
        }
        pol_config *cfg = gw_load_or_report(o.config);
        int rc = cfg ? gw_identity_renew(cfg, o.args[0]) : 1;
        if (cfg != NULL) {
            pol_config_unref(cfg);
        }
        return rc;
    }
    if (strcmp(sub, "list") != 0 && strcmp(sub, "check") != 0) {
        fprintf(stderr, "mtlsgw identity: unknown subcommand \"%s\"\n\n%s", sub, identity_usage);
        return 2;
    }
    int list = strcmp(sub, "list") == 0;
    gw_cmd_parse(argc - 1, argv + 1, GW_OPT_CONFIG | GW_OPT_WARN_DAYS | (list ? GW_OPT_JSON : GW_OPT_STRICT),
                 identity_usage, &o);
    if (o.num_args > (list ? 0 : 1)) {
        fprintf(stderr, "mtlsgw identity %s: unexpected argument \"%s\"\n\n%s", sub, o.args[list ? 0 : 1],
                identity_usage);
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
