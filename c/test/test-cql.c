/*
 * test-cql.c -- tests of the CQL framing codec (c/sh_cql.c).
 *
 * usage: test-cql [FIXTURES_DIR]
 *
 * Synthetic cases: v4 frames and v5 segments (plain and LZ4, envelopes that
 * share a segment and envelopes that span several) are encoded, then decoded
 * whole, split in two at every byte boundary and fed byte by byte, twice with
 * one reader; every frame must come back byte for byte.  Malformed input
 * (bad CRCs, unsupported versions, oversized bodies, wrong direction) must
 * give the exact error, sticky, with the stream id where one was readable.
 * With FIXTURES_DIR (t/fixtures/cql), every session captured from a real
 * Cassandra 5.0 (v3, v4 plain/LZ4/Snappy, v5 plain/LZ4, with and without
 * authentication) is decoded whole, byte by byte and in halves, switching to
 * segments where a real connection does, and must give exactly the frames
 * the independent decoder (decode.py) listed in frames.tsv: proof that the
 * framing, CRCs and LZ4 match Cassandra's.
 *
 * The last line is "N passed, M failed"; the exit status is non-zero on
 * any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sh_cql.h"

#include "check.h"

/* an envelope: header + body of `body` bytes filled with a pattern */
static sh_frame_t *
envelope(int version, int response, int stream, int opcode, uint32_t body)
{
    uint8_t *d = malloc(SH_CQL_HEADER_LEN + body);
    sh_frame_t *f;
    uint32_t i;

    d[0] = (uint8_t) (version | (response ? 0x80 : 0));
    d[1] = 0;
    d[2] = (uint8_t) (stream >> 8);
    d[3] = (uint8_t) stream;
    d[4] = (uint8_t) opcode;
    d[5] = (uint8_t) (body >> 24);
    d[6] = (uint8_t) (body >> 16);
    d[7] = (uint8_t) (body >> 8);
    d[8] = (uint8_t) body;
    for (i = 0; i < body; i++) {
        d[SH_CQL_HEADER_LEN + i] = (uint8_t) (i * 7 + stream);
    }
    f = sh_frame_copy(SH_PROTO_CQL, d, SH_CQL_HEADER_LEN + body);
    free(d);
    return f;
}

/*
 * Decode input with the reader fed in pieces split at `cut` (0: whole,
 * 1: byte by byte, else split in two at cut), expecting the n frames.
 * Returns 1 when every frame matched.
 */
static int
decode_matches(sh_cql_reader_t *r, const uint8_t *in, size_t len,
    size_t cut, sh_frame_t **want, uint32_t n)
{
    uint32_t got = 0;
    size_t off = 0, step;
    sh_frame_t *f;
    int ok = 1;

    while (off < len || cut == 0) {
        if (cut == 0) {
            step = len;
        } else if (cut == 1) {
            step = 1;
        } else {
            step = off < cut ? cut - off : len - off;
        }
        sh_cql_reader_feed(r, in + off, step);
        off += step;
        for (;;) {
            if (sh_cql_reader_next(r, &f) != SH_OK) {
                printf("# error: %s\n", sh_cql_reader_error(r));
                return 0;
            }
            if (f == NULL) {
                break;
            }
            if (got >= n || f->len != want[got]->len
                || memcmp(f->data, want[got]->data, f->len) != 0
                || f->rtype != want[got]->data[4])
            {
                ok = 0;
            }
            got++;
            sh_frame_unref(f);
        }
        if (cut == 0) {
            break;
        }
    }
    return ok && got == n && sh_cql_reader_pending(r) == 0;
}

