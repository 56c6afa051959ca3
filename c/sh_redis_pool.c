/*
 * sh_redis_pool.c -- connections to one Redis server, on the upstream
 * layer (sh_upstream.c: resolution, connect, gathered writes, backoff).
 *
 * Stateless requests of all clients of a worker share `connections`
 * pipelined connections: replies come back in request order, so each
 * connection keeps a FIFO of (response batch, slot) and fills the next one
 * with each reply it parses.  Writes gathered during a loop iteration leave
 * in one writev per connection, before the loop polls again: with many
 * clients, Redis then reads many requests per system call.
 *
 * A client that sends a command that changes connection state (MULTI, WATCH,
 * SELECT, AUTH, HELLO, CLIENT, blocking commands, SUBSCRIBE...) gets a
 * dedicated connection, attached to its session (sh_session_attach) from that batch
 * until it disconnects, so semantics never change.  After SUBSCRIBE,
 * MONITOR or CLIENT REPLY the connection streams: every reply is relayed to
 * the client as it arrives, and the chain gets NOREPLY responses.  After
 * SYNC or PSYNC what the backend sends is no longer RESP (the RDB payload
 * has no trailing CRLF; the command stream follows): once the replies owed
 * before it are in, its bytes are relayed raw.  A relay whose client does
 * not keep up stops reading the backend until the client drains.  RESP3
 * pushes (client tracking) read among replies reach the client right
 * after the reply they followed, as Redis sent them (sh_session_push).
 * A dedicated connection that is lost closes its client once the replies
 * it got are written: the state it held is gone, as if Redis had closed
 * the client's own connection.
 *
 * Shared connections name themselves "shotover" and learn their id and
 * address (CLIENT INFO) so that CLIENT KILL cannot close one of them; a
 * CLIENT PAUSE holds every request's timeout until it ends; WAIT on a
 * dedicated connection is preceded by a write there, so it counts the
 * client's writes made on shared connections too.
 *
 * Failures: a backend that cannot be reached or drops the connection
 * fails every request it owes with an -ERR reply naming the backend; the
 * next request reconnects, at most as often as the backoff (doubling from
 * backoff_min_ms to backoff_max_ms) allows, failing fast in between.
 *
 * A request that times out fails alone.  On a shared connection the
 * requests of other clients behind it keep their own deadlines: the
 * connection is *retired* -- a new one takes its place for new requests,
 * it reads on, dropping the replies of requests that already failed and
 * passing on the others, and it is closed once it owes no live reply (a
 * pre-poll hook reaps it, never its own callbacks).  So one client's slow
 * command (a big reply, DEBUG SLEEP, a long script) never fails another
 * client's request that its own timeout would have let through.  A
 * dedicated connection that times out is closed: it serves one client.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "sh_conn.h"
#include "sh_metrics.h"
#include "sh_redis_pool.h"
#include "sh_upstream.h"

typedef struct sh_rconn_s sh_rconn_t;

/* what an owed reply answers */
enum {
    SH_PEND_CLIENT = 0,      /* a client's request: fills resp[idx] */
    SH_PEND_AUTH,            /* our AUTH: a failure is logged */
    SH_PEND_QUIET,           /* ours, the reply ignored (CLIENT SETNAME, the
                                PUBLISH before a WAIT) */
    SH_PEND_INFO,            /* our CLIENT INFO: the shared connection's id
                                and address, for CLIENT KILL's check */
    SH_PEND_RAW              /* SYNC or PSYNC was sent: from here on the
                                bytes are relayed raw */
};

typedef struct sh_pending_s {
    sh_batch_t *resp;        /* batch to fill (ref held), NULL: not a
                                client's, or a request that timed out */
    uint32_t idx;            /* slot in resp */
    uint8_t dropped;         /* it timed out: its reply is dropped */
    uint8_t kind;            /* SH_PEND_* */
    uint64_t deadline;       /* loop time in ms; 0: no timeout */
} sh_pending_t;

struct sh_redis_pool_s {
    sh_worker_t *w;          /* owning worker */
    sh_redis_conf_t conf;    /* settings; strings below are our copies */
    char host[256];          /* backend host */
    char user[128];          /* AUTH user or "" */
    char pass[256];          /* AUTH password or "" */
    char name[64];           /* sink name */
    sh_frame_t *wait_mark;   /* PUBLISH sent before a WAIT (see there) */
    sh_metric_t *errors;     /* backend failures counter */
    sh_rconn_t **shared;     /* conf.connections pipelined connections */
    uint32_t rr;             /* round robin over shared */
    sh_rconn_t *dedicated;   /* connections pinned to clients */
    sh_rconn_t *retired;     /* shared ones replaced after a timeout */
    sh_redis_pool_t *next;   /* worker's pool list */
};

