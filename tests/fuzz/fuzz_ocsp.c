// libFuzzer harness: an OCSP staple as a hostile server may send it. The parser must
// refuse or parse without reading out of bounds; what parses is checked against a real
// chain (the fixtures' CA and leaf) and the reason is always terminated text.
#include <openssl/x509.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../tls/ocsp_fixtures.h"
#include "gateway/tls/ocsp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static X509 *g_ca, *g_leaf;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (g_ca == NULL) {
        const unsigned char *p = ca_cer;
        g_ca = d2i_X509(NULL, &p, (long)ca_cer_len);
        p = leaf_cer;
        g_leaf = d2i_X509(NULL, &p, (long)leaf_cer_len);
        if (g_ca == NULL || g_leaf == NULL) {
            abort();
        }
    }
    gw_ocsp_response r;
    char err[200], reason[600], info[400];
    if (gw_ocsp_parse(data, size, &r, err, sizeof(err))) {
        for (size_t i = 0; i < r.num_singles; i++) {
            const gw_ocsp_single *s = &r.singles[i];
            if (CBS_data(&s->serial) < data || CBS_data(&s->serial) + CBS_len(&s->serial) > data + size) {
                abort();  // points outside the input
            }
        }
    } else if (strnlen(err, sizeof(err)) >= sizeof(err)) {
        abort();
    }
    gw_ocsp_result res =
        gw_ocsp_check(data, size, g_leaf, g_ca, 1800000000, 300, reason, sizeof(reason), info, sizeof(info));
    if (res != GW_OCSP_RESULT_GOOD && strnlen(reason, sizeof(reason)) >= sizeof(reason)) {
        abort();
    }
    if (strnlen(info, sizeof(info)) >= sizeof(info) || strcmp(gw_ocsp_result_name(res), "") == 0) {
        abort();
    }
    return 0;
}
