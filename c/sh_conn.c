/*
 * sh_conn.c -- client connections: the socket and its runs.
 *
 * Life of a batch: a read is parsed into frames (by the connection's
 * protocol table, sh_proto.h) that join c->inq; when the main run is idle
 * the queue becomes its next batch and the run's coroutine is resumed
 * (sh_run.c).  It either finishes (its replies go out in one writev) or
 * waits for backends and is resumed from the worker's wake list.
 *
 * Lanes.  A CQL client keeps many requests in flight on one connection,
 * told apart by stream id, and the node answers them in any order.  A
 * connection running one batch at a time would hold a request that arrives
 * while a batch waits for the node until that whole batch is answered.  So,
 * while the main run waits, what c reads next runs on a lane: another run
 * of the same client, with its own coroutine, chain context and batch,
 * sharing c's socket (its replies are written as its batch finishes) and
 * c's session (session table, backend connections).  conf.lanes counts the
 * main run; Lua sets it to 1 for Redis (replies keep request order) and for
 * chains with an element that must see a connection's batches one at a
 * time.  Not before the protocol allows it (CQL: the answer to STARTUP
 * switches v5 to segments).
 *
 * Backpressure: while more than max_write_queue bytes wait to be written to
 * the client, or a batch is running and too much input is queued, we stop
 * reading from it; reading resumes when the queue drains.
 *
 * Holding batches (MORE): a transform that gathers requests across batches
 * (coalesce) makes the main run yield MORE; it is resumed with the next
 * batch read, when its timer fires, or at EOF (sh_run.c).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <unistd.h>

#include "sh_conn.h"
#include "sh_metrics.h"
#include "sh_uring.h"

#define SH_CONN_MAX_INQ (64 * 1024 * 1024) /* queued input before pausing */

static uint64_t sh_conn_next_id = 1;     /* per process; atomically bumped */

typedef struct sh_write_s {
    uv_write_t req;          /* the libuv request */
    uint32_t n;              /* frames held */
    sh_frame_t *small[8];    /* their storage for small writes */
    sh_frame_t **frames;     /* frames held until written */
} sh_write_t;

static void sh_conn_read_cb(uv_stream_t *s, ssize_t nread,
    const uv_buf_t *buf);
static int sh_conn_tls_flush(sh_conn_t *c);
static void sh_conn_out_drop(sh_conn_t *c);
static void sh_conn_flush_out(sh_conn_t *c);

/* --- closing ------------------------------------------------------------- */

/*
 * The handle is closed: what backends keep for the client goes now, not in
 * sh_conn_close, which may run under a backend's own callback (a relayed
 * reply whose write failed): the backend connection outlives the call that
 * closed its client.  Replies owed meanwhile wake nobody (the runs let go of
 * their batches at close) and writes to a closing client are dropped.
 */
void
sh_listener_release(sh_listener_t *l)
{
    if (l->open_handles == 0 && l->refs == 0) {
        sh_tls_ctx_unref(l->conf.tls);
        sh_free(l);
    }
}

static void
sh_conn_close_cb(uv_handle_t *h)
{
    sh_conn_t *c = (sh_conn_t *) h;

    while (c->sess.attached != NULL) {
        sh_attach_t *a = c->sess.attached;

        c->sess.attached = a->next;
        a->cleanup(a->data);
        sh_free(a);
    }
    if (c->w != NULL) {
        sh_lua_session_release(c->w->L, &c->sess);
    }
    if (c->src != NULL) {
        c->src->refs--;
        sh_listener_release(c->src);
    }
    sh_tls_free(c->tls);
    sh_free(c->out);
    sh_free(c);
}

void
sh__conn_unlink_lane(sh_conn_t *c, sh_run_t *l)
{
    sh_run_t **pp;

    for (pp = &c->lanes; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            c->nlanes--;
            if (l->running) {
                c->lanes_busy--;
            }
            return;
        }
    }
}

