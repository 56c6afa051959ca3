/*
 * sh_cql_pool.c -- connections to one Cassandra node.
 *
 * Simple and correct first (DESIGN.md 5a): each client connection gets its
 * own backend connection, opened at its first batch, and the client's own
 * handshake (OPTIONS, STARTUP, AUTHENTICATE/AUTH_RESPONSE) and stream ids
 * pass through untouched.  Replies are matched to requests by stream id (a
 * node answers in any order); EVENT frames (stream -1) are relayed to the
 * client as they come.  In protocol v5 the node's READY or AUTHENTICATE
 * switches both directions to segments, as it does on the client side.
 *
 * Failure: a node that cannot be reached, drops the connection or leaves a
 * request unanswered past request_timeout_ms fails every request owed with
 * an OVERLOADED error -- drivers take it as "this coordinator cannot serve
 * now" and retry on another host or later, without blaming the query -- and
 * the client connection is then closed once those errors are written: its
 * session (keyspace, authentication) lived on the lost backend connection,
 * and the driver's reconnection builds a new one.
 */
#include <stdio.h>

#include "sh_metrics.h"
#include "sh_worker.h"

enum {
    SH_CQL_UP_CONNECTING = 0,
    SH_CQL_UP_READY,
    SH_CQL_UP_DEAD
};

typedef struct sh_cql_pend_s {
    sh_batch_t *resp;        /* batch to fill (ref held), NULL when free */
    uint32_t idx;            /* its slot */
    uint32_t seq;            /* which request this was, for the timeout list */
} sh_cql_pend_t;

typedef struct sh_cql_tq_s {
    uint64_t deadline;       /* loop time in ms */
    uint32_t seq;            /* request */
    uint16_t stream;         /* its stream */
} sh_cql_tq_t;

typedef struct sh_cql_sock_s {
    uv_tcp_t tcp;            /* the socket; freed in its close callback */
    uv_connect_t connect;    /* connect request */
    struct sh_cql_up_s *up;  /* owner, NULL once detached */
} sh_cql_sock_t;

struct sh_cql_pool_s {
    sh_worker_t *w;          /* owning worker */
    sh_cql_conf_t conf;      /* settings; strings are our copies below */
    char host[256];          /* node address */
    char name[64];           /* sink name */
    char remote[300];        /* "host:port" for messages */
    struct sockaddr_storage addr; /* resolved address */
    sh_metric_t *errors;     /* backend failures counter */
    struct sh_cql_pool_s *next; /* worker's list */
};

typedef struct sh_cql_up_s {
    sh_cql_pool_t *pool;     /* node */
    sh_conn_t *owner;        /* the client it serves */
    struct sh_cql_up_s *next; /* owner's list */
    sh_cql_sock_t *sock;     /* socket, NULL when closed */
    uv_timer_t *timer;       /* connect and request timeouts */
    int state;               /* SH_CQL_UP_* */
    sh_cql_reader_t *reader; /* reply reader */
    sh_cql_pend_t *pend;     /* owed replies, by stream id */
    uint32_t pend_cap;       /* entries in pend */
    uint32_t npend;          /* entries in use */
    sh_cql_tq_t *tq;         /* requests in send order, for timeouts */
    uint32_t tq_head;        /* first entry */
    uint32_t tq_count;       /* entries */
    uint32_t tq_cap;         /* size, a power of two */
    uint32_t seq;            /* last request number */
    sh_frame_t **out;        /* frames waiting for the connect */
    uint32_t nout;           /* their count */
    uint32_t out_cap;        /* allocated */
    sh_cql_framing_t fr;     /* the handshake's compression and v5 switch */
} sh_cql_up_t;

typedef struct sh_cql_write_s {
    uv_write_t req;          /* libuv request */
    sh_frame_t **frames;     /* held until written */
    uint32_t n;              /* their count */
} sh_cql_write_t;

static uint64_t
sh_cql_now(sh_cql_up_t *up)
{
    return uv_now(&up->pool->w->loop);
}

static void
sh_cql_sock_close_cb(uv_handle_t *h)
{
    sh_free(h);
}

static void
sh_cql_timer_close_cb(uv_handle_t *h)
{
    sh_free(h);
}

static void
sh_cql_fill(sh_batch_t *resp, uint32_t idx, sh_frame_t *f)
{
    sh_batch_put(resp, idx, f);
    if (--resp->waiting == 0 && resp->conn != NULL) {
        sh_conn_wait_done(resp->conn, resp);
    }
}

