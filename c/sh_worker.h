/*
 * sh_worker.h -- a worker: one thread's event loop and Lua state, and the
 * lists of what lives on it.  Every layer above the codecs runs on a worker
 * and reaches its loop through this struct; each list is owned by the
 * module that names it (the struct only forward-declares their types).
 * Threads, listeners and signals are c/sh_server.c's.
 */
#ifndef SH_WORKER_H
#define SH_WORKER_H

#include <lua.h>
#include <uv.h>

#include "sh_core.h"

/* a pre-poll hook: returns 1 when it did anything (another round runs) */
typedef int (*sh_worker_hook_fn)(sh_worker_t *w);

#define SH_WORKER_HOOKS 8                /* pre-poll hooks per worker */
#define SH_WORKER_GENS 64                /* configurations in use at once */

struct sh_worker_s {
    int id;                  /* 0-based worker number */
    uv_loop_t loop;          /* its event loop */
    uv_thread_t thread;      /* its thread (sh_server.c) */
    uv_async_t stop;         /* the main thread asks it to stop */
    uv_async_t drain;        /* ... or to drain (sh_server.c) */
    uv_async_t reload;       /* ... or to load the config again */
    uint32_t listen_round;   /* (re)loads of its listeners */
    uint32_t gen_conns[SH_WORKER_GENS]; /* connections per configuration,
                                           by gen % SH_WORKER_GENS (two
                                           that share a slot only delay
                                           each other's collection) */
    uv_timer_t collect;      /* drops configurations no connection runs */
    int stop_closed;         /* stop and drain closed: send no more
                                (under sh_server.c's lock) */
    int exited;              /* its loop ended (atomic) */
    int draining;            /* accepts nothing; connections close at a
                                batch boundary; stops once none is left */
    uv_prepare_t prepoll;    /* runs the hooks below before each poll */
    uv_check_t afterpoll;    /* reads what the poll found (sh_uring.c) */
    sh_worker_hook_fn hooks[SH_WORKER_HOOKS]; /* pre-poll hooks */
    int nhooks;              /* hooks in use */
    lua_State *L;            /* its Lua state (sh_lua.c) */
    int run_ref;             /* registry ref to the connection runner */
    struct sh_listener_s *listeners; /* listening sockets (sh_server.c) */
    struct sh_conn_s *conns; /* open client connections (sh_conn.c) */
    struct sh_run_s *wakeq;  /* runs to resume (sh_run.c) */
    struct sh_run_s *shadows; /* shadow runs, their clients gone or not */
    struct sh_upstream_s *flushq; /* upstreams with gathered writes
                                     (sh_upstream.c) */
    struct sh_conn_s *outq;  /* client connections with gathered replies
                                (sh_conn.c) */
    struct sh_uring_s *uring; /* client writes batched per iteration,
                                 NULL: none (sh_uring.c) */
    struct sh_redis_pool_s *pools; /* Redis pools (sh_redis_pool.c) */
    struct sh_cql_pool_s *cql_pools; /* Cassandra pools (sh_cql_pool.c) */
    struct sh_watch_s *watches; /* descriptors Lua watches (sh_watch.c) */
    uint32_t nconns;         /* open client connections */
    uint32_t peak_conns;     /* most open since memory was last released */
    uv_timer_t release;      /* releases memory after a burst (sh_worker.c) */
    uv_idle_t spin;          /* active while the loop polls without sleeping */
    uint64_t spin_max;       /* ns: longest busy poll (busy_poll_us), 0: off */
    uint64_t spin_budget[2]; /* ns: how long to poll for a backend's reply
                                (0) or a client's request (1): adaptive */
    uint64_t spin_since;     /* hrtime the loop last found work, 0: never */
    uint64_t spin_last;      /* hrtime of the last pre-poll while polling */
    uint64_t spin_off_until; /* hrtime: no polling before (CPU contended) */
    uint64_t spin_pause;     /* ns: the last such pause (sh_worker.c) */
    uint32_t activity;       /* reads seen (bumped by the read callbacks) */
    uint32_t activity_seen;  /* ... as of the last pre-poll */
    int spin_kind;           /* what the loop waits for since spin_since */
    int psi_fd;              /* /proc/pressure/cpu, -1: none */
    uint64_t psi_at;         /* hrtime it was last read */
    uint64_t psi_total;      /* its "some" stall total then (us) */
    uint64_t psi_pct;        /* % of time tasks waited for a CPU (smoothed) */
    uint64_t work_since;     /* hrtime of this iteration's first read */
    uint64_t busy_at;        /* hrtime the busy window began */
    uint64_t busy_ns;        /* time spent working in it */
    uint64_t busy_pct;       /* % of time the worker works (smoothed) */
    int sent;                /* wrote to a backend in this iteration */
    const char *conf_path;   /* config file */
    uv_sem_t ready;          /* posted when init finished */
    int init_failed;         /* init result */
    int stopping;            /* stop requested */
};

/* the worker of the calling thread, NULL outside workers (specs, main) */
extern __thread sh_worker_t *sh_worker_cur;

