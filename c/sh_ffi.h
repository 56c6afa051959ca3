/*
 * sh_ffi.h -- the only declaration of what Lua may see of the C core.
 *
 * This header is macro-free on purpose: the build turns it into the text
 * given to ffi.cdef (lines starting with '#' are dropped, nothing else is
 * changed), and the C core includes it, so the two can never drift.  A spec
 * (t/unit/010-ffi_spec.lua) checks every struct size and every function
 * against the built library.
 *
 * Conventions (lua-resty-core's): functions return an int status (SH_OK,
 * SH_ERROR, SH_AGAIN, SH_DECLINED), results come back through out-pointers,
 * errors through `const char **err` pointing at a static or long-lived string.
 * No function here ever calls back into Lua.
 */
#ifndef SH_FFI_H
#define SH_FFI_H

#include <stddef.h>
#include <stdint.h>

enum {
    SH_OK = 0,
    SH_ERROR = -1,
    SH_AGAIN = -2,
    SH_DECLINED = -5
};

enum {
    SH_PROTO_REDIS = 1,
    SH_PROTO_CQL = 2
};

/* frame flags */
enum {
    SH_FRAME_MODIFIED = 1,   /* re-encoded by a setter: data is our own copy */
    SH_FRAME_NOREPLY = 2,    /* a response slot that writes nothing */
    SH_FRAME_INLINE = 4,     /* request arrived as an inline command */
    SH_FRAME_RESP3 = 8,      /* reply uses a RESP3-only type */
    SH_FRAME_OWN_ARGS = 16,  /* args were allocated apart from the frame */
    SH_FRAME_POOLED = 32     /* from the per-thread pool (<= 4 arguments) */
};

/* Redis command classes, found by the codec from the command name */
enum {
    SH_CMD_PIN = 1,          /* needs a dedicated backend connection */
    SH_CMD_BLOCKING = 2,     /* may block: no request timeout */
    SH_CMD_STREAM = 4,       /* replies are not one per request (SUBSCRIBE) */
    SH_CMD_QUIT = 8,         /* QUIT: answered by the proxy */
    SH_CMD_RAW = 16,         /* SYNC, PSYNC: the backend's bytes stop
                                being RESP and are relayed raw */
    SH_CMD_WAIT = 32,        /* WAIT, WAITAOF: count acknowledgements of
                                the connection's writes */
    SH_CMD_VET = 64          /* CLIENT KILL, PAUSE, UNPAUSE: the sink looks
                                at the arguments before sending */
};

/* what a run's coroutine yields to C (the first value of the yield) */
enum {
    SH_YIELD_WAIT = 0,       /* waiting for backends: resume later */
    SH_YIELD_DONE = 1,       /* batch done: the responses follow the code */
    SH_YIELD_MORE = 2,       /* a transform holds requests (coalesce): resume
                                with the next batch, the timer or EOF; the
                                responses, when DONE, cover every batch held */
    SH_YIELD_SLEEP = 3       /* wait until another batch of the same client
                                (lanes) calls sh_ffi_run_notify */
};

/* CQL opcodes (native_protocol_v5.spec section 4) */
enum {
    SH_CQL_ERROR = 0x00, SH_CQL_STARTUP = 0x01, SH_CQL_READY = 0x02,
    SH_CQL_AUTHENTICATE = 0x03, SH_CQL_OPTIONS = 0x05,
    SH_CQL_SUPPORTED = 0x06, SH_CQL_QUERY = 0x07, SH_CQL_RESULT = 0x08,
    SH_CQL_PREPARE = 0x09, SH_CQL_EXECUTE = 0x0A, SH_CQL_REGISTER = 0x0B,
    SH_CQL_EVENT = 0x0C, SH_CQL_BATCH = 0x0D, SH_CQL_AUTH_CHALLENGE = 0x0E,
    SH_CQL_AUTH_RESPONSE = 0x0F, SH_CQL_AUTH_SUCCESS = 0x10
};

/* CQL envelope flags */
enum {
    SH_CQL_FLAG_COMPRESSED = 0x01,
    SH_CQL_FLAG_TRACING = 0x02,
    SH_CQL_FLAG_PAYLOAD = 0x04,
    SH_CQL_FLAG_WARNING = 0x08,
    SH_CQL_FLAG_BETA = 0x10
};