/*
 * The backend connection is lost: every owed request gets an OVERLOADED
 * error, the client is woken to write them, and then closed.
 */
static void
sh_cql_up_fail(sh_cql_up_t *up, const char *why)
{
    char msg[1024];
    uint32_t s;
    int version = sh_cql_reader_version(up->reader);

    if (up->state == SH_CQL_UP_DEAD) {
        return;
    }
    up->state = SH_CQL_UP_DEAD;
    sh_ffi_metric_add(up->pool->errors, 1);
    sh_log_warn("sink \"%s\": %s %s", up->pool->name, up->pool->remote,
                why);
    snprintf(msg, sizeof(msg), "shotover: backend %s (sink \"%s\") "
             "unavailable: %s", up->pool->remote, up->pool->name, why);
    if (up->sock != NULL) {
        up->sock->up = NULL;
        uv_close((uv_handle_t *) &up->sock->tcp, sh_cql_sock_close_cb);
        up->sock = NULL;
    }
    uv_timer_stop(up->timer);
    for (s = 0; s < up->pend_cap; s++) {
        sh_cql_pend_t *p = &up->pend[s];
        sh_frame_t *f;

        if (p->resp == NULL) {
            continue;
        }
        f = sh_cql_error_frame(version ? version : 4, (int) s,
                               SH_CQL_OVERLOADED, msg);
        sh_cql_fill(p->resp, p->idx, f);
        sh_frame_unref(f);
        sh_batch_unref(p->resp);
        p->resp = NULL;
    }
    up->npend = 0;
    up->tq_count = 0;
    while (up->nout > 0) {
        sh_frame_unref(up->out[--up->nout]);
    }
    if (up->owner != NULL) {
        sh_conn_t *c = up->owner;

        /* May run inside sh_ffi_cql_send, i.e. while Lua runs: never resume
         * or close here.  The client closes once its replies (these errors)
         * are written; callbacks resume it with sh_conn_wake_all. */
        c->close_after = 1;
        if (!c->running && c->lanes_busy == 0) {
            sh_conn_close_after_writes(c);
        }
    }
}

static void
sh_cql_write_cb(uv_write_t *req, int status)
{
    sh_cql_write_t *wr = (sh_cql_write_t *) req;
    uint32_t i;

    sh_unused(status);                   /* the read side sees failures */
    for (i = 0; i < wr->n; i++) {
        sh_frame_unref(wr->frames[i]);
    }
    sh_free(wr->frames);
    sh_free(wr);
}

/* Write frames to the node now (segments after a v5 handshake). */
static void
sh_cql_up_write(sh_cql_up_t *up, sh_frame_t **frames, uint32_t n)
{
    uv_buf_t sbufs[16];
    uv_buf_t *bufs = sbufs;
    sh_frame_t *seg = NULL;
    sh_cql_write_t *wr;
    uint32_t i, first;
    size_t total = 0;
    ssize_t done;
    int rc;

    if (n == 0) {
        return;
    }
    seg = sh_cql_framing_wrap(&up->fr, frames, n);
    if (seg != NULL) {
        frames = &seg;
        n = 1;
    }
    if (n > 16) {
        bufs = sh_alloc(n * sizeof(uv_buf_t));
    }
    for (i = 0; i < n; i++) {
        bufs[i].base = (char *) frames[i]->data;
        bufs[i].len = frames[i]->len;
        total += frames[i]->len;
    }
    done = sh_try_write((uv_stream_t *) &up->sock->tcp, bufs, n);
    if (done >= 0 && (size_t) done < total) {
        first = sh_skip_written(bufs, n, (size_t) done);
        wr = sh_alloc(sizeof(*wr));
        wr->n = n;
        wr->frames = sh_alloc(n * sizeof(sh_frame_t *));
        for (i = 0; i < n; i++) {
            wr->frames[i] = sh_frame_ref(frames[i]);
        }
        rc = uv_write(&wr->req, (uv_stream_t *) &up->sock->tcp, bufs + first,
                      n - first, sh_cql_write_cb);
        if (rc != 0) {
            sh_cql_write_cb(&wr->req, rc);
            done = rc;
        }
    }
    if (bufs != sbufs) {
        sh_free(bufs);
    }
    sh_frame_unref(seg);
    if (done < 0) {
        sh_cql_up_fail(up, uv_strerror((int) done));
    }
}

static void sh_cql_timer_cb(uv_timer_t *t);

