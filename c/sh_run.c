/*
 * sh_run.c -- runs: a coroutine running a chain over batches (sh_conn.h).
 *
 * A run resumes its coroutine (sh_lua_resume) with a batch and acts on
 * what it yields: WAIT or SLEEP (resumed from the worker's wake list once
 * its backends answered, or another run of its client notified it), DONE
 * (its responses go to the client, checked against the requests, and what
 * Lua made for the batch is released), MORE (a transform holds the batch:
 * the main run is resumed with the next batch, its timer or EOF, and its
 * final responses cover every batch held).
 *
 * Shadows are runs Lua pushes requests to (an asynchronous tee): they run
 * from the wake list, never from inside Lua, write their replies nowhere,
 * have a session of their own, and outlive their client until their queue
 * is done.
 *
 * Sessions are what backends serve (sh_session_*): the client's, or a
 * shadow's own.
 */
#include <stdio.h>

#include "sh_conn.h"
#include "sh_metrics.h"

static uint64_t sh_run_next_id = 1;      /* per process; atomically bumped */

static void sh_run_timer_cb(uv_timer_t *t);
static void sh_run_schedule(sh_run_t *r);
static void sh_run_unlink_shadow(sh_run_t *s);

/* --- life ---------------------------------------------------------------- */

void
sh__run_init(sh_run_t *r, sh_conn_t *c, int kind)
{
    memset(r, 0, sizeof(*r));
    r->w = c->w;
    r->src = c->src;
    r->gen = c->gen;
    r->index = c->index;
    r->conn = c;
    r->kind = kind;
    if (kind == SH_RUN_SHADOW) {
        c->src->refs++;                  /* it may outlive its client */
    }
    r->sess = &c->sess;
    r->id = __atomic_fetch_add(&sh_run_next_id, 1, __ATOMIC_RELAXED);
    r->co = (sh_lua_co_t) SH_LUA_CO_INIT;
}

static void
sh_run_timer_close_cb(uv_handle_t *h)
{
    sh_free(h);
}

/* Release what the batch held: the cycle and the batches. */
void
sh__run_release_cycle(sh_run_t *r)
{
    sh_cycle_release(&r->cycle);
    sh_batch_unref(r->batch);
    sh_batch_unref(r->resp);
    sh_batch_unref(r->exp);
    sh_batch_unref(r->held);
    r->batch = NULL;
    r->resp = NULL;
    r->exp = NULL;
    r->held = NULL;
    r->more = 0;
    r->eof_told = 0;
    r->timer_fired = 0;
}

static void
sh_session_end(sh_session_t *s, lua_State *L)
{
    while (s->attached != NULL) {
        sh_attach_t *a = s->attached;

        s->attached = a->next;
        a->cleanup(a->data);
        sh_free(a);
    }
    sh_lua_session_release(L, s);
}

/* The last of a closed run, once its coroutine is not running. */
static void
sh_run_reap(sh_run_t *r)
{
    sh_lua_co_release(r->w, &r->co);
    if (r->kind == SH_RUN_SHADOW) {
        r->src->refs--;
        sh_listener_release(r->src);
    }
    if (r->kind != SH_RUN_MAIN) {
        sh_free(r);
    }
}

/*
 * sh__run_close: r ends: backends may still fill its response batches but
 * no longer wake it; its coroutine, cycle and timer go.  A lane's or
 * shadow's memory goes too -- once out of Lua when it is in it (a shadow
 * aborted from under its own chain).  The main run lives in its
 * connection.
 */
