// The resolver against a small DNS server of this test on loopback (c-ares' own approach):
// addresses, NXDOMAIN, silence (a timeout), the TTL cache (an answer reused without a
// query, a TTL of 0 never cached), lookups of one name sharing one query, static hosts
// and IP literals answered at once, and a detached query never calling back. The server
// runs on the resolver's own loop; the loop runs until the answers came, never for a
// fixed time.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/base/log.h"
#include "resolver/resolver.h"
#include "tests/config_text.h"

static gw_loop *loop;
static res_resolver *resolver;
static pol_config *cfg;
static int dns_fd = -1;
static gw_watcher dns_w;
static uint16_t dns_port;

// ---- the DNS server: a table of names ----

typedef struct {
    const char *name;
    int rcode;         // 0 NOERROR, 3 NXDOMAIN, -1 never answer
    const char *a[3];  // A records
    uint32_t ttl;
    int queries;  // A queries seen
} zone_entry;

static zone_entry zone[] = {
    {"a.test", 0, {"192.0.2.10"}, 60, 0},    {"two.test", 0, {"192.0.2.1", "192.0.2.2"}, 60, 0},
    {"short.test", 0, {"192.0.2.20"}, 0, 0}, {"shared.test", 0, {"192.0.2.31", "192.0.2.32"}, 0, 0},
    {"gone.test", 3, {NULL}, 0, 0},          {"slow.test", -1, {NULL}, 0, 0},
};

static zone_entry *find(const char *name) {
    for (size_t i = 0; i < sizeof(zone) / sizeof(zone[0]); i++) {
        if (strcasecmp(zone[i].name, name) == 0) {
            return &zone[i];
        }
    }
    return NULL;
}

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void on_dns(gw_loop *l, gw_watcher *w, uint32_t events) {
    uint8_t q[512], r[512];
    struct sockaddr_storage from;
    socklen_t fl;
    ssize_t n;
    while ((fl = sizeof(from), n = recvfrom(dns_fd, q, sizeof(q), 0, (struct sockaddr *)&from, &fl)) > 12) {
        // The question: labels, then QTYPE and QCLASS.
        char name[256] = "";
        size_t p = 12, nl = 0;
        while (p < (size_t)n && q[p] != 0 && q[p] < 64 && p + 1 + q[p] < (size_t)n) {
            if (nl) {
                name[nl++] = '.';
            }
            memcpy(name + nl, q + p + 1, q[p]);
            nl += q[p];
            p += 1 + q[p];
        }
        name[nl] = '\0';
        size_t qend = p + 5;  // the zero label, QTYPE, QCLASS
        if (qend > (size_t)n) {
            continue;
        }
        uint16_t qtype = (uint16_t)(q[p + 1] << 8 | q[p + 2]);
        zone_entry *e = find(name);
        if (e != NULL && e->rcode < 0) {
            continue;  // silence
        }
        if (e != NULL && qtype == 1) {
            e->queries++;
        }
        memcpy(r, q, qend);
        r[2] = 0x81;                                         // QR, RD
        r[3] = 0x80 | (e == NULL ? 3 : (uint8_t)e->rcode);   // RA, RCODE
        put16(r + 6, 0), put16(r + 8, 0), put16(r + 10, 0);  // no answers (yet), no others
        size_t len = qend, answers = 0;
        for (int i = 0; e != NULL && qtype == 1 && i < 3 && e->a[i] != NULL; i++) {
            put16(r + len, 0xc00c);  // the name: a pointer to the question's
            put16(r + len + 2, 1);   // A
            put16(r + len + 4, 1);   // IN
            r[len + 6] = (uint8_t)(e->ttl >> 24), r[len + 7] = (uint8_t)(e->ttl >> 16);
            r[len + 8] = (uint8_t)(e->ttl >> 8), r[len + 9] = (uint8_t)e->ttl;
            put16(r + len + 10, 4);
            inet_pton(AF_INET, e->a[i], r + len + 12);
            len += 16;
            answers++;
        }
        put16(r + 6, (uint16_t)answers);
        sendto(dns_fd, r, len, 0, (struct sockaddr *)&from, fl);
    }
}

// ---- the resolver's answers ----

typedef struct {
    int called;
    res_status status;
    size_t n;
    char first[INET6_ADDRSTRLEN], second[INET6_ADDRSTRLEN];
} answer;

static void on_answer(void *arg, res_status status, const res_addr *addrs, size_t n) {
    answer *a = arg;
    a->called++;
    a->status = status;
    a->n = n;
    if (n > 0) {
        inet_ntop(addrs[0].family, addrs[0].addr, a->first, sizeof(a->first));
    }
    if (n > 1) {
        inet_ntop(addrs[1].family, addrs[1].addr, a->second, sizeof(a->second));
    }
}

static void on_stop(gw_loop *l, gw_timer *t) {
    gw_loop_stop(l);
}

static void run_for(int ms) {
    gw_timer t;
    gw_timer_init(&t, on_stop, NULL);
    gw_timer_start(loop, &t, (uint64_t)ms);
    gw_loop_run(loop);
    gw_timer_stop(loop, &t);
}

