/*
 * fuzz-cql.h -- CQL conversations for the fuzz targets (fuzz-cql.c,
 * fuzz-chain.c): how an input is laid out and read as the proxy reads it,
 * its structure (the envelopes of each direction), and the
 * structure-aware mutation that writes it again with valid framing.
 * Included once per target.
 *
 * An input is one conversation, what a client sent and what the node
 * answered:
 *
 *   byte 0     the state it starts in: bits 0-1 FZ_HANDSHAKE (frames, the
 *              handshake's switch to v5 segments ahead), FZ_SEG (v5
 *              segments), FZ_SEG_LZ4 (LZ4 segments) or FZ_FRAMES (v3/v4
 *              frames, handshake done); bits 2-3 the v4 body compression
 *              in force until a STARTUP says otherwise (0 none, 1 LZ4,
 *              2 Snappy); the other bits are the target's
 *   byte 1     where a second reading cuts each direction
 *   bytes 2-3  the length of the client's bytes (little-endian)
 *   ...        the client's bytes, then the node's
 *
 * Both directions are read as the proxy reads them (sh_cql_framing_*):
 * requests up to a STARTUP, answers up to READY or AUTHENTICATE (which
 * switch v5 to segments in both directions, LZ4 ones when the STARTUP
 * asked for LZ4), then the rest of each.
 *
 * fz_cql_mutate parses an input into its envelopes, mutates one (its body
 * through LLVMFuzzerMutate, a header field) or the list, and writes the
 * conversation again in the framing its reader will expect at each point,
 * with valid lengths, CRCs and compression, segment boundaries drawn at
 * random; one time in sixteen it mutates the raw bytes instead, one in
 * thirty-two it breaks a byte after writing, and now and then a segment
 * lies behind valid CRCs, so broken framing stays covered.  fz_cql_crossover splices the envelope lists of two inputs.
 */
#ifndef SH_FUZZ_CQL_H
#define SH_FUZZ_CQL_H

#include <stdio.h>

#include <lz4.h>

#include "sh_cql.h"

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);
/* what the CQL-shaped targets (fuzz-cql, fuzz-chain) give libFuzzer */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size,
    unsigned int seed);
size_t LLVMFuzzerCustomCrossOver(const uint8_t *data1, size_t size1,
    const uint8_t *data2, size_t size2, uint8_t *out, size_t max_out,
    unsigned int seed);

#define FZ_CHECK(cond, what)                                                 \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "fuzz: %s (%s:%d)\n", (what), __FILE__,          \
                    __LINE__);                                               \
            abort();                                                         \
        }                                                                    \
    } while (0)

enum {
    FZ_HANDSHAKE = 0,        /* frames; the handshake switches v5 */
    FZ_SEG = 1,              /* v5 segments */
    FZ_SEG_LZ4 = 2,          /* v5 LZ4 segments */
    FZ_FRAMES = 3            /* v3/v4 frames, handshake done */
};

enum { FZ_REQ = 0, FZ_RESP = 1 };

#define FZ_HDR 4                         /* state, split, client length */
#define FZ_MAX_BODY (1u << 20)           /* the readers' body limit */
#define FZ_MAX_ENV 1024                  /* envelopes kept per direction */

static uint32_t
fz_rand(uint32_t *s)                     /* xorshift32 */
{
    uint32_t x = *s ? *s : 0x9e3779b9u;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x;
    return x;
}

/* --- a conversation, as the proxy reads it ------------------------------ */

typedef struct fz_conv_s fz_conv_t;

struct fz_conv_s {
    uint8_t state;           /* byte 0 of the input */
    sh_cql_reader_t *r[2];   /* requests, responses: switched by framing */
    sh_cql_framing_t fr[2];  /* the client connection's, the node's */
    int mode[2];             /* framing each direction is read in now */
    /* the next envelope of a direction: SH_OK with one or NULL at the end,
     * SH_ERROR when that direction failed */
    int (*next)(fz_conv_t *cv, int dir, sh_frame_t **f);
    /* an envelope, with the framing it was read in */
    void (*visit)(fz_conv_t *cv, int dir, sh_frame_t *f, int mode);
    void *ctx;               /* the caller's */
};