void
sh__run_close(sh_run_t *r)
{
    sh_worker_t *w = r->w;
    uint32_t i;

    if (r->closed) {
        return;
    }
    r->closed = 1;
    for (i = 0; i < r->nwaits; i++) {
        r->waits[i]->run = NULL;
        sh_batch_unref(r->waits[i]);
    }
    r->nwaits = 0;
    sh_free(r->waits);
    r->waits = NULL;
    if (r->kind == SH_RUN_SHADOW) {
        sh_run_unlink_shadow(r);
        if (r->all_prev != NULL) {
            r->all_prev->all_next = r->all_next;
        } else {
            w->shadows = r->all_next;
        }
        if (r->all_next != NULL) {
            r->all_next->all_prev = r->all_prev;
        }
        sh_session_end(&r->own, w->L);
    }
    sh__run_release_cycle(r);
    sh_cycle_free(&r->cycle);
    if (r->timer != NULL) {
        uv_close((uv_handle_t *) r->timer, sh_run_timer_close_cb);
        r->timer = NULL;
    }
    sh_batch_unref(r->inq);
    sh_batch_unref(r->expq);
    r->inq = r->expq = NULL;
    if (r->on_wake) {
        sh_run_t **pp = &w->wakeq;

        while (*pp != r) {
            pp = &(*pp)->wake_next;
        }
        *pp = r->wake_next;
        r->on_wake = 0;
    }
    if (!r->in_lua) {
        sh_run_reap(r);
    }
}

/* --- stepping ------------------------------------------------------------ */

static void
sh_run_set_resp(sh_run_t *r, sh_batch_t *resp)
{
    if (resp != NULL) {
        sh_batch_ref(resp);
    }
    sh_batch_unref(r->resp);
    r->resp = resp;
}

/*
 * The replies of a batch with the pushes the backend sent among them
 * (sh_session_push): each right after the reply it followed when resp is
 * the batch the backend filled (they arrive in slot order), from the first
 * that does not fit that order on after the last reply.  resp NULL: only
 * the pushes.
 */
static void
sh_run_send_with_pushes(sh_conn_t *c, sh_batch_t *resp)
{
    sh_session_t *s = &c->sess;
    uint32_t n = resp != NULL ? resp->n : 0, i, j = 0, k = 0;
    sh_frame_t **out = sh_alloc((n + s->npushes) * sizeof(sh_frame_t *));

    for (i = 0; i < n; i++) {
        out[k++] = resp->frames[i];
        while (j < s->npushes && s->pushes[j].resp == resp
               && s->pushes[j].idx == i)
        {
            out[k++] = s->pushes[j++].f;
        }
    }
    while (j < s->npushes) {             /* another batch's, or out of
                                            slot order: after them all */
        out[k++] = s->pushes[j++].f;
    }
    sh_conn_send_frames(c, out, k);
    sh_free(out);
    sh__session_drop_pushes(s);
}

/*
 * The chain finished a batch: check the responses match the requests, send
 * them to the client (a shadow's go nowhere), and release the batch.
 */
static void
sh_run_finish(sh_run_t *r)
{
    sh_batch_t *req = r->batch;
    sh_batch_t *resp = r->resp;
    sh_conn_t *c = r->kind == SH_RUN_SHADOW ? NULL : r->conn;
    uint32_t i;

    if (r->held != NULL) {
        /* MORE held earlier batches: the responses cover them all, in
         * order, then this one; Lua's view of this batch lives on in the
         * cycle until it is released */
        for (i = 0; i < r->batch->n; i++) {
            sh_batch_append(r->held, r->batch->frames[i]);
        }
        sh_cycle_push_batch(&r->cycle, r->batch);
        r->batch = r->held;
        r->held = NULL;
        req = r->batch;
    }
    r->running = 0;
    if (r->kind == SH_RUN_LANE && c != NULL) {
        c->lanes_busy--;
    }
    if (c == NULL) {
        sh__run_release_cycle(r);
        return;
    }
    if (resp == NULL || resp->n != req->n) {
        sh_log_fields_t lf;
        char client[80];

        sh_ffi_run_log_fields(r, &lf, client, sizeof(client));
        sh_log_with(SH_LOG_ERROR, &lf, "source \"%s\": chain returned %u "
                    "responses for %u requests", r->src->name,
                    resp ? resp->n : 0, req->n);
        for (i = 0; i < req->n; i++) {
            sh__conn_send_error(c, req->frames[i], SH_CQL_SERVER_ERROR,
                                "shotover: chain returned the wrong number "
                                "of responses");
        }
    } else {
        for (i = 0; i < resp->n; i++) {
            if (resp->frames[i] == NULL) {
                sh_frame_t *f = sh_conn_error_frame(c, req->frames[i],
                    SH_CQL_SERVER_ERROR, "shotover: no response");
                sh_batch_put(resp, i, f);
                sh_frame_unref(f);
            }
        }
        if (c->sess.npushes == 0) {
            sh_conn_send_frames(c, resp->frames, resp->n);
        } else {
            sh_run_send_with_pushes(c, resp);
        }
    }
    if (c->sess.npushes > 0) {           /* after the errors above */
        sh_run_send_with_pushes(c, NULL);
    }
    sh__run_release_cycle(r);
}