static void
sh_conn_close(sh_conn_t *c)
{
    sh_worker_t *w = c->w;

    /* once only: a shutdown cancelled by the close calls back here, and
     * a second unlink would touch neighbours freed since */
    if (c->closed) {
        return;
    }
    c->closed = 1;
    c->closing = 1;
    sh_uring_before(w, (uv_stream_t *) &c->tcp); /* what it was sent goes */
    sh_conn_out_drop(c);
    sh__run_orphan_shadows(c);
    while (c->lanes != NULL) {
        sh_run_t *l = c->lanes;          /* their replies had nowhere to go */

        sh__conn_unlink_lane(c, l);
        sh__run_close(l);
    }
    sh__run_close(&c->main);
    sh__session_drop_pushes(&c->sess);
    sh_batch_unref(c->inq);
    c->inq = NULL;
    sh_proto_conn_free(&c->pc);
    sh_ffi_metric_add(c->src->conns, -1);
    sh_worker_conns(w, -1);
    w->gen_conns[c->gen % SH_WORKER_GENS]--;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        w->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    sh_log_debug("conn %llu closed", (unsigned long long) c->id);
    /* the memory goes in the close callback, never under a running chain */
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
void
sh__conn_close_after_writes(sh_conn_t *c)
{
    if (c->closing) {
        return;
    }
    sh_conn_flush_out(c);                /* the last replies first */
    if (c->closing) {
        return;                          /* (their write failed) */
    }
    c->closing = 1;
    if (c->read_stopped == 0) {
        uv_read_stop((uv_stream_t *) &c->tcp);
        c->read_stopped = 1;
    }
    if (c->tls != NULL) {
        sh_tls_shutdown(c->tls);         /* close_notify, then FIN */
        if (sh_conn_tls_flush(c) != SH_OK) {
            return;
        }
    }
    c->shutdown.data = c;
    sh_uring_before(c->w, (uv_stream_t *) &c->tcp); /* the FIN follows */
    if (uv_shutdown(&c->shutdown, (uv_stream_t *) &c->tcp,
                    sh_conn_shutdown_cb) != 0)
    {
        c->closing = 0;
        sh_conn_close(c);
    }
}

/* --- reading and backpressure -------------------------------------------- */

static char sh_conn_via_uring;  /* the "buffer" that says: read by io_uring */

static void
sh_conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sh_conn_t *c = (sh_conn_t *) h;
    uint8_t *p;
    size_t n;

    sh_unused(suggested);
    if (c->tls != NULL) {
        sh_tls_read_space(buf);          /* ciphertext, decrypted after */
        return;
    }
    if (c->w->uring != NULL) {
        /* no buffer: libuv reads nothing, and sh_conn_read_cb asks for a
         * receive in the iteration's submission (sh_uring.h) */
        buf->base = &sh_conn_via_uring;
        buf->len = 0;
        return;
    }
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

void
sh__conn_resume_reading(sh_conn_t *c)
{
    if (c->read_stopped && !c->closing && !c->eof && !c->proto_err
        && !c->draining)
    {
        c->read_stopped = 0;
        uv_read_start((uv_stream_t *) &c->tcp, sh_conn_alloc_cb,
                      sh_conn_read_cb);
    }
}

int
sh__conn_write_blocked(sh_conn_t *c)
{
    return uv_stream_get_write_queue_size((uv_stream_t *) &c->tcp)
           + c->out_bytes > c->src->conf.max_write_queue;
}

/*
 * Read again after batches finished or replies drained: unless replies
 * back up, or requests still wait for a run (with lanes: for a free one).
 */
void
sh__conn_read_on(sh_conn_t *c)
{
    if (!c->closing && (c->inq == NULL || c->inq->n == 0)
        && (!c->main.running || c->src->conf.lanes > 1)
        && !sh__conn_write_blocked(c))
    {
        sh__conn_resume_reading(c);
    }
}

/* A pipelining client outpaces the chain: bound what we hold. */
static void
sh_conn_bound_input(sh_conn_t *c)
{
    if (c->pc.p->reader_pending(c->pc.reader) > SH_CONN_MAX_INQ
        || (c->inq && c->inq->n > c->src->conf.max_elements))
    {
        sh_conn_pause(c);
    }
}

/* --- writing ------------------------------------------------------------- */

static void sh_conn_wrote(sh_conn_t *c, int status);

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
    sh_conn_wrote(c, status);
}

