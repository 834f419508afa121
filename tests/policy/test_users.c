// proxy users: lines made by pol_users_make_line verify, wrong names and passwords do not,
// bad lines are reported as file:line.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/sha.h>

#include "policy/users.h"

static char path[64];
static char problems[8][600];
static int num_problems;

static void collect(void *arg, const char *msg) {
    (void)arg;
    if (num_problems < 8) {
        snprintf(problems[num_problems++], sizeof(problems[0]), "%s", msg);
    }
}

static pol_users *load(const char *text) {
    snprintf(path, sizeof(path), "/tmp/mtlsgw-users-%d", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    num_problems = 0;
    pol_users *u = pol_users_load(path, collect, NULL);
    unlink(path);
    return u;
}

static void made_lines_verify(void **state) {
    char a[1024], b[1024], text[2200];
    assert_true(pol_users_make_line("alice", "s3cret", 6, a, sizeof(a)));
    assert_true(pol_users_make_line("bob", "hunter2", 7, b, sizeof(b)));
    snprintf(text, sizeof(text), "# users\n\n%s  %s", a, b);
    pol_users *u = load(text);
    assert_non_null(u);
    assert_int_equal(num_problems, 0);
    assert_int_equal(u->num_users, 2);
    assert_non_null(pol_users_check(u, "alice", 5, "s3cret", 6));
    assert_string_equal(pol_users_check(u, "bob", 3, "hunter2", 7), "bob");
    assert_null(pol_users_check(u, "alice", 5, "hunter2", 7));  // another user's password
    assert_null(pol_users_check(u, "alice", 5, "s3cre", 5));    // a prefix
    assert_null(pol_users_check(u, "alice", 5, "s3cret!", 7));  // longer
    assert_null(pol_users_check(u, "alic", 4, "s3cret", 6));    // a prefix of the name
    assert_null(pol_users_check(u, "carol", 5, "s3cret", 6));   // nobody
    assert_null(pol_users_check(u, "", 0, "", 0));
    char long_name[400];
    memset(long_name, 'a', sizeof(long_name));
    assert_null(pol_users_check(u, long_name, sizeof(long_name), "s3cret", 6));
    pol_users_free(u);
}

static void same_password_different_salt(void **state) {
    char a[1024], b[1024];
    assert_true(pol_users_make_line("x", "pw", 2, a, sizeof(a)));
    assert_true(pol_users_make_line("x", "pw", 2, b, sizeof(b)));
    assert_string_not_equal(a, b);
    assert_null(strstr(a, "pw\n"));
}

static void invalid_names_refused(void **state) {
    char out[1024];
    assert_false(pol_users_make_line("", "pw", 2, out, sizeof(out)));
    assert_false(pol_users_make_line("a b", "pw", 2, out, sizeof(out)));
    assert_false(pol_users_make_line("a:b", "pw", 2, out, sizeof(out)));
}

static void bad_lines_reported(void **state) {
    char a[1024], text[4096];
    assert_true(pol_users_make_line("alice", "pw", 2, a, sizeof(a)));
    snprintf(text, sizeof(text),
             "%s"
             "bob:plain:password\n"
             "carol:sha256:zz:00\n"
             "%s",
             a, a);
    assert_null(load(text));
    assert_int_equal(num_problems, 3);
    char want[200];
    snprintf(want, sizeof(want), "%s:2: expected NAME:scrypt:N:r:p:SALT:HASH", path);
    assert_memory_equal(problems[0], want, strlen(want));
    snprintf(want, sizeof(want), "%s:3: expected NAME:scrypt:N:r:p:SALT:HASH", path);
    assert_memory_equal(problems[1], want, strlen(want));
    snprintf(want, sizeof(want), "%s:4: user \"alice\" is listed twice", path);
    assert_string_equal(problems[2], want);
}

static void scrypt_lines(void **state) {
    char a[1024];
    assert_true(pol_users_make_line("alice", "pw", 2, a, sizeof(a)));
    assert_memory_equal(a, "alice:scrypt:32768:8:1:", 23);
    // Parameters that would make every check allocate too much, N not a power of two, or
    // too small, are refused at load.
    const char *bad[] = {
        "dave:scrypt:1048576:8:16:00112233:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
        "dave:scrypt:30000:8:1:00112233:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
        "dave:scrypt:512:8:1:00112233:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
        "dave:scrypt:32768:8:1:00112233:0011\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_null(load(bad[i]));
        assert_int_equal(num_problems, 1);
    }
    // A legacy sha256 line (salt "00", password "pw") still verifies, with a warning.
    uint8_t d[32];
    char legacy[300];
    {
        const uint8_t salt = 0;
        uint8_t in[3] = {salt, 'p', 'w'};
        SHA256(in, 3, d);
    }
    size_t n = (size_t)snprintf(legacy, sizeof(legacy), "old:sha256:00:");
    for (size_t i = 0; i < 32; i++) {
        n += (size_t)snprintf(legacy + n, sizeof(legacy) - n, "%02x", d[i]);
    }
    snprintf(legacy + n, sizeof(legacy) - n, "\n");
    char text[2000];
    snprintf(text, sizeof(text), "%s%s", a, legacy);
    pol_users *u = load(text);
    assert_non_null(u);
    assert_int_equal(num_problems, 1);
    assert_non_null(strstr(problems[0], ":2: warning: user \"old\""));
    assert_non_null(strstr(problems[0], "mtlsgw passwd old"));
    assert_int_equal(u->num_legacy, 1);
    assert_string_equal(pol_users_check(u, "old", 3, "pw", 2), "old");
    assert_null(pol_users_check(u, "old", 3, "px", 2));
    int found = 1;
    const pol_user *stand_in = pol_users_find(u, "nobody", 6, &found);
    assert_false(found);
    assert_non_null(stand_in);  // an unknown name is verified against someone
    assert_string_equal(pol_users_check(u, "alice", 5, "pw", 2), "alice");
    pol_users_free(u);
}

static void missing_file_reported(void **state) {
    num_problems = 0;
    assert_null(pol_users_load("/nonexistent/users", collect, NULL));
    assert_int_equal(num_problems, 1);
    assert_non_null(strstr(problems[0], "/nonexistent/users:0: cannot read the users file"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(made_lines_verify),     cmocka_unit_test(same_password_different_salt),
        cmocka_unit_test(invalid_names_refused), cmocka_unit_test(bad_lines_reported),
        cmocka_unit_test(scrypt_lines),          cmocka_unit_test(missing_file_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