/* CQL error codes the core itself answers with (section 8) */
enum {
    SH_CQL_SERVER_ERROR = 0x0000,
    SH_CQL_PROTOCOL_ERROR = 0x000A,
    SH_CQL_OVERLOADED = 0x1001
};

/* why a run's coroutine was resumed after it yielded MORE
 * (sh_ffi_run_wake_reason); a first resume is always SH_WAKE_BATCH */
enum {
    SH_WAKE_BATCH = 0,       /* a new batch: sh_ffi_run_batch */
    SH_WAKE_TIMER = 1,       /* the timer of sh_ffi_run_timer fired */
    SH_WAKE_EOF = 2          /* the client will send nothing more */
};

/* metric kinds */
enum {
    SH_METRIC_COUNTER = 1,
    SH_METRIC_GAUGE = 2,
    SH_METRIC_HISTOGRAM = 3
};

/* log levels */
enum {
    SH_LOG_ERROR = 1,
    SH_LOG_WARN = 2,
    SH_LOG_INFO = 3,
    SH_LOG_DEBUG = 4
};

typedef struct sh_buf_s sh_buf_t;
typedef struct sh_run_s sh_run_t;
typedef struct sh_worker_s sh_worker_t;
typedef struct sh_redis_pool_s sh_redis_pool_t;
typedef struct sh_cql_pool_s sh_cql_pool_t;
typedef struct sh_metric_s sh_metric_t;
typedef struct sh_shdict_s sh_shdict_t;
typedef struct sh_tls_ctx_s sh_tls_ctx_t;

/* A piece of a frame, relative to the frame's first byte. */
typedef struct sh_slice_s {
    uint32_t off;            /* offset from frame->data */
    uint32_t len;            /* length in bytes */
} sh_slice_t;

/*
 * One protocol message: a slice of a reference-counted buffer plus what the
 * codec found in it.  For Redis requests `argv` holds each argument; for
 * replies `rtype` is the RESP type byte and `argc` the top-level element
 * count (-1 for a null).
 */
typedef struct sh_frame_s {
    const uint8_t *data;     /* first byte of the frame's encoding */
    uint32_t len;            /* bytes in the encoding */
    uint32_t refs;           /* references held on this frame */
    sh_buf_t *buf;           /* buffer `data` points into (a ref is held) */
    sh_slice_t *argv;        /* request arguments, argc of them */
    int32_t argc;            /* argument or element count, -1 for null */
    uint32_t cmd;            /* Redis: SH_CMD_* bits; CQL: the connection's
                                body compression (1 lz4, 2 snappy) */
    uint8_t proto;           /* SH_PROTO_* */
    uint8_t rtype;           /* RESP type byte ('*', '+', '-', ':', ...) */
    uint8_t flags;           /* SH_FRAME_* bits */
    uint8_t reserved;        /* padding, always 0 */
    uint16_t cmd_id;         /* Redis requests: the command's id
                                (sh_ffi_resp_command_name), 0 when Redis
                                has no such command; else 0 */
} sh_frame_t;

/* An ordered set of frames: the requests of one read, or their replies. */
typedef struct sh_batch_s {
    sh_frame_t **frames;     /* n slots; a slot may be NULL until filled */
    uint32_t n;              /* slots in use */
    uint32_t cap;            /* slots allocated */
    uint32_t refs;           /* references held on this batch */
    uint32_t waiting;        /* slots a backend still owes */
    sh_run_t *run;           /* run to wake when waiting reaches 0 */
} sh_batch_t;

/* Settings of one Redis backend pool (a `redis` sink, per worker). */
typedef struct sh_redis_conf_s {
    const char *host;        /* numeric IPv4/IPv6 address or name */
    int32_t port;            /* TCP port */
    uint32_t connections;    /* shared pipelined connections */
    uint32_t connect_timeout_ms; /* give up connecting after this */
    uint32_t request_timeout_ms; /* fail requests unanswered for this long */
    uint32_t backoff_min_ms; /* first reconnect delay */
    uint32_t backoff_max_ms; /* reconnect delay cap */
    const char *username;    /* AUTH user for every connection, or NULL */
    const char *password;    /* AUTH password, or NULL */
    const char *name;        /* sink name for logs and errors */
    uint32_t readonly;       /* 1: READONLY on every connection (reads
                                from a Redis Cluster replica) */
    sh_tls_ctx_t *tls;       /* TLS to the server (the pool takes a
                                reference), or NULL */
} sh_redis_conf_t;