static void
fz_requests(fz_conv_t *cv, int until_startup)
{
    sh_frame_t *f;
    int startup;

    for (;;) {
        if (cv->next(cv, FZ_REQ, &f) != SH_OK || f == NULL) {
            return;
        }
        /* the client's connection, and the node's that it goes on to */
        sh_cql_framing_request(&cv->fr[0], f);
        sh_cql_framing_request(&cv->fr[1], f);
        cv->visit(cv, FZ_REQ, f, cv->mode[FZ_REQ]);
        startup = f->rtype == SH_CQL_STARTUP;
        sh_frame_unref(f);
        if (until_startup && startup) {
            return;
        }
    }
}

static void
fz_responses(fz_conv_t *cv, int until_answer)
{
    sh_frame_t *f;
    int done;

    for (;;) {
        if (cv->next(cv, FZ_RESP, &f) != SH_OK || f == NULL) {
            return;
        }
        f->cmd = (uint32_t) cv->fr[1].algo;   /* as sh_cql_pool.c does */
        cv->visit(cv, FZ_RESP, f, cv->mode[FZ_RESP]);
        if (sh_cql_framing_response(&cv->fr[1], f, cv->r[FZ_RESP])) {
            cv->mode[FZ_RESP] = cv->fr[1].segments;
        }
        if (sh_cql_framing_response(&cv->fr[0], f, cv->r[FZ_REQ])) {
            cv->mode[FZ_REQ] = cv->fr[0].segments;
        }
        done = until_answer && !cv->fr[0].startup;
        sh_frame_unref(f);
        if (done) {
            return;
        }
    }
}

/* Requests up to a STARTUP, responses up to its answer, then the rest:
 * a driver waits for READY before it sends in the new framing. */
static void
fz_converse(fz_conv_t *cv)
{
    int how = 0, algo = (cv->state >> 2) & 3, d;

    if ((cv->state & 3) == FZ_SEG) {
        how = SH_CQL_SEGMENTS_PLAIN;
    } else if ((cv->state & 3) == FZ_SEG_LZ4) {
        how = SH_CQL_SEGMENTS_LZ4;
    }
    for (d = 0; d < 2; d++) {
        memset(&cv->fr[d], 0, sizeof(cv->fr[d]));
        cv->fr[d].algo = algo == 3 ? 0 : algo;
        cv->fr[d].segments = how;
        cv->fr[d].lz4 = how == SH_CQL_SEGMENTS_LZ4;
        cv->mode[d] = how;
        if (how) {
            sh_cql_reader_use_segments(cv->r[d], how);
        }
    }
    fz_requests(cv, 1);
    if (cv->fr[0].startup) {
        fz_responses(cv, 1);
    }
    fz_requests(cv, 0);
    fz_responses(cv, 0);
}

static sh_cql_reader_t *
fz_reader(int dir)
{
    sh_cql_limits_t lim = { .max_body_len = FZ_MAX_BODY };

    return sh_cql_reader_new(dir == FZ_REQ ? SH_CQL_REQUEST : SH_CQL_RESPONSE,
                             &lim);
}

/* --- reading an input ---------------------------------------------------- */

typedef struct fz_side_s {
    const uint8_t *d;        /* this direction's bytes */
    size_t len;              /* how many */
    size_t fed;              /* given to the reader so far */
    size_t cut;              /* fed in two parts: up to here, then the rest */
    int failed;              /* the reader failed */
    uint32_t n;              /* envelopes read */
    uint64_t hash;           /* of their bytes, in order */
    sh_frame_t **keep;       /* the envelopes, kept by the visitor */
    uint32_t nkeep;          /* how many */
} fz_side_t;

typedef struct fz_read_s {
    fz_side_t side[2];
} fz_read_t;

