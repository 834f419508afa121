// board: what the status page shows that the metrics do not keep: the tunnels live now by
// listener and protocol, the last failures with their reasons, when the process started
// and the last reload. Workers write it (atomics; a short lock per failure noted); the
// admin thread reads it.
#ifndef MTLSGW_BOARD_H
#define MTLSGW_BOARD_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define GW_BOARD_FAILURES 32
#define GW_BOARD_LISTENERS 64

// The protocols live tunnels are counted under (a door's name; anything else is "other").
extern const char *const gw_board_protos[];
extern const size_t gw_board_num_protos;

typedef struct {
    time_t when;
    char result[32];
    char reason[400];
    char client[64];
    long long caller;  // < 0: none
    char dest[300];
    char rule[200];  // "file:line", "" when no rule decided
} gw_board_failure;

// gw_board_live adds |delta| to the tunnels live on |listener| speaking |proto|.
void gw_board_live(size_t listener, const char *proto, int delta);
// gw_board_live_count reads one of those counts (proto index into gw_board_protos).
long gw_board_live_count(size_t listener, size_t proto);
// gw_board_failure_note keeps |f| among the last GW_BOARD_FAILURES.
void gw_board_failure_note(const gw_board_failure *f);
// gw_board_failures copies them, newest first: how many.
size_t gw_board_failures(gw_board_failure *out, size_t cap);
// gw_board_started / gw_board_reloaded: the process's start; each reload's outcome.
void gw_board_started(void);
void gw_board_reloaded(int ok);
// gw_board_times reads the start, the last reload (0: none) and whether it worked.
void gw_board_times(time_t *started, time_t *last_reload, int *last_ok);

#endif
