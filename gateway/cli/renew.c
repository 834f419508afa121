// renew: `mtlsgw identity renew NAME -c FILE`: an ACME identity renewed now. Through the
// running gateway when its admin endpoint answers (POST /identities/NAME/renew: the
// gateway holds the http-01 address and loads the result), else in this process.
#include <errno.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gateway/acme/state.h"
#include "gateway/base/log.h"
#include "gateway/cli/commands.h"
#include "gateway/renewal.h"
#include "gateway/tls/identity.h"

// ask_gateway posts the request to the admin endpoint: the HTTP status, or -1 when no
// gateway answers there.
static int ask_gateway(const pol_config *cfg, const char *name, char *body, size_t cap) {
    int fd = socket(cfg->admin_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {10, 0};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        connect(fd, (const struct sockaddr *)&cfg->admin_addr, cfg->admin_addr_len) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    char req[600];
    int n = snprintf(req, sizeof(req),
                     "POST /identities/%s/renew HTTP/1.1\r\nHost: mtlsgw\r\nContent-Length: 0\r\nConnection: "
                     "close\r\n\r\n",
                     name);
    char resp[2048];
    size_t got = 0;
    if (write(fd, req, (size_t)n) == n) {
        ssize_t r;
        while (got < sizeof(resp) - 1 && (r = read(fd, resp + got, sizeof(resp) - 1 - got)) > 0) {
            got += (size_t)r;
        }
    }
    close(fd);
    resp[got] = '\0';
    int status = 0;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1) {
        return -1;
    }
    const char *b = strstr(resp, "\r\n\r\n");
    snprintf(body, cap, "%s", b ? b + 4 : "");
    body[strcspn(body, "\n")] = '\0';
    return status;
}

// print_certificate says what is in |path| now.
static void print_certificate(const char *name, const char *path) {
    FILE *f = fopen(path, "re");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f != NULL) {
        fclose(f);
    }
    if (x == NULL) {
        printf("renewed %s: %s written\n", name, path);
        return;
    }
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(x), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    for (char *c = hex; c != NULL && *c; c++) {
        *c = (char)(*c >= 'a' && *c <= 'f' ? *c - 'a' + 'A' : *c);  // as nginx's $ssl_client_serial shows it
    }
    BIO *b = BIO_new(BIO_s_mem());
    const uint8_t *p = NULL;
    size_t n = 0;
    if (b != NULL) {
        ASN1_TIME_print(b, X509_get0_notAfter(x));
        BIO_mem_contents(b, &p, &n);
    }
    printf("renewed %s: serial %s, valid until %.*s (%s)\n", name, hex ? hex : "?", (int)n, p ? (const char *)p : "",
           path);
    BIO_free(b);
    OPENSSL_free(hex);
    BN_free(bn);
    X509_free(x);
}

int gw_identity_renew(const pol_config *cfg, const char *name) {
    const gw_identity *id = NULL;
    for (size_t i = 0; i < cfg->num_identities; i++) {
        id = strcmp(cfg->identities[i]->spec.name, name) == 0 ? cfg->identities[i] : id;
    }
    const pol_acme *a = pol_config_acme(cfg, name);
    if (id == NULL || a == NULL) {
        fprintf(stderr, "mtlsgw identity renew: %s\n",
                id == NULL ? "no such identity in the config" : "this identity has no acme block");
        return 2;
    }
    char state_path[4200], body[1000];
    gw_acme_state_path(id->spec.certificate, state_path, sizeof(state_path));
    gw_acme_state before;
    gw_acme_state_read(state_path, &before);
    int status = cfg->admin_address_text ? ask_gateway(cfg, name, body, sizeof(body)) : -1;
    if (status >= 0 && status != 202) {
        fprintf(stderr, "mtlsgw identity renew: the running gateway refused (HTTP %d): %s\n", status, body);
        return 1;
    }
    if (status == 202) {
        // The gateway renews; its state file counts the attempt when it is over.
        printf("renewal of %s asked of the running gateway (admin %s); waiting for it\n", name,
               cfg->admin_address_text);
        fflush(stdout);
        for (int i = 0; i < 4 * 300; i++) {
            gw_acme_state st;
            if (gw_acme_state_read(state_path, &st) && st.attempts > before.attempts) {
                if (st.failures == 0) {
                    print_certificate(name, id->spec.certificate);
                    return 0;
                }
                fprintf(stderr, "mtlsgw identity renew: %s: %s\n", name, st.error);
                return 1;
            }
            struct timespec ts = {0, 250 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        fprintf(stderr, "mtlsgw identity renew: no result from the gateway in 300 s (see its log)\n");
        return 1;
    }
    gw_log_configure(GW_LOG_INFO, GW_LOG_TEXT, "stderr");
    char err[1000];
    if (!gw_renewal_once(cfg, name, err, sizeof(err))) {
        fprintf(stderr, "mtlsgw identity renew: %s: %s\n", name, err);
        return 1;
    }
    print_certificate(name, id->spec.certificate);
    return 0;
}
