/*
 * sh_worker.c -- what every layer shares of a worker: its loop's pre-poll
 * hooks, blocking name resolution for start-up, and socket write helpers.
 * The threads themselves are c/sh_server.c's.
 */
#include <fcntl.h>
#include <malloc.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sh_buf.h"
#include "sh_lua.h"
#include "sh_metrics.h"
#include "sh_tls.h"
#include "sh_uring.h"
#include "sh_worker.h"

__thread sh_worker_t *sh_worker_cur;

static sh_metric_t *sh_worker_releases;  /* memory given back, all workers */

/*
 * Busy polling.  Without it a request through shotover costs two sleeps
 * where Redis direct costs one: shotover blocks for the client's request,
 * then again for the backend's reply, and each wake-up is a context switch
 * (~15-20 us of CPU on a VM; docs/architecture.md has the measurements).
 * So after an iteration that read anything the loop keeps polling without
 * sleeping (an active idle handle makes libuv's epoll_wait timeout 0) for
 * up to a budget, and sleeps only when nothing came within it.
 *
 * The budget adapts, as KVM's halt polling does: a wait that ended within
 * the longest poll (busy_poll_us) -- caught by polling, or one that polling
 * would have caught -- sets the budget to that longest poll; a longer one
 * halves it, so a backend or clients that take longer than the poll cost
 * no CPU after a few waits.  Waiting for a backend's reply (the iteration
 * wrote to one) and for clients' next requests keep separate budgets: a
 * client that thinks for a millisecond between requests does not stop the
 * poll for the fast backend behind it.
 *
 * Polling must not take the CPU from what it waits for.  When the machine
 * has fewer free CPUs than busy processes (the backend and the clients on
 * the same host), the scheduler preempts the polling loop; an iteration
 * that read nothing yet took far longer than an empty poll shows it, and
 * polling stops for a while: sleeping in epoll_wait lets the backend run.
 * The pause starts at 100 us and doubles with each preemption, up to 100 ms;
 * each poll that catches work halves it: a machine that is only sometimes
 * short of CPU (another VM's load) loses a few polls now and then, one
 * always short of it hardly polls.
 */
#define SH_WORKER_SPIN_MIN_NS 1000       /* a budget below it is none */
#define SH_WORKER_SPIN_STOLEN_NS 20000   /* an empty iteration this long:
                                            the CPU was taken from us */
#define SH_WORKER_SPIN_PAUSE_MIN_NS 100000    /* then no polling for 100 us, */
#define SH_WORKER_SPIN_PAUSE_MAX_NS 100000000 /* ... doubling up to 100 ms */

/*
 * Do tasks wait for a CPU?  Polling takes one: worth it while others can
 * run elsewhere, not when the backend or the clients on the same host
 * queue for it.  The kernel's pressure stall information says
 * (/proc/pressure/cpu, "some": the share of time at least one runnable
 * task waited), read at most every 10 ms while polling is considered and
 * smoothed over about 40 ms.  Measured on two vCPUs with redis-benchmark,
 * shotover and redis-server: 50 clients stalled 19 % of the time, and
 * polling there made shotover slower than sleeping, whose wake-ups each
 * serve several requests; one client 4-6 %, and polling took a third off
 * its round trip; an idle VM reads 4-7 %.  The worker's own run delay
 * (schedstat) was tried first: a polling worker holds its CPU, so it is
 * the others that wait, and its own delay fell to 3 % at 50 clients.
 * Without PSI (kernels before 4.20, psi=0) only the preemption check
 * guards.
 */
#define SH_WORKER_PSI_PERIOD_NS 10000000 /* read it this often */
#define SH_WORKER_PSI_LIMIT 12           /* % of the time: contended */

static int
sh_worker_cpu_contended(sh_worker_t *w, uint64_t now)
{
    char buf[256], *p;
    uint64_t total, pct;
    ssize_t n;

    if (w->psi_fd < 0 || now - w->psi_at < SH_WORKER_PSI_PERIOD_NS) {
        return w->psi_pct > SH_WORKER_PSI_LIMIT;
    }
    n = pread(w->psi_fd, buf, sizeof(buf) - 1, 0);
    p = NULL;
    if (n > 0) {
        buf[n] = '\0';
        p = strstr(buf, "total=");       /* the first line's: "some" */
    }
    if (p == NULL) {
        close(w->psi_fd);                /* unreadable: never mind it */
        w->psi_fd = -1;
        w->psi_pct = 0;
        return 0;
    }
    total = strtoull(p + 6, NULL, 10);   /* us */
    if (w->psi_at != 0) {
        pct = (total - w->psi_total) * 1000 * 100 / (now - w->psi_at);
        w->psi_pct = (3 * w->psi_pct + sh_min(pct, 100)) / 4;
    }
    w->psi_total = total;
    w->psi_at = now;
    return w->psi_pct > SH_WORKER_PSI_LIMIT;
}

