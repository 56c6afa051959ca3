/*
 * sh_conn.h -- client connections: the socket, its reader and writes,
 * backpressure, and the runs of its chain (see sh_conn.c).  Backends keep
 * per-client state by attaching it to the connection (sh_conn_attach),
 * which cleans it up when it closes: this file names no sink.
 */
#ifndef SH_CONN_H
#define SH_CONN_H

#include "sh_lua.h"
#include "sh_proto.h"
#include "sh_worker.h"

typedef struct sh_listener_s sh_listener_t;
typedef struct sh_conn_attach_s sh_conn_attach_t;

/* One listening socket of one source on one worker (sh_server.c). */
struct sh_listener_s {
    uv_tcp_t tcp;            /* the SO_REUSEPORT socket */
    sh_worker_t *w;          /* owning worker */
    sh_source_conf_t conf;   /* copy of the source settings */
    char name[64];           /* source name, for logs */
    sh_metric_t *conns;      /* open connections gauge */
    sh_metric_t *lane_batches; /* batches started on lanes (CQL), or NULL */
    sh_listener_t *next;     /* worker's listener list */
};

/* Something a backend keeps for one client (a pinned Redis connection,
 * the client's Cassandra session), found by key, cleaned up at close. */
struct sh_conn_attach_s {
    const void *key;         /* whose: typically the pool */
    void *data;              /* what */
    void (*cleanup)(void *data); /* run when the client closes */
    sh_conn_attach_t *next;  /* the client's list */
};

/* A client connection. */
struct sh_conn_s {
    uv_tcp_t tcp;            /* the client socket */
    uv_shutdown_t shutdown;  /* used once, to close after the last reply */
    sh_worker_t *w;          /* owning worker */
    sh_listener_t *src;      /* the source it came in on */
    uint64_t id;             /* unique per process */
    sh_proto_conn_t pc;      /* its protocol: reader, framing (sh_proto.h) */
    sh_lua_co_t co;          /* coroutine running the chain */
    sh_batch_t *inq;         /* parsed requests not yet run */
    sh_batch_t *batch;       /* requests of the batch being run */
    sh_batch_t *resp;        /* responses the chain returned */
    sh_batch_t **waits;      /* response batches backends still fill */
    uint32_t nwaits;         /* entries in waits */
    uint32_t waits_cap;      /* allocated entries */
    sh_cycle_t cycle;        /* what Lua created during the batch, freed
                                after it */
    sh_conn_attach_t *attached; /* what backends keep for this client,
                                   cleaned up when it closes */
    unsigned running:1;      /* a batch is in the chain */
    unsigned suspended:1;    /* the chain waits for backends */
    unsigned eof:1;          /* client sent EOF */
    unsigned read_stopped:1; /* reading paused for backpressure */
    unsigned closing:1;      /* uv_close or shutdown under way */
    unsigned closed:1;       /* sh_conn_close ran: unlinked, handle closing */
    unsigned close_after:1;  /* close once the replies are written */
    unsigned proto_err:1;    /* reader failed: send error, then close */
    /* shadows: connections without a socket that run requests Lua pushes
     * (an asynchronous tee), with their own coroutine and backends */
    unsigned shadow:1;       /* this is one */
    int handler;             /* shadow: which Lua handler runs it (> 0) */
    sh_batch_t *expq;        /* shadow: a frame Lua paired with each
                                request of inq (e.g. the main reply) */
    sh_batch_t *exp;         /* shadow: those of the running batch */
    sh_conn_t *parent;       /* shadow: the client it serves, until that
                                closes */
    sh_conn_t *shadows;      /* client: its shadows */
    sh_conn_t *shadow_next;  /* shadow: next of the parent's list */
    /* lanes: connections without a socket that run a CQL client's later
     * batches while its earlier ones wait (see sh_conn.c) */
    unsigned lane:1;         /* this is one; parent is its client */
    sh_conn_t *lanes;        /* client: its lanes */
    sh_conn_t *lane_next;    /* lane: next of the parent's list */
    uint32_t nlanes;         /* client: lanes it has */
    uint32_t lanes_busy;     /* client: lanes running a batch */
    sh_conn_t *prev, *next;  /* worker's connection list */
    sh_conn_t *wake_next;    /* worker's list of connections to resume */
    unsigned on_wake:1;      /* on that list */
    sh_batch_t *held;        /* requests of the earlier batches a MORE
                                yield held, in order (NULL when none) */
    uv_timer_t *timer;       /* Lua's one-shot timer (sh_ffi_conn_timer) */
    int wake_reason;         /* SH_WAKE_* the coroutine was resumed for */
    unsigned more:1;         /* yielded MORE: waits for a batch, timer, EOF */
    unsigned timer_fired:1;  /* the timer fired, not yet told to Lua */
    unsigned eof_told:1;     /* Lua was resumed for EOF */
    unsigned sleeping:1;     /* yielded SLEEP, not yet notified */
};

/* The client connection c serves: a lane's client (see sh_conn.c), else
 * c itself.  Its socket, session and backend connections are the lane's. */
static inline sh_conn_t *
sh_conn_client(sh_conn_t *c)
{
    return c->lane && c->parent != NULL ? c->parent : c;
}

/* the protocol the client speaks (SH_PROTO_*) */
static inline int
sh_conn_proto(const sh_conn_t *c)
{
    return c->pc.p->id;
}

void sh_conn_accept(sh_listener_t *l);
/* resume every connection whose backends are done (after backend reads,
 * and before each poll) */
int sh_conn_wake_all(sh_worker_t *w);
/* replies to the client, framed by its protocol */
void sh_conn_send_frames(sh_conn_t *c, sh_frame_t **frames, uint32_t n);
void sh_conn_close_all(sh_worker_t *w);
/* an error to the client (CQL OVERLOADED), then close */
void sh_conn_abort(sh_conn_t *c, const char *why);
/* close once the batches running now are done and their replies written
 * (QUIT; a lost backend session) */
void sh_conn_close_when_done(sh_conn_t *c);
sh_frame_t *sh_conn_error_frame(sh_conn_t *c, const sh_frame_t *req,
    uint32_t code, const char *msg);
/* c's chain waits for backends to fill b: c is resumed once every batch it
 * waits on is filled (sh_conn_wait_done, called when b->waiting is 0) */
void sh_conn_add_wait(sh_conn_t *c, sh_batch_t *b);
void sh_conn_wait_done(sh_conn_t *c, sh_batch_t *b);

/* What backends keep per client: attach (the client's, see
 * sh_conn_client), look up by key, or take back without its cleanup. */
void sh_conn_attach(sh_conn_t *c, const void *key, void *data,
    void (*cleanup)(void *data));
void *sh_conn_attached(sh_conn_t *c, const void *key);
void sh_conn_detach(sh_conn_t *c, const void *key);

#endif /* SH_CONN_H */