/* --- the C path ---------------------------------------------------------- */

/*
 * A chain that is only a sink does, per batch, what the C core can do
 * alone: hand the requests to the sink's pool, wait, return the replies.
 * Resuming the coroutine twice for that (the batch, the replies) and
 * running the chain's Lua was most of shotover's user time per request
 * without pipelining -- and on a VM where every system call flushes the
 * TLB, each page Lua touches costs a walk again after every read and
 * write.  So Lua hands the pool over, with the series the Lua path counts
 * in, and from then on the batches the C path can take never enter Lua:
 *
 *   redis      every batch, from a run's second on (the runner hands it
 *              over at the first).  What the Lua sink does beyond sending
 *              -- following SELECT for query_info -- only matters to other
 *              elements of the chain, and there are none.
 *   cassandra  batches of EXECUTE and BATCH requests only, once the
 *              client's session is open on the node (the sink hands it
 *              over then).  The others -- the handshake, PREPARE, QUERY
 *              (a USE) -- stay in Lua, which learns keyspaces and prepared
 *              statements from them for the process's prepared registry.
 */
void
sh_ffi_run_direct(sh_run_t *r, void *p, int proto, sh_metric_t *requests,
    sh_metric_t *latency, sh_metric_t *el_latency, sh_metric_t *batches)
{
    r->direct = p;
    r->direct_proto = proto;
    r->direct_requests = requests;
    r->direct_latency = latency;
    r->direct_el_latency = el_latency;
    r->direct_batches = batches;
}

/* Can r's new batch take the C path? */
static int
sh_run_direct_fits(const sh_run_t *r)
{
    const sh_batch_t *b = r->batch;
    uint32_t i;

    if (r->direct_proto == SH_PROTO_REDIS) {
        return 1;
    }
    for (i = 0; i < b->n; i++) {
        int op = b->frames[i]->rtype;

        if (op != SH_CQL_EXECUTE && op != SH_CQL_BATCH) {
            return 0;
        }
    }
    return 1;
}

/*
 * A CQL batch on the C path answers each request as its reply comes, not
 * when the batch's last one does.  Replies are matched by stream id, so
 * their order does not matter to the driver, and a batch is whatever one
 * read of the client brought (about ten requests from a busy driver): held
 * for its slowest, a quick read waited for the writes beside it, the
 * driver's window of requests in flight drained, and throughput with it
 * -- most where reads and writes mix.  The reply is gathered for this loop
 * iteration (every reply one read from the node brings goes out in one
 * write), and its slot gets the NOREPLY frame, which the batch's finish
 * writes as nothing.  Redis replies stay in order, and a chain with
 * transforms sees the whole batch's replies.
 */
void
sh_run_reply_early(sh_batch_t *b, uint32_t idx)
{
    sh_run_t *r = b->run;
    sh_frame_t *f;

    if (r == NULL || !r->direct_waiting || r->direct_proto != SH_PROTO_CQL
        || r->resp != b || r->conn == NULL)
    {
        return;
    }
    f = b->frames[idx];
    sh_conn_gather_frames(r->conn, &f, 1);
    sh_batch_put(b, idx, sh_frame_noreply());
}

/* The replies are all in (or were never owed): count, and finish. */
static void
sh_run_direct_done(sh_run_t *r)
{
    uint32_t n = r->batch->n;

    r->suspended = 0;
    r->direct_waiting = 0;
    if (r->direct_requests != NULL) {
        sh_ffi_metric_add(r->direct_requests, n);
    }
    if (r->direct_latency != NULL) {
        sh_metric_since(r->direct_latency, r->direct_t0, n);
    }
    if (r->direct_el_latency != NULL) {
        sh_metric_since(r->direct_el_latency, r->direct_t0, n);
    }
    if (r->direct_batches != NULL) {
        sh_ffi_metric_add(r->direct_batches, 1);
    }
    sh_run_finish(r);
}

