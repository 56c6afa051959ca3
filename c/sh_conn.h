/*
 * sh_conn.h -- client connections (the socket, its reader and writes,
 * backpressure) and the runs of their chains (see sh_conn.c).  Backends
 * keep per-client state by attaching it to a session (sh_session_attach),
 * which cleans it up when it ends: the client layer names no sink.
 */
#ifndef SH_CONN_H
#define SH_CONN_H

#include "sh_lua.h"
#include "sh_proto.h"
#include "sh_tls.h"
#include "sh_worker.h"

typedef struct sh_listener_s sh_listener_t;
typedef struct sh_conn_s sh_conn_t;
typedef struct sh_session_s sh_session_t;
typedef struct sh_attach_s sh_attach_t;

/* Why accept failed, for shotover_accept_errors_total's reason label. */
enum {
    SH_ACCEPT_EMFILE = 0,    /* the process is at RLIMIT_NOFILE */
    SH_ACCEPT_ENFILE,        /* the system is at its file limit */
    SH_ACCEPT_OTHER,         /* anything else (ENOBUFS, ENOMEM, ...) */
    SH_ACCEPT_REASONS
};

/*
 * One listening socket of one source on one worker (sh_server.c).  Shotover
 * accepts itself, on a poll handle, rather than through uv_listen: at the
 * fd limit libuv closes new connections without telling its caller.
 */
struct sh_listener_s {
    uv_poll_t poll;          /* readiness of the listening socket */
    uv_timer_t pause;        /* accepting again after an error's pause */
    int fd;                  /* the SO_REUSEPORT socket */
    int open_handles;        /* of poll and pause; freed when both closed */
    sh_metric_t *accept_errors[SH_ACCEPT_REASONS]; /* connections refused */
    sh_worker_t *w;          /* owning worker */
    sh_source_conf_t conf;   /* copy of the source settings */
    char name[64];           /* source name, for logs */
    sh_metric_t *conns;      /* open connections gauge */
    sh_metric_t *lane_batches; /* batches started on lanes (CQL), or NULL */
    sh_metric_t *oom_closes; /* connections closed for want of memory */
    sh_metric_t *tls_errors; /* TLS handshakes that failed, or NULL */
    char host[256];          /* the address it listens on, as configured */
    int port;                /* and its port */
    uint32_t gen;            /* the configuration its new connections run
                                (a reload makes a new one) */
    uint32_t round;          /* the (re)load that made or kept it */
    uint32_t refs;           /* its connections and their shadows: a
                                listener a reload removed is freed once
                                the last of them is gone */
    sh_listener_t *next;     /* worker's listener list */
};

/* Free l once its handles are closed and nothing refers to it. */
void sh_listener_release(sh_listener_t *l);

/* Something a backend keeps for one session (a pinned Redis connection,
 * the client's Cassandra session), found by key, cleaned up at its end. */
struct sh_attach_s {
    const void *key;         /* whose: typically the pool */
    void *data;              /* what */
    void (*cleanup)(void *data); /* run when the session ends */
    void (*drained)(void *data); /* once, when the client's replies no
                                    longer back up (sh_session_on_drain) */
    sh_attach_t *next;       /* the session's list */
};

/*
 * A run: one coroutine running batches of a chain, with what a batch
 * needs while it runs -- its requests and responses, the backends it waits
 * for, what Lua made for it (the cycle), the batches a MORE yield holds
 * and its timer.  A client connection owns its runs: its main run and, for
 * CQL, lanes (runs of later batches while earlier ones wait); a tee's
 * asynchronous copies run on shadow runs, whose replies go nowhere and
 * which outlive their client until their queue is done.  Lua holds a run
 * (chain.c); nothing about a run pretends to be a socket.
 */
enum {
    SH_RUN_MAIN = 0,         /* the connection's own run */
    SH_RUN_LANE,             /* a later batch of the connection (CQL) */
    SH_RUN_SHADOW            /* requests Lua pushed; replies go nowhere */
};

/*
 * A session: what backends serve -- the client connection's, shared by its
 * main run and lanes (one session on a Cassandra node, one pinned Redis
 * connection), or a shadow run's own.  Backends attach their per-client
 * state to it and reach the client (or nobody) through it.
 */
typedef struct sh_held_push_s {
    sh_frame_t *f;           /* the frame (a reference held) */
    const sh_batch_t *resp;  /* the backend's response batch it follows */
    uint32_t idx;            /* the slot of the reply it follows */
} sh_held_push_t;

struct sh_session_s {
    sh_conn_t *conn;         /* the client (its socket), NULL for a shadow */
    sh_run_t *shadow;        /* the shadow run it belongs to, or NULL */
    int proto;               /* SH_PROTO_* of the source */
    sh_attach_t *attached; /* backends' state, cleaned up at the end */
    sh_held_push_t *pushes;  /* frames sent unasked after a reply of the
                                running batch: written right after it */
    uint32_t npushes;        /* entries in pushes */
    uint32_t pushes_cap;     /* allocated */
};