/* Settings of one Cassandra backend (a `cassandra` sink, per worker). */
typedef struct sh_cql_conf_s {
    const char *host;        /* address or name of the node */
    int32_t port;            /* its native transport port */
    uint32_t connect_timeout_ms; /* give up connecting after this */
    uint32_t request_timeout_ms; /* fail requests unanswered for this long */
    const char *name;        /* sink name for logs and errors */
    uint32_t ring;           /* 1: one node of a ring (see sh_cql_pool.c) */
    sh_tls_ctx_t *tls;       /* TLS to the node (the pool takes a
                                reference), or NULL */
} sh_cql_conf_t;

/* Settings of one listening source. */
typedef struct sh_source_conf_s {
    const char *name;        /* source name */
    const char *host;        /* address to bind */
    int32_t port;            /* port to bind */
    int32_t proto;           /* SH_PROTO_* */
    int32_t index;           /* position in the config's sources list */
    uint32_t max_bulk_len;   /* largest bulk string accepted */
    uint32_t max_elements;   /* largest array accepted */
    uint32_t max_inline_len; /* longest inline command line */
    uint32_t max_write_queue; /* bytes queued to a client before we stop reading */
    uint32_t max_batch;      /* requests run through the chain at once */
    uint32_t lanes;          /* CQL: batches of one connection run at once
                                (1: one at a time; see sh_conn.c) */
    uint32_t share_listen;   /* 1: another process may serve the same
                                address (SO_REUSEPORT splits the clients) */
    uint32_t gen;            /* the configuration (a reload's number) its
                                new connections run */
    sh_tls_ctx_t *tls;       /* TLS for its clients (the listener takes a
                                reference), or NULL */
} sh_source_conf_t;

/*
 * TLS settings of a source (server 1) or a sink (server 0), made into a
 * context once per configuration (sh_tls.c): files are PEM; NULL leaves a
 * setting at its default.  verify: a sink checks the server's certificate
 * and name (1) or not (0); a source with a ca asks clients for a
 * certificate, optional (1) or required (2).  server_name: the name a
 * sink checks and sends (SNI), else the host it connects to.
 */
typedef struct sh_tls_conf_s {
    int32_t server;
    int32_t verify;
    const char *cert;
    const char *key;
    const char *ca;
    const char *min_version; /* "1.2" (default) or "1.3" */
    const char *ciphers;     /* TLS 1.2 cipher list (OpenSSL syntax) */
    const char *ciphersuites; /* TLS 1.3 suites */
    const char *server_name;
} sh_tls_conf_t;
/* A context, or SH_ERROR with the reason in err (naming the setting: "key:
 * cannot use ..."); the caller owns one reference. */
int sh_ffi_tls_ctx_new(const sh_tls_conf_t *conf, sh_tls_ctx_t **out,
    char *err, size_t cap);
void sh_ffi_tls_ctx_unref(sh_tls_ctx_t *ctx);

/* Status names and errors */
const char *sh_status_name(int status);

/* Logging */
void sh_ffi_log(int level, const char *msg, size_t len);

/* Where a message comes from, each field left out when NULL (or 0): JSON
 * logs carry them as keys of the line's object; text logs show the message
 * only (it names what matters in its words). */
typedef struct sh_log_fields_s {
    const char *source;      /* the source's name */
    const char *client;      /* the client's address, "ip:port" */
    const char *chain;       /* the chain's name ("redis/route1") */
    const char *element;     /* the chain element's name */
    uint64_t conn;           /* the client connection's id */
    int32_t element_index;   /* the element's place in its chain, from 1 */
} sh_log_fields_t;
void sh_ffi_log_fields(int level, const char *msg, size_t len,
    const sh_log_fields_t *f);
int sh_ffi_log_level(void);
void sh_ffi_log_set_level(int level);
int sh_ffi_log_json(void);       /* 1: --log-format json */

/* Frames */
int sh_ffi_frame_new(int proto, const uint8_t *data, size_t len,
    sh_frame_t **out, const char **err);
int sh_ffi_frame_new_command(const uint8_t **args, const size_t *lens,
    int nargs, sh_frame_t **out, const char **err);
int sh_ffi_frame_set_arg(sh_frame_t *f, int i, const uint8_t *data,
    size_t len, const char **err);
