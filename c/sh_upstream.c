/*
 * sh_upstream.c -- one connection to a backend (see sh_upstream.h).
 *
 * Handles live apart from the upstream (the socket, the timer, a name
 * lookup), each pointing back at it until it is detached, so an upstream
 * can be freed at any moment -- a cluster's topology changes, a pool goes
 * -- and its handles finish closing on their own.
 */
#include <netdb.h>
#include <stdio.h>

#include "sh_metrics.h"
#include "sh_tls.h"
#include "sh_upstream.h"

struct sh_upsock_s {
    uv_tcp_t tcp;            /* the socket; freed in its close callback */
    uv_connect_t connect;    /* the connect request */
    sh_upstream_t *up;       /* owner, NULL once detached */
    sh_tls_t *tls;           /* TLS on it, or NULL */
};

typedef struct sh_upwrite_s {
    uv_write_t req;          /* libuv request */
    sh_frame_t **frames;     /* frames held until written */
    uint32_t n;              /* their count */
} sh_upwrite_t;

static void sh_upstream_connect_addr(sh_upstream_t *up,
    const struct sockaddr *sa);

static void
sh_upstream_handle_free_cb(uv_handle_t *h)
{
    sh_free(h);
}

static void
sh_upsock_free_cb(uv_handle_t *h)
{
    sh_upsock_t *s = (sh_upsock_t *) h;

    sh_tls_free(s->tls);
    sh_free(s);
}

uint64_t
sh_upstream_now(const sh_upstream_t *up)
{
    return uv_now(&up->w->loop);
}

sh_upstream_t *
sh_upstream_new(sh_worker_t *w, const sh_upstream_conf_t *conf,
    const sh_upstream_ops_t *ops, void *data)
{
    sh_upstream_t *up = sh_calloc(1, sizeof(*up));

    up->w = w;
    up->ops = ops;
    up->data = data;
    up->port = conf->port;
    snprintf(up->host, sizeof(up->host), "%s", conf->host);
    snprintf(up->name, sizeof(up->name), "%s", conf->name ? conf->name : "");
    snprintf(up->remote, sizeof(up->remote), "%s:%d", conf->host,
             conf->port);
    up->connect_timeout = conf->connect_timeout_ms;
    up->backoff_min = conf->backoff_min_ms;
    up->backoff_max = sh_max(conf->backoff_max_ms, conf->backoff_min_ms);
    up->backoff = up->backoff_min;
    up->timer = sh_alloc(sizeof(uv_timer_t));
    uv_timer_init(&w->loop, up->timer);
    up->timer->data = up;
    if (conf->tls != NULL) {
        char labels[160];

        up->tls = conf->tls;
        sh_tls_ctx_ref(up->tls);
        sh_metric_label(labels, sizeof(labels), 0, "sink", up->name);
        up->tls_errors = sh_metric_get(SH_METRIC_COUNTER,
            "shotover_tls_handshake_errors_total", "TLS handshakes that "
            "failed (wrong certificate, plain text on a TLS port, ...)",
            labels);
    }
    return up;
}

static void
sh_upstream_flushq_remove(sh_upstream_t *up)
{
    sh_upstream_t **pp;

    if (!up->on_flushq) {
        return;
    }
    for (pp = &up->w->flushq; *pp != NULL; pp = &(*pp)->flush_next) {
        if (*pp == up) {
            *pp = up->flush_next;
            break;
        }
    }
    up->on_flushq = 0;
}

/* Close the socket and forget the lookup, without telling the owner. */
static void
sh_upstream_drop(sh_upstream_t *up)
{
    uint32_t i;

    if (up->sock != NULL) {
        up->sock->up = NULL;
        uv_close((uv_handle_t *) &up->sock->tcp, sh_upsock_free_cb);
        up->sock = NULL;
    }
    if (up->gai != NULL) {
        up->gai->data = NULL;            /* its callback frees it */
        uv_cancel((uv_req_t *) up->gai);
        up->gai = NULL;
    }
    uv_timer_stop(up->timer);
    for (i = 0; i < up->nout; i++) {
        sh_frame_unref(up->out[i]);
    }
    up->nout = 0;
    sh_upstream_flushq_remove(up);
    up->state = SH_UPSTREAM_DOWN;
}