static void
sh_run_direct_start(sh_run_t *r)
{
    sh_batch_t *resp = sh_batch_alloc(r->batch->n);
    int rc;

    r->direct_t0 = sh_ffi_now_ns();
    sh_run_set_resp(r, resp);            /* r holds it from here */
    sh_batch_unref(resp);
    if (r->direct_proto == SH_PROTO_REDIS) {
        rc = sh_ffi_redis_send(r->direct, r, r->batch, resp);
    } else {
        rc = sh_ffi_cql_send(r->direct, r, r->batch, resp);
    }
    if (rc == SH_AGAIN && r->nwaits > 0) {
        r->suspended = 1;                /* woken as a coroutine would be */
        r->direct_waiting = 1;
        return;
    }
    sh_run_direct_done(r);
}

/*
 * sh__run_step: resume r's coroutine and act on what it yielded.  Returns
 * 0, or -1 when r is gone (closed, its runner died): the caller must not
 * touch it again.
 */
int
sh__run_step(sh_run_t *r)
{
    sh_conn_t *c = r->conn;
    sh_batch_t *resp;
    sh_log_fields_t lf;
    char client[80];
    const char *err;
    int rc;

    if (r->direct_waiting) {             /* the C path's replies are in */
        sh_run_direct_done(r);
        return 0;
    }
    r->suspended = 0;
    r->in_lua = 1;
    rc = sh_lua_resume(r->w, &r->co, r, r->sess, &r->cycle, &resp, &err);
    r->in_lua = 0;
    if (r->closed) {
        sh_run_reap(r);                  /* it ended under its chain */
        return -1;
    }
    if (rc == SH_YIELD_WAIT || rc == SH_YIELD_SLEEP) {
        r->suspended = 1;
        r->sleeping = rc == SH_YIELD_SLEEP;
        return 0;
    }
    if (rc == SH_YIELD_DONE) {
        sh_run_set_resp(r, resp);
        sh_run_finish(r);
        return 0;
    }
    if (rc == SH_YIELD_MORE && r->kind == SH_RUN_MAIN) {
        r->more = 1;                 /* the caller calls sh__run_more */
        return 0;
    }
    sh_ffi_run_log_fields(r, &lf, client, sizeof(client));
    if (rc == SH_YIELD_MORE) {
        /* a transform that holds requests must not declare lanes: a lane
         * or a shadow has no input of its own to resume it with */
        sh_log_with(SH_LOG_ERROR, &lf, "source \"%s\": a chain element "
                    "held requests on a %s", r->src->name,
                    r->kind == SH_RUN_LANE ? "lane" : "shadow");
    } else {
        sh_log_with(SH_LOG_ERROR, &lf, "source \"%s\": connection runner "
                    "died: %s", r->src->name, err);
    }
    /* nothing sane can follow on this client */
    if (r->kind == SH_RUN_SHADOW) {
        sh__run_close(r);
        return -1;
    }
    if (r->kind == SH_RUN_LANE) {
        sh__conn_unlink_lane(c, r);
        sh__run_close(r);
    }
    if (c != NULL && !c->closing) {
        sh__conn_send_error(c, NULL, SH_CQL_SERVER_ERROR,
                            "shotover: internal error in the chain runner");
        sh__conn_close_after_writes(c);
    }
    return -1;
}

/*
 * sh_run_more_next: the main run waits in MORE; prepare what it is resumed
 * with, in this order: the timer that fired, the next batch (unless the
 * client's replies back up or the held requests reach max_elements), EOF
 * (once, when nothing else is queued).  Returns 1 when there is something,
 * 0 when it must wait.
 */