void sh_ffi_frame_unref(sh_frame_t *f);
int sh_ffi_frame_same(const sh_frame_t *a, const sh_frame_t *b);
int sh_ffi_frame_describe(const sh_frame_t *f, char *out, size_t cap);
int sh_ffi_frame_error(const sh_frame_t *req, uint32_t code, const char *msg,
    sh_frame_t **out);

/* Redis command ids (sh_frame_t.cmd_id): the id of a command name (any
 * case; 0 when Redis has no such command), and the upper-case name of an id
 * (NULL when there is none).  Ids are 1.. in the order of
 * lua/shotover/redis/commands.lua. */
int sh_ffi_resp_command_id(const uint8_t *name, size_t len);
const char *sh_ffi_resp_command_name(int id);
/* query_counter's pass over a batch: counts the Redis requests by command
 * id (those below ncounts), then adds each id's count to series[id], one
 * atomic add per id.  Ids whose series is NULL keep their count in
 * counts[] and are listed in missing[0 .. *nmissing - 1] for the caller to
 * register, add and zero.  counts, series and missing have ncounts slots.
 * Returns how many frames it left to the caller (not Redis).  Why: a Lua
 * loop over the requests and the ids costs a trace per loop, and a loop
 * that runs once per batch keeps aborting its caller's trace. */
int sh_ffi_batch_count_ids(const sh_batch_t *b, uint32_t *counts,
    sh_metric_t **series, uint32_t ncounts, uint16_t *missing,
    uint32_t *nmissing);
/* 1 when the len bytes at a and b are equal, else 0 (compares a zero-copy
 * view with a Lua string without making a string of the view) */
int sh_ffi_buf_eq(const uint8_t *a, const uint8_t *b, size_t len);

/* Batches */
int sh_ffi_batch_new(uint32_t n, sh_batch_t **out);
int sh_ffi_batch_set(sh_batch_t *b, uint32_t i, sh_frame_t *f);
int sh_ffi_batch_push(sh_batch_t *b, sh_frame_t *f);
void sh_ffi_batch_unref(sh_batch_t *b);

/* The run a coroutine is (chain.c): the batch it runs, how many backends
 * it still waits for, its source (index in the config), and its client's
 * address ("127.0.0.1", "::1"; SH_ERROR once the client is gone). */
sh_batch_t *sh_ffi_run_batch(sh_run_t *r);
int sh_ffi_run_outstanding(sh_run_t *r);
int sh_ffi_run_source(sh_run_t *r);
int sh_ffi_run_peer(sh_run_t *r, char *out, size_t cap);
/* The subject (RFC 2253) of the client certificate of run r's connection
 * (mTLS): SH_OK, SH_DECLINED when it sent none or is not on TLS, SH_AGAIN
 * when out is too small (then truncated). */
int sh_ffi_run_tls_subject(sh_run_t *r, char *out, size_t cap);
/* The fields of a log message about run r: its source, its client's
 * connection id and address ("ip:port", written to buf); 0 when r has no
 * client left (a shadow that outlived it: source only). */
int sh_ffi_run_log_fields(sh_run_t *r, sh_log_fields_t *f, char *buf,
    size_t cap);

/* Shadows: runs serving client run r's connection, each with its own
 * coroutine (running Lua handler number `handler`, > 0), session and
 * backend connections.  Lua pushes requests into one, each paired with a
 * frame of its choice (or NULL); the shadow runs them after the current
 * batch, writes its replies nowhere, and outlives its client until its
 * queue is done.  An asynchronous tee is one.  sh_ffi_run_shadow gives the
 * client's live shadow for `handler` (SH_OK), or a new one (SH_DECLINED: a
 * shadow whose backend failed ends, and the next is new); ask each time,
 * never keep the pointer. */
int sh_ffi_run_handler(sh_run_t *r);
int sh_ffi_run_shadow(sh_run_t *r, int handler, sh_run_t **out);
int sh_ffi_run_push(sh_run_t *s, sh_frame_t *req, sh_frame_t *paired);
uint32_t sh_ffi_run_queued(sh_run_t *s);
sh_batch_t *sh_ffi_run_paired(sh_run_t *s);

/* Lanes (several batches of one CQL client at once, see sh_conn.c): a
 * batch that must wait for another batch of its client yields SLEEP and is
 * resumed once one of them calls sh_ffi_run_notify (it checks its
 * condition again: a resume may come for other reasons). */