static void
sh_conn_copy_write_cb(uv_write_t *req, int status)
{
    sh_conn_t *c = req->data;

    sh_copy_write_done(req);
    sh_conn_wrote(c, status);
}

/* Write what TLS has pending (replies, alerts, handshake messages);
 * SH_ERROR when the client is gone (c is closed). */
static int
sh_conn_tls_flush(sh_conn_t *c)
{
    if (sh_tls_flush(c->tls, (uv_stream_t *) &c->tcp, sh_conn_copy_write_cb,
                     c, SH_SIDE_CLIENT) < 0)
    {
        sh_conn_close(c);
        return SH_ERROR;
    }
    return SH_OK;
}

/* A queued write finished: the client is gone, or reading may go on. */
static void
sh_conn_wrote(sh_conn_t *c, int status)
{
    if (c->closing) {
        return;
    }
    if (status < 0) {
        /* the client is gone (reset, broken pipe); reading may be paused
         * for backpressure, so it would not notice */
        sh_conn_close(c);
        return;
    }
    if (uv_stream_get_write_queue_size((uv_stream_t *) &c->tcp)
        <= c->src->conf.max_write_queue / 2)
    {
        sh__session_drained(&c->sess);   /* relays read on */
        if (c->closing) {
            return;
        }
        if (c->main.more) {
            sh__conn_more_event(c);  /* held input may go on now */
            return;
        }
        if (!c->main.running || c->src->conf.lanes > 1) {
            sh__conn_dispatch(c);
        }
        sh__conn_read_on(c);
    }
}

/* A batched reply the socket did not take at once (sh_uring.c): queued
 * (rc 1), or the client is gone. */
static void
sh_conn_uring_done(void *data, int rc)
{
    sh_conn_t *c = data;

    if (c->closing) {
        return;
    }
    if (rc < 0) {
        sh_conn_close(c);
    } else if (sh__conn_write_blocked(c)) {
        sh_conn_pause(c);
    }
}

/*
 * sh_conn_write_frames: write frames to the client: small ones copied into
 * the iteration's batch (sh_uring.c), else as they are, at once when the
 * socket takes them (one writev), else queued in one uv_write that holds a
 * reference on each frame until written.  NOREPLY frames are skipped.
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

    if (c->closing || n == 0) {
        return;
    }
    if (c->tls != NULL) {
        if (sh_tls_write_frames(c->tls, frames, n) != SH_OK) {
            sh_log_warn("source \"%s\": conn %llu: TLS: %s", c->src->name,
                        (unsigned long long) c->id, sh_tls_error(c->tls));
            sh_conn_close(c);
            return;
        }
        if (sh_conn_tls_flush(c) == SH_OK && sh__conn_write_blocked(c)) {
            sh_conn_pause(c);
        }
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
    if (sh_uring_write(c->w, (uv_stream_t *) &c->tcp, bufs, k, total,
                       SH_SIDE_CLIENT, sh_conn_copy_write_cb, c,
                       sh_conn_uring_done))
    {
        if (bufs != sbufs) {
            sh_free(bufs);
        }
        return;
    }
    if (sh_write_flat_fits(k, total)) {
        rc = sh_write_flat((uv_stream_t *) &c->tcp, bufs, k, total,
                           SH_SIDE_CLIENT, sh_conn_copy_write_cb, c);
        if (bufs != sbufs) {
            sh_free(bufs);
        }
        if (rc < 0) {
            sh_conn_close(c);
        } else if (rc == 1 && sh__conn_write_blocked(c)) {
            sh_conn_pause(c);
        }
        return;
    }
    done = k ? sh_try_write((uv_stream_t *) &c->tcp, bufs, k, SH_SIDE_CLIENT)
             : 0;
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
    sh_io_write(SH_SIDE_CLIENT, total - (size_t) done);
    if (sh__conn_write_blocked(c)) {
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
    return c->pc.p->error_frame(&c->pc, req, code, msg);
}

static void
sh_conn_write_cb_frames(void *ctx, sh_frame_t **frames, uint32_t n)
{
    sh_conn_write_frames(ctx, frames, n);
}

/*
 * Replies to a client that runs several batches at once (a CQL connection
 * on lanes) are gathered and written once per loop iteration, framed by
 * its protocol then (CQL v5: segments once the handshake is done): every
 * reply that completes in one iteration -- lanes answered by one read from
 * the node -- goes out in one write (for v5 one segment; with TLS one run
 * of records) instead of a write each, which had cost the driver a read
 * each.  A connection with one batch at a time (every Redis client) gets
 * its reply written at once: gathering those too, to the end of the
 * iteration, cost 20 % at 10 clients without pipelining (22.4 against 18.5
 * us per request), because a reply written at once brings the client's
 * next request while the iteration still runs.  The hook runs after the
 * runs woken in the iteration have answered; a close after the last reply
 * writes what is gathered first.
 */
