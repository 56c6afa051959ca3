/*
 * sh_cql_pool.c -- connections to one Cassandra node, on the upstream layer
 * (sh_upstream.c: resolution, connect, gathered writes).
 *
 * Simple and correct first (DESIGN.md 5a): each client connection gets its
 * own backend connection, opened at its first batch and attached to the
 * client (sh_session_attach), and the client's own handshake (OPTIONS,
 * STARTUP, AUTHENTICATE/AUTH_RESPONSE) and stream ids pass through
 * untouched.  Replies are matched to requests by stream id (a node answers
 * in any order); EVENT frames (stream -1) are relayed to the client as they
 * come.  In protocol v5 the node's READY or AUTHENTICATE switches both
 * directions to segments, as it does on the client side (sh_cql_framing).
 *
 * Failure: a node that cannot be reached, drops the connection or leaves a
 * request unanswered past request_timeout_ms fails every request owed with
 * an OVERLOADED error -- drivers take it as "this coordinator cannot serve
 * now" and retry on another host or later, without blaming the query -- and
 * the client connection is then closed once those errors are written: its
 * session (keyspace, authentication) lived on the lost backend connection,
 * and the driver's reconnection builds a new one.
 *
 * A pool that is one node of a ring (conf.ring, the sink's contact_points)
 * differs in three ways: a lost connection leaves the client open (the sink
 * sends what failed to another replica, and opens a new connection to this
 * node at its next use, replaying the session there); and the node's
 * TOPOLOGY_CHANGE and STATUS_CHANGE events are not relayed: they name the
 * nodes, which the client must never see (it sees the shotover nodes).
 */
#include <stdio.h>

#include "sh_conn.h"
#include "sh_cql_pool.h"
#include "sh_metrics.h"
#include "sh_upstream.h"

typedef struct sh_cup_s sh_cup_t;

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

struct sh_cql_pool_s {
    sh_worker_t *w;          /* owning worker */
    sh_cql_conf_t conf;      /* settings; strings are our copies below */
    char host[256];          /* node address */
    char name[64];           /* sink name */
    sh_metric_t *errors;     /* backend failures counter */
    sh_cup_t *cups;          /* connections of this pool's clients */
    struct sh_cql_pool_s *next; /* worker's list */
};

/* A client's connection to the node: its session there. */
struct sh_cup_s {
    sh_cql_pool_t *pool;     /* node */
    sh_session_t *owner;     /* the session it serves, NULL once gone */
    sh_upstream_t *up;       /* the connection */
    int dead;                /* lost: the session is gone for good */
    sh_cql_reader_t *reader; /* reply reader */
    sh_cql_framing_t fr;     /* the handshake's compression and v5 switch */
    sh_cql_pend_t *pend;     /* owed replies, by stream id */
    uint32_t pend_cap;       /* entries in pend */
    uint32_t npend;          /* entries in use */
    sh_cql_tq_t *tq;         /* requests in send order, for timeouts */
    uint32_t tq_head;        /* first entry */
    uint32_t tq_count;       /* entries */
    uint32_t tq_cap;         /* size, a power of two */
    uint32_t seq;            /* last request number */
    sh_cup_t *next;          /* pool's list */
};

static void
sh_cup_fill(sh_batch_t *resp, uint32_t idx, sh_frame_t *f)
{
    sh_batch_put(resp, idx, f);
    sh_run_reply_early(resp, idx);
    if (--resp->waiting == 0 && resp->run != NULL) {
        sh_run_wait_done(resp->run, resp);
    }
}

/* Fail every owed request with an OVERLOADED error saying why. */
static void
sh_cup_fail_all(sh_cup_t *cup, const char *why)
{
    char msg[1024];
    uint32_t s;
    int version = sh_cql_reader_version(cup->reader);

    snprintf(msg, sizeof(msg), "shotover: backend %s (sink \"%s\") "
             "unavailable: %s", cup->up->remote, cup->pool->name, why);
    for (s = 0; s < cup->pend_cap; s++) {
        sh_cql_pend_t *p = &cup->pend[s];
        sh_frame_t *f;

        if (p->resp == NULL) {
            continue;
        }
        f = sh_cql_error_frame(version ? version : 4, (int) s,
                               SH_CQL_OVERLOADED, msg);
        sh_cup_fill(p->resp, p->idx, f);
        sh_frame_unref(f);
        sh_batch_unref(p->resp);
        p->resp = NULL;
    }
    cup->npend = 0;
    cup->tq_count = 0;
}

