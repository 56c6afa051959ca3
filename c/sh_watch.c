/*
 * sh_watch.c -- what a worker's Lua waits on besides backends.
 *
 * Watches: a pipe (or any descriptor) the worker's loop polls.  When it is
 * readable C drains it and calls shotover.worker.on_watch(w, token), which
 * hands the token to the Lua handler registered for it (shotover.watch);
 * a watch may also tick (a repeating timer calling the same handler), for
 * deadlines its owner keeps.
 * A library with threads of its own (librdkafka) writes to the pipe when
 * it has something for the worker, so its results are read on the worker's
 * thread, from the loop, and never through a callback into Lua from
 * another thread.  Watches close at worker stop, after Lua was told
 * (shotover.worker.stop: flush what is in flight).
 *
 * Awaits: a run may wait for something other than a backend.  Lua marks a
 * batch of its own as owed n settlements (sh_ffi_run_await) and the run
 * waits for it like for a backend's response batch; each settlement
 * (sh_ffi_batch_settle, from a watch handler) counts one down, and the
 * last wakes the run.  A client that closes meanwhile disowns the batch
 * (sh__run_close sets b->run to NULL), so a late settlement is harmless.
 */
#define _GNU_SOURCE              /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "sh_buf.h"
#include "sh_conn.h"
#include "sh_lua.h"
#include "sh_watch.h"

struct sh_watch_s {
    uv_poll_t poll;
    uv_timer_t tick;         /* optional: calls Lua every tick_ms too */
    int handles;             /* handles still open (closing frees at 0) */
    sh_worker_t *w;
    int token;               /* Lua's name for it */
    int fd;                  /* polled */
    int wfd;                 /* the pipe's write end, -1 for a plain fd */
    struct sh_watch_s *next; /* w->watches */
};

static void
sh_watch_close_cb(uv_handle_t *h)
{
    sh_watch_t *x = h->data;

    if (--x->handles > 0) {
        return;
    }
    if (x->wfd >= 0) {                   /* a pipe of ours */
        close(x->fd);
        close(x->wfd);
    }
    sh_free(x);
}

static void
sh_watch_cb(uv_poll_t *p, int status, int events)
{
    sh_watch_t *x = p->data;
    char buf[256];

    sh_unused(events);
    if (x->wfd >= 0) {
        while (read(x->fd, buf, sizeof(buf)) > 0) {
            /* the bytes only say "look": drained, so the next write
             * wakes the loop again */
        }
    }
    if (status < 0) {
        sh_log_warn("worker %d: watch %d: %s", x->w->id, x->token,
                    uv_strerror(status));
    }
    sh_lua_worker_watch(x->w, x->token);
}

static void
sh_watch_tick_cb(uv_timer_t *t)
{
    sh_watch_t *x = t->data;

    sh_lua_worker_watch(x->w, x->token);
}

static int
sh_watch_start(sh_worker_t *w, int fd, int wfd, int token, const char **err)
{
    sh_watch_t *x = sh_calloc(1, sizeof(*x));
    int rc;

    x->w = w;
    x->token = token;
    x->fd = fd;
    x->wfd = wfd;
    x->handles = 1;
    rc = uv_poll_init(&w->loop, &x->poll, fd);
    if (rc == 0) {
        x->poll.data = x;
        rc = uv_poll_start(&x->poll, UV_READABLE, sh_watch_cb);
        if (rc != 0) {
            x->wfd = -1;                 /* the caller closes the pipe */
            uv_close((uv_handle_t *) &x->poll, sh_watch_close_cb);
        }
    } else {
        sh_free(x);
    }
    if (rc != 0) {
        *err = uv_strerror(rc);
        return SH_ERROR;
    }
    /* a watch keeps nothing running: the worker stops when its clients
     * are gone, and closes its watches then */
    uv_unref((uv_handle_t *) &x->poll);
    x->next = w->watches;
    w->watches = x;
    return SH_OK;
}

int
sh_ffi_watch_fd(sh_worker_t *w, int fd, int token, const char **err)
{
    return sh_watch_start(w, fd, -1, token, err);
}

int
sh_ffi_watch_pipe(sh_worker_t *w, int token, int *wfd, const char **err)
{
    int fds[2];

    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        *err = strerror(errno);
        return SH_ERROR;
    }
    if (sh_watch_start(w, fds[0], fds[1], token, err) != SH_OK) {
        close(fds[0]);
        close(fds[1]);
        return SH_ERROR;
    }
    *wfd = fds[1];
    return SH_OK;
}

int
sh_ffi_watch_tick(sh_worker_t *w, int token, uint32_t ms)
{
    sh_watch_t *x;

    for (x = w->watches; x != NULL; x = x->next) {
        if (x->token == token) {
            if (x->handles == 1) {
                uv_timer_init(&w->loop, &x->tick);
                x->tick.data = x;
                uv_unref((uv_handle_t *) &x->tick);
                x->handles = 2;
            }
            uv_timer_start(&x->tick, sh_watch_tick_cb, ms, ms);
            return SH_OK;
        }
    }
    return SH_DECLINED;
}

static void
sh_watch_close(sh_watch_t *x)
{
    if (x->handles == 2) {
        uv_close((uv_handle_t *) &x->tick, sh_watch_close_cb);
    }
    uv_close((uv_handle_t *) &x->poll, sh_watch_close_cb);
}

void
sh_ffi_watch_close(sh_worker_t *w, int token)
{
    sh_watch_t **pp = &w->watches, *x;

    while ((x = *pp) != NULL) {
        if (x->token == token) {
            *pp = x->next;
            sh_watch_close(x);
            return;
        }
        pp = &x->next;
    }
}

void
sh_watches_close(sh_worker_t *w)
{
    sh_watch_t *x;

    sh_lua_worker_stop(w);               /* Lua flushes and lets go */
    while ((x = w->watches) != NULL) {
        w->watches = x->next;
        sh_watch_close(x);
    }
}

/* --- awaits -------------------------------------------------------------- */

int
sh_ffi_run_await(sh_run_t *r, sh_batch_t *b, uint32_t n)
{
    if (n == 0) {
        return SH_OK;
    }
    if (b->waiting == 0) {
        /* the settler's reference: the batch outlives its run when the
         * client goes first, until the last settlement */
        sh_batch_ref(b);
        sh_run_add_wait(r, b);
    }
    b->waiting += n;
    return SH_AGAIN;
}

void
sh_ffi_batch_settle(sh_batch_t *b)
{
    if (b->waiting == 0) {
        return;                          /* a Lua mistake: nothing owed */
    }
    if (--b->waiting == 0) {
        if (b->run != NULL) {
            sh_run_wait_done(b->run, b);
        }
        sh_batch_unref(b);
    }
}