static void
sh_conn_outq_remove(sh_conn_t *c)
{
    sh_conn_t **pp;

    if (!c->on_outq) {
        return;
    }
    for (pp = &c->w->outq; *pp != NULL; pp = &(*pp)->out_next) {
        if (*pp == c) {
            *pp = c->out_next;
            break;
        }
    }
    c->on_outq = 0;
}

/* Drop what is gathered (the client is gone). */
static void
sh_conn_out_drop(sh_conn_t *c)
{
    uint32_t i;

    sh_conn_outq_remove(c);
    for (i = 0; i < c->nout; i++) {
        sh_frame_unref(c->out[i]);
    }
    c->nout = 0;
    c->out_bytes = 0;
}

/* Write what c gathered. */
static void
sh_conn_flush_out(sh_conn_t *c)
{
    sh_frame_t **frames = c->out;
    uint32_t i, n = c->nout, cap = c->out_cap;
    int held;

    sh_conn_outq_remove(c);
    if (n == 0) {
        return;
    }
    /* what is gathered counts toward max_write_queue: a connection it
     * paused waits for these replies to drain, which they may do at once
     * (no queued write then calls back) */
    held = !c->closing && sh__conn_write_blocked(c);
    /* the array is ours while the write runs: a close under it (a write
     * that fails) finds nothing gathered */
    c->out = NULL;
    c->out_cap = 0;
    c->nout = 0;
    c->out_bytes = 0;
    if (!c->closing) {
        c->pc.p->send(&c->pc, frames, n, sh_conn_write_cb_frames, c);
    }
    for (i = 0; i < n; i++) {
        sh_frame_unref(frames[i]);
    }
    if (c->out == NULL) {
        c->out = frames;                 /* kept for the next iteration */
        c->out_cap = cap;
    } else {
        sh_free(frames);
    }
    if (held && !c->closing) {
        sh_conn_wrote(c, 0);
    }
}

int
sh_conn_flush_all(sh_worker_t *w)
{
    sh_conn_t *c;
    int any = 0;

    while ((c = w->outq) != NULL) {
        sh_conn_flush_out(c);
        any = 1;
    }
    return any;
}

void
sh_conn_send_frames(sh_conn_t *c, sh_frame_t **frames, uint32_t n)
{
    if (c->closing || n == 0) {
        return;
    }
    if (c->nlanes == 0 && c->nout == 0) {
        /* one batch at a time: at once (see above) */
        c->pc.p->send(&c->pc, frames, n, sh_conn_write_cb_frames, c);
        return;
    }
    sh_conn_gather_frames(c, frames, n);
}

