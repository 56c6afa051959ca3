/*
 * sh_server.c -- worker threads.  Each owns a loop, a Lua state and its own
 * SO_REUSEPORT listening sockets, so a connection lives its whole life on
 * one thread and nothing on the hot path takes a lock.  The main thread
 * handles signals and the admin endpoint.
 */
#define _GNU_SOURCE              /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lauxlib.h>

#include "sh_admin.h"
#include "sh_conn.h"
#include "sh_cql_pool.h"
#include "sh_lua.h"
#include "sh_metrics.h"
#include "sh_redis_pool.h"
#include "sh_server.h"
#include "sh_tls.h"
#include "sh_upstream.h"
#include "sh_uring.h"
#include "sh_watch.h"

/* Connections accepted per readiness callback before the loop moves on:
 * other sockets of the worker get their turn under a flood of connects
 * (the poll is level-triggered, so the rest come next iteration). */
#define SH_ACCEPT_BATCH 64
/* How long accepting pauses after an error nothing could be done about
 * (nginx pauses 500 ms at EMFILE; what frees fds here is a client leaving,
 * so sooner is better). */
#define SH_ACCEPT_PAUSE_MS 100

/* One message a second, for every source and worker together. */
static sh_log_limit_t sh_accept_log_limit;

/* Each worker's spare descriptor, given up at the fd limit to accept and
 * close what waits (libuv's uv__emfile_trick, per loop as there). */
static __thread int sh_accept_reserve = -1;

static void
sh_listener_close_cb(uv_handle_t *h)
{
    sh_listener_t *l = h->data;

    if (--l->open_handles == 0) {
        close(l->fd);
        sh_listener_release(l);          /* or its last connection does */
    }
}

static void
sh_listener_close(sh_listener_t *l)
{
    uv_close((uv_handle_t *) &l->poll, sh_listener_close_cb);
    uv_close((uv_handle_t *) &l->pause, sh_listener_close_cb);
}

/* Serialises sending to a worker's stop, drain and reload handles with
 * their closing: a send after the close would touch a loop that is gone. */
static uv_mutex_t sh_stop_mu;
static uv_once_t sh_stop_once = UV_ONCE_INIT;

static void
sh_stop_mu_init(void)
{
    uv_mutex_init(&sh_stop_mu);
}

/* Send to handle a (stop, drain or reload) of w unless w closed them. */
static void
sh_worker_signal(sh_worker_t *w, uv_async_t *a)
{
    uv_mutex_lock(&sh_stop_mu);
    if (!w->stop_closed) {
        uv_async_send(a);
    }
    uv_mutex_unlock(&sh_stop_mu);
}

static void
sh_worker_stop_cb(uv_async_t *a)
{
    sh_worker_t *w = a->data;

    if (w->stopping) {
        return;
    }
    w->stopping = 1;
    while (w->listeners != NULL) {
        sh_listener_t *l = w->listeners;
        w->listeners = l->next;
        sh_listener_close(l);
    }
    if (sh_accept_reserve >= 0) {
        close(sh_accept_reserve);
        sh_accept_reserve = -1;
    }
    sh_conn_close_all(w);
    sh_redis_pools_close(w);
    sh_cql_pools_close(w);
    sh_watches_close(w);
    sh_worker_close_handles(w);
    uv_mutex_lock(&sh_stop_mu);
    w->stop_closed = 1;
    uv_close((uv_handle_t *) &w->stop, NULL);
    uv_close((uv_handle_t *) &w->drain, NULL);
    uv_close((uv_handle_t *) &w->reload, NULL);
    uv_mutex_unlock(&sh_stop_mu);
    uv_close((uv_handle_t *) &w->collect, NULL);
}

/* Drop, now and then, the configurations that no connection runs. */
static void
sh_worker_collect_cb(uv_timer_t *t)
{
    sh_worker_t *w = t->data;

    if (sh_lua_worker_collect(w) <= 0) {
        uv_timer_stop(t);
    }
}

static sh_worker_t **sh_workers;
static int sh_nworkers;

/*
 * Reload (SIGHUP, POST /reload; the main thread checked the config): new
 * chains for new connections, listeners kept, opened or closed
 * (shotover.worker.reload).  The connections there are keep the chains
 * they started with until they leave -- a pinned Redis connection, a
 * MULTI, a CQL session stay as they were -- and a configuration is dropped
 * once none runs it (the collect timer).
 */
