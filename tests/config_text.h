// config_text: unit tests load a config from text: written to a file of their own, loaded
// as the gateway does, every problem printed, the file removed. NULL if it did not load.
#ifndef MTLSGW_TESTS_CONFIG_TEXT_H
#define MTLSGW_TESTS_CONFIG_TEXT_H

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "policy/config.h"

__attribute__((format(printf, 1, 2))) static inline pol_config *config_from_text(const char *fmt, ...) {
    char path[64];
    snprintf(path, sizeof(path), "/tmp/mtlsgw-unit-conf-%d.conf", (int)getpid());
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        return NULL;
    }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fclose(f);
    pol_errors errs;
    pol_errors_init(&errs);
    pol_config *cfg = pol_config_load(path, &errs);
    for (size_t i = 0; i < errs.len; i++) {
        fprintf(stderr, "%s\n", errs.lines[i]);
    }
    pol_errors_free(&errs);
    unlink(path);
    return cfg;
}

#endif
