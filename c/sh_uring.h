/*
 * sh_uring.h -- the client socket reads and writes of one loop iteration,
 * in one system call each way.
 *
 * Without pipelining every reply is a write(2) of its own, and on a VM a
 * system call costs about a microsecond before it does anything (the
 * benchmark VM: page-table isolation without PCID, so each entry and exit
 * flushes the TLB).  So a small reply to a client socket with nothing
 * queued is copied into the worker's batch instead, and the batch goes out
 * from the last pre-poll hook as one io_uring submission: a non-blocking
 * send per socket, each completing as write(2) would have (all of it, part
 * of it, EAGAIN, an error).  What a socket did not take is queued with
 * libuv, as a short write always was.  Replies are already written from
 * the pre-poll hooks (sh_run_wake_all), so a reply waits no longer than
 * before; a CQL connection's gathered replies go the same way.
 *
 * Clients' reads go the same way.  libuv still polls the client's
 * socket, but when it reports it readable the connection's alloc
 * callback gives libuv no buffer (libuv then reads nothing and says
 * UV_ENOBUFS), and the connection asks for a receive here instead.  After
 * the poll (a check handle) one submission carries the receives of every
 * client that had bytes, each a non-blocking recv into the connection's
 * reader, and the bytes are handed on as libuv's read callback would have
 * handed them.
 * The poll is level-triggered, so a receive that did not happen (a
 * connection paused meanwhile, io_uring gone) is only asked for again.
 * Backend sockets were batched too, and Redis then spent 30-50 % more
 * CPU per request behind shotover (why is not known: it read more
 * requests a read, from about two of shotover's writes) and throughput
 * fell in all three runs, so they read and write on their own
 * (docs/architecture.md).
 *
 * Without io_uring (an old kernel, a seccomp filter, io_uring = false in
 * the config) every read and write is a system call of its own, as
 * before.
 */
#ifndef SH_URING_H
#define SH_URING_H

#include <uv.h>

#include "sh_worker.h"

/* A reply this large or larger is written at once (zero-copy writev):
 * copying it would cost more than the system call it saves. */
#define SH_URING_COPY_MAX (16 * 1024)

/*
 * After the flush: rc is what sh_write_buf returned for the bytes the
 * socket did not take (1: queued with libuv, cb will run; a negative libuv
 * error: the connection is gone).  Not called when the socket took it all.
 */
typedef void (*sh_uring_done_fn)(void *data, int rc);

/* Batch w's socket I/O (on) or not; SH_OK, or SH_ERROR with the
 * kernel's reason in errbuf (then each read and write is a call). */
int sh_uring_enable(sh_worker_t *w, int on, char *errbuf, size_t errlen);

/*
 * sh_uring_write: batch bufs[0..n) (total bytes) for the stream s: 1 when
 * batched (a short write is queued with cb and data, as sh_write_buf
 * does, and done(data, rc) reports it), 0 when the caller must write
 * itself (no batching, too large, or a write is queued on s already).
 */
int sh_uring_write(sh_worker_t *w, uv_stream_t *s, const uv_buf_t *bufs,
    uint32_t n, size_t total, int side, uv_write_cb cb, void *data,
    sh_uring_done_fn done);

/* Send what is batched now when anything for s is (before another write
 * to s, a shutdown or a close: they must follow it). */
void sh_uring_before(sh_worker_t *w, uv_stream_t *s);

/* Where a receive for s goes: 0 when s reads no more (paused, closing),
 * else 1 with the space in *p, *n (*n == 0: no memory for more). */
typedef int (*sh_uring_space_fn)(uv_stream_t *s, uint8_t **p, size_t *n);

/* What a receive brought, as libuv's read callback has it: nread > 0
 * bytes, UV_EOF, UV_ENOBUFS (no space), or another negative error. */
typedef void (*sh_uring_got_fn)(uv_stream_t *s, ssize_t nread);

/*
 * sh_uring_read: receive for s in this iteration's submission (side for
 * shotover_socket_*_total); 1 when asked for, 0 when the caller must
 * leave it to libuv (no io_uring).  The space is asked for and the bytes
 * handed on after the poll, from sh_uring_after_poll.
 */
int sh_uring_read(sh_worker_t *w, uv_stream_t *s, int side,
    sh_uring_space_fn space, sh_uring_got_fn got);

/* The check handle's callback, after each poll: the receives asked for
 * in it and the writes batched so far, in one submission. */
void sh_uring_after_poll(sh_worker_t *w);

/* The pre-poll hook: send the batch; 1 when a short write or an error was
 * reported (a connection paused or closed). */
int sh_uring_flush(sh_worker_t *w);

#endif /* SH_URING_H */