void sh_ffi_run_notify(sh_run_t *r);

/* The C path: run r's chain is only a sink, with pool p (an
 * sh_redis_pool_t for proto SH_PROTO_REDIS, an sh_cql_pool_t for
 * SH_PROTO_CQL).  Called by Lua while a batch of r runs; the later batches
 * it can take (sh_run.c) go to p from C, with no coroutine resumed, and
 * count in the chain's requests and latency series, the sink's latency
 * series and batches. */
void sh_ffi_run_direct(sh_run_t *r, void *p, int proto,
    sh_metric_t *requests, sh_metric_t *latency, sh_metric_t *el_latency,
    sh_metric_t *batches);

/* Waiting for something other than a backend (sh_watch.c): run r waits
 * for batch b (one Lua made) until it was settled n times, each
 * sh_ffi_batch_settle counting one down; the last wakes r (chain:wait()
 * returns once nothing else is owed either).  SH_AGAIN: r must wait (n >
 * 0); SH_OK: nothing to wait for.  b is kept until its last settlement,
 * even when the client goes first (the settlement then wakes nothing). */
int sh_ffi_run_await(sh_run_t *r, sh_batch_t *b, uint32_t n);
void sh_ffi_batch_settle(sh_batch_t *b);

/* Watches (sh_watch.c): worker w's loop polls a descriptor and, when it is
 * readable, calls shotover.worker.on_watch(w, token) (shotover.watch).
 * watch_pipe makes a non-blocking pipe, polls its read end (drained before
 * Lua is called) and gives its write end in *wfd for a library's threads
 * to write a byte to; watch_fd polls fd as it is (the caller reads it).
 * watch_close stops and closes the watch of token (a pipe's two ends
 * too); at worker stop, after shotover.worker.stop, every watch closes. */
int sh_ffi_watch_pipe(sh_worker_t *w, int token, int *wfd, const char **err);
int sh_ffi_watch_fd(sh_worker_t *w, int fd, int token, const char **err);
/* Call the watch's handler every ms milliseconds too (a deadline its
 * owner keeps); SH_DECLINED when token has no watch. */
int sh_ffi_watch_tick(sh_worker_t *w, int token, uint32_t ms);
void sh_ffi_watch_close(sh_worker_t *w, int token);

/* Holding requests across batches (the MORE yield, see coalesce): why the
 * coroutine was resumed (SH_WAKE_*), and the run's one-shot timer:
 * (re)armed to fire in ms milliseconds, or stopped.  A timer that fires
 * while the coroutine is not waiting in MORE is told at its next MORE. */
int sh_ffi_run_wake_reason(sh_run_t *r);
int sh_ffi_run_timer(sh_run_t *r, uint32_t ms);
int sh_ffi_run_timer_stop(sh_run_t *r);

/*
 * Workers and sources.  A (re)load of the config calls sources_begin, then
 * source_listen for each source, then sources_prune.  source_listen keeps
 * a listener already on the same address and protocol (a reload refuses
 * no connection there): it takes the source's new settings and from now
 * on gives new connections conf->gen; else it opens one.  sources_prune
 * closes the listeners this round did not keep; their connections stay,
 * on the configuration they started with.
 */
void sh_ffi_sources_begin(sh_worker_t *w);
int sh_ffi_source_listen(sh_worker_t *w, const sh_source_conf_t *conf,
    const char **err);
void sh_ffi_sources_prune(sh_worker_t *w);
/* The configuration a run runs (its connection's), and how many client
 * connections of worker w run configuration gen; shadows alive in w (they
 * may run any configuration's transforms). */
uint32_t sh_ffi_run_gen(sh_run_t *r);
uint32_t sh_ffi_worker_gen_conns(sh_worker_t *w, uint32_t gen);
int sh_ffi_worker_shadows(sh_worker_t *w);
/* The longest busy poll of w's loop, in microseconds (0: never; sh_worker.c). */
void sh_ffi_worker_busy_poll(sh_worker_t *w, uint32_t us);
/* Batch w's socket reads and writes per loop iteration with io_uring (on),
 * or not; 1 when batching is as asked, 0 when io_uring could not be set up
 * (warned once; each read and write is a call of its own; sh_uring.h). */
int sh_ffi_worker_uring(sh_worker_t *w, int on);