/* One connection of the pool: shared, or dedicated to one client. */
struct sh_rconn_s {
    sh_redis_pool_t *pool;   /* pool it belongs to */
    sh_upstream_t *up;       /* the connection itself */
    sh_session_t *owner;     /* session it is dedicated to, or NULL */
    int streaming;           /* relay every reply to owner */
    sh_resp_reader_t *reader; /* reply parser of the current connection */
    sh_pending_t *ring;      /* replies owed, FIFO */
    uint32_t head;           /* first entry */
    uint32_t count;          /* entries */
    uint32_t cap;            /* ring size, power of two */
    uint32_t ndropped;       /* entries that timed out, replies dropped */
    int retired;             /* on the pool's retired list */
    int raw;                 /* 1: SYNC sent, raw from its marker on;
                                2: raw, bytes relayed as they come */
    int was_ready;           /* connected since it was made (dedicated: the
                                client may have state on the backend) */
    /* dedicated: where the reply last read landed, for RESP3 pushes */
    uint64_t seq;            /* the owner's batch it serves (sh_run_t.seq) */
    const sh_batch_t *last_resp; /* the batch of the last reply read */
    int64_t last_idx;        /* its slot; -1: none yet in this batch */
    /* shared: what Redis calls it, for CLIENT KILL's check */
    uint64_t backend_id;     /* CLIENT ID, when registered */
    char backend_addr[64];   /* its address as Redis sees it */
    int registered;          /* in the process's list of shared ones */
    sh_rconn_t *next;        /* pool's dedicated or retired list */
};

/* --- shared connections, process-wide ------------------------------------
 *
 * CLIENT KILL sent by one client must not close a connection other clients'
 * requests ride on -- on any worker.  Each shared connection asks Redis its
 * id and address (CLIENT INFO) once connected, and is listed here until it
 * closes; CLIENT KILL is refused when its filters match one of them.
 */
typedef struct sh_shared_entry_s {
    const sh_rconn_t *rc;    /* the connection (a key only) */
    char remote[300];        /* "host:port" of its backend */
    char user[128];          /* the user it authenticated as */
    uint64_t id;             /* CLIENT ID */
    char addr[64];           /* ip:port as Redis sees it */
} sh_shared_entry_t;

static pthread_mutex_t sh_shared_mu = PTHREAD_MUTEX_INITIALIZER;
static sh_shared_entry_t *sh_shared_list;
static uint32_t sh_shared_n, sh_shared_cap;

/* Until when (loop ms) a CLIENT PAUSE sent through any pool holds Redis:
 * requests do not time out before request_timeout_ms after that. */
static uint64_t sh_redis_paused_until;

static void
sh_shared_register(sh_rconn_t *rc)
{
    sh_shared_entry_t *e;

    pthread_mutex_lock(&sh_shared_mu);
    if (sh_shared_n == sh_shared_cap) {
        sh_shared_cap = sh_shared_cap ? sh_shared_cap * 2 : 16;
        sh_shared_list = sh_realloc(sh_shared_list,
                                    sh_shared_cap * sizeof(*e));
    }
    e = &sh_shared_list[sh_shared_n++];
    e->rc = rc;
    snprintf(e->remote, sizeof(e->remote), "%s", rc->up->remote);
    snprintf(e->user, sizeof(e->user), "%s",
             rc->pool->user[0] ? rc->pool->user : "default");
    e->id = rc->backend_id;
    snprintf(e->addr, sizeof(e->addr), "%s", rc->backend_addr);
    pthread_mutex_unlock(&sh_shared_mu);
    rc->registered = 1;
}

static void
sh_shared_unregister(sh_rconn_t *rc)
{
    uint32_t i;

    if (!rc->registered) {
        return;
    }
    rc->registered = 0;
    pthread_mutex_lock(&sh_shared_mu);
    for (i = 0; i < sh_shared_n; i++) {
        if (sh_shared_list[i].rc == rc) {
            sh_shared_list[i] = sh_shared_list[--sh_shared_n];
            break;
        }
    }
    if (sh_shared_n == 0) {
        sh_free(sh_shared_list);
        sh_shared_list = NULL;
        sh_shared_cap = 0;
    }
    pthread_mutex_unlock(&sh_shared_mu);
}

/* The shared connection's id and address from its CLIENT INFO reply
 * ("$N\r\nid=7 addr=127.0.0.1:50044 laddr=..."). */
static void
sh_rconn_learn_identity(sh_rconn_t *rc, const sh_frame_t *f)
{
    const char *p = (const char *) f->data, *end = p + f->len, *a;
    size_t n;

    if (f->rtype != '$' || f->argc < 0) {
        return;                          /* an old Redis, or no permission */
    }
    p = memchr(p, '\n', (size_t) (end - p));
    if (p == NULL || end - ++p < 4 || memcmp(p, "id=", 3) != 0) {
        return;
    }
    rc->backend_id = strtoull(p + 3, NULL, 10);
    for (a = p; a + 6 <= end && memcmp(a, " addr=", 6) != 0; a++) {
        /* find the address field */
    }
    if (a + 6 > end) {
        return;
    }
    a += 6;
    for (n = 0; a + n < end && a[n] != ' ' && a[n] != '\r'
         && n < sizeof(rc->backend_addr) - 1; n++)
    {
        rc->backend_addr[n] = a[n];
    }
    rc->backend_addr[n] = '\0';
    sh_shared_unregister(rc);
    sh_shared_register(rc);
}

static sh_frame_t *
sh_rconn_error_frame(sh_rconn_t *rc, const char *what)
{
    char msg[1200];

    snprintf(msg, sizeof(msg), "shotover: backend %s (sink \"%s\") %s",
             rc->up->remote, rc->pool->name, what);
    return sh_resp_error_frame(msg);
}

/* Fill slot idx of resp and wake its client when it was the last one. */
static void
sh_rconn_fill(sh_batch_t *resp, uint32_t idx, sh_frame_t *f)
{
    sh_batch_put(resp, idx, f);
    if (--resp->waiting == 0 && resp->run != NULL) {
        sh_run_wait_done(resp->run, resp);
    }
}

