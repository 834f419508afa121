// supervisor: the main thread of a running gateway. It binds the listeners, drops
// privileges, starts the workers and the admin endpoint, then waits for signals (SIGHUP
// reload, SIGUSR1 reopen, SIGTERM/SIGINT drain and stop), watches identity files, frees
// the config snapshots other threads let go and reaps PKCS#11 signers that ended.
#ifndef MTLSGW_SUPERVISOR_H
#define MTLSGW_SUPERVISOR_H

#include "policy/config.h"

// gw_supervisor_prepare blocks the signals the supervisor waits for (threads started later
// inherit the mask), registers it as the one that frees retired snapshots, ignores
// SIGPIPE, raises the open-file limit and makes the process undumpable. Call it on the
// main thread before loading the first config (a token's signer is a child process).
void gw_supervisor_prepare(void);

// gw_supervisor_run runs the gateway with |cfg| (loaded from |path|, taken over) until it
// is told to stop; returns the process's exit status.
int gw_supervisor_run(const char *path, pol_config *cfg);

#endif