static void
sh_worker_reload_cb(uv_async_t *a)
{
    sh_worker_t *w = a->data;
    char err[4096];

    if (w->stopping || w->draining) {
        return;
    }
    if (sh_lua_worker_reload(w, err, sizeof(err)) != SH_OK) {
        sh_log_error("worker %d: reload: %s", w->id, err);
    } else {
        sh_log_info("worker %d: reloaded %s: new connections run the new "
                    "configuration", w->id, w->conf_path);
    }
    if (!uv_is_active((uv_handle_t *) &w->collect)) {
        uv_timer_start(&w->collect, sh_worker_collect_cb, 1000, 1000);
    }
    /* one worker after the other, as at start: the first one checks that
     * a new address is free before any binds it */
    if (w->id + 1 < sh_nworkers) {
        sh_worker_signal(sh_workers[w->id + 1], &sh_workers[w->id + 1]->reload);
    }
}

/*
 * Drain (SIGTERM, SIGINT): accept nothing more; every connection reads
 * nothing more and closes once the requests it has read are answered and
 * written (an idle one at once); the worker stops when none is left and
 * its asynchronous tee copies are done (sh_worker_drained), or when the
 * main thread's drain_timeout stops it.
 */
static void
sh_worker_drain_cb(uv_async_t *a)
{
    sh_worker_t *w = a->data;

    if (w->stopping || w->draining) {
        return;
    }
    w->draining = 1;
    while (w->listeners != NULL) {
        sh_listener_t *l = w->listeners;
        w->listeners = l->next;
        sh_listener_close(l);
    }
    sh_conn_drain_all(w);
}

/* The pre-poll hook of a draining worker: stop once nothing is left. */
static int
sh_worker_drained(sh_worker_t *w)
{
    if (w->draining && !w->stopping && w->conns == NULL
        && w->shadows == NULL)
    {
        uv_async_send(&w->stop);         /* our own: stop_cb runs next */
    }
    return 0;
}

static void
sh_worker_main(void *arg)
{
    sh_worker_t *w = arg;
    char err[4096];

    sh_worker_cur = w;
    if (sh_lua_worker_init(w, err, sizeof(err)) != SH_OK) {
        sh_log_error("worker %d: %s", w->id, err);
        w->init_failed = 1;
        uv_sem_post(&w->ready);
        /* the main thread sends the stop */
        uv_run(&w->loop, UV_RUN_DEFAULT);
    } else {
        uv_sem_post(&w->ready);
        uv_run(&w->loop, UV_RUN_DEFAULT);
    }
    __atomic_store_n(&w->exited, 1, __ATOMIC_RELEASE);
    if (w->L != NULL) {
        sh_lua_close(w->L);
        w->L = NULL;
    }
    uv_run(&w->loop, UV_RUN_NOWAIT);
    sh_buf_pools_free();
    sh_tls_buffers_free();
    sh_write_buffers_free();
    if (uv_loop_close(&w->loop) != 0) {
        sh_log_warn("worker %d: loop closed with handles open", w->id);
    }
}


static void
sh_workers_stop(void)
{
    int i;

    for (i = 0; i < sh_nworkers; i++) {
        sh_worker_signal(sh_workers[i], &sh_workers[i]->stop);
    }
}

/* The main thread: signals, drain, reload (sh_workers_run). */
static struct {
    uv_signal_t sigint, sigterm, sighup;
    const char *conf_path;   /* the config file, read again on reload */
    int admin_port;          /* the admin port (0: none): a reload that
                                changes it or the workers is told that
                                takes a restart */
    uv_timer_t tick;         /* watches the workers and the deadline */
    uint64_t deadline;       /* loop ms at which what remains is closed */
    uint32_t timeout_ms;     /* drain_timeout */
    int draining;            /* a first signal came */
    int forced;              /* the workers were told to stop */
} sh_main;

static const char *
sh_signal_name(int signum)
{
    return signum == SIGINT ? "SIGINT" : "SIGTERM";
}

static void
sh_main_finish(void)
{
    uv_timer_stop(&sh_main.tick);
    uv_close((uv_handle_t *) &sh_main.tick, NULL);
    uv_close((uv_handle_t *) &sh_main.sigint, NULL);
    uv_close((uv_handle_t *) &sh_main.sigterm, NULL);
    uv_close((uv_handle_t *) &sh_main.sighup, NULL);
    sh_admin_stop();
}