struct sh_run_s {
    sh_worker_t *w;          /* owning worker */
    sh_listener_t *src;      /* the source: chain, limits, metrics */
    sh_conn_t *conn;         /* the client whose batches it runs and gets
                                its replies; NULL for a shadow that
                                outlived its client */
    sh_session_t *sess;      /* what its backends serve */
    int kind;                /* SH_RUN_* */
    uint64_t id;             /* for logs */
    uint64_t seq;            /* batches started (sh_session_push) */
    uint32_t gen;            /* the configuration it runs (its client's) */
    int32_t index;           /* its source's place in that configuration */
    sh_lua_co_t co;          /* the coroutine running the chain */
    sh_batch_t *batch;       /* requests of the batch being run */
    sh_batch_t *resp;        /* responses the chain returned */
    sh_batch_t **waits;      /* response batches backends still fill */
    uint32_t nwaits;         /* entries in waits */
    uint32_t waits_cap;      /* allocated entries */
    sh_cycle_t cycle;        /* what Lua made during the batch */
    sh_batch_t *held;        /* requests of earlier batches a MORE yield
                                held, in order (NULL when none) */
    uv_timer_t *timer;       /* Lua's one-shot timer (sh_ffi_run_timer) */
    int wake_reason;         /* SH_WAKE_* it was resumed for */
    unsigned running:1;      /* a batch is in the chain */
    unsigned suspended:1;    /* the chain waits (WAIT or SLEEP) */
    unsigned sleeping:1;     /* yielded SLEEP, not yet notified */
    unsigned more:1;         /* yielded MORE: waits for a batch, timer, EOF */
    unsigned timer_fired:1;  /* the timer fired, not yet told to Lua */
    unsigned eof_told:1;     /* Lua was resumed for EOF */
    unsigned on_wake:1;      /* on the worker's wake list */
    unsigned in_lua:1;       /* its coroutine runs now: not freed under it */
    unsigned closed:1;       /* closed: freed once out of Lua */
    unsigned direct_waiting:1; /* a batch of the C path waits for replies */
    /* the C path for a chain that is only a sink (sh_run.c): set by Lua
     * while a batch of the run runs; later batches skip Lua */
    void *direct;                /* the sink's pool, or NULL */
    int direct_proto;            /* SH_PROTO_REDIS or SH_PROTO_CQL: its kind */
    sh_metric_t *direct_requests, *direct_latency; /* the chain's series */
    sh_metric_t *direct_el_latency; /* the sink's own duration series */
    sh_metric_t *direct_batches; /* batches run on the C path */
    double direct_t0;            /* when the waiting batch started */
    /* shadows */
    int handler;             /* which Lua handler runs it (> 0) */
    sh_batch_t *inq;         /* requests Lua pushed, not yet run */
    sh_batch_t *expq;        /* a frame paired with each of them */
    sh_batch_t *exp;         /* those of the running batch */
    unsigned eof:1;          /* takes no more pushes; ends when done */
    sh_session_t own;        /* its own session */
    sh_run_t *next;          /* the client's lanes, or shadows */
    sh_run_t *wake_next;     /* worker's wake list */
    sh_run_t *all_prev, *all_next; /* shadows: worker's list */
};

/* A client connection: its socket, reader, queue and runs. */
struct sh_conn_s {
    uv_tcp_t tcp;            /* the client socket */
    uv_shutdown_t shutdown;  /* used once, to close after the last reply */
    sh_worker_t *w;          /* owning worker */
    sh_listener_t *src;      /* the source it came in on */
    uint64_t id;             /* unique per process */
    uint32_t gen;            /* the configuration it runs until it leaves,
                                whatever reloads come */
    int32_t index;           /* its source's place in that configuration */
    sh_proto_conn_t pc;      /* its protocol: reader, framing (sh_proto.h) */
    sh_tls_t *tls;           /* TLS (its source's), or NULL */
    sh_session_t sess;       /* what its backends serve */
    sh_batch_t *inq;         /* parsed requests not yet run */
    sh_run_t main;           /* its own run */
    sh_run_t *lanes;         /* lanes (CQL), idle or running */
    uint32_t nlanes;         /* lanes it has */
    uint32_t lanes_busy;     /* lanes running a batch */
    sh_run_t *shadows;       /* its shadows (asynchronous tee) */
    unsigned eof:1;          /* client sent EOF */
    unsigned read_stopped:1; /* reading paused for backpressure */
    unsigned closing:1;      /* uv_close or shutdown under way */
    unsigned closed:1;       /* sh_conn_close ran: unlinked, handle closing */
    unsigned close_after:1;  /* close once the replies are written */
    unsigned proto_err:1;    /* reader failed: send error, then close */
    unsigned draining:1;     /* the worker drains: read nothing more */
    unsigned on_outq:1;      /* on its worker's outq */
    char peer_ip[48];        /* the client's address, "" when unknown (a
                                socketpair), from accept: once the client
                                has gone, getpeername no longer says */
    char peer[64];           /* the same as "ip:port" ("[ip6]:port"), or
                                "?:0" */
    sh_frame_t **out;        /* replies gathered in this loop iteration, */
    uint32_t nout, out_cap;  /* ... written by sh_conn_flush_all */
    size_t out_bytes;        /* ... and their bytes */
    sh_conn_t *out_next;     /* worker's outq */
    sh_conn_t *prev, *next;  /* worker's connection list */
};