static int
fz_read_next(fz_conv_t *cv, int dir, sh_frame_t **f)
{
    fz_side_t *s = &((fz_read_t *) cv->ctx)->side[dir];
    sh_cql_reader_t *r = cv->r[dir];
    const char *err;
    uint8_t *p;
    size_t n, to;
    uint32_t i;

    *f = NULL;
    if (s->failed) {
        return SH_ERROR;
    }
    for (;;) {
        if (sh_cql_reader_next(r, f) != SH_OK) {
            FZ_CHECK(*f == NULL, "SH_ERROR with a frame");
            err = sh_cql_reader_error(r);
            FZ_CHECK(err != NULL && err[0] != '\0', "an error without text");
            FZ_CHECK(sh_cql_reader_next(r, f) == SH_ERROR && *f == NULL,
                     "the error is not sticky");
            /* what the proxy answers the error with: a stream it read (or
             * -1) and a version a client of that version can read */
            FZ_CHECK(sh_cql_reader_error_stream(r) >= INT16_MIN
                     && sh_cql_reader_error_stream(r) <= INT16_MAX
                     && sh_cql_reader_error_version(r) >= 1
                     && sh_cql_reader_error_version(r) <= 127
                     && (sh_cql_reader_version(r) == 0
                         || sh_cql_reader_error_version(r)
                            == sh_cql_reader_version(r)),
                     "an error without a stream or version to answer it");
            s->failed = 1;
            return SH_ERROR;
        }
        if (*f != NULL) {
            s->n++;
            for (i = 0; i < (*f)->len; i++) {
                s->hash = s->hash * 1099511628211ull + (*f)->data[i];
            }
            return SH_OK;
        }
        if (s->fed == s->len) {
            return SH_OK;
        }
        /* what a socket read does: into the reader's own space */
        to = s->fed < s->cut ? s->cut : s->len;
        while (s->fed < to) {
            sh_cql_reader_space(r, &p, &n);
            FZ_CHECK(p != NULL && n > 0, "reader_space gave no room");
            n = sh_min(n, to - s->fed);
            memcpy(p, s->d + s->fed, n);
            sh_cql_reader_commit(r, n);
            s->fed += n;
        }
    }
}

/* Split an input into its directions; 0 when it is too short. */
static int
fz_split(const uint8_t *data, size_t size, const uint8_t **c, size_t *clen,
    const uint8_t **s, size_t *slen)
{
    size_t n;

    if (size < FZ_HDR) {
        return 0;
    }
    n = data[2] | ((size_t) data[3] << 8);
    n = sh_min(n, size - FZ_HDR);
    *c = data + FZ_HDR;
    *clen = n;
    *s = data + FZ_HDR + n;
    *slen = size - FZ_HDR - n;
    return 1;
}

/* --- the structure: envelopes of each direction -------------------------- */

typedef struct fz_env_s {
    uint8_t h[SH_CQL_HEADER_LEN]; /* the header (length rewritten) */
    uint8_t *body;           /* the body, decompressed when `packed` */
    uint32_t blen;           /* its length */
    uint8_t packed;          /* compress with the algorithm in force */
    uint8_t mode;            /* framing it goes in (planned) */
    uint8_t algo;            /* v4 body compression in force (planned) */
} fz_env_t;

typedef struct fz_list_s {
    fz_env_t *e;             /* the envelopes */
    uint32_t n;              /* how many */
    const uint8_t *tail;     /* bytes after the last one read (borrowed) */
    size_t tail_len;         /* how many */
} fz_list_t;

typedef struct fz_in_s {
    uint8_t state;           /* byte 0 */
    uint8_t split;           /* byte 1 */
    fz_list_t side[2];       /* requests, responses */
} fz_in_t;

