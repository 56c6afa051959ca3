/*
 * sh_proto.c -- the protocol tables (see sh_proto.h) and the frame
 * operations of sh_ffi.h that go by a frame's protocol.
 */
#include <stdio.h>

#include "sh_proto.h"

/* --- Redis --------------------------------------------------------------- */

static void *
sh_proto_resp_reader_new(const sh_source_conf_t *conf)
{
    sh_resp_limits_t lim = sh_resp_default_limits;

    lim.max_bulk_len = conf->max_bulk_len;
    lim.max_elements = conf->max_elements;
    lim.max_inline_len = conf->max_inline_len;
    return sh_resp_reader_new(SH_RESP_REQUEST, &lim);
}

static void
sh_proto_resp_reader_free(void *r)
{
    sh_resp_reader_free(r);
}

static void
sh_proto_resp_reader_space(void *r, uint8_t **p, size_t *n)
{
    sh_resp_reader_space(r, p, n);
}

static void
sh_proto_resp_reader_commit(void *r, size_t n)
{
    sh_resp_reader_commit(r, n);
}

static int
sh_proto_resp_reader_next(void *r, sh_frame_t **f)
{
    return sh_resp_reader_next(r, f);
}

static size_t
sh_proto_resp_reader_pending(const void *r)
{
    return sh_resp_reader_pending(r);
}

static const char *
sh_proto_resp_reader_error(const void *r)
{
    return sh_resp_reader_error(r);
}

static void
sh_proto_resp_on_request(sh_proto_conn_t *pc, sh_frame_t *f)
{
    sh_unused(pc);
    sh_unused(f);
}

/* Redis matches replies to requests by order: one batch at a time. */
static int
sh_proto_resp_lanes_ready(const sh_proto_conn_t *pc)
{
    sh_unused(pc);
    return 0;
}

static void
sh_proto_resp_send(sh_proto_conn_t *pc, sh_frame_t **frames, uint32_t n,
    sh_proto_write_fn write, void *ctx)
{
    sh_unused(pc);
    write(ctx, frames, n);
}

static sh_frame_t *
sh_proto_resp_error_frame(const sh_proto_conn_t *pc, const sh_frame_t *req,
    uint32_t code, const char *msg)
{
    sh_unused(pc);
    sh_unused(req);
    sh_unused(code);
    return sh_resp_error_frame(msg);
}

/* One RESP value, parsed, so the frame's type and count are right. */
static int
sh_proto_resp_parse_one(const uint8_t *data, size_t len, sh_frame_t **out,
    const char **err)
{
    sh_resp_reader_t *r = sh_resp_reader_new(SH_RESP_REPLY, NULL);
    sh_frame_t *f = NULL;
    int rc;

    sh_resp_reader_feed(r, data, len);
    rc = sh_resp_reader_next(r, &f);
    if (rc != SH_OK || f == NULL || sh_resp_reader_pending(r) != 0) {
        sh_frame_unref(f);
        sh_resp_reader_free(r);
        *err = "not exactly one complete RESP value";
        return SH_ERROR;
    }
    sh_resp_reader_free(r);
    if (f->buf != NULL && f->buf->cap > f->len) {
        /* into a buffer of its size: the reader's whole read buffer would
         * live as long as the frame (offsets are from f->data) */
        sh_buf_t *b = sh_buf_new(f->len);

        memcpy(b->data, f->data, f->len);
        sh_buf_unref(f->buf);
        f->buf = b;
        f->data = b->data;
    }
    *out = f;
    return SH_OK;
}

static int
sh_proto_resp_describe(const sh_frame_t *f, char *out, size_t cap)
{
    return sh_resp_describe(f->data, f->len, out, cap);
}

