#include "gateway/proto/hostname.h"

#include <ctype.h>
#include <string.h>

int gw_host_is_valid(const char *name, size_t len) {
    if (len == 0 || len > 253) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= ' ' || c >= 0x7f || c == '/' || c == '\\' || c == '@' || c == '%' || c == '?' || c == '#' ||
            c == '"' || c == '\'') {
            return 0;
        }
    }
    return 1;
}

int gw_host_is_dns_name(const char *s) {
    size_t len = strlen(s);
    if (len == 0 || len > 253) {
        return 0;
    }
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0) {
                return 0;
            }
            label = 0;
            continue;
        }
        if (!isalnum(c) && c != '-' && c != '_') {
            return 0;
        }
        if (++label > 63) {
            return 0;
        }
    }
    return label > 0;
}