/*
 * Is the worker busy?  Polling saves the wake-ups of a worker that mostly
 * waits (one client: a request's work is a fifth of its round trip);
 * a busy one is better off sleeping, because what arrives during a
 * wake-up is then read, sent on and answered in one go.  Measured at ten
 * clients without pipelining: polling took the worker from 19.7 to 24.6 us
 * per request and Redis behind it from 7.2 to 9.5, smaller batches each
 * way.  So polling stops while the worker spends more than 40 % of its
 * time working (from its first read to the end of each iteration,
 * smoothed over about 40 ms of 10 ms windows).
 */
#define SH_WORKER_BUSY_PERIOD_NS 10000000
#define SH_WORKER_BUSY_LIMIT 40

static int
sh_worker_busy(sh_worker_t *w, uint64_t now, int worked)
{
    if (worked && w->work_since != 0 && now > w->work_since) {
        w->busy_ns += now - w->work_since;
    }
    if (now - w->busy_at >= SH_WORKER_BUSY_PERIOD_NS) {
        if (w->busy_at != 0) {
            w->busy_pct = (3 * w->busy_pct
                           + sh_min(w->busy_ns * 100 / (now - w->busy_at),
                                    100)) / 4;
        }
        w->busy_at = now;
        w->busy_ns = 0;
    }
    return w->busy_pct > SH_WORKER_BUSY_LIMIT;
}

static void
sh_worker_spin_cb(uv_idle_t *h)
{
    sh_unused(h);                        /* its being active is the point */
}

/* busy polls by how they ended, all workers (made by the first worker) */
enum { SH_SPIN_CAUGHT, SH_SPIN_EXPIRED, SH_SPIN_PREEMPTED, SH_SPIN_ENDS };
static sh_metric_t *sh_worker_spins[SH_SPIN_ENDS];

static void
sh_worker_spin(sh_worker_t *w)
{
    uint64_t now = uv_hrtime(), *b;
    int spinning = uv_is_active((uv_handle_t *) &w->spin), end = -1;
    int busy = sh_worker_busy(w, now, w->activity != w->activity_seen);

    if (w->activity != w->activity_seen) {
        w->activity_seen = w->activity;
        if (w->spin_since != 0) {
            b = &w->spin_budget[w->spin_kind];
            if (now - w->spin_since <= w->spin_max) {
                *b = w->spin_max;
            } else if ((*b >>= 1) < SH_WORKER_SPIN_MIN_NS) {
                *b = 0;
            }
        }
        w->spin_since = now;
        w->spin_kind = w->sent ? 0 : 1;
        w->sent = 0;
        end = SH_SPIN_CAUGHT;
        if (spinning && (w->spin_pause >>= 1) < SH_WORKER_SPIN_PAUSE_MIN_NS) {
            w->spin_pause = 0;
        }
    } else if (spinning && now - w->spin_last > SH_WORKER_SPIN_STOLEN_NS) {
        w->spin_pause = sh_min(sh_max(w->spin_pause * 2,
                                      SH_WORKER_SPIN_PAUSE_MIN_NS),
                               SH_WORKER_SPIN_PAUSE_MAX_NS);
        w->spin_off_until = now + w->spin_pause;
        end = SH_SPIN_PREEMPTED;
    }
    w->spin_last = now;
    if (w->spin_since != 0
        && now - w->spin_since < w->spin_budget[w->spin_kind]
        && now >= w->spin_off_until && !busy
        && !sh_worker_cpu_contended(w, now))
    {
        uv_idle_start(&w->spin, sh_worker_spin_cb);
    } else {
        uv_idle_stop(&w->spin);
        if (end < 0) {
            end = SH_SPIN_EXPIRED;
        }
    }
    if (spinning && end >= 0) {
        sh_ffi_metric_add(sh_worker_spins[end], 1);
    }
}