static void
sh_rconn_arm(sh_rconn_t *rc)
{
    uint64_t now, d;

    uint32_t i = 0;

    if (rc->count == rc->ndropped || sh_upstream_timer_active(rc->up)) {
        return;
    }
    while (rc->ring[(rc->head + i) & (rc->cap - 1)].dropped) {
        i++;                             /* timed out already */
    }
    d = rc->ring[(rc->head + i) & (rc->cap - 1)].deadline;
    if (d == 0) {
        return;                          /* a blocking command leads */
    }
    now = sh_upstream_now(rc->up);
    sh_upstream_timer(rc->up, d > now ? d - now : 1);
}

static void
sh_rconn_push_pending(sh_rconn_t *rc, int kind, sh_batch_t *resp,
    uint32_t idx, uint64_t timeout)
{
    sh_pending_t *p;

    if (rc->count == rc->cap) {
        uint32_t ncap = rc->cap ? rc->cap * 2 : 64;
        sh_pending_t *nr = sh_alloc(ncap * sizeof(*nr));
        uint32_t i;

        for (i = 0; i < rc->count; i++) {
            nr[i] = rc->ring[(rc->head + i) & (rc->cap - 1)];
        }
        sh_free(rc->ring);
        rc->ring = nr;
        rc->head = 0;
        rc->cap = ncap;
    }
    p = &rc->ring[(rc->head + rc->count) & (rc->cap - 1)];
    p->resp = resp ? sh_batch_ref(resp) : NULL;
    p->idx = idx;
    p->dropped = 0;
    p->kind = (uint8_t) kind;
    p->deadline = timeout ? sh_upstream_now(rc->up) + timeout : 0;
    /* only the first owed reply arms the timer (per request this would be
     * a call into libuv each): later ones are armed for as replies come */
    if (rc->count++ == 0 && timeout) {
        sh_rconn_arm(rc);
    }
}

/* inline: once per reply, and the compiler stops inlining it on its own
 * once sh_rconn_read grows */
static inline sh_pending_t
sh_rconn_pop_pending(sh_rconn_t *rc)
{
    sh_pending_t p = rc->ring[rc->head];

    rc->head = (rc->head + 1) & (rc->cap - 1);
    rc->count--;
    rc->ndropped -= p.dropped;
    return p;
}

static void
sh_rconn_fail_all(sh_rconn_t *rc, const char *why)
{
    char what[200];
    sh_frame_t *f;

    if (rc->count == 0) {
        return;
    }
    snprintf(what, sizeof(what), "unavailable: %s", why);
    f = sh_rconn_error_frame(rc, what);
    while (rc->count > 0) {
        sh_pending_t p = sh_rconn_pop_pending(rc);

        if (p.resp != NULL) {
            sh_rconn_fill(p.resp, p.idx, f);
            sh_batch_unref(p.resp);
        }
    }
    sh_frame_unref(f);
}

/* Replies relayed to the client as they come (streaming, RESP3 pushes):
 * only a Redis client can read them. */
static int
sh_rconn_relay(sh_rconn_t *rc, sh_frame_t **frames, uint32_t n)
{
    int blocked = 0;
    uint32_t i;

    if (rc->owner == NULL) {
        /* nobody to tell */
    } else if (rc->owner->proto != SH_PROTO_REDIS) {
        sh_log_warn("sink \"%s\": %u unsolicited replies from %s dropped: "
                    "the client does not speak Redis", rc->pool->name, n,
                    rc->up->remote);
    } else {
        blocked = sh_session_send(rc->owner, frames, n);
    }
    for (i = 0; i < n; i++) {
        sh_frame_unref(frames[i]);
    }
    return blocked;
}

/* A RESP3 push read among replies: to the client after the reply it
 * follows, as Redis sent it (sh_session_push). */
static int
sh_rconn_push(sh_rconn_t *rc, sh_frame_t *f)
{
    int blocked = 0;

    if (rc->owner->proto == SH_PROTO_REDIS) {
        blocked = sh_session_push(rc->owner, f, rc->seq, rc->last_resp,
                                  rc->last_idx);
    }
    sh_frame_unref(f);
    return blocked;
}

/* The client reads its replies again: so do we. */
static void
sh_rconn_drained(void *data)
{
    sh_rconn_t *rc = data;

    sh_upstream_pause_reading(rc->up, 0);
}

/* --- upstream callbacks -------------------------------------------------- */

