/*
 * sh_redis_pool.c -- connections to one Redis server.
 *
 * Stateless requests of all clients of a worker share `connections`
 * pipelined connections: replies come back in request order, so each
 * connection keeps a FIFO of (response batch, slot) and fills the next one
 * with each reply it parses.  Writes gathered during a loop iteration leave
 * in one uv_write per connection, from the worker's prepare handle: with
 * many clients, Redis then reads many requests per system call.
 *
 * A client that sends a command that changes connection state (MULTI, WATCH,
 * SELECT, AUTH, HELLO, CLIENT, blocking commands, SUBSCRIBE...) gets a
 * dedicated connection, from that batch until it disconnects, so semantics
 * never change.  After SUBSCRIBE, MONITOR or CLIENT REPLY the connection
 * streams: every reply is relayed to the client as it arrives, and the
 * chain gets NOREPLY responses.
 *
 * Failures: a backend that cannot be reached, times out or drops the
 * connection fails every request it owes with an -ERR reply naming the
 * backend; the next request reconnects, at most as often as the backoff
 * (doubling from backoff_min_ms to backoff_max_ms) allows, failing fast in
 * between.  A timed-out connection is closed, since its replies can no
 * longer be matched.
 */
#include <netdb.h>
#include <stdio.h>

#include "sh_metrics.h"
#include "sh_worker.h"

enum {
    SH_UP_DOWN = 0,          /* no socket; may connect after retry_at */
    SH_UP_CONNECTING,        /* connect under way */
    SH_UP_READY              /* connected */
};

typedef struct sh_pending_s {
    sh_batch_t *resp;        /* batch to fill (ref held), NULL: our AUTH */
    uint32_t idx;            /* slot in resp */
    uint64_t deadline;       /* loop time in ms; 0: no timeout */
} sh_pending_t;

typedef struct sh_upsock_s {
    uv_tcp_t tcp;            /* the socket; freed in its close callback */
    uv_connect_t connect;    /* connect request */
    sh_upstream_t *up;       /* owner, NULL once detached */
} sh_upsock_t;

struct sh_upstream_s {
    sh_redis_pool_t *pool;   /* pool it belongs to */
    sh_conn_t *owner;        /* client it is dedicated to, or NULL */
    sh_upsock_t *sock;       /* current socket or NULL */
    uv_timer_t *timer;       /* connect and request timeouts */
    int state;               /* SH_UP_* */
    int streaming;           /* relay every reply to owner */
    sh_resp_reader_t *reader; /* reply parser */
    sh_pending_t *ring;      /* replies owed, FIFO */
    uint32_t head;           /* first entry */
    uint32_t count;          /* entries */
    uint32_t cap;            /* ring size, power of two */
    sh_frame_t **out;        /* frames gathered for the next write */
    uint32_t nout;           /* their count */
    uint32_t out_cap;        /* allocated */
    uint64_t retry_at;       /* earliest reconnect, loop ms */
    uint32_t backoff;        /* next reconnect delay */
    int on_flushq;           /* queued on the worker's flush list */
    sh_upstream_t *flush_next; /* next on that list */
    sh_upstream_t *next;     /* owner's dedicated list */
    char err[160];           /* last failure, for error replies */
};

typedef struct sh_upwrite_s {
    uv_write_t req;          /* libuv request */
    sh_frame_t **frames;     /* frames held until written */
    uint32_t n;              /* their count */
} sh_upwrite_t;

static void sh_up_connect(sh_upstream_t *up);
static void sh_up_fail_all(sh_upstream_t *up, const char *why);

static uint64_t
sh_up_now(sh_upstream_t *up)
{
    return uv_now(&up->pool->w->loop);
}

static sh_frame_t *
sh_up_error_frame(sh_upstream_t *up, const char *what)
{
    char line[512];
    int n;

    n = snprintf(line, sizeof(line), "-ERR shotover: backend %s (sink "
                 "\"%s\") %s\r\n", up->pool->remote, up->pool->name, what);
    if (n >= (int) sizeof(line)) {
        n = sizeof(line) - 1;
        line[n - 2] = '\r';
        line[n - 1] = '\n';
    }
    return sh_frame_copy(SH_PROTO_REDIS, (const uint8_t *) line, (size_t) n);
}