void
sh_worker_busy_poll(sh_worker_t *w, uint32_t us)
{
    w->spin_max = (uint64_t) us * 1000;
    w->spin_budget[0] = w->spin_budget[1] = w->spin_max;
    if (w->spin_max == 0) {
        uv_idle_stop(&w->spin);
    } else if (w->psi_fd < 0) {
        w->psi_fd = open("/proc/pressure/cpu", O_RDONLY | O_CLOEXEC);
        w->psi_at = 0;
    }
}

static void
sh_worker_prepoll_cb(uv_prepare_t *p)
{
    sh_worker_t *w = p->data;
    int i, any, rounds = 0;

    do {
        any = 0;
        for (i = 0; i < w->nhooks; i++) {
            any |= w->hooks[i](w);
        }
    } while (any && ++rounds < 64);      /* 64: a bound, never reached */
    sh_uring_flush(w);  /* nothing batched waits past the poll (a hook added
                           after it, such as a pool reaper, may have written) */
    if (w->spin_max != 0) {
        sh_worker_spin(w);
    }
}

static void
sh_worker_afterpoll_cb(uv_check_t *h)
{
    sh_uring_after_poll(h->data);
}

/* [side][reads, bytes read, writes, bytes written], all workers */
static sh_metric_t *sh_io[SH_SIDES][4];
/* io_uring submissions (sh_uring.c) with reads, with writes, per side */
static sh_metric_t *sh_io_batches[2][SH_SIDES];

void
sh_io_read(int side, size_t bytes)
{
    if (side < SH_SIDES) {
        sh_ffi_metric_add(sh_io[side][0], 1);
        sh_ffi_metric_add(sh_io[side][1], (int64_t) bytes);
    }
}

void
sh_io_write(int side, size_t bytes)
{
    if (side < SH_SIDES) {
        sh_ffi_metric_add(sh_io[side][2], 1);
        sh_ffi_metric_add(sh_io[side][3], (int64_t) bytes);
    }
}

void
sh_io_read_batch(int side)
{
    if (side < SH_SIDES) {
        sh_ffi_metric_add(sh_io_batches[0][side], 1);
    }
}

void
sh_io_write_batch(int side)
{
    if (side < SH_SIDES) {
        sh_ffi_metric_add(sh_io_batches[1][side], 1);
    }
}

static void
sh_io_metrics(void)
{
    static const char *sides[SH_SIDES] = {
        "side=\"client\"", "side=\"backend\""
    };
    static const char *names[4][2] = {
        { "shotover_socket_reads_total", "socket reads that returned data "
          "(client: from clients; backend: from backends)" },
        { "shotover_socket_read_bytes_total", "bytes those reads returned" },
        { "shotover_socket_writes_total", "socket writes (one writev or "
          "one send of a batch each, or one queued write that libuv "
          "finishes)" },
        { "shotover_socket_written_bytes_total", "bytes those writes took" },
    };
    int s, k;

    for (s = 0; s < SH_SIDES; s++) {
        for (k = 0; k < 4; k++) {
            sh_io[s][k] = sh_metric_get(SH_METRIC_COUNTER, names[k][0],
                                        names[k][1], sides[s]);
        }
    }
    for (s = 0; s < SH_SIDES; s++) {
        sh_io_batches[0][s] = sh_metric_get(SH_METRIC_COUNTER,
            "shotover_socket_read_batches_total", "io_uring submissions "
            "with receives from that side's sockets: what one poll found "
            "readable (io_uring)", sides[s]);
        sh_io_batches[1][s] = sh_metric_get(SH_METRIC_COUNTER,
            "shotover_socket_write_batches_total", "io_uring submissions "
            "with sends to that side's sockets: what a loop iteration "
            "wrote (io_uring)", sides[s]);
    }
}