static void
fz_env_set(fz_env_t *e, const sh_frame_t *f)
{
    const char *err;
    sh_buf_t *b = NULL;
    uint32_t n;

    memcpy(e->h, f->data, SH_CQL_HEADER_LEN);
    e->packed = 0;
    if ((f->data[1] & SH_CQL_FLAG_COMPRESSED) && sh_cql_frame_version(f) < 5
        && f->cmd != 0)
    {
        b = sh_cql_body_decompress(f, &n, &err);
    }
    if (b != NULL) {
        e->packed = 1;
        e->blen = n;
        e->body = sh_alloc(n + 1);
        memcpy(e->body, b->data, n);
        sh_buf_unref(b);
    } else {
        e->blen = f->len - SH_CQL_HEADER_LEN;
        e->body = sh_alloc(e->blen + 1);
        memcpy(e->body, f->data + SH_CQL_HEADER_LEN, e->blen);
    }
}

typedef struct fz_parse_s {
    fz_read_t rd;            /* how the input is read (first: fz_read_next
                                takes the context as one) */
    fz_in_t *in;             /* what is filled */
} fz_parse_t;

static void
fz_parse_visit(fz_conv_t *cv, int dir, sh_frame_t *f, int mode)
{
    fz_list_t *l = &((fz_parse_t *) cv->ctx)->in->side[dir];

    sh_unused(mode);
    if (l->n < FZ_MAX_ENV) {
        fz_env_set(&l->e[l->n++], f);
    }
}

/* An input as envelopes; what the readers could not read is each
 * direction's tail (borrowed from data). */
static void
fz_parse(const uint8_t *data, size_t size, fz_in_t *in)
{
    fz_parse_t ps;
    fz_conv_t cv;
    size_t pend;
    int d;

    memset(in, 0, sizeof(*in));
    memset(&ps, 0, sizeof(ps));
    memset(&cv, 0, sizeof(cv));
    in->state = data[0];
    in->split = data[1];
    ps.in = in;
    fz_split(data, size, &ps.rd.side[0].d, &ps.rd.side[0].len,
             &ps.rd.side[1].d, &ps.rd.side[1].len);
    for (d = 0; d < 2; d++) {
        in->side[d].e = sh_calloc(FZ_MAX_ENV, sizeof(fz_env_t));
        ps.rd.side[d].cut = ps.rd.side[d].len;
        cv.r[d] = fz_reader(d);
    }
    cv.state = in->state;
    cv.next = fz_read_next;
    cv.visit = fz_parse_visit;
    cv.ctx = &ps;
    fz_converse(&cv);
    for (d = 0; d < 2; d++) {
        /* roughly what was not read: the end of the bytes */
        pend = sh_min(sh_cql_reader_pending(cv.r[d]), ps.rd.side[d].len);
        if (ps.rd.side[d].failed && pend == 0) {
            pend = ps.rd.side[d].len;    /* failed on the first bytes */
        }
        in->side[d].tail = ps.rd.side[d].d + ps.rd.side[d].len - pend;
        in->side[d].tail_len = pend;
        sh_cql_reader_free(cv.r[d]);
    }
}

static void
fz_in_free(fz_in_t *in)
{
    uint32_t i;
    int d;

    for (d = 0; d < 2; d++) {
        for (i = 0; i < in->side[d].n; i++) {
            sh_free(in->side[d].e[i].body);
        }
        sh_free(in->side[d].e);
    }
}

/* --- writing it again ---------------------------------------------------- */

typedef struct fz_plan_s {
    fz_in_t *in;             /* the envelopes */
    uint32_t at[2];          /* next one of each direction */
} fz_plan_t;

static int
fz_plan_next(fz_conv_t *cv, int dir, sh_frame_t **f)
{
    fz_plan_t *pl = cv->ctx;
    fz_list_t *l = &pl->in->side[dir];
    fz_env_t *e;
    uint8_t *tmp;
    uint32_t n;

    *f = NULL;
    if (pl->at[dir] == l->n) {
        return SH_OK;
    }
    e = &l->e[pl->at[dir]];
    n = SH_CQL_HEADER_LEN + e->blen;
    tmp = sh_alloc(n);
    memcpy(tmp, e->h, SH_CQL_HEADER_LEN);
    memcpy(tmp + SH_CQL_HEADER_LEN, e->body, e->blen);
    *f = sh_frame_copy(SH_PROTO_CQL, tmp, n);
    (*f)->rtype = e->h[4];
    (*f)->argc = (int16_t) ((e->h[2] << 8) | e->h[3]);
    sh_free(tmp);
    return SH_OK;
}

