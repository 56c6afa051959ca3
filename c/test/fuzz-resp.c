/*
 * fuzz-resp.c -- libFuzzer target for the RESP codec (t/run-fuzz resp).
 *
 * Each input goes to a request reader and to a reply reader, once whole
 * and once split in two at a byte derived from the input (through
 * sh_resp_reader_space/commit, the way a socket read fills the reader).
 * Every frame is drained and checked:
 *   - its bytes lie within what was fed: a reply frame is the next slice of
 *     the input, a multibulk request a later slice of it, an inline request
 *     the canonical encoding of its arguments; every argument lies within
 *     its frame, and a request re-encodes to its own bytes;
 *   - sh_resp_describe renders every reply frame, truncated or not;
 *   - whole or split, the frames are the same, and so are the pending
 *     bytes or the fact of an error, which stays sticky;
 *   - a reader that ended on a frame boundary decodes the input again the
 *     same way.
 * Half the inputs run with tiny limits so that the limit checks get
 * exercised too; the others with the defaults except max_bulk_len (1 MiB,
 * so that a declared 512 MiB bulk does not allocate that much each time).
 */
#include <stdio.h>

#include "sh_resp.h"

#define FZ_CHECK(cond, what)                                                 \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "fuzz-resp: %s (%s:%d)\n", (what), __FILE__,     \
                    __LINE__);                                               \
            abort();                                                         \
        }                                                                    \
    } while (0)

typedef struct fz_run_s {
    sh_frame_t **frames;
    int n;
    int cap;
    int failed;
    size_t pending;
} fz_run_t;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fz_push(fz_run_t *run, sh_frame_t *f)
{
    if (run->n == run->cap) {
        run->cap = run->cap ? run->cap * 2 : 16;
        run->frames = realloc(run->frames,
                              (size_t) run->cap * sizeof(sh_frame_t *));
        FZ_CHECK(run->frames != NULL, "out of memory");
    }
    run->frames[run->n++] = f;
}

static void
fz_free(fz_run_t *run)
{
    int i;

    for (i = 0; i < run->n; i++) {
        sh_frame_unref(run->frames[i]);
    }
    free(run->frames);
    memset(run, 0, sizeof(*run));
}

static void
fz_drain(sh_resp_reader_t *r, fz_run_t *run)
{
    sh_frame_t *f;
    const char *err;
    int rc;

    if (run->failed) {
        return;
    }
    for (;;) {
        f = NULL;
        rc = sh_resp_reader_next(r, &f);
        if (rc == SH_ERROR) {
            FZ_CHECK(f == NULL, "SH_ERROR with a frame");
            err = sh_resp_reader_error(r);
            FZ_CHECK(err != NULL && err[0] != '\0', "no error string");
            run->failed = 1;
            /* sticky */
            FZ_CHECK(sh_resp_reader_next(r, &f) == SH_ERROR && f == NULL,
                     "error not sticky");
            FZ_CHECK(sh_resp_reader_error(r) == err
                     || strcmp(sh_resp_reader_error(r), err) == 0,
                     "error string changed");
            return;
        }
        FZ_CHECK(rc == SH_OK, "next returned neither SH_OK nor SH_ERROR");
        if (f == NULL) {
            return;
        }
        FZ_CHECK(f->refs == 1, "a new frame has refs != 1");
        fz_push(run, f);
    }
}

/* Fill r with data[from, to) through space/commit, draining as it goes. */
static void
fz_fill(sh_resp_reader_t *r, const uint8_t *data, size_t from, size_t to,
    fz_run_t *run)
{
    uint8_t *p;
    size_t n;

    while (from < to) {
        sh_resp_reader_space(r, &p, &n);
        FZ_CHECK(p != NULL && n > 0, "reader_space gave no room");
        n = sh_min(n, to - from);
        memcpy(p, data + from, n);
        sh_resp_reader_commit(r, n);
        from += n;
        fz_drain(r, run);
    }
}

static void
fz_check_request(const sh_frame_t *f, const uint8_t *data, size_t size,
    size_t *consumed)
{
    const uint8_t **args;
    size_t *lens, o;
    sh_frame_t *g;
    int i;

    FZ_CHECK(f->argc > 0 && f->argv != NULL, "request without arguments");
    FZ_CHECK(f->rtype == '*', "request type is not '*'");
    args = malloc((size_t) f->argc * sizeof(uint8_t *));
    lens = malloc((size_t) f->argc * sizeof(size_t));
    FZ_CHECK(args != NULL && lens != NULL, "out of memory");
    for (i = 0; i < f->argc; i++) {
        FZ_CHECK((uint64_t) f->argv[i].off + f->argv[i].len <= f->len,
                 "argument outside its frame");
        args[i] = f->data + f->argv[i].off;
        lens[i] = f->argv[i].len;
    }
    g = sh_resp_encode_command(args, lens, f->argc);
    FZ_CHECK(g->len == f->len && memcmp(g->data, f->data, f->len) == 0,
             "request does not re-encode to its own bytes");
    FZ_CHECK(g->cmd == f->cmd || (f->cmd & SH_CMD_BLOCKING),
             "cmd bits differ from the encoder's");
    sh_frame_unref(g);
    free(args);
    free(lens);
    if (f->flags & SH_FRAME_INLINE) {
        /* a line of the input, at least as long as what it held */
        FZ_CHECK(*consumed < size, "inline frame past the input");
        o = *consumed;
        while (o < size && data[o] != '\n') {
            o++;
        }
        FZ_CHECK(o < size, "inline frame without a newline");
        *consumed = o + 1;
        return;
    }
    /* a later slice of the input: skipped lines and *0 may come first */
    for (o = *consumed; o + f->len <= size; o++) {
        if (data[o] == '*' && memcmp(data + o, f->data, f->len) == 0) {
            break;
        }
    }
    FZ_CHECK(o + f->len <= size, "request bytes are not in the input");
    *consumed = o + f->len;
}