/* A connection on fd, a socket l accepted (non-blocking); on failure the
 * socket is closed. */
void sh_conn_accept(sh_listener_t *l, int fd, const struct sockaddr *sa);
void sh_conn_close_all(sh_worker_t *w);
/* the worker drains: every connection reads nothing more and closes once
 * what it has read is answered and written */
void sh_conn_drain_all(sh_worker_t *w);
/* replies to the client, framed by its protocol: written at once for a
 * connection running one batch at a time, else gathered, and written once
 * per loop iteration by sh_conn_flush_all (the worker's pre-poll hook,
 * which returns 1 when it wrote anything); sh_conn_gather_frames always
 * gathers */
void sh_conn_send_frames(sh_conn_t *c, sh_frame_t **frames, uint32_t n);
void sh_conn_gather_frames(sh_conn_t *c, sh_frame_t **frames, uint32_t n);
int sh_conn_flush_all(sh_worker_t *w);
sh_frame_t *sh_conn_error_frame(sh_conn_t *c, const sh_frame_t *req,
    uint32_t code, const char *msg);

/* resume every run whose backends are done, and run shadows' pushes (the
 * worker's pre-poll hook); 1 when it resumed any */
int sh_run_wake_all(sh_worker_t *w);
/* r's chain waits for backends to fill b: r is resumed once every batch it
 * waits on is filled (sh_run_wait_done, called when b->waiting is 0) */
void sh_run_add_wait(sh_run_t *r, sh_batch_t *b);
void sh_run_wait_done(sh_run_t *r, sh_batch_t *b);
/* A backend put a reply in slot idx of b: a CQL batch on the C path sends
 * it to the client at once (sh_run.c); call before counting it in */
void sh_run_reply_early(sh_batch_t *b, uint32_t idx);

/* What backends keep per session (in sh_run.c):
 * attach, look up by key, or take back without its cleanup. */
void sh_session_attach(sh_session_t *s, const void *key, void *data,
    void (*cleanup)(void *data));
void *sh_session_attached(sh_session_t *s, const void *key);
void sh_session_detach(sh_session_t *s, const void *key);
/* frames the backend sends unasked (pub/sub, events) to the client; a
 * shadow's go nowhere.  Returns 1 when the client's replies back up (over
 * max_write_queue): the backend should stop reading until told
 * (sh_session_on_drain). */
int sh_session_send(sh_session_t *s, sh_frame_t **frames, uint32_t n);
/*
 * A frame the backend sent unasked (a RESP3 push) right after the reply in
 * slot idx of resp, read while batch seq (sh_run_t.seq) of the client runs:
 * written to the client right after that reply, when resp is the batch the
 * chain answers with, else after the batch's replies -- never before a
 * reply the backend sent before it.  idx < 0: no reply of the running
 * batch came before it, so it goes now.  Returns as sh_session_send.
 */
int sh_session_push(sh_session_t *s, sh_frame_t *f, uint64_t seq,
    const sh_batch_t *resp, int64_t idx);
/* call fn(data) of the attachment under key once the client's replies no
 * longer back up */
void sh_session_on_drain(sh_session_t *s, const void *key,
    void (*fn)(void *data));
/* the session is lost (its backend went): an error to the client (CQL
 * OVERLOADED), then close; a shadow drops its queue and ends */
void sh_session_abort(sh_session_t *s, const char *why);
/* end once the batches running now are done and their replies written
 * (QUIT; a lost backend session).  Safe while Lua runs. */
void sh_session_close_when_done(sh_session_t *s);

/* --- internal to the client layer (sh_conn.c and sh_run.c) ------------ */

void sh__run_init(sh_run_t *r, sh_conn_t *c, int kind);
void sh__session_drained(sh_session_t *s);
void sh__session_drop_pushes(sh_session_t *s);
void sh__run_close(sh_run_t *r);
void sh__run_release_cycle(sh_run_t *r);
int sh__run_start(sh_run_t *r);
int sh__run_step(sh_run_t *r);
void sh__run_more(sh_run_t *r);
void sh__run_orphan_shadows(sh_conn_t *c);
void sh__run_close_shadows(sh_worker_t *w);

void sh__conn_dispatch(sh_conn_t *c);
void sh__conn_take_batch(sh_conn_t *c, sh_run_t *r);
int sh__conn_write_blocked(sh_conn_t *c);
void sh__conn_resume_reading(sh_conn_t *c);
void sh__conn_read_on(sh_conn_t *c);
void sh__conn_more_event(sh_conn_t *c);
void sh__conn_send_error(sh_conn_t *c, const sh_frame_t *req, uint32_t code,
    const char *msg);
void sh__conn_close_after_writes(sh_conn_t *c);
void sh__conn_close_when_done(sh_conn_t *c);
void sh__conn_abort(sh_conn_t *c, const char *why);
void sh__conn_unlink_lane(sh_conn_t *c, sh_run_t *l);

#endif /* SH_CONN_H */