/*
 * Reload (SIGHUP, POST /reload): check the config file as `shotover check`
 * does; a config with problems is refused with each one logged, and the
 * old one serves on.  A valid one goes to every worker
 * (sh_worker_reload_cb).  `workers` and `admin` take a restart.
 */
static int
sh_server_reload(const char *why, char *out, size_t outlen)
{
    char err[8192];
    sh_lua_conf_t lc;
    char *line, *save = NULL;

    if (sh_main.draining) {
        snprintf(out, outlen, "draining: no reload");
        sh_log_warn("%s while draining: not reloading", why);
        return SH_ERROR;
    }
    if (sh_lua_check(sh_main.conf_path, &lc, err, sizeof(err)) != SH_OK)
    {
        snprintf(out, outlen, "%s", err);
        sh_log_error("%s: %s is not valid; the running configuration "
                     "stays:", why, sh_main.conf_path);
        for (line = strtok_r(err, "\n", &save); line != NULL;
             line = strtok_r(NULL, "\n", &save))
        {
            sh_log_error("%s: %s", why, line);
        }
        return SH_ERROR;
    }
    sh_main.timeout_ms = lc.drain_timeout_ms;
    if (lc.workers <= 0) {
        lc.workers = (int) uv_available_parallelism();
    }
    if (sh_admin_set_tls(lc.admin_tls) == SH_DECLINED
        && lc.admin_port != 0 && sh_main.admin_port != 0)
    {
        sh_log_warn("%s: admin.tls was added or removed: that takes a "
                    "restart", why);
    }
    if (lc.workers != sh_nworkers || lc.admin_port != sh_main.admin_port) {
        sh_log_warn("%s: `workers` or `admin` changed: that takes a restart; "
                    "the rest of the config is loaded", why);
    }
    sh_log_info("%s: %s is valid; loading it", why, sh_main.conf_path);
    sh_notify_reloading();
    sh_worker_signal(sh_workers[0], &sh_workers[0]->reload);  /* it passes
                                                              it on */
    sh_notify_ready();
    out[0] = '\0';
    return SH_OK;
}

static void
sh_sighup_cb(uv_signal_t *s, int signum)
{
    char out[64];

    sh_unused(s);
    sh_unused(signum);
    (void) sh_server_reload("SIGHUP", out, sizeof(out));
}

static void
sh_main_tick(uv_timer_t *t)
{
    int i, left = 0;

    for (i = 0; i < sh_nworkers; i++) {
        left += !__atomic_load_n(&sh_workers[i]->exited, __ATOMIC_ACQUIRE);
    }
    if (left == 0) {
        sh_log_info("%s: every connection is closed, exiting",
                    sh_main.forced ? "stopped" : "drained");
        sh_main_finish();
        return;
    }
    if (!sh_main.forced && uv_now(t->loop) >= sh_main.deadline) {
        sh_log_warn("drain_timeout (%ums) reached: closing the connections "
                    "that remain", sh_main.timeout_ms);
        sh_main.forced = 1;
        sh_workers_stop();
    }
}

static void
sh_signal_cb(uv_signal_t *s, int signum)
{
    int i;

    if (sh_main.draining) {
        sh_log_info("received %s while draining: stopping now",
                    sh_signal_name(signum));
        sh_main.forced = 1;
        sh_workers_stop();
        return;
    }
    sh_main.draining = 1;
    sh_log_info("received %s: draining (accepting nothing, closing each "
                "connection once what it sent is answered; at most %ums; a "
                "second signal stops at once)", sh_signal_name(signum),
                sh_main.timeout_ms);
    sh_admin_set_ready(0);
    sh_notify_stopping();                /* systemd: STOPPING=1 */
    for (i = 0; i < sh_nworkers; i++) {
        sh_worker_signal(sh_workers[i], &sh_workers[i]->drain);
    }
    sh_main.deadline = uv_now(s->loop) + sh_main.timeout_ms;
    uv_timer_start(&sh_main.tick, sh_main_tick, 20, 20);
}

/*
 * Make nworkers workers and start their threads one at a time, so a config
 * error is reported once.  Returns non-zero when one failed to start; *n is
 * how many threads were started (the failed one included).
 */