// resolve looks |name| up and runs the loop until it was answered (10 s at most).
static answer resolve(const char *name) {
    answer a = {0};
    res_resolve(resolver, name, on_answer, &a);
    for (int turns = 0; !a.called; turns++) {
        assert_true(turns < 2000);
        run_for(5);
    }
    return a;
}

static void answers_with_addresses(void **state) {
    answer a = resolve("two.test");
    assert_int_equal(a.status, RES_OK);
    assert_int_equal(a.n, 2);
    assert_string_equal(a.first, "192.0.2.1");
    assert_string_equal(a.second, "192.0.2.2");
}

static void nxdomain_is_not_found(void **state) {
    answer a = resolve("gone.test");
    assert_int_equal(a.status, RES_NOT_FOUND);
    assert_int_equal(a.n, 0);
}

static void silence_is_a_timeout(void **state) {
    answer a = resolve("slow.test");
    assert_int_equal(a.status, RES_TIMEOUT);
}

static void answer_is_cached_for_its_ttl(void **state) {
    answer a = resolve("a.test");
    assert_int_equal(a.status, RES_OK);
    assert_string_equal(a.first, "192.0.2.10");
    int before = find("a.test")->queries;
    answer b = {0};
    assert_null(res_resolve(resolver, "a.test", on_answer, &b));  // answered before it returned
    assert_int_equal(b.called, 1);
    assert_string_equal(b.first, "192.0.2.10");
    assert_int_equal(find("a.test")->queries, before);  // no query went out
}

static void ttl_zero_is_never_cached(void **state) {
    resolve("short.test");
    resolve("short.test");
    assert_int_equal(find("short.test")->queries, 2);
}

static void one_name_shares_one_lookup(void **state) {
    zone_entry *e = find("shared.test");  // TTL 0: the two lookups meet in flight, not in the cache
    int before = e->queries;
    answer a = {0}, b = {0};
    assert_non_null(res_resolve(resolver, "shared.test", on_answer, &a));
    assert_non_null(res_resolve(resolver, "shared.test", on_answer, &b));
    for (int turns = 0; !(a.called && b.called); turns++) {
        assert_true(turns < 2000);
        run_for(5);
    }
    assert_int_equal(e->queries, before + 1);
    assert_int_equal(a.n, 2);
    assert_int_equal(b.n, 2);
}

static void hosts_and_literals_answer_at_once(void **state) {
    answer a = {0};
    assert_null(res_resolve(resolver, "static.test", on_answer, &a));
    assert_int_equal(a.called, 1);
    assert_string_equal(a.first, "198.51.100.7");
    answer b = {0};
    assert_null(res_resolve(resolver, "2001:db8::1", on_answer, &b));
    assert_int_equal(b.status, RES_OK);
    assert_string_equal(b.first, "2001:db8::1");
}

static void detached_query_never_calls_back(void **state) {
    answer gone = {0};
    res_query *q = res_resolve(resolver, "gone.test", on_answer, &gone);
    assert_non_null(q);
    res_query_detach(q);
    answer a = resolve("short.test");  // a later lookup is answered: the loop ran past the first's answer
    assert_int_equal(a.status, RES_OK);
    for (int turns = 0; res_resolver_busy(resolver); turns++) {
        assert_true(turns < 2000);
        run_for(5);
    }
    assert_int_equal(gone.called, 0);
}

int main(void) {
    gw_log_configure(GW_LOG_ERROR, GW_LOG_TEXT, "off");
    res_library_init();
    loop = gw_loop_new();
    dns_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(dns_fd, (struct sockaddr *)&sa, sizeof(sa));
    socklen_t sl = sizeof(sa);
    getsockname(dns_fd, (struct sockaddr *)&sa, &sl);
    dns_port = ntohs(sa.sin_port);
    gw_watcher_init(&dns_w, dns_fd, on_dns, NULL);
    gw_watcher_set(loop, &dns_w, EPOLLIN);
    cfg = config_from_text(
        "listen = ( { name = \"p\"; address = \"127.0.0.1:1\"; } );\n"
        "resolver = { servers = [ \"127.0.0.1:%u\" ]; timeout_ms = 200; tries = 1;\n"
        "             hosts = ( { name = \"static.test\"; address = \"198.51.100.7\"; } ); };\n"
        "rules = ( { match = \"*\"; action = \"deny\"; } );\n",
        dns_port);
    if (cfg == NULL) {
        return 1;
    }
    char err[200];
    resolver = res_resolver_new(loop, cfg, err, sizeof(err));
    if (resolver == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(answers_with_addresses),
        cmocka_unit_test(nxdomain_is_not_found),
        cmocka_unit_test(silence_is_a_timeout),
        cmocka_unit_test(answer_is_cached_for_its_ttl),
        cmocka_unit_test(ttl_zero_is_never_cached),
        cmocka_unit_test(one_name_shares_one_lookup),
        cmocka_unit_test(hosts_and_literals_answer_at_once),
        cmocka_unit_test(detached_query_never_calls_back),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    res_resolver_free(resolver);
    gw_watcher_remove(loop, &dns_w);
    close(dns_fd);
    gw_loop_free(loop);
    pol_config_unref(cfg);
    res_library_cleanup();
    return rc;
}