static void
sh_rconn_start(sh_upstream_t *up)
{
    sh_rconn_t *rc = up->data;
    sh_redis_pool_t *pool = rc->pool;
    const uint8_t *args[3];
    size_t lens[3];
    int n = 0;
    sh_frame_t *f;

    sh_resp_reader_free(rc->reader);
    rc->reader = sh_resp_reader_new(SH_RESP_REPLY, NULL);
    rc->raw = 0;
    if (pool->pass[0] != '\0') {
        /* authenticate first; the reply is ours, not a client's */
        args[n] = (const uint8_t *) "AUTH";
        lens[n++] = 4;
        if (pool->user[0] != '\0') {
            args[n] = (const uint8_t *) pool->user;
            lens[n++] = strlen(pool->user);
        }
        args[n] = (const uint8_t *) pool->pass;
        lens[n++] = strlen(pool->pass);
        f = sh_resp_encode_command(args, lens, n);
        sh_upstream_send(up, f);
        sh_frame_unref(f);
        /* with the requests' timeout: a backend that never answers it
         * must not hold the requests queued behind it forever */
        sh_rconn_push_pending(rc, SH_PEND_AUTH, NULL, 0,
                              pool->conf.request_timeout_ms);
    }
    if (pool->conf.readonly) {
        /* a cluster replica serves reads only to READONLY connections */
        static const uint8_t *ro[1] = { (const uint8_t *) "READONLY" };
        static const size_t ro_lens[1] = { 8 };

        f = sh_resp_encode_command(ro, ro_lens, 1);
        sh_upstream_send(up, f);
        sh_frame_unref(f);
        sh_rconn_push_pending(rc, SH_PEND_QUIET, NULL, 0,
                              pool->conf.request_timeout_ms);
    }
    if (rc->owner == NULL) {
        /* a shared connection says what it is in CLIENT LIST, and learns
         * its id and address (CLIENT KILL's check) */
        static const uint8_t *name[3] = {
            (const uint8_t *) "CLIENT", (const uint8_t *) "SETNAME",
            (const uint8_t *) "shotover" };
        static const uint8_t *info[2] = {
            (const uint8_t *) "CLIENT", (const uint8_t *) "INFO" };
        static const size_t name_lens[3] = { 6, 7, 8 };
        static const size_t info_lens[2] = { 6, 4 };

        f = sh_resp_encode_command(name, name_lens, 3);
        sh_upstream_send(up, f);
        sh_frame_unref(f);
        sh_rconn_push_pending(rc, SH_PEND_QUIET, NULL, 0,
                              pool->conf.request_timeout_ms);
        f = sh_resp_encode_command(info, info_lens, 2);
        sh_upstream_send(up, f);
        sh_frame_unref(f);
        sh_rconn_push_pending(rc, SH_PEND_INFO, NULL, 0,
                              pool->conf.request_timeout_ms);
    }
}

static void
sh_rconn_connected(sh_upstream_t *up)
{
    sh_rconn_t *rc = up->data;

    rc->was_ready = 1;
    sh_rconn_arm(rc);
}

static void
sh_rconn_space(sh_upstream_t *up, uint8_t **p, size_t *n)
{
    sh_rconn_t *rc = up->data;

    sh_resp_reader_space(rc->reader, p, n);
}

static void
sh_rconn_read(sh_upstream_t *up, size_t n)
{
    sh_rconn_t *rc = up->data;
    sh_redis_pool_t *pool = rc->pool;
    sh_frame_t *f;
    sh_frame_t *relay[64];
    uint32_t nrelay = 0;
    int blocked = 0;

    sh_resp_reader_commit(rc->reader, n);
    for (;;) {
        if (rc->raw != 0) {              /* one test per reply otherwise */
            if (rc->raw == 1 && rc->count > 0
                && rc->ring[rc->head].kind == SH_PEND_RAW)
            {
                /* every reply owed before SYNC is in: what follows is
                 * the replication stream, not RESP */
                (void) sh_rconn_pop_pending(rc);
                rc->raw = 2;
            }
            if (rc->raw == 2) {
                (void) sh_resp_reader_raw(rc->reader, &f);
                if (f != NULL) {
                    relay[nrelay++] = f;
                }
                break;
            }
        }
        if (sh_resp_reader_next(rc->reader, &f) != SH_OK) {
            char why[200];

            snprintf(why, sizeof(why), "sent a malformed reply (%s)",
                     sh_resp_reader_error(rc->reader));
            sh_log_error("sink \"%s\": %s %s", pool->name, up->remote, why);
            sh_upstream_disconnect(up, why, 1);
            break;
        }
        if (f == NULL) {
            break;
        }
        if (rc->count > 0 && !(f->rtype == '>' && rc->owner != NULL)) {
            sh_pending_t p = sh_rconn_pop_pending(rc);

            if (p.dropped) {
                /* the request timed out and its client was told */
            } else if (p.kind == SH_PEND_CLIENT) {
                if (rc->owner != NULL) {
                    rc->last_resp = p.resp;
                    rc->last_idx = p.idx;
                }
                sh_rconn_fill(p.resp, p.idx, f);
                sh_batch_unref(p.resp);
            } else if (p.kind == SH_PEND_INFO) {
                sh_rconn_learn_identity(rc, f);
            } else if (p.kind == SH_PEND_AUTH && f->rtype == '-') {
                sh_log_error("sink \"%s\": AUTH to %s failed: %.*s",
                             pool->name, up->remote,
                             (int) sh_min(f->len, 200u) - 2,
                             (const char *) f->data + 1);
            }
        } else if (rc->owner != NULL && (rc->streaming || f->rtype != '>')) {
            /* streaming: straight to the client, in order */
            relay[nrelay++] = f;
            if (nrelay == 64) {
                blocked |= sh_rconn_relay(rc, relay, nrelay);
                nrelay = 0;
            }
            continue;
        } else if (rc->owner != NULL) {
            /* a RESP3 push (client tracking) among replies */
            if (nrelay > 0) {
                blocked |= sh_rconn_relay(rc, relay, nrelay);
                nrelay = 0;
            }
            blocked |= sh_rconn_push(rc, f);
            continue;
        } else {
            sh_log_warn("sink \"%s\": unexpected reply from %s dropped",
                        pool->name, up->remote);
        }
        sh_frame_unref(f);
    }
    if (nrelay > 0) {
        blocked |= sh_rconn_relay(rc, relay, nrelay);
    }
    if (blocked && rc->owner != NULL && up->state == SH_UPSTREAM_READY) {
        /* the client does not read as fast as the backend sends (a
         * replica's full sync, MONITOR): hold the backend until it does */
        sh_upstream_pause_reading(up, 1);
        sh_session_on_drain(rc->owner, pool, sh_rconn_drained);
    }
    if (up->state == SH_UPSTREAM_READY) {
        sh_rconn_arm(rc);            /* for the new head, when none runs */
    }
}