static int
sh_workers_spawn(const char *conf_path, int nworkers, int *n)
{
    int i, failed = 0;

    signal(SIGPIPE, SIG_IGN);
    uv_once(&sh_stop_once, sh_stop_mu_init);
    sh_nworkers = nworkers;
    sh_workers = sh_calloc((size_t) nworkers, sizeof(sh_worker_t *));
    for (i = 0; i < nworkers; i++) {
        sh_worker_t *w = sh_calloc(1, sizeof(*w));

        sh_worker_init(w, i);
        w->conf_path = conf_path;
        uv_async_init(&w->loop, &w->stop, sh_worker_stop_cb);
        w->stop.data = w;
        uv_async_init(&w->loop, &w->drain, sh_worker_drain_cb);
        w->drain.data = w;
        uv_async_init(&w->loop, &w->reload, sh_worker_reload_cb);
        w->reload.data = w;
        uv_timer_init(&w->loop, &w->collect);
        w->collect.data = w;
        sh_worker_hook(w, sh_worker_drained);
        /* connections whose backends answered, or that a shadow's pushes
         * woke, run before the gathered writes go out */
        sh_worker_hook(w, sh_run_wake_all);
        sh_worker_hook(w, sh_upstream_flush_all);
        sh_worker_hook(w, sh_conn_flush_all);
        sh_worker_hook(w, sh_uring_flush);   /* last: all of the above */
        uv_sem_init(&w->ready, 0);
        sh_workers[i] = w;
    }
    for (i = 0; i < nworkers && !failed; i++) {
        uv_thread_create(&sh_workers[i]->thread, sh_worker_main,
                         sh_workers[i]);
        uv_sem_wait(&sh_workers[i]->ready);
        failed = sh_workers[i]->init_failed;
    }
    *n = i;
    return failed;
}

/*
 * Raise the soft open files limit to the hard one at start, as HAProxy and
 * nginx do: every client connection takes a descriptor (and one more for a
 * client pinned to its own backend connection), and the usual soft default
 * of 1024 is far below what a proxy serves.  A hard limit of "unlimited"
 * means the kernel's fs.nr_open.
 */
static void
sh_server_raise_nofile(void)
{
    struct rlimit rl;
    rlim_t was, want;
    FILE *f;
    unsigned long long nr_open;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        sh_log_warn("open files limit: getrlimit: %s", strerror(errno));
        return;
    }
    want = rl.rlim_max;
    if (want == RLIM_INFINITY) {
        f = fopen("/proc/sys/fs/nr_open", "r");
        if (f != NULL && fscanf(f, "%llu", &nr_open) == 1) {
            want = (rlim_t) nr_open;
        } else {
            want = 1024 * 1024;
        }
        if (f != NULL) {
            fclose(f);
        }
    }
    was = rl.rlim_cur;
    if (was != RLIM_INFINITY && was < want) {
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            sh_log_warn("open files limit stays %llu: raising it to the "
                        "hard limit %llu failed: %s",
                        (unsigned long long) was, (unsigned long long) want,
                        strerror(errno));
            return;
        }
        sh_log_info("open files limit raised from %llu to %llu (the hard "
                    "limit)", (unsigned long long) was,
                    (unsigned long long) want);
        return;
    }
    sh_log_info("open files limit %llu (the hard limit is %llu)",
                (unsigned long long) was, (unsigned long long) rl.rlim_max);
}