/* Fill slot idx of resp and wake its client when it was the last one. */
static void
sh_up_fill(sh_batch_t *resp, uint32_t idx, sh_frame_t *f)
{
    sh_batch_put(resp, idx, f);
    if (--resp->waiting == 0 && resp->conn != NULL) {
        sh_conn_wait_done(resp->conn, resp);
    }
}

static void
sh_up_timer_arm(sh_upstream_t *up, uint64_t delay);

static void
sh_up_push_pending(sh_upstream_t *up, sh_batch_t *resp, uint32_t idx,
    uint64_t timeout)
{
    sh_pending_t *p;

    if (up->count == up->cap) {
        uint32_t ncap = up->cap ? up->cap * 2 : 64;
        sh_pending_t *nr = sh_alloc(ncap * sizeof(*nr));
        uint32_t i;

        for (i = 0; i < up->count; i++) {
            nr[i] = up->ring[(up->head + i) & (up->cap - 1)];
        }
        sh_free(up->ring);
        up->ring = nr;
        up->head = 0;
        up->cap = ncap;
    }
    p = &up->ring[(up->head + up->count) & (up->cap - 1)];
    p->resp = resp ? sh_batch_ref(resp) : NULL;
    p->idx = idx;
    p->deadline = timeout ? sh_up_now(up) + timeout : 0;
    if (up->count++ == 0 && timeout && up->state == SH_UP_READY
        && !uv_is_active((uv_handle_t *) up->timer))
    {
        sh_up_timer_arm(up, timeout);
    }
}

static sh_pending_t
sh_up_pop_pending(sh_upstream_t *up)
{
    sh_pending_t p = up->ring[up->head];

    up->head = (up->head + 1) & (up->cap - 1);
    up->count--;
    return p;
}

static void
sh_up_queue_out(sh_upstream_t *up, sh_frame_t *f)
{
    sh_worker_t *w = up->pool->w;

    if (up->nout == up->out_cap) {
        up->out_cap = up->out_cap ? up->out_cap * 2 : 64;
        up->out = sh_realloc(up->out, up->out_cap * sizeof(sh_frame_t *));
    }
    up->out[up->nout++] = sh_frame_ref(f);
    if (!up->on_flushq && up->state == SH_UP_READY) {
        up->on_flushq = 1;
        up->flush_next = w->flushq;
        w->flushq = up;
    }
}

static void
sh_up_sock_close_cb(uv_handle_t *h)
{
    sh_free(h);
}

/* Drop the socket: owed replies fail with why; the next request reconnects. */
static void
sh_up_disconnect(sh_upstream_t *up, const char *why, int backoff)
{
    uint32_t i;

    if (up->sock != NULL) {
        up->sock->up = NULL;
        uv_close((uv_handle_t *) &up->sock->tcp, sh_up_sock_close_cb);
        up->sock = NULL;
    }
    up->state = SH_UP_DOWN;
    uv_timer_stop(up->timer);
    if (backoff || up->count > 0) {
        sh_ffi_metric_add(up->pool->errors, 1);
    }
    snprintf(up->err, sizeof(up->err), "%s", why);
    if (backoff) {
        up->retry_at = sh_up_now(up) + up->backoff;
        up->backoff = sh_min(up->backoff * 2, up->pool->conf.backoff_max_ms);
    } else {
        up->retry_at = 0;
    }
    for (i = 0; i < up->nout; i++) {
        sh_frame_unref(up->out[i]);
    }
    up->nout = 0;
    sh_resp_reader_free(up->reader);
    up->reader = NULL;
    sh_up_fail_all(up, why);
    if (up->owner != NULL && up->streaming) {
        /* a subscriber cannot be told which messages it missed: close it,
         * so its client reconnects and subscribes again */
        sh_conn_abort(up->owner, "backend connection lost");
    }
}

static void
sh_up_fail_all(sh_upstream_t *up, const char *why)
{
    char what[200];
    sh_frame_t *f;

    if (up->count == 0) {
        return;
    }
    snprintf(what, sizeof(what), "unavailable: %s", why);
    f = sh_up_error_frame(up, what);
    while (up->count > 0) {
        sh_pending_t p = sh_up_pop_pending(up);

        if (p.resp != NULL) {
            sh_up_fill(p.resp, p.idx, f);
            sh_batch_unref(p.resp);
        }
    }
    sh_frame_unref(f);
}

