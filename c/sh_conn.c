/*
 * sh_conn.c -- client connections.
 *
 * Life of a batch: a read is parsed into frames that join conn->inq; when no
 * batch is running, all of inq becomes the next batch and the connection's
 * coroutine is resumed to run the chain over it.  The chain either finishes
 * (yields DONE with the responses) or waits for backends (yields WAIT) and
 * is resumed by sh_conn_wake when they are done.  Responses go out in one
 * uv_write; everything created for the batch is released after it.
 *
 * Backpressure: while more than max_write_queue bytes wait to be written to
 * the client, or a batch is running and too much input is queued, we stop
 * reading from it; reading resumes when the queue drains.
 *
 * Holding batches (MORE): a transform that gathers requests across batches
 * (coalesce) makes the coroutine yield MORE.  The batch stays running, its
 * requests move to conn->held, and the coroutine is resumed with the next
 * batch read, when its timer (sh_ffi_conn_timer) fires, or at EOF
 * (sh_ffi_conn_wake_reason says which).  The responses it gives with DONE
 * cover every batch held and the current one, in order; until then nothing
 * is written and the cycle (what Lua created) lives on.
 */
#include <stdio.h>

#include <lauxlib.h>

#include "sh_conn.h"
#include "sh_metrics.h"

#define SH_CONN_MAX_INQ (64 * 1024 * 1024) /* queued input before pausing */

static uint64_t sh_conn_next_id = 1;     /* per process; atomically bumped */

typedef struct sh_write_s {
    uv_write_t req;          /* the libuv request */
    uint32_t n;              /* frames held */
    sh_frame_t *small[8];    /* their storage for small writes */
    sh_frame_t **frames;     /* frames held until written */
} sh_write_t;

static void sh_conn_run(sh_conn_t *c);
static void sh_conn_set_resp(sh_conn_t *c, sh_batch_t *resp);
static void sh_conn_more(sh_conn_t *c);
static void sh_conn_more_event(sh_conn_t *c);
static void sh_conn_read_on(sh_conn_t *c);
static int sh_conn_write_blocked(sh_conn_t *c);

static void sh_conn_read_cb(uv_stream_t *s, ssize_t nread,
    const uv_buf_t *buf);

static void
sh_conn_close_cb(uv_handle_t *h)
{
    sh_conn_t *c = (sh_conn_t *) h;

    sh_free(c);
}

static void
sh_conn_release_cycle(sh_conn_t *c)
{
    sh_cycle_release(&c->cycle);
    sh_batch_unref(c->batch);
    sh_batch_unref(c->resp);
    sh_batch_unref(c->exp);
    sh_batch_unref(c->held);
    c->batch = NULL;
    c->resp = NULL;
    c->exp = NULL;
    c->held = NULL;
    c->more = 0;
    c->eof_told = 0;
    c->timer_fired = 0;
}

static void sh_conn_schedule(sh_conn_t *c);

/* The client c is going: its shadows finish what they hold, then close. */
static void
sh_conn_orphan_shadows(sh_conn_t *c)
{
    sh_conn_t *s;

    while ((s = c->shadows) != NULL) {
        c->shadows = s->shadow_next;
        s->shadow_next = NULL;
        s->parent = NULL;
        s->eof = 1;
        sh_conn_schedule(s);
    }
}

static void
sh_conn_unlink_shadow(sh_conn_t *s)
{
    sh_conn_t **pp;

    if (!s->shadow || s->parent == NULL) {
        return;
    }
    for (pp = &s->parent->shadows; *pp != NULL; pp = &(*pp)->shadow_next) {
        if (*pp == s) {
            *pp = s->shadow_next;
            break;
        }
    }
    s->parent = NULL;
}

/* A lane is going (its client closes, or its runner died). */
static void
sh_conn_unlink_lane(sh_conn_t *l)
{
    sh_conn_t **pp, *c = l->parent;

    if (!l->lane || c == NULL) {
        return;
    }
    for (pp = &c->lanes; *pp != NULL; pp = &(*pp)->lane_next) {
        if (*pp == l) {
            *pp = l->lane_next;
            break;
        }
    }
    c->nlanes--;
    if (l->running) {
        c->lanes_busy--;
    }
    l->parent = NULL;
}

static void
sh_conn_timer_close_cb(uv_handle_t *h)
{
    sh_free(h);
}