int
sh_workers_run(const char *conf_path, int nworkers, const char *admin_host,
    int admin_port, const char *admin_token, sh_tls_ctx_t *admin_tls,
    uint32_t drain_timeout_ms)
{
    char err[512];
    uv_loop_t *main_loop = uv_default_loop();
    int i, failed = 0;

    /* a reload asked for while the workers start is not the default
     * action's end of the process: it is ignored until the handler is in
     * place ("running with N workers" is logged after) */
    signal(SIGHUP, SIG_IGN);
    sh_server_raise_nofile();
    failed = sh_workers_spawn(conf_path, nworkers, &i);
    if (failed || admin_port == 0) {
        sh_tls_ctx_unref(admin_tls);
    } else if (sh_admin_start(main_loop, admin_host, admin_port,
                              admin_token, admin_tls, err, sizeof(err))
               != SH_OK)
    {
        sh_log_error("%s", err);
        failed = 1;
        i = nworkers;
    }
    if (failed) {
        nworkers = i;
        sh_nworkers = i;
        sh_workers_stop();
        uv_run(main_loop, UV_RUN_NOWAIT);
    } else {
        char labels[64];

        snprintf(labels, sizeof(labels), "version=\"%s\"", SH_VERSION);
        sh_ffi_metric_add(sh_metric_get(SH_METRIC_GAUGE, "shotover_build_info",
                          "shotover's version (value 1)", labels), 1);
        memset(&sh_main, 0, sizeof(sh_main));
        sh_main.timeout_ms = drain_timeout_ms;
        sh_main.conf_path = conf_path;
        sh_main.admin_port = admin_port;
        sh_admin_set_reload(sh_server_reload);
        uv_signal_init(main_loop, &sh_main.sighup);
        uv_signal_start(&sh_main.sighup, sh_sighup_cb, SIGHUP);
        uv_timer_init(main_loop, &sh_main.tick);
        uv_signal_init(main_loop, &sh_main.sigint);
        uv_signal_init(main_loop, &sh_main.sigterm);
        uv_signal_start(&sh_main.sigint, sh_signal_cb, SIGINT);
        uv_signal_start(&sh_main.sigterm, sh_signal_cb, SIGTERM);
        /* ready once the signals are ours too */
        sh_admin_set_ready(1);
        sh_log_info("shotover %s running with %d worker%s", SH_VERSION,
                    nworkers, nworkers == 1 ? "" : "s");
        sh_notify_ready();       /* every listener is up: systemd's READY=1 */
        uv_run(main_loop, UV_RUN_DEFAULT);
    }
    for (i = 0; i < nworkers; i++) {
        uv_thread_join(&sh_workers[i]->thread);
        uv_sem_destroy(&sh_workers[i]->ready);
        sh_free(sh_workers[i]);
    }
    for (; i < (int) sh_nworkers; i++) {
        sh_free(sh_workers[i]);
    }
    sh_free(sh_workers);
    uv_loop_close(main_loop);
    return failed ? SH_ERROR : SH_OK;
}

/*
 * sh_ffi_workers_start: the workers of sh_workers_run without the main
 * loop, signals or admin endpoint, for `shotover repl` (its Lua code talks
 * to them over loopback from the main thread).  Returns SH_OK once every
 * worker has started, or SH_ERROR (the worker logged why) with none left.
 */
static char *sh_workers_conf;

/* free the repl's workers, their threads joined */
static void
sh_ffi_workers_free(int n)
{
    int i;

    for (i = 0; i < n; i++) {
        uv_sem_destroy(&sh_workers[i]->ready);
        sh_free(sh_workers[i]);
    }
    sh_free(sh_workers);
    sh_workers = NULL;
    sh_nworkers = 0;
    free(sh_workers_conf);
    sh_workers_conf = NULL;
}

int
sh_ffi_workers_start(const char *conf_path, int nworkers, const char **err)
{
    int i, failed = 0;

    if (sh_workers != NULL) {
        *err = "workers are already running";
        return SH_ERROR;
    }
    sh_workers_conf = strdup(conf_path);
    failed = sh_workers_spawn(sh_workers_conf, nworkers, &i);
    if (failed) {
        /* only the first i have threads */
        int started = i;

        for (i = 0; i < started; i++) {
            uv_async_send(&sh_workers[i]->stop);
        }
        for (i = 0; i < started; i++) {
            uv_thread_join(&sh_workers[i]->thread);
        }
        for (i = started; i < nworkers; i++) {
            /* never ran: close its loop's handles here */
            uv_close((uv_handle_t *) &sh_workers[i]->stop, NULL);
            uv_close((uv_handle_t *) &sh_workers[i]->drain, NULL);
            uv_close((uv_handle_t *) &sh_workers[i]->reload, NULL);
            uv_close((uv_handle_t *) &sh_workers[i]->collect, NULL);
            sh_worker_close_handles(sh_workers[i]);
            uv_run(&sh_workers[i]->loop, UV_RUN_NOWAIT);
            uv_loop_close(&sh_workers[i]->loop);
        }
        sh_ffi_workers_free(nworkers);
        *err = "a worker failed to start";
        return SH_ERROR;
    }
    return SH_OK;
}

void
sh_ffi_workers_stop(void)
{
    int i;

    if (sh_workers == NULL) {
        return;
    }
    sh_workers_stop();
    for (i = 0; i < sh_nworkers; i++) {
        uv_thread_join(&sh_workers[i]->thread);
    }
    sh_ffi_workers_free(sh_nworkers);
}

/* --- FFI ---------------------------------------------------------------- */