static void
sh_rconn_lost(sh_upstream_t *up, const char *why)
{
    sh_rconn_t *rc = up->data;

    sh_ffi_metric_add(rc->pool->errors, 1);
    sh_shared_unregister(rc);
    sh_resp_reader_free(rc->reader);
    rc->reader = NULL;
    sh_rconn_fail_all(rc, why);
    if (rc->owner != NULL && rc->was_ready) {
        /* what the client set on its connection (SELECT, MULTI, WATCH,
         * tracking, subscriptions, a name) is gone with it: a new one
         * would carry on without it.  Close the client as Redis would
         * have (CLIENT KILL, a restart), once the replies it got are
         * written; a subscriber's library then subscribes again. */
        sh_session_close_when_done(rc->owner);
    } else if (rc->owner != NULL && rc->streaming) {
        /* never connected: its streamed requests owe no reply to fail,
         * so it is told, then closed */
        sh_session_abort(rc->owner, "backend connection lost");
    }
}

static sh_rconn_t *sh_rconn_new(sh_redis_pool_t *pool, sh_session_t *owner);
static int sh_redis_pools_reap(sh_worker_t *w);

/* Put shared connection rc aside for a new one (see the top). */
static void
sh_rconn_retire(sh_rconn_t *rc)
{
    sh_redis_pool_t *p = rc->pool;
    uint32_t i;

    for (i = 0; i < p->conf.connections; i++) {
        if (p->shared[i] == rc) {
            p->shared[i] = sh_rconn_new(p, NULL);
            break;
        }
    }
    rc->retired = 1;
    rc->next = p->retired;
    p->retired = rc;
    sh_worker_hook(p->w, sh_redis_pools_reap);
}

static void
sh_rconn_timer(sh_upstream_t *up)
{
    sh_rconn_t *rc = up->data;
    uint64_t now = sh_upstream_now(up);
    uint32_t i, failed = 0;
    sh_frame_t *err = NULL;
    char why[96];

    uint64_t paused = __atomic_load_n(&sh_redis_paused_until,
                                      __ATOMIC_RELAXED);

    if (paused != 0 && now < paused + rc->pool->conf.request_timeout_ms) {
        /* a CLIENT PAUSE holds Redis: requests wait as long as they
         * would directly, then get their timeout from its end */
        sh_upstream_timer(up, paused + rc->pool->conf.request_timeout_ms
                              - now);
        return;
    }
    snprintf(why, sizeof(why), "timed out after %ums",
             rc->pool->conf.request_timeout_ms);
    if (rc->owner != NULL) {
        /* a dedicated connection serves one client: close it */
        if (rc->count > 0 && rc->ring[rc->head].deadline != 0
            && rc->ring[rc->head].deadline <= now)
        {
            sh_log_warn("sink \"%s\": %s request %s", rc->pool->name,
                        up->remote, why);
            sh_upstream_disconnect(up, why, 0);
            return;
        }
        sh_rconn_arm(rc);
        return;
    }
    /* shared: fail each request past its deadline, alone (FIFO order is
     * deadline order here: one timeout, no blocking commands) */
    for (i = 0; i < rc->count; i++) {
        sh_pending_t *p = &rc->ring[(rc->head + i) & (rc->cap - 1)];

        if (p->dropped) {
            continue;
        }
        if (p->deadline == 0 || p->deadline > now) {
            break;
        }
        if (p->resp != NULL) {
            if (err == NULL) {
                char what[120];

                snprintf(what, sizeof(what), "unavailable: %s", why);
                err = sh_rconn_error_frame(rc, what);
            }
            sh_rconn_fill(p->resp, p->idx, err);
            sh_batch_unref(p->resp);
            p->resp = NULL;
            failed++;
        }
        p->dropped = 1;
        rc->ndropped++;
    }
    sh_frame_unref(err);
    if (failed > 0 && !rc->retired) {
        sh_log_warn("sink \"%s\": %s: %u request%s %s; the connection is "
                    "set aside until the replies it still owes are in",
                    rc->pool->name, up->remote, failed,
                    failed == 1 ? "" : "s", why);
        sh_ffi_metric_add(rc->pool->errors, 1);
        sh_rconn_retire(rc);
    }
    sh_rconn_arm(rc);
}

static const sh_upstream_ops_t sh_rconn_ops = {
    .start = sh_rconn_start,
    .connected = sh_rconn_connected,
    .space = sh_rconn_space,
    .read = sh_rconn_read,
    .lost = sh_rconn_lost,
    .timer = sh_rconn_timer,
    .wrap = NULL,
};

/* --- connections --------------------------------------------------------- */

static sh_rconn_t *
sh_rconn_new(sh_redis_pool_t *pool, sh_session_t *owner)
{
    sh_rconn_t *rc = sh_calloc(1, sizeof(*rc));
    sh_upstream_conf_t uc = {
        .host = pool->host, .port = pool->conf.port,
        .connect_timeout_ms = pool->conf.connect_timeout_ms,
        .backoff_min_ms = pool->conf.backoff_min_ms,
        .backoff_max_ms = pool->conf.backoff_max_ms,
        .name = pool->name,
        .tls = pool->conf.tls,
    };

    rc->pool = pool;
    rc->owner = owner;
    rc->up = sh_upstream_new(pool->w, &uc, &sh_rconn_ops, rc);
    return rc;
}

