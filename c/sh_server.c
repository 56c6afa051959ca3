/*
 * sh_server.c -- worker threads.  Each owns a loop, a Lua state and its own
 * SO_REUSEPORT listening sockets, so a connection lives its whole life on
 * one thread and nothing on the hot path takes a lock.  The main thread
 * handles signals and the admin endpoint.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
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
#include "sh_upstream.h"

static void
sh_listener_close_cb(uv_handle_t *h)
{
    sh_listener_t *l = (sh_listener_t *) h;

    sh_free(l);
}

static void
sh_worker_stop_cb(uv_async_t *a)
{
    sh_worker_t *w = a->data;

    w->stopping = 1;
    while (w->listeners != NULL) {
        sh_listener_t *l = w->listeners;
        w->listeners = l->next;
        uv_close((uv_handle_t *) &l->tcp, sh_listener_close_cb);
    }
    sh_conn_close_all(w);
    sh_redis_pools_close(w);
    sh_cql_pools_close(w);
    sh_worker_close_handles(w);
    uv_close((uv_handle_t *) &w->stop, NULL);
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
    if (w->L != NULL) {
        lua_close(w->L);
        w->L = NULL;
    }
    uv_run(&w->loop, UV_RUN_NOWAIT);
    sh_buf_pools_free();
    if (uv_loop_close(&w->loop) != 0) {
        sh_log_warn("worker %d: loop closed with handles open", w->id);
    }
}

static sh_worker_t **sh_workers;
static int sh_nworkers;

static void
sh_workers_stop(void)
{
    int i;

    for (i = 0; i < sh_nworkers; i++) {
        uv_async_send(&sh_workers[i]->stop);
    }
}

static void
sh_signal_cb(uv_signal_t *s, int signum)
{
    sh_log_info("received %s, stopping", signum == SIGINT ? "SIGINT"
                                                          : "SIGTERM");
    sh_admin_stop();
    sh_workers_stop();
    uv_close((uv_handle_t *) s, NULL);
    uv_close((uv_handle_t *) s->data, NULL);
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
    sh_nworkers = nworkers;
    sh_workers = sh_calloc((size_t) nworkers, sizeof(sh_worker_t *));
    for (i = 0; i < nworkers; i++) {
        sh_worker_t *w = sh_calloc(1, sizeof(*w));

        sh_worker_init(w, i);
        w->conf_path = conf_path;
        uv_async_init(&w->loop, &w->stop, sh_worker_stop_cb);
        w->stop.data = w;
        /* connections whose backends answered, or that a shadow's pushes
         * woke, run before the gathered writes go out */
        sh_worker_hook(w, sh_run_wake_all);
        sh_worker_hook(w, sh_upstream_flush_all);
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

int
sh_workers_run(const char *conf_path, int nworkers, const char *admin_host,
    int admin_port, const char *admin_token)
{
    char err[512];
    uv_loop_t *main_loop = uv_default_loop();
    uv_signal_t sigint, sigterm;
    int i, failed = 0;

    failed = sh_workers_spawn(conf_path, nworkers, &i);
    if (!failed && admin_port != 0
        && sh_admin_start(main_loop, admin_host, admin_port, admin_token,
                          err, sizeof(err)) != SH_OK)
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
        sh_admin_set_ready(1);
        sh_log_info("shotover %s running with %d worker%s", SH_VERSION,
                    nworkers, nworkers == 1 ? "" : "s");
        uv_signal_init(main_loop, &sigint);
        uv_signal_init(main_loop, &sigterm);
        sigint.data = &sigterm;
        sigterm.data = &sigint;
        uv_signal_start(&sigint, sh_signal_cb, SIGINT);
        uv_signal_start(&sigterm, sh_signal_cb, SIGTERM);
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

static void
sh_listener_cb(uv_stream_t *server, int status)
{
    sh_listener_t *l = (sh_listener_t *) server;

    if (status < 0) {
        sh_log_warn("source \"%s\": accept: %s", l->name, uv_strerror(status));
        return;
    }
    sh_conn_accept(l);
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
    if (sh_resolve(conf->host, conf->port, 1, &res, errbuf, sizeof(errbuf))
        != SH_OK)
    {
        *err = errbuf;
        return SH_ERROR;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
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
    l = sh_calloc(1, sizeof(*l));
    uv_tcp_init(&w->loop, &l->tcp);
    uv_tcp_open(&l->tcp, fd);
    l->w = w;
    l->conf = *conf;
    snprintf(l->name, sizeof(l->name), "%s", conf->name ? conf->name : "");
    l->conf.name = l->name;
    l->conf.host = NULL;
    {
        char labels[160];

        sh_metric_label(labels, sizeof(labels), 0, "source", l->name);
        l->conns = sh_metric_get(SH_METRIC_GAUGE, "shotover_connections",
                                 "open client connections, per source",
                                 labels);
        if (conf->lanes > 1) {
            l->lane_batches = sh_metric_get(SH_METRIC_COUNTER,
                "shotover_lane_batches_total", "batches a CQL connection "
                "started while earlier ones of it still ran", labels);
        }
    }
    rc = uv_listen((uv_stream_t *) &l->tcp, 511, sh_listener_cb);
    if (rc != 0) {
        snprintf(errbuf, sizeof(errbuf), "cannot listen on %s:%d: %s",
                 conf->host, conf->port, uv_strerror(rc));
        *err = errbuf;
        uv_close((uv_handle_t *) &l->tcp, sh_listener_close_cb);
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
