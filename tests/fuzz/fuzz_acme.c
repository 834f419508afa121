// libFuzzer harness: what an ACME server sends back. The first byte picks the reader:
// even, the response parser (gw_acme_parse_response) on the rest, as if all had come and
// as if more might; odd, the problem-document reader (gw_acme_problem_text). Whatever the
// bytes, answers stay inside their buffers and are NUL-terminated, a body is never
// longer than what came, and nothing leaks.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/acme/client.h"
#include "gateway/acme/http.h"

static void check_response(const char *buf, size_t len, int eof) {
    gw_acme_response r;
    memset(&r, 0, sizeof(r));
    char err[300];
    err[0] = '\0';
    int got = gw_acme_parse_response(buf, len, eof, &r, err, sizeof(err));
    if (got == 1) {
        if (r.body == NULL || r.body_len > len || r.body[r.body_len] != '\0' ||
            memchr(r.nonce, 0, sizeof(r.nonce)) == NULL || memchr(r.location, 0, sizeof(r.location)) == NULL ||
            memchr(r.content_type, 0, sizeof(r.content_type)) == NULL || r.retry_after_s < -1) {
            abort();
        }
        gw_acme_response_free(&r);
    } else if (got != 0 && got != -1) {
        abort();
    } else if (r.body != NULL || memchr(err, 0, sizeof(err)) == NULL) {
        abort();  // no body without a response; the reason stays in its buffer
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) {
        return 0;
    }
    char *buf = malloc(size);  // no NUL after it: readers must keep to |len|
    memcpy(buf, data + 1, size - 1);
    if (data[0] % 2 == 0) {
        check_response(buf, size - 1, 1);
        check_response(buf, size - 1, 0);
    } else {
        char out[200];
        gw_acme_problem_text("finalizing the order", 400, buf, size - 1, out, sizeof(out));
        if (memchr(out, 0, sizeof(out)) == NULL) {
            abort();
        }
    }
    free(buf);
    return 0;
}
