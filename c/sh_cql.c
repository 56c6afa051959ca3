/*
 * sh_cql.c -- CQL native protocol framing.
 *
 * Implements the framing of apache/cassandra doc/native_protocol_v4.spec
 * (and v3, identical here) and doc/native_protocol_v5.spec section 2:
 *   v3/v4: a 9-byte header (version, flags, stream, opcode, length) and a
 *          body; a body compressed with LZ4 or Snappy (flag 0x01) is passed
 *          on as it is.
 *   v5:    after the handshake, envelopes (the v4 frame layout) travel in
 *          segments: a 3-byte little-endian header (17-bit payload length,
 *          self-contained flag) and its CRC24, or with LZ4 a 5-byte header
 *          (compressed and uncompressed lengths, flag) and its CRC24, then
 *          the payload and its CRC32.  A self-contained segment holds whole
 *          envelopes; a bigger envelope spans several segments.
 *
 * Zero copy where the wire allows it: a v3/v4 frame, and an envelope in an
 * uncompressed self-contained segment, is a slice of the read buffer.  An
 * envelope spread over several segments, or in an LZ4 segment, is a slice
 * of the buffer it was reassembled or decompressed into.
 *
 * Not supported: v1 and v2 (refused like any unsupported version, so that
 * drivers downgrade to what we speak); the beta v6.
 */
#include <ctype.h>
#include <stdio.h>
#include <strings.h>

#include <lz4.h>
#include <snappy-c.h>
#include <zlib.h>

#include "sh_cql.h"

const sh_cql_limits_t sh_cql_default_limits = {
    .max_body_len = 16 * 1024 * 1024,
};

struct sh_cql_reader_s {
    int mode;                /* SH_CQL_REQUEST or SH_CQL_RESPONSE */
    int segments;            /* 0, SH_CQL_SEGMENTS_PLAIN or _LZ4 */
    int version;             /* of the first frame, 0 before it */
    sh_cql_limits_t lim;     /* limits in force */
    sh_buf_t *buf;           /* read buffer (we hold a ref) */
    uint32_t start;          /* first unparsed byte */
    uint32_t pos;            /* unused cursor, kept for sh_buf_reader_space */
    uint32_t end;            /* bytes filled */
    uint32_t need;           /* bytes from start the next unit needs */
    sh_buf_t *seg;           /* self-contained payload being split (ref) */
    uint32_t seg_pos;        /* next envelope in seg */
    uint32_t seg_end;        /* end of the payload in seg */
    sh_buf_t *big;           /* envelope being reassembled from segments */
    uint32_t big_len;        /* bytes of it so far */
    int failed;              /* sticky error */
    int err_stream;          /* stream of the offending frame, or -1 */
    int err_version;         /* version to answer the error with */
    char errstr[160];        /* why */
};

static int
sh_cql_fail(sh_cql_reader_t *r, int stream, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
sh_cql_fail(sh_cql_reader_t *r, int stream, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->errstr, sizeof(r->errstr), fmt, ap);
    va_end(ap);
    r->failed = 1;
    r->err_stream = stream;
    return SH_ERROR;
}

sh_cql_reader_t *
sh_cql_reader_new(int mode, const sh_cql_limits_t *limits)
{
    sh_cql_reader_t *r = sh_calloc(1, sizeof(*r));

    r->mode = mode;
    r->lim = limits ? *limits : sh_cql_default_limits;
    r->err_stream = -1;
    return r;
}

void
sh_cql_reader_free(sh_cql_reader_t *r)
{
    if (r == NULL) {
        return;
    }
    sh_buf_unref(r->buf);
    sh_buf_unref(r->seg);
    sh_buf_unref(r->big);
    sh_free(r);
}

const char *
sh_cql_reader_error(const sh_cql_reader_t *r)
{
    return r->failed ? r->errstr : NULL;
}

int
sh_cql_reader_error_stream(const sh_cql_reader_t *r)
{
    return r->err_stream;
}

int
sh_cql_reader_version(const sh_cql_reader_t *r)
{
    return r->version;
}

int
sh_cql_reader_error_version(const sh_cql_reader_t *r)
{
    if (r->err_version) {
        return r->err_version;
    }
    return r->version ? r->version : 4;
}

size_t
sh_cql_reader_pending(const sh_cql_reader_t *r)
{
    return r->end - r->start + (r->seg ? r->seg_end - r->seg_pos : 0)
           + r->big_len;
}

void
sh_cql_reader_use_segments(sh_cql_reader_t *r, int how)
{
    r->segments = how;
}