/* Arm the request timer for the oldest request still owed. */
static void
sh_cup_timer_arm(sh_cup_t *cup)
{
    uint64_t now, d;

    /* drop entries of requests already answered */
    while (cup->tq_count > 0) {
        sh_cql_tq_t *e = &cup->tq[cup->tq_head];
        sh_cql_pend_t *p = &cup->pend[e->stream];

        if (p->resp != NULL && p->seq == e->seq) {
            break;
        }
        cup->tq_head = (cup->tq_head + 1) & (cup->tq_cap - 1);
        cup->tq_count--;
    }
    if (cup->tq_count == 0 || cup->pool->conf.request_timeout_ms == 0) {
        sh_upstream_timer(cup->up, 0);
        return;
    }
    if (!sh_upstream_timer_active(cup->up)) {
        now = sh_upstream_now(cup->up);
        d = cup->tq[cup->tq_head].deadline;
        sh_upstream_timer(cup->up, d > now ? d - now : 1);
    }
}

/* --- upstream callbacks -------------------------------------------------- */

static void
sh_cup_start(sh_upstream_t *up)
{
    sh_unused(up);                       /* the client's handshake is all */
}

static void
sh_cup_connected(sh_upstream_t *up)
{
    sh_cup_timer_arm(up->data);
}

static void
sh_cup_space(sh_upstream_t *up, uint8_t **p, size_t *n)
{
    sh_cup_t *cup = up->data;

    sh_cql_reader_space(cup->reader, p, n);
}

/* Whether EVENT f is about nodes (TOPOLOGY_CHANGE or STATUS_CHANGE). */
static int
sh_cup_node_event(const sh_frame_t *f)
{
    static const char topo[] = "TOPOLOGY_CHANGE", status[] = "STATUS_CHANGE";
    const uint8_t *b = f->data + SH_CQL_HEADER_LEN;
    sh_buf_t *dec = NULL;
    const char *err;
    uint32_t n = f->len - SH_CQL_HEADER_LEN, l;
    int node = 0;

    if (f->len < SH_CQL_HEADER_LEN) {
        return 0;
    }
    if ((f->data[1] & SH_CQL_FLAG_COMPRESSED)
        && sh_cql_frame_version(f) < 5)
    {
        dec = sh_cql_body_decompress(f, &n, &err);
        if (dec == NULL) {
            return 1;                    /* unreadable: not relayed */
        }
        b = dec->data;
    }
    if (n >= 2) {
        l = (uint32_t) b[0] << 8 | b[1];
        node = l + 2 <= n
               && ((l == sizeof(topo) - 1 && !memcmp(b + 2, topo, l))
                   || (l == sizeof(status) - 1 && !memcmp(b + 2, status, l)));
    }
    sh_buf_unref(dec);
    return node;
}

static void
sh_cup_read(sh_upstream_t *up, size_t n)
{
    sh_cup_t *cup = up->data;
    sh_frame_t *f;
    char why[240];

    sh_cql_reader_commit(cup->reader, n);
    for (;;) {
        if (sh_cql_reader_next(cup->reader, &f) != SH_OK) {
            snprintf(why, sizeof(why), "sent a malformed frame (%s)",
                     sh_cql_reader_error(cup->reader));
            sh_upstream_disconnect(up, why, 0);
            return;
        }
        if (f == NULL) {
            break;
        }
        f->cmd = (uint32_t) cup->fr.algo;
        if (f->argc < 0 || f->rtype == SH_CQL_EVENT) {
            if (cup->owner != NULL
                && cup->owner->proto == SH_PROTO_CQL
                && !(cup->pool->conf.ring && sh_cup_node_event(f)))
            {
                sh_session_send(cup->owner, &f, 1);
            }
        } else if ((uint32_t) f->argc < cup->pend_cap
                   && cup->pend[f->argc].resp != NULL)
        {
            sh_cql_pend_t *p = &cup->pend[f->argc];
            sh_batch_t *resp = p->resp;

            p->resp = NULL;
            cup->npend--;
            sh_cup_fill(resp, p->idx, f);
            sh_batch_unref(resp);
        } else {
            sh_log_warn("sink \"%s\": reply on stream %d from %s matches "
                        "no request; dropped", cup->pool->name, f->argc,
                        up->remote);
        }
        sh_cql_framing_response(&cup->fr, f, cup->reader);
        sh_frame_unref(f);
    }
    sh_cup_timer_arm(cup);
}

/*
 * The connection is lost: every owed request gets an OVERLOADED error, and
 * the client closes once they are written.  May run inside sh_ffi_cql_send,
 * i.e. while Lua runs: it never resumes or closes anything itself.
 */
static void
sh_cup_lost(sh_upstream_t *up, const char *why)
{
    sh_cup_t *cup = up->data;

    cup->dead = 1;
    sh_ffi_metric_add(cup->pool->errors, 1);
    sh_log_warn("sink \"%s\": %s %s", cup->pool->name, up->remote, why);
    sh_cup_fail_all(cup, why);
    if (cup->owner != NULL && !cup->pool->conf.ring) {
        sh_session_close_when_done(cup->owner);
    }
}

