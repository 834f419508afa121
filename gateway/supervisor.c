// supervisor: the main thread of a running gateway (ARCHITECTURE.md, "The data path"):
// listeners bound, privileges dropped, workers and the admin endpoint started; then signals
// (reload, reopen, drain), the identity-file watcher, the snapshots other threads let go
// and the PKCS#11 signers that ended, until the gateway stops. `mtlsgw run` is its command.
#include "gateway/supervisor.h"

#include <ares.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gateway/admin.h"
#include "gateway/base/hash.h"
#include "gateway/base/log.h"
#include "gateway/base/netutil.h"
#include "gateway/base/xalloc.h"
#include "gateway/renewal.h"
#include "gateway/service/board.h"
#include "gateway/service/metrics.h"
#include "gateway/tls/identity.h"
#include "gateway/tls/pkcs11.h"
#include "gateway/tunnel/tunnel.h"
#include "gateway/upstream/sesscache.h"
#include "gateway/upstream/upstream.h"
#include "gateway/worker.h"
#include "policy/config.h"
#include "resolver/resolver.h"

// remove_unix_sockets unlinks the sockets of UNIX listeners (on exit: each was made by us).
static void remove_unix_sockets(const pol_config *cfg) {
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        const char *p = cfg->listeners[i].unix_path;
        if (p != NULL && unlink(p) != 0 && errno != ENOENT) {
            gw_log(GW_LOG_WARN, "listener %s: cannot remove %s: %s (it is replaced at the next start)",
                   cfg->listeners[i].name, p, strerror(errno));
        }
    }
}

// open_listeners binds every listener, once per worker: TCP sockets with SO_REUSEPORT (the
// kernel spreads clients), a UNIX socket once, shared by all workers through dup().
static int open_listeners(const pol_config *cfg, int workers, int *fds) {
    for (int w = 0; w < workers; w++) {
        for (size_t i = 0; i < cfg->num_listeners; i++) {
            const pol_listener *l = &cfg->listeners[i];
            int fd;
            if (l->unix_path != NULL && w > 0) {
                fd = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
            } else if (l->unix_path != NULL) {
                fd = gw_listen_unix(l->unix_path, l->unix_mode, l->unix_owner, l->unix_group);
            } else {
                fd = gw_listen_socket((const struct sockaddr *)&l->addr, l->addr_len, 1);
            }
            if (fd < 0) {
                const char *why = strerror(errno);
                if (l->unix_path != NULL && errno == EADDRINUSE) {
                    why = "another process accepts on that socket";
                } else if (l->unix_path != NULL && errno == EEXIST) {
                    why = "the path exists and is not a socket";
                }
                gw_log(GW_LOG_ERROR, "listener %s: cannot listen on %s: %s", l->name, l->address_text, why);
                for (size_t j = 0; w == 0 && j < i; j++) {  // only the sockets made here
                    if (cfg->listeners[j].unix_path != NULL) {
                        unlink(cfg->listeners[j].unix_path);
                    }
                }
                return 0;
            }
            fds[(size_t)w * cfg->num_listeners + i] = fd;
        }
    }
    return 1;
}