static void
sh_up_timer_cb(uv_timer_t *t)
{
    sh_upstream_t *up = t->data;
    uint64_t now = sh_up_now(up);
    char why[96];

    if (up->state == SH_UP_CONNECTING) {
        snprintf(why, sizeof(why), "connect timed out after %ums",
                 up->pool->conf.connect_timeout_ms);
        sh_log_warn("sink \"%s\": %s %s", up->pool->name, up->pool->remote,
                    why);
        sh_up_disconnect(up, why, 1);
        sh_conn_wake_all(up->pool->w);
        return;
    }
    if (up->state != SH_UP_READY || up->count == 0) {
        return;
    }
    if (up->ring[up->head].deadline == 0) {
        return;                          /* a blocking command leads */
    }
    if (up->ring[up->head].deadline <= now) {
        snprintf(why, sizeof(why), "timed out after %ums",
                 up->pool->conf.request_timeout_ms);
        sh_log_warn("sink \"%s\": %s request %s", up->pool->name,
                    up->pool->remote, why);
        sh_up_disconnect(up, why, 0);
        sh_conn_wake_all(up->pool->w);
        return;
    }
    sh_up_timer_arm(up, up->ring[up->head].deadline - now);
}

static void
sh_up_timer_arm(sh_upstream_t *up, uint64_t delay)
{
    uv_timer_start(up->timer, sh_up_timer_cb, delay, 0);
}

static void
sh_up_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sh_upsock_t *s = (sh_upsock_t *) h;
    uint8_t *p;
    size_t n;

    sh_unused(suggested);
    sh_resp_reader_space(s->up->reader, &p, &n);
    buf->base = (char *) p;
    buf->len = n;
}

static void
sh_up_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    sh_upsock_t *s = (sh_upsock_t *) st;
    sh_upstream_t *up = s->up;
    sh_worker_t *w;
    sh_frame_t *f;
    sh_frame_t *relay[64];
    uint32_t nrelay = 0, i;
    int rc;

    sh_unused(buf);
    if (up == NULL) {
        return;
    }
    w = up->pool->w;
    if (nread < 0) {
        sh_up_disconnect(up, nread == UV_EOF ? "closed the connection"
                                             : uv_strerror((int) nread), 1);
        sh_conn_wake_all(w);
        return;
    }
    sh_resp_reader_commit(up->reader, (size_t) nread);
    for (;;) {
        rc = sh_resp_reader_next(up->reader, &f);
        if (rc != SH_OK) {
            char why[200];

            snprintf(why, sizeof(why), "sent a malformed reply (%s)",
                     sh_resp_reader_error(up->reader));
            sh_log_error("sink \"%s\": %s %s", up->pool->name,
                         up->pool->remote, why);
            sh_up_disconnect(up, why, 1);
            break;
        }
        if (f == NULL) {
            break;
        }
        if (up->count > 0 && !(f->rtype == '>' && up->owner != NULL)) {
            sh_pending_t p = sh_up_pop_pending(up);

            if (p.resp == NULL) {
                if (f->rtype == '-') {
                    sh_log_error("sink \"%s\": AUTH to %s failed: %.*s",
                                 up->pool->name, up->pool->remote,
                                 (int) sh_min(f->len, 200u) - 2,
                                 (const char *) f->data + 1);
                }
            } else {
                sh_up_fill(p.resp, p.idx, f);
                sh_batch_unref(p.resp);
            }
        } else if (up->owner != NULL) {
            /* streaming, or a RESP3 push: straight to the client */
            relay[nrelay++] = f;
            if (nrelay == 64) {
                sh_conn_send_frames(up->owner, relay, nrelay);
                for (i = 0; i < nrelay; i++) {
                    sh_frame_unref(relay[i]);
                }
                nrelay = 0;
            }
            continue;
        } else {
            sh_log_warn("sink \"%s\": unexpected reply from %s dropped",
                        up->pool->name, up->pool->remote);
        }
        sh_frame_unref(f);
    }
    if (nrelay > 0) {
        if (up->owner != NULL) {
            sh_conn_send_frames(up->owner, relay, nrelay);
        }
        for (i = 0; i < nrelay; i++) {
            sh_frame_unref(relay[i]);
        }
    }
    if (up->state == SH_UP_READY && up->count > 0
        && up->ring[up->head].deadline != 0
        && !uv_is_active((uv_handle_t *) up->timer))
    {
        sh_up_timer_arm(up, up->ring[up->head].deadline > sh_up_now(up)
                        ? up->ring[up->head].deadline - sh_up_now(up) : 0);
    }
    sh_conn_wake_all(w);
}

