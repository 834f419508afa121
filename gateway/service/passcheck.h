// passcheck: proxy passwords checked off the event loop. A scrypt check costs tens of
// milliseconds by design, so it runs on a small pool of threads shared by the process,
// and its answer comes back to the asking worker's loop through an eventfd. Each worker
// also remembers, for a minute, the credentials it verified (keyed by a keyed hash of
// user, password and the stored hash, never the password itself), so a kept-alive or busy
// client pays the KDF once. The queue is bounded: a flood of wrong passwords waits its
// turn or is refused, and never stalls a worker.
#ifndef MTLSGW_PASSCHECK_H
#define MTLSGW_PASSCHECK_H

#include <stddef.h>

#include "gateway/base/loop.h"
#include "policy/users.h"

typedef struct gw_passcheck gw_passcheck;
typedef struct gw_passcheck_job gw_passcheck_job;

// Called on the worker's loop with ok = 1 when the password was right. Never called after
// gw_passcheck_cancel.
typedef void (*gw_passcheck_cb)(void *arg, int ok);

typedef enum {
    GW_PASS_OK = 0,     // verified now (a fast legacy hash)
    GW_PASS_CACHE_HIT,  // verified a minute ago by this worker
    GW_PASS_BAD,        // wrong (decided at once: legacy hash, or no users)
    GW_PASS_PENDING,    // a job is out; the callback will say
    GW_PASS_BUSY,       // too many checks waiting: refuse the client for now
} gw_pass_status;

// gw_passcheck_new makes the per-worker side on |loop| (threads start on first use).
gw_passcheck *gw_passcheck_new(gw_loop *loop);
// gw_passcheck_free: the worker is going away. Jobs still out finish on their threads and
// are freed there; their callbacks are not called.
void gw_passcheck_free(gw_passcheck *pc);

// gw_passcheck_start checks |name| / |pass| against |users|. With GW_PASS_OK,
// GW_PASS_CACHE_HIT or GW_PASS_PENDING, *|out_user| is the user's entry name (owned by |users|; set only when
// the name exists); with GW_PASS_PENDING, *|out_job| is the handle for
// gw_passcheck_cancel. |pass| is copied into the job and wiped after use.
gw_pass_status gw_passcheck_start(gw_passcheck *pc, const pol_users *users, const char *name, size_t name_len,
                                  const char *pass, size_t pass_len, gw_passcheck_cb cb, void *arg,
                                  const char **out_user, gw_passcheck_job **out_job);
// gw_passcheck_cancel: the asker no longer wants the answer (NULL is fine).
void gw_passcheck_cancel(gw_passcheck_job *job);

#endif