static int same_text(const char *a, const char *b) {
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int same_listeners(const pol_config *a, const pol_config *b) {
    if (a->num_listeners != b->num_listeners) {
        return 0;
    }
    for (size_t i = 0; i < a->num_listeners; i++) {
        const pol_listener *x = &a->listeners[i], *y = &b->listeners[i];
        if (strcmp(x->address_text, y->address_text) != 0 || x->unix_mode != y->unix_mode ||
            x->unix_owner != y->unix_owner || x->unix_group != y->unix_group) {
            return 0;
        }
    }
    return 1;
}

static void configure_logs(const pol_config *cfg) {
    struct passwd *pw = cfg->user != NULL ? getpwnam(cfg->user) : NULL;
    if (pw != NULL) {
        gw_log_allow_owner((uint32_t)pw->pw_uid);  // a log file the service user made is fine
    }
    if (!gw_log_configure(cfg->log_level, cfg->log_format, cfg->log_access)) {
        gw_log(GW_LOG_ERROR, "log.access: cannot open %s: %s; access log goes to stderr", cfg->log_access,
               strerror(errno));
        gw_log_configure(cfg->log_level, cfg->log_format, "stderr");
    }
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

// ---- reload and identity file watching ----

// identity_files_signature sums up (device, inode, size, mtime) of every file the
// identities of |cfg| are loaded from: a rename or a rewrite in place changes it.
static uint64_t identity_files_signature(const pol_config *cfg) {
    uint64_t h = GW_HASH_INIT;
    for (size_t i = 0; i < cfg->num_identities; i++) {
        const gw_identity_spec *sp = &cfg->identities[i]->spec;
        const char *files[] = {sp->certificate, sp->key, sp->key_password_file, sp->pkcs12, sp->pkcs12_password_file,
                               sp->trust,       sp->crl};
        for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
            struct stat st;
            if (files[f] == NULL) {
                continue;
            }
            if (stat(files[f], &st) != 0) {
                memset(&st, 0, sizeof(st));
            }
            uint64_t v[] = {(uint64_t)st.st_dev, (uint64_t)st.st_ino, (uint64_t)st.st_size, (uint64_t)st.st_mtim.tv_sec,
                            (uint64_t)st.st_mtim.tv_nsec};
            h = gw_hash_bytes(h, v, sizeof(v));
        }
    }
    return h;
}

static void assign_metrics_slots(pol_config *cfg) {
    for (size_t i = 0; i < cfg->num_identities; i++) {
        cfg->identities[i]->metrics_slot = gw_metrics_identity_slot(cfg->identities[i]->spec.name);
    }
}

// apply_session_cache sizes the session cache for |cfg| and forgets the sessions of every
// identity generation it no longer has (a replaced identity's sessions are never offered).
static void apply_session_cache(const pol_config *cfg) {
    gw_sesscache_set_limit((size_t)cfg->limits.session_cache_size);
    uint64_t *gens = gw_xcalloc(cfg->num_identities + 1, sizeof(*gens));
    if (gens == NULL) {
        return;
    }
    for (size_t i = 0; i < cfg->num_identities; i++) {
        gens[i] = cfg->identities[i]->generation;
    }
    gw_sesscache_purge(gens, cfg->num_identities);
    free(gens);
}

// reload loads |path| into a new snapshot and hands it to the workers and the admin
// endpoint. Returns the snapshot now running (the old one if the new one failed).
static pol_config *reload(const char *path, pol_config *cfg, gw_worker *workers, int nworkers, const char *why) {
    pol_errors errs;
    pol_errors_init(&errs);
    pol_config *next = pol_config_load(path, &errs);
    for (size_t i = 0; i < errs.len; i++) {
        gw_log(next ? GW_LOG_WARN : GW_LOG_ERROR, "reload: %s", errs.lines[i]);
    }
    pol_errors_free(&errs);
    if (next != NULL && !same_listeners(cfg, next)) {
        gw_log(GW_LOG_ERROR, "reload: listen addresses changed: needs a restart. Keeping the old config");
        pol_config_unref(next);
        next = NULL;
    }
    if (next == NULL) {
        gw_log(GW_LOG_ERROR, "reload (%s) failed: keeping the running configuration", why);
        gw_metrics_reload(0);
        gw_board_reloaded(0);
        return cfg;
    }
    // What a running process cannot change is named, not silently kept.
    if (!same_text(next->admin_address_text, cfg->admin_address_text)) {
        gw_log(GW_LOG_WARN, "reload: admin.address changed: needs a restart (still serving on %s)",
               cfg->admin_address_text ? cfg->admin_address_text : "none");
    }
    if (next->workers != cfg->workers) {
        gw_log(GW_LOG_WARN, "reload: workers changed from %d to %d: needs a restart (still %d)", cfg->workers,
               next->workers, nworkers);
    }
    if (!same_text(next->user, cfg->user)) {
        gw_log(GW_LOG_WARN, "reload: user changed: needs a restart (still running as %s)",
               cfg->user ? cfg->user : "the starting user");
    }
    assign_metrics_slots(next);
    configure_logs(next);
    apply_session_cache(next);
    if (next->upstream_mark != cfg->upstream_mark && !gw_upstream_set_mark(next->upstream_mark)) {
        gw_log(GW_LOG_ERROR, "reload: upstream_mark 0x%x cannot be set (%s); upstream sockets keep 0x%x",
               (unsigned)next->upstream_mark, strerror(errno), (unsigned)cfg->upstream_mark);
    }
    for (int i = 0; i < nworkers; i++) {
        gw_worker_set_config(&workers[i], next);
    }
    gw_admin_set_config(next);
    gw_renewal_set_config(next);
    gw_board_reloaded(1);
    pol_config_unref(cfg);
    gw_metrics_reload(1);
    gw_log(GW_LOG_INFO, "reloaded %s (%s): %zu rules, %zu identities", path, why, next->num_rules,
           next->num_identities);
    return next;
}

// drop_privileges switches to the configured `user` once the listeners are bound, when
// started as root. Everything read later (reloads, rotated identities, the users file)
// must be readable by that user.
static int drop_privileges(const pol_config *cfg) {
    if (geteuid() != 0) {
        return 1;
    }
    if (cfg->user == NULL) {
        gw_log(GW_LOG_WARN, "running as root: set `user` to drop privileges once the listeners are bound");
        return 1;
    }
    struct passwd *pw = getpwnam(cfg->user);
    if (pw == NULL) {
        gw_log(GW_LOG_ERROR, "user: no such user \"%s\"", cfg->user);
        return 0;
    }
    if (setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
        gw_log(GW_LOG_ERROR, "user: cannot switch to %s: %s", cfg->user, strerror(errno));
        return 0;
    }
    if (pw->pw_uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
        gw_log(GW_LOG_ERROR, "user: switched to %s but could become root again; stopping", cfg->user);
        return 0;
    }
    gw_log(GW_LOG_INFO, "running as user %s (uid %u, gid %u)", cfg->user, (unsigned)pw->pw_uid, (unsigned)pw->pw_gid);
    return 1;
}

// ---- retiring snapshots ----
//
// The last reference to an old snapshot is often dropped on a worker (its last tunnel
// closed) or the admin thread. Freeing it there would stall that thread: its PKCS#11
// signers are stopped, its SSL_CTXs torn down. It goes to the supervisor instead, which
// frees it on its next wake (SIGUSR2 says there is one), as redis's lazyfree does.

static pthread_t g_supervisor;
static pthread_mutex_t g_retire_lock = PTHREAD_MUTEX_INITIALIZER;
static pol_config *g_retired;

static int retire_to_supervisor(pol_config *cfg) {
    if (pthread_equal(pthread_self(), g_supervisor)) {
        return 0;  // the supervisor frees its own at once
    }
    pthread_mutex_lock(&g_retire_lock);
    cfg->retired_next = g_retired;
    g_retired = cfg;
    pthread_mutex_unlock(&g_retire_lock);
    pthread_kill(g_supervisor, SIGUSR2);
    return 1;
}

// An identity renewed over ACME: its new files are loaded at once (SIGUSR2 wakes us).
static atomic_int g_acme_renewed;

static void on_renewed(void) {
    atomic_store(&g_acme_renewed, 1);
    pthread_kill(g_supervisor, SIGUSR2);
}

static void free_retired(void) {
    pthread_mutex_lock(&g_retire_lock);
    pol_config *list = g_retired;
    g_retired = NULL;
    pthread_mutex_unlock(&g_retire_lock);
    while (list != NULL) {
        pol_config *next = list->retired_next;
        gw_log(GW_LOG_DEBUG, "freed snapshot generation %llu (retired by a worker)",
               (unsigned long long)list->generation);
        pol_config_free(list);
        list = next;
    }
    gw_p11_reap_retired();
}

// The signals the supervisor waits for; every other thread has them blocked.
static sigset_t g_signals;

void gw_supervisor_prepare(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);                // a snapshot retired by another thread: free it
    sigaddset(&set, SIGCHLD);                // a PKCS#11 signer ended: reap it
    pthread_sigmask(SIG_BLOCK, &set, NULL);  // workers inherit the mask; this thread waits
    g_supervisor = pthread_self();
    pol_config_set_retirer(retire_to_supervisor);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    // Not dumpable: no core files with keys in them, and no process of the service user
    // (a PKCS#11 module in the signer, say) may read our memory through /proc or ptrace.
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    g_signals = set;
}

