// policy_bench: how long a config with N rules takes to load, and what one lookup costs,
// for N = 10, 1,000, 10,000 and 100,000 rules (exact hosts, *.suffix wildcards, CIDRs
// and port ranges in equal parts). The same lookups run against every table, a mix of
// destinations that match early rules, late rules and none (default deny), so a cost that
// grew with the table would show.
//
//   policy_bench [MAX_RULES]     prints a Markdown table
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "policy/config.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void write_config(const char *path, int n) {
    FILE *f = fopen(path, "w");
    fprintf(f, "listen = ( { name = \"p\"; address = \"127.0.0.1:1080\"; } );\nrules = (\n");
    for (int i = 0; i < n; i++) {
        switch (i % 4) {
            case 0:
                fprintf(f, "  { match = \"host%d.dc%d.test:443\"; action = \"direct\"; },\n", i, i % 7);
                break;
            case 1:
                fprintf(f, "  { match = \"*.zone%d.example\"; action = \"direct\"; },\n", i);
                break;
            case 2:
                fprintf(f, "  { match = \"10.%d.%d.0/24\"; action = \"direct\"; },\n", (i >> 8) & 255, i & 255);
                break;
            default:
                fprintf(f, "  { match = \"svc%d.test:8000-8100\"; action = \"deny\"; },\n", i);
                break;
        }
    }
    fprintf(f, "  { match = \"last.test\"; action = \"direct\"; }\n);\n");
    fclose(f);
}

int main(int argc, char **argv) {
    int max = argc > 1 ? atoi(argv[1]) : 100000;
    enum { LOOKUPS = 2000000, DESTS = 4096 };
    static pol_dest dests[DESTS];
    char host[256];
    // Destinations: names and addresses that hit rules near the start of a 10-rule table
    // (so they exist in every table), names that hit nothing, and deep wildcard names.
    srand(7);
    for (int i = 0; i < DESTS; i++) {
        int k = rand() % 8;
        if (k == 0)
            snprintf(host, sizeof(host), "host0.dc0.test");
        else if (k == 1)
            snprintf(host, sizeof(host), "a.b.zone1.example");
        else if (k == 2)
            snprintf(host, sizeof(host), "10.0.2.%d", rand() % 256);
        else if (k == 3)
            snprintf(host, sizeof(host), "nothing%d.nowhere.test", rand());
        else if (k == 4)
            snprintf(host, sizeof(host), "192.0.2.%d", rand() % 256);
        else if (k == 5)
            snprintf(host, sizeof(host), "x%d.y.z.zone5.example", rand());
        else if (k == 6)
            snprintf(host, sizeof(host), "last.test");
        else
            snprintf(host, sizeof(host), "svc3.test");
        pol_dest_init(&dests[i], host, k == 7 ? 8050 : 443);
    }
    printf("| rules | load (s) | lookup (ns) | matched |\n|---:|---:|---:|---:|\n");
    char path[64];
    snprintf(path, sizeof(path), "/tmp/mtlsgw-policy-bench-%d.conf", (int)getpid());
    for (int n = 10; n <= max; n *= (n < 1000 ? 100 : 10)) {
        write_config(path, n);
        pol_errors errs;
        pol_errors_init(&errs);
        double t0 = now_s();
        pol_config *cfg = pol_config_load(path, &errs);
        double load = now_s() - t0;
        if (cfg == NULL) {
            fprintf(stderr, "%s\n", errs.len ? errs.lines[0] : "load failed");
            return 1;
        }
        long matched = 0;
        t0 = now_s();
        for (int i = 0; i < LOOKUPS; i++) {
            matched += pol_config_lookup(cfg, &dests[i & (DESTS - 1)], GW_CALLER_NONE, -1) != NULL;
        }
        double per = (now_s() - t0) / LOOKUPS * 1e9;
        printf("| %d | %.3f | %.0f | %.1f%% |\n", n, load, per, 100.0 * (double)matched / LOOKUPS);
        pol_config_unref(cfg);
        pol_errors_free(&errs);
    }
    unlink(path);
    return 0;
}
