/*
 * sh_proto.h -- one table of functions per wire protocol, chosen once when
 * a connection is accepted (twemproxy's msg_get picks its parser the same
 * way), so nothing above the codecs switches on the protocol.
 *
 * A protocol is its codec (c/sh_resp.c, c/sh_cql.c) plus this table: the
 * request reader of a client connection, the framing hooks of that
 * connection (CQL's handshake switches v5 to segments), its error reply,
 * and the frame operations Lua reaches through sh_ffi.h (parse one message,
 * describe, compare).  Adding a protocol costs one codec, one table here
 * and one Lua module (docs/architecture.md, "Adding a protocol").
 */
#ifndef SH_PROTO_H
#define SH_PROTO_H

#include "sh_cql.h"
#include "sh_resp.h"

typedef struct sh_proto_s sh_proto_t;
typedef struct sh_proto_conn_s sh_proto_conn_t;

/* where a connection's framed replies go: its socket writer */
typedef void (*sh_proto_write_fn)(void *ctx, sh_frame_t **frames,
    uint32_t n);

/* The protocol side of one client connection: its reader and framing. */
struct sh_proto_conn_s {
    const sh_proto_t *p;     /* the protocol's table */
    void *reader;            /* its request reader */
    union {
        sh_cql_framing_t cql; /* CQL: handshake and v5 segments */
    } u;                     /* framing state, the protocol's own */
};

struct sh_proto_s {
    int id;                  /* SH_PROTO_* */
    const char *name;        /* as in configs: "redis", "cassandra" */
    /* the request reader, sized by the source's limits */
    void *(*reader_new)(const sh_source_conf_t *conf);
    void (*reader_free)(void *r);
    void (*reader_space)(void *r, uint8_t **p, size_t *n);
    void (*reader_commit)(void *r, size_t n);
    /* as sh_resp_reader_next: SH_OK with a frame or NULL, SH_ERROR sticky */
    int (*reader_next)(void *r, sh_frame_t **f);
    size_t (*reader_pending)(const void *r);
    const char *(*reader_error)(const void *r);
    /* a request was read (before it joins a batch) */
    void (*on_request)(sh_proto_conn_t *pc, sh_frame_t *f);
    /* may later batches of the connection start before this one is done?
     * (CQL: not before the answer to STARTUP went out) */
    int (*lanes_ready)(const sh_proto_conn_t *pc);
    /* write replies, framed as the connection's state says */
    void (*send)(sh_proto_conn_t *pc, sh_frame_t **frames, uint32_t n,
        sh_proto_write_fn write, void *ctx);
    /* an error reply to req, or when req is NULL to the frame the reader
     * refused (pc NULL: no connection, req required); `code` is CQL's */
    sh_frame_t *(*error_frame)(const sh_proto_conn_t *pc,
        const sh_frame_t *req, uint32_t code, const char *msg);
    /* exactly one complete encoded message as a frame */
    int (*parse_one)(const uint8_t *data, size_t len, sh_frame_t **out,
        const char **err);
    /* readable text of a frame (as sh_resp_describe) */
    int (*describe)(const sh_frame_t *f, char *out, size_t cap);
    /* do two replies say the same? 1 or 0 */
    int (*same)(const sh_frame_t *a, const sh_frame_t *b);
};

/* The table of protocol SH_PROTO_id, NULL when there is none. */
const sh_proto_t *sh_proto_get(int id);

/* Set up / tear down the protocol side of a client connection. */
int sh_proto_conn_init(sh_proto_conn_t *pc, const sh_source_conf_t *conf);
void sh_proto_conn_free(sh_proto_conn_t *pc);

#endif /* SH_PROTO_H */