static void
sh_cup_timer(sh_upstream_t *up)
{
    sh_cup_t *cup = up->data;
    char why[96];

    sh_cup_timer_arm(cup);
    if (cup->tq_count > 0
        && cup->tq[cup->tq_head].deadline <= sh_upstream_now(up))
    {
        snprintf(why, sizeof(why), "request timed out after %ums",
                 cup->pool->conf.request_timeout_ms);
        sh_upstream_disconnect(up, why, 0);
    }
}

static sh_frame_t *
sh_cup_wrap(sh_upstream_t *up, sh_frame_t *const *frames, uint32_t n)
{
    sh_cup_t *cup = up->data;

    return sh_cql_framing_wrap(&cup->fr, frames, n);
}

static const sh_upstream_ops_t sh_cup_ops = {
    .start = sh_cup_start,
    .connected = sh_cup_connected,
    .space = sh_cup_space,
    .read = sh_cup_read,
    .lost = sh_cup_lost,
    .timer = sh_cup_timer,
    .wrap = sh_cup_wrap,
};

/* --- connections --------------------------------------------------------- */

static void
sh_cup_unlink(sh_cup_t *cup)
{
    sh_cup_t **pp;

    for (pp = &cup->pool->cups; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == cup) {
            *pp = cup->next;
            break;
        }
    }
}

static void
sh_cup_free(sh_cup_t *cup)
{
    uint32_t s;

    sh_upstream_free(cup->up);
    for (s = 0; s < cup->pend_cap; s++) {
        sh_batch_unref(cup->pend[s].resp);
    }
    sh_cql_reader_free(cup->reader);
    sh_free(cup->pend);
    sh_free(cup->tq);
    sh_free(cup);
}

/* The client went away: its session on the node goes too. */
static void
sh_cup_owner_closed(void *data)
{
    sh_cup_t *cup = data;

    cup->owner = NULL;
    sh_cup_unlink(cup);
    sh_cup_free(cup);
}

static sh_cup_t *
sh_cup_new(sh_cql_pool_t *p, sh_session_t *client)
{
    sh_cup_t *cup = sh_calloc(1, sizeof(*cup));
    sh_upstream_conf_t uc = {
        .host = p->host, .port = p->conf.port,
        .connect_timeout_ms = p->conf.connect_timeout_ms,
        .name = p->name,
        .tls = p->conf.tls,
    };

    cup->pool = p;
    cup->owner = client;
    cup->reader = sh_cql_reader_new(SH_CQL_RESPONSE, NULL);
    cup->up = sh_upstream_new(p->w, &uc, &sh_cup_ops, cup);
    cup->next = p->cups;
    p->cups = cup;
    sh_session_attach(client, p, cup, sh_cup_owner_closed);
    sh_upstream_connect(cup->up);
    return cup;
}

static void
sh_cql_pool_free(sh_cql_pool_t *p)
{
    while (p->cups != NULL) {
        sh_cup_t *cup = p->cups;

        p->cups = cup->next;
        if (cup->owner != NULL) {
            sh_session_detach(cup->owner, p);
            sh_cup_fail_all(cup, "sink closed");
            sh_session_close_when_done(cup->owner);
        }
        sh_cup_free(cup);
    }
    sh_tls_ctx_unref(p->conf.tls);
    sh_free(p);
}

void
sh_cql_pools_close(sh_worker_t *w)
{
    while (w->cql_pools != NULL) {
        sh_cql_pool_t *p = w->cql_pools;

        w->cql_pools = p->next;
        sh_cql_pool_free(p);
    }
}

/* --- FFI ---------------------------------------------------------------- */

int
sh_ffi_cql_pool_new(sh_worker_t *w, const sh_cql_conf_t *conf,
    sh_cql_pool_t **out, const char **err)
{
    sh_cql_pool_t *p;
    char remote[300];

    if (w == NULL) {
        *err = "cassandra pools live in workers";
        return SH_ERROR;
    }
    p = sh_calloc(1, sizeof(*p));
    p->w = w;
    p->conf = *conf;
    snprintf(p->host, sizeof(p->host), "%s", conf->host);
    snprintf(p->name, sizeof(p->name), "%s",
             conf->name ? conf->name : "cassandra");
    snprintf(remote, sizeof(remote), "%s:%d", conf->host, conf->port);
    p->conf.host = p->host;
    p->conf.name = p->name;
    sh_tls_ctx_ref(p->conf.tls);
    p->errors = sh_metric_backend_errors(p->name, remote);
    p->next = w->cql_pools;
    w->cql_pools = p;
    *out = p;
    return SH_OK;
}