static void
sh_up_write_cb(uv_write_t *req, int status)
{
    sh_upwrite_t *wr = (sh_upwrite_t *) req;
    uint32_t i;

    for (i = 0; i < wr->n; i++) {
        sh_frame_unref(wr->frames[i]);
    }
    sh_free(wr->frames);
    sh_free(wr);
    /* a failed write shows up as a read error on the same socket */
    sh_unused(status);
}

/*
 * Send everything gathered for this upstream in one writev: at once when
 * the socket takes it all (see sh_try_write), else the rest is queued with
 * the frames held until written.
 */
static void
sh_up_flush(sh_upstream_t *up)
{
    uv_buf_t sbufs[64];
    uv_buf_t *bufs = sbufs;
    sh_upwrite_t *wr;
    uint32_t i, first;
    size_t total = 0;
    ssize_t done;
    int rc;

    if (up->nout == 0 || up->state != SH_UP_READY) {
        return;
    }
    if (up->nout > 64) {
        bufs = sh_alloc(up->nout * sizeof(uv_buf_t));
    }
    for (i = 0; i < up->nout; i++) {
        bufs[i].base = (char *) up->out[i]->data;
        bufs[i].len = up->out[i]->len;
        total += up->out[i]->len;
    }
    done = sh_try_write((uv_stream_t *) &up->sock->tcp, bufs, up->nout);
    if (done >= 0 && (size_t) done == total) {
        for (i = 0; i < up->nout; i++) {
            sh_frame_unref(up->out[i]);
        }
        up->nout = 0;
        if (bufs != sbufs) {
            sh_free(bufs);
        }
        return;
    }
    if (done < 0) {
        if (bufs != sbufs) {
            sh_free(bufs);
        }
        sh_up_disconnect(up, uv_strerror((int) done), 1);
        return;
    }
    first = sh_skip_written(bufs, up->nout, (size_t) done);
    wr = sh_alloc(sizeof(*wr));
    wr->frames = up->out;
    wr->n = up->nout;
    up->out = NULL;
    up->nout = 0;
    up->out_cap = 0;
    rc = uv_write(&wr->req, (uv_stream_t *) &up->sock->tcp, bufs + first,
                  wr->n - first, sh_up_write_cb);
    if (bufs != sbufs) {
        sh_free(bufs);
    }
    if (rc != 0) {
        sh_up_write_cb(&wr->req, rc);
        sh_up_disconnect(up, uv_strerror(rc), 1);
    }
}

void
sh_redis_flush_all(sh_worker_t *w)
{
    sh_upstream_t *up;

    while ((up = w->flushq) != NULL) {
        w->flushq = up->flush_next;
        up->on_flushq = 0;
        sh_up_flush(up);
    }
    /* failures found while flushing may have completed batches */
    sh_conn_wake_all(w);
}

static void
sh_up_connect_cb(uv_connect_t *req, int status)
{
    sh_upsock_t *s = req->data;
    sh_upstream_t *up = s->up;
    char why[128];

    if (up == NULL) {
        return;                          /* detached while connecting */
    }
    if (status < 0) {
        snprintf(why, sizeof(why), "connect failed: %s: %s",
                 uv_err_name(status), uv_strerror(status));
        sh_log_warn("sink \"%s\": %s %s", up->pool->name, up->pool->remote,
                    why);
        sh_up_disconnect(up, why, 1);
        sh_conn_wake_all(up->pool->w);
        return;
    }
    uv_timer_stop(up->timer);
    up->state = SH_UP_READY;
    up->backoff = up->pool->conf.backoff_min_ms;
    uv_tcp_nodelay(&s->tcp, 1);
    uv_read_start((uv_stream_t *) &s->tcp, sh_up_alloc_cb, sh_up_read_cb);
    sh_log_debug("sink \"%s\": connected to %s", up->pool->name,
                 up->pool->remote);
    if (up->nout > 0) {
        sh_worker_t *w = up->pool->w;

        if (!up->on_flushq) {
            up->on_flushq = 1;
            up->flush_next = w->flushq;
            w->flushq = up;
        }
    }
    if (up->count > 0 && up->pool->conf.request_timeout_ms) {
        sh_up_timer_arm(up, up->pool->conf.request_timeout_ms);
    }
}