void
sh_conn_gather_frames(sh_conn_t *c, sh_frame_t **frames, uint32_t n)
{
    uint32_t i;

    if (c->closing || n == 0) {
        return;
    }
    if (c->nout + n > c->out_cap) {
        c->out_cap = sh_max(c->out_cap * 2, sh_max(c->nout + n, 16));
        c->out = sh_realloc(c->out, c->out_cap * sizeof(sh_frame_t *));
    }
    for (i = 0; i < n; i++) {
        if (frames[i] != NULL) {
            c->out[c->nout++] = sh_frame_ref(frames[i]);
            c->out_bytes += frames[i]->len;
        }
    }
    if (!c->on_outq) {
        c->on_outq = 1;
        c->out_next = c->w->outq;
        c->w->outq = c;
    }
}

void
sh__conn_send_error(sh_conn_t *c, const sh_frame_t *req, uint32_t code,
    const char *msg)
{
    sh_frame_t *f = sh_conn_error_frame(c, req, code, msg);

    sh_conn_send_frames(c, &f, 1);
    sh_frame_unref(f);
}

/* --- scheduling runs ----------------------------------------------------- */

/* The next batch from c's inq (at most max_batch requests) into r->batch. */
void
sh__conn_take_batch(sh_conn_t *c, sh_run_t *r)
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

/* An idle lane of c, a new one, or NULL when none may run now. */
static sh_run_t *
sh_conn_lane(sh_conn_t *c)
{
    sh_run_t *l;

    if (c->main.more || c->src->conf.lanes <= 1
        || !c->pc.p->lanes_ready(&c->pc))
    {
        return NULL;
    }
    for (l = c->lanes; l != NULL; l = l->next) {
        if (!l->running) {
            return l;
        }
    }
    if (c->nlanes + 1 >= c->src->conf.lanes) {
        return NULL;
    }
    l = sh_alloc(sizeof(*l));
    sh__run_init(l, c, SH_RUN_LANE);
    l->next = c->lanes;
    c->lanes = l;
    c->nlanes++;
    return l;
}

/*
 * sh__conn_dispatch: run what c has queued: on its main run when idle,
 * else (lanes allowed) on an idle lane; returns when every run is busy or
 * nothing is queued.  With nothing queued and nothing running, acts on
 * EOF, a protocol error or a close that waited for the batches.
 */
void
sh__conn_dispatch(sh_conn_t *c)
{
    sh_run_t *r;

    while (!c->closing) {
        if (c->inq != NULL && c->inq->n > 0) {
            if (sh__conn_write_blocked(c)) {
                sh_conn_pause(c);
                return;
            }
            if (!c->main.running) {
                r = &c->main;
            } else if ((r = sh_conn_lane(c)) == NULL) {
                return;
            }
            sh__conn_take_batch(c, r);
            if (r->kind == SH_RUN_LANE) {
                c->lanes_busy++;
                sh_ffi_metric_add(c->src->lane_batches, 1);
            }
            sh__run_start(r);
            continue;
        }
        if (c->main.running || c->lanes_busy > 0) {
            return;
        }
        if (c->proto_err) {
            sh__conn_send_error(c, NULL, SH_CQL_PROTOCOL_ERROR,
                                c->pc.p->reader_error(c->pc.reader));
            sh__conn_close_after_writes(c);
        } else if (c->close_after || c->eof) {
            sh__conn_close_after_writes(c);
        }
        return;
    }
}

/* Something happened to a connection whose main run may wait in MORE
 * (input, timer, EOF, replies drained): resume it, then run what is queued
 * after. */
