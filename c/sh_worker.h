/*
 * sh_worker.h -- workers, client connections and Redis backends: the
 * structures the event-loop files share.  Lua sees none of this except
 * through the functions in sh_ffi.h.
 */
#ifndef SH_WORKER_H
#define SH_WORKER_H

#include <lua.h>
#include <uv.h>

#include "sh_proto.h"

typedef struct sh_upstream_s sh_upstream_t;
typedef struct sh_listener_s sh_listener_t;

/* One listening socket of one source on one worker. */
struct sh_listener_s {
    uv_tcp_t tcp;            /* the SO_REUSEPORT socket */
    sh_worker_t *w;          /* owning worker */
    sh_source_conf_t conf;   /* copy of the source settings */
    char name[64];           /* source name, for logs */
    sh_metric_t *conns;      /* open connections gauge */
    sh_metric_t *lane_batches; /* batches started on lanes (CQL), or NULL */
    sh_listener_t *next;     /* worker's listener list */
};

/* A client connection. */
struct sh_conn_s {
    uv_tcp_t tcp;            /* the client socket */
    uv_shutdown_t shutdown;  /* used once, to close after the last reply */
    sh_worker_t *w;          /* owning worker */
    sh_listener_t *src;      /* the source it came in on */
    uint64_t id;             /* unique per process */
    sh_proto_conn_t pc;      /* its protocol: reader, framing (sh_proto.h) */
    lua_State *co;           /* coroutine running the chain */
    int co_ref;              /* registry ref keeping co alive */
    int session_ref;         /* registry ref of the session table (Lua's
                                chain.conn), LUA_NOREF until asked for */
    sh_batch_t *inq;         /* parsed requests not yet run */
    sh_batch_t *batch;       /* requests of the batch being run */
    sh_batch_t *resp;        /* responses the chain returned */
    sh_batch_t **waits;      /* response batches backends still fill */
    uint32_t nwaits;         /* entries in waits */
    uint32_t waits_cap;      /* allocated entries */
    sh_cycle_t cycle;        /* what Lua created during the batch, freed
                                after it */
    sh_upstream_t *dedicated; /* backend connections pinned to this client */
    struct sh_cql_up_s *cql_ups; /* its Cassandra backend connections */
    unsigned started:1;      /* coroutine has been started */
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

/* A pool of connections to one Redis server (one `redis` sink, per worker). */
struct sh_redis_pool_s {
    sh_worker_t *w;          /* owning worker */
    sh_redis_conf_t conf;    /* settings; strings below are our copies */
    char host[256];          /* backend host */
    char user[128];          /* AUTH user or "" */
    char pass[256];          /* AUTH password or "" */
    char name[64];           /* sink name */
    char remote[300];        /* "host:port" for messages */
    struct sockaddr_storage addr; /* resolved address */
    sh_metric_t *errors;     /* backend failures counter */
    sh_upstream_t **shared;  /* conf.connections pipelined connections */
    uint32_t rr;             /* round robin over shared */
    sh_redis_pool_t *next;   /* worker's pool list */
};

/* A worker: one thread, one loop, one Lua state. */
struct sh_worker_s {
    int id;                  /* 0-based worker number */
    uv_loop_t loop;          /* its event loop */
    uv_thread_t thread;      /* its thread */
    uv_async_t stop;         /* main thread asks it to stop */
    uv_prepare_t flush;      /* sends what upstreams gathered, pre-poll */
    lua_State *L;            /* its Lua state */
    int run_ref;             /* registry ref to the connection runner */
    sh_listener_t *listeners; /* listening sockets */
    sh_conn_t *conns;        /* open client connections */
    sh_redis_pool_t *pools;  /* backend pools */
    struct sh_cql_pool_s *cql_pools; /* Cassandra backend pools */
    sh_upstream_t *flushq;   /* upstreams with gathered writes */
    sh_conn_t *wakeq;        /* connections whose backends are done */
    const char *conf_path;   /* config file */
    uv_sem_t ready;          /* posted when init finished */
    int init_failed;         /* init result */
    int stopping;            /* stop requested */
};

/* The client connection c serves: a lane's client (see sh_conn.c), else
 * c itself.  Its socket, session and backend connections are the lane's. */
static inline sh_conn_t *
sh_conn_client(sh_conn_t *c)
{
    return c->lane && c->parent != NULL ? c->parent : c;
}

/* per-thread current worker, NULL outside workers (busted specs) */
extern __thread sh_worker_t *sh_worker_cur;

/* sh_conn.c */
void sh_conn_accept(sh_listener_t *l);
void sh_conn_wake(sh_conn_t *c);
void sh_conn_wake_all(sh_worker_t *w);
void sh_conn_send_frames(sh_conn_t *c, sh_frame_t **frames, uint32_t n);
/* The responses of c's batch (a runner yields them with DONE; see
 * sh_lua_resume): one reference is taken, NULL for none. */
void sh_conn_set_resp(sh_conn_t *c, sh_batch_t *resp);
ssize_t sh_try_write(uv_stream_t *s, const uv_buf_t *bufs, uint32_t n);
uint32_t sh_skip_written(uv_buf_t *bufs, uint32_t n, size_t done);
void sh_conn_close_all(sh_worker_t *w);
void sh_conn_abort(sh_conn_t *c, const char *why);
void sh_conn_close_after_writes(sh_conn_t *c);
sh_frame_t *sh_conn_error_frame(sh_conn_t *c, const sh_frame_t *req,
    uint32_t code, const char *msg);
void sh_conn_add_wait(sh_conn_t *c, sh_batch_t *b);
void sh_conn_wait_done(sh_conn_t *c, sh_batch_t *b);

/* sh_cql_pool.c */
void sh_cql_conn_closed(sh_conn_t *c);
void sh_cql_pools_close(sh_worker_t *w);

/* sh_redis_pool.c */
void sh_redis_flush_all(sh_worker_t *w);
void sh_redis_conn_closed(sh_conn_t *c);
void sh_redis_pools_close(sh_worker_t *w);

/* sh_lua.c */
int sh_lua_worker_init(sh_worker_t *w, char *err, size_t errlen);
int sh_lua_resume(sh_conn_t *c);
void sh_lua_conn_release(sh_conn_t *c);
int sh_lua_check(const char *conf_path, int *workers, char *admin_host,
    size_t hostlen, int *admin_port);
int sh_lua_script(int argc, char **argv);
int sh_lua_cli(const char *module, int argc, char **argv);

/* sh_worker.c */
struct addrinfo;
int sh_workers_run(const char *conf_path, int nworkers,
    const char *admin_host, int admin_port);
int sh_resolve(const char *host, int port, int passive,
    struct addrinfo **res, char *errbuf, size_t errlen);
int sh_resolve_addr(const char *host, int port,
    struct sockaddr_storage *addr, char *errbuf, size_t errlen);

#endif /* SH_WORKER_H */