void
sh_worker_init(sh_worker_t *w, int id)
{
    w->id = id;
    uv_loop_init(&w->loop);
    uv_prepare_init(&w->loop, &w->prepoll);
    w->prepoll.data = w;
    uv_prepare_start(&w->prepoll, sh_worker_prepoll_cb);
    uv_unref((uv_handle_t *) &w->prepoll);
    uv_check_init(&w->loop, &w->afterpoll);
    w->afterpoll.data = w;
    uv_check_start(&w->afterpoll, sh_worker_afterpoll_cb);
    uv_unref((uv_handle_t *) &w->afterpoll);
    if (sh_worker_releases == NULL) {   /* (workers start one by one) */
        static const char *ends[SH_SPIN_ENDS] = {
            "result=\"caught\"", "result=\"expired\"",
            "result=\"preempted\""
        };
        int i;

        sh_worker_releases = sh_metric_get(SH_METRIC_COUNTER,
            "shotover_memory_releases_total", "times a worker gave idle "
            "memory back to the system after a burst of connections", "");
        sh_io_metrics();
        for (i = 0; i < SH_SPIN_ENDS; i++) {
            sh_worker_spins[i] = sh_metric_get(SH_METRIC_COUNTER,
                "shotover_busy_polls_total", "busy polls (busy_poll_us) by "
                "how they ended: caught work, ran out, or the CPU was taken "
                "(polling then pauses)", ends[i]);
        }
    }
    uv_timer_init(&w->loop, &w->release);
    w->release.data = w;
    uv_unref((uv_handle_t *) &w->release);
    uv_idle_init(&w->loop, &w->spin);
    uv_unref((uv_handle_t *) &w->spin);
    w->psi_fd = -1;
}

void
sh_worker_close_handles(sh_worker_t *w)
{
    sh_uring_enable(w, 0, NULL, 0);
    uv_close((uv_handle_t *) &w->prepoll, NULL);
    uv_close((uv_handle_t *) &w->afterpoll, NULL);
    uv_close((uv_handle_t *) &w->release, NULL);
    uv_close((uv_handle_t *) &w->spin, NULL);
    if (w->psi_fd >= 0) {
        close(w->psi_fd);
        w->psi_fd = -1;
    }
}

/*
 * Memory after a burst of connections.  Each connection's memory (its
 * struct, reader, 16 KiB buffer, Lua session and coroutine) is free once it
 * closes, but not given back: glibc returns only the top of a heap, and
 * LuaJIT collects only as new garbage is made, which an idle proxy does not
 * do.  Measured: rounds of 8k connections opened, pinged and closed took
 * RSS from 5 to 110 MB with 0.6 MB in use.  So when a worker's connections
 * fall well below their peak, it waits for the closing to stop, then
 * collects its Lua state in full, empties its frame and batch pools and
 * calls malloc_trim(0), which gives the free pages of every arena back
 * (MADV_DONTNEED).  This costs milliseconds once per burst, never anything
 * per request; a steady number of connections, however fast they churn,
 * never triggers it.  The Lua states allocate with malloc too (sh_lua.c says
 * why), so their free pages go back the same way.
 */
#define SH_WORKER_RELEASE_MIN 256        /* connections gone, at least */
#define SH_WORKER_RELEASE_DELAY_MS 1000  /* quiet time before releasing */

static void
sh_worker_release_memory(sh_worker_t *w)
{
    if (w->L != NULL) {
        sh_lua_release_memory(w->L);
    }
    sh_buf_pools_free();
    sh_tls_buffers_free();
    sh_write_buffers_free();
    malloc_trim(0);
    sh_ffi_metric_add(sh_worker_releases, 1);
    w->peak_conns = w->nconns;
}

static void
sh_worker_release_cb(uv_timer_t *t)
{
    sh_worker_t *w = t->data;

    if (w->nconns * 2 <= w->peak_conns
        && w->peak_conns - w->nconns >= SH_WORKER_RELEASE_MIN)
    {
        sh_worker_release_memory(w);
    }
}

void
sh_worker_conns(sh_worker_t *w, int delta)
{
    w->nconns += (uint32_t) delta;
    if (w->nconns > w->peak_conns) {
        w->peak_conns = w->nconns;
    }
    /* (re)armed by each close while the burst goes on: it fires once
     * the closing has been quiet for the delay */
    if (delta < 0 && w->nconns * 2 <= w->peak_conns
        && w->peak_conns - w->nconns >= SH_WORKER_RELEASE_MIN)
    {
        uv_timer_start(&w->release, sh_worker_release_cb,
                       SH_WORKER_RELEASE_DELAY_MS, 0);
    }
}

void
sh_worker_hook(sh_worker_t *w, sh_worker_hook_fn fn)
{
    int i;

    for (i = 0; i < w->nhooks; i++) {
        if (w->hooks[i] == fn) {
            return;
        }
    }
    if (w->nhooks == SH_WORKER_HOOKS) {
        sh_log_error("worker %d: too many pre-poll hooks", w->id);
        abort();                         /* a build-time mistake */
    }
    w->hooks[w->nhooks++] = fn;
}

