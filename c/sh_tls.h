/*
 * sh_tls.h -- TLS on a libuv stream, for client connections (sh_conn.c)
 * and backend connections (sh_upstream.c): OpenSSL with memory BIOs, so
 * the event loop owns the socket and never waits for a handshake.
 *
 * Bytes read from the socket are fed in (sh_tls_feed); the handshake and
 * the plaintext come out of them (sh_tls_handshake, sh_tls_read); plaintext
 * to send is encrypted into a pending output (sh_tls_write_frames) that
 * sh_tls_flush writes -- at once when the socket takes it, else in one
 * uv_write holding a copy of the rest.  Whatever OpenSSL has to say on its
 * own (handshake messages, alerts, session tickets, key updates) goes out
 * through the same pending output.
 */
#ifndef SH_TLS_H
#define SH_TLS_H

#include <uv.h>

#include "sh_core.h"

typedef struct sh_tls_s sh_tls_t;

enum {
    SH_TLS_DONE = 0,         /* the handshake is complete */
    SH_TLS_MORE = 1,         /* it waits for the peer's bytes */
    SH_TLS_FAILED = -1       /* it failed: sh_tls_error says why */
};

/* A connection's TLS state: server side (a source's) or client side (a
 * sink's, verifying server_name -- a host name or an address -- when its
 * context verifies); NULL ctx never happens. */
sh_tls_t *sh_tls_new_server(sh_tls_ctx_t *ctx);
sh_tls_t *sh_tls_new_client(sh_tls_ctx_t *ctx, const char *host);
void sh_tls_free(sh_tls_t *t);
void sh_tls_ctx_ref(sh_tls_ctx_t *ctx);
void sh_tls_ctx_unref(sh_tls_ctx_t *ctx);

/* Free this thread's buffers (made again when next needed). */
void sh_tls_buffers_free(void);
/* Where a socket read lands (a per-thread buffer; the bytes are fed to
 * sh_tls_feed in the read callback that follows). */
void sh_tls_read_space(uv_buf_t *buf);
/* n ciphertext bytes read from the socket */
void sh_tls_feed(sh_tls_t *t, const void *p, size_t n);
/* whether a read may give more: bytes fed and not yet taken (a loop
 * reading until sh_tls_read gives 0 stops a call earlier with it) */
int sh_tls_has_input(const sh_tls_t *t);
/* advance the handshake: SH_TLS_* */
int sh_tls_handshake(sh_tls_t *t);
int sh_tls_handshake_done(const sh_tls_t *t);
/*
 * Up to n plaintext bytes into p: > 0 bytes read; 0 nothing more until
 * more is fed; SH_TLS_EOF the peer closed its side (close_notify); < 0
 * otherwise a failure (sh_tls_error says why).
 */
#define SH_TLS_EOF (-2)
ssize_t sh_tls_read(sh_tls_t *t, uint8_t *p, size_t n);
/* encrypt frames (NOREPLY and empty ones skipped) into the pending output;
 * SH_ERROR on failure */
int sh_tls_write_frames(sh_tls_t *t, sh_frame_t *const *frames, uint32_t n);
/* queue a close_notify */
void sh_tls_shutdown(sh_tls_t *t);
/* encrypt n bytes at p into the pending output; SH_ERROR on failure */
int sh_tls_write(sh_tls_t *t, const void *p, size_t n);
/*
 * Write the pending output to s: what the socket takes now, the rest in
 * one uv_write calling cb (which must end with sh_copy_write_done) with
 * req.data = data.  Returns 0 (all written), 1 (the rest queued: cb will
 * run), or a negative libuv error.
 */
int sh_tls_flush(sh_tls_t *t, uv_stream_t *s, uv_write_cb cb, void *data,
    int side);
/* why the last handshake or read failed (OpenSSL's reason, and the
 * certificate check's when it was that) */
const char *sh_tls_error(const sh_tls_t *t);
/* the peer certificate's subject (RFC 2253), or NULL when it sent none */
const char *sh_tls_subject(const sh_tls_t *t);
/* the protocol version agreed ("TLSv1.3") */
const char *sh_tls_version(const sh_tls_t *t);

#endif /* SH_TLS_H */