int gw_supervisor_run(const char *path, pol_config *cfg) {
    sigset_t set = g_signals;
    gw_board_started();
    configure_logs(cfg);
    assign_metrics_slots(cfg);
    gw_sesscache_set_limit((size_t)cfg->limits.session_cache_size);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nworkers = cfg->workers > 0 ? cfg->workers : (ncpu > 0 ? (int)ncpu : 1);
    int *fds = gw_xcalloc((size_t)nworkers * cfg->num_listeners, sizeof(int));
    gw_worker *workers = gw_xcalloc((size_t)nworkers, sizeof(*workers));
    if (fds == NULL || workers == NULL || !open_listeners(cfg, nworkers, fds)) {
        return 1;
    }
    if (cfg->admin_address_text != NULL && !gw_admin_bind(cfg)) {
        gw_log(GW_LOG_ERROR, "admin: cannot listen on %s: %s", cfg->admin_address_text, strerror(errno));
        remove_unix_sockets(cfg);
        return 1;
    }
    if (cfg->num_acme > 0 && !gw_renewal_bind(cfg)) {  // http-01 on port 80 needs the privileges
        remove_unix_sockets(cfg);
        return 1;
    }
    if (!drop_privileges(cfg)) {
        remove_unix_sockets(cfg);
        return 1;
    }
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);  // setuid may have made us dumpable again (fs.suid_dumpable)
    if (!gw_upstream_set_mark(cfg->upstream_mark)) {
        gw_log(GW_LOG_ERROR,
               "upstream_mark: cannot set SO_MARK 0x%x on upstream sockets: %s (it needs "
               "CAP_NET_ADMIN, or CAP_NET_RAW on Linux 5.17+: with systemd, AmbientCapabilities=CAP_NET_ADMIN; or "
               "exclude the gateway "
               "from the redirect by its user, meta skuid, and leave upstream_mark unset)",
               (unsigned)cfg->upstream_mark, strerror(errno));
        remove_unix_sockets(cfg);
        return 1;
    }
    for (int i = 0; i < nworkers; i++) {
        char err[300];
        if (!gw_worker_init(&workers[i], i, cfg, fds + (size_t)i * cfg->num_listeners, err, sizeof(err))) {
            gw_log(GW_LOG_ERROR, "worker %d: %s", i, err);
            return 1;
        }
    }
    for (int i = 0; i < nworkers; i++) {
        if (!gw_worker_start(&workers[i])) {
            gw_log(GW_LOG_ERROR, "cannot start worker thread %d", i);
            return 1;
        }
    }
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        const pol_listener *l = &cfg->listeners[i];
        if (l->forward_host) {
            gw_log(GW_LOG_INFO, "listener %s on %s forwards to %s:%u", l->name, l->address_text, l->forward_host,
                   l->forward_port);
        } else {
            gw_log(GW_LOG_INFO, "listener %s on %s (%s%s%s)", l->name, l->address_text,
                   l->protocols & POL_PROTO_SOCKS5 ? "socks5 " : "", l->protocols & POL_PROTO_SOCKS4 ? "socks4 " : "",
                   l->protocols & POL_PROTO_HTTP ? "http" : "");
        }
    }
    if (cfg->admin_address_text != NULL) {
        if (!gw_admin_start(cfg)) {
            gw_log(GW_LOG_ERROR, "admin: cannot start its thread");
            return 1;
        }
        gw_log(GW_LOG_INFO, "admin endpoint on http://%s/ (status page; /status.json /metrics /healthz /identities)",
               cfg->admin_address_text);
    }
    if (!gw_renewal_start(cfg, on_renewed)) {
        gw_log(GW_LOG_ERROR, "acme: cannot start the renewal thread");
        return 1;
    }
    gw_log(GW_LOG_INFO, "mtlsgw %s running: %d workers, %zu rules, %zu identities", MTLSGW_VERSION, nworkers,
           cfg->num_rules, cfg->num_identities);
    // Identity files are polled every second; a change is loaded once it has held still
    // for one poll, so a pair being written is not caught halfway. A pair that does not
    // load (half-written, mismatched) keeps the running one until the files change again.
    uint64_t seen = identity_files_signature(cfg), loaded = seen;
    const struct timespec tick = {1, 0};
    for (;;) {
        int sig = sigtimedwait(&set, NULL, &tick);
        free_retired();
        if (sig == SIGUSR2 && atomic_exchange(&g_acme_renewed, 0)) {
            cfg = reload(path, cfg, workers, nworkers, "an identity was renewed over ACME");
            seen = loaded = identity_files_signature(cfg);
            continue;
        }
        if (sig == SIGUSR2 || sig == SIGCHLD) {
            continue;
        }
        if (sig < 0) {
            uint64_t now = identity_files_signature(cfg);
            if (now != seen) {
                seen = now;
            } else if (now != loaded) {
                loaded = now;
                cfg = reload(path, cfg, workers, nworkers, "identity files changed");
            }
            continue;
        }
        if (sig == SIGHUP) {
            cfg = reload(path, cfg, workers, nworkers, "SIGHUP");
            seen = loaded = identity_files_signature(cfg);
        } else if (sig == SIGUSR1) {
            gw_log_reopen();
        } else if (sig == SIGTERM || sig == SIGINT) {
            gw_log(GW_LOG_INFO, "stopping: draining tunnels for up to %d s", cfg->limits.drain_timeout_s);
            gw_admin_set_draining();
            break;
        }
    }
    for (int i = 0; i < nworkers; i++) {
        gw_worker_request_stop(&workers[i]);
    }
    for (int i = 0; i < nworkers; i++) {
        gw_worker_join(&workers[i]);
        gw_worker_free(&workers[i]);
    }
    free(workers);
    free(fds);
    remove_unix_sockets(cfg);
    gw_renewal_stop();
    gw_admin_stop();
    pol_config_unref(cfg);
    free_retired();
    gw_sesscache_clear();
    gw_log(GW_LOG_INFO, "stopped");
    gw_log_shutdown();
    return 0;
}