static void
check_all_splits(const char *what, const uint8_t *in, size_t len, int mode,
    int segments, sh_frame_t **want, uint32_t n)
{
    sh_cql_reader_t *r;
    size_t cut, bad = 0, stride;
    int round;

    /* whole and byte by byte, twice on one reader */
    r = sh_cql_reader_new(mode, NULL);
    sh_cql_reader_use_segments(r, segments);
    for (round = 0; round < 2; round++) {
        CHECK(decode_matches(r, in, len, 0, want, n), "%s: whole, round %d",
              what, round);
        CHECK(decode_matches(r, in, len, 1, want, n),
              "%s: byte by byte, round %d", what, round);
    }
    sh_cql_reader_free(r);
    /* split in two at every boundary (sampled past 64 KiB) */
    stride = len > 65536 ? len / 4096 : 1;
    for (cut = 2; cut < len; cut += stride) {
        r = sh_cql_reader_new(mode, NULL);
        sh_cql_reader_use_segments(r, segments);
        if (!decode_matches(r, in, len, cut, want, n)) {
            bad++;
            if (bad < 4) {
                printf("# %s: split at %zu failed\n", what, cut);
            }
        }
        sh_cql_reader_free(r);
    }
    CHECK(bad == 0, "%s: %zu of the splits failed", what, bad);
}

static void
test_v4_frames(void)
{
    sh_frame_t *f[4];
    uint8_t *in;
    size_t len = 0;
    uint32_t i;

    f[0] = envelope(4, 0, 0, SH_CQL_OPTIONS, 0);
    f[1] = envelope(4, 0, 1, SH_CQL_STARTUP, 22);
    f[2] = envelope(4, 0, 32767, SH_CQL_QUERY, 300);
    f[3] = envelope(4, 0, 2, SH_CQL_EXECUTE, 70000);
    for (i = 0; i < 4; i++) {
        len += f[i]->len;
    }
    in = malloc(len);
    for (len = 0, i = 0; i < 4; i++) {
        memcpy(in + len, f[i]->data, f[i]->len);
        len += f[i]->len;
    }
    check_all_splits("v4 requests", in, len, SH_CQL_REQUEST, 0, f, 4);
    free(in);
    for (i = 0; i < 4; i++) {
        sh_frame_unref(f[i]);
    }
}

static void
test_v5_segments(int how)
{
    const char *name = how == SH_CQL_SEGMENTS_LZ4 ? "v5 lz4" : "v5 plain";
    sh_frame_t *f[5];
    uint32_t len, i;
    sh_buf_t *b;
    char what[64];

    f[0] = envelope(5, 1, 0, SH_CQL_RESULT, 10);
    f[1] = envelope(5, 1, 1, SH_CQL_RESULT, 1000);
    f[2] = envelope(5, 1, 2, SH_CQL_RESULT, 300000); /* spans 3 segments */
    f[3] = envelope(5, 1, -1, SH_CQL_EVENT, 40);
    f[4] = envelope(5, 1, 3, SH_CQL_RESULT, 131071 - 9); /* exactly one */
    b = sh_cql_segments_encode(f, 5, how, &len);
    snprintf(what, sizeof(what), "%s responses", name);
    check_all_splits(what, b->data, len, SH_CQL_RESPONSE, how, f, 5);
    sh_buf_unref(b);
    for (i = 0; i < 5; i++) {
        sh_frame_unref(f[i]);
    }
}

static void
expect_error(const char *what, const uint8_t *in, size_t len, int mode,
    int segments, const char *want, int want_stream)
{
    sh_cql_reader_t *r = sh_cql_reader_new(mode, NULL);
    sh_frame_t *f = NULL;
    int rc = SH_OK;

    sh_cql_reader_use_segments(r, segments);
    sh_cql_reader_feed(r, in, len);
    while (rc == SH_OK) {
        rc = sh_cql_reader_next(r, &f);
        if (rc != SH_OK || f == NULL) {
            break;
        }
        sh_frame_unref(f);
    }
    CHECK(rc == SH_ERROR && strstr(sh_cql_reader_error(r), want) != NULL,
          "%s: want error \"%s\", got %s", what, want,
          rc == SH_ERROR ? sh_cql_reader_error(r) : "none");
    CHECK(sh_cql_reader_error_stream(r) == want_stream,
          "%s: error stream %d, want %d", what,
          sh_cql_reader_error_stream(r), want_stream);
    CHECK(sh_cql_reader_next(r, &f) == SH_ERROR, "%s: error is sticky",
          what);
    sh_cql_reader_free(r);
}