static void
sh_conn_close(sh_conn_t *c)
{
    sh_worker_t *w = c->w;
    uint32_t i;

    /* once only: a shutdown cancelled by the close calls back here, and
     * a second unlink would touch neighbours freed since */
    if (c->closed) {
        return;
    }
    c->closed = 1;
    c->closing = 1;
    sh_conn_orphan_shadows(c);
    sh_conn_unlink_shadow(c);
    while (c->lanes != NULL) {
        sh_conn_close(c->lanes);     /* their replies had nowhere to go */
    }
    sh_conn_unlink_lane(c);
    /* backends may still fill our response batches: they must not wake us */
    for (i = 0; i < c->nwaits; i++) {
        c->waits[i]->conn = NULL;
        sh_batch_unref(c->waits[i]);
    }
    c->nwaits = 0;
    sh_free(c->waits);
    c->waits = NULL;
    while (c->attached != NULL) {
        sh_conn_attach_t *a = c->attached;

        c->attached = a->next;
        a->cleanup(a->data);
        sh_free(a);
    }
    sh_conn_release_cycle(c);
    if (c->timer != NULL) {
        uv_close((uv_handle_t *) c->timer, sh_conn_timer_close_cb);
        c->timer = NULL;
    }
    sh_batch_unref(c->inq);
    c->inq = NULL;
    sh_batch_unref(c->expq);
    c->expq = NULL;
    sh_proto_conn_free(&c->pc);
    sh_cycle_free(&c->cycle);
    sh_lua_co_release(w, &c->co);
    if (!c->lane) {
        sh_lua_session_release(w->L, c);  /* lanes use their client's */
    }
    if (!c->shadow && !c->lane) {
        sh_ffi_metric_add(c->src->conns, -1);
    }
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        w->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    if (c->on_wake) {
        sh_conn_t **pp = &w->wakeq;
        while (*pp != c) {
            pp = &(*pp)->wake_next;
        }
        *pp = c->wake_next;
        c->on_wake = 0;
    }
    sh_log_debug("conn %llu closed", (unsigned long long) c->id);
    /* shadows have an unconnected handle too, so their memory also goes
     * in the close callback, never under a running chain */
    if (!uv_is_closing((uv_handle_t *) &c->tcp)) {
        uv_close((uv_handle_t *) &c->tcp, sh_conn_close_cb);
    }
}

static void
sh_conn_shutdown_cb(uv_shutdown_t *req, int status)
{
    sh_conn_t *c = req->data;

    sh_unused(status);
    c->closing = 0;
    sh_conn_close(c);
}

/* Close once every queued reply has been written. */
static void
sh_conn_close_after_writes(sh_conn_t *c)
{
    if (c->closing) {
        return;
    }
    if (c->shadow) {
        sh_conn_close(c);            /* nothing to write */
        return;
    }
    c->closing = 1;
    if (c->read_stopped == 0) {
        uv_read_stop((uv_stream_t *) &c->tcp);
        c->read_stopped = 1;
    }
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *) &c->tcp,
                    sh_conn_shutdown_cb) != 0)
    {
        c->closing = 0;
        sh_conn_close(c);
    }
}

static void
sh_conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sh_conn_t *c = (sh_conn_t *) h;
    uint8_t *p;
    size_t n;

    sh_unused(suggested);
    c->pc.p->reader_space(c->pc.reader, &p, &n);
    buf->base = (char *) p;
    buf->len = n;
}

static void
sh_conn_pause(sh_conn_t *c)
{
    if (!c->read_stopped && !c->closing) {
        uv_read_stop((uv_stream_t *) &c->tcp);
        c->read_stopped = 1;
    }
}

static void
sh_conn_resume_reading(sh_conn_t *c)
{
    if (c->read_stopped && !c->closing && !c->eof && !c->proto_err
        && !c->shadow && !c->lane)
    {
        c->read_stopped = 0;
        uv_read_start((uv_stream_t *) &c->tcp, sh_conn_alloc_cb,
                      sh_conn_read_cb);
    }
}

/*
 * Read again after batches finished or replies drained: unless replies
 * back up, or requests still wait for the connection (with lanes: for a
 * free lane) to run them.
 */
static void
sh_conn_read_on(sh_conn_t *c)
{
    if (!c->closing && (c->inq == NULL || c->inq->n == 0)
        && (!c->running || c->src->conf.lanes > 1)
        && !sh_conn_write_blocked(c))
    {
        sh_conn_resume_reading(c);
    }
}

static int
sh_conn_write_blocked(sh_conn_t *c)
{
    if (c->shadow || c->lane) {
        return 0;
    }
    return uv_stream_get_write_queue_size((uv_stream_t *) &c->tcp)
           > c->src->conf.max_write_queue;
}

static void
sh_conn_write_cb(uv_write_t *req, int status)
{
    sh_write_t *wr = (sh_write_t *) req;
    sh_conn_t *c = req->data;
    uint32_t i;

    for (i = 0; i < wr->n; i++) {
        sh_frame_unref(wr->frames[i]);
    }
    if (wr->frames != wr->small) {
        sh_free(wr->frames);
    }
    sh_free(wr);
    if (status < 0 || c->closing) {
        return;                  /* the read side sees the error and closes */
    }
    if (uv_stream_get_write_queue_size((uv_stream_t *) &c->tcp)
        <= c->src->conf.max_write_queue / 2)
    {
        if (c->more) {
            sh_conn_more_event(c);   /* held input may go on now */
            return;
        }
        if (!c->running || c->src->conf.lanes > 1) {
            sh_conn_run(c);
        }
        sh_conn_read_on(c);
    }
}