static void sh_listener_poll_cb(uv_poll_t *p, int status, int events);

static void
sh_listener_resume_cb(uv_timer_t *t)
{
    sh_listener_t *l = t->data;

    uv_poll_start(&l->poll, UV_READABLE, sh_listener_poll_cb);
}

/* Stop accepting for a while: an error that would come back at once. */
static void
sh_listener_pause(sh_listener_t *l)
{
    uv_poll_stop(&l->poll);
    uv_timer_start(&l->pause, sh_listener_resume_cb, SH_ACCEPT_PAUSE_MS, 0);
}

/*
 * accept() failed with err: count the n connections this cost (closed at
 * once when shed, else left waiting while accepting pauses), and say so at
 * most once a second, with how many were not said since.
 */
static void
sh_listener_refused(sh_listener_t *l, int err, uint64_t n, int shed)
{
    int reason = err == EMFILE ? SH_ACCEPT_EMFILE
                 : err == ENFILE ? SH_ACCEPT_ENFILE : SH_ACCEPT_OTHER;
    struct rlimit rl;
    uint64_t held;
    char limit[64] = "", more[64] = "";

    sh_ffi_metric_add(l->accept_errors[reason], (int64_t) n);
    if (!sh_log_limit(&sh_accept_log_limit, 1000, n, &held)) {
        return;
    }
    if (reason == SH_ACCEPT_EMFILE && getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        snprintf(limit, sizeof(limit), " (open files limit %llu)",
                 (unsigned long long) rl.rlim_cur);
    }
    if (held > 0) {
        snprintf(more, sizeof(more), "; %llu more since the last message",
                 (unsigned long long) held);
    }
    sh_log_warn("source \"%s\": accept: %s%s: %s %llu new connection%s%s%s",
                l->name, strerror(err), limit, shed ? "closed" : "cannot take",
                (unsigned long long) n, n == 1 ? "" : "s",
                shed ? " at once" : ", accepting pauses", more);
}

/*
 * Out of descriptors (EMFILE: the process, ENFILE: the system).  The
 * connections waiting in the backlog would wait there, their clients
 * hanging, and the poll would wake us for them at once again: give up the
 * spare descriptor, accept each of them into it and close it (the client
 * sees the connection closed), then take the spare back.  accept(2) says
 * EMFILE before it looks at the backlog, so the trick may find nothing
 * waiting: then nothing was refused.  Without a spare (another thread took
 * the slot it left), a connection that waits pauses accepting instead.
 */
static void
sh_listener_shed(sh_listener_t *l, int err)
{
    struct pollfd pfd;
    uint64_t n = 0;
    int fd;

    if (sh_accept_reserve >= 0) {
        close(sh_accept_reserve);
        sh_accept_reserve = -1;
        while (n < SH_ACCEPT_BATCH * 4) {
            fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                close(fd);
                n++;
            } else if (errno != EINTR && errno != ECONNABORTED) {
                break;
            }
        }
        sh_accept_reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (n > 0) {
            sh_listener_refused(l, err, n, 1);
        }
        return;
    }
    pfd.fd = l->fd;
    pfd.events = POLLIN;
    pfd.revents = 0;
    if (poll(&pfd, 1, 0) == 1) {
        sh_listener_refused(l, err, 1, 0);
        sh_listener_pause(l);
    }
}

/*
 * The listening socket is readable: accept what waits, up to a batch.
 * Errors that concern one connection only (it went away, or the network
 * failed under it) skip it; running out of descriptors sheds the waiting
 * ones; anything else pauses accepting, so the loop never spins on a
 * connection it cannot take.
 */
static void
sh_listener_poll_cb(uv_poll_t *p, int status, int events)
{
    sh_listener_t *l = p->data;
    int i, fd;

    sh_unused(events);
    if (status < 0) {
        sh_log_warn("source \"%s\": poll: %s", l->name, uv_strerror(status));
        sh_listener_pause(l);
        return;
    }
    if (sh_accept_reserve < 0) {
        /* lost while shedding: take it back as soon as there is room */
        sh_accept_reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    for (i = 0; i < SH_ACCEPT_BATCH; i++) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof(sa);

        fd = accept4(l->fd, (struct sockaddr *) &sa, &salen,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            sh_conn_accept(l, fd, (struct sockaddr *) &sa);
            continue;
        }
        switch (errno) {
        case EAGAIN:
#if EWOULDBLOCK != EAGAIN
        case EWOULDBLOCK:
#endif
            return;
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
        case ENETDOWN:
        case ENOPROTOOPT:
        case EHOSTDOWN:
        case ENONET:
        case EHOSTUNREACH:
        case EOPNOTSUPP:
        case ENETUNREACH:
            continue;            /* accept(2): retry, as for EAGAIN */
        case EMFILE:
        case ENFILE:
            sh_listener_shed(l, errno);
            return;
        default:
            sh_listener_refused(l, errno, 1, 0);
            sh_listener_pause(l);
            return;
        }
    }
}