/* In-process workers for `shotover repl`: start nworkers running config
 * conf_path (each calls shotover.worker.init), without blocking; stop them
 * all and wait for their threads.  start returns SH_ERROR (the reason is
 * logged) when a worker failed to start; nothing is left running then. */
int sh_ffi_workers_start(const char *conf_path, int nworkers,
    const char **err);
void sh_ffi_workers_stop(void);

/* Redis backends */
int sh_ffi_redis_pool_new(sh_worker_t *w, const sh_redis_conf_t *conf,
    sh_redis_pool_t **out, const char **err);
int sh_ffi_redis_send(sh_redis_pool_t *p, sh_run_t *r, sh_batch_t *req,
    sh_batch_t *resp);
/* close a pool while the worker runs: what it owes fails, clients pinned
 * to it lose their connection as if the backend had dropped it */
void sh_ffi_redis_pool_free(sh_redis_pool_t *p);
/* The Redis Cluster hash slot of a key (CRC16/XMODEM mod 16384 of the key,
 * or of its {hash tag} when it has a non-empty one). */
uint32_t sh_ffi_redis_key_slot(const uint8_t *key, size_t len);

/* CQL bodies: the body of f, decompressed when its v4 body is compressed
 * (f->cmd holds the connection's algorithm: 1 lz4, 2 snappy).  SH_OK: the
 * bytes live as long as f's batch; SH_DECLINED (outside a worker): they
 * live as long as *holder, which the caller releases */
int sh_ffi_cql_body(const sh_frame_t *f, sh_frame_t **holder,
    const uint8_t **body, size_t *len, const char **err);

/* Replace the body of CQL frame f (in place, so every holder sees it),
 * recompressing it when the frame's v4 body was compressed; marks f
 * modified */
int sh_ffi_cql_set_body(sh_frame_t *f, const uint8_t *body, size_t len,
    const char **err);

/* Cassandra backends */
int sh_ffi_cql_pool_new(sh_worker_t *w, const sh_cql_conf_t *conf,
    sh_cql_pool_t **out, const char **err);
int sh_ffi_cql_send(sh_cql_pool_t *p, sh_run_t *r, sh_batch_t *req,
    sh_batch_t *resp);
/* close a pool while the worker runs: what it owes fails (OVERLOADED) and
 * its clients close once those errors are written */
void sh_ffi_cql_pool_free(sh_cql_pool_t *p);
/* Whether the running client has a live connection to the node: 1 yes,
 * 0 none yet or lost (a ring node's lost connection is dropped here, so
 * the next send opens a new one, whose session must be replayed) */
int sh_ffi_cql_session_live(sh_cql_pool_t *p, sh_run_t *r);
/* The Murmur3Partitioner token of a partition key's bytes, as Cassandra
 * computes it (its signed-byte tail included) */
int64_t sh_ffi_cql_token(const uint8_t *key, size_t len);
/* The index in ring (n tokens, ascending) of the first token >= key's
 * token, 0 past the last: the range that owns the key */
uint32_t sh_ffi_cql_ring_find(const int64_t *ring, uint32_t n,
    const uint8_t *key, size_t len);

/* Metrics, shared by every worker: one series per (name, labels); labels
 * are Prometheus label text, e.g. `source="redis"` (or "").  Registering
 * the same series twice returns the same one. */
int sh_ffi_metric_register(int kind, const char *name, const char *help,
    const char *labels, sh_metric_t **out, const char **err);
void sh_ffi_metric_add(sh_metric_t *m, int64_t delta);
void sh_ffi_metric_observe(sh_metric_t *m, uint64_t ns, uint64_t count);
/* The monotonic clock (uv_hrtime, nanoseconds) as a double: a Lua number,
 * so keeping a time stamp in Lua boxes nothing (exact to the nanosecond for
 * 104 days of uptime, to 32 ns after ten years). */
double sh_ffi_now_ns(void);
/* A series' id for the classic Lua C functions of module shotover.core
 * (since, add), 0 when the registry has no ids left (65536 series). */
uint32_t sh_ffi_metric_id(const sh_metric_t *m);
/* A counter's or gauge's current value (for specs and the repl) */
int64_t sh_ffi_metric_value(const sh_metric_t *m);

/* Switches: named settings the admin endpoint flips at run time (PUT
 * /switches/NAME), e.g. which side's reply a tee returns.  choices is
 * "a|b|...", *out points at the index of the current choice; the same name
 * registered again (every worker does) gives the same switch. */