/*
 * sh_conn_write_frames: write frames to the client as they are, at once when
 * the socket takes them (one writev), else queued in one uv_write that holds
 * a reference on each frame until written.  NOREPLY frames are skipped.
 */
static void
sh_conn_write_frames(sh_conn_t *c, sh_frame_t **frames, uint32_t n)
{
    uv_buf_t sbufs[16];
    uv_buf_t *bufs = sbufs;
    sh_write_t *wr;
    uint32_t i, k = 0, first;
    size_t total = 0;
    ssize_t done;
    int rc;

    if (c->closing || n == 0 || c->shadow) {
        return;
    }
    if (n > 16) {
        bufs = sh_alloc(n * sizeof(uv_buf_t));
    }
    for (i = 0; i < n; i++) {
        sh_frame_t *f = frames[i];

        if (f == NULL || (f->flags & SH_FRAME_NOREPLY) || f->len == 0) {
            continue;
        }
        bufs[k].base = (char *) f->data;
        bufs[k].len = f->len;
        total += f->len;
        k++;
    }
    done = k ? sh_try_write((uv_stream_t *) &c->tcp, bufs, k) : 0;
    if (done < 0) {
        if (bufs != sbufs) {
            sh_free(bufs);
        }
        sh_conn_close(c);
        return;
    }
    if ((size_t) done == total) {
        if (bufs != sbufs) {
            sh_free(bufs);
        }
        return;
    }
    /* the rest waits in libuv's queue, the frames held until written */
    first = sh_skip_written(bufs, k, (size_t) done);
    wr = sh_alloc(sizeof(*wr));
    wr->n = 0;
    wr->frames = (n <= 8) ? wr->small : sh_alloc(n * sizeof(sh_frame_t *));
    for (i = 0; i < n; i++) {
        sh_frame_t *f = frames[i];

        if (f == NULL || (f->flags & SH_FRAME_NOREPLY) || f->len == 0) {
            continue;
        }
        wr->frames[wr->n++] = sh_frame_ref(f);
    }
    wr->req.data = c;
    /* libuv copies the buffer array, so ours can go right away */
    rc = uv_write(&wr->req, (uv_stream_t *) &c->tcp, bufs + first, k - first,
                  sh_conn_write_cb);
    if (bufs != sbufs) {
        sh_free(bufs);
    }
    if (rc != 0) {
        sh_conn_write_cb(&wr->req, rc);
        sh_conn_close(c);
        return;
    }
    if (sh_conn_write_blocked(c)) {
        sh_conn_pause(c);
    }
}

/*
 * sh_conn_error_frame: an error reply in the connection's protocol: Redis
 * "-ERR msg"; CQL an ERROR with `code` on the stream and version of req, or
 * when req is NULL of the frame the reader refused (stream 0 when it could
 * not be read).
 */
sh_frame_t *
sh_conn_error_frame(sh_conn_t *c, const sh_frame_t *req, uint32_t code,
    const char *msg)
{
    return c->pc.p->error_frame(c->pc.reader ? &c->pc : NULL, req, code, msg);
}

static void
sh_conn_write_cb_frames(void *ctx, sh_frame_t **frames, uint32_t n)
{
    sh_conn_write_frames(ctx, frames, n);
}

/* Replies to the client, framed by its protocol (CQL v5: segments once
 * the handshake is done). */
void
sh_conn_send_frames(sh_conn_t *c, sh_frame_t **frames, uint32_t n)
{
    if (c->closing || n == 0 || c->shadow) {
        return;                  /* a shadow's replies go nowhere */
    }
    c->pc.p->send(&c->pc, frames, n, sh_conn_write_cb_frames, c);
}

static void
sh_conn_send_error(sh_conn_t *c, const sh_frame_t *req, uint32_t code,
    const char *msg)
{
    sh_frame_t *f = sh_conn_error_frame(c, req, code, msg);

    sh_conn_send_frames(c, &f, 1);
    sh_frame_unref(f);
}

/*
 * The chain finished a batch: check the responses match the requests, write
 * them, and release the batch.
 */
static void
sh_conn_finish_batch(sh_conn_t *c)
{
    sh_batch_t *req = c->batch;
    sh_batch_t *resp = c->resp;
    sh_conn_t *out = c;              /* where the replies go */
    uint32_t i;

    if (c->held != NULL) {
        /* MORE held earlier batches: the responses cover them all, in
         * order, then this one; Lua's view of this batch lives on in the
         * cycle until it is released */
        for (i = 0; i < c->batch->n; i++) {
            sh_batch_append(c->held, c->batch->frames[i]);
        }
        sh_cycle_push_batch(&c->cycle, c->batch);
        c->batch = c->held;
        c->held = NULL;
        req = c->batch;
    }
    c->running = 0;
    if (c->lane) {
        out = c->parent;
        out->lanes_busy--;
    }
    if (c->shadow) {
        sh_conn_release_cycle(c);
        return;
    }
    if (resp == NULL || resp->n != req->n) {
        sh_log_error("source \"%s\": chain returned %u responses for %u "
                     "requests", c->src->name, resp ? resp->n : 0, req->n);
        for (i = 0; i < req->n; i++) {
            sh_conn_send_error(out, req->frames[i], SH_CQL_SERVER_ERROR,
                               "shotover: chain returned the wrong number "
                               "of responses");
        }
    } else {
        for (i = 0; i < resp->n; i++) {
            if (resp->frames[i] == NULL) {
                sh_frame_t *f = sh_conn_error_frame(out, req->frames[i],
                    SH_CQL_SERVER_ERROR, "shotover: no response");
                sh_batch_put(resp, i, f);
                sh_frame_unref(f);
            }
        }
        sh_conn_send_frames(out, resp->frames, resp->n);
    }
    sh_conn_release_cycle(c);
}