static int
sh_run_more_next(sh_run_t *r)
{
    sh_conn_t *c = r->conn;
    uint32_t i;

    if (r->timer_fired) {
        r->timer_fired = 0;
        r->wake_reason = SH_WAKE_TIMER;
        return 1;
    }
    if (c->inq != NULL && c->inq->n > 0 && !sh__conn_write_blocked(c)
        && (r->held ? r->held->n : 0) + r->batch->n
           < r->src->conf.max_elements)
    {
        /* this batch joins the held ones; Lua's view of it stays valid
         * in the cycle until the responses are written */
        if (r->held == NULL) {
            r->held = sh_batch_alloc(0);
        }
        for (i = 0; i < r->batch->n; i++) {
            sh_batch_append(r->held, r->batch->frames[i]);
        }
        sh_cycle_push_batch(&r->cycle, r->batch);
        r->batch = NULL;
        sh__conn_take_batch(c, r);
        return 1;
    }
    if ((c->eof || c->proto_err) && !r->eof_told
        && (c->inq == NULL || c->inq->n == 0))
    {
        r->eof_told = 1;
        r->wake_reason = SH_WAKE_EOF;
        return 1;
    }
    return 0;
}

/*
 * sh__run_more: resume the main run that yielded MORE for as long as there
 * is something for it (a loop, not recursion: a long pipeline is many
 * batches).  Leaves it waiting in MORE, waiting for backends, or done.
 */
void
sh__run_more(sh_run_t *r)
{
    sh_conn_t *c = r->conn;

    while (r->more && !c->closing && r->running && sh_run_more_next(r)) {
        r->more = 0;
        if (sh__run_step(r) != 0) {
            return;
        }
    }
    if (!r->more || c->closing) {
        return;
    }
    if (r->eof_told && (r->timer == NULL
                        || !uv_is_active((uv_handle_t *) r->timer)))
    {
        /* told EOF, no timer: nothing can ever finish this batch */
        sh_log_error("source \"%s\": chain still holds requests after EOF",
                     r->src->name);
        sh__conn_send_error(c, NULL, SH_CQL_SERVER_ERROR,
                            "shotover: chain held requests after EOF");
        sh__conn_close_after_writes(c);
        return;
    }
    if ((c->inq == NULL || c->inq->n == 0) && !sh__conn_write_blocked(c)) {
        sh__conn_resume_reading(c);  /* the next batch is what it wants */
    }
}

/*
 * sh__run_start: run r over the batch just given it (r->batch): resume,
 * and for the main run keep feeding a MORE.  Returns as sh__run_step.
 */
int
sh__run_start(sh_run_t *r)
{
    r->running = 1;
    r->seq++;
    r->wake_reason = SH_WAKE_BATCH;
    if (r->direct != NULL && sh_run_direct_fits(r)) {
        sh_run_direct_start(r);
        return 0;
    }
    if (sh__run_step(r) != 0) {
        return -1;
    }
    if (r->more) {                       /* only the main run holds */
        sh__run_more(r);
    }
    return 0;
}

static void
sh_run_timer_cb(uv_timer_t *t)
{
    sh_run_t *r = t->data;

    r->timer_fired = 1;
    if (r->more && r->conn != NULL && !r->conn->closing) {
        sh__conn_more_event(r->conn);
    }
}

/* --- waking ------------------------------------------------------------- */

static void
sh_run_wake(sh_run_t *r)
{
    if (r->on_wake || !r->suspended || r->nwaits > 0 || r->closed) {
        return;
    }
    r->on_wake = 1;
    r->wake_next = r->w->wakeq;
    r->w->wakeq = r;
}

/* Run a shadow's queue soon: from the worker's wake list, which is worked
 * off before every poll (never from inside Lua). */
static void
sh_run_schedule(sh_run_t *r)
{
    if (r->on_wake || r->running || r->closed) {
        return;
    }
    r->on_wake = 1;
    r->wake_next = r->w->wakeq;
    r->w->wakeq = r;
}

/* A shadow runs what was pushed, each request with its paired frame; it
 * ends once it takes no more and nothing is left. */
static void
sh_run_shadow_go(sh_run_t *r)
{
    while (!r->running && !r->closed) {
        if (r->inq != NULL && r->inq->n > 0) {
            r->batch = r->inq;
            r->inq = NULL;
            r->exp = r->expq;
            r->expq = NULL;
            if (sh__run_start(r) != 0) {
                return;
            }
            continue;
        }
        if (r->eof) {
            sh__run_close(r);
        }
        return;
    }
}