void
sh_cql_reader_space(sh_cql_reader_t *r, uint8_t **p, size_t *n)
{
    if (sh_buf_reader_space(&r->buf, &r->start, &r->pos, &r->end, r->need,
                            p, n) != SH_OK && !r->failed)
    {
        /* the connection fails with this, the process goes on */
        sh_cql_fail(r, -1, "Protocol error: out of memory for a %u-byte "
                    "frame", r->need);
    }
}

void
sh_cql_reader_commit(sh_cql_reader_t *r, size_t n)
{
    r->end += (uint32_t) n;
}

void
sh_cql_reader_feed(sh_cql_reader_t *r, const uint8_t *data, size_t len)
{
    uint8_t *p;
    size_t n;

    while (len > 0) {
        sh_cql_reader_space(r, &p, &n);
        if (n == 0) {
            return;                      /* failed: out of memory */
        }
        n = sh_min(n, len);
        memcpy(p, data, n);
        sh_cql_reader_commit(r, n);
        data += n;
        len -= n;
    }
}

/* --- CRCs ---------------------------------------------------------------- */

uint32_t
sh_cql_crc24(uint64_t bytes, int len)
{
    uint32_t crc = 0x875060;             /* CRC24_INIT */
    int i;

    while (len-- > 0) {
        crc ^= (uint32_t) (bytes & 0xff) << 16;
        bytes >>= 8;
        for (i = 0; i < 8; i++) {
            crc <<= 1;
            if (crc & 0x1000000) {
                crc ^= 0x1974F0B;        /* CRC24_POLY */
            }
        }
    }
    return crc & 0xffffff;
}

uint32_t
sh_cql_crc32(const uint8_t *p, size_t n)
{
    static const uint8_t prime[4] = { 0xFA, 0x2D, 0x55, 0xCA };
    uLong crc = crc32(0L, Z_NULL, 0);

    crc = crc32(crc, prime, 4);
    crc = crc32(crc, p, (uInt) n);
    return (uint32_t) crc;
}

static uint64_t
sh_cql_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    int i;

    for (i = n - 1; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static uint32_t
sh_cql_be32(const uint8_t *p)
{
    return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16)
           | ((uint32_t) p[2] << 8) | p[3];
}

/* --- envelopes -------------------------------------------------------------- */

/*
 * Check the 9-byte header at h.  Returns SH_OK with the body length, or
 * SH_ERROR (the reader failed).  The first frame fixes the version.
 */
static int
sh_cql_check_header(sh_cql_reader_t *r, const uint8_t *h, uint32_t *body)
{
    int version = h[0] & 0x7f;
    int response = (h[0] & 0x80) != 0;
    int stream = (int16_t) ((h[2] << 8) | h[3]);

    if (r->version == 0) {
        if (version < SH_CQL_MIN_VERSION || version > SH_CQL_MAX_VERSION) {
            r->err_version = version < SH_CQL_MIN_VERSION
                             ? (version ? version : SH_CQL_MIN_VERSION)
                             : SH_CQL_MAX_VERSION;
            return sh_cql_fail(r, stream, "Invalid or unsupported protocol "
                               "version (%d); supported versions are "
                               "(3/v3, 4/v4, 5/v5)", version);
        }
        r->version = version;
    } else if (version != r->version) {
        return sh_cql_fail(r, stream, "Invalid message version. Got %d but "
                           "previous messages on this connection had "
                           "version %d", version, r->version);
    }
    if (response != (r->mode == SH_CQL_RESPONSE)) {
        return sh_cql_fail(r, stream, "Wrong message direction: got a %s "
                           "where a %s was expected",
                           response ? "response" : "request",
                           response ? "request" : "response");
    }
    *body = sh_cql_be32(h + 5);
    if (*body > r->lim.max_body_len) {
        return sh_cql_fail(r, stream, "Request is too big: length %u "
                           "exceeds maximum allowed length %u", *body,
                           r->lim.max_body_len);
    }
    return SH_OK;
}

static sh_frame_t *
sh_cql_frame(sh_buf_t *b, uint32_t off, uint32_t len)
{
    sh_frame_t *f = sh_frame_alloc(SH_PROTO_CQL, 0);
    const uint8_t *h = b->data + off;

    f->buf = b;
    sh_buf_ref(b);
    f->data = h;
    f->len = len;
    f->rtype = h[4];
    f->argc = (int16_t) ((h[2] << 8) | h[3]);
    return f;
}

/*
 * A frame of its own from the bytes of exactly one envelope (copied into a
 * buffer of that size), checked as a fresh reader would; NULL and why
 * when they are not one.  (A reader would allocate a whole read buffer for
 * it, which the frame then keeps alive.)
 */