/* Free rc: what it owes fails first (its clients are told, not left). */
static void
sh_rconn_free(sh_rconn_t *rc)
{
    sh_shared_unregister(rc);
    sh_rconn_fail_all(rc, "shutting down");
    sh_upstream_free(rc->up);
    sh_resp_reader_free(rc->reader);
    sh_free(rc->ring);
    sh_free(rc);
}

static void
sh_rconn_unlink(sh_rconn_t *rc)
{
    sh_rconn_t **pp;

    for (pp = &rc->pool->dedicated; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == rc) {
            *pp = rc->next;
            break;
        }
    }
}

/* The client of a dedicated connection went away: the connection goes. */
static void
sh_rconn_owner_closed(void *data)
{
    sh_rconn_t *rc = data;

    rc->owner = NULL;
    sh_rconn_unlink(rc);
    sh_rconn_free(rc);
}

static void
sh_redis_pool_free(sh_redis_pool_t *p)
{
    uint32_t i;

    while (p->dedicated != NULL) {
        sh_rconn_t *rc = p->dedicated;

        p->dedicated = rc->next;
        sh_session_detach(rc->owner, p);
        if (rc->streaming) {
            sh_session_abort(rc->owner, "backend connection closed");
        }
        sh_rconn_free(rc);
    }
    while (p->retired != NULL) {
        sh_rconn_t *rc = p->retired;

        p->retired = rc->next;
        sh_rconn_free(rc);
    }
    for (i = 0; i < p->conf.connections; i++) {
        sh_rconn_free(p->shared[i]);
    }
    sh_frame_unref(p->wait_mark);
    sh_free(p->shared);
    sh_tls_ctx_unref(p->conf.tls);
    sh_free(p);
}

/* Close retired connections that owe no live reply (a pre-poll hook, so
 * never under one of their own callbacks). */
static int
sh_redis_pools_reap(sh_worker_t *w)
{
    sh_redis_pool_t *p;
    int any = 0;

    for (p = w->pools; p != NULL; p = p->next) {
        sh_rconn_t **pp = &p->retired;

        while (*pp != NULL) {
            sh_rconn_t *rc = *pp;

            if (rc->count == rc->ndropped) {
                *pp = rc->next;
                sh_rconn_free(rc);
                any = 1;
            } else {
                pp = &rc->next;
            }
        }
    }
    return any;
}

void
sh_redis_pools_close(sh_worker_t *w)
{
    while (w->pools != NULL) {
        sh_redis_pool_t *p = w->pools;

        w->pools = p->next;
        sh_redis_pool_free(p);
    }
}

/* --- FFI ---------------------------------------------------------------- */

int
sh_ffi_redis_pool_new(sh_worker_t *w, const sh_redis_conf_t *conf,
    sh_redis_pool_t **out, const char **err)
{
    sh_redis_pool_t *p;
    char remote[300];
    uint32_t i;

    if (w == NULL) {
        *err = "redis pools live in workers";
        return SH_ERROR;
    }
    p = sh_calloc(1, sizeof(*p));
    p->w = w;
    p->conf = *conf;
    snprintf(p->host, sizeof(p->host), "%s", conf->host);
    snprintf(p->user, sizeof(p->user), "%s",
             conf->username ? conf->username : "");
    snprintf(p->pass, sizeof(p->pass), "%s",
             conf->password ? conf->password : "");
    snprintf(p->name, sizeof(p->name), "%s", conf->name ? conf->name : "redis");
    snprintf(remote, sizeof(remote), "%s:%d", conf->host, conf->port);
    p->conf.host = p->host;
    p->conf.username = p->user;
    p->conf.password = p->pass;
    p->conf.name = p->name;
    sh_tls_ctx_ref(p->conf.tls);
    if (p->conf.connections == 0) {
        p->conf.connections = 1;
    }
    if (p->conf.backoff_min_ms == 0) {
        p->conf.backoff_min_ms = 1;
    }
    if (p->conf.backoff_max_ms < p->conf.backoff_min_ms) {
        p->conf.backoff_max_ms = p->conf.backoff_min_ms;
    }
    {
        static const uint8_t *args[3] = {
            (const uint8_t *) "PUBLISH",
            (const uint8_t *) "__shotover__:wait", (const uint8_t *) "" };
        static const size_t lens[3] = { 7, 17, 0 };

        p->wait_mark = sh_resp_encode_command(args, lens, 3);
    }
    p->errors = sh_metric_backend_errors(p->name, remote);
    p->shared = sh_calloc(p->conf.connections, sizeof(sh_rconn_t *));
    for (i = 0; i < p->conf.connections; i++) {
        p->shared[i] = sh_rconn_new(p, NULL);
    }
    p->next = w->pools;
    w->pools = p;
    *out = p;
    return SH_OK;
}

/*
 * sh_ffi_redis_pool_free: close a pool while the worker runs (a cluster's
 * topology changed): requests it owes fail, pinned clients lose their
 * dedicated connections (they get the error a lost backend gives).
 */