static void
sh_cql_timer_arm(sh_cql_up_t *up)
{
    uint64_t now = sh_cql_now(up);

    /* drop entries of requests already answered */
    while (up->tq_count > 0) {
        sh_cql_tq_t *e = &up->tq[up->tq_head];
        sh_cql_pend_t *p = &up->pend[e->stream];

        if (p->resp != NULL && p->seq == e->seq) {
            break;
        }
        up->tq_head = (up->tq_head + 1) & (up->tq_cap - 1);
        up->tq_count--;
    }
    if (up->tq_count == 0 || up->pool->conf.request_timeout_ms == 0) {
        uv_timer_stop(up->timer);
        return;
    }
    if (!uv_is_active((uv_handle_t *) up->timer)) {
        uint64_t d = up->tq[up->tq_head].deadline;

        uv_timer_start(up->timer, sh_cql_timer_cb, d > now ? d - now : 0, 0);
    }
}

static void
sh_cql_timer_cb(uv_timer_t *t)
{
    sh_cql_up_t *up = t->data;
    char why[96];

    if (up->state == SH_CQL_UP_CONNECTING) {
        snprintf(why, sizeof(why), "connect timed out after %ums",
                 up->pool->conf.connect_timeout_ms);
        sh_cql_up_fail(up, why);
        sh_conn_wake_all(up->pool->w);
        return;
    }
    sh_cql_timer_arm(up);
    if (up->tq_count > 0 && up->tq[up->tq_head].deadline <= sh_cql_now(up)) {
        snprintf(why, sizeof(why), "request timed out after %ums",
                 up->pool->conf.request_timeout_ms);
        sh_cql_up_fail(up, why);
        sh_conn_wake_all(up->pool->w);
    }
}

static void
sh_cql_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sh_cql_sock_t *s = (sh_cql_sock_t *) h;
    uint8_t *p;
    size_t n;

    sh_unused(suggested);
    sh_cql_reader_space(s->up->reader, &p, &n);
    buf->base = (char *) p;
    buf->len = n;
}

static void
sh_cql_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    sh_cql_sock_t *s = (sh_cql_sock_t *) st;
    sh_cql_up_t *up = s->up;
    sh_frame_t *f;
    char why[240];

    sh_unused(buf);
    if (up == NULL) {
        return;
    }
    if (nread < 0) {
        sh_cql_up_fail(up, nread == UV_EOF ? "closed the connection"
                                           : uv_strerror((int) nread));
        sh_conn_wake_all(up->pool->w);
        return;
    }
    sh_cql_reader_commit(up->reader, (size_t) nread);
    for (;;) {
        if (sh_cql_reader_next(up->reader, &f) != SH_OK) {
            snprintf(why, sizeof(why), "sent a malformed frame (%s)",
                     sh_cql_reader_error(up->reader));
            sh_cql_up_fail(up, why);
            sh_conn_wake_all(up->pool->w);
            return;
        }
        if (f == NULL) {
            break;
        }
        f->cmd = (uint32_t) up->fr.algo;
        if (f->argc < 0 || f->rtype == SH_CQL_EVENT) {
            if (up->owner != NULL) {
                sh_conn_send_frames(up->owner, &f, 1);
            }
        } else if ((uint32_t) f->argc < up->pend_cap
                   && up->pend[f->argc].resp != NULL)
        {
            sh_cql_pend_t *p = &up->pend[f->argc];
            sh_batch_t *resp = p->resp;

            p->resp = NULL;
            up->npend--;
            sh_cql_fill(resp, p->idx, f);
            sh_batch_unref(resp);
        } else {
            sh_log_warn("sink \"%s\": reply on stream %d from %s matches "
                        "no request; dropped", up->pool->name, f->argc,
                        up->pool->remote);
        }
        sh_cql_framing_response(&up->fr, f, up->reader);
        sh_frame_unref(f);
    }
    sh_cql_timer_arm(up);
    sh_conn_wake_all(up->pool->w);
}

