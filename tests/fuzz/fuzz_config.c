// libFuzzer harness: the config loader (libconfig syntax, then meaning). Every input
// either loads or is refused with at least one "file:line: ..." error; nothing leaks.
// Inputs that name device or proc files are skipped: reading /dev/zero as a certificate
// is a test of the kernel, not of the loader.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "policy/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (memmem(data, size, "/dev", 4) || memmem(data, size, "/proc", 5) || memmem(data, size, "/sys", 4) ||
        memmem(data, size, "@include", 8)) {
        return 0;
    }
    static char path[64];
    if (path[0] == '\0') {
        snprintf(path, sizeof(path), "/tmp/mtlsgw-fuzz-%d.conf", (int)getpid());
    }
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        abort();
    }
    fwrite(data, 1, size, f);
    fclose(f);
    pol_errors errs;
    pol_errors_init(&errs);
    pol_config *cfg = pol_config_load(path, &errs);
    if (cfg == NULL) {
        if (errs.len == 0 || strncmp(errs.lines[0], path, strlen(path)) != 0) {
            abort();  // a refused config always says where and why
        }
    }
    pol_config_unref(cfg);
    pol_errors_free(&errs);
    unlink(path);
    return 0;
}