int
sh_run_wake_all(sh_worker_t *w)
{
    sh_run_t *r;
    sh_conn_t *c;
    int any = 0;

    while ((r = w->wakeq) != NULL) {
        any = 1;
        w->wakeq = r->wake_next;
        r->on_wake = 0;
        c = r->conn;
        if (r->kind == SH_RUN_SHADOW) {
            if (r->suspended && sh__run_step(r) != 0) {
                continue;
            }
            sh_run_shadow_go(r);
            continue;
        }
        if (c->closing || !r->suspended) {
            continue;
        }
        if (sh__run_step(r) != 0) {
            continue;
        }
        if (r->more) {
            sh__run_more(r);
        }
        if (!r->running && !c->closing) {
            sh__conn_dispatch(c);    /* a run is free: the client's queue */
            sh__conn_read_on(c);
        }
    }
    return any;
}

void
sh_run_add_wait(sh_run_t *r, sh_batch_t *b)
{
    if (r->nwaits == r->waits_cap) {
        r->waits_cap = r->waits_cap ? r->waits_cap * 2 : 4;
        r->waits = sh_realloc(r->waits, r->waits_cap * sizeof(sh_batch_t *));
    }
    r->waits[r->nwaits++] = sh_batch_ref(b);
    b->run = r;
}

void
sh_run_wait_done(sh_run_t *r, sh_batch_t *b)
{
    uint32_t i;

    for (i = 0; i < r->nwaits; i++) {
        if (r->waits[i] == b) {
            r->waits[i] = r->waits[--r->nwaits];
            b->run = NULL;
            sh_batch_unref(b);
            break;
        }
    }
    if (r->nwaits == 0) {
        sh_run_wake(r);
    }
}

/* --- shadows ------------------------------------------------------------- */

/* The client c is going: its shadows finish what they hold, then end. */
void
sh__run_orphan_shadows(sh_conn_t *c)
{
    sh_run_t *s;

    while ((s = c->shadows) != NULL) {
        c->shadows = s->next;
        s->next = NULL;
        s->conn = NULL;
        s->eof = 1;
        sh_run_schedule(s);
    }
}