static void
test_errors(void)
{
    sh_frame_t *f;
    sh_buf_t *b;
    uint32_t len;
    uint8_t *copy;

    /* a driver opening with v6 (or v65) must learn what we support */
    f = envelope(6, 0, 7, SH_CQL_OPTIONS, 0);
    expect_error("v6 request", f->data, f->len, SH_CQL_REQUEST, 0,
                 "Invalid or unsupported protocol version (6); supported "
                 "versions are (3/v3, 4/v4, 5/v5)", 7);
    sh_frame_unref(f);
    f = envelope(2, 0, 3, SH_CQL_STARTUP, 0);
    expect_error("v2 request", f->data, f->len, SH_CQL_REQUEST, 0,
                 "unsupported protocol version (2)", 3);
    sh_frame_unref(f);
    /* a body over the limit is refused from its header alone */
    f = envelope(4, 0, 9, SH_CQL_QUERY, 0);
    copy = malloc(f->len);
    memcpy(copy, f->data, f->len);
    copy[5] = 0x10;                      /* 256 MiB */
    expect_error("oversized body", copy, SH_CQL_HEADER_LEN, SH_CQL_REQUEST,
                 0, "Request is too big: length 268435456 exceeds maximum "
                 "allowed length 16777216", 9);
    free(copy);
    sh_frame_unref(f);
    /* a response where a request belongs */
    f = envelope(4, 1, 4, SH_CQL_RESULT, 0);
    expect_error("wrong direction", f->data, f->len, SH_CQL_REQUEST, 0,
                 "Wrong message direction", 4);
    sh_frame_unref(f);
    /* corrupted segments */
    f = envelope(5, 0, 5, SH_CQL_QUERY, 50);
    b = sh_cql_segments_encode(&f, 1, SH_CQL_SEGMENTS_PLAIN, &len);
    copy = malloc(len);
    memcpy(copy, b->data, len);
    copy[3] ^= 0x01;
    expect_error("bad header CRC24", copy, len, SH_CQL_REQUEST,
                 SH_CQL_SEGMENTS_PLAIN, "bad segment header CRC24", -1);
    memcpy(copy, b->data, len);
    copy[12] ^= 0x40;
    expect_error("bad payload CRC32", copy, len, SH_CQL_REQUEST,
                 SH_CQL_SEGMENTS_PLAIN, "bad segment payload CRC32", -1);
    free(copy);
    sh_buf_unref(b);
    sh_frame_unref(f);
}

static void
test_crc(void)
{
    /* known answers from an independent implementation: the DataStax
     * Python driver's cassandra/segment.py (compute_crc24, compute_crc32) */
    CHECK(sh_cql_crc24(1u << 17, 3) == 0xc4366a, "crc24 of an empty "
          "self-contained header");
    CHECK(sh_cql_crc24(5 | (1u << 17), 3) == 0x9a9919, "crc24 of a 5-byte "
          "self-contained header");
    CHECK(sh_cql_crc24(0x123456789ull, 5) == 0x15f28c, "crc24 of a 5-byte "
          "(LZ4) header");
    CHECK(sh_cql_crc32((const uint8_t *) "", 0) == 0x44777ed3,
          "crc32 of nothing, primed");
    CHECK(sh_cql_crc32((const uint8_t *) "hello world", 11) == 0x4a62481f,
          "crc32 of hello world, primed");
}

/* --- captured sessions -------------------------------------------------- */

typedef struct want_s {
    char file[64];           /* capture file */
    int opcode;              /* expected opcode */
    int stream;              /* expected stream */
    uint32_t body;           /* expected body length on the wire */
} want_t;

static int
opcode_of(const char *name)
{
    static const char *const names[] = {
        "ERROR", "STARTUP", "READY", "AUTHENTICATE", "", "OPTIONS",
        "SUPPORTED", "QUERY", "RESULT", "PREPARE", "EXECUTE", "REGISTER",
        "EVENT", "BATCH", "AUTH_CHALLENGE", "AUTH_RESPONSE", "AUTH_SUCCESS"
    };
    int i;

    for (i = 0; i < (int) (sizeof(names) / sizeof(names[0])); i++) {
        if (strcmp(names[i], name) == 0) {
            return i;
        }
    }
    return -1;
}

static uint8_t *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *d;
    long n;

    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    d = malloc((size_t) n + 1);
    if (fread(d, 1, (size_t) n, f) != (size_t) n) {
        n = 0;
    }
    fclose(f);
    *len = (size_t) n;
    return d;
}

