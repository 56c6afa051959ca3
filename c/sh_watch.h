/*
 * sh_watch.h -- descriptors a worker's Lua watches, and runs waiting for
 * Lua's own events (sh_watch.c; the FFI side is in sh_ffi.h).
 */
#ifndef SH_WATCH_H
#define SH_WATCH_H

#include "sh_worker.h"

typedef struct sh_watch_s sh_watch_t;

/* Worker stop: tell Lua (shotover.worker.stop), then close every watch. */
void sh_watches_close(sh_worker_t *w);

#endif /* SH_WATCH_H */