static void
fz_check_reply(const sh_frame_t *f, const uint8_t *data, size_t size,
    size_t *consumed)
{
    char small[16];
    char *out;
    int n;

    FZ_CHECK(*consumed + f->len <= size
             && memcmp(data + *consumed, f->data, f->len) == 0,
             "reply is not the next slice of the input");
    *consumed += f->len;
    FZ_CHECK(!(f->flags & SH_FRAME_INLINE), "reply flagged inline");
    n = sh_resp_describe(f->data, f->len, small, sizeof(small));
    FZ_CHECK(n >= 0, "sh_resp_describe rejects a frame the reader gave");
    out = malloc((size_t) n + 1);
    FZ_CHECK(out != NULL, "out of memory");
    FZ_CHECK(sh_resp_describe(f->data, f->len, out, (size_t) n + 1) == n,
             "sh_resp_describe is not deterministic");
    /* (simple strings are rendered raw: a NUL in one ends the C string) */
    FZ_CHECK(out[n] == '\0', "describe output not terminated");
    FZ_CHECK(small[sh_min((size_t) n, sizeof(small) - 1)] == '\0',
             "truncated describe not terminated where it should be");
    FZ_CHECK((size_t) n < sizeof(small)
             || memcmp(out, small, sizeof(small) - 4) == 0,
             "truncated describe is not a prefix");
    free(out);
}

static void
fz_check_frames(int mode, const fz_run_t *run, const uint8_t *data,
    size_t size)
{
    size_t consumed = 0;
    int i;

    for (i = 0; i < run->n; i++) {
        const sh_frame_t *f = run->frames[i];

        FZ_CHECK(f->buf != NULL && f->data >= f->buf->data
                 && f->data + f->len <= f->buf->data + f->buf->cap,
                 "frame outside its buffer");
        FZ_CHECK(f->len > 0 && f->proto == SH_PROTO_REDIS, "empty frame");
        if (mode == SH_RESP_REQUEST) {
            fz_check_request(f, data, size, &consumed);
        } else {
            fz_check_reply(f, data, size, &consumed);
        }
    }
    if (!run->failed) {
        FZ_CHECK(run->pending <= size - consumed, "pending too large");
        FZ_CHECK(mode == SH_RESP_REQUEST
                 || run->pending == size - consumed,
                 "reply bytes neither framed nor pending");
    }
}

static void
fz_compare(const fz_run_t *a, const fz_run_t *b)
{
    int i;

    FZ_CHECK(a->n == b->n, "whole and split give different frame counts");
    for (i = 0; i < a->n; i++) {
        const sh_frame_t *x = a->frames[i], *y = b->frames[i];

        FZ_CHECK(x->len == y->len && memcmp(x->data, y->data, x->len) == 0,
                 "whole and split give different frames");
        FZ_CHECK(x->argc == y->argc && x->rtype == y->rtype
                 && x->flags == y->flags && x->cmd == y->cmd,
                 "whole and split give different frame fields");
    }
    FZ_CHECK(a->failed == b->failed,
             "whole and split disagree on the error");
    FZ_CHECK(a->failed || a->pending == b->pending,
             "whole and split leave different pending bytes");
}

static void
fz_one(int mode, const sh_resp_limits_t *lim, const uint8_t *data,
    size_t size, size_t split)
{
    sh_resp_reader_t *r;
    fz_run_t whole, again, parts;

    memset(&whole, 0, sizeof(whole));
    memset(&again, 0, sizeof(again));
    memset(&parts, 0, sizeof(parts));

    r = sh_resp_reader_new(mode, lim);
    sh_resp_reader_feed(r, data, size);
    fz_drain(r, &whole);
    whole.pending = sh_resp_reader_pending(r);
    if (!whole.failed && whole.pending == 0) {
        /* the same reader again, the first frames still held */
        sh_resp_reader_feed(r, data, size);
        fz_drain(r, &again);
        again.pending = sh_resp_reader_pending(r);
        fz_compare(&whole, &again);
    }
    sh_resp_reader_free(r);

    r = sh_resp_reader_new(mode, lim);
    fz_fill(r, data, 0, split, &parts);
    fz_fill(r, data, split, size, &parts);
    parts.pending = sh_resp_reader_pending(r);
    sh_resp_reader_free(r);

    fz_check_frames(mode, &whole, data, size);
    fz_check_frames(mode, &parts, data, size);
    if (again.n > 0) {
        fz_check_frames(mode, &again, data, size);
    }
    fz_compare(&whole, &parts);
    fz_free(&whole);
    fz_free(&again);
    fz_free(&parts);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const sh_resp_limits_t tiny = { 16, 4, 16, 3 };
    sh_resp_limits_t lim = sh_resp_default_limits;
    uint32_t h = 2166136261u;
    size_t i, split;

    /* FNV-1a of the input picks the split point and the limits */
    for (i = 0; i < size; i++) {
        h = (h ^ data[i]) * 16777619u;
    }
    split = size ? h % (size + 1) : 0;
    lim.max_bulk_len = 1024 * 1024;
    if (h & 0x80000000u) {
        lim = tiny;
    }
    fz_one(SH_RESP_REQUEST, &lim, data, size, split);
    fz_one(SH_RESP_REPLY, &lim, data, size, split);
    return 0;
}
