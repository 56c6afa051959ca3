/*
 * sh_uring.c -- the client socket reads and writes of one loop
 * iteration, in one system call each way (sh_uring.h says why).
 *
 * Measured on the benchmark VM (2 vCPUs, loopback, 9-byte replies to 50
 * sockets): write(2) 3.0-4.7 us per reply, one submission of three sends
 * 1.9-2.1 us per reply, of fifty 1.4-1.8 us.  A send or a receive with
 * MSG_DONTWAIT never waits inside io_uring: on a full (empty) socket it
 * completes at once with -EAGAIN, as write(2) (read(2)) returns it, so
 * every completion of a submission is there when the submission returns,
 * and a batch's buffer, or a reader's, is free again.
 */
#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "sh_buf.h"
#include "sh_uring.h"

#define SH_URING_OPS 128                 /* sockets written in a submission */
#define SH_URING_READS 128               /* ... and read */
#define SH_URING_ENTRIES (SH_URING_OPS + SH_URING_READS)
#define SH_URING_ARENA (256 * 1024)      /* bytes batched at most */

typedef struct {
    uv_stream_t *s;          /* the stream written to */
    int fd;                  /* ... and its socket */
    int side;                /* for shotover_socket_*_total */
    uint32_t off, len;       /* its bytes in the arena */
    uv_write_cb cb;          /* a short write: queued with these */
    void *data;
    sh_uring_done_fn done;   /* ... and reported to this */
} sh_uring_op_t;

typedef struct {
    uv_stream_t *s;          /* the stream read from */
    int fd;                  /* ... and its socket */
    int side;                /* for shotover_socket_*_total */
    sh_uring_space_fn space; /* where its bytes go */
    sh_uring_got_fn got;     /* ... and who is told */
    int32_t res;             /* what the receive returned */
} sh_uring_rd_t;

struct sh_uring_s {
    struct io_uring ring;
    uint32_t nrd;            /* receives asked for */
    sh_uring_rd_t rd[SH_URING_READS];
    uint32_t n;              /* writes batched */
    size_t used;             /* arena bytes they hold */
    int flushing;            /* completions being handled: write at once */
    uint8_t *arena;
    sh_uring_op_t ops[SH_URING_OPS];
    int32_t res[SH_URING_OPS]; /* each send's result */
};

int
sh_uring_enable(sh_worker_t *w, int on, char *errbuf, size_t errlen)
{
    unsigned flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN
                     | IORING_SETUP_SINGLE_ISSUER
                     | IORING_SETUP_DEFER_TASKRUN;
    struct sh_uring_s *u = w->uring;
    int rc;

    if (!on) {
        if (u != NULL) {
            sh_uring_flush(w);
            io_uring_queue_exit(&u->ring);
            sh_free(u->arena);
            sh_free(u);
            w->uring = NULL;
        }
        return SH_OK;
    }
    if (u != NULL) {
        return SH_OK;
    }
    u = sh_calloc(1, sizeof(*u));
    rc = io_uring_queue_init(SH_URING_ENTRIES, &u->ring, flags);
    if (rc == -EINVAL) {
        /* a kernel before 6.1 lacks some of these flags */
        rc = io_uring_queue_init(SH_URING_ENTRIES, &u->ring, 0);
    }
    if (rc < 0) {
        snprintf(errbuf, errlen, "io_uring_setup: %s", strerror(-rc));
        sh_free(u);
        return SH_ERROR;
    }
    u->arena = sh_alloc(SH_URING_ARENA);
    w->uring = u;
    return SH_OK;
}

int
sh_uring_write(sh_worker_t *w, uv_stream_t *s, const uv_buf_t *bufs,
    uint32_t n, size_t total, int side, uv_write_cb cb, void *data,
    sh_uring_done_fn done)
{
    struct sh_uring_s *u = w->uring;
    sh_uring_op_t *op;
    uint8_t *p;
    uint32_t i;
    uv_os_fd_t fd;

    if (u == NULL || u->flushing || total == 0 || total >= SH_URING_COPY_MAX
        || uv_stream_get_write_queue_size(s) > 0)
    {
        return 0;
    }
    op = u->n > 0 ? &u->ops[u->n - 1] : NULL;
    if (op == NULL || op->s != s || u->used + total > SH_URING_ARENA) {
        /* s batched before others: what follows must follow it */
        sh_uring_before(w, s);
        if (w->uring != NULL && (u->n == SH_URING_OPS
                                 || u->used + total > SH_URING_ARENA))
        {
            sh_uring_flush(w);
        }
        if (uv_is_closing((uv_handle_t *) s)) {
            return 1;                    /* the socket closed meanwhile */
        }
        if (w->uring == NULL || uv_stream_get_write_queue_size(s) > 0) {
            return 0;          /* io_uring failed, or s's short write queued */
        }
        if (uv_fileno((uv_handle_t *) s, &fd) != 0) {
            return 0;
        }
        op = &u->ops[u->n++];
        op->s = s;
        op->fd = fd;
        op->side = side;
        op->off = (uint32_t) u->used;
        op->len = 0;
        op->cb = cb;
        op->data = data;
        op->done = done;
    }
    p = u->arena + u->used;
    for (i = 0; i < n; i++) {
        memcpy(p, bufs[i].base, bufs[i].len);
        p += bufs[i].len;
    }
    op->len += (uint32_t) total;
    u->used += total;
    return 1;
}