/* Resume the coroutine and act on what it yielded. */
static void
sh_conn_step(sh_conn_t *c)
{
    sh_batch_t *resp;
    const char *err;
    int rc;

    c->suspended = 0;
    rc = sh_lua_resume(c->w, &c->co, c, sh_conn_client(c), &c->cycle, &resp,
                       &err);
    if (rc == SH_YIELD_DONE) {
        sh_conn_set_resp(c, resp);
    } else if (rc == SH_ERROR) {
        sh_log_error("source \"%s\": connection runner died: %s",
                     c->src->name, err);
    }
    if (c->closing) {
        return;
    }
    if (rc == SH_YIELD_WAIT || rc == SH_YIELD_SLEEP) {
        c->suspended = 1;
        c->sleeping = rc == SH_YIELD_SLEEP;
        return;
    }
    if (rc == SH_YIELD_DONE) {
        sh_conn_finish_batch(c);
        return;
    }
    if (rc == SH_YIELD_MORE && !c->lane) {
        c->more = 1;             /* the caller calls sh_conn_more */
        return;
    }
    if (rc == SH_YIELD_MORE) {
        /* a transform that holds requests must not declare lanes = true:
         * a lane has no input of its own to resume it with */
        sh_log_error("source \"%s\": a chain element held requests on a "
                     "lane", c->src->name);
    }
    /* the runner itself died: nothing sane can follow on this connection */
    if (c->shadow) {
        sh_conn_close(c);
        return;
    }
    if (c->lane) {
        sh_conn_t *p = c->parent;

        sh_conn_close(c);            /* unlinks it from p */
        c = p;
    }
    sh_conn_send_error(c, NULL, SH_CQL_SERVER_ERROR,
                       "shotover: internal error in the chain runner");
    sh_conn_close_after_writes(c);
}

/* The next batch from c's inq (at most max_batch requests) into r->batch:
 * r is c, or one of its lanes. */
static void
sh_conn_take_batch(sh_conn_t *c, sh_conn_t *r)
{
    if (c->inq->n <= c->src->conf.max_batch) {
        r->batch = c->inq;
        c->inq = NULL;
    } else {
        /* A long pipeline runs in slices, so the write-queue bound is
         * checked between them: a client that pipelines big replies
         * without reading them cannot make us hold more than one slice of
         * replies beyond max_write_queue. */
        uint32_t k = c->src->conf.max_batch;

        r->batch = sh_batch_alloc(k);
        memcpy(r->batch->frames, c->inq->frames, k * sizeof(sh_frame_t *));
        memmove(c->inq->frames, c->inq->frames + k,
                (c->inq->n - k) * sizeof(sh_frame_t *));
        c->inq->n -= k;
    }
    r->wake_reason = SH_WAKE_BATCH;
}

/*
 * A connection without a socket serving c (a shadow or a lane), on the
 * worker's list: its handle is initialised but never connected, so it is
 * closed, and its memory freed, like a client's.
 */
static sh_conn_t *
sh_conn_child(sh_conn_t *c)
{
    sh_conn_t *s = sh_calloc(1, sizeof(*s));

    uv_tcp_init(&c->w->loop, &s->tcp);
    s->w = c->w;
    s->src = c->src;
    s->id = __atomic_fetch_add(&sh_conn_next_id, 1, __ATOMIC_RELAXED);
    s->pc.p = c->pc.p;          /* no reader: it reads nothing */
    s->co = (sh_lua_co_t) SH_LUA_CO_INIT;
    s->read_stopped = 1;
    s->parent = c;
    s->next = c->w->conns;
    if (c->w->conns) {
        c->w->conns->prev = s;
    }
    c->w->conns = s;
    return s;
}

/*
 * Lanes.  A CQL client keeps many requests in flight on one connection,
 * told apart by stream id, and the node answers them in any order.  A
 * connection running one batch at a time would hold a request that arrives
 * while a batch waits for the node until that whole batch is answered.
 * So, while c's batch waits, what c reads next runs on a lane: a child
 * connection with its own coroutine, chain context and batch that shares
 * c's socket (its replies are written as its batch finishes), c's session
 * table and c's backend connections.  conf.lanes counts c itself; Lua sets
 * it to 1 for Redis (replies keep request order) and for chains with an
 * element that must see a connection's batches one at a time.  Not before
 * the answer to STARTUP has gone out (v5 switches to segments there).
 * Returns an idle lane, a new one, or NULL when all are busy.
 */