static void
fz_plan_visit(fz_conv_t *cv, int dir, sh_frame_t *f, int mode)
{
    fz_plan_t *pl = cv->ctx;
    fz_env_t *e = &pl->in->side[dir].e[pl->at[dir]++];

    e->mode = (uint8_t) mode;
    e->algo = (uint8_t) f->cmd;
}

/* The framing and body compression each envelope meets when read, the
 * readers' own logic run over the envelopes. */
static void
fz_plan(fz_in_t *in)
{
    fz_plan_t pl;
    fz_conv_t cv;
    int d;

    memset(&pl, 0, sizeof(pl));
    memset(&cv, 0, sizeof(cv));
    pl.in = in;
    for (d = 0; d < 2; d++) {
        cv.r[d] = fz_reader(d);
    }
    cv.state = in->state;
    cv.next = fz_plan_next;
    cv.visit = fz_plan_visit;
    cv.ctx = &pl;
    fz_converse(&cv);
    for (d = 0; d < 2; d++) {
        sh_cql_reader_free(cv.r[d]);
    }
}

typedef struct fz_out_s {
    uint8_t *p;              /* where */
    size_t len;              /* written */
    size_t cap;              /* room */
    int full;                /* something did not fit */
} fz_out_t;

static void
fz_put(fz_out_t *o, const void *p, size_t n)
{
    if (n == 0) {
        return;
    }
    if (o->full || o->cap - o->len < n) {
        o->full = 1;
        return;
    }
    memcpy(o->p + o->len, p, n);
    o->len += n;
}

static void
fz_put_le(fz_out_t *o, uint64_t v, int n)
{
    uint8_t b[8];
    int i;

    for (i = 0; i < n; i++) {
        b[i] = (uint8_t) (v >> (8 * i));
    }
    fz_put(o, b, (size_t) n);
}

/*
 * One v5 segment of payload p[0..n); LZ4 ones compressed when it pays
 * (and the draw says so: an uncompressed LZ4 segment is valid too).  One
 * segment in sixteen lies behind valid CRCs, so the reader's checks of
 * what is inside are reached: cut short (an envelope ends past a
 * self-contained segment), a declared LZ4 length one off, bytes past the
 * end of a spread envelope; or an empty segment goes first.
 */
static void
fz_segment(fz_out_t *o, const uint8_t *p, uint32_t n, int self, int mode,
    uint32_t *rng)
{
    uint32_t crc, lie = fz_rand(rng) % 64;
    uint8_t *more = NULL;
    uint64_t h;
    char *z = NULL;
    int got = 0;

    if (lie == 0 && n > 0) {
        n = fz_rand(rng) % n;                     /* cut short */
    } else if (lie == 1) {
        fz_segment(o, p, 0, 1, mode, rng);        /* empty, first */
    } else if (lie == 2 && !self) {
        more = sh_alloc(n + 8);                   /* bytes past the end */
        memcpy(more, p, n);
        memset(more + n, 0x5a, 8);
        p = more;
        n += 1 + fz_rand(rng) % 8;
    }
    if (mode == SH_CQL_SEGMENTS_LZ4) {
        if (fz_rand(rng) % 4 != 0) {
            z = sh_alloc((size_t) LZ4_compressBound((int) n) + 1);
            got = LZ4_compress_default((const char *) p, z, (int) n,
                                       LZ4_compressBound((int) n));
        }
        if (got > 0 && (uint32_t) got < n) {
            if (lie == 3) {
                n += fz_rand(rng) & 1 ? 1 : (uint32_t) -1; /* one off */
            }
            h = (uint64_t) got | ((uint64_t) (n & 0x1ffff) << 17)
                | ((uint64_t) (self != 0) << 34);
            p = (const uint8_t *) z;
            n = (uint32_t) got;
        } else {
            h = n | ((uint64_t) (self != 0) << 34);
        }
        fz_put_le(o, h, 5);
        fz_put_le(o, sh_cql_crc24(h, 5), 3);
    } else {
        h = n | ((uint64_t) (self != 0) << 17);
        fz_put_le(o, h, 3);
        fz_put_le(o, sh_cql_crc24(h, 3), 3);
    }
    crc = sh_cql_crc32(p, n);
    fz_put(o, p, n);
    fz_put_le(o, crc, 4);
    sh_free(z);
    sh_free(more);
}