static void
sh_run_unlink_shadow(sh_run_t *s)
{
    sh_run_t **pp;

    if (s->conn == NULL) {
        return;
    }
    for (pp = &s->conn->shadows; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    s->conn = NULL;
}

static sh_run_t *
sh_run_shadow_new(sh_conn_t *c, int handler)
{
    sh_run_t *s = sh_alloc(sizeof(*s));
    sh_worker_t *w = c->w;

    sh__run_init(s, c, SH_RUN_SHADOW);
    s->handler = handler;
    s->own.shadow = s;
    s->own.proto = c->sess.proto;
    s->sess = &s->own;
    s->next = c->shadows;
    c->shadows = s;
    s->all_next = w->shadows;
    if (w->shadows != NULL) {
        w->shadows->all_prev = s;
    }
    w->shadows = s;
    return s;
}

/* The worker stops: shadows that outlived their clients end too. */
void
sh__run_close_shadows(sh_worker_t *w)
{
    while (w->shadows != NULL) {
        sh_run_t *s = w->shadows;

        sh__run_close(s);
    }
}

/* --- sessions ------------------------------------------------------------ */

void
sh_session_attach(sh_session_t *s, const void *key, void *data,
    void (*cleanup)(void *data))
{
    sh_attach_t *a = sh_alloc(sizeof(*a));

    a->key = key;
    a->data = data;
    a->cleanup = cleanup;
    a->drained = NULL;
    a->next = s->attached;
    s->attached = a;
}

void *
sh_session_attached(sh_session_t *s, const void *key)
{
    sh_attach_t *a;

    for (a = s->attached; a != NULL; a = a->next) {
        if (a->key == key) {
            return a->data;
        }
    }
    return NULL;
}

void
sh_session_detach(sh_session_t *s, const void *key)
{
    sh_attach_t **pp, *a;

    for (pp = &s->attached; (a = *pp) != NULL; pp = &a->next) {
        if (a->key == key) {
            *pp = a->next;
            sh_free(a);
            return;
        }
    }
}

int
sh_session_send(sh_session_t *s, sh_frame_t **frames, uint32_t n)
{
    if (s->conn == NULL) {
        return 0;
    }
    sh_conn_send_frames(s->conn, frames, n);
    return !s->conn->closing && sh__conn_write_blocked(s->conn);
}

int
sh_session_push(sh_session_t *s, sh_frame_t *f, uint64_t seq,
    const sh_batch_t *resp, int64_t idx)
{
    sh_conn_t *c = s->conn;
    sh_held_push_t *hp;

    if (c == NULL || c->closing) {
        return 0;
    }
    if (idx < 0 || !c->main.running || c->main.seq != seq) {
        return sh_session_send(s, &f, 1);
    }
    if (s->npushes == s->pushes_cap) {
        s->pushes_cap = s->pushes_cap ? s->pushes_cap * 2 : 8;
        s->pushes = sh_realloc(s->pushes,
                               s->pushes_cap * sizeof(sh_held_push_t));
    }
    hp = &s->pushes[s->npushes++];
    hp->f = sh_frame_ref(f);
    hp->resp = resp;
    hp->idx = (uint32_t) idx;
    return 0;
}

void
sh__session_drop_pushes(sh_session_t *s)
{
    uint32_t i;

    for (i = 0; i < s->npushes; i++) {
        sh_frame_unref(s->pushes[i].f);
    }
    sh_free(s->pushes);
    s->pushes = NULL;
    s->npushes = s->pushes_cap = 0;
}

void
sh_session_on_drain(sh_session_t *s, const void *key, void (*fn)(void *data))
{
    sh_attach_t *a;

    for (a = s->attached; a != NULL; a = a->next) {
        if (a->key == key) {
            a->drained = fn;
            return;
        }
    }
}

void
sh__session_drained(sh_session_t *s)
{
    sh_attach_t *a;

    for (a = s->attached; a != NULL; a = a->next) {
        if (a->drained != NULL) {
            void (*fn)(void *data) = a->drained;

            a->drained = NULL;
            fn(a->data);
        }
    }
}

void
sh_session_abort(sh_session_t *s, const char *why)
{
    sh_run_t *r = s->shadow;

    if (s->conn != NULL) {
        sh__conn_abort(s->conn, why);
        return;
    }
    /* may be called under the shadow's running chain: drop its queue and
     * let it end once that batch is done */
    sh_log_warn("shadow %llu: %s", (unsigned long long) r->id, why);
    r->eof = 1;
    sh_batch_unref(r->inq);
    sh_batch_unref(r->expq);
    r->inq = r->expq = NULL;
    sh_run_schedule(r);
}

void
sh_session_close_when_done(sh_session_t *s)
{
    if (s->conn != NULL) {
        sh__conn_close_when_done(s->conn);
        return;
    }
    s->shadow->eof = 1;                  /* the next copies get a new one */
    sh_run_schedule(s->shadow);
}

/* --- FFI ---------------------------------------------------------------- */

sh_batch_t *
sh_ffi_run_batch(sh_run_t *r)
{
    return r->batch;
}

int
sh_ffi_run_outstanding(sh_run_t *r)
{
    return (int) r->nwaits;
}

int
sh_ffi_run_source(sh_run_t *r)
{
    return r->index;
}

int
sh_ffi_run_peer(sh_run_t *r, char *out, size_t cap)
{
    if (r->conn == NULL || r->conn->peer_ip[0] == '\0') {
        return SH_ERROR;
    }
    return (size_t) snprintf(out, cap, "%s", r->conn->peer_ip) < cap
           ? SH_OK : SH_ERROR;
}

int
sh_ffi_run_tls_subject(sh_run_t *r, char *out, size_t cap)
{
    const char *subject;

    if (r->conn == NULL || r->conn->tls == NULL
        || (subject = sh_tls_subject(r->conn->tls)) == NULL)
    {
        return SH_DECLINED;
    }
    return (size_t) snprintf(out, cap, "%s", subject) < cap ? SH_OK
                                                            : SH_AGAIN;
}

/* The client's address as "ip:port" ("[ip6]:port"), or NULL. */
static const char *
sh_run_client(sh_run_t *r, char *out, size_t cap)
{
    if (r->conn == NULL || r->conn->peer_ip[0] == '\0') {
        return NULL;
    }
    snprintf(out, cap, "%s", r->conn->peer);
    return out;
}

int
sh_ffi_run_log_fields(sh_run_t *r, sh_log_fields_t *f, char *buf,
    size_t cap)
{
    memset(f, 0, sizeof(*f));
    f->source = r->src->name;
    if (r->conn == NULL) {
        return 0;
    }
    f->conn = r->conn->id;
    f->client = sh_run_client(r, buf, cap);
    return 1;
}

int
sh_ffi_run_handler(sh_run_t *r)
{
    return r->handler;
}

int
sh_ffi_run_shadow(sh_run_t *r, int handler, sh_run_t **out)
{
    sh_conn_t *c = r->conn;
    sh_run_t *s;

    if (c == NULL || r->kind == SH_RUN_SHADOW || c->closing || handler <= 0) {
        return SH_ERROR;
    }
    for (s = c->shadows; s != NULL; s = s->next) {
        if (s->handler == handler && !s->eof && !s->closed) {
            *out = s;
            return SH_OK;
        }
    }
    *out = sh_run_shadow_new(c, handler);
    return SH_DECLINED;                  /* a new one: its session is empty */
}

int
sh_ffi_run_push(sh_run_t *s, sh_frame_t *req, sh_frame_t *paired)
{
    if (s->kind != SH_RUN_SHADOW || s->closed || s->eof || req == NULL) {
        return SH_ERROR;
    }
    if (s->inq == NULL) {
        s->inq = sh_batch_alloc(0);
        s->expq = sh_batch_alloc(0);
    }
    sh_batch_append(s->inq, req);
    sh_batch_append(s->expq, paired);
    sh_run_schedule(s);
    return SH_OK;
}

uint32_t
sh_ffi_run_queued(sh_run_t *s)
{
    return (s->inq ? s->inq->n : 0) + (s->running ? s->batch->n : 0);
}

sh_batch_t *
sh_ffi_run_paired(sh_run_t *s)
{
    return s->exp;
}

/*
 * sh_ffi_run_notify: resume the runs of r's client (its main run and
 * lanes) that yielded SLEEP, once their backends, if any, are done.  They
 * run after the caller yields, from the worker's wake list.
 */
void
sh_ffi_run_notify(sh_run_t *r)
{
    sh_conn_t *c = r->conn;
    sh_run_t *x;

    if (r->kind == SH_RUN_SHADOW || c == NULL) {
        return;
    }
    for (x = &c->main; x != NULL; x = x == &c->main ? c->lanes : x->next) {
        if (x->sleeping) {
            x->sleeping = 0;
            sh_run_wake(x);
        }
    }
}

int
sh_ffi_run_wake_reason(sh_run_t *r)
{
    return r->wake_reason;
}

/*
 * sh_ffi_run_timer: (re)arm the run's one-shot timer.  When it fires the
 * coroutine, if it waits in MORE, is resumed with SH_WAKE_TIMER; otherwise
 * it is told at its next MORE.  SH_DECLINED on a closing client.
 */
int
sh_ffi_run_timer(sh_run_t *r, uint32_t ms)
{
    if (r->closed || (r->conn != NULL && r->conn->closing)) {
        return SH_DECLINED;
    }
    if (r->timer == NULL) {
        r->timer = sh_alloc(sizeof(uv_timer_t));
        uv_timer_init(&r->w->loop, r->timer);
        r->timer->data = r;
    }
    r->timer_fired = 0;
    uv_timer_start(r->timer, sh_run_timer_cb, ms, 0);
    return SH_OK;
}

int
sh_ffi_run_timer_stop(sh_run_t *r)
{
    if (r->timer != NULL) {
        uv_timer_stop(r->timer);
    }
    r->timer_fired = 0;
    return SH_OK;
}
