/*
 * fuzz-cql.c -- libFuzzer target for the CQL framing codec (c/sh_cql.c).
 *
 * The first input byte picks the reader: request or response, and v3/v4
 * framing or v5 segments (plain or LZ4); the second a split point.  The
 * rest is fed whole to one reader and in two parts to another; both must
 * give the same frames (or the same error), every frame must be a whole
 * envelope (9-byte header plus the body length it declares), and errors
 * must be sticky.  ASan and UBSan watch every byte.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sh_cql.h"

typedef struct fz_out_s {
    uint32_t n;              /* frames */
    uint64_t hash;           /* of their bytes, in order */
    int failed;              /* ended in an error */
} fz_out_t;

static void
fz_check_frame(const sh_frame_t *f)
{
    uint32_t body;

    if (f->len < SH_CQL_HEADER_LEN) {
        abort();
    }
    body = ((uint32_t) f->data[5] << 24) | ((uint32_t) f->data[6] << 16)
           | ((uint32_t) f->data[7] << 8) | f->data[8];
    if (f->len != SH_CQL_HEADER_LEN + body || f->rtype != f->data[4]) {
        abort();
    }
}

static void
fz_drain(sh_cql_reader_t *r, fz_out_t *o)
{
    sh_frame_t *f;
    uint32_t i;

    for (;;) {
        if (sh_cql_reader_next(r, &f) != SH_OK) {
            o->failed = 1;
            if (sh_cql_reader_next(r, &f) != SH_ERROR) {
                abort();                 /* errors are sticky */
            }
            return;
        }
        if (f == NULL) {
            return;
        }
        fz_check_frame(f);
        o->n++;
        for (i = 0; i < f->len; i++) {
            o->hash = o->hash * 1099511628211ull + f->data[i];
        }
        sh_frame_unref(f);
    }
}

static void
fz_run(int mode, int seg, const uint8_t *d, size_t len, size_t cut,
    fz_out_t *o)
{
    sh_cql_limits_t lim = { .max_body_len = 1 << 20 };
    sh_cql_reader_t *r = sh_cql_reader_new(mode, &lim);

    sh_cql_reader_use_segments(r, seg);
    memset(o, 0, sizeof(*o));
    sh_cql_reader_feed(r, d, cut);
    fz_drain(r, o);
    if (!o->failed) {
        sh_cql_reader_feed(r, d + cut, len - cut);
        fz_drain(r, o);
    }
    sh_cql_reader_free(r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int segs[3] = { 0, SH_CQL_SEGMENTS_PLAIN,
                                 SH_CQL_SEGMENTS_LZ4 };
    fz_out_t whole, split;
    int mode, seg;
    size_t cut;

    if (size < 2) {
        return 0;
    }
    mode = (data[0] & 1) ? SH_CQL_RESPONSE : SH_CQL_REQUEST;
    seg = segs[(data[0] >> 1) % 3];
    cut = size > 2 ? data[1] % (size - 2) : 0;
    data += 2;
    size -= 2;
    fz_run(mode, seg, data, size, size, &whole);
    fz_run(mode, seg, data, size, cut, &split);
    if (whole.failed != split.failed
        || (!whole.failed && (whole.n != split.n || whole.hash != split.hash)))
    {
        abort();                         /* the split changed the result */
    }
    return 0;
}