static sh_conn_t *
sh_conn_lane(sh_conn_t *c)
{
    sh_conn_t *l;

    if (c->shadow || c->lane || c->more || c->src->conf.lanes <= 1
        || !c->pc.p->lanes_ready(&c->pc))
    {
        return NULL;
    }
    for (l = c->lanes; l != NULL; l = l->lane_next) {
        if (!l->running) {
            return l;
        }
    }
    if (c->nlanes + 1 >= c->src->conf.lanes) {
        return NULL;
    }
    l = sh_conn_child(c);
    l->lane = 1;
    l->lane_next = c->lanes;
    c->lanes = l;
    c->nlanes++;
    return l;
}

/*
 * Run what c has queued: on c itself when it is idle, else (CQL, lanes
 * allowed) on an idle lane; returns when every runner is busy or nothing is
 * queued.  With nothing queued and nothing running, acts on EOF, a protocol
 * error or a close that waited for the batches.
 */
static void
sh_conn_run(sh_conn_t *c)
{
    sh_conn_t *r;

    while (!c->closing) {
        if (c->inq != NULL && c->inq->n > 0) {
            if (sh_conn_write_blocked(c)) {
                sh_conn_pause(c);
                return;
            }
            if (!c->running) {
                r = c;
            } else if ((r = sh_conn_lane(c)) == NULL) {
                return;
            }
            if (c->shadow) {
                /* a shadow runs what was pushed, each request with its
                 * paired frame */
                c->batch = c->inq;
                c->inq = NULL;
                c->exp = c->expq;
                c->expq = NULL;
            } else {
                sh_conn_take_batch(c, r);
            }
            r->running = 1;
            if (r != c) {
                c->lanes_busy++;
                sh_ffi_metric_add(c->src->lane_batches, 1);
                sh_conn_step(r);
                continue;
            }
            sh_conn_step(c);
            sh_conn_more(c);
            continue;
        }
        if (c->running || c->lanes_busy > 0) {
            return;
        }
        if (c->shadow) {
            if (c->eof || c->close_after) {
                sh_conn_close(c);
            }
        } else if (c->proto_err) {
            sh_conn_send_error(c, NULL, SH_CQL_PROTOCOL_ERROR,
                               c->pc.p->reader_error(c->pc.reader));
            sh_conn_close_after_writes(c);
        } else if (c->close_after || c->eof) {
            sh_conn_close_after_writes(c);
        }
        return;
    }
}

/*
 * sh_conn_more_next: the coroutine waits in MORE; prepare what it is
 * resumed with, in this order: the timer that fired, the next batch (unless
 * the client's replies back up or the held requests reach max_elements),
 * EOF (once, when nothing else is queued).  Returns 1 when there is
 * something, 0 when it must wait.
 */
static int
sh_conn_more_next(sh_conn_t *c)
{
    uint32_t i;

    if (c->timer_fired) {
        c->timer_fired = 0;
        c->wake_reason = SH_WAKE_TIMER;
        return 1;
    }
    if (c->inq != NULL && c->inq->n > 0 && !sh_conn_write_blocked(c)
        && (c->held ? c->held->n : 0) + c->batch->n
           < c->src->conf.max_elements)
    {
        /* this batch joins the held ones; Lua's view of it stays valid
         * in the cycle until the responses are written */
        if (c->held == NULL) {
            c->held = sh_batch_alloc(0);
        }
        for (i = 0; i < c->batch->n; i++) {
            sh_batch_append(c->held, c->batch->frames[i]);
        }
        sh_cycle_push_batch(&c->cycle, c->batch);
        c->batch = NULL;
        sh_conn_take_batch(c, c);
        return 1;
    }
    if ((c->eof || c->proto_err) && !c->eof_told
        && (c->inq == NULL || c->inq->n == 0))
    {
        c->eof_told = 1;
        c->wake_reason = SH_WAKE_EOF;
        return 1;
    }
    return 0;
}

/*
 * sh_conn_more: resume a coroutine that yielded MORE for as long as there
 * is something for it (a loop, not recursion: a long pipeline is many
 * batches).  Leaves it waiting in MORE, waiting for backends, or done.
 */
static void
sh_conn_more(sh_conn_t *c)
{
    while (c->more && !c->closing && c->running && sh_conn_more_next(c)) {
        c->more = 0;
        sh_conn_step(c);
    }
    if (!c->more || c->closing) {
        return;
    }
    if (c->eof_told && (c->timer == NULL
                        || !uv_is_active((uv_handle_t *) c->timer)))
    {
        /* told EOF, no timer: nothing can ever finish this batch */
        sh_log_error("source \"%s\": chain still holds requests after EOF",
                     c->src->name);
        sh_conn_send_error(c, NULL, SH_CQL_SERVER_ERROR,
                           "shotover: chain held requests after EOF");
        sh_conn_close_after_writes(c);
        return;
    }
    if ((c->inq == NULL || c->inq->n == 0) && !sh_conn_write_blocked(c)) {
        sh_conn_resume_reading(c);   /* the next batch is what it wants */
    }
}