static void
sh_up_connect(sh_upstream_t *up)
{
    sh_redis_pool_t *pool = up->pool;
    sh_upsock_t *s = sh_calloc(1, sizeof(*s));
    int rc;

    uv_tcp_init(&pool->w->loop, &s->tcp);
    s->up = up;
    s->connect.data = s;
    up->sock = s;
    up->state = SH_UP_CONNECTING;
    up->reader = sh_resp_reader_new(SH_RESP_REPLY, NULL);
    rc = uv_tcp_connect(&s->connect, &s->tcp,
                        (const struct sockaddr *) &pool->addr,
                        sh_up_connect_cb);
    if (rc != 0) {
        char why[128];

        snprintf(why, sizeof(why), "connect failed: %s", uv_strerror(rc));
        sh_up_disconnect(up, why, 1);
        return;
    }
    uv_timer_start(up->timer, sh_up_timer_cb, pool->conf.connect_timeout_ms,
                   0);
    if (pool->pass[0] != '\0') {
        /* authenticate first; the reply is ours, not a client's */
        const uint8_t *args[3];
        size_t lens[3];
        int n = 0;
        sh_frame_t *f;

        args[n] = (const uint8_t *) "AUTH";
        lens[n++] = 4;
        if (pool->user[0] != '\0') {
            args[n] = (const uint8_t *) pool->user;
            lens[n++] = strlen(pool->user);
        }
        args[n] = (const uint8_t *) pool->pass;
        lens[n++] = strlen(pool->pass);
        f = sh_resp_encode_command(args, lens, n);
        sh_up_queue_out(up, f);
        sh_frame_unref(f);
        sh_up_push_pending(up, NULL, 0, 0);
    }
}

static sh_upstream_t *
sh_up_new(sh_redis_pool_t *pool, sh_conn_t *owner)
{
    sh_upstream_t *up = sh_calloc(1, sizeof(*up));

    up->pool = pool;
    up->owner = owner;
    up->backoff = pool->conf.backoff_min_ms;
    up->timer = sh_alloc(sizeof(uv_timer_t));
    uv_timer_init(&pool->w->loop, up->timer);
    up->timer->data = up;
    return up;
}

static void
sh_up_timer_close_cb(uv_handle_t *h)
{
    sh_free(h);
}

static void
sh_up_free(sh_upstream_t *up)
{
    sh_worker_t *w = up->pool->w;
    sh_upstream_t **pp;

    sh_up_disconnect(up, "shutting down", 0);
    for (pp = &w->flushq; *pp != NULL; pp = &(*pp)->flush_next) {
        if (*pp == up) {
            *pp = up->flush_next;
            break;
        }
    }
    uv_close((uv_handle_t *) up->timer, sh_up_timer_close_cb);
    sh_free(up->ring);
    sh_free(up->out);
    sh_free(up);
}

/* A client went away: its dedicated connections go with it. */
void
sh_redis_conn_closed(sh_conn_t *c)
{
    while (c->dedicated != NULL) {
        sh_upstream_t *up = c->dedicated;

        c->dedicated = up->next;
        up->owner = NULL;
        sh_up_free(up);
    }
}

void
sh_redis_pools_close(sh_worker_t *w)
{
    while (w->pools != NULL) {
        sh_redis_pool_t *p = w->pools;
        uint32_t i;

        w->pools = p->next;
        for (i = 0; i < p->conf.connections; i++) {
            sh_up_free(p->shared[i]);
        }
        sh_free(p->shared);
        sh_free(p);
    }
}

/* --- FFI ---------------------------------------------------------------- */