void
sh__conn_more_event(sh_conn_t *c)
{
    sh__run_more(&c->main);
    if (!c->main.running && !c->closing) {
        sh__conn_dispatch(c);
        if (!c->main.running && !c->closing && !sh__conn_write_blocked(c)) {
            sh__conn_resume_reading(c);
        }
    }
    if (c->main.running && !c->closing) {
        sh_conn_bound_input(c);
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

/* The reader has no memory for what the client sends (it failed with a
 * protocol error saying so): this connection is answered and closed,
 * everyone else is served on. */
static void
sh_conn_out_of_memory(sh_conn_t *c)
{
    sh_log_fields_t lf = { .source = c->src->name, .conn = c->id };

    sh_log_with(SH_LOG_WARN, &lf, "conn %llu: %s", (unsigned long long) c->id,
                c->pc.p->reader_error(c->pc.reader));
    sh_ffi_metric_add(c->src->oom_closes, 1);
}

static void
sh_conn_on_eof(sh_conn_t *c)
{
    c->eof = 1;
    uv_read_stop((uv_stream_t *) &c->tcp);
    c->read_stopped = 1;
    if (!c->main.running) {
        sh__conn_dispatch(c);
    } else if (sh_conn_batch_blocks(c->main.batch)
               || sh_conn_batch_blocks(c->main.held)) {
        /* Redis frees a blocked client on EOF; so do we, which closes
         * its dedicated backend connection and unblocks it there, so a
         * later push is not popped for nobody.  Ordinary batches are
         * finished, so a half-closed pipeline still gets its replies. */
        sh_conn_close(c);
    } else if (c->main.more) {
        sh__conn_more_event(c);  /* what is held is flushed now */
    }
}

/* n more bytes in the reader: parse what they complete into c->inq. */
static void
sh_conn_take(sh_conn_t *c, size_t n)
{
    sh_frame_t *f;

    c->pc.p->reader_commit(c->pc.reader, n);
    for (;;) {
        if (c->pc.p->reader_next(c->pc.reader, &f) != SH_OK) {
            c->proto_err = 1;
            uv_read_stop((uv_stream_t *) &c->tcp);
            c->read_stopped = 1;
            return;
        }
        if (f == NULL) {
            return;
        }
        c->pc.p->on_request(&c->pc, f);
        if (c->inq == NULL) {
            c->inq = sh_batch_alloc(0);
        }
        sh_batch_append(c->inq, f);
        sh_frame_unref(f);               /* the batch holds it now */
    }
}

/* After a read: run what it brought, or bound what waits. */
static void
sh_conn_after_read(sh_conn_t *c)
{
    if (c->main.running && c->main.more) {
        sh__conn_more_event(c);      /* the chain asked for this batch */
        return;
    }
    if (c->main.running) {
        if (c->src->conf.lanes > 1) {
            sh__conn_dispatch(c);    /* on a lane, when one is free */
            if (c->closing) {
                return;
            }
        }
        sh_conn_bound_input(c);
        return;
    }
    sh__conn_dispatch(c);
}

/* The client's address as accept(2) gave it (sa NULL or not IP: unknown). */
static void
sh_conn_set_peer(sh_conn_t *c, const struct sockaddr *sa)
{
    int port = -1;

    c->peer_ip[0] = '\0';
    if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *) sa;

        if (uv_ip6_name(a6, c->peer_ip, sizeof(c->peer_ip)) == 0) {
            port = ntohs(a6->sin6_port);
            snprintf(c->peer, sizeof(c->peer), "[%s]:%d", c->peer_ip, port);
        }
    } else if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *) sa;

        if (uv_ip4_name(a4, c->peer_ip, sizeof(c->peer_ip)) == 0) {
            port = ntohs(a4->sin_port);
            snprintf(c->peer, sizeof(c->peer), "%s:%d", c->peer_ip, port);
        }
    }
    if (port < 0) {
        c->peer_ip[0] = '\0';
        snprintf(c->peer, sizeof(c->peer), "?:0");
    }
}

static sh_log_limit_t sh_tls_log_limit;

/* A handshake failed: said (at most once a second for all clients: a
 * scanner must not flood the log), counted, the alert written, closed. */
static void
sh_conn_tls_refused(sh_conn_t *c)
{
    char more[64] = "";
    uint64_t held;

    sh_ffi_metric_add(c->src->tls_errors, 1);
    if (sh_log_limit(&sh_tls_log_limit, 1000, 1, &held)) {
        sh_log_fields_t lf = { .source = c->src->name, .conn = c->id,
                               .client = c->peer };

        if (held > 0) {
            snprintf(more, sizeof(more), " (%llu more since the last "
                     "message)", (unsigned long long) held);
        }
        sh_log_with(SH_LOG_WARN, &lf, "source \"%s\": TLS handshake with %s "
                    "failed: %s%s", c->src->name, c->peer,
                    sh_tls_error(c->tls), more);
    }
    c->eof = 1;
    sh__conn_close_after_writes(c);
}

