// callers: the `caller` specs (user/uid/group/gid) and their errors, the matcher, and
// the rule index with callers (first match in file order among the rules a caller may use).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "policy/callers.h"
#include "policy/rules.h"

static pol_callers *make(const char *const *specs, size_t n) {
    pol_callers *c = calloc(1, sizeof(*c));
    pol_userdb *db = pol_userdb_new();
    for (size_t i = 0; i < n; i++) {
        char err[300];
        assert_int_equal(pol_callers_add(c, db, specs[i], err, sizeof(err)), 1);
    }
    pol_callers_finish(c);
    pol_userdb_free(db);
    return c;
}

static void uid_sets(void **state) {
    const char *specs[] = {"uid:1001", "uid:5", "uid:1001", "uid:4294967294"};
    pol_callers *c = make(specs, 4);
    assert_int_equal(c->num_uids, 3);  // sorted, without duplicates
    assert_true(pol_callers_match(c, 5));
    assert_true(pol_callers_match(c, 1001));
    assert_true(pol_callers_match(c, 4294967294u));
    assert_false(pol_callers_match(c, 6));
    assert_false(pol_callers_match(c, 0));
    assert_false(pol_callers_match(c, GW_CALLER_NONE));  // an unknown caller is nobody
    assert_string_equal(c->text, "uid:1001, uid:5, uid:1001, uid:4294967294");
    assert_true(pol_callers_match(NULL, 7));               // no `caller`: everyone
    assert_true(pol_callers_match(NULL, GW_CALLER_NONE));  // remote clients too
    pol_callers_free(c);
}

static void names_from_the_user_database(void **state) {
    const char *specs[] = {"user:root"};
    pol_callers *c = make(specs, 1);
    assert_true(pol_callers_match(c, 0));
    assert_false(pol_callers_match(c, 1));
    pol_callers_free(c);
    // root's primary group is gid 0: group:root has uid 0 as a member.
    const char *groups[] = {"group:root"};
    c = make(groups, 1);
    assert_true(pol_callers_match(c, 0));
    pol_callers_free(c);
    const char *gids[] = {"gid:0"};
    c = make(gids, 1);
    assert_true(pol_callers_match(c, 0));
    pol_callers_free(c);
    uint32_t uid = 7;
    assert_true(pol_caller_parse("root", &uid));
    assert_int_equal(uid, 0);
    assert_true(pol_caller_parse("1234", &uid));
    assert_int_equal(uid, 1234);
    assert_false(pol_caller_parse("no-such-user-mtlsgw", &uid));
    uint32_t gid = 7;
    assert_true(pol_group_parse("root", &gid));
    assert_int_equal(gid, 0);
    assert_true(pol_group_parse("4321", &gid));
    assert_int_equal(gid, 4321);
    assert_false(pol_group_parse("no-such-group-mtlsgw", &gid));
    assert_false(pol_group_parse("", &gid));
}

static void bad_specs(void **state) {
    static const struct {
        const char *spec, *says;
    } cases[] = {
        {"user:no-such-user-mtlsgw", "no user named \"no-such-user-mtlsgw\""},
        {"user:", "no user named \"\""},
        {"group:no-such-group-mtlsgw", "no group named \"no-such-group-mtlsgw\""},
        {"uid:", "expected uid:N with a number N"},
        {"uid:-1", "expected uid:N with a number N"},
        {"uid:4294967295", "expected uid:N with a number N"},  // (uid_t)-1 means "none"
        {"uid:12a", "expected uid:N with a number N"},
        {"uid: 12", "expected uid:N with a number N"},
        {"gid:abc", "expected gid:N with a number N"},
        {"root", "expected \"user:NAME\", \"uid:N\", \"group:NAME\" or \"gid:N\", found \"root\""},
        {"users:root", "expected \"user:NAME\""},
        {"", "expected \"user:NAME\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pol_callers c = {0};
        pol_userdb *db = pol_userdb_new();
        char err[300] = "";
        assert_int_equal(pol_callers_add(&c, db, cases[i].spec, err, sizeof(err)), 0);
        if (strstr(err, cases[i].says) == NULL) {
            fail_msg("%s: \"%s\" does not say \"%s\"", cases[i].spec, err, cases[i].says);
        }
        assert_int_equal(c.num_uids, 0);
        free(c.uids);
        free(c.text);
        pol_userdb_free(db);
    }
    // A gid nobody has: valid, but a warning (the rule could never match).
    pol_callers c = {0};
    pol_userdb *db = pol_userdb_new();
    char err[300];
    assert_int_equal(pol_callers_add(&c, db, "gid:3999999999", err, sizeof(err)), 2);
    assert_non_null(strstr(err, "warning: gid:3999999999 has no members"));
    free(c.uids);
    free(c.text);
    pol_userdb_free(db);
}

static long lookup(pol_index *idx, const char *host, uint16_t port, uint32_t caller) {
    pol_dest d;
    assert_true(pol_dest_init(&d, host, port));
    return pol_index_lookup(idx, &d, caller, -1);
}

static void index_with_callers(void **state) {
    const char *a[] = {"uid:1001"}, *b[] = {"uid:1002", "uid:1003"};
    pol_callers *ca = make(a, 1), *cb = make(b, 2);
    const char *pats[] = {"orders.dc2.test:80", "orders.dc2.test:80", "*.dc2.test", "10.0.0.0/8", "*"};
    const pol_callers *who[] = {ca, cb, NULL, cb, ca};
    pol_index *idx = pol_index_new();
    for (uint32_t i = 0; i < 5; i++) {
        pol_match m;
        char err[300];
        assert_true(pol_match_parse(pats[i], &m, err, sizeof(err)));
        assert_true(pol_index_add(idx, &m, i, who[i], 0));
    }
    assert_int_equal(lookup(idx, "orders.dc2.test", 80, 1001), 0);
    assert_int_equal(lookup(idx, "orders.dc2.test", 80, 1003), 1);
    assert_int_equal(lookup(idx, "orders.dc2.test", 80, 1004), 2);  // falls to the rule for everyone
    assert_int_equal(lookup(idx, "orders.dc2.test", 80, GW_CALLER_NONE), 2);
    assert_int_equal(lookup(idx, "10.1.2.3", 22, 1002), 3);
    assert_int_equal(lookup(idx, "10.1.2.3", 22, 1001), 4);   // "*" for 1001 only
    assert_int_equal(lookup(idx, "10.1.2.3", 22, 1004), -1);  // nothing for this caller: default deny
    assert_int_equal(lookup(idx, "example.org", 443, GW_CALLER_NONE), -1);
    pol_index_free(idx);
    pol_callers_free(ca);
    pol_callers_free(cb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(uid_sets),
        cmocka_unit_test(names_from_the_user_database),
        cmocka_unit_test(bad_specs),
        cmocka_unit_test(index_with_callers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
