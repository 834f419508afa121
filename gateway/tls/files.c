// files: what `check` says about the permissions of the files the gateway reads: a secret
// (key, PKCS#12, password, users) readable by group or others, and any file it trusts
// writable by group or others or lying in a folder they may write.
#include "gateway/tls/identity.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int gw_file_mode_problem(const char *what, const char *path, char *out, size_t out_len) {
    struct stat st;
    if (path == NULL || stat(path, &st) != 0) {
        return 0;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(out, out_len, "%s %s has mode %04o: readable by others; chmod 600 it", what, path,
                 (unsigned)(st.st_mode & 07777));
        return 1;
    }
    return 0;
}

// writable_words names who may write, from |mode|'s group and other write bits.
static const char *writable_words(mode_t mode) {
    int g = (mode & S_IWGRP) != 0, o = (mode & S_IWOTH) != 0;
    return g && o ? "group and others" : g ? "its group" : o ? "others" : NULL;
}

int gw_file_writable_problem(const char *what, const char *path, char *out, size_t out_len) {
    struct stat st;
    if (path == NULL || stat(path, &st) != 0) {
        return 0;
    }
    const char *who = writable_words(st.st_mode);
    if (who != NULL) {
        snprintf(out, out_len,
                 "%s %s has mode %04o: writable by %s, who could change what the gateway trusts; "
                 "chmod go-w it",
                 what, path, (unsigned)(st.st_mode & 07777), who);
        return 1;
    }
    // Its folder: whoever may write there may replace the file (unless the sticky bit
    // keeps them to their own files, as in /tmp).
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL) {
        snprintf(dir, sizeof(dir), ".");
    } else if (slash == dir) {
        dir[1] = '\0';
    } else {
        *slash = '\0';
    }
    if (stat(dir, &st) != 0 || (st.st_mode & S_ISVTX)) {
        return 0;
    }
    who = writable_words(st.st_mode);
    if (who != NULL) {
        snprintf(out, out_len,
                 "%s %s is in folder %s with mode %04o: writable by %s, who could replace the file; "
                 "chmod go-w %s",
                 what, path, dir, (unsigned)(st.st_mode & 07777), who, dir);
        return 1;
    }
    return 0;
}

int gw_identity_key_mode_problem(const char *path, char *out, size_t out_len) {
    return gw_file_mode_problem("private key file", path, out, out_len);
}