sh_frame_t *
sh_cql_frame_copy(const uint8_t *data, size_t len, const char **err)
{
    sh_cql_reader_t r;
    sh_frame_t *f;
    sh_buf_t *b;
    uint32_t body;

    memset(&r, 0, sizeof(r));
    r.mode = (len > 0 && (data[0] & 0x80)) ? SH_CQL_RESPONSE
                                           : SH_CQL_REQUEST;
    r.lim = sh_cql_default_limits;
    r.err_stream = -1;
    if (len < SH_CQL_HEADER_LEN || len > UINT32_MAX
        || sh_cql_check_header(&r, data, &body) != SH_OK
        || (size_t) SH_CQL_HEADER_LEN + body != len)
    {
        *err = "not exactly one complete CQL envelope";
        return NULL;
    }
    b = sh_buf_new((uint32_t) len);
    memcpy(b->data, data, len);
    f = sh_cql_frame(b, 0, (uint32_t) len);
    sh_buf_unref(b);
    return f;
}

/* v3/v4: the next frame straight from the read buffer. */
static int
sh_cql_next_frame(sh_cql_reader_t *r, sh_frame_t **out)
{
    uint32_t body;

    if (r->end - r->start < SH_CQL_HEADER_LEN) {
        r->need = SH_CQL_HEADER_LEN;
        return SH_OK;
    }
    if (sh_cql_check_header(r, r->buf->data + r->start, &body) != SH_OK) {
        return SH_ERROR;
    }
    r->need = SH_CQL_HEADER_LEN + body;
    if (r->end - r->start < r->need) {
        return SH_OK;
    }
    *out = sh_cql_frame(r->buf, r->start, r->need);
    r->start += r->need;
    r->need = 0;
    return SH_OK;
}

/* The next envelope of the self-contained payload being split. */
static int
sh_cql_next_in_segment(sh_cql_reader_t *r, sh_frame_t **out)
{
    uint32_t left = r->seg_end - r->seg_pos, body;

    if (left < SH_CQL_HEADER_LEN) {
        return sh_cql_fail(r, -1, "Protocol error: a self-contained segment "
                           "ends inside an envelope header");
    }
    if (sh_cql_check_header(r, r->seg->data + r->seg_pos, &body) != SH_OK) {
        return SH_ERROR;
    }
    if (body > left - SH_CQL_HEADER_LEN) {
        return sh_cql_fail(r, -1, "Protocol error: a self-contained segment "
                           "ends inside an envelope body");
    }
    *out = sh_cql_frame(r->seg, r->seg_pos, SH_CQL_HEADER_LEN + body);
    r->seg_pos += SH_CQL_HEADER_LEN + body;
    if (r->seg_pos == r->seg_end) {
        sh_buf_unref(r->seg);
        r->seg = NULL;
    }
    return SH_OK;
}

/* Add a non-self-contained payload to the envelope being reassembled. */
static int
sh_cql_add_part(sh_cql_reader_t *r, const uint8_t *p, uint32_t n,
    sh_frame_t **out)
{
    uint32_t body, total;

    if (r->big == NULL || r->big_len + n > r->big->cap) {
        /* The header says how big it will be, but that is the peer's
         * word: grow with what arrives (doubling), up to that size. */
        total = sh_max(r->big_len + n, r->big_len * 2);
        total = sh_max(total, SH_CQL_HEADER_LEN);
        if (r->big_len >= SH_CQL_HEADER_LEN) {
            total = (uint32_t) sh_min((uint64_t) total, (uint64_t)
                SH_CQL_HEADER_LEN + sh_cql_be32(r->big->data + 5));
            total = sh_max(total, r->big_len + n);
        }
        sh_buf_t *nb = sh_buf_try_new(total);
        if (nb == NULL) {
            return sh_cql_fail(r, -1, "Protocol error: out of memory for "
                               "a %u-byte envelope", total);
        }
        if (r->big != NULL) {
            memcpy(nb->data, r->big->data, r->big_len);
            sh_buf_unref(r->big);
        }
        r->big = nb;
    }
    memcpy(r->big->data + r->big_len, p, n);
    r->big_len += n;
    if (r->big_len < SH_CQL_HEADER_LEN) {
        return SH_OK;
    }
    if (sh_cql_check_header(r, r->big->data, &body) != SH_OK) {
        return SH_ERROR;
    }
    total = SH_CQL_HEADER_LEN + body;
    if (r->big_len < total) {
        return SH_OK;
    }
    if (r->big_len > total) {
        return sh_cql_fail(r, -1, "Protocol error: segments of a large "
                           "envelope carry %u bytes past its end",
                           r->big_len - total);
    }
    *out = sh_cql_frame(r->big, 0, total);
    sh_buf_unref(r->big);
    r->big = NULL;
    r->big_len = 0;
    return SH_OK;
}