void
sh_ffi_redis_pool_free(sh_redis_pool_t *p)
{
    sh_redis_pool_t **pp;

    for (pp = &p->w->pools; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    sh_redis_pool_free(p);
}

static sh_rconn_t *
sh_pool_dedicated(sh_redis_pool_t *p, sh_session_t *client, int create)
{
    sh_rconn_t *rc = sh_session_attached(client, p);

    if (rc != NULL || !create) {
        return rc;
    }
    rc = sh_rconn_new(p, client);
    rc->next = p->dedicated;
    p->dedicated = rc;
    sh_session_attach(client, p, rc, sh_rconn_owner_closed);
    return rc;
}

/* --- commands the sink looks at before sending ---------------------------- */

/* Argument i of request f is word (upper case), in any case. */
static int
sh_arg_is(const sh_frame_t *f, int i, const char *word)
{
    const uint8_t *a = f->data + f->argv[i].off;
    uint32_t n = f->argv[i].len, k;

    for (k = 0; k < n; k++) {
        if (word[k] == '\0' || (a[k] & ~0x20) != (uint8_t) word[k]) {
            return 0;
        }
    }
    return word[n] == '\0';
}

/* Argument i of f as a C string; 0 when it does not fit. */
static int
sh_arg_copy(const sh_frame_t *f, int i, char *out, size_t cap)
{
    uint32_t n = f->argv[i].len;

    if (n >= cap || memchr(f->data + f->argv[i].off, '\0', n) != NULL) {
        return 0;
    }
    memcpy(out, f->data + f->argv[i].off, n);
    out[n] = '\0';
    return 1;
}

/*
 * CLIENT KILL: refused when its filters match a connection shotover shares
 * among its clients (see the registry at the top); anything Redis would
 * refuse, or that names only other connections, goes to Redis.  Filters
 * shotover cannot judge (LADDR, MAXAGE, SKIPME) count as matching.
 */
static sh_frame_t *
sh_redis_vet_kill(sh_rconn_t *rc, const sh_frame_t *f)
{
    char addr[64] = "", user[128] = "", val[128], msg[400];
    uint64_t id = 0;
    int has_id = 0, has_addr = 0, has_user = 0, i;
    uint32_t k;
    sh_frame_t *refused = NULL;

    if (f->argc == 3) {                  /* the old form: CLIENT KILL addr */
        if (!sh_arg_copy(f, 2, addr, sizeof(addr))) {
            return NULL;
        }
        has_addr = 1;
    } else if (f->argc < 4 || f->argc % 2 != 0) {
        return NULL;                     /* Redis says what is wrong */
    }
    for (i = 2; f->argc > 3 && i + 1 < f->argc; i += 2) {
        if (!sh_arg_copy(f, i + 1, val, sizeof(val))) {
            return NULL;
        }
        if (sh_arg_is(f, i, "ID")) {
            char *end;

            id = strtoull(val, &end, 10);
            if (val[0] < '0' || val[0] > '9' || *end != '\0') {
                return NULL;
            }
            has_id = 1;
        } else if (sh_arg_is(f, i, "ADDR")) {
            if (!sh_arg_copy(f, i + 1, addr, sizeof(addr))) {
                return NULL;             /* longer than any of ours */
            }
            has_addr = 1;
        } else if (sh_arg_is(f, i, "USER")) {
            snprintf(user, sizeof(user), "%s", val);
            has_user = 1;
        } else if (sh_arg_is(f, i, "TYPE")) {
            if (strcasecmp(val, "normal") != 0) {
                return NULL;             /* no shared connection is one */
            }
        } else if (!sh_arg_is(f, i, "LADDR") && !sh_arg_is(f, i, "SKIPME")
                   && !sh_arg_is(f, i, "MAXAGE"))
        {
            return NULL;                 /* Redis's error */
        }
    }
    pthread_mutex_lock(&sh_shared_mu);
    for (k = 0; k < sh_shared_n; k++) {
        const sh_shared_entry_t *e = &sh_shared_list[k];

        if (strcmp(e->remote, rc->up->remote) != 0
            || (has_id && e->id != id)
            || (has_addr && strcmp(e->addr, addr) != 0)
            || (has_user && strcmp(e->user, user) != 0))
        {
            continue;
        }
        snprintf(msg, sizeof(msg), "shotover: CLIENT KILL matches "
                 "connection id=%llu addr=%s, which shotover shares among "
                 "its clients: nothing was killed (name a client by ID or "
                 "ADDR, or kill TYPE pubsub)", (unsigned long long) e->id,
                 e->addr);
        refused = sh_resp_error_frame(msg);
        break;
    }
    pthread_mutex_unlock(&sh_shared_mu);
    return refused;
}

/*
 * sh_redis_vet: a refusal for request f (CLIENT KILL, PAUSE, UNPAUSE), or
 * NULL to send it.  CLIENT PAUSE holds every client of Redis, shared
 * connections included: their requests must wait, not time out, as they
 * would directly (sh_rconn_timer).
 */
static sh_frame_t *
sh_redis_vet(sh_rconn_t *rc, const sh_frame_t *f)
{
    uint64_t now = sh_upstream_now(rc->up), cur;
    char val[32], *end;
    long long ms;

    if (f->argc < 2) {
        return NULL;
    }
    if (sh_arg_is(f, 1, "KILL")) {
        return sh_redis_vet_kill(rc, f);
    }
    cur = __atomic_load_n(&sh_redis_paused_until, __ATOMIC_RELAXED);
    if (sh_arg_is(f, 1, "UNPAUSE")) {
        if (cur > now) {
            __atomic_store_n(&sh_redis_paused_until, now, __ATOMIC_RELAXED);
        }
    } else if (sh_arg_is(f, 1, "PAUSE") && f->argc >= 3
               && sh_arg_copy(f, 2, val, sizeof(val)))
    {
        ms = strtoll(val, &end, 10);
        if (*end == '\0' && ms > 0 && now + (uint64_t) ms > cur) {
            __atomic_store_n(&sh_redis_paused_until, now + (uint64_t) ms,
                             __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

/*
 * sh_ffi_redis_send: send the requests of req to the backend; their replies
 * land in the same slots of resp (which must have req->n slots).
 *   SH_OK: every slot is already filled (errors, QUIT, streaming);
 *   SH_AGAIN: some replies are owed; the client is woken when all are in.
 */
int
sh_ffi_redis_send(sh_redis_pool_t *p, sh_run_t *r, sh_batch_t *req,
    sh_batch_t *resp)
{
    static sh_frame_t ok = {
        .data = (const uint8_t *) "+OK\r\n", .len = 5,
        .refs = UINT32_MAX, .proto = SH_PROTO_REDIS, .rtype = '+',
    };
    sh_session_t *client = r->sess;
    sh_rconn_t *rc;
    uint32_t i, pin = 0, stream = 0, n = req->n;
    int plain;
    uint64_t timeout = p->conf.request_timeout_ms;
    sh_frame_t *err = NULL, *refused;

    /* replies that stream (SUBSCRIBE, MONITOR) can only go to a client
     * that reads RESP: from another protocol's chain they are refused */
    uint32_t can_stream = client->proto == SH_PROTO_REDIS ? SH_CMD_STREAM
                                                          : 0;

    for (i = 0; i < n; i++) {
        pin |= req->frames[i]->cmd & SH_CMD_PIN;
        stream |= req->frames[i]->cmd & can_stream;
        if (req->frames[i]->cmd & SH_CMD_QUIT) {
            n = i + 1;
            break;
        }
    }
    rc = sh_pool_dedicated(p, client, pin != 0);
    if (rc == NULL) {
        rc = p->shared[p->rr++ % p->conf.connections];
    } else if (rc->seq != r->seq) {
        rc->seq = r->seq;                /* a new batch: no reply yet */
        rc->last_resp = NULL;
        rc->last_idx = -1;
    }
    if (stream) {
        rc->streaming = 1;
    }
    if (rc->up->state == SH_UPSTREAM_DOWN
        && sh_upstream_connect(rc->up) == SH_UPSTREAM_DOWN)
    {
        char what[sizeof(rc->up->err) + 32];

        snprintf(what, sizeof(what), "unavailable: %s (retrying)",
                 rc->up->err);
        err = sh_rconn_error_frame(rc, what);
    }
    plain = err == NULL && !rc->streaming;
    for (i = 0; i < req->n; i++) {
        sh_frame_t *f = req->frames[i];

        if (f->cmd == 0 && plain && i < n) {
            /* most requests: no class, a connection that matches replies */
            sh_upstream_send(rc->up, f);
            resp->waiting++;
            sh_rconn_push_pending(rc, SH_PEND_CLIENT, resp, i, timeout);
        } else if (i >= n) {
            sh_batch_put(resp, i, sh_frame_noreply());
        } else if (f->cmd & SH_CMD_QUIT) {
            sh_batch_put(resp, i, &ok);
            if (client->proto == SH_PROTO_REDIS) {
                sh_session_close_when_done(client);
            }
        } else if (err != NULL) {
            sh_batch_put(resp, i, err);
        } else if ((f->cmd & SH_CMD_STREAM) && !can_stream) {
            sh_frame_t *e = sh_resp_error_frame("shotover: a streaming "
                "command (SUBSCRIBE, MONITOR) needs a Redis client: its "
                "replies cannot reach a client of another protocol");

            sh_batch_put(resp, i, e);
            sh_frame_unref(e);
        } else if ((f->cmd & SH_CMD_VET)
                   && (refused = sh_redis_vet(rc, f)) != NULL)
        {
            sh_batch_put(resp, i, refused);
            sh_frame_unref(refused);
        } else if (rc->streaming) {
            sh_upstream_send(rc->up, f);
            sh_batch_put(resp, i, sh_frame_noreply());
            if ((f->cmd & SH_CMD_RAW) && rc->raw == 0) {
                /* raw once the replies owed before it are in */
                sh_rconn_push_pending(rc, SH_PEND_RAW, NULL, 0, 0);
                rc->raw = 1;
            }
        } else {
            if ((f->cmd & SH_CMD_WAIT) && rc->owner != NULL) {
                /* WAIT counts the replicas that acknowledged this
                 * connection's last write, but the client's writes may
                 * have gone over shared connections before it was pinned:
                 * a write here first (a PUBLISH to nobody, propagated to
                 * replicas) makes WAIT cover everything written before */
                sh_upstream_send(rc->up, p->wait_mark);
                sh_rconn_push_pending(rc, SH_PEND_QUIET, NULL, 0, timeout);
            }
            sh_upstream_send(rc->up, f);
            resp->waiting++;
            sh_rconn_push_pending(rc, SH_PEND_CLIENT, resp, i,
                (f->cmd & SH_CMD_BLOCKING) ? 0 : timeout);
        }
    }
    sh_frame_unref(err);
    if (resp->waiting == 0) {
        return SH_OK;
    }
    sh_run_add_wait(r, resp);
    return SH_AGAIN;
}