static int
sh_proto_resp_same(const sh_frame_t *a, const sh_frame_t *b)
{
    return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

static const sh_proto_t sh_proto_redis = {
    .id = SH_PROTO_REDIS,
    .name = "redis",
    .reader_new = sh_proto_resp_reader_new,
    .reader_free = sh_proto_resp_reader_free,
    .reader_space = sh_proto_resp_reader_space,
    .reader_commit = sh_proto_resp_reader_commit,
    .reader_next = sh_proto_resp_reader_next,
    .reader_pending = sh_proto_resp_reader_pending,
    .reader_error = sh_proto_resp_reader_error,
    .on_request = sh_proto_resp_on_request,
    .lanes_ready = sh_proto_resp_lanes_ready,
    .send = sh_proto_resp_send,
    .error_frame = sh_proto_resp_error_frame,
    .parse_one = sh_proto_resp_parse_one,
    .describe = sh_proto_resp_describe,
    .same = sh_proto_resp_same,
};

/* --- CQL ----------------------------------------------------------------- */

static void *
sh_proto_cql_reader_new(const sh_source_conf_t *conf)
{
    sh_cql_limits_t lim = sh_cql_default_limits;

    lim.max_body_len = conf->max_bulk_len;
    return sh_cql_reader_new(SH_CQL_REQUEST, &lim);
}

static void
sh_proto_cql_reader_free(void *r)
{
    sh_cql_reader_free(r);
}

static void
sh_proto_cql_reader_space(void *r, uint8_t **p, size_t *n)
{
    sh_cql_reader_space(r, p, n);
}

static void
sh_proto_cql_reader_commit(void *r, size_t n)
{
    sh_cql_reader_commit(r, n);
}

static int
sh_proto_cql_reader_next(void *r, sh_frame_t **f)
{
    return sh_cql_reader_next(r, f);
}

static size_t
sh_proto_cql_reader_pending(const void *r)
{
    return sh_cql_reader_pending(r);
}

static const char *
sh_proto_cql_reader_error(const void *r)
{
    return sh_cql_reader_error(r);
}

static void
sh_proto_cql_on_request(sh_proto_conn_t *pc, sh_frame_t *f)
{
    sh_cql_framing_request(&pc->u.cql, f);
}

/* Not before the answer to STARTUP has gone out: v5 switches to segments
 * there, and a later request must be read in the new framing. */
static int
sh_proto_cql_lanes_ready(const sh_proto_conn_t *pc)
{
    return !pc->u.cql.startup;
}

static int
sh_proto_frame_live(const sh_frame_t *f)
{
    return f != NULL && !(f->flags & SH_FRAME_NOREPLY) && f->len > 0;
}

/*
 * CQL replies: as they are, until the answer to STARTUP (READY or
 * AUTHENTICATE) has gone out; after it, in protocol v5, wrapped in segments
 * (LZ4 when the STARTUP asked for it), and the reader expects segments too.
 */
static void
sh_proto_cql_send(sh_proto_conn_t *pc, sh_frame_t **frames, uint32_t n,
    sh_proto_write_fn write, void *ctx)
{
    sh_cql_framing_t *fr = &pc->u.cql;
    sh_frame_t *stack[16] = { NULL };
    sh_frame_t **live;
    sh_frame_t *seg;
    uint32_t i, k = 0, from = 0;

    for (i = 0; i < n && !fr->segments; i++) {
        if (sh_proto_frame_live(frames[i])
            && sh_cql_framing_response(fr, frames[i], pc->reader))
        {
            /* the answer itself goes out unsegmented */
            write(ctx, frames + from, i + 1 - from);
            from = i + 1;
        }
    }
    if (!fr->segments) {
        write(ctx, frames + from, n - from);
        return;
    }
    live = n - from <= 16 ? stack : sh_alloc((n - from) * sizeof(*live));
    for (i = from; i < n; i++) {
        if (sh_proto_frame_live(frames[i])) {
            live[k++] = frames[i];
        }
    }
    seg = sh_cql_framing_wrap(fr, live, k);
    if (seg != NULL) {
        write(ctx, &seg, 1);
        sh_frame_unref(seg);
    }
    if (live != stack) {
        sh_free(live);
    }
}

static sh_frame_t *
sh_proto_cql_error_frame(const sh_proto_conn_t *pc, const sh_frame_t *req,
    uint32_t code, const char *msg)
{
    int stream = 0, version = 4;

    if (req != NULL) {
        stream = req->argc;
        version = sh_cql_frame_version(req);
    } else if (pc != NULL) {
        stream = sh_cql_reader_error_stream(pc->reader);
        version = sh_cql_reader_error_version(pc->reader);
        if (stream < 0) {
            stream = 0;
        }
    }
    return sh_cql_error_frame(version, stream, code, msg);
}

static int
sh_proto_cql_parse_one(const uint8_t *data, size_t len, sh_frame_t **out,
    const char **err)
{
    if (len < SH_CQL_HEADER_LEN) {
        *err = "shorter than a CQL header";
        return SH_ERROR;
    }
    *out = sh_cql_frame_copy(data, len, err);
    return *out != NULL ? SH_OK : SH_ERROR;
}

static int
sh_proto_cql_describe(const sh_frame_t *f, char *out, size_t cap)
{
    return snprintf(out, cap, "CQL v%d opcode 0x%02x stream %d (%u bytes)",
                    sh_cql_frame_version(f), f->rtype, (int) f->argc,
                    f->len);
}

/* The same opcode and body (decompressed when compressed), whatever the
 * stream id, version and compression of the envelopes. */
static int
sh_proto_cql_same(const sh_frame_t *a, const sh_frame_t *b)
{
    sh_frame_t *ha, *hb;
    const uint8_t *ba, *bb;
    const char *err;
    size_t la, lb;
    int same;

    if (a->rtype != b->rtype) {
        return 0;
    }
    if (sh_ffi_cql_body(a, &ha, &ba, &la, &err) == SH_ERROR) {
        return 0;
    }
    if (sh_ffi_cql_body(b, &hb, &bb, &lb, &err) == SH_ERROR) {
        if (sh_cycle_cur == NULL) {
            sh_frame_unref(ha);
        }
        return 0;
    }
    same = la == lb && memcmp(ba, bb, la) == 0;
    /* outside a batch the decompressed bodies are ours to drop */
    if (sh_cycle_cur == NULL) {
        sh_frame_unref(ha);
        sh_frame_unref(hb);
    }
    return same;
}

static const sh_proto_t sh_proto_cql = {
    .id = SH_PROTO_CQL,
    .name = "cassandra",
    .reader_new = sh_proto_cql_reader_new,
    .reader_free = sh_proto_cql_reader_free,
    .reader_space = sh_proto_cql_reader_space,
    .reader_commit = sh_proto_cql_reader_commit,
    .reader_next = sh_proto_cql_reader_next,
    .reader_pending = sh_proto_cql_reader_pending,
    .reader_error = sh_proto_cql_reader_error,
    .on_request = sh_proto_cql_on_request,
    .lanes_ready = sh_proto_cql_lanes_ready,
    .send = sh_proto_cql_send,
    .error_frame = sh_proto_cql_error_frame,
    .parse_one = sh_proto_cql_parse_one,
    .describe = sh_proto_cql_describe,
    .same = sh_proto_cql_same,
};

/* --- the registry -------------------------------------------------------- */

const sh_proto_t *
sh_proto_get(int id)
{
    switch (id) {
    case SH_PROTO_REDIS:
        return &sh_proto_redis;
    case SH_PROTO_CQL:
        return &sh_proto_cql;
    default:
        return NULL;
    }
}

int
sh_proto_conn_init(sh_proto_conn_t *pc, const sh_source_conf_t *conf)
{
    memset(pc, 0, sizeof(*pc));
    pc->p = sh_proto_get(conf->proto);
    if (pc->p == NULL) {
        return SH_ERROR;
    }
    pc->reader = pc->p->reader_new(conf);
    return SH_OK;
}

void
sh_proto_conn_free(sh_proto_conn_t *pc)
{
    if (pc->reader != NULL) {
        pc->p->reader_free(pc->reader);
        pc->reader = NULL;
    }
}

/* --- frame operations for Lua -------------------------------------------- */

/*
 * sh_ffi_frame_new: exactly one complete message of protocol proto as a
 * frame, in the running batch's cycle (SH_OK) or the caller's (SH_DECLINED).
 */
int
sh_ffi_frame_new(int proto, const uint8_t *data, size_t len,
    sh_frame_t **out, const char **err)
{
    const sh_proto_t *p = sh_proto_get(proto);

    if (p == NULL) {
        *err = "unsupported protocol";
        return SH_ERROR;
    }
    if (p->parse_one(data, len, out, err) != SH_OK) {
        return SH_ERROR;
    }
    return sh_cycle_add_frame(*out);
}

int
sh_ffi_frame_describe(const sh_frame_t *f, char *out, size_t cap)
{
    const sh_proto_t *p = sh_proto_get(f->proto);

    if (f->flags & SH_FRAME_NOREPLY) {
        return snprintf(out, cap, "(no reply)");
    }
    if (p == NULL) {
        return snprintf(out, cap, "(unknown protocol %d)", f->proto);
    }
    return p->describe(f, out, cap);
}

/*
 * sh_ffi_frame_same: do two replies say the same?  Redis: the same bytes.
 * CQL: the same opcode and body.  1 or 0.
 */
int
sh_ffi_frame_same(const sh_frame_t *a, const sh_frame_t *b)
{
    const sh_proto_t *p;

    if (a == NULL || b == NULL || a->proto != b->proto) {
        return a == b;
    }
    p = sh_proto_get(a->proto);
    return p != NULL && p->same(a, b);
}

/*
 * sh_ffi_frame_error: an error reply to request req in its protocol: Redis
 * "-ERR msg" (msg as is when it starts with an upper-case code), or a
 * CQL ERROR with `code` on req's stream and version.
 */
int
sh_ffi_frame_error(const sh_frame_t *req, uint32_t code, const char *msg,
    sh_frame_t **out)
{
    const sh_proto_t *p = sh_proto_get(req->proto);

    if (p == NULL) {
        return SH_ERROR;
    }
    *out = p->error_frame(NULL, req, code, msg);
    return sh_cycle_add_frame(*out);
}