/*
 * Is the address already served -- by another shotover, whose SO_REUSEPORT
 * sockets would let ours bind beside them and silently split the clients,
 * or by anything else?  A socket without SO_REUSEPORT cannot bind where a
 * listener is.  The first worker asks before it binds; the others bind
 * beside it on purpose.  Returns 1 (errbuf says why) when it is taken.
 */
static int
sh_listen_taken(const struct addrinfo *res, const sh_source_conf_t *conf,
    char *errbuf, size_t errlen)
{
    int fd, one = 1, taken = 0;

    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return 0;                        /* the real bind will say */
    }
    /* SO_REUSEADDR: connections of an earlier run in TIME_WAIT are no
     * listener */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0
        && bind(fd, res->ai_addr, res->ai_addrlen) != 0
        && errno == EADDRINUSE)
    {
        snprintf(errbuf, errlen, "cannot listen on %s:%d: the address is "
                 "already in use (another shotover or another program "
                 "serves it, and two would split its clients); stop it, "
                 "or set share_listen = true on the sources of both to "
                 "share it on purpose", conf->host, conf->port);
        taken = 1;
    }
    close(fd);
    return taken;
}

/* Give listener l source conf's settings, name, metrics and
 * configuration (a new listener, or one a reload keeps). */
static void
sh_listener_set(sh_listener_t *l, const sh_source_conf_t *conf)
{
    sh_tls_ctx_t *old = l->conf.tls;
    int i;

    /* a reload's certificates serve new connections; open ones keep
     * theirs (each SSL holds its context) */
    sh_tls_ctx_ref(conf->tls);
    l->conf = *conf;
    sh_tls_ctx_unref(old);
    l->gen = conf->gen;
    l->round = l->w->listen_round;
    snprintf(l->name, sizeof(l->name), "%s", conf->name ? conf->name : "");
    l->conf.name = l->name;
    l->conf.host = NULL;
    {
        char labels[160];

        sh_metric_label(labels, sizeof(labels), 0, "source", l->name);
        l->conns = sh_metric_get(SH_METRIC_GAUGE, "shotover_connections",
                                 "open client connections, per source",
                                 labels);
        l->oom_closes = sh_metric_get(SH_METRIC_COUNTER,
            "shotover_out_of_memory_closes_total", "client connections "
            "closed because a frame they sent could not be given memory",
            labels);
        if (conf->tls != NULL) {
            l->tls_errors = sh_metric_get(SH_METRIC_COUNTER,
                "shotover_tls_handshake_errors_total", "TLS handshakes "
                "that failed (wrong certificate, plain text on a TLS "
                "port, ...)", labels);
        }
        if (conf->lanes > 1) {
            l->lane_batches = sh_metric_get(SH_METRIC_COUNTER,
                "shotover_lane_batches_total", "batches a CQL connection "
                "started while earlier ones of it still ran", labels);
        }
        for (i = 0; i < SH_ACCEPT_REASONS; i++) {
            static const char *const reasons[] = { "emfile", "enfile",
                                                   "other" };
            char all[200];
            size_t n = sh_metric_label(all, sizeof(all), 0, "source",
                                       l->name);

            sh_metric_label(all + n, sizeof(all) - n, 1, "reason",
                            reasons[i]);
            l->accept_errors[i] = sh_metric_get(SH_METRIC_COUNTER,
                "shotover_accept_errors_total", "new connections refused "
                "because accept failed (emfile: at the open files limit)",
                all);
        }
    }
}

/*
 * sh_ffi_source_listen: bind and listen on conf->host:port with SO_REUSEPORT
 * so every worker has its own accept queue.  libuv 1.44 has no flag for it,
 * so the socket is made by hand and handed to uv_tcp_open.
 */