/* An envelope's bytes on the wire (compressed as planned); caller frees. */
static uint8_t *
fz_wire(const fz_env_t *e, uint32_t *len)
{
    const uint8_t *body = e->body;
    uint32_t blen = e->blen;
    sh_buf_t *cb = NULL;
    sh_frame_t f;
    const char *err;
    uint8_t *w;

    if (e->packed && e->algo != 0 && (e->h[1] & SH_CQL_FLAG_COMPRESSED)
        && (e->h[0] & 0x7f) < 5)
    {
        memset(&f, 0, sizeof(f));
        f.cmd = e->algo;
        cb = sh_cql_body_compress(&f, e->body, e->blen, &blen, &err);
        if (cb != NULL) {
            body = cb->data;
        } else {
            blen = e->blen;
        }
    }
    w = sh_alloc(SH_CQL_HEADER_LEN + blen);
    memcpy(w, e->h, 5);
    w[5] = (uint8_t) (blen >> 24);
    w[6] = (uint8_t) (blen >> 16);
    w[7] = (uint8_t) (blen >> 8);
    w[8] = (uint8_t) blen;
    memcpy(w + SH_CQL_HEADER_LEN, body, blen);
    sh_buf_unref(cb);
    *len = SH_CQL_HEADER_LEN + blen;
    return w;
}

/* A direction's envelopes in the framing planned for each: frames as they
 * are, segments grouped (and big envelopes cut) at random. */
static void
fz_write_side(fz_out_t *o, const fz_list_t *l, uint32_t *rng)
{
    uint8_t *grp = sh_alloc(SH_CQL_SEGMENT_MAX);
    uint32_t glen = 0, i, len, off, part;
    int gmode = 0;
    uint8_t *w;

    for (i = 0; i < l->n; i++) {
        const fz_env_t *e = &l->e[i];

        w = fz_wire(e, &len);
        if (glen > 0 && (e->mode != gmode || e->mode == 0
                         || glen + len > SH_CQL_SEGMENT_MAX))
        {
            fz_segment(o, grp, glen, 1, gmode, rng);
            glen = 0;
        }
        if (e->mode == 0) {
            fz_put(o, w, len);
        } else if (len > SH_CQL_SEGMENT_MAX || fz_rand(rng) % 8 == 0) {
            /* spread over segments that are not self-contained */
            for (off = 0; off < len; off += part) {
                part = 1 + fz_rand(rng) % (len - off);
                part = sh_min(part, (uint32_t) SH_CQL_SEGMENT_MAX);
                fz_segment(o, w + off, part, 0, e->mode, rng);
            }
        } else {
            memcpy(grp + glen, w, len);
            glen += len;
            gmode = e->mode;
            if (fz_rand(rng) % 4 == 0) {
                fz_segment(o, grp, glen, 1, gmode, rng);
                glen = 0;
            }
        }
        sh_free(w);
    }
    if (glen > 0) {
        fz_segment(o, grp, glen, 1, gmode, rng);
    }
    fz_put(o, l->tail, l->tail_len);
    sh_free(grp);
}

/* The input again into out (cap bytes); its length, or 0 when it does not
 * fit. */