/* v5: read the next segment and start on its envelopes. */
static int
sh_cql_next_segment(sh_cql_reader_t *r, sh_frame_t **out)
{
    const uint8_t *d = r->buf->data + r->start;
    int lz4 = r->segments == SH_CQL_SEGMENTS_LZ4;
    uint32_t hlen = lz4 ? 5 : 3, clen, ulen = 0, total, crc;
    uint64_t h;
    int self;
    sh_buf_t *pb;
    uint32_t poff;

    if (r->end - r->start < hlen + 3) {
        r->need = hlen + 3;
        return SH_OK;
    }
    h = sh_cql_le(d, (int) hlen);
    crc = (uint32_t) sh_cql_le(d + hlen, 3);
    if (sh_cql_crc24(h, (int) hlen) != crc) {
        return sh_cql_fail(r, -1, "Protocol error: bad segment header "
                           "CRC24");
    }
    clen = (uint32_t) (h & 0x1ffff);
    if (lz4) {
        ulen = (uint32_t) ((h >> 17) & 0x1ffff);
        self = (int) ((h >> 34) & 1);
    } else {
        self = (int) ((h >> 17) & 1);
    }
    total = hlen + 3 + clen + 4;
    r->need = total;
    if (r->end - r->start < total) {
        return SH_OK;
    }
    crc = (uint32_t) sh_cql_le(d + hlen + 3 + clen, 4);
    if (sh_cql_crc32(d + hlen + 3, clen) != crc) {
        return sh_cql_fail(r, -1, "Protocol error: bad segment payload "
                           "CRC32");
    }
    pb = r->buf;
    poff = r->start + hlen + 3;
    sh_buf_ref(pb);
    if (lz4 && ulen != 0) {
        sh_buf_t *ub = sh_buf_new(ulen);
        int got = LZ4_decompress_safe((const char *) d + hlen + 3,
                                      (char *) ub->data, (int) clen,
                                      (int) ulen);

        sh_buf_unref(pb);
        if (got != (int) ulen) {
            sh_buf_unref(ub);
            return sh_cql_fail(r, -1, "Protocol error: segment does not "
                               "decompress to its declared %u bytes", ulen);
        }
        pb = ub;
        poff = 0;
        clen = ulen;
    }
    r->start += total;
    r->need = 0;
    if (self) {
        if (r->big != NULL) {
            sh_buf_unref(pb);
            return sh_cql_fail(r, -1, "Protocol error: a self-contained "
                               "segment inside a large envelope");
        }
        if (clen == 0) {
            sh_buf_unref(pb);
            return SH_OK;
        }
        r->seg = pb;
        r->seg_pos = poff;
        r->seg_end = poff + clen;
        return sh_cql_next_in_segment(r, out);
    }
    int rc = sh_cql_add_part(r, pb->data + poff, clen, out);
    sh_buf_unref(pb);
    return rc;
}

int
sh_cql_reader_next(sh_cql_reader_t *r, sh_frame_t **out)
{
    uint32_t before;

    *out = NULL;
    if (r->failed) {
        return SH_ERROR;
    }
    if (r->seg != NULL) {
        return sh_cql_next_in_segment(r, out);
    }
    if (r->buf == NULL) {
        return SH_OK;
    }
    if (r->segments == 0) {
        return sh_cql_next_frame(r, out);
    }
    /* a segment may complete no envelope (part of a large one): go on */
    do {
        before = r->start;
        if (sh_cql_next_segment(r, out) != SH_OK) {
            return SH_ERROR;
        }
    } while (*out == NULL && r->start != before && r->seg == NULL);
    if (*out == NULL && r->seg != NULL) {
        return sh_cql_next_in_segment(r, out);
    }
    return SH_OK;
}

/* --- encoding segments ------------------------------------------------------ */

typedef struct sh_cql_out_s {
    sh_buf_t *b;             /* output */
    uint32_t len;            /* bytes written */
} sh_cql_out_t;

static void
sh_cql_out_reserve(sh_cql_out_t *o, uint32_t n)
{
    if (o->len + n > o->b->cap) {
        uint32_t cap = sh_max(o->b->cap * 2, o->len + n);
        sh_buf_t *nb = sh_buf_new(cap);

        memcpy(nb->data, o->b->data, o->len);
        sh_buf_unref(o->b);
        o->b = nb;
    }
}

static void
sh_cql_put_le(uint8_t *p, uint64_t v, int n)
{
    int i;

    for (i = 0; i < n; i++) {
        p[i] = (uint8_t) (v >> (8 * i));
    }
}