void
sh_upstream_free(sh_upstream_t *up)
{
    if (up == NULL) {
        return;
    }
    sh_upstream_drop(up);
    uv_close((uv_handle_t *) up->timer, sh_upstream_handle_free_cb);
    sh_tls_ctx_unref(up->tls);
    sh_free(up->out);
    sh_free(up);
}

void
sh_upstream_disconnect(sh_upstream_t *up, const char *why, int backoff)
{
    sh_upstream_drop(up);
    snprintf(up->err, sizeof(up->err), "%s", why);
    if (backoff) {
        up->retry_at = sh_upstream_now(up) + up->backoff;
        up->backoff = sh_min(up->backoff * 2, up->backoff_max);
    } else {
        up->retry_at = 0;
    }
    up->ops->lost(up, why);
}

static void
sh_upstream_timer_cb(uv_timer_t *t)
{
    sh_upstream_t *up = t->data;
    char why[96];

    if (up->state == SH_UPSTREAM_READY) {
        up->ops->timer(up);
        return;
    }
    if (up->state == SH_UPSTREAM_RESOLVING
        || up->state == SH_UPSTREAM_CONNECTING)
    {
        snprintf(why, sizeof(why), "connect timed out after %ums",
                 up->connect_timeout);
        sh_log_warn("sink \"%s\": %s %s", up->name, up->remote, why);
        sh_upstream_disconnect(up, why, 1);
    }
}

void
sh_upstream_timer(sh_upstream_t *up, uint64_t ms)
{
    if (up->state != SH_UPSTREAM_READY) {
        return;                          /* the connect timeout runs */
    }
    if (ms == 0) {
        uv_timer_stop(up->timer);
    } else {
        uv_timer_start(up->timer, sh_upstream_timer_cb, ms, 0);
    }
}

int
sh_upstream_timer_active(const sh_upstream_t *up)
{
    return uv_is_active((const uv_handle_t *) up->timer);
}

static void
sh_upstream_queue(sh_upstream_t *up)
{
    if (!up->on_flushq && up->nout > 0 && up->state == SH_UPSTREAM_READY) {
        up->on_flushq = 1;
        up->flush_next = up->w->flushq;
        up->w->flushq = up;
    }
}

void
sh__upstream_send_slow(sh_upstream_t *up, sh_frame_t *f)
{
    if (up->nout == up->out_cap) {
        up->out_cap = up->out_cap ? up->out_cap * 2 : 64;
        up->out = sh_realloc(up->out, up->out_cap * sizeof(sh_frame_t *));
    }
    up->out[up->nout++] = sh_frame_ref(f);
    sh_upstream_queue(up);
}

static void
sh_upstream_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sh_upsock_t *s = (sh_upsock_t *) h;
    uint8_t *p = NULL;
    size_t n = 0;

    sh_unused(suggested);
    if (s->tls != NULL) {
        sh_tls_read_space(buf);          /* ciphertext, decrypted after */
        return;
    }
    if (s->up != NULL) {
        s->up->ops->space(s->up, &p, &n);
    }
    buf->base = (char *) p;
    buf->len = n;
}

static void sh_upstream_ready(sh_upstream_t *up);
static void sh_upstream_tls_read(sh_upstream_t *up, sh_upsock_t *s,
    const char *data, size_t len);

static void
sh_upstream_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    sh_upsock_t *s = (sh_upsock_t *) st;
    sh_upstream_t *up = s->up;

    if (up == NULL || nread == 0) {
        return;
    }
    sh_worker_activity(up->w);
    if (nread > 0) {
        sh_io_read(SH_SIDE_BACKEND, (size_t) nread);
    }
    if (s->tls != NULL && nread > 0) {
        sh_upstream_tls_read(up, s, buf->base, (size_t) nread);
        return;
    }
    if (nread < 0) {
        /* UV_ENOBUFS: no memory for a reply this big (its reader failed);
         * the reply cannot be passed on, nor the stream resynchronised */
        sh_upstream_disconnect(up, nread == UV_EOF ? "closed the connection"
                                   : nread == UV_ENOBUFS
                                   ? "out of memory for a reply"
                                   : uv_strerror((int) nread), 1);
        return;
    }
    up->ops->read(up, (size_t) nread);
}