static size_t
fz_encode(fz_in_t *in, uint8_t *out, size_t cap, uint32_t *rng)
{
    fz_out_t o = { out, 0, cap, 0 };
    uint8_t hdr[FZ_HDR] = { in->state, in->split, 0, 0 };
    size_t c;

    fz_plan(in);
    fz_put(&o, hdr, FZ_HDR);
    fz_write_side(&o, &in->side[FZ_REQ], rng);
    c = o.len - FZ_HDR;
    fz_write_side(&o, &in->side[FZ_RESP], rng);
    if (o.full || c > 0xffff) {
        return 0;
    }
    out[2] = (uint8_t) c;
    out[3] = (uint8_t) (c >> 8);
    return o.len;
}

/* --- mutation ------------------------------------------------------------ */

static const uint8_t fz_req_ops[] = {
    SH_CQL_STARTUP, SH_CQL_OPTIONS, SH_CQL_QUERY, SH_CQL_PREPARE,
    SH_CQL_EXECUTE, SH_CQL_REGISTER, SH_CQL_BATCH, SH_CQL_AUTH_RESPONSE
};
static const uint8_t fz_resp_ops[] = {
    SH_CQL_ERROR, SH_CQL_READY, SH_CQL_AUTHENTICATE, SH_CQL_SUPPORTED,
    SH_CQL_RESULT, SH_CQL_EVENT, SH_CQL_AUTH_CHALLENGE, SH_CQL_AUTH_SUCCESS
};

static void
fz_env_copy(fz_env_t *to, const fz_env_t *from)
{
    *to = *from;
    to->body = sh_alloc(from->blen + 1);
    memcpy(to->body, from->body, from->blen);
}

static void
fz_mutate(fz_in_t *in, uint32_t *rng, size_t max_size)
{
    fz_list_t *l;
    fz_env_t *e, t;
    uint32_t i, k, cap;
    uint8_t *b;
    int dir;

    dir = in->side[FZ_REQ].n == 0 ? FZ_RESP
          : in->side[FZ_RESP].n == 0 ? FZ_REQ
          : (int) (fz_rand(rng) & 1);
    l = &in->side[dir];
    i = fz_rand(rng) % l->n;
    e = &l->e[i];
    switch (fz_rand(rng) % 16) {
    case 8:                              /* another opcode */
        if (fz_rand(rng) % 8 == 0) {
            e->h[4] = (uint8_t) fz_rand(rng);
        } else if (dir == FZ_REQ) {
            e->h[4] = fz_req_ops[fz_rand(rng) % sizeof(fz_req_ops)];
        } else {
            e->h[4] = fz_resp_ops[fz_rand(rng) % sizeof(fz_resp_ops)];
        }
        break;
    case 9:                              /* a flag */
        e->h[1] ^= (uint8_t) (1u << (fz_rand(rng) % 5));
        break;
    case 10:                             /* another stream */
        k = fz_rand(rng);
        if (k % 4 == 0) {
            k = 0xffff;                  /* -1: an event's */
        } else if (k % 4 == 1) {
            k = (uint32_t) ((l->e[k % l->n].h[2] << 8) | l->e[k % l->n].h[3]);
        } else {
            k %= 64;
        }
        e->h[2] = (uint8_t) (k >> 8);
        e->h[3] = (uint8_t) k;
        break;
    case 11:                             /* another version, for all */
        k = 3 + fz_rand(rng) % 3;
        if (fz_rand(rng) % 16 == 0) {
            k = fz_rand(rng) & 0x7f;
        }
        for (i = 0; i < l->n; i++) {
            l->e[i].h[0] = (uint8_t) ((l->e[i].h[0] & 0x80) | k);
        }
        break;
    case 12:                             /* one envelope twice */
        if (l->n < FZ_MAX_ENV) {
            fz_env_copy(&t, e);
            memmove(e + 1, e, (l->n - i) * sizeof(*e));
            l->e[i] = t;
            l->n++;
        }
        break;
    case 13:                             /* one less */
        sh_free(e->body);
        memmove(e, e + 1, (l->n - i - 1) * sizeof(*e));
        l->n--;
        break;
    case 14:                             /* two swapped */
        k = fz_rand(rng) % l->n;
        t = l->e[k];
        l->e[k] = *e;
        *e = t;
        break;
    case 15:                             /* the state, the cut, the tail */
        k = fz_rand(rng) % 3;
        if (k == 0) {
            in->state = (uint8_t) fz_rand(rng);
        } else if (k == 1) {
            in->split = (uint8_t) fz_rand(rng);
        } else {
            for (dir = 0; dir < 2; dir++) {
                in->side[dir].tail_len = 0;
            }
        }
        break;
    default:                             /* the body */
        cap = (uint32_t) sh_min((size_t) e->blen * 2 + 64, max_size);
        b = sh_alloc(sh_max(cap, e->blen) + 1);
        memcpy(b, e->body, e->blen);
        k = (uint32_t) LLVMFuzzerMutate(b, e->blen, sh_max(cap, e->blen));
        sh_free(e->body);
        e->body = b;
        e->blen = k;
        break;
    }
}