static void
sh_cql_connect_cb(uv_connect_t *req, int status)
{
    sh_cql_sock_t *s = req->data;
    sh_cql_up_t *up = s->up;
    char why[160];

    if (up == NULL) {
        return;
    }
    if (status < 0) {
        snprintf(why, sizeof(why), "connect failed: %s: %s",
                 uv_err_name(status), uv_strerror(status));
        sh_cql_up_fail(up, why);
        sh_conn_wake_all(up->pool->w);
        return;
    }
    uv_timer_stop(up->timer);
    up->state = SH_CQL_UP_READY;
    uv_tcp_nodelay(&s->tcp, 1);
    uv_read_start((uv_stream_t *) &s->tcp, sh_cql_alloc_cb, sh_cql_read_cb);
    sh_cql_up_write(up, up->out, up->nout);
    while (up->nout > 0) {
        sh_frame_unref(up->out[--up->nout]);
    }
    if (up->state == SH_CQL_UP_READY) {
        sh_cql_timer_arm(up);
    }
    sh_conn_wake_all(up->pool->w);
}

static sh_cql_up_t *
sh_cql_up_new(sh_cql_pool_t *p, sh_conn_t *c)
{
    sh_cql_up_t *up = sh_calloc(1, sizeof(*up));
    sh_cql_sock_t *s = sh_calloc(1, sizeof(*s));
    int rc;

    up->pool = p;
    up->owner = c;
    up->reader = sh_cql_reader_new(SH_CQL_RESPONSE, NULL);
    up->timer = sh_alloc(sizeof(uv_timer_t));
    uv_timer_init(&p->w->loop, up->timer);
    up->timer->data = up;
    up->next = c->cql_ups;
    c->cql_ups = up;
    uv_tcp_init(&p->w->loop, &s->tcp);
    s->up = up;
    s->connect.data = s;
    up->sock = s;
    up->state = SH_CQL_UP_CONNECTING;
    rc = uv_tcp_connect(&s->connect, &s->tcp,
                        (const struct sockaddr *) &p->addr, sh_cql_connect_cb);
    if (rc != 0) {
        char why[160];

        snprintf(why, sizeof(why), "connect failed: %s", uv_strerror(rc));
        sh_cql_up_fail(up, why);
        return up;
    }
    uv_timer_start(up->timer, sh_cql_timer_cb, p->conf.connect_timeout_ms, 0);
    return up;
}

static void
sh_cql_up_free(sh_cql_up_t *up)
{
    uint32_t s;

    up->owner = NULL;
    if (up->sock != NULL) {
        up->sock->up = NULL;
        uv_close((uv_handle_t *) &up->sock->tcp, sh_cql_sock_close_cb);
        up->sock = NULL;
    }
    for (s = 0; s < up->pend_cap; s++) {
        sh_batch_unref(up->pend[s].resp);
    }
    while (up->nout > 0) {
        sh_frame_unref(up->out[--up->nout]);
    }
    uv_close((uv_handle_t *) up->timer, sh_cql_timer_close_cb);
    sh_cql_reader_free(up->reader);
    sh_free(up->pend);
    sh_free(up->tq);
    sh_free(up->out);
    sh_free(up);
}

void
sh_cql_conn_closed(sh_conn_t *c)
{
    while (c->cql_ups != NULL) {
        sh_cql_up_t *up = c->cql_ups;

        c->cql_ups = up->next;
        sh_cql_up_free(up);
    }
}

void
sh_cql_pools_close(sh_worker_t *w)
{
    while (w->cql_pools != NULL) {
        sh_cql_pool_t *p = w->cql_pools;

        w->cql_pools = p->next;
        sh_free(p);
    }
}

/* --- FFI ---------------------------------------------------------------- */