/* Stop or go on reading the connection (a relay whose client backs up);
 * a new connection reads. */
void
sh_upstream_pause_reading(sh_upstream_t *up, int pause)
{
    if (up->state != SH_UPSTREAM_READY || up->read_paused == pause) {
        return;
    }
    up->read_paused = pause;
    if (pause) {
        uv_read_stop((uv_stream_t *) &up->sock->tcp);
    } else {
        uv_read_start((uv_stream_t *) &up->sock->tcp, sh_upstream_alloc_cb,
                      sh_upstream_read_cb);
    }
}

static void
sh_upstream_write_cb(uv_write_t *req, int status)
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

static void
sh_upstream_copy_write_cb(uv_write_t *req, int status)
{
    /* a failed write shows up as a read error on the same socket */
    sh_unused(status);
    sh_copy_write_done(req);
}

/* Encrypt frames and write them (and whatever TLS has pending); on
 * failure up->err says why and the result is negative. */
static ssize_t
sh_upstream_tls_write(sh_upstream_t *up, sh_frame_t *const *frames,
    uint32_t n)
{
    sh_upsock_t *s = up->sock;
    int rc;

    if (frames != NULL && sh_tls_write_frames(s->tls, frames, n) != SH_OK) {
        snprintf(up->err, sizeof(up->err), "TLS: %s", sh_tls_error(s->tls));
        return SH_ERROR;
    }
    rc = sh_tls_flush(s->tls, (uv_stream_t *) &s->tcp,
                      sh_upstream_copy_write_cb, NULL, SH_SIDE_BACKEND);
    if (rc < 0) {
        snprintf(up->err, sizeof(up->err), "%s", uv_strerror(rc));
        return SH_ERROR;
    }
    return 0;
}

/* Drop the connection for the reason a write left in up->err. */
static void
sh_upstream_fail(sh_upstream_t *up)
{
    char why[sizeof(up->err)];

    snprintf(why, sizeof(why), "%s", up->err);
    sh_upstream_disconnect(up, why, 1);
}

/* A handshake failed: said, counted, and the connection dropped with the
 * reason its requests' errors give. */
static void
sh_upstream_tls_failed(sh_upstream_t *up, sh_upsock_t *s)
{
    char why[sizeof(up->err)];

    sh_ffi_metric_add(up->tls_errors, 1);
    snprintf(why, sizeof(why), "TLS handshake with %s failed: %s",
             up->remote, sh_tls_error(s->tls));
    sh_log_warn("sink \"%s\": %s", up->name, why);
    sh_upstream_disconnect(up, why, 1);
}

/*
 * Ciphertext from the server: the handshake (READY when it is done), then
 * the replies, all of what this read decrypts (nothing is left inside
 * OpenSSL while reading is paused).  The owner may drop the connection or
 * free the upstream in any callback: checked after each.
 */
static void
sh_upstream_tls_read(sh_upstream_t *up, sh_upsock_t *s, const char *data,
    size_t len)
{
    ssize_t r;
    uint8_t *p;
    size_t n;
    int rc;

    sh_tls_feed(s->tls, data, len);
    if (!sh_tls_handshake_done(s->tls)) {
        rc = sh_tls_handshake(s->tls);
        if (sh_upstream_tls_write(up, NULL, 0) < 0) {
            sh_upstream_fail(up);
            return;
        }
        if (rc == SH_TLS_FAILED) {
            sh_upstream_tls_failed(up, s);
            return;
        }
        if (rc == SH_TLS_MORE) {
            return;
        }
        sh_log_debug("sink \"%s\": %s with %s", up->name,
                     sh_tls_version(s->tls), up->remote);
        sh_upstream_ready(up);
        if (s->up != up) {
            return;
        }
    }
    while (sh_tls_has_input(s->tls)) {
        up->ops->space(up, &p, &n);
        if (n == 0) {
            sh_upstream_disconnect(up, "out of memory for a reply", 1);
            return;
        }
        r = sh_tls_read(s->tls, p, n);
        if (r == 0) {
            break;
        }
        if (r < 0) {
            char why[300];

            snprintf(why, sizeof(why), "%s", r == SH_TLS_EOF
                     ? "closed the connection" : sh_tls_error(s->tls));
            sh_upstream_disconnect(up, why, 1);
            return;
        }
        up->ops->read(up, (size_t) r);
        if (s->up != up) {
            return;                      /* dropped or freed meanwhile */
        }
    }
    if (sh_upstream_tls_write(up, NULL, 0) < 0) {   /* key updates */
        sh_upstream_fail(up);
    }
}

