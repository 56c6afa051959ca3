/*
 * sh_upstream.h -- one connection to a backend, under every sink: name
 * resolution that never blocks the loop, connect with a timeout, reading
 * into the owner's reply reader, writes gathered per loop iteration and
 * sent in one writev, one timer the owner can use for request deadlines,
 * and reconnect backoff.  What the bytes mean (which reply answers which
 * request) is the owner's: a pool gives a table of callbacks.  TLS plugs
 * in here, under every sink at once: the handshake is part of connecting
 * (under its timeout), and the owner sees plaintext only.
 *
 * Lifecycle (libuv's rule: an error return means no callback): an upstream
 * is made DOWN; sh_upstream_connect starts resolving and connecting; on
 * success ops->connected runs and gathered frames go out; on any failure
 * (resolve, connect, connect timeout, read error or EOF, write error,
 * sh_upstream_disconnect) the socket is dropped, gathered frames are
 * discarded and ops->lost(up, why) runs exactly once for that connection.
 * sh_upstream_free may be called at any time, from any callback of its
 * own included; no callback runs after it.
 */
#ifndef SH_UPSTREAM_H
#define SH_UPSTREAM_H

#include "sh_buf.h"
#include "sh_worker.h"

typedef struct sh_upstream_s sh_upstream_t;
typedef struct sh_upsock_s sh_upsock_t;

enum {
    SH_UPSTREAM_DOWN = 0,    /* no socket; may connect after retry_at */
    SH_UPSTREAM_RESOLVING,   /* looking the host up */
    SH_UPSTREAM_CONNECTING,  /* connect under way */
    SH_UPSTREAM_READY        /* connected */
};

typedef struct sh_upstream_ops_s {
    /* a new connection starts: frames sent now go first (AUTH) */
    void (*start)(sh_upstream_t *up);
    /* connected */
    void (*connected)(sh_upstream_t *up);
    /* where the next read lands, and how much fits */
    void (*space)(sh_upstream_t *up, uint8_t **p, size_t *n);
    /* n bytes landed there */
    void (*read)(sh_upstream_t *up, size_t n);
    /* the connection is gone (why, for error replies); backoff says
     * whether the next connect waits */
    void (*lost)(sh_upstream_t *up, const char *why);
    /* the owner's timer (sh_upstream_timer) fired while READY */
    void (*timer)(sh_upstream_t *up);
    /* frames as they go on the wire: a frame replacing them (v5
     * segments), or NULL to send them as they are; may be NULL */
    sh_frame_t *(*wrap)(sh_upstream_t *up, sh_frame_t *const *frames,
        uint32_t n);
} sh_upstream_ops_t;

typedef struct sh_upstream_conf_s {
    const char *host;        /* numeric address or a name to resolve */
    int port;                /* TCP port */
    uint32_t connect_timeout_ms; /* resolve + connect */
    uint32_t backoff_min_ms; /* first reconnect delay (0: none) */
    uint32_t backoff_max_ms; /* reconnect delay cap */
    const char *name;        /* sink name, for logs */
    sh_tls_ctx_t *tls;       /* TLS (a reference is taken), or NULL */
} sh_upstream_conf_t;

struct sh_upstream_s {
    sh_worker_t *w;          /* owning worker */
    const sh_upstream_ops_t *ops; /* the owner's callbacks */
    void *data;              /* the owner's */
    int state;               /* SH_UPSTREAM_* */
    sh_upsock_t *sock;       /* socket while connecting or ready */
    uv_timer_t *timer;       /* connect timeout, then the owner's */
    uv_getaddrinfo_t *gai;   /* resolution under way, or NULL */
    sh_frame_t **out;        /* frames gathered for the next write */
    uint32_t nout;           /* their count */
    uint32_t out_cap;        /* allocated */
    int on_flushq;           /* on the worker's flush list */
    int read_paused;         /* reading stopped (sh_upstream_pause_reading) */
    sh_upstream_t *flush_next; /* next on that list */
    uint64_t retry_at;       /* earliest reconnect, loop ms */
    uint32_t backoff;        /* next reconnect delay */
    uint32_t backoff_min;    /* settings */
    uint32_t backoff_max;
    uint32_t connect_timeout;
    sh_tls_ctx_t *tls;       /* TLS settings, or NULL */
    sh_metric_t *tls_errors; /* failed handshakes, when TLS */
    int port;                /* backend port */
    char host[256];          /* backend host */
    char name[64];           /* sink name */
    char remote[300];        /* "host:port", for messages */
    char err[400];           /* last failure, for error replies */
};

sh_upstream_t *sh_upstream_new(sh_worker_t *w, const sh_upstream_conf_t *conf,
    const sh_upstream_ops_t *ops, void *data);
void sh_upstream_free(sh_upstream_t *up);

/* Connect when DOWN and the backoff allows (else nothing); returns the
 * state after (DOWN: it failed at once, or waits for retry_at). */
int sh_upstream_connect(sh_upstream_t *up);
/* Drop the connection: ops->lost(why) runs; backoff delays the next
 * connect. */
void sh_upstream_disconnect(sh_upstream_t *up, const char *why, int backoff);
/* Queue f (a reference is taken) for the next gathered write; frames
 * queued while connecting go out once connected.  Inline: it runs once per
 * request, and usually only appends. */
void sh__upstream_send_slow(sh_upstream_t *up, sh_frame_t *f);

static inline void
sh_upstream_send(sh_upstream_t *up, sh_frame_t *f)
{
    if (up->nout < up->out_cap && up->on_flushq) {
        up->out[up->nout++] = sh_frame_ref(f);
        return;
    }
    sh__upstream_send_slow(up, f);
}
/* Stop (1) or go on (0) reading while READY; a new connection reads. */
void sh_upstream_pause_reading(sh_upstream_t *up, int pause);
/* (Re)arm the owner's timer: ops->timer after ms, when READY; 0 stops. */
void sh_upstream_timer(sh_upstream_t *up, uint64_t ms);
int sh_upstream_timer_active(const sh_upstream_t *up);
uint64_t sh_upstream_now(const sh_upstream_t *up);

/* The pre-poll hook: write what every upstream of w gathered.  Returns 1
 * when it wrote anything. */
int sh_upstream_flush_all(sh_worker_t *w);

#endif /* SH_UPSTREAM_H */