void
sh_uring_before(sh_worker_t *w, uv_stream_t *s)
{
    struct sh_uring_s *u = w->uring;
    uint32_t i;

    if (u == NULL || u->flushing) {
        return;
    }
    for (i = 0; i < u->n; i++) {
        if (u->ops[i].s == s) {
            sh_uring_flush(w);
            return;
        }
    }
}

#define SH_URING_UNKNOWN INT32_MIN       /* an op the ring did not report */
#define SH_URING_SKIP (INT32_MIN + 1)    /* a receive not asked for */
#define SH_URING_NOSPACE (INT32_MIN + 2) /* ... as its reader had no room */

/* Prepare rd[0..m) and submit them with the batch's n sends, collecting
 * each op's result (a send's into u->res: 0 for each when nothing could
 * be submitted; a receive's into its res: SH_URING_SKIP then); 0, or -1
 * when io_uring failed (the ring is not to be used again). */
static int
sh_uring_submit(struct sh_uring_s *u, uint32_t n, sh_uring_rd_t *rd,
    uint32_t m)
{
    struct io_uring_sqe *sqe;
    struct io_uring_cqe *cqe;
    uint32_t i, want = n, got = 0;
    unsigned head, k;
    uint8_t *p;
    size_t len;
    int rc;

    for (i = 0; i < n; i++) {
        sqe = io_uring_get_sqe(&u->ring);
        io_uring_prep_send(sqe, u->ops[i].fd, u->arena + u->ops[i].off,
                           u->ops[i].len, MSG_DONTWAIT | MSG_NOSIGNAL);
        io_uring_sqe_set_data64(sqe, i);
        u->res[i] = SH_URING_UNKNOWN;
    }
    for (i = 0; i < m; i++) {
        rd[i].res = SH_URING_SKIP;
        if (uv_is_closing((uv_handle_t *) rd[i].s)
            || !rd[i].space(rd[i].s, &p, &len))
        {
            continue;                    /* closed or paused meanwhile */
        }
        if (len == 0) {
            rd[i].res = SH_URING_NOSPACE;
            continue;
        }
        sqe = io_uring_get_sqe(&u->ring);
        io_uring_prep_recv(sqe, rd[i].fd, p,
                           len > INT32_MAX ? INT32_MAX : len, MSG_DONTWAIT);
        io_uring_sqe_set_data64(sqe, SH_URING_OPS + i);
        rd[i].res = SH_URING_UNKNOWN;
        want++;
    }
    if (want == 0) {
        return 0;
    }
    do {
        rc = io_uring_submit_and_get_events(&u->ring);
    } while (rc == -EINTR);
    if (rc < 0) {
        sh_log_warn("io_uring: submitting %u reads and writes: %s; one by "
                    "one from now on", want, strerror(-rc));
        for (i = 0; i < n; i++) {
            u->res[i] = 0;               /* none went: write them all */
        }
        for (i = 0; i < m; i++) {
            rd[i].res = SH_URING_SKIP;   /* libuv reads them (next poll) */
        }
        return -1;
    }
    for (;;) {
        k = 0;
        io_uring_for_each_cqe(&u->ring, head, cqe) {
            if (cqe->user_data < n) {
                u->res[cqe->user_data] = cqe->res;
                got++;
            } else if (cqe->user_data >= SH_URING_OPS
                       && cqe->user_data < SH_URING_OPS + m) {
                rd[cqe->user_data - SH_URING_OPS].res = cqe->res;
                got++;
            }
            k++;
        }
        io_uring_cq_advance(&u->ring, k);
        if (got >= want) {
            return 0;
        }
        /* (not with MSG_DONTWAIT; should a kernel ever wait, so do we) */
        rc = io_uring_wait_cqe(&u->ring, &cqe);
        if (rc < 0 && rc != -EINTR) {
            /* whether those went is unknown: their connections are
             * closed (sh_uring_run) rather than sent what may repeat, or
             * read on from a stream that may have lost bytes */
            sh_log_warn("io_uring: waiting for %u reads and writes: %s; "
                        "one by one from now on", want - got, strerror(-rc));
            return -1;
        }
    }
}