/*
 * Send everything gathered in one writev: at once when the socket takes it
 * all (sh_try_write), else the rest is queued with the frames held until
 * written.  A v5 CQL connection wraps the frames in segments first.
 */
static int
sh_upstream_flush(sh_upstream_t *up)
{
    uv_buf_t sbufs[64];
    uv_buf_t *bufs = sbufs;
    sh_frame_t **frames = up->out, *seg = NULL;
    sh_upwrite_t *wr;
    uint32_t i, n = up->nout, first;
    size_t total = 0;
    ssize_t done;
    int rc;

    if (n == 0 || up->state != SH_UPSTREAM_READY) {
        return 0;
    }
    up->w->sent = 1;                     /* a reply is owed: sh_worker.c */
    if (up->ops->wrap != NULL
        && (seg = up->ops->wrap(up, up->out, up->nout)) != NULL)
    {
        frames = &seg;
        n = 1;
    }
    if (up->sock->tls != NULL) {
        done = sh_upstream_tls_write(up, frames, n);
        sh_frame_unref(seg);
        for (i = 0; i < up->nout; i++) {
            sh_frame_unref(up->out[i]);
        }
        up->nout = 0;
        if (done < 0) {
            sh_upstream_fail(up);
        }
        return 1;
    }
    if (n > 64) {
        bufs = sh_alloc(n * sizeof(uv_buf_t));
    }
    for (i = 0; i < n; i++) {
        bufs[i].base = (char *) frames[i]->data;
        bufs[i].len = frames[i]->len;
        total += frames[i]->len;
    }
    if (sh_write_flat_fits(n, total)) {
        /* copied: the frames can go whatever the socket takes */
        rc = sh_write_flat((uv_stream_t *) &up->sock->tcp, bufs, n, total,
                           SH_SIDE_BACKEND, sh_upstream_copy_write_cb, NULL);
        done = rc < 0 ? rc : (ssize_t) total;
    } else {
        done = sh_try_write((uv_stream_t *) &up->sock->tcp, bufs, n,
                            SH_SIDE_BACKEND);
    }
    if (done >= 0 && (size_t) done < total) {
        /* the rest waits in libuv's queue, the frames held until written */
        first = sh_skip_written(bufs, n, (size_t) done);
        wr = sh_alloc(sizeof(*wr));
        if (seg != NULL) {
            wr->frames = sh_alloc(sizeof(sh_frame_t *));
            wr->frames[0] = sh_frame_ref(seg);
            wr->n = 1;
        } else {
            wr->frames = up->out;        /* the array goes with them */
            wr->n = up->nout;
            up->out = NULL;
            up->out_cap = 0;
            up->nout = 0;
        }
        rc = uv_write(&wr->req, (uv_stream_t *) &up->sock->tcp, bufs + first,
                      n - first, sh_upstream_write_cb);
        if (rc != 0) {
            sh_upstream_write_cb(&wr->req, rc);
            done = rc;
        } else {
            sh_io_write(SH_SIDE_BACKEND, total - (size_t) done);
        }
    }
    if (bufs != sbufs) {
        sh_free(bufs);
    }
    sh_frame_unref(seg);
    for (i = 0; i < up->nout; i++) {
        sh_frame_unref(up->out[i]);
    }
    up->nout = 0;
    if (done < 0) {
        sh_upstream_disconnect(up, uv_strerror((int) done), 1);
    }
    return 1;
}

int
sh_upstream_flush_all(sh_worker_t *w)
{
    sh_upstream_t *up;
    int any = 0;

    while ((up = w->flushq) != NULL) {
        w->flushq = up->flush_next;
        up->on_flushq = 0;
        any |= sh_upstream_flush(up);
    }
    return any;
}