/*
 * Ciphertext from a TLS client: the handshake first; then every byte it
 * decrypts goes to the reader, as one plain read would (what the read
 * brought is all taken now, so nothing waits inside OpenSSL while reading
 * is paused).
 */
static void
sh_conn_tls_read(sh_conn_t *c, const char *data, size_t len)
{
    int rc, got = 0;
    ssize_t r;
    uint8_t *p;
    size_t n;

    sh_tls_feed(c->tls, data, len);
    if (!sh_tls_handshake_done(c->tls)) {
        rc = sh_tls_handshake(c->tls);
        if (sh_conn_tls_flush(c) != SH_OK) {
            return;
        }
        if (rc == SH_TLS_FAILED) {
            sh_conn_tls_refused(c);
            return;
        }
        if (rc == SH_TLS_MORE) {
            return;
        }
        sh_log_debug("conn %llu: %s, client certificate %s",
                     (unsigned long long) c->id, sh_tls_version(c->tls),
                     sh_tls_subject(c->tls) ? sh_tls_subject(c->tls)
                                            : "none");
    }
    while (!c->proto_err && sh_tls_has_input(c->tls)) {
        c->pc.p->reader_space(c->pc.reader, &p, &n);
        if (n == 0) {
            sh_conn_out_of_memory(c);
            sh_conn_take(c, 0);
            got = 1;
            break;
        }
        r = sh_tls_read(c->tls, p, n);
        if (r > 0) {
            sh_conn_take(c, (size_t) r);
            got = 1;
            continue;
        }
        if (r == 0) {
            break;
        }
        if (sh_conn_tls_flush(c) != SH_OK) {
            return;
        }
        if (got) {
            sh_conn_after_read(c);
        }
        if (c->closing) {
            return;
        }
        if (r == SH_TLS_EOF) {
            sh_conn_on_eof(c);
        } else {
            sh_log_debug("conn %llu: TLS: %s", (unsigned long long) c->id,
                         sh_tls_error(c->tls));
            sh_conn_close(c);
        }
        return;
    }
    if (sh_conn_tls_flush(c) != SH_OK) {
        return;                          /* (key updates, tickets) */
    }
    if (got) {
        sh_conn_after_read(c);
    }
}

/* What a plain client's read brought (from libuv or io_uring): nread
 * bytes in the reader, its end, an error, or UV_ENOBUFS (no memory). */
static void
sh_conn_got(sh_conn_t *c, ssize_t nread)
{
    if (nread == UV_ENOBUFS) {
        sh_conn_out_of_memory(c);
        nread = 0;
    } else if (nread < 0) {
        if (nread != UV_EOF) {
            sh_log_debug("conn %llu: read: %s", (unsigned long long) c->id,
                         uv_strerror((int) nread));
            sh_conn_close(c);
            return;
        }
        sh_conn_on_eof(c);
        return;
    }
    if (nread == 0 && c->pc.p->reader_error(c->pc.reader) == NULL) {
        return;
    }
    sh_conn_take(c, (size_t) nread);
    sh_conn_after_read(c);
}

/* Where an io_uring receive goes: the reader, unless c reads no more. */
static int
sh_conn_recv_space(uv_stream_t *s, uint8_t **p, size_t *n)
{
    sh_conn_t *c = (sh_conn_t *) s;

    if (c->read_stopped || c->closing) {
        return 0;
    }
    c->pc.p->reader_space(c->pc.reader, p, n);
    return 1;
}

/* (activity counted once the bytes are in, as libuv's read callback
 * counts it: the busy poll's measure of work leaves the read out) */
static void
sh_conn_recv_got(uv_stream_t *s, ssize_t nread)
{
    sh_conn_t *c = (sh_conn_t *) s;

    sh_worker_activity(c->w);
    sh_conn_got(c, nread);
}