/* Emit one segment holding payload p[0..n). */
static void
sh_cql_emit_segment(sh_cql_out_t *o, const uint8_t *p, uint32_t n, int self,
    int how)
{
    int lz4 = how == SH_CQL_SEGMENTS_LZ4;
    uint32_t hlen = lz4 ? 5 : 3;
    uint32_t clen = n, ulen = 0;
    uint64_t h;
    uint8_t *seg;
    int bound, got;

    sh_cql_out_reserve(o, hlen + 3 + (uint32_t) LZ4_compressBound((int) n)
                       + 4 + n);
    seg = o->b->data + o->len;
    if (lz4) {
        bound = LZ4_compressBound((int) n);
        got = LZ4_compress_default((const char *) p,
                                   (char *) seg + hlen + 3, (int) n, bound);
        if (got > 0 && (uint32_t) got < n) {
            clen = (uint32_t) got;       /* worth it: send compressed */
            ulen = n;
        } else {
            memcpy(seg + hlen + 3, p, n); /* ulen 0: sent as it is */
        }
        h = clen | ((uint64_t) ulen << 17) | ((uint64_t) (self != 0) << 34);
    } else {
        memcpy(seg + hlen + 3, p, n);
        h = clen | ((uint64_t) (self != 0) << 17);
    }
    sh_cql_put_le(seg, h, (int) hlen);
    sh_cql_put_le(seg + hlen, sh_cql_crc24(h, (int) hlen), 3);
    sh_cql_put_le(seg + hlen + 3 + clen,
                  sh_cql_crc32(seg + hlen + 3, clen), 4);
    o->len += hlen + 3 + clen + 4;
}

sh_buf_t *
sh_cql_segments_encode(sh_frame_t *const *frames, uint32_t n, int how,
    uint32_t *len)
{
    sh_cql_out_t o;
    uint8_t *acc = sh_alloc(SH_CQL_SEGMENT_MAX);
    uint32_t acc_len = 0, i, off, part;

    o.b = sh_buf_new(1024);
    o.len = 0;
    for (i = 0; i < n; i++) {
        const sh_frame_t *f = frames[i];

        if (f->len > SH_CQL_SEGMENT_MAX) {
            /* a large envelope gets segments of its own */
            if (acc_len > 0) {
                sh_cql_emit_segment(&o, acc, acc_len, 1, how);
                acc_len = 0;
            }
            for (off = 0; off < f->len; off += part) {
                part = sh_min(f->len - off, (uint32_t) SH_CQL_SEGMENT_MAX);
                sh_cql_emit_segment(&o, f->data + off, part, 0, how);
            }
            continue;
        }
        if (acc_len + f->len > SH_CQL_SEGMENT_MAX) {
            sh_cql_emit_segment(&o, acc, acc_len, 1, how);
            acc_len = 0;
        }
        memcpy(acc + acc_len, f->data, f->len);
        acc_len += f->len;
    }
    if (acc_len > 0) {
        sh_cql_emit_segment(&o, acc, acc_len, 1, how);
    }
    sh_free(acc);
    *len = o.len;
    return o.b;
}

/* --- messages the proxy writes ------------------------------------------------ */

sh_frame_t *
sh_cql_error_frame(int version, int stream, uint32_t code, const char *msg)
{
    size_t mlen = strlen(msg);
    uint32_t body;
    uint8_t *d;
    sh_frame_t *f;

    if (mlen > 60000) {
        mlen = 60000;
    }
    body = (uint32_t) (4 + 2 + mlen);
    d = sh_alloc(SH_CQL_HEADER_LEN + body);
    d[0] = (uint8_t) (0x80 | (version & 0x7f));
    d[1] = 0;
    d[2] = (uint8_t) ((uint16_t) stream >> 8);
    d[3] = (uint8_t) stream;
    d[4] = SH_CQL_ERROR;
    d[5] = (uint8_t) (body >> 24);
    d[6] = (uint8_t) (body >> 16);
    d[7] = (uint8_t) (body >> 8);
    d[8] = (uint8_t) body;
    d[9] = (uint8_t) (code >> 24);
    d[10] = (uint8_t) (code >> 16);
    d[11] = (uint8_t) (code >> 8);
    d[12] = (uint8_t) code;
    d[13] = (uint8_t) (mlen >> 8);
    d[14] = (uint8_t) mlen;
    memcpy(d + 15, msg, mlen);
    f = sh_frame_copy(SH_PROTO_CQL, d, SH_CQL_HEADER_LEN + body);
    f->rtype = SH_CQL_ERROR;
    f->argc = (int16_t) stream;
    sh_free(d);
    return f;
}