/* Submit the batch, with the receives asked for (reads) or not: not from
 * within a callback (a backend's reply, a write that must follow), where
 * a client's request must not run.  1 when a connection was paused,
 * closed or handed bytes. */
static int
sh_uring_run(sh_worker_t *w, int reads)
{
    struct sh_uring_s *u = w->uring;
    sh_uring_rd_t rd[SH_URING_READS];
    sh_uring_op_t *op;
    uint32_t i, n, m = 0, sides[2];
    ssize_t nread;
    int32_t res;
    int rc, any = 0, failed;

    if (u == NULL || u->flushing || (u->n == 0 && (!reads || u->nrd == 0))) {
        return 0;
    }
    n = u->n;
    if (reads && u->nrd > 0) {
        m = u->nrd;
        memcpy(rd, u->rd, m * sizeof(rd[0]));
        u->nrd = 0;
    }
    u->flushing = 1;
    failed = sh_uring_submit(u, n, rd, m);
    sides[0] = sides[1] = 0;
    for (i = 0; i < n; i++) {
        sides[1] |= 1u << u->ops[i].side;
    }
    for (i = 0; i < m; i++) {
        if (rd[i].res != SH_URING_SKIP) {
            sides[0] |= 1u << rd[i].side;
        }
    }
    for (i = 0; i < SH_SIDES; i++) {
        if (sides[0] & (1u << i)) {
            sh_io_read_batch((int) i);
        }
        if (sides[1] & (1u << i)) {
            sh_io_write_batch((int) i);
        }
    }
    u->n = 0;
    for (i = 0; i < n; i++) {
        op = &u->ops[i];
        res = u->res[i];
        if (res == -EAGAIN) {
            res = 0;
        }
        if (res > 0) {
            sh_io_write(op->side, (size_t) res);
        }
        if ((res >= 0 && (uint32_t) res == op->len)
            || uv_is_closing((uv_handle_t *) op->s))
        {
            continue;            /* all sent, or closed by a done before */
        }
        if (res == SH_URING_UNKNOWN) {
            rc = UV_EIO;
        } else if (res >= 0) {
            rc = sh_write_buf(op->s, (const char *) u->arena + op->off + res,
                              op->len - (uint32_t) res, op->side, op->cb,
                              op->data);
        } else {
            rc = res;                    /* -errno: libuv's error codes */
        }
        if (rc != 0) {
            op->done(op->data, rc);
            any = 1;
        }
    }
    u->used = 0;
    u->flushing = 0;
    if (failed) {
        sh_uring_enable(w, 0, NULL, 0);
    }
    for (i = 0; i < m; i++) {
        res = rd[i].res;
        if (res == SH_URING_SKIP || res == -EAGAIN
            || uv_is_closing((uv_handle_t *) rd[i].s))
        {
            continue;    /* not read (asked again), or closed by a got */
        }
        if (res > 0) {
            nread = res;
            sh_io_read(rd[i].side, (size_t) res);
        } else if (res == 0) {
            nread = UV_EOF;
        } else if (res == SH_URING_NOSPACE) {
            nread = UV_ENOBUFS;
        } else if (res == SH_URING_UNKNOWN) {
            nread = UV_EIO;
        } else {
            nread = res;                 /* -errno: libuv's error codes */
        }
        rd[i].got(rd[i].s, nread);
        any = 1;
    }
    return any;
}

int
sh_uring_flush(sh_worker_t *w)
{
    return sh_uring_run(w, 0);
}

void
sh_uring_after_poll(sh_worker_t *w)
{
    sh_uring_run(w, 1);
}

int
sh_uring_read(sh_worker_t *w, uv_stream_t *s, int side,
    sh_uring_space_fn space, sh_uring_got_fn got)
{
    struct sh_uring_s *u = w->uring;
    sh_uring_rd_t *r;
    uint32_t i;
    uv_os_fd_t fd;

    if (u == NULL || u->flushing) {
        return 0;
    }
    for (i = 0; i < u->nrd; i++) {
        if (u->rd[i].s == s) {
            return 1;        /* (polled twice in one iteration) */
        }
    }
    if (u->nrd == SH_URING_READS) {
        sh_uring_run(w, 1);              /* (we are in a read callback) */
        if ((u = w->uring) == NULL) {
            return 0;
        }
    }
    if (uv_fileno((uv_handle_t *) s, &fd) != 0) {
        return 0;
    }
    r = &u->rd[u->nrd++];
    r->s = s;
    r->fd = fd;
    r->side = side;
    r->space = space;
    r->got = got;
    return 1;
}