int sh_ffi_switch_register(const char *name, const char *choices,
    int initial, int32_t **out, const char **err);

/* Shared dicts (c/sh_shdict.c): named key/value stores every worker
 * shares, found by name (the same dict for the same name from any worker),
 * bounded by a number of entries (the least recently used go first).
 * Keys 1..65535 bytes, values up to 1 MiB; incr keeps decimal text.
 * get: SH_OK copied *vlen bytes, SH_DECLINED absent, SH_AGAIN buf too
 * small (*vlen needed).  delete: SH_OK removed, SH_DECLINED absent.
 * gcra: one atomic rate-limit step of `cost` units (see sh_shdict.c):
 * SH_OK allowed, SH_DECLINED limited (*retry_after_ns until it would pass,
 * UINT64_MAX never), SH_ERROR bad key/interval or a non-GCRA value;
 * now_ns 0 reads the monotonic clock (sh_ffi_now_ns's). */
int sh_ffi_shdict_open(const char *name, uint32_t capacity,
    sh_shdict_t **out, const char **err);
int sh_ffi_shdict_get(sh_shdict_t *d, const uint8_t *key, size_t klen,
    uint8_t *buf, size_t cap, size_t *vlen);
int sh_ffi_shdict_set(sh_shdict_t *d, const uint8_t *key, size_t klen,
    const uint8_t *val, size_t vlen, uint64_t ttl_ns, const char **err);
int sh_ffi_shdict_incr(sh_shdict_t *d, const uint8_t *key, size_t klen,
    int64_t delta, int64_t init, int64_t *out, const char **err);
int sh_ffi_shdict_delete(sh_shdict_t *d, const uint8_t *key, size_t klen);
void sh_ffi_shdict_flush(sh_shdict_t *d);
void sh_ffi_shdict_stats(sh_shdict_t *d, uint64_t *count,
    uint64_t *capacity, uint64_t *evictions);
int sh_ffi_shdict_gcra(sh_shdict_t *d, const uint8_t *key, size_t klen,
    uint64_t now_ns, uint64_t interval_ns, uint64_t tolerance_ns,
    uint64_t cost, uint64_t *retry_after_ns);

/* Layout check for the FFI spec: C's sizeof for a type named here */
size_t sh_ffi_sizeof(const char *type);

/* HTTPS fetches (sh_fetch.c), for Lua that calls a cloud API (the aws_kms
 * key manager): one request Lua made, sent over a new TLS connection that
 * verifies the server's certificate (ca_file, or the system's store when
 * NULL) and its name (host), the whole response read back (until the
 * server closes or Content-Length is in).  new copies conf (SH_ERROR with
 * *err for a bad conf).  run does it on this thread, blocking: SH_OK or
 * SH_ERROR.  queue does it on libuv's thread pool of r's worker and then,
 * on the loop thread, settles b once (Lua awaits b: sh_ffi_run_await);
 * SH_ERROR (nothing queued, b never settled) with *err.  result: SH_OK
 * with the response bytes (valid until free), SH_ERROR with *err saying
 * why (valid until free, "ECONNREFUSED: ..." style), SH_AGAIN while it
 * runs.  free while queued frees it once it is done. */
typedef struct sh_fetch_s sh_fetch_t;
typedef struct sh_fetch_conf_s {
    const char *host;        /* connect to, and verify the certificate for:
                                a DNS name or an IP address */
    int32_t port;            /* TCP port */
    const char *ca_file;     /* PEM CA bundle to trust, NULL: the system's */
    const uint8_t *request;  /* the whole HTTP/1.1 request */
    size_t request_len;      /* its length */
    uint32_t timeout_ms;     /* connect, and each read or write (0: 10 s) */
    uint32_t max_response;   /* response byte limit (0: 1 MiB) */
} sh_fetch_conf_t;
int sh_ffi_fetch_new(const sh_fetch_conf_t *conf, sh_fetch_t **out,
    const char **err);
int sh_ffi_fetch_run(sh_fetch_t *f);
int sh_ffi_fetch_queue(sh_fetch_t *f, sh_run_t *r, sh_batch_t *b,
    const char **err);
int sh_ffi_fetch_result(sh_fetch_t *f, const uint8_t **resp, size_t *len,
    const char **err);
void sh_ffi_fetch_free(sh_fetch_t *f);

#endif /* SH_FFI_H */