const char *
sh_cql_startup_compression(const sh_frame_t *f, char *out, size_t cap)
{
    const uint8_t *p = f->data + SH_CQL_HEADER_LEN;
    const uint8_t *e = f->data + f->len;
    uint32_t n, i, kl, vl;

    if (f->len < SH_CQL_HEADER_LEN + 2 || f->rtype != SH_CQL_STARTUP) {
        return NULL;
    }
    n = ((uint32_t) p[0] << 8) | p[1];
    p += 2;
    for (i = 0; i < n; i++) {
        if (e - p < 2) {
            return NULL;
        }
        kl = ((uint32_t) p[0] << 8) | p[1];
        if ((uint32_t) (e - p) < 2 + kl + 2) {
            return NULL;
        }
        vl = ((uint32_t) p[2 + kl] << 8) | p[3 + kl];
        if ((uint32_t) (e - p) < 4 + kl + vl) {
            return NULL;
        }
        if (kl == 11 && strncasecmp((const char *) p + 2, "COMPRESSION", 11)
            == 0 && vl < cap)
        {
            for (uint32_t k = 0; k < vl; k++) {
                out[k] = (char) tolower(p[4 + kl + k]);
            }
            out[vl] = '\0';
            return out;
        }
        p += 4 + kl + vl;
    }
    return NULL;
}

/*
 * v4 body compression (native_protocol_v4.spec section 5): LZ4 bodies start
 * with the uncompressed length as a 4-byte big-endian integer; Snappy bodies
 * are raw Snappy.
 */
sh_buf_t *
sh_cql_body_decompress(const sh_frame_t *f, uint32_t *len, const char **err)
{
    const uint8_t *p = f->data + SH_CQL_HEADER_LEN;
    size_t n = f->len - SH_CQL_HEADER_LEN, ulen;
    sh_buf_t *b;

    if (f->cmd == SH_CQL_BODY_LZ4) {
        if (n < 4) {
            *err = "LZ4 body shorter than its length prefix";
            return NULL;
        }
        ulen = sh_cql_be32(p);
        /* LZ4 expands at most 255 times (a length byte adds 255): a
         * length past that is a lie, and memory is not claimed on it */
        if (ulen > sh_cql_default_limits.max_body_len * 4u
            || ulen > (n - 4) * 255 + 64)
        {
            *err = "LZ4 body declares an implausible length";
            return NULL;
        }
        b = sh_buf_try_new((uint32_t) ulen);
        if (b == NULL) {
            *err = "out of memory for the decompressed body";
            return NULL;
        }
        if (LZ4_decompress_safe((const char *) p + 4, (char *) b->data,
                                (int) n - 4, (int) ulen) != (int) ulen)
        {
            sh_buf_unref(b);
            *err = "LZ4 body does not decompress";
            return NULL;
        }
    } else if (f->cmd == SH_CQL_BODY_SNAPPY) {
        if (snappy_uncompressed_length((const char *) p, n, &ulen)
                != SNAPPY_OK
            || ulen > sh_cql_default_limits.max_body_len * 4u
            || ulen > n * 32 + 64)       /* Snappy expands < 22 times */
        {
            *err = "Snappy body has no valid length";
            return NULL;
        }
        b = sh_buf_try_new((uint32_t) ulen);
        if (b == NULL) {
            *err = "out of memory for the decompressed body";
            return NULL;
        }
        if (snappy_uncompress((const char *) p, n, (char *) b->data, &ulen)
            != SNAPPY_OK)
        {
            sh_buf_unref(b);
            *err = "Snappy body does not decompress";
            return NULL;
        }
    } else {
        *err = "compressed body, but no compression was negotiated";
        return NULL;
    }
    *len = (uint32_t) ulen;
    return b;
}

sh_buf_t *
sh_cql_body_compress(const sh_frame_t *f, const uint8_t *body, uint32_t len,
    uint32_t *out_len, const char **err)
{
    sh_buf_t *b;
    size_t n;
    int got;

    if (f->cmd == SH_CQL_BODY_LZ4) {
        b = sh_buf_new(4 + (uint32_t) LZ4_compressBound((int) len));
        b->data[0] = (uint8_t) (len >> 24);
        b->data[1] = (uint8_t) (len >> 16);
        b->data[2] = (uint8_t) (len >> 8);
        b->data[3] = (uint8_t) len;
        got = LZ4_compress_default((const char *) body, (char *) b->data + 4,
                                   (int) len, (int) b->cap - 4);
        if (got <= 0) {
            sh_buf_unref(b);
            *err = "LZ4 compression failed";
            return NULL;
        }
        *out_len = 4 + (uint32_t) got;
    } else if (f->cmd == SH_CQL_BODY_SNAPPY) {
        n = snappy_max_compressed_length(len);
        b = sh_buf_new((uint32_t) n);
        if (snappy_compress((const char *) body, len, (char *) b->data, &n)
            != SNAPPY_OK)
        {
            sh_buf_unref(b);
            *err = "Snappy compression failed";
            return NULL;
        }
        *out_len = (uint32_t) n;
    } else {
        *err = "no compression negotiated";
        return NULL;
    }
    return b;
}