/*
 * Decode one captured direction fed `step` bytes at a time (0: whole),
 * switching to v5 segments where a real connection does: after the
 * client's STARTUP in client bytes, after READY or AUTHENTICATE in server
 * bytes.  Returns how many frames matched `want` in order, or -1.
 */
/* Did the session's STARTUP (in its .c2s file) ask for lz4? */
static int
session_lz4(const char *dir, const char *name)
{
    char path[512], comp[16];
    const char *dot = strrchr(name, '.');
    sh_cql_reader_t *r;
    sh_frame_t *f;
    uint8_t *d;
    size_t len;
    int lz4 = 0;

    snprintf(path, sizeof(path), "%s/%.*s.c2s", dir, (int) (dot - name),
             name);
    d = slurp(path, &len);
    if (d == NULL) {
        return 0;
    }
    r = sh_cql_reader_new(SH_CQL_REQUEST, NULL);
    sh_cql_reader_feed(r, d, len);
    while (sh_cql_reader_next(r, &f) == SH_OK && f != NULL) {
        int startup = f->rtype == SH_CQL_STARTUP;

        if (startup) {
            lz4 = sh_cql_startup_compression(f, comp, sizeof(comp)) != NULL
                  && strcmp(comp, "lz4") == 0;
        }
        sh_frame_unref(f);
        if (startup) {
            break;
        }
    }
    sh_cql_reader_free(r);
    free(d);
    return lz4;
}

static int
decode_capture(const char *name, int lz4, const uint8_t *d, size_t len,
    size_t step, const want_t *want, int nwant, sh_frame_t **segs,
    int *nsegs)
{
    int response = strstr(name, ".s2c") != NULL;
    int switched = 0;
    sh_cql_reader_t *r = sh_cql_reader_new(response ? SH_CQL_RESPONSE
                                                    : SH_CQL_REQUEST, NULL);
    size_t off = 0, n;
    int got = 0, ok = 1;
    sh_frame_t *f;

    while (off < len && ok) {
        n = step == 0 ? len - off : sh_min(step, len - off);
        sh_cql_reader_feed(r, d + off, n);
        off += n;
        for (;;) {
            if (sh_cql_reader_next(r, &f) != SH_OK) {
                printf("# %s: %s\n", name, sh_cql_reader_error(r));
                ok = 0;
                break;
            }
            if (f == NULL) {
                break;
            }
            if (got >= nwant || f->rtype != want[got].opcode
                || f->argc != want[got].stream
                || f->len - SH_CQL_HEADER_LEN != want[got].body)
            {
                printf("# %s frame %d: opcode %d stream %d body %u\n", name,
                       got, f->rtype, f->argc, f->len - SH_CQL_HEADER_LEN);
                ok = 0;
            }
            if (segs != NULL && switched && *nsegs < 4096) {
                segs[(*nsegs)++] = sh_frame_ref(f);
            }
            if (sh_cql_frame_version(f) >= 5
                && ((!response && f->rtype == SH_CQL_STARTUP)
                    || (response && (f->rtype == SH_CQL_READY
                                     || f->rtype == SH_CQL_AUTHENTICATE))))
            {
                sh_cql_reader_use_segments(r, lz4 ? SH_CQL_SEGMENTS_LZ4
                                                  : SH_CQL_SEGMENTS_PLAIN);
                switched = 1;
            }
            got++;
            sh_frame_unref(f);
        }
    }
    if (ok && sh_cql_reader_pending(r) != 0) {
        printf("# %s: %zu bytes left over\n", name,
               sh_cql_reader_pending(r));
        ok = 0;
    }
    sh_cql_reader_free(r);
    return ok ? got : -1;
}

/*
 * Round trip: the envelopes a real v5 session carried in segments, wrapped
 * again by our encoder, must decode to the same envelopes.
 */