/*
 * A mutation of the conversation data[0..size) in place (max_size bytes of
 * room); its new size.  fresh: the conversation starts at the handshake,
 * as a new connection does (fuzz-chain.c), whatever the mutation does to
 * byte 0.
 */
static size_t
fz_cql_mutate(uint8_t *data, size_t size, size_t max_size, unsigned int seed,
    int fresh)
{
    uint32_t rng = seed;
    uint8_t *out;
    fz_in_t in;
    size_t n = 0;

    if (size < FZ_HDR || fz_rand(&rng) % 16 == 0) {
        return LLVMFuzzerMutate(data, size, max_size);
    }
    fz_parse(data, size, &in);
    if (in.side[FZ_REQ].n + in.side[FZ_RESP].n > 0) {
        fz_mutate(&in, &rng, max_size);
        if (fresh) {
            in.state &= (uint8_t) ~3;
        }
        out = sh_alloc(max_size);
        n = fz_encode(&in, out, max_size, &rng);
        if (n > 0) {
            memcpy(data, out, n);
            if (fz_rand(&rng) % 32 == 0 && n > FZ_HDR) {
                data[FZ_HDR + fz_rand(&rng) % (n - FZ_HDR)] ^=
                    (uint8_t) (1u << (fz_rand(&rng) % 8));
            }
        }
        sh_free(out);
    }
    fz_in_free(&in);
    return n > 0 ? n : LLVMFuzzerMutate(data, size, max_size);
}

/* The first envelopes of one conversation and the last ones of another,
 * in out; its size, or 0. */
static size_t
fz_cql_crossover(const uint8_t *data1, size_t size1, const uint8_t *data2,
    size_t size2, uint8_t *out, size_t max_out, unsigned int seed)
{
    uint32_t rng = seed, i, k, j, n;
    fz_in_t a, b, c;
    size_t len;
    int d;

    if (size1 < FZ_HDR || size2 < FZ_HDR) {
        return 0;
    }
    fz_parse(data1, size1, &a);
    fz_parse(data2, size2, &b);
    c = a;
    for (d = 0; d < 2; d++) {
        /* a's first envelopes, then b's last ones */
        k = a.side[d].n ? fz_rand(&rng) % (a.side[d].n + 1) : 0;
        j = b.side[d].n ? fz_rand(&rng) % (b.side[d].n + 1) : 0;
        c.side[d].e = sh_calloc(FZ_MAX_ENV, sizeof(fz_env_t));
        n = 0;
        for (i = 0; i < k; i++) {
            fz_env_copy(&c.side[d].e[n++], &a.side[d].e[i]);
        }
        for (i = j; i < b.side[d].n && n < FZ_MAX_ENV; i++) {
            fz_env_copy(&c.side[d].e[n++], &b.side[d].e[i]);
        }
        c.side[d].n = n;
        c.side[d].tail = b.side[d].tail;
        c.side[d].tail_len = b.side[d].tail_len;
    }
    len = fz_encode(&c, out, max_out, &rng);
    fz_in_free(&a);
    fz_in_free(&b);
    fz_in_free(&c);
    return len;
}

#endif /* SH_FUZZ_CQL_H */