static void
sh_upstream_connect_cb(uv_connect_t *req, int status)
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
        sh_log_warn("sink \"%s\": %s %s", up->name, up->remote, why);
        sh_upstream_disconnect(up, why, 1);
        return;
    }
    uv_tcp_nodelay(&s->tcp, 1);
    uv_read_start((uv_stream_t *) &s->tcp, sh_upstream_alloc_cb,
                  sh_upstream_read_cb);
    if (up->tls != NULL) {
        /* the handshake is part of connecting, under its timeout */
        s->tls = sh_tls_new_client(up->tls, up->host);
        if (s->tls == NULL) {
            sh_upstream_disconnect(up, "no memory for TLS", 1);
            return;
        }
        if (sh_tls_handshake(s->tls) == SH_TLS_FAILED) {
            sh_upstream_tls_failed(up, s);
        } else if (sh_upstream_tls_write(up, NULL, 0) < 0) {
            sh_upstream_fail(up);
        }
        return;
    }
    sh_upstream_ready(up);
}

/* Connected (and the TLS handshake done): what was gathered goes out. */
static void
sh_upstream_ready(sh_upstream_t *up)
{
    uv_timer_stop(up->timer);
    up->state = SH_UPSTREAM_READY;
    up->read_paused = 0;
    up->backoff = up->backoff_min;
    sh_log_debug("sink \"%s\": connected to %s", up->name, up->remote);
    sh_upstream_queue(up);
    up->ops->connected(up);
}

static void
sh_upstream_connect_addr(sh_upstream_t *up, const struct sockaddr *sa)
{
    sh_upsock_t *s = sh_calloc(1, sizeof(*s));
    char why[128];
    int rc;

    uv_tcp_init(&up->w->loop, &s->tcp);
    s->up = up;
    s->connect.data = s;
    up->sock = s;
    up->state = SH_UPSTREAM_CONNECTING;
    rc = uv_tcp_connect(&s->connect, &s->tcp, sa, sh_upstream_connect_cb);
    if (rc != 0) {
        snprintf(why, sizeof(why), "connect failed: %s", uv_strerror(rc));
        sh_upstream_disconnect(up, why, 1);
    }
}

static void
sh_upstream_resolved_cb(uv_getaddrinfo_t *req, int status,
    struct addrinfo *res)
{
    sh_upstream_t *up = req->data;
    char why[300];

    sh_free(req);
    if (up == NULL) {                    /* dropped while resolving */
        uv_freeaddrinfo(res);
        return;
    }
    up->gai = NULL;
    if (status < 0 || res == NULL) {
        snprintf(why, sizeof(why), "cannot resolve \"%s\": %s", up->host,
                 uv_strerror(status));
        sh_log_warn("sink \"%s\": %s", up->name, why);
        uv_freeaddrinfo(res);
        sh_upstream_disconnect(up, why, 1);
        return;
    }
    sh_upstream_connect_addr(up, res->ai_addr);
    uv_freeaddrinfo(res);
}

int
sh_upstream_connect(sh_upstream_t *up)
{
    struct sockaddr_storage sa;
    struct addrinfo hints;
    char port[16];
    int rc;

    if (up->state != SH_UPSTREAM_DOWN
        || sh_upstream_now(up) < up->retry_at)
    {
        return up->state;
    }
    up->err[0] = '\0';
    up->ops->start(up);
    uv_timer_start(up->timer, sh_upstream_timer_cb, up->connect_timeout, 0);
    /* a numeric address connects at once; a name is looked up on libuv's
     * thread pool, every time (it may have moved since) */
    if (uv_ip4_addr(up->host, up->port, (struct sockaddr_in *) &sa) == 0
        || uv_ip6_addr(up->host, up->port, (struct sockaddr_in6 *) &sa) == 0)
    {
        sh_upstream_connect_addr(up, (const struct sockaddr *) &sa);
        return up->state;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%d", up->port);
    up->gai = sh_alloc(sizeof(uv_getaddrinfo_t));
    up->gai->data = up;
    up->state = SH_UPSTREAM_RESOLVING;
    rc = uv_getaddrinfo(&up->w->loop, up->gai, sh_upstream_resolved_cb,
                        up->host, port, &hints);
    if (rc != 0) {
        char why[300];

        sh_free(up->gai);
        up->gai = NULL;
        snprintf(why, sizeof(why), "cannot resolve \"%s\": %s", up->host,
                 uv_strerror(rc));
        sh_upstream_disconnect(up, why, 1);
    }
    return up->state;
}