/*
 * sh_resolve: host:port to an address (passive: for bind).  Returns SH_OK
 * with *res set (freeaddrinfo it), or SH_ERROR with the reason in errbuf.
 * Blocking: only called while a worker starts.
 */
int
sh_resolve(const char *host, int port, int passive, struct addrinfo **res,
    char *errbuf, size_t errlen)
{
    struct addrinfo hints;
    char portstr[16];
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = passive ? AI_PASSIVE : 0;
    snprintf(portstr, sizeof(portstr), "%d", port);
    *res = NULL;
    rc = getaddrinfo(host, portstr, &hints, res);
    if (rc != 0 || *res == NULL) {
        snprintf(errbuf, errlen, "cannot resolve \"%s\": %s", host,
                 gai_strerror(rc));
        return SH_ERROR;
    }
    return SH_OK;
}

/*
 * sh_try_write: write bufs[0..n) now, without a write request, when nothing
 * is queued ahead.  Returns how many leading bytes went out (0 when none
 * could), or a negative libuv error.
 *
 * Why: libuv 1.44 follows every completed uv_write with an epoll_ctl(MOD)
 * on the socket (uv__io_stop re-queues the watcher even when its events do
 * not change), one extra system call per reply.  uv_try_write costs just
 * the writev.
 */
ssize_t
sh_try_write(uv_stream_t *s, const uv_buf_t *bufs, uint32_t n, int side)
{
    int rc;

    if (sh_worker_cur != NULL) {
        sh_uring_before(sh_worker_cur, s); /* what was batched goes first */
    }
    if (uv_stream_get_write_queue_size(s) > 0) {
        return 0;                        /* keep the order: queue behind */
    }
    rc = uv_try_write(s, bufs, n);
    if (rc == UV_EAGAIN) {
        return 0;
    }
    if (rc > 0) {
        sh_io_write(side, (size_t) rc);
    }
    return rc;
}


static __thread char *sh_write_scratch;  /* small frames copied flat */

int
sh_write_buf(uv_stream_t *s, const char *p, size_t len, int side,
    uv_write_cb cb, void *data)
{
    sh_copy_write_t *wr;
    uv_buf_t buf = uv_buf_init((char *) p, (unsigned int) len);
    ssize_t done;
    int rc;

    done = sh_try_write(s, &buf, 1, side);
    if (done < 0) {
        return (int) done;
    }
    if ((size_t) done == len) {
        return 0;
    }
    wr = sh_alloc(sizeof(*wr) + len - (size_t) done);
    wr->len = len - (size_t) done;
    memcpy(wr->data, p + done, wr->len);
    wr->req.data = data;
    buf = uv_buf_init((char *) wr->data, (unsigned int) wr->len);
    rc = uv_write(&wr->req, s, &buf, 1, cb);
    if (rc != 0) {
        sh_free(wr);
        return rc;
    }
    sh_io_write(side, wr->len);
    return 1;
}

int
sh_write_flat(uv_stream_t *s, const uv_buf_t *bufs, uint32_t n, size_t total,
    int side, uv_write_cb cb, void *data)
{
    char *p;
    uint32_t i;

    if (sh_write_scratch == NULL) {
        sh_write_scratch = sh_alloc(SH_WRITE_FLAT_MAX);
    }
    p = sh_write_scratch;
    for (i = 0; i < n; i++) {
        memcpy(p, bufs[i].base, bufs[i].len);
        p += bufs[i].len;
    }
    return sh_write_buf(s, sh_write_scratch, total, side, cb, data);
}

void
sh_copy_write_done(uv_write_t *req)
{
    sh_free((sh_copy_write_t *) req);
}

void
sh_write_buffers_free(void)
{
    sh_free(sh_write_scratch);
    sh_write_scratch = NULL;
}

/*
 * sh_skip_written: drop the first `done` bytes from bufs[0..*n), returning
 * the index of the first buffer with bytes left (adjusted in place).
 */
uint32_t
sh_skip_written(uv_buf_t *bufs, uint32_t n, size_t done)
{
    uint32_t i = 0;

    while (i < n && done >= bufs[i].len) {
        done -= bufs[i].len;
        i++;
    }
    if (i < n) {
        bufs[i].base += done;
        bufs[i].len -= done;
    }
    return i;
}