/* Set up w's loop and pre-poll handle; close them (the loop must then be
 * run once so the handles' close callbacks run). */
void sh_worker_init(sh_worker_t *w, int id);
void sh_worker_close_handles(sh_worker_t *w);

/*
 * A client connection opened (+1) or closed (-1).  When a burst of
 * connections has gone (fewer than half the peak, and SH_WORKER_RELEASE_MIN
 * fewer), the worker gives idle memory back to the system a moment later:
 * a full collection of its Lua state and malloc_trim (sh_worker.c says why).
 */
void sh_worker_conns(sh_worker_t *w, int delta);

/*
 * sh_worker_hook: run fn(w) before every poll of w's loop, after the
 * callbacks of the iteration: what a module gathered (writes to backends,
 * connections to resume) goes out once per iteration.  Adding the same fn
 * again does nothing.  Hooks run in the order they were added, in rounds
 * until a round in which none did anything: a connection resumed by one
 * hook may queue writes for another, whose failures may wake connections.
 */
void sh_worker_hook(sh_worker_t *w, sh_worker_hook_fn fn);

/*
 * Busy polling: after an iteration that read anything, the loop polls
 * without sleeping for up to the worker's budget before it blocks, so a
 * reply or request that follows within it costs no wake-up (sh_worker.c
 * says why and how the budget adapts).  sh_worker_busy_poll sets the
 * longest poll (0: never); the read callbacks call sh_worker_activity.
 */
void sh_worker_busy_poll(sh_worker_t *w, uint32_t us);

static inline void
sh_worker_activity(sh_worker_t *w)
{
    if (w->activity == w->activity_seen && w->spin_max != 0) {
        w->work_since = uv_hrtime();     /* the iteration's first read */
    }
    w->activity++;
}

/* Blocking name resolution, for listeners while a worker starts and for
 * the admin endpoint; backends resolve without blocking (sh_upstream.c).
 * sh_resolve: SH_OK with *res set (freeaddrinfo it), or SH_ERROR with the
 * reason in errbuf. */
struct addrinfo;
int sh_resolve(const char *host, int port, int passive,
    struct addrinfo **res, char *errbuf, size_t errlen);

/*
 * Socket traffic by side, for shotover_socket_*_total: what the read
 * callbacks got and what each write system call (or queued write) took,
 * toward clients or toward backends (SH_SIDE_NONE: not counted, the admin
 * endpoint).
 */
enum { SH_SIDE_CLIENT, SH_SIDE_BACKEND, SH_SIDES, SH_SIDE_NONE = SH_SIDES };
void sh_io_read(int side, size_t bytes);
void sh_io_write(int side, size_t bytes);
void sh_io_read_batch(int side);     /* an io_uring submission of reads */
void sh_io_write_batch(int side);    /* ... of writes (to that side) */

/*
 * sh_try_write: write bufs[0..n) now, without a write request, when nothing
 * is queued ahead.  Returns how many leading bytes went out (0 when none
 * could), or a negative libuv error; counted for side.  sh_skip_written: drop the first `done`
 * bytes from bufs[0..n), returning the index of the first buffer with bytes
 * left (adjusted in place).
 */
ssize_t sh_try_write(uv_stream_t *s, const uv_buf_t *bufs, uint32_t n,
    int side);

/*
 * Writes of bytes we do not keep (TLS records, small frames copied flat):
 * sh_write_buf writes p[0..len) now as far as the socket takes it and
 * copies the rest into one queued write calling cb (req.data = data),
 * which must end with sh_copy_write_done(req).  Returns 0 (all written),
 * 1 (the rest queued: cb will run) or a negative libuv error.
 *
 * sh_write_flat does the same for bufs[0..n) (total bytes), copied into
 * one buffer first, when sh_write_flat_fits: many small buffers cost the
 * kernel more (an iovec each: its import, bounds check and copy) than one
 * copy of the bytes costs here.  sh_write_buffers_free: the thread's copy
 * buffer goes (worker exit, memory release).
 */
typedef struct sh_copy_write_s {
    uv_write_t req;          /* its libuv request (req.data: the caller's) */
    size_t len;              /* bytes in data */
    uint8_t data[];
} sh_copy_write_t;

#define SH_WRITE_FLAT_MAX (64 * 1024)   /* bytes copied flat at most */
#define SH_WRITE_FLAT_AVG 1024          /* ... in buffers this small */

static inline int
sh_write_flat_fits(uint32_t n, size_t total)
{
    return n > 1 && total <= SH_WRITE_FLAT_MAX
           && total <= (size_t) n * SH_WRITE_FLAT_AVG;
}

int sh_write_buf(uv_stream_t *s, const char *p, size_t len, int side,
    uv_write_cb cb, void *data);
int sh_write_flat(uv_stream_t *s, const uv_buf_t *bufs, uint32_t n,
    size_t total, int side, uv_write_cb cb, void *data);
void sh_copy_write_done(uv_write_t *req);
void sh_write_buffers_free(void);
uint32_t sh_skip_written(uv_buf_t *bufs, uint32_t n, size_t done);

#endif /* SH_WORKER_H */