/* Something happened to a connection that may wait in MORE (input, timer,
 * EOF, replies drained): resume it, then run what is queued after. */
static void
sh_conn_more_event(sh_conn_t *c)
{
    sh_conn_more(c);
    if (!c->running && !c->closing) {
        sh_conn_run(c);
        if (!c->running && !c->closing && !sh_conn_write_blocked(c)) {
            sh_conn_resume_reading(c);
        }
    }
    if (c->running && !c->closing
        && (c->pc.p->reader_pending(c->pc.reader) > SH_CONN_MAX_INQ
            || (c->inq && c->inq->n > c->src->conf.max_elements)))
    {
        sh_conn_pause(c);
    }
}

static void
sh_conn_timer_cb(uv_timer_t *t)
{
    sh_conn_t *c = t->data;

    c->timer_fired = 1;
    if (c->more && !c->closing) {
        sh_conn_more_event(c);
    }
}

void
sh_conn_wake(sh_conn_t *c)
{
    if (c->on_wake || !c->suspended || c->nwaits > 0) {
        return;
    }
    c->on_wake = 1;
    c->wake_next = c->w->wakeq;
    c->w->wakeq = c;
}

/* Run a shadow's queue soon: from the worker's wake list, which is worked
 * off after backend reads and before every poll (never from inside Lua). */
static void
sh_conn_schedule(sh_conn_t *c)
{
    if (c->on_wake || c->running || c->closing) {
        return;
    }
    c->on_wake = 1;
    c->wake_next = c->w->wakeq;
    c->w->wakeq = c;
}

/*
 * Resume every connection whose backends finished, or that Lua pushed work
 * to (shadows): the worker's pre-poll hook (sh_worker_hook), so replies
 * read from several backends in one loop iteration resume a connection
 * once.  Returns 1 when it resumed any.
 */
int
sh_conn_wake_all(sh_worker_t *w)
{
    sh_conn_t *c;
    int any = 0;

    while ((c = w->wakeq) != NULL) {
        any = 1;
        w->wakeq = c->wake_next;
        c->on_wake = 0;
        if (c->closing) {
            continue;
        }
        if (c->suspended) {
            sh_conn_step(c);
            sh_conn_more(c);
        } else if (!c->shadow) {
            continue;
        }
        if (c->running || c->closing) {
            continue;
        }
        if (c->lane) {
            c = c->parent;       /* a lane is free: the client's queue */
        }
        sh_conn_run(c);
        sh_conn_read_on(c);
    }
    return any;
}

void
sh_conn_add_wait(sh_conn_t *c, sh_batch_t *b)
{
    if (c->nwaits == c->waits_cap) {
        c->waits_cap = c->waits_cap ? c->waits_cap * 2 : 4;
        c->waits = sh_realloc(c->waits, c->waits_cap * sizeof(sh_batch_t *));
    }
    c->waits[c->nwaits++] = sh_batch_ref(b);
    b->conn = c;
}

void
sh_conn_wait_done(sh_conn_t *c, sh_batch_t *b)
{
    uint32_t i;

    for (i = 0; i < c->nwaits; i++) {
        if (c->waits[i] == b) {
            c->waits[i] = c->waits[--c->nwaits];
            b->conn = NULL;
            sh_batch_unref(b);
            break;
        }
    }
    if (c->nwaits == 0) {
        sh_conn_wake(c);
    }
}

static int
sh_conn_batch_blocks(const sh_batch_t *b)
{
    uint32_t i;

    for (i = 0; b != NULL && i < b->n; i++) {
        if (b->frames[i]->cmd & SH_CMD_BLOCKING) {
            return 1;
        }
    }
    return 0;
}