/* --- the handshake's framing switch -------------------------------------- */

void
sh_cql_framing_request(sh_cql_framing_t *fr, sh_frame_t *f)
{
    char comp[16];
    const char *algo;

    if (f->rtype != SH_CQL_STARTUP) {
        f->cmd = (uint32_t) fr->algo;
        return;
    }
    algo = sh_cql_startup_compression(f, comp, sizeof(comp));
    fr->startup = 1;
    fr->lz4 = algo != NULL && strcmp(algo, "lz4") == 0;
    fr->algo = algo == NULL ? 0
               : fr->lz4 ? SH_CQL_BODY_LZ4
               : strcmp(algo, "snappy") == 0 ? SH_CQL_BODY_SNAPPY
               : 0;
}

int
sh_cql_framing_response(sh_cql_framing_t *fr, const sh_frame_t *f,
    sh_cql_reader_t *r)
{
    if (!fr->startup || (f->rtype != SH_CQL_READY
                         && f->rtype != SH_CQL_AUTHENTICATE))
    {
        return 0;
    }
    fr->startup = 0;
    if (sh_cql_frame_version(f) < 5) {
        return 0;
    }
    fr->segments = fr->lz4 ? SH_CQL_SEGMENTS_LZ4 : SH_CQL_SEGMENTS_PLAIN;
    sh_cql_reader_use_segments(r, fr->segments);
    return 1;
}

sh_frame_t *
sh_cql_framing_wrap(const sh_cql_framing_t *fr, sh_frame_t *const *frames,
    uint32_t n)
{
    sh_frame_t *seg;
    uint32_t len;

    if (!fr->segments || n == 0) {
        return NULL;
    }
    seg = sh_frame_alloc(SH_PROTO_CQL, 0);
    seg->buf = sh_cql_segments_encode(frames, n, fr->segments, &len);
    seg->data = seg->buf->data;
    seg->len = len;
    return seg;
}

/* --- bodies, for Lua ----------------------------------------------------- */

/*
 * sh_ffi_cql_body: the body of a CQL frame; a compressed v4 body is
 * decompressed into a buffer held by a frame that the running batch owns,
 * or outside a worker (specs) that the caller owns (SH_DECLINED).
 */
int
sh_ffi_cql_body(const sh_frame_t *f, sh_frame_t **holder,
    const uint8_t **body, size_t *len, const char **err)
{
    sh_frame_t *h;
    sh_buf_t *b;
    uint32_t n;

    *holder = NULL;
    if (f->proto != SH_PROTO_CQL || f->len < SH_CQL_HEADER_LEN) {
        *err = "not a CQL frame";
        return SH_ERROR;
    }
    if (!(f->data[1] & SH_CQL_FLAG_COMPRESSED) || sh_cql_frame_version(f) >= 5)
    {
        *body = f->data + SH_CQL_HEADER_LEN;
        *len = f->len - SH_CQL_HEADER_LEN;
        return SH_OK;
    }
    b = sh_cql_body_decompress(f, &n, err);
    if (b == NULL) {
        return SH_ERROR;
    }
    h = sh_frame_alloc(SH_PROTO_CQL, 0);
    h->buf = b;
    h->data = b->data;
    h->len = n;
    *body = b->data;
    *len = n;
    *holder = h;
    return sh_cycle_add_frame(h);
}

/*
 * sh_ffi_cql_set_body: give frame f a new body, keeping its header but the
 * length; a v4 frame that was compressed is compressed again the same way.
 * The frame is rewritten in place (its new bytes in a buffer of its own), so
 * the batch and the backend see the change, and marked modified.
 */
int
sh_ffi_cql_set_body(sh_frame_t *f, const uint8_t *body, size_t len,
    const char **err)
{
    int compressed = (f->data[1] & SH_CQL_FLAG_COMPRESSED)
                     && sh_cql_frame_version(f) < 5;
    sh_buf_t *cb = NULL, *nb;
    uint32_t blen = (uint32_t) len;

    if (f->proto != SH_PROTO_CQL || f->len < SH_CQL_HEADER_LEN) {
        *err = "not a CQL frame";
        return SH_ERROR;
    }
    if (len > sh_cql_default_limits.max_body_len * 16u) {
        *err = "body too big";
        return SH_ERROR;
    }
    if (compressed) {
        cb = sh_cql_body_compress(f, body, (uint32_t) len, &blen, err);
        if (cb == NULL) {
            return SH_ERROR;
        }
        body = cb->data;
    }
    nb = sh_buf_new(SH_CQL_HEADER_LEN + blen);
    memcpy(nb->data, f->data, 5);
    nb->data[5] = (uint8_t) (blen >> 24);
    nb->data[6] = (uint8_t) (blen >> 16);
    nb->data[7] = (uint8_t) (blen >> 8);
    nb->data[8] = (uint8_t) blen;
    memcpy(nb->data + SH_CQL_HEADER_LEN, body, blen);
    sh_buf_unref(cb);
    sh_buf_unref(f->buf);
    f->buf = nb;
    f->data = nb->data;
    f->len = SH_CQL_HEADER_LEN + blen;
    f->flags |= SH_FRAME_MODIFIED;
    return SH_OK;
}