int
sh_ffi_redis_pool_new(sh_worker_t *w, const sh_redis_conf_t *conf,
    sh_redis_pool_t **out, const char **err)
{
    static __thread char errbuf[256];
    sh_redis_pool_t *p;
    uint32_t i;

    if (w == NULL) {
        *err = "redis pools live in workers";
        return SH_ERROR;
    }
    p = sh_calloc(1, sizeof(*p));
    if (sh_resolve_addr(conf->host, conf->port, &p->addr, errbuf,
                        sizeof(errbuf)) != SH_OK)
    {
        sh_free(p);
        *err = errbuf;
        return SH_ERROR;
    }
    p->w = w;
    p->conf = *conf;
    snprintf(p->host, sizeof(p->host), "%s", conf->host);
    snprintf(p->user, sizeof(p->user), "%s",
             conf->username ? conf->username : "");
    snprintf(p->pass, sizeof(p->pass), "%s",
             conf->password ? conf->password : "");
    snprintf(p->name, sizeof(p->name), "%s", conf->name ? conf->name : "redis");
    snprintf(p->remote, sizeof(p->remote), "%s:%d", conf->host, conf->port);
    p->conf.host = p->host;
    p->conf.username = p->user;
    p->conf.password = p->pass;
    p->conf.name = p->name;
    if (p->conf.connections == 0) {
        p->conf.connections = 1;
    }
    if (p->conf.backoff_min_ms == 0) {
        p->conf.backoff_min_ms = 1;
    }
    if (p->conf.backoff_max_ms < p->conf.backoff_min_ms) {
        p->conf.backoff_max_ms = p->conf.backoff_min_ms;
    }
    p->errors = sh_metric_backend_errors(p->name, p->remote);
    p->shared = sh_calloc(p->conf.connections, sizeof(sh_upstream_t *));
    for (i = 0; i < p->conf.connections; i++) {
        p->shared[i] = sh_up_new(p, NULL);
    }
    p->next = w->pools;
    w->pools = p;
    *out = p;
    return SH_OK;
}

static sh_upstream_t *
sh_pool_dedicated(sh_redis_pool_t *p, sh_conn_t *c, int create)
{
    sh_upstream_t *up;

    for (up = c->dedicated; up != NULL; up = up->next) {
        if (up->pool == p) {
            return up;
        }
    }
    if (!create) {
        return NULL;
    }
    up = sh_up_new(p, c);
    up->next = c->dedicated;
    c->dedicated = up;
    return up;
}

/*
 * sh_ffi_redis_send: send the requests of req to the backend; their replies
 * land in the same slots of resp (which must have req->n slots).
 *   SH_OK: every slot is already filled (errors, QUIT, streaming);
 *   SH_AGAIN: some replies are owed; the client is woken when all are in.
 */
int
sh_ffi_redis_send(sh_redis_pool_t *p, sh_conn_t *c, sh_batch_t *req,
    sh_batch_t *resp)
{
    sh_upstream_t *up;
    uint32_t i, pin = 0, stream = 0, n = req->n;
    uint64_t timeout = p->conf.request_timeout_ms;
    sh_frame_t *err = NULL;

    for (i = 0; i < n; i++) {
        pin |= req->frames[i]->cmd & SH_CMD_PIN;
        stream |= req->frames[i]->cmd & SH_CMD_STREAM;
        if (req->frames[i]->cmd & SH_CMD_QUIT) {
            n = i + 1;
            break;
        }
    }
    up = sh_pool_dedicated(p, c, pin != 0);
    if (up == NULL) {
        up = p->shared[p->rr++ % p->conf.connections];
    }
    if (stream) {
        up->streaming = 1;
    }
    if (up->state == SH_UP_DOWN) {
        if (sh_up_now(up) >= up->retry_at) {
            sh_up_connect(up);
        }
        if (up->state == SH_UP_DOWN) {
            char what[220];

            snprintf(what, sizeof(what), "unavailable: %s (retrying)",
                     up->err);
            err = sh_up_error_frame(up, what);
        }
    }
    for (i = 0; i < req->n; i++) {
        sh_frame_t *f = req->frames[i];

        if (i >= n) {
            sh_batch_put(resp, i, sh_frame_noreply());
        } else if (f->cmd & SH_CMD_QUIT) {
            static sh_frame_t ok = {
                .data = (const uint8_t *) "+OK\r\n", .len = 5,
                .refs = UINT32_MAX, .proto = SH_PROTO_REDIS, .rtype = '+',
            };
            sh_batch_put(resp, i, &ok);
            c->close_after = 1;
        } else if (err != NULL) {
            sh_batch_put(resp, i, err);
        } else if (up->streaming) {
            sh_up_queue_out(up, f);
            sh_batch_put(resp, i, sh_frame_noreply());
        } else {
            sh_up_queue_out(up, f);
            resp->waiting++;
            sh_up_push_pending(up, resp, i,
                (f->cmd & SH_CMD_BLOCKING) ? 0 : timeout);
        }
    }
    sh_frame_unref(err);
    if (resp->waiting == 0) {
        return SH_OK;
    }
    sh_conn_add_wait(c, resp);
    return SH_AGAIN;
}