/*
 * sh_ffi_cql_pool_free: close a pool while the worker runs (a node left
 * the ring): requests it owes fail with OVERLOADED and its clients close
 * once those are written (their sessions lived on it).
 */
void
sh_ffi_cql_pool_free(sh_cql_pool_t *p)
{
    sh_cql_pool_t **pp;

    for (pp = &p->w->cql_pools; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    sh_cql_pool_free(p);
}

/* A ring node's lost connection is let go: the client stays. */
static void
sh_cup_drop(sh_cup_t *cup)
{
    sh_session_detach(cup->owner, cup->pool);
    sh_cup_owner_closed(cup);
}

int
sh_ffi_cql_session_live(sh_cql_pool_t *p, sh_run_t *r)
{
    sh_cup_t *cup = sh_session_attached(r->sess, p);

    if (cup != NULL && cup->dead && p->conf.ring) {
        sh_cup_drop(cup);
        cup = NULL;
    }
    return cup != NULL && !cup->dead;
}

static void
sh_cup_tq_push(sh_cup_t *cup, uint16_t stream, uint32_t seq,
    uint64_t deadline)
{
    if (cup->tq_count == cup->tq_cap) {
        uint32_t ncap = cup->tq_cap ? cup->tq_cap * 2 : 64, i;
        sh_cql_tq_t *n = sh_alloc(ncap * sizeof(*n));

        for (i = 0; i < cup->tq_count; i++) {
            n[i] = cup->tq[(cup->tq_head + i) & (cup->tq_cap - 1)];
        }
        sh_free(cup->tq);
        cup->tq = n;
        cup->tq_head = 0;
        cup->tq_cap = ncap;
    }
    cup->tq[(cup->tq_head + cup->tq_count) & (cup->tq_cap - 1)] =
        (sh_cql_tq_t) { deadline, seq, stream };
    cup->tq_count++;
}

/*
 * sh_ffi_cql_send: send the requests of req on the client's connection to
 * the node (opened on first use); replies land in the same slots of resp.
 *   SH_OK: every slot is already filled (the connection is lost);
 *   SH_AGAIN: replies are owed; c is woken when all are in.
 * A lane (sh_conn.c) sends on its client's session and is woken itself.
 */
int
sh_ffi_cql_send(sh_cql_pool_t *p, sh_run_t *r, sh_batch_t *req,
    sh_batch_t *resp)
{
    sh_session_t *client = r->sess;
    sh_cup_t *cup = sh_session_attached(client, p);
    uint64_t timeout = p->conf.request_timeout_ms;
    uint32_t i;

    if (cup != NULL && cup->dead && p->conf.ring) {
        sh_cup_drop(cup);                /* a new connection, below */
        cup = NULL;
    }
    if (cup == NULL) {
        cup = sh_cup_new(p, client);
    }
    for (i = 0; i < req->n; i++) {
        sh_frame_t *f = req->frames[i];
        int stream = f->argc;
        sh_frame_t *e = NULL;

        if (cup->dead) {
            e = sh_cql_error_frame(sh_cql_frame_version(f), stream,
                                   SH_CQL_OVERLOADED, "shotover: backend "
                                   "connection lost");
        } else if (stream < 0) {
            e = sh_cql_error_frame(sh_cql_frame_version(f), stream,
                                   SH_CQL_PROTOCOL_ERROR, "negative stream "
                                   "ids are reserved for the server");
        } else if ((uint32_t) stream < cup->pend_cap
                   && cup->pend[stream].resp != NULL)
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
        if ((uint32_t) stream >= cup->pend_cap) {
            uint32_t ncap = sh_max(64u, cup->pend_cap);

            while (ncap <= (uint32_t) stream) {
                ncap *= 2;
            }
            cup->pend = sh_realloc(cup->pend, ncap * sizeof(sh_cql_pend_t));
            memset(cup->pend + cup->pend_cap, 0,
                   (ncap - cup->pend_cap) * sizeof(sh_cql_pend_t));
            cup->pend_cap = ncap;
        }
        if (f->rtype == SH_CQL_STARTUP) {
            sh_cql_framing_request(&cup->fr, f); /* its answer switches v5 */
        }
        cup->pend[stream].resp = sh_batch_ref(resp);
        cup->pend[stream].idx = i;
        cup->pend[stream].seq = ++cup->seq;
        cup->npend++;
        resp->waiting++;
        if (timeout) {
            sh_cup_tq_push(cup, (uint16_t) stream, cup->seq,
                           sh_upstream_now(cup->up) + timeout);
        }
        sh_upstream_send(cup->up, f);
    }
    if (cup->up->state == SH_UPSTREAM_READY) {
        sh_cup_timer_arm(cup);
    }
    if (resp->waiting == 0) {
        return SH_OK;
    }
    sh_run_add_wait(r, resp);
    return SH_AGAIN;
}
