// state: the renewal's record beside the certificate (see state.h).
#include "gateway/acme/state.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void gw_acme_state_path(const char *certificate, char *out, size_t cap) {
    snprintf(out, cap, "%s.acme-state.json", certificate);
}

static time_t get_time(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (time_t)json_integer_value(v) : 0;
}

int gw_acme_state_read(const char *path, gw_acme_state *st) {
    memset(st, 0, sizeof(*st));
    json_t *o = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return 0;
    }
    st->last_attempt = get_time(o, "last_attempt");
    st->last_success = get_time(o, "last_success");
    st->next_attempt = get_time(o, "next_attempt");
    st->failures = (int)get_time(o, "failures");
    st->attempts = (long long)get_time(o, "attempts");
    const char *s = json_string_value(json_object_get(o, "result"));
    snprintf(st->result, sizeof(st->result), "%s", s ? s : "");
    s = json_string_value(json_object_get(o, "error"));
    snprintf(st->error, sizeof(st->error), "%s", s ? s : "");
    json_decref(o);
    return 1;
}

int gw_acme_state_write(const char *path, const gw_acme_state *st) {
    json_t *o =
        json_pack("{s:I, s:I, s:I, s:i, s:I, s:s, s:s}", "last_attempt", (json_int_t)st->last_attempt, "last_success",
                  (json_int_t)st->last_success, "next_attempt", (json_int_t)st->next_attempt, "failures", st->failures,
                  "attempts", (json_int_t)st->attempts, "result", st->result, "error", st->error);
    char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    if (text == NULL) {
        errno = ENOMEM;
        return 0;
    }
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    size_t len = strlen(text);
    int ok = fd >= 0 && write(fd, text, len) == (ssize_t)len && write(fd, "\n", 1) == 1;
    free(text);
    if (fd >= 0 && close(fd) != 0) {
        ok = 0;
    }
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return 0;
    }
    return 1;
}

time_t gw_acme_next_try(int failures, long retry_after_s, time_t not_after, time_t now, int jitter_pct) {
    long long d = GW_ACME_RETRY_FIRST_S;
    for (int i = 1; i < failures && d < GW_ACME_RETRY_MAX_S; i++) {
        d *= 2;
    }
    if (d > GW_ACME_RETRY_MAX_S) {
        d = GW_ACME_RETRY_MAX_S;
    }
    if (jitter_pct < -20 || jitter_pct > 20) {
        jitter_pct = 0;
    }
    d = d * (100 + jitter_pct) / 100;
    if (retry_after_s > d) {
        d = retry_after_s;
    }
    if (not_after > now) {
        long long quarter = (long long)(not_after - now) / 4;
        if (d > quarter) {
            d = quarter > GW_ACME_RETRY_FIRST_S ? quarter : GW_ACME_RETRY_FIRST_S;
        }
    }
    return now + (time_t)(d > 0 ? d : 1);
}