/* --- Murmur3Partitioner tokens ------------------------------------------ */

static inline uint64_t
sh_rotl64(uint64_t v, int n)
{
    return (v << n) | (v >> (64 - n));
}

static inline uint64_t
sh_fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/* a tail byte as Cassandra's MurmurHash reads it: a Java byte, signed */
#define SH_TAIL(i, s) ((uint64_t) (int64_t) (int8_t) tail[i] << (s))

/*
 * sh_ffi_cql_token: the first half of MurmurHash3_x64_128 (seed 0) as
 * org.apache.cassandra.utils.MurmurHash.hash3_x64_128 computes it: blocks
 * are read as unsigned little-endian longs, but the tail's bytes are
 * sign-extended.  Long.MIN_VALUE is the partitioner's minimum, so it
 * becomes Long.MAX_VALUE (Murmur3Partitioner.normalize).
 */
int64_t
sh_ffi_cql_token(const uint8_t *key, size_t len)
{
    const uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
    uint64_t h1 = 0, h2 = 0, k1, k2;
    size_t nblocks = len >> 4, i;
    const uint8_t *tail;
    int64_t t;

    for (i = 0; i < nblocks; i++) {
        const uint8_t *b = key + i * 16;
        int j;

        k1 = 0;
        k2 = 0;
        for (j = 7; j >= 0; j--) {
            k1 = k1 << 8 | b[j];
            k2 = k2 << 8 | b[8 + j];
        }
        k1 *= c1; k1 = sh_rotl64(k1, 31); k1 *= c2; h1 ^= k1;
        h1 = sh_rotl64(h1, 27); h1 += h2; h1 = h1 * 5 + 0x52dce729;
        k2 *= c2; k2 = sh_rotl64(k2, 33); k2 *= c1; h2 ^= k2;
        h2 = sh_rotl64(h2, 31); h2 += h1; h2 = h2 * 5 + 0x38495ab5;
    }
    tail = key + nblocks * 16;
    k1 = 0;
    k2 = 0;
    switch (len & 15) {
    case 15: k2 ^= SH_TAIL(14, 48); /* fall through */
    case 14: k2 ^= SH_TAIL(13, 40); /* fall through */
    case 13: k2 ^= SH_TAIL(12, 32); /* fall through */
    case 12: k2 ^= SH_TAIL(11, 24); /* fall through */
    case 11: k2 ^= SH_TAIL(10, 16); /* fall through */
    case 10: k2 ^= SH_TAIL(9, 8);   /* fall through */
    case 9:
        k2 ^= SH_TAIL(8, 0);
        k2 *= c2; k2 = sh_rotl64(k2, 33); k2 *= c1; h2 ^= k2;
        /* fall through */
    case 8: k1 ^= SH_TAIL(7, 56);   /* fall through */
    case 7: k1 ^= SH_TAIL(6, 48);   /* fall through */
    case 6: k1 ^= SH_TAIL(5, 40);   /* fall through */
    case 5: k1 ^= SH_TAIL(4, 32);   /* fall through */
    case 4: k1 ^= SH_TAIL(3, 24);   /* fall through */
    case 3: k1 ^= SH_TAIL(2, 16);   /* fall through */
    case 2: k1 ^= SH_TAIL(1, 8);    /* fall through */
    case 1:
        k1 ^= SH_TAIL(0, 0);
        k1 *= c1; k1 = sh_rotl64(k1, 31); k1 *= c2; h1 ^= k1;
        break;
    default:
        break;
    }
    h1 ^= (uint64_t) len;
    h2 ^= (uint64_t) len;
    h1 += h2;
    h2 += h1;
    h1 = sh_fmix64(h1);
    h2 = sh_fmix64(h2);
    h1 += h2;
    t = (int64_t) h1;
    return t == INT64_MIN ? INT64_MAX : t;
}

#undef SH_TAIL

uint32_t
sh_ffi_cql_ring_find(const int64_t *ring, uint32_t n, const uint8_t *key,
    size_t len)
{
    int64_t t = sh_ffi_cql_token(key, len);
    uint32_t lo = 0, hi = n;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;

        if (ring[mid] < t) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo == n ? 0 : lo;
}