int
sh_ffi_cql_pool_new(sh_worker_t *w, const sh_cql_conf_t *conf,
    sh_cql_pool_t **out, const char **err)
{
    static __thread char errbuf[256];
    sh_cql_pool_t *p;

    if (w == NULL) {
        *err = "cassandra pools live in workers";
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
    snprintf(p->name, sizeof(p->name), "%s",
             conf->name ? conf->name : "cassandra");
    snprintf(p->remote, sizeof(p->remote), "%s:%d", conf->host, conf->port);
    p->conf.host = p->host;
    p->conf.name = p->name;
    p->errors = sh_metric_backend_errors(p->name, p->remote);
    p->next = w->cql_pools;
    w->cql_pools = p;
    *out = p;
    return SH_OK;
}

static void
sh_cql_tq_push(sh_cql_up_t *up, uint16_t stream, uint32_t seq,
    uint64_t deadline)
{
    if (up->tq_count == up->tq_cap) {
        uint32_t ncap = up->tq_cap ? up->tq_cap * 2 : 64, i;
        sh_cql_tq_t *n = sh_alloc(ncap * sizeof(*n));

        for (i = 0; i < up->tq_count; i++) {
            n[i] = up->tq[(up->tq_head + i) & (up->tq_cap - 1)];
        }
        sh_free(up->tq);
        up->tq = n;
        up->tq_head = 0;
        up->tq_cap = ncap;
    }
    up->tq[(up->tq_head + up->tq_count) & (up->tq_cap - 1)] =
        (sh_cql_tq_t) { deadline, seq, stream };
    up->tq_count++;
}

/*
 * sh_ffi_cql_send: send the requests of req to the client's backend
 * connection (opened on first use); replies land in the same slots of resp.
 *   SH_OK: every slot is already filled (the connection is lost);
 *   SH_AGAIN: replies are owed; the client is woken when all are in.
 */
int
sh_ffi_cql_send(sh_cql_pool_t *p, sh_conn_t *c, sh_batch_t *req,
    sh_batch_t *resp)
{
    sh_cql_up_t *up;
    sh_frame_t *stack[16];
    sh_frame_t **send = req->n <= 16 ? stack
                                     : sh_alloc(req->n * sizeof(sh_frame_t *));
    uint32_t i, k = 0;
    uint64_t timeout = p->conf.request_timeout_ms;
    /* a lane (sh_conn.c) sends on its client's connections, and is woken
     * itself when its replies are in */
    sh_conn_t *owner = sh_conn_client(c);

    for (up = owner->cql_ups; up != NULL && up->pool != p; up = up->next) {
        /* find the client's connection to this node */
    }
    if (up == NULL) {
        up = sh_cql_up_new(p, owner);
    }
    for (i = 0; i < req->n; i++) {
        sh_frame_t *f = req->frames[i];
        int stream = f->argc;
        sh_frame_t *e = NULL;

        if (up->state == SH_CQL_UP_DEAD) {
            e = sh_cql_error_frame(sh_cql_frame_version(f), stream,
                                   SH_CQL_OVERLOADED, "shotover: backend "
                                   "connection lost");
        } else if (stream < 0) {
            e = sh_cql_error_frame(sh_cql_frame_version(f), stream,
                                   SH_CQL_PROTOCOL_ERROR, "negative stream "
                                   "ids are reserved for the server");
        } else if ((uint32_t) stream < up->pend_cap
                   && up->pend[stream].resp != NULL)
        {
            e = sh_cql_error_frame(sh_cql_frame_version(f), stream,
                                   SH_CQL_PROTOCOL_ERROR, "stream id "
                                   "already in use");
        }
        if (e != NULL) {
            sh_batch_put(resp, i, e);
            sh_frame_unref(e);
            continue;
        }
        if ((uint32_t) stream >= up->pend_cap) {
            uint32_t ncap = sh_max(64u, up->pend_cap);

            while (ncap <= (uint32_t) stream) {
                ncap *= 2;
            }
            up->pend = sh_realloc(up->pend, ncap * sizeof(sh_cql_pend_t));
            memset(up->pend + up->pend_cap, 0,
                   (ncap - up->pend_cap) * sizeof(sh_cql_pend_t));
            up->pend_cap = ncap;
        }
        if (f->rtype == SH_CQL_STARTUP) {
            sh_cql_framing_request(&up->fr, f);  /* its answer switches v5 */
        }
        up->pend[stream].resp = sh_batch_ref(resp);
        up->pend[stream].idx = i;
        up->pend[stream].seq = ++up->seq;
        up->npend++;
        resp->waiting++;
        if (timeout) {
            sh_cql_tq_push(up, (uint16_t) stream, up->seq,
                           sh_cql_now(up) + timeout);
        }
        send[k++] = f;
    }
    if (up->state == SH_CQL_UP_READY) {
        sh_cql_up_write(up, send, k);
        if (up->state == SH_CQL_UP_READY) {
            sh_cql_timer_arm(up);
        }
    } else if (up->state == SH_CQL_UP_CONNECTING) {
        for (i = 0; i < k; i++) {
            if (up->nout == up->out_cap) {
                up->out_cap = up->out_cap ? up->out_cap * 2 : 16;
                up->out = sh_realloc(up->out,
                                     up->out_cap * sizeof(sh_frame_t *));
            }
            up->out[up->nout++] = sh_frame_ref(send[i]);
        }
    }
    if (send != stack) {
        sh_free(send);
    }
    if (resp->waiting == 0) {
        return SH_OK;
    }
    sh_conn_add_wait(c, resp);
    return SH_AGAIN;
}