static void
sh_conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sh_conn_t *c = (sh_conn_t *) s;
    sh_frame_t *f;
    int rc;

    sh_unused(buf);
    if (nread < 0) {
        if (nread != UV_EOF) {
            sh_log_debug("conn %llu: read: %s", (unsigned long long) c->id,
                         uv_strerror((int) nread));
            sh_conn_close(c);
            return;
        }
        c->eof = 1;
        uv_read_stop(s);
        c->read_stopped = 1;
        if (!c->running) {
            sh_conn_run(c);
        } else if (sh_conn_batch_blocks(c->batch)
                   || sh_conn_batch_blocks(c->held)) {
            /* Redis frees a blocked client on EOF; so do we, which closes
             * its dedicated backend connection and unblocks it there, so a
             * later push is not popped for nobody.  Ordinary batches are
             * finished, so a half-closed pipeline still gets its replies. */
            sh_conn_close(c);
        } else if (c->more) {
            sh_conn_more_event(c);   /* what is held is flushed now */
        }
        return;
    }
    if (nread == 0) {
        return;
    }
    c->pc.p->reader_commit(c->pc.reader, (size_t) nread);
    for (;;) {
        rc = c->pc.p->reader_next(c->pc.reader, &f);
        if (rc != SH_OK) {
            c->proto_err = 1;
            uv_read_stop(s);
            c->read_stopped = 1;
            break;
        }
        if (f == NULL) {
            break;
        }
        c->pc.p->on_request(&c->pc, f);
        if (c->inq == NULL) {
            c->inq = sh_batch_alloc(0);
        }
        sh_batch_append(c->inq, f);
        sh_frame_unref(f);               /* the batch holds it now */
    }
    if (c->running && c->more) {
        sh_conn_more_event(c);       /* the chain asked for this batch */
        return;
    }
    if (c->running) {
        if (c->src->conf.lanes > 1) {
            sh_conn_run(c);          /* on a lane, when one is free */
            if (c->closing) {
                return;
            }
        }
        /* a pipelining client outpaces the chain: bound what we hold */
        if (c->pc.p->reader_pending(c->pc.reader) > SH_CONN_MAX_INQ
            || (c->inq && c->inq->n > c->src->conf.max_elements))
        {
            sh_conn_pause(c);
        }
        return;
    }
    sh_conn_run(c);
}