static void
check_resegment(const char *name, int lz4, sh_frame_t **frames, int n)
{
    int how = lz4 ? SH_CQL_SEGMENTS_LZ4 : SH_CQL_SEGMENTS_PLAIN;
    int response = strstr(name, ".s2c") != NULL;
    sh_cql_reader_t *r;
    uint32_t len;
    sh_buf_t *b;
    sh_frame_t *f;
    int got = 0, ok = 1;

    b = sh_cql_segments_encode(frames, (uint32_t) n, how, &len);
    r = sh_cql_reader_new(response ? SH_CQL_RESPONSE : SH_CQL_REQUEST, NULL);
    sh_cql_reader_use_segments(r, how);
    sh_cql_reader_feed(r, b->data, len);
    while (sh_cql_reader_next(r, &f) == SH_OK && f != NULL) {
        if (got >= n || f->len != frames[got]->len
            || memcmp(f->data, frames[got]->data, f->len) != 0)
        {
            ok = 0;
        }
        got++;
        sh_frame_unref(f);
    }
    CHECK(ok && got == n && sh_cql_reader_error(r) == NULL,
          "%s: %d segmented envelopes re-encoded, %d came back%s", name, n,
          got, ok ? "" : " changed");
    sh_cql_reader_free(r);
    sh_buf_unref(b);
}

static void
test_fixtures(const char *dir)
{
    static sh_frame_t *segs[4096];
    char path[512], line[512], file[64], opname[32];
    want_t *want = NULL;
    int nwant = 0, cap = 0, i, j, files = 0;
    FILE *tsv;

    snprintf(path, sizeof(path), "%s/frames.tsv", dir);
    tsv = fopen(path, "r");
    CHECK(tsv != NULL, "open %s", path);
    if (tsv == NULL) {
        return;
    }
    while (fgets(line, sizeof(line), tsv) != NULL) {
        int idx, stream, version;
        unsigned body;
        char off[32], seg[16], flags[16];

        if (line[0] == '#') {
            continue;
        }
        if (sscanf(line, "%63s %d %31s %15s %d %15s %d %31s %u", file, &idx,
                   off, seg, &version, flags, &stream, opname, &body) != 9)
        {
            continue;
        }
        if (nwant == cap) {
            cap = cap ? cap * 2 : 256;
            want = realloc(want, (size_t) cap * sizeof(*want));
        }
        snprintf(want[nwant].file, sizeof(want[nwant].file), "%s", file);
        want[nwant].opcode = opcode_of(opname);
        want[nwant].stream = stream;
        want[nwant].body = body;
        nwant++;
    }
    fclose(tsv);
    for (i = 0; i < nwant; i = j) {
        uint8_t *d;
        size_t len;
        int whole, bytewise, mid, lz4, nsegs;

        for (j = i; j < nwant && strcmp(want[j].file, want[i].file) == 0;
             j++)
        {
        }
        snprintf(path, sizeof(path), "%s/%s", dir, want[i].file);
        d = slurp(path, &len);
        CHECK(d != NULL, "read %s", path);
        if (d == NULL) {
            continue;
        }
        lz4 = session_lz4(dir, want[i].file);
        nsegs = 0;
        whole = decode_capture(want[i].file, lz4, d, len, 0, want + i,
                               j - i, segs, &nsegs);
        bytewise = decode_capture(want[i].file, lz4, d, len, 1, want + i,
                                  j - i, NULL, NULL);
        mid = decode_capture(want[i].file, lz4, d, len, len / 2 + 1,
                             want + i, j - i, NULL, NULL);
        if (nsegs > 0) {
            check_resegment(want[i].file, lz4, segs, nsegs);
            while (nsegs > 0) {
                sh_frame_unref(segs[--nsegs]);
            }
        }
        CHECK(whole == j - i && bytewise == j - i && mid == j - i,
              "%s: %d frames whole, %d byte by byte, %d in halves; want %d",
              want[i].file, whole, bytewise, mid, j - i);
        free(d);
        files++;
    }
    CHECK(files >= 20, "only %d captured sessions found", files);
    free(want);
}

int
main(int argc, char **argv)
{
    test_crc();
    if (argc > 1) {
        test_fixtures(argv[1]);
    }
    test_v4_frames();
    test_v5_segments(SH_CQL_SEGMENTS_PLAIN);
    test_v5_segments(SH_CQL_SEGMENTS_LZ4);
    test_errors();
    sh_buf_pools_free();
    return CHECK_DONE();
}