int
sh_ffi_source_listen(sh_worker_t *w, const sh_source_conf_t *conf,
    const char **err)
{
    static __thread char errbuf[300];
    struct addrinfo *res;
    sh_listener_t *l;
    int fd, one = 1, rc;

    if (w == NULL) {
        *err = "sources listen in workers";
        return SH_ERROR;
    }
    for (l = w->listeners; l != NULL; l = l->next) {
        if (l->round != w->listen_round && l->port == conf->port
            && l->conf.proto == conf->proto && strcmp(l->host, conf->host) == 0)
        {
            sh_listener_set(l, conf);    /* a reload keeps it */
            return SH_OK;
        }
    }
    if (sh_resolve(conf->host, conf->port, 1, &res, errbuf, sizeof(errbuf))
        != SH_OK)
    {
        *err = errbuf;
        return SH_ERROR;
    }
    if (w->id == 0 && !conf->share_listen
        && sh_listen_taken(res, conf, errbuf, sizeof(errbuf)))
    {
        *err = errbuf;
        freeaddrinfo(res);
        return SH_ERROR;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    if (fd < 0
        || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0
        || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0
        || bind(fd, res->ai_addr, res->ai_addrlen) != 0
        || listen(fd, 511) != 0)
    {
        snprintf(errbuf, sizeof(errbuf), "cannot listen on %s:%d: %s",
                 conf->host, conf->port, strerror(errno));
        *err = errbuf;
        if (fd >= 0) {
            close(fd);
        }
        freeaddrinfo(res);
        return SH_ERROR;
    }
    freeaddrinfo(res);
    if (sh_accept_reserve < 0) {
        sh_accept_reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    l = sh_calloc(1, sizeof(*l));
    l->fd = fd;
    l->w = w;
    snprintf(l->host, sizeof(l->host), "%s", conf->host);
    l->port = conf->port;
    sh_listener_set(l, conf);
    uv_timer_init(&w->loop, &l->pause);
    l->pause.data = l;
    l->open_handles = 1;
    rc = uv_poll_init_socket(&w->loop, &l->poll, fd);
    if (rc == 0) {
        l->open_handles = 2;
        l->poll.data = l;
        rc = uv_poll_start(&l->poll, UV_READABLE, sh_listener_poll_cb);
    }
    if (rc != 0) {
        snprintf(errbuf, sizeof(errbuf), "cannot listen on %s:%d: %s",
                 conf->host, conf->port, uv_strerror(rc));
        *err = errbuf;
        if (l->open_handles == 2) {
            sh_listener_close(l);
        } else {
            uv_close((uv_handle_t *) &l->pause, sh_listener_close_cb);
        }
        return SH_ERROR;
    }
    l->next = w->listeners;
    w->listeners = l;
    if (w->id == 0) {
        sh_log_info("source \"%s\" listening on %s:%d", l->name, conf->host,
                    conf->port);
    }
    return SH_OK;
}

void
sh_ffi_sources_begin(sh_worker_t *w)
{
    w->listen_round++;
}

void
sh_ffi_sources_prune(sh_worker_t *w)
{
    sh_listener_t **pp = &w->listeners, *l;

    while ((l = *pp) != NULL) {
        if (l->round == w->listen_round) {
            pp = &l->next;
            continue;
        }
        *pp = l->next;
        if (w->id == 0) {
            sh_log_info("source \"%s\" on %s:%d removed: it accepts no more "
                        "connections; those it has stay until they leave",
                        l->name, l->host, l->port);
        }
        sh_listener_close(l);
    }
}

uint32_t
sh_ffi_run_gen(sh_run_t *r)
{
    return r->gen;
}

uint32_t
sh_ffi_worker_gen_conns(sh_worker_t *w, uint32_t gen)
{
    return w->gen_conns[gen % SH_WORKER_GENS];
}

int
sh_ffi_worker_shadows(sh_worker_t *w)
{
    return w->shadows != NULL;
}

void
sh_ffi_worker_busy_poll(sh_worker_t *w, uint32_t us)
{
    sh_worker_busy_poll(w, us);
}

int
sh_ffi_worker_uring(sh_worker_t *w, int on)
{
    static int warned;                   /* once, not once per worker */
    char err[128];

    if (sh_uring_enable(w, on, err, sizeof(err)) == SH_OK) {
        return 1;
    }
    if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED)) {
        sh_log_warn("io_uring: %s; sockets are read and written one by "
                    "one (io_uring = false does so without this warning)",
                    err);
    }
    return 0;
}