void
sh_conn_accept(sh_listener_t *l)
{
    sh_worker_t *w = l->w;
    sh_conn_t *c = sh_calloc(1, sizeof(*c));
    uv_tcp_init(&w->loop, &c->tcp);
    if (uv_accept((uv_stream_t *) &l->tcp, (uv_stream_t *) &c->tcp) != 0) {
        uv_close((uv_handle_t *) &c->tcp, sh_conn_close_cb);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->w = w;
    c->src = l;
    c->id = __atomic_fetch_add(&sh_conn_next_id, 1, __ATOMIC_RELAXED);
    if (sh_proto_conn_init(&c->pc, &l->conf) != SH_OK) {
        sh_log_error("source \"%s\": unknown protocol %d", l->name,
                     (int) l->conf.proto);
        uv_close((uv_handle_t *) &c->tcp, sh_conn_close_cb);
        return;
    }
    c->co = (sh_lua_co_t) SH_LUA_CO_INIT;
    sh_ffi_metric_add(l->conns, 1);
    c->next = w->conns;
    if (w->conns) {
        w->conns->prev = c;
    }
    w->conns = c;
    sh_log_debug("conn %llu accepted on source \"%s\"",
                 (unsigned long long) c->id, l->name);
    uv_read_start((uv_stream_t *) &c->tcp, sh_conn_alloc_cb, sh_conn_read_cb);
}

/* Tell the client why with an -ERR, then close once it is written. */
void
sh_conn_abort(sh_conn_t *c, const char *why)
{
    char msg[200];

    if (c->closing) {
        return;
    }
    if (c->shadow) {
        /* may be called under the shadow's running chain: drop its queue
         * and let it close once that batch is done */
        sh_log_warn("shadow connection %llu: %s", (unsigned long long) c->id,
                    why);
        c->eof = 1;
        sh_batch_unref(c->inq);
        sh_batch_unref(c->expq);
        c->inq = c->expq = NULL;
        sh_conn_schedule(c);
        return;
    }
    snprintf(msg, sizeof(msg), "shotover: %s", why);
    sh_conn_send_error(c, NULL, SH_CQL_OVERLOADED, msg);
    sh_conn_close_after_writes(c);
}

/*
 * sh_conn_close_when_done: close c once the batches running now (its own
 * and its lanes') are done and their replies written.  Safe while c's Lua
 * runs: nothing closes before the runs end.
 */
void
sh_conn_close_when_done(sh_conn_t *c)
{
    c->close_after = 1;
    if (!c->running && c->lanes_busy == 0) {
        sh_conn_close_after_writes(c);
    }
}

/* --- what backends keep per client --------------------------------------- */

void
sh_conn_attach(sh_conn_t *c, const void *key, void *data,
    void (*cleanup)(void *data))
{
    sh_conn_attach_t *a = sh_alloc(sizeof(*a));

    a->key = key;
    a->data = data;
    a->cleanup = cleanup;
    a->next = c->attached;
    c->attached = a;
}

void *
sh_conn_attached(sh_conn_t *c, const void *key)
{
    sh_conn_attach_t *a;

    for (a = c->attached; a != NULL; a = a->next) {
        if (a->key == key) {
            return a->data;
        }
    }
    return NULL;
}

void
sh_conn_detach(sh_conn_t *c, const void *key)
{
    sh_conn_attach_t **pp, *a;

    for (pp = &c->attached; (a = *pp) != NULL; pp = &a->next) {
        if (a->key == key) {
            *pp = a->next;
            sh_free(a);
            return;
        }
    }
}

void
sh_conn_close_all(sh_worker_t *w)
{
    while (w->conns != NULL) {
        sh_conn_t *c = w->conns;
        c->closing = 0;
        sh_conn_close(c);
    }
}

/* --- FFI ---------------------------------------------------------------- */

sh_batch_t *
sh_ffi_conn_batch(sh_conn_t *c)
{
    return c->batch;
}

/* The responses of c's batch (a runner yields them with DONE): one
 * reference is taken, NULL for none. */
static void
sh_conn_set_resp(sh_conn_t *c, sh_batch_t *resp)
{
    if (resp != NULL) {
        sh_batch_ref(resp);
    }
    sh_batch_unref(c->resp);
    c->resp = resp;
}

int
sh_ffi_conn_outstanding(sh_conn_t *c)
{
    return (int) c->nwaits;
}

int
sh_ffi_conn_source(sh_conn_t *c)
{
    return c->src->conf.index;
}

/*
 * sh_ffi_conn_peer: the client's address ("127.0.0.1", "::1") into out;
 * a shadow answers for its client.  SH_ERROR when it cannot be had.
 */
int
sh_ffi_conn_peer(sh_conn_t *c, char *out, size_t cap)
{
    struct sockaddr_storage sa;
    int len = sizeof(sa);

    while ((c->shadow || c->lane) && c->parent != NULL) {
        c = c->parent;
    }
    if (c->shadow || c->lane
        || uv_tcp_getpeername(&c->tcp, (struct sockaddr *) &sa, &len) != 0)
    {
        return SH_ERROR;
    }
    if (sa.ss_family == AF_INET6) {
        return uv_ip6_name((struct sockaddr_in6 *) &sa, out, cap) == 0
               ? SH_OK : SH_ERROR;
    }
    return uv_ip4_name((struct sockaddr_in *) &sa, out, cap) == 0
           ? SH_OK : SH_ERROR;
}

int
sh_ffi_conn_handler(sh_conn_t *c)
{
    return c->handler;
}

int
sh_ffi_conn_shadow(sh_conn_t *c, int handler, sh_conn_t **out)
{
    sh_conn_t *s;

    if (c == NULL || c->shadow || c->lane || c->closing || handler <= 0) {
        return SH_ERROR;
    }
    for (s = c->shadows; s != NULL; s = s->shadow_next) {
        if (s->handler == handler && !s->eof && !s->close_after
            && !s->closing)
        {
            *out = s;
            return SH_OK;
        }
    }
    s = sh_conn_child(c);
    s->shadow = 1;
    s->handler = handler;
    s->shadow_next = c->shadows;
    c->shadows = s;
    *out = s;
    return SH_DECLINED;                  /* a new one: its session is empty */
}

int
sh_ffi_conn_push(sh_conn_t *s, sh_frame_t *req, sh_frame_t *paired)
{
    if (!s->shadow || s->closing || s->eof || s->close_after || req == NULL)
    {
        return SH_ERROR;
    }
    if (s->inq == NULL) {
        s->inq = sh_batch_alloc(0);
        s->expq = sh_batch_alloc(0);
    }
    sh_batch_append(s->inq, req);
    sh_batch_append(s->expq, paired);
    sh_conn_schedule(s);
    return SH_OK;
}

uint32_t
sh_ffi_conn_queued(sh_conn_t *s)
{
    return (s->inq ? s->inq->n : 0) + (s->running ? s->batch->n : 0);
}

sh_batch_t *
sh_ffi_conn_paired(sh_conn_t *s)
{
    return s->exp;
}

/*
 * sh_ffi_conn_notify: resume the batches of c's client (the connection and
 * its lanes) that yielded SLEEP, once their backends, if any, are done.
 * They run after the caller yields, from the worker's wake list.
 */
void
sh_ffi_conn_notify(sh_conn_t *c)
{
    sh_conn_t *o = sh_conn_client(c);
    sh_conn_t *r = o;

    while (r != NULL) {
        if (r->sleeping) {
            r->sleeping = 0;
            sh_conn_wake(r);
        }
        r = r == o ? o->lanes : r->lane_next;
    }
}

int
sh_ffi_conn_wake_reason(sh_conn_t *c)
{
    return c->wake_reason;
}

/*
 * sh_ffi_conn_timer: (re)arm the connection's one-shot timer.  When it
 * fires the coroutine, if it waits in MORE, is resumed with SH_WAKE_TIMER;
 * otherwise it is told at its next MORE.  SH_DECLINED on a closing
 * connection.
 */
int
sh_ffi_conn_timer(sh_conn_t *c, uint32_t ms)
{
    if (c->closing) {
        return SH_DECLINED;
    }
    if (c->timer == NULL) {
        c->timer = sh_alloc(sizeof(uv_timer_t));
        uv_timer_init(&c->w->loop, c->timer);
        c->timer->data = c;
    }
    c->timer_fired = 0;
    uv_timer_start(c->timer, sh_conn_timer_cb, ms, 0);
    return SH_OK;
}

int
sh_ffi_conn_timer_stop(sh_conn_t *c)
{
    if (c->timer != NULL) {
        uv_timer_stop(c->timer);
    }
    c->timer_fired = 0;
    return SH_OK;
}