static void
sh_conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sh_conn_t *c = (sh_conn_t *) s;

    if (nread == UV_ENOBUFS && buf->base == &sh_conn_via_uring) {
        /* readable: received after the poll; should io_uring be gone,
         * the poll finds it readable again and libuv reads */
        sh_uring_read(c->w, s, SH_SIDE_CLIENT, sh_conn_recv_space,
                      sh_conn_recv_got);
        return;
    }
    sh_worker_activity(c->w);
    if (nread > 0) {
        sh_io_read(SH_SIDE_CLIENT, (size_t) nread);
    }
    if (c->tls != NULL && nread > 0) {
        sh_conn_tls_read(c, buf->base, (size_t) nread);
        return;
    }
    sh_conn_got(c, nread);
}

/* --- the connection's life ----------------------------------------------- */

void
sh_conn_accept(sh_listener_t *l, int fd, const struct sockaddr *sa)
{
    sh_worker_t *w = l->w;
    sh_conn_t *c = sh_calloc(1, sizeof(*c));
    int rc;

    sh_conn_set_peer(c, sa);
    uv_tcp_init(&w->loop, &c->tcp);
    rc = uv_tcp_open(&c->tcp, fd);
    if (rc != 0) {
        sh_log_warn("source \"%s\": a new connection: %s", l->name,
                    uv_strerror(rc));
        close(fd);
        uv_close((uv_handle_t *) &c->tcp, sh_conn_close_cb);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (l->conf.tls != NULL
        && (c->tls = sh_tls_new_server(l->conf.tls)) == NULL)
    {
        sh_log_warn("source \"%s\": a new connection: no memory for TLS",
                    l->name);
        uv_close((uv_handle_t *) &c->tcp, sh_conn_close_cb);
        return;
    }
    c->w = w;
    c->src = l;
    l->refs++;
    c->gen = l->gen;
    c->index = l->conf.index;
    c->id = __atomic_fetch_add(&sh_conn_next_id, 1, __ATOMIC_RELAXED);
    if (sh_proto_conn_init(&c->pc, &l->conf) != SH_OK) {
        sh_log_error("source \"%s\": unknown protocol %d", l->name,
                     (int) l->conf.proto);
        uv_close((uv_handle_t *) &c->tcp, sh_conn_close_cb);
        return;
    }
    c->sess.conn = c;
    c->sess.proto = l->conf.proto;
    sh__run_init(&c->main, c, SH_RUN_MAIN);
    sh_ffi_metric_add(l->conns, 1);
    sh_worker_conns(w, 1);
    w->gen_conns[c->gen % SH_WORKER_GENS]++;
    c->next = w->conns;
    if (w->conns) {
        w->conns->prev = c;
    }
    w->conns = c;
    sh_log_debug("conn %llu accepted on source \"%s\"",
                 (unsigned long long) c->id, l->name);
    uv_read_start((uv_stream_t *) &c->tcp, sh_conn_alloc_cb, sh_conn_read_cb);
}

/* Tell the client why (an -ERR, a CQL OVERLOADED), then close once it is
 * written. */
void
sh__conn_abort(sh_conn_t *c, const char *why)
{
    char msg[200];

    if (c->closing) {
        return;
    }
    snprintf(msg, sizeof(msg), "shotover: %s", why);
    sh__conn_send_error(c, NULL, SH_CQL_OVERLOADED, msg);
    sh__conn_close_after_writes(c);
}

/* Close c once the batches running now (its main run's and its lanes')
 * are done and their replies written. */
void
sh__conn_close_when_done(sh_conn_t *c)
{
    c->close_after = 1;
    if (!c->main.running && c->lanes_busy == 0) {
        sh__conn_close_after_writes(c);
    }
}

void
sh_conn_drain_all(sh_worker_t *w)
{
    sh_conn_t *c, *next;

    for (c = w->conns; c != NULL; c = next) {
        next = c->next;                  /* c may close now */
        if (c->closing) {
            continue;
        }
        c->draining = 1;
        sh_conn_pause(c);
        c->close_after = 1;
        sh__conn_dispatch(c);            /* closes an idle one */
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
    sh__run_close_shadows(w);
}
