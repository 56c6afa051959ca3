/*
 * test-resp.c -- the RESP codec against the fixtures of t/fixtures/resp.
 *
 * Usage: test-resp FIXTURES_DIR [NAME]   (NAME: only fixtures whose name
 *                                        contains NAME, and no unit checks)
 *
 * For every case of FIXTURES_DIR/cases.txt (format in README.md there) the
 * fixture's bytes are decoded:
 *   - whole, in one feed;
 *   - split in two feeds at every byte boundary (fixtures over 16 KiB: a
 *     sample of boundaries, all of them with SH_TEST_RESP_FULL=1);
 *   - one byte per feed, in pseudo-random chunks, and through
 *     sh_resp_reader_space/commit the way a socket read fills the reader;
 * and every way twice with the same reader when the input ends on a frame
 * boundary, the frames of the first pass held while the second one runs and
 * checked again after the reader is freed.  Each frame is checked against
 * the expected one: reply frames are the exact input bytes (zero-copy slices
 * of the reader's buffer) and render as expected with sh_resp_describe;
 * request frames have the expected arguments and re-encode with
 * sh_resp_encode_command to their own bytes, which for multibulk input are
 * the input's.  Malformed input must give SH_ERROR with exactly the expected
 * sh_resp_reader_error, and keep giving it.  Then sh_resp_classify,
 * sh_resp_encode_command and sh_resp_describe get a few unit checks.
 *
 * Output is TAP-like; the last line is "N passed, M failed" and the exit
 * status is non-zero when anything failed.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>

#include "sh_resp.h"

#define T_BIG (16 * 1024)        /* above this, sample the split points */
#define T_MAX_DIAG 8             /* failure details printed per check */

enum {
    F_ARGS = 1,                  /* a multibulk request */
    F_INLINE,                    /* an inline request */
    F_REPLY                      /* a reply */
};

enum {
    E_COMPLETE = 0,              /* input ends on a frame boundary */
    E_PENDING,                   /* input ends inside a frame */
    E_ERROR,                     /* exact error string */
    E_ERROR_PREFIX               /* error string starting with this */
};

typedef struct exp_frame_s {
    int kind;                    /* F_* */
    int resp3;                   /* reply: SH_FRAME_RESP3 expected */
    uint32_t start;              /* offset in the fixture */
    uint32_t len;                /* bytes */
    int nargs;                   /* request: argument count */
    uint8_t **args;              /* request: arguments (NULL: length only) */
    size_t *lens;                /* request: argument lengths */
    char *text;                  /* reply: describe text, or its prefix */
    size_t textlen;              /* its length */
    long needed;                 /* reply-long: describe's return value */
} exp_frame_t;

typedef struct tcase_s {
    char name[256];              /* fixture file name */
    int line;                    /* where the case starts in cases.txt */
    int mode;                    /* SH_RESP_REQUEST or SH_RESP_REPLY */
    sh_resp_limits_t lim;        /* limits for the reader */
    exp_frame_t *frames;         /* expected frames */
    int nframes;
    int endkind;                 /* E_* */
    size_t pending;              /* E_PENDING: bytes left over */
    char *error;                 /* E_ERROR*: the error (or prefix) */
    uint8_t *data;               /* the fixture's bytes */
    size_t len;
} tcase_t;

/* Frames and outcome of decoding one input with one reader. */
typedef struct run_s {
    sh_frame_t **frames;
    int n;
    int cap;
    int failed;                  /* sh_resp_reader_next gave SH_ERROR */
    char err[256];               /* its error string */
    int bad_out;                 /* SH_ERROR or no frame, but *out set */
    size_t pending;              /* sh_resp_reader_pending at the end */
} run_t;

static int t_passed;
static int t_failed;
static int t_diag;               /* details printed for the current check */
static int t_ok;                 /* the current check holds so far */

static void
diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
diag(const char *fmt, ...)
{
    va_list ap;

    t_ok = 0;
    if (t_diag++ >= T_MAX_DIAG) {
        return;
    }
    printf("#   ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static void
check_begin(void)
{
    t_ok = 1;
    t_diag = 0;
}

static void
check_end(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
check_end(const char *fmt, ...)
{
    va_list ap;

    if (t_diag > T_MAX_DIAG) {
        printf("#   (%d more)\n", t_diag - T_MAX_DIAG);
    }
    printf("%s %d - ", t_ok ? "ok" : "not ok", t_passed + t_failed + 1);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (t_ok) {
        t_passed++;
    } else {
        t_failed++;
    }
    fflush(stdout);
}

/* --- reading the fixtures -------------------------------------------- */

static void *
xalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);

    if (p == NULL) {
        fprintf(stderr, "test-resp: out of memory\n");
        exit(2);
    }
    return p;
}

static uint8_t *
read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *data;
    long n;

    if (f == NULL) {
        fprintf(stderr, "test-resp: %s: %s\n", path, strerror(errno));
        exit(2);
    }
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0
        || fseek(f, 0, SEEK_SET) != 0)
    {
        fprintf(stderr, "test-resp: %s: cannot size\n", path);
        exit(2);
    }
    data = xalloc((size_t) n + 1);
    if (n > 0 && fread(data, 1, (size_t) n, f) != (size_t) n) {
        fprintf(stderr, "test-resp: %s: short read\n", path);
        exit(2);
    }
    fclose(f);
    data[n] = '\0';
    *len = (size_t) n;
    return data;
}

static int
hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/*
 * Parse a C-escaped "quoted" token at *p into a new buffer; *p moves past
 * it.  Returns NULL if malformed.
 */
static uint8_t *
parse_quoted(const char **p, size_t *len)
{
    const char *s = *p;
    uint8_t *out;
    size_t n = 0;

    if (*s != '"') {
        return NULL;
    }
    out = xalloc(strlen(s));
    for (s++; *s != '"'; s++) {
        if (*s == '\0') {
            free(out);
            return NULL;
        }
        if (*s != '\\') {
            out[n++] = (uint8_t) *s;
            continue;
        }
        s++;
        switch (*s) {
        case 'r':
            out[n++] = '\r';
            break;
        case 'n':
            out[n++] = '\n';
            break;
        case 't':
            out[n++] = '\t';
            break;
        case '"':
        case '\\':
            out[n++] = (uint8_t) *s;
            break;
        case 'x':
            if (hexval(s[1]) < 0 || hexval(s[2]) < 0) {
                free(out);
                return NULL;
            }
            out[n++] = (uint8_t) (hexval(s[1]) * 16 + hexval(s[2]));
            s += 2;
            break;
        default:
            free(out);
            return NULL;
        }
    }
    *p = s + 1;
    *len = n;
    return out;
}

static void
skip_spaces(const char **p)
{
    while (**p == ' ') {
        (*p)++;
    }
}

static int
parse_u32(const char **p, uint32_t *out)
{
    char *end;
    unsigned long v;

    skip_spaces(p);
    errno = 0;
    v = strtoul(*p, &end, 10);
    if (end == *p || errno != 0 || v > UINT32_MAX) {
        return -1;
    }
    *p = end;
    *out = (uint32_t) v;
    return 0;
}

static void
syntax(const char *file, int line, const char *what)
{
    fprintf(stderr, "test-resp: %s:%d: %s\n", file, line, what);
    exit(2);
}

static exp_frame_t *
add_frame(tcase_t *tc)
{
    tc->frames = realloc(tc->frames, (size_t) (tc->nframes + 1)
                                     * sizeof(exp_frame_t));
    if (tc->frames == NULL) {
        fprintf(stderr, "test-resp: out of memory\n");
        exit(2);
    }
    memset(&tc->frames[tc->nframes], 0, sizeof(exp_frame_t));
    return &tc->frames[tc->nframes++];
}

/* "args START LEN TOKEN..." or "inline START LEN TOKEN..." */
static int
parse_request_frame(exp_frame_t *e, const char *p)
{
    int cap = 8;

    if (parse_u32(&p, &e->start) != 0 || parse_u32(&p, &e->len) != 0) {
        return -1;
    }
    e->args = xalloc((size_t) cap * sizeof(uint8_t *));
    e->lens = xalloc((size_t) cap * sizeof(size_t));
    for (;;) {
        skip_spaces(&p);
        if (*p == '\0') {
            break;
        }
        if (e->nargs == cap) {
            cap *= 2;
            e->args = realloc(e->args, (size_t) cap * sizeof(uint8_t *));
            e->lens = realloc(e->lens, (size_t) cap * sizeof(size_t));
            if (e->args == NULL || e->lens == NULL) {
                fprintf(stderr, "test-resp: out of memory\n");
                exit(2);
            }
        }
        if (*p == '#') {
            uint32_t n;

            p++;
            if (parse_u32(&p, &n) != 0) {
                return -1;
            }
            e->args[e->nargs] = NULL;
            e->lens[e->nargs] = n;
        } else {
            e->args[e->nargs] = parse_quoted(&p, &e->lens[e->nargs]);
            if (e->args[e->nargs] == NULL) {
                return -1;
            }
        }
        e->nargs++;
    }
    return e->nargs > 0 ? 0 : -1;
}

/* "reply START LEN TEXT", "reply-q ... QUOTED", "reply-long ... N PREFIX" */
static int
parse_reply_frame(exp_frame_t *e, const char *p, const char *suffix)
{
    uint32_t needed;
    uint8_t *q;

    if (parse_u32(&p, &e->start) != 0 || parse_u32(&p, &e->len) != 0) {
        return -1;
    }
    e->needed = -1;
    if (strcmp(suffix, "-long") == 0) {
        if (parse_u32(&p, &needed) != 0) {
            return -1;
        }
        e->needed = needed;
    }
    if (*p != ' ') {
        return -1;
    }
    p++;
    if (strcmp(suffix, "-q") == 0) {
        q = parse_quoted(&p, &e->textlen);
        if (q == NULL || *p != '\0') {
            free(q);
            return -1;
        }
        e->text = (char *) q;
        return 0;
    }
    if (suffix[0] != '\0' && strcmp(suffix, "-long") != 0) {
        return -1;
    }
    e->textlen = strlen(p);
    e->text = xalloc(e->textlen + 1);
    memcpy(e->text, p, e->textlen);
    return 0;
}

static void
parse_limits(tcase_t *tc, const char *p, const char *file, int line)
{
    char key[32];
    uint32_t v;
    int n;

    tc->lim = sh_resp_default_limits;
    for (;;) {
        skip_spaces(&p);
        if (*p == '\0') {
            return;
        }
        if (sscanf(p, "%31[a-z]=%n", key, &n) != 1) {
            syntax(file, line, "bad limit");
        }
        p += n;
        if (parse_u32(&p, &v) != 0) {
            syntax(file, line, "bad limit value");
        }
        if (strcmp(key, "bulk") == 0) {
            tc->lim.max_bulk_len = v;
        } else if (strcmp(key, "elements") == 0) {
            tc->lim.max_elements = v;
        } else if (strcmp(key, "inline") == 0) {
            tc->lim.max_inline_len = v;
        } else if (strcmp(key, "depth") == 0) {
            tc->lim.max_depth = v;
        } else {
            syntax(file, line, "unknown limit");
        }
    }
}

static tcase_t *
load_cases(const char *dir, int *ncases)
{
    char path[4096], word[32], mode[32];
    const char *p;
    char *text, *line, *next;
    tcase_t *cases = NULL, *tc = NULL;
    size_t len;
    int n = 0, lineno = 0, off;

    snprintf(path, sizeof(path), "%s/cases.txt", dir);
    text = (char *) read_file(path, &len);
    for (line = text; line != NULL && *line != '\0'; line = next) {
        next = strchr(line, '\n');
        if (next != NULL) {
            *next++ = '\0';
        }
        lineno++;
        if (line[0] == '\0' || line[0] == '#') {
            continue;
        }
        if (sscanf(line, "%31s%n", word, &off) != 1) {
            syntax(path, lineno, "bad line");
        }
        p = line + off;
        if (tc == NULL) {
            if (strcmp(word, "case") != 0) {
                syntax(path, lineno, "expected 'case'");
            }
            cases = realloc(cases, (size_t) (n + 1) * sizeof(tcase_t));
            if (cases == NULL) {
                fprintf(stderr, "test-resp: out of memory\n");
                exit(2);
            }
            tc = &cases[n++];
            memset(tc, 0, sizeof(*tc));
            tc->line = lineno;
            if (sscanf(p, "%255s %31s%n", tc->name, mode, &off) != 2) {
                syntax(path, lineno, "expected 'case NAME MODE'");
            }
            if (strcmp(mode, "request") == 0) {
                tc->mode = SH_RESP_REQUEST;
            } else if (strcmp(mode, "reply") == 0) {
                tc->mode = SH_RESP_REPLY;
            } else {
                syntax(path, lineno, "mode is request or reply");
            }
            parse_limits(tc, p + off, path, lineno);
            snprintf(path, sizeof(path), "%s/%s", dir, tc->name);
            tc->data = read_file(path, &tc->len);
            snprintf(path, sizeof(path), "%s/cases.txt", dir);
            continue;
        }
        if (strcmp(word, "end") == 0) {
            tc = NULL;
            continue;
        }
        if (tc->endkind != E_COMPLETE) {
            syntax(path, lineno, "nothing may follow pending or error");
        }
        if (strcmp(word, "args") == 0 || strcmp(word, "inline") == 0) {
            exp_frame_t *e = add_frame(tc);

            e->kind = word[0] == 'a' ? F_ARGS : F_INLINE;
            if (tc->mode != SH_RESP_REQUEST
                || parse_request_frame(e, p) != 0)
            {
                syntax(path, lineno, "bad request frame");
            }
        } else if (strncmp(word, "reply", 5) == 0) {
            exp_frame_t *e = add_frame(tc);
            const char *suffix = word + 5;

            e->kind = F_REPLY;
            if (*suffix == '3') {
                e->resp3 = 1;
                suffix++;
            }
            if (tc->mode != SH_RESP_REPLY
                || parse_reply_frame(e, p, suffix) != 0)
            {
                syntax(path, lineno, "bad reply frame");
            }
        } else if (strcmp(word, "pending") == 0) {
            uint32_t v;

            if (parse_u32(&p, &v) != 0 || v == 0) {
                syntax(path, lineno, "bad pending");
            }
            tc->endkind = E_PENDING;
            tc->pending = v;
        } else if (strcmp(word, "error") == 0
                   || strcmp(word, "error-prefix") == 0)
        {
            size_t elen;

            skip_spaces(&p);
            tc->error = (char *) parse_quoted(&p, &elen);
            if (tc->error == NULL) {
                syntax(path, lineno, "bad error string");
            }
            tc->error[elen] = '\0';
            tc->endkind = word[5] == '\0' ? E_ERROR : E_ERROR_PREFIX;
        } else {
            syntax(path, lineno, "unknown directive");
        }
    }
    if (tc != NULL) {
        syntax(path, lineno, "missing 'end'");
    }
    free(text);
    *ncases = n;
    return cases;
}

static void
free_cases(tcase_t *cases, int n)
{
    int i, j, k;

    for (i = 0; i < n; i++) {
        for (j = 0; j < cases[i].nframes; j++) {
            exp_frame_t *e = &cases[i].frames[j];

            for (k = 0; k < e->nargs; k++) {
                free(e->args[k]);
            }
            free(e->args);
            free(e->lens);
            free(e->text);
        }
        free(cases[i].frames);
        free(cases[i].error);
        free(cases[i].data);
    }
    free(cases);
}

/* --- decoding ------------------------------------------------------------ */

static void
run_free(run_t *run)
{
    int i;

    for (i = 0; i < run->n; i++) {
        sh_frame_unref(run->frames[i]);
    }
    free(run->frames);
    memset(run, 0, sizeof(*run));
}

/* Take every frame the reader has; stop at "need more" or an error. */
static void
drain(sh_resp_reader_t *r, run_t *run)
{
    sh_frame_t *f;
    const char *err;
    int rc;

    if (run->failed) {
        return;
    }
    for (;;) {
        f = (sh_frame_t *) 0x1;
        rc = sh_resp_reader_next(r, &f);
        if (rc == SH_ERROR) {
            if (f != NULL) {
                run->bad_out = 1;
            }
            run->failed = 1;
            err = sh_resp_reader_error(r);
            snprintf(run->err, sizeof(run->err), "%s",
                     err ? err : "(null error string)");
            return;
        }
        if (rc != SH_OK) {
            run->failed = 1;
            snprintf(run->err, sizeof(run->err), "(next returned %d)", rc);
            return;
        }
        if (f == NULL) {
            return;
        }
        if (run->n == run->cap) {
            run->cap = run->cap ? run->cap * 2 : 16;
            run->frames = realloc(run->frames,
                                  (size_t) run->cap * sizeof(sh_frame_t *));
            if (run->frames == NULL) {
                fprintf(stderr, "test-resp: out of memory\n");
                exit(2);
            }
        }
        run->frames[run->n++] = f;
    }
}

/*
 * Feed data in pieces ending at the offsets of cuts (ascending, the last
 * one len), draining after each piece.
 */
static void
decode_cuts(sh_resp_reader_t *r, const uint8_t *data, size_t len,
    const size_t *cuts, size_t ncuts, run_t *run)
{
    size_t i, from = 0;

    for (i = 0; i < ncuts; i++) {
        sh_resp_reader_feed(r, data + from, cuts[i] - from);
        from = cuts[i];
        drain(r, run);
    }
    if (from != len) {
        fprintf(stderr, "test-resp: cuts do not end at len\n");
        exit(2);
    }
    run->pending = sh_resp_reader_pending(r);
}

/* Fill the reader the way a socket read does: space, copy, commit. */
static void
decode_space(sh_resp_reader_t *r, const uint8_t *data, size_t len,
    size_t maxread, run_t *run)
{
    size_t from = 0, n;
    uint8_t *p;

    while (from < len) {
        sh_resp_reader_space(r, &p, &n);
        if (p == NULL || n == 0) {
            diag("reader_space gave no room (%zu bytes in)", from);
            break;
        }
        n = sh_min(n, len - from);
        n = sh_min(n, maxread);
        memcpy(p, data + from, n);
        sh_resp_reader_commit(r, n);
        from += n;
        drain(r, run);
    }
    run->pending = sh_resp_reader_pending(r);
}

/* --- checking -------------------------------------------------------- */

/* The count of an aggregate header at data ("*3\r\n" -> 3), or -2. */
static long
header_count(const uint8_t *data, size_t len)
{
    long v = 0;
    size_t i = 1;
    int neg = 0;

    if (i < len && data[i] == '-') {
        neg = 1;
        i++;
    }
    for (; i < len && data[i] >= '0' && data[i] <= '9'; i++) {
        if (v > 100000000000L) {
            return -2;
        }
        v = v * 10 + (data[i] - '0');
    }
    if (i >= len || data[i] != '\r') {
        return -2;
    }
    return neg ? -v : v;
}

static void
check_encode(int fi, const char *how, const sh_frame_t *f)
{
    const uint8_t **args;
    size_t *lens;
    sh_frame_t *g;
    int i;

    if (f->argc <= 0) {
        return;
    }
    args = xalloc((size_t) f->argc * sizeof(uint8_t *));
    lens = xalloc((size_t) f->argc * sizeof(size_t));
    for (i = 0; i < f->argc; i++) {
        args[i] = f->data + f->argv[i].off;
        lens[i] = f->argv[i].len;
    }
    g = sh_resp_encode_command(args, lens, f->argc);
    if (g == NULL) {
        diag("%s frame %d: sh_resp_encode_command gave NULL", how, fi);
    } else {
        if (g->len != f->len || memcmp(g->data, f->data, f->len) != 0) {
            diag("%s frame %d: re-encoded arguments differ from the frame"
                 " (%u vs %u bytes)", how, fi, g->len, f->len);
        }
        if (g->argc != f->argc) {
            diag("%s frame %d: encoded argc %d, want %d", how, fi,
                 g->argc, f->argc);
        }
        for (i = 0; i < f->argc && i < g->argc; i++) {
            if (g->argv[i].len != lens[i] || g->argv[i].off + lens[i] > g->len
                || memcmp(g->data + g->argv[i].off, args[i], lens[i]) != 0)
            {
                diag("%s frame %d: encoded arg %d slice wrong", how, fi, i);
                break;
            }
        }
        if (g->cmd != f->cmd && (f->cmd & SH_CMD_BLOCKING) == 0) {
            diag("%s frame %d: encoded cmd bits 0x%x, reader's 0x%x", how,
                 fi, g->cmd, f->cmd);
        }
        sh_frame_unref(g);
    }
    free(args);
    free(lens);
}

static void
check_describe(int fi, const char *how, const exp_frame_t *e,
    const sh_frame_t *f)
{
    char small[8];
    char *out;
    int n, n2;

    n = sh_resp_describe(f->data, f->len, small, sizeof(small));
    if (n < 0) {
        diag("%s frame %d: sh_resp_describe failed", how, fi);
        return;
    }
    out = xalloc((size_t) n + 1);
    n2 = sh_resp_describe(f->data, f->len, out, (size_t) n + 1);
    if (n2 != n || strlen(out) != (size_t) n) {
        diag("%s frame %d: describe returned %d then %d (strlen %zu)", how,
             fi, n, n2, strlen(out));
    } else if (e->needed >= 0) {
        if (n != e->needed || (size_t) n < e->textlen
            || memcmp(out, e->text, e->textlen) != 0)
        {
            diag("%s frame %d: describe gives %d bytes \"%.80s...\", want"
                 " %ld \"%.80s...\"", how, fi, n, out, e->needed, e->text);
        }
    } else if ((size_t) n != e->textlen
               || memcmp(out, e->text, e->textlen) != 0)
    {
        diag("%s frame %d: describe gives\n#     %.300s\n#   want\n"
             "#     %.300s", how, fi, out, e->text);
    }
    if (n >= (int) sizeof(small)
        && (strlen(small) != sizeof(small) - 1
            || memcmp(small, out, sizeof(small) - 4) != 0
            || strcmp(small + sizeof(small) - 4, "...") != 0))
    {
        diag("%s frame %d: truncated describe is \"%s\"", how, fi, small);
    }
    free(out);
}

/*
 * One frame against its expectation.  full: also run sh_resp_describe and
 * the re-encoding (pure functions of bytes the other checks pin down).
 */
static void
check_frame(const tcase_t *tc, int fi, const char *how, const sh_frame_t *f,
    int full)
{
    const exp_frame_t *e = &tc->frames[fi];
    const uint8_t *in = tc->data + e->start;
    int i;

    if (f->refs == 0 || f->proto != SH_PROTO_REDIS) {
        diag("%s frame %d: refs %u proto %u", how, fi, f->refs, f->proto);
    }
    if (f->buf == NULL || f->data < f->buf->data
        || f->data + f->len > f->buf->data + f->buf->cap)
    {
        diag("%s frame %d: data does not lie within its buffer", how, fi);
        return;
    }
    if (e->kind == F_REPLY || e->kind == F_ARGS) {
        /* a slice of the input, byte for byte */
        if (f->len != e->len || memcmp(f->data, in, e->len) != 0) {
            diag("%s frame %d: bytes differ from the input at %u (%u bytes,"
                 " want %u)", how, fi, e->start, f->len, e->len);
            return;
        }
    }
    if (e->kind == F_REPLY) {
        long count;

        if (in[0] != '|' && f->rtype != in[0]) {
            diag("%s frame %d: type '%c', want '%c'", how, fi, f->rtype,
                 in[0]);
        }
        if (!!(f->flags & SH_FRAME_RESP3) != e->resp3) {
            diag("%s frame %d: SH_FRAME_RESP3 is %s", how, fi,
                 e->resp3 ? "missing" : "set");
        }
        if (f->flags & SH_FRAME_INLINE) {
            diag("%s frame %d: a reply flagged inline", how, fi);
        }
        count = -2;
        if (in[0] == '*' || in[0] == '~' || in[0] == '>' || in[0] == '$') {
            count = header_count(in, e->len);
        }
        /* argc: an aggregate's element count, -1 for a null */
        if ((count == -1 || (count >= 0 && in[0] != '$'))
            && f->argc != count)
        {
            diag("%s frame %d: argc %d, want %ld", how, fi, f->argc, count);
        }
        if (full) {
            check_describe(fi, how, e, f);
        }
        return;
    }
    /* requests */
    if (f->rtype != '*') {
        diag("%s frame %d: request type '%c'", how, fi, f->rtype);
    }
    if (!!(f->flags & SH_FRAME_INLINE) != (e->kind == F_INLINE)) {
        diag("%s frame %d: SH_FRAME_INLINE is %s", how, fi,
             e->kind == F_INLINE ? "missing" : "set");
    }
    if (f->argc != e->nargs || f->argv == NULL) {
        diag("%s frame %d: %d arguments, want %d", how, fi, f->argc,
             e->nargs);
        return;
    }
    for (i = 0; i < e->nargs; i++) {
        const sh_slice_t *a = &f->argv[i];

        if ((uint64_t) a->off + a->len > f->len) {
            diag("%s frame %d: argument %d lies outside the frame", how, fi,
                 i);
            return;
        }
        if (a->len != e->lens[i]
            || (e->args[i] != NULL
                && memcmp(f->data + a->off, e->args[i], a->len) != 0))
        {
            diag("%s frame %d: argument %d differs (%u bytes, want %zu)",
                 how, fi, i, a->len, e->lens[i]);
        }
    }
    if (f->cmd != sh_resp_classify(f->data + f->argv[0].off, f->argv[0].len,
            f->argc > 1 ? f->data + f->argv[1].off : NULL,
            f->argc > 1 ? f->argv[1].len : 0)
        && (f->cmd & SH_CMD_BLOCKING) == 0)
    {
        diag("%s frame %d: cmd bits 0x%x differ from sh_resp_classify", how,
             fi, f->cmd);
    }
    if (f->cmd_id != sh_resp_command_id(f->data + f->argv[0].off,
                                        f->argv[0].len))
    {
        diag("%s frame %d: cmd_id %u differs from sh_resp_command_id", how,
             fi, f->cmd_id);
    }
    if (full) {
        check_encode(fi, how, f);
    }
}

static void
check_run(const tcase_t *tc, const char *how, const run_t *run, int full)
{
    int i;

    if (run->bad_out) {
        diag("%s: SH_ERROR with *out set", how);
    }
    for (i = 0; i < run->n && i < tc->nframes; i++) {
        check_frame(tc, i, how, run->frames[i], full);
    }
    if (run->n != tc->nframes) {
        diag("%s: %d frames, want %d", how, run->n, tc->nframes);
    }
    switch (tc->endkind) {
    case E_COMPLETE:
    case E_PENDING:
        if (run->failed) {
            diag("%s: unexpected error \"%s\"", how, run->err);
        } else if (run->pending != tc->pending) {
            diag("%s: %zu bytes pending, want %zu", how, run->pending,
                 tc->pending);
        }
        break;
    case E_ERROR:
        if (!run->failed) {
            diag("%s: no error, want \"%s\"", how, tc->error);
        } else if (strcmp(run->err, tc->error) != 0) {
            diag("%s: error \"%s\", want \"%s\"", how, run->err, tc->error);
        }
        break;
    case E_ERROR_PREFIX:
        if (!run->failed) {
            diag("%s: no error, want \"%s...\"", how, tc->error);
        } else if (strncmp(run->err, tc->error, strlen(tc->error)) != 0) {
            diag("%s: error \"%s\", want \"%s...\"", how, run->err,
                 tc->error);
        }
        break;
    }
}

/* After an error every call must give it again, whatever is fed. */
static void
check_sticky(const char *how, sh_resp_reader_t *r, const run_t *run)
{
    static const uint8_t more[] = "*1\r\n$4\r\nPING\r\n+OK\r\n";
    sh_frame_t *f;
    const char *err;
    int k;

    if (!run->failed) {
        return;
    }
    for (k = 0; k < 3; k++) {
        if (k == 2) {
            sh_resp_reader_feed(r, more, sizeof(more) - 1);
        }
        f = NULL;
        if (sh_resp_reader_next(r, &f) != SH_ERROR || f != NULL) {
            diag("%s: the error is not sticky (call %d)", how, k + 2);
            sh_frame_unref(f);
            return;
        }
        err = sh_resp_reader_error(r);
        if (err == NULL || strcmp(err, run->err) != 0) {
            diag("%s: the error changed to \"%s\"", how, err ? err : "NULL");
            return;
        }
    }
}

/*
 * Decode tc with one reader using cuts (or space/commit when cuts is NULL);
 * when the input ends on a frame boundary, decode it again with the same
 * reader while holding the first pass's frames, and check both passes after
 * freeing the reader.
 */
static void
decode_check(const tcase_t *tc, const char *how, const size_t *cuts,
    size_t ncuts, size_t maxread, int full)
{
    sh_resp_reader_t *r = sh_resp_reader_new(tc->mode, &tc->lim);
    run_t run1, run2;
    char label[300];
    int twice = tc->endkind == E_COMPLETE;

    memset(&run1, 0, sizeof(run1));
    memset(&run2, 0, sizeof(run2));
    if (cuts != NULL) {
        decode_cuts(r, tc->data, tc->len, cuts, ncuts, &run1);
    } else {
        decode_space(r, tc->data, tc->len, maxread, &run1);
    }
    check_sticky(how, r, &run1);
    if (twice && !run1.failed && run1.pending == 0) {
        if (cuts != NULL) {
            decode_cuts(r, tc->data, tc->len, cuts, ncuts, &run2);
        } else {
            decode_space(r, tc->data, tc->len, maxread, &run2);
        }
    }
    sh_resp_reader_free(r);
    check_run(tc, how, &run1, full);
    if (twice && !run1.failed && run1.pending == 0) {
        snprintf(label, sizeof(label), "%s, reader reused", how);
        check_run(tc, label, &run2, full);
    }
    run_free(&run1);
    run_free(&run2);
}

static uint32_t
rnd(uint32_t *state)
{
    /* xorshift32: the same chunks on every run */
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    return *state;
}

/*
 * Whether to split tc in two at k.  A fixture over T_BIG bytes is split at
 * its first and last T_EDGE boundaries, T_NEAR either side of every frame
 * boundary and at T_STRIDE points spread evenly in between; every boundary
 * of such a fixture costs a decode of all of it, and a few hundred thousand
 * of those under ASan take minutes for no more coverage.
 */
#define T_EDGE 256
#define T_NEAR 16
#define T_STRIDE 256

static int
want_split(const tcase_t *tc, size_t k, int full)
{
    int i;

    if (full || tc->len <= T_BIG || k < T_EDGE || tc->len - k < T_EDGE
        || k % (tc->len / T_STRIDE) == 0)
    {
        return 1;
    }
    for (i = 0; i < tc->nframes; i++) {
        size_t s = tc->frames[i].start, e = s + tc->frames[i].len;

        if ((k + T_NEAR > s && k < s + T_NEAR)
            || (k + T_NEAR > e && k < e + T_NEAR))
        {
            return 1;
        }
    }
    return 0;
}

static void
test_case(const tcase_t *tc, int every_split)
{
    size_t cuts[2], k, n, nsplits = 0, *many;
    char how[64];
    uint32_t seed;

    check_begin();
    cuts[0] = tc->len;
    decode_check(tc, "whole", cuts, 1, 0, 1);
    check_end("%s: whole", tc->name);

    check_begin();
    for (k = 1; k < tc->len; k++) {
        if (!want_split(tc, k, every_split)) {
            continue;
        }
        cuts[0] = k;
        cuts[1] = tc->len;
        snprintf(how, sizeof(how), "split at %zu", k);
        decode_check(tc, how, cuts, 2, 0, 0);
        nsplits++;
        if (t_diag > T_MAX_DIAG) {
            break;                  /* enough said */
        }
    }
    check_end("%s: split in two at %zu of %zu boundaries", tc->name, nsplits,
              tc->len > 0 ? tc->len - 1 : 0);

    check_begin();
    many = xalloc((tc->len + 1) * sizeof(size_t));
    for (k = 0; k < tc->len; k++) {
        many[k] = k + 1;
    }
    decode_check(tc, "byte by byte", many, tc->len, 0, 1);
    check_end("%s: byte by byte", tc->name);

    check_begin();
    /* alternately a few bytes and up to a quarter of the input */
    seed = 2463534242u ^ (uint32_t) tc->len;
    for (k = 0, n = 0; k < tc->len; n++) {
        k += 1 + rnd(&seed) % (n % 2 ? 7 : sh_max(tc->len / 4, 8));
        many[n] = sh_min(k, tc->len);
    }
    decode_check(tc, "random chunks", many, n, 0, 1);
    check_end("%s: %zu random chunks", tc->name, n);
    free(many);

    check_begin();
    decode_check(tc, "space/commit", NULL, 0, SIZE_MAX, 1);
    decode_check(tc, "space/commit by 1000", NULL, 0, 1000, 0);
    check_end("%s: sh_resp_reader_space/commit", tc->name);
}

/* --- unit checks ------------------------------------------------------- */

extern const char *const sh_resp_command_names[];
extern const size_t sh_resp_ncommands;

static uint32_t
command_id(const char *name)
{
    return sh_resp_command_id((const uint8_t *) name, strlen(name));
}

static void
test_command_ids(void)
{
    static const struct {
        const char *name;
        const char *is;      /* the name of its id, NULL for id 0 */
    } t[] = {
        { "GET", "GET" }, { "get", "GET" }, { "gEt", "GET" },
        { "SET", "SET" }, { "restore-asking", "RESTORE-ASKING" },
        { "bitfield_ro", "BITFIELD_RO" }, { "ZUNIONSTORE", "ZUNIONSTORE" },
        { "ACL", "ACL" }, { "GETX", NULL }, { "GE", NULL }, { "", NULL },
        { "JSON.GET", NULL }, { "G\xc5T", NULL },
        /* only a-z fold: '_' | 0x20 is DEL, not a match */
        { "BITFIELD\x7fRO", NULL },
        { "GETGETGETGETGETGETGETGETGETGETGETGET", NULL },
    };
    size_t i;
    char lower[64];

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        uint32_t id = command_id(t[i].name);
        const char *got = sh_ffi_resp_command_name((int) id);

        check_begin();
        if (t[i].is == NULL ? id != 0
            : got == NULL || strcmp(got, t[i].is) != 0)
        {
            diag("id %u (%s), want %s", id, got ? got : "none",
                 t[i].is ? t[i].is : "0");
        }
        check_end("sh_resp_command_id(\"%s\")", t[i].name);
    }
    check_begin();
    for (i = 0; i < sh_resp_ncommands; i++) {
        const char *n = sh_resp_command_names[i];
        size_t k;

        if (command_id(n) != i + 1) {
            diag("%s: id %u, want %zu", n, command_id(n), i + 1);
        }
        for (k = 0; n[k] != '\0' && k < sizeof(lower) - 1; k++) {
            lower[k] = (char) tolower((unsigned char) n[k]);
        }
        lower[k] = '\0';
        if (command_id(lower) != i + 1) {
            diag("%s: id %u, want %zu", lower, command_id(lower), i + 1);
        }
    }
    if (sh_resp_ncommands < 200) {
        diag("only %zu commands", sh_resp_ncommands);
    }
    if (sh_ffi_resp_command_name(0) != NULL
        || sh_ffi_resp_command_name((int) sh_resp_ncommands + 1) != NULL)
    {
        diag("a name for an id out of range");
    }
    check_end("every command has its own id, in any case");
}

static uint32_t
classify(const char *name, const char *sub)
{
    return sh_resp_classify((const uint8_t *) name, strlen(name),
                            (const uint8_t *) sub, sub ? strlen(sub) : 0);
}

/* A replication stream: replies, then bytes that are not RESP, relayed
 * raw from the first byte not returned as a frame. */
static void
test_reader_raw(void)
{
    static const char in[] = "+OK\r\n\n\n$5\r\nREDIS*1\r\n$4\r\nPING\r\n";
    sh_resp_reader_t *r;
    sh_frame_t *f;
    size_t got = 0;

    check_begin();
    r = sh_resp_reader_new(SH_RESP_REPLY, NULL);
    f = (sh_frame_t *) 0x1;
    if (sh_resp_reader_raw(r, &f) != SH_OK || f != NULL) {
        diag("raw of an empty reader gives a frame");
    }
    sh_resp_reader_feed(r, (const uint8_t *) in, 8);   /* "+OK\r\n\n\n$" */
    if (sh_resp_reader_next(r, &f) != SH_OK || f == NULL || f->len != 5) {
        diag("the reply before the stream");
    }
    sh_frame_unref(f);
    if (sh_resp_reader_raw(r, &f) != SH_OK || f == NULL || f->len != 3
        || memcmp(f->data, "\n\n$", 3) != 0)
    {
        diag("the first raw bytes");
    }
    got += f ? f->len : 0;
    sh_frame_unref(f);
    if (sh_resp_reader_raw(r, &f) != SH_OK || f != NULL) {
        diag("raw bytes given twice");
    }
    sh_resp_reader_feed(r, (const uint8_t *) in + 8, sizeof(in) - 1 - 8);
    if (sh_resp_reader_raw(r, &f) != SH_OK || f == NULL
        || f->len != sizeof(in) - 1 - 8
        || memcmp(f->data, in + 8, f->len) != 0)
    {
        diag("the rest, as it came");
    }
    got += f ? f->len : 0;
    sh_frame_unref(f);
    if (got != sizeof(in) - 1 - 5 || sh_resp_reader_pending(r) != 0) {
        diag("%zu raw bytes, %zu pending", got, sh_resp_reader_pending(r));
    }
    sh_resp_reader_free(r);
    check_end("reader: raw bytes after the last reply (SYNC's stream)");
}

static void
test_classify(void)
{
    static const struct {
        const char *name;
        const char *sub;
        uint32_t want;       /* the bits */
        int exact;           /* want is all the bits (not just some) */
    } t[] = {
        { "GET", NULL, 0, 1 },
        { "get", "foo", 0, 1 },
        { "SET", NULL, 0, 0 },
        { "MULTI", NULL, SH_CMD_PIN, 1 },
        { "multi", NULL, SH_CMD_PIN, 1 },
        { "MuLtI", NULL, SH_CMD_PIN, 1 },
        { "WATCH", NULL, SH_CMD_PIN, 0 },
        { "BLPOP", NULL, SH_CMD_PIN | SH_CMD_BLOCKING, 1 },
        { "blpop", NULL, SH_CMD_PIN | SH_CMD_BLOCKING, 1 },
        { "BRPOP", NULL, SH_CMD_PIN | SH_CMD_BLOCKING, 1 },
        { "BZPOPMIN", NULL, SH_CMD_PIN | SH_CMD_BLOCKING, 1 },
        { "SUBSCRIBE", NULL, SH_CMD_PIN | SH_CMD_STREAM, 1 },
        { "subscribe", NULL, SH_CMD_PIN | SH_CMD_STREAM, 1 },
        { "PSUBSCRIBE", NULL, SH_CMD_PIN | SH_CMD_STREAM, 1 },
        { "punsubscribe", NULL, SH_CMD_PIN | SH_CMD_STREAM, 1 },
        { "SUNSUBSCRIBE", NULL, SH_CMD_PIN | SH_CMD_STREAM, 1 },
        { "UNSUBSCRIBE", NULL, SH_CMD_PIN | SH_CMD_STREAM, 1 },
        { "REPLCONF", "ACK", SH_CMD_PIN | SH_CMD_STREAM, 1 },
        { "SCRIPT", "DEBUG", SH_CMD_PIN | SH_CMD_STREAM, 1 },
        { "SCRIPT", "LOAD", 0, 1 },
        { "SYNC", NULL, SH_CMD_PIN | SH_CMD_STREAM | SH_CMD_RAW, 1 },
        { "psync", "?", SH_CMD_PIN | SH_CMD_STREAM | SH_CMD_RAW, 1 },
        { "WAIT", NULL, SH_CMD_PIN | SH_CMD_BLOCKING | SH_CMD_WAIT, 1 },
        { "waitaof", NULL, SH_CMD_PIN | SH_CMD_BLOCKING | SH_CMD_WAIT, 1 },
        { "CLIENT", "KILL", SH_CMD_PIN | SH_CMD_VET, 1 },
        { "client", "pause", SH_CMD_PIN | SH_CMD_VET, 1 },
        { "CLIENT", "UNPAUSE", SH_CMD_PIN | SH_CMD_VET, 1 },
        { "CLIENT", "ID", SH_CMD_PIN, 1 },
        { "CLIENT", "KILLX", SH_CMD_PIN, 1 },
        { "QUIT", NULL, SH_CMD_QUIT, 1 },
        { "quit", NULL, SH_CMD_QUIT, 1 },
        { "CLIENT", "REPLY", SH_CMD_STREAM, 0 },
        { "client", "reply", SH_CMD_STREAM, 0 },
        { "Client", "Reply", SH_CMD_STREAM, 0 },
        { "PING", NULL, 0, 1 },
        { "ECHO", NULL, 0, 1 },
        { "MGET", NULL, 0, 1 },
        { "GETX", NULL, 0, 1 },
        { "MULTIX", NULL, 0, 1 },
        { "MULT", NULL, 0, 1 },
        { "QUITE", NULL, 0, 1 },
        { "", NULL, 0, 1 },
        { "B", NULL, 0, 1 },
    };
    size_t i;
    uint32_t got;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        check_begin();
        got = classify(t[i].name, t[i].sub);
        if (t[i].exact ? got != t[i].want : (got & t[i].want) != t[i].want) {
            diag("got 0x%x, want %s0x%x", got, t[i].exact ? "" : "at least ",
                 t[i].want);
        }
        check_end("sh_resp_classify(\"%s\"%s%s%s)", t[i].name,
                  t[i].sub ? ", \"" : "", t[i].sub ? t[i].sub : "",
                  t[i].sub ? "\"" : "");
    }
    check_begin();
    if (classify("GET", NULL) != 0) {
        diag("GET is not 0");
    }
    if (classify("EXEC", NULL) & (SH_CMD_BLOCKING | SH_CMD_STREAM
                                  | SH_CMD_QUIT))
    {
        diag("EXEC blocks, streams or quits");
    }
    if (classify("CLIENT", "LIST") & SH_CMD_STREAM) {
        diag("CLIENT LIST streams");
    }
    check_end("sh_resp_classify: no stray bits");
}

static void
test_encode(void)
{
    static const char want[] = "*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
                               "$4\r\na\r\nb\r\n";
    const uint8_t *args[4] = {
        (const uint8_t *) "SET", (const uint8_t *) "k",
        (const uint8_t *) "", (const uint8_t *) "a\r\nb"
    };
    size_t lens[4] = { 3, 1, 0, 4 };
    const uint8_t *bargs[3] = {
        (const uint8_t *) "blpop", (const uint8_t *) "q",
        (const uint8_t *) "0"
    };
    size_t blens[3] = { 5, 1, 1 };
    sh_frame_t *f;
    int i;

    check_begin();
    f = sh_resp_encode_command(args, lens, 4);
    if (f == NULL) {
        diag("NULL frame");
    } else {
        if (f->len != sizeof(want) - 1 || memcmp(f->data, want, f->len)) {
            diag("encoding is \"%.*s\"", (int) f->len, f->data);
        }
        if (f->argc != 4 || f->refs != 1 || f->buf == NULL) {
            diag("argc %d refs %u buf %p", f->argc, f->refs,
                 (void *) f->buf);
        }
        for (i = 0; i < 4 && i < f->argc; i++) {
            if (f->argv[i].len != lens[i]
                || memcmp(f->data + f->argv[i].off, args[i], lens[i]) != 0)
            {
                diag("arg %d slice wrong", i);
            }
        }
        sh_frame_unref(f);
    }
    check_end("sh_resp_encode_command: bytes and slices");

    check_begin();
    f = sh_resp_encode_command(bargs, blens, 3);
    if (f->cmd != (SH_CMD_PIN | SH_CMD_BLOCKING)) {
        diag("cmd 0x%x", f->cmd);
    }
    sh_frame_unref(f);
    check_end("sh_resp_encode_command: classifies the command");
}

static void
test_describe(void)
{
    static const char arr[] = "*2\r\n+hello\r\n+world\r\n";
    static const char *bad[] = {
        "", "*2\r\n+a\r\n", "$5\r\nab\r\n", "@x\r\n", "+OK", "*x\r\n",
    };
    char out[8];
    size_t i;
    int n;

    check_begin();
    n = sh_resp_describe((const uint8_t *) arr, sizeof(arr) - 1, out,
                         sizeof(out));
    if (n != 16) {
        diag("returned %d, want 16 (strlen of \"[+hello, +world]\")", n);
    }
    if (strlen(out) != sizeof(out) - 1
        || strcmp(out + sizeof(out) - 4, "...") != 0)
    {
        diag("truncated to \"%s\"", out);
    }
    n = sh_resp_describe((const uint8_t *) arr, sizeof(arr) - 1, out, 1);
    if (n != 16 || out[0] != '\0') {
        diag("cap 1: returned %d, \"%s\"", n, out);
    }
    check_end("sh_resp_describe: truncation");

    check_begin();
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = sh_resp_describe((const uint8_t *) bad[i], strlen(bad[i]), out,
                             sizeof(out));
        if (n != -1) {
            diag("\"%s\": returned %d, want -1", bad[i], n);
        }
    }
    check_end("sh_resp_describe: malformed input gives -1");
}

static void
test_reader_basics(void)
{
    sh_resp_reader_t *r;
    sh_frame_t *f;

    check_begin();
    if (sh_resp_default_limits.max_bulk_len != 512u * 1024 * 1024
        || sh_resp_default_limits.max_elements != 1024 * 1024
        || sh_resp_default_limits.max_inline_len != 64 * 1024
        || sh_resp_default_limits.max_depth != 32)
    {
        diag("defaults are %u %u %u %u",
             sh_resp_default_limits.max_bulk_len,
             sh_resp_default_limits.max_elements,
             sh_resp_default_limits.max_inline_len,
             sh_resp_default_limits.max_depth);
    }
    check_end("sh_resp_default_limits");

    check_begin();
    r = sh_resp_reader_new(SH_RESP_REPLY, NULL);
    f = (sh_frame_t *) 0x1;
    if (sh_resp_reader_next(r, &f) != SH_OK || f != NULL) {
        diag("next on an empty reader");
    }
    if (sh_resp_reader_error(r) != NULL || sh_resp_reader_pending(r) != 0) {
        diag("fresh reader has an error or pending bytes");
    }
    sh_resp_reader_feed(r, (const uint8_t *) "+OK\r\n+PO", 8);
    if (sh_resp_reader_next(r, &f) != SH_OK || f == NULL || f->len != 5) {
        diag("first frame");
    }
    sh_frame_unref(f);
    f = (sh_frame_t *) 0x1;
    if (sh_resp_reader_next(r, &f) != SH_OK || f != NULL
        || sh_resp_reader_pending(r) != 3)
    {
        diag("partial frame: pending %zu", sh_resp_reader_pending(r));
    }
    sh_resp_reader_free(r);
    sh_resp_reader_free(NULL);
    check_end("reader: empty, partial, free");
}

/* n nested arrays around :1, in a new buffer */
static char *
deep_reply(int n, size_t *len)
{
    char *p = malloc((size_t) n * 4 + 5);
    size_t k = 0;
    int i;

    for (i = 0; i < n; i++) {
        memcpy(p + k, "*1\r\n", 4);
        k += 4;
    }
    memcpy(p + k, ":1\r\n", 4);
    *len = k + 4;
    return p;
}

/*
 * A backend's replies (a reply reader made without limits) nest as deep as
 * the backend sends: Redis returns whatever a Lua script builds, and a
 * reply is not attacker-shaped the way a request is.  Explicit limits
 * still refuse deeper nesting.
 */
static void
test_deep_replies(void)
{
    static const int depths[] = { 33, 40, 1000, 100000 };
    sh_resp_limits_t lim = sh_resp_default_limits;
    sh_resp_reader_t *r;
    sh_frame_t *f;
    size_t len, i;
    char *p;

    for (i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
        check_begin();
        p = deep_reply(depths[i], &len);
        r = sh_resp_reader_new(SH_RESP_REPLY, NULL);
        /* twice, and split in two, so the grown stack is reused and a
         * reply resumes at depth */
        sh_resp_reader_feed(r, (const uint8_t *) p, len / 2);
        f = (sh_frame_t *) 0x1;
        if (sh_resp_reader_next(r, &f) != SH_OK || f != NULL) {
            diag("%d levels: half a reply gave a frame", depths[i]);
        }
        sh_resp_reader_feed(r, (const uint8_t *) p + len / 2, len - len / 2);
        sh_resp_reader_feed(r, (const uint8_t *) p, len);
        for (int k = 0; k < 2; k++) {
            f = NULL;
            if (sh_resp_reader_next(r, &f) != SH_OK || f == NULL
                || f->len != len || f->rtype != '*' || f->argc != 1)
            {
                diag("%d levels, reply %d: %s", depths[i], k + 1,
                     sh_resp_reader_error(r) ? sh_resp_reader_error(r)
                                             : "no frame");
            }
            sh_frame_unref(f);
        }
        sh_resp_reader_free(r);
        free(p);
        check_end("reply reader without limits: %d nested levels",
                  depths[i]);
    }
    check_begin();
    {
        /* longer than a request may be: 2 Mi elements (SMEMBERS of a big
         * set) */
        uint32_t n = 2 * 1024 * 1024, k;
        char head[32];
        int hl = snprintf(head, sizeof(head), "*%u\r\n", n);

        len = (size_t) hl + (size_t) n * 4;
        p = malloc(len);
        memcpy(p, head, (size_t) hl);
        for (k = 0; k < n; k++) {
            memcpy(p + hl + (size_t) k * 4, ":1\r\n", 4);
        }
        r = sh_resp_reader_new(SH_RESP_REPLY, NULL);
        sh_resp_reader_feed(r, (const uint8_t *) p, len);
        f = NULL;
        if (sh_resp_reader_next(r, &f) != SH_OK || f == NULL
            || f->argc != (int32_t) n || f->len != len)
        {
            diag("2 Mi elements: %s", sh_resp_reader_error(r)
                                      ? sh_resp_reader_error(r) : "no frame");
        }
        sh_frame_unref(f);
        sh_resp_reader_free(r);
        free(p);
    }
    check_end("reply reader without limits: 2 Mi elements");

    check_begin();
    p = deep_reply(33, &len);
    r = sh_resp_reader_new(SH_RESP_REPLY, &lim);
    sh_resp_reader_feed(r, (const uint8_t *) p, len);
    f = NULL;
    if (sh_resp_reader_next(r, &f) != SH_ERROR
        || strstr(sh_resp_reader_error(r), "nesting deeper than 32") == NULL)
    {
        diag("explicit limits: 33 levels were not refused");
    }
    sh_frame_unref(f);
    sh_resp_reader_free(r);
    free(p);
    check_end("reply reader with the default limits: 33 levels refused");
}

/*
 * Memory follows the bytes received, not the length a peer announces: a
 * 512 MiB bulk arriving 64 KB at a time never has a buffer of more than
 * twice what came (or what came plus one growth step), and is copied a
 * bounded number of times.
 */
static void
test_reader_space_growth(void)
{
    const uint32_t need = 536870000 + 40, step = 64 * 1024;
    sh_buf_t *b = NULL;
    uint32_t start = 0, pos = 0, end = 0, last_cap = 0, moves = 0;
    uint8_t *p;
    size_t n;

    check_begin();
    while (end < need) {
        if (sh_buf_reader_space(&b, &start, &pos, &end, need, &p, &n)
            != SH_OK)
        {
            diag("no space at %u bytes", end);
            break;
        }
        if (b->cap != last_cap) {
            moves++;
            if (b->cap > sh_max(2 * end, end + SH_BUF_GROW_STEP)
                         + SH_BUF_READ_SIZE)
            {
                diag("a %u-byte buffer for %u bytes received", b->cap, end);
            }
            last_cap = b->cap;
        }
        end += (uint32_t) sh_min(sh_min(n, (size_t) step),
                                 (size_t) (need - end));
    }
    if (end != need || b == NULL || b->cap / 2 > need) {
        diag("ended with %u bytes in a buffer of %u (want %u)", end,
             b ? b->cap : 0, need);
    }
    if (moves > 16) {
        diag("the value was moved %u times", moves);
    }
    sh_buf_unref(b);
    check_end("a big announced value claims memory as its bytes arrive");
}

/*
 * sh_resp_split_inline against Redis 7.0's sdssplitargs: each line was
 * sent to redis-server 7.0.15 as `EVAL "return ARGV" 0 LINE` (or ECHO) and
 * the arguments it echoed are the expectation; lines holding a NUL cannot
 * reach sdssplitargs through a socket and follow its C-string reading.
 * t/integration/045-redis_inline_differential_spec.lua compares many
 * more with the live server.
 */
#define T_S(s) s, sizeof(s) - 1

typedef struct split_case_s {
    const char *line;            /* the line, without "\r\n" */
    size_t len;
    int argc;                    /* expected count, -1: unbalanced */
    const char *args[4];         /* expected arguments (T_S pairs) */
    size_t lens[4];
} split_case_t;

static const split_case_t split_cases[] = {
    /* a quote inside an argument opens a quoted part of it */
    { T_S("ECHO a\"b c\""), 2, { "ECHO", "ab c" }, { 4, 4 } },
    { T_S("ECHO a'b c'"), 2, { "ECHO", "ab c" }, { 4, 4 } },
    { T_S("a\"\" b"), 2, { "a", "b" }, { 1, 1 } },
    { T_S("a\"\"b"), -1, { NULL }, { 0 } },
    { T_S("ECHO a\"b\"c"), -1, { NULL }, { 0 } },
    { T_S("ECHO \"a\"b"), -1, { NULL }, { 0 } },
    { T_S("\"a\"'b'"), -1, { NULL }, { 0 } },
    { T_S("'a'b"), -1, { NULL }, { 0 } },
    /* \v and \f are skipped between arguments, but do not end one */
    { T_S("ECHO a\vb"), 2, { "ECHO", "a\vb" }, { 4, 3 } },
    { T_S("ECHO a\fb"), 2, { "ECHO", "a\fb" }, { 4, 3 } },
    { T_S("ECHO \va"), 2, { "ECHO", "a" }, { 4, 1 } },
    { T_S("ECHO a\v"), 2, { "ECHO", "a\v" }, { 4, 2 } },
    { T_S("ECHO \"a\"\v"), 2, { "ECHO", "a" }, { 4, 1 } },
    { T_S("ECHO a\"b\"\fc"), 3, { "ECHO", "ab", "c" }, { 4, 2, 1 } },
    { T_S("a\rb\tc"), 3, { "a", "b", "c" }, { 1, 1, 1 } },
    /* bytes over 0x7f are never blanks */
    { T_S("a \x85 \xa0" "b"), 3, { "a", "\x85", "\xa0" "b" }, { 1, 1, 2 } },
    /* escapes */
    { T_S("\"a\\n\\r\\t\\b\\a\\z\\\"\\\\\""), 1,
      { "a\n\r\t\b\az\"\\" }, { 9 } },
    { T_S("\"\\x41\\x6a\\xfF\\x00\""), 1, { "Aj\xff\0" }, { 4 } },
    { T_S("\"\\x4G\""), 1, { "x4G" }, { 3 } },
    { T_S("\"\\x4\""), 1, { "x4" }, { 2 } },
    { T_S("'a\\b'"), 1, { "a\\b" }, { 3 } },
    { T_S("'a\\'b'"), 1, { "a'b" }, { 3 } },
    { T_S("'a\\nb'"), 1, { "a\\nb" }, { 4 } },
    /* empty arguments, blank lines, unterminated quotes */
    { T_S("ECHO \"\""), 2, { "ECHO", "" }, { 4, 0 } },
    { T_S("''"), 1, { "" }, { 0 } },
    { T_S(""), 0, { NULL }, { 0 } },
    { T_S(" \t\v\f\r "), 0, { NULL }, { 0 } },
    { T_S("ECHO \"a\\"), -1, { NULL }, { 0 } },
    { T_S("ECHO \"a\\\""), -1, { NULL }, { 0 } },
    { T_S("'ab"), -1, { NULL }, { 0 } },
    /* a C string: the line ends at a NUL */
    { T_S("a\0b"), 1, { "a" }, { 1 } },
    { T_S("'a'\0b"), 1, { "a" }, { 1 } },
    { T_S("\"a\0b\""), -1, { NULL }, { 0 } },
    { T_S("\0a"), 0, { NULL }, { 0 } },
};

static void
test_split_inline(void)
{
    uint8_t out[64];
    size_t lens[64], o;
    size_t i;
    int argc, k;

    for (i = 0; i < sizeof(split_cases) / sizeof(split_cases[0]); i++) {
        const split_case_t *sc = &split_cases[i];

        check_begin();
        argc = sh_resp_split_inline((const uint8_t *) sc->line, sc->len,
                                    out, lens, (int) (sc->len / 2 + 1));
        if (argc != sc->argc) {
            diag("argc %d, expected %d", argc, sc->argc);
        }
        for (k = 0, o = 0; argc == sc->argc && k < argc; k++) {
            if (lens[k] != sc->lens[k]
                || memcmp(out + o, sc->args[k], lens[k]) != 0)
            {
                diag("argument %d: %zu bytes \"%.*s\"", k + 1, lens[k],
                     (int) lens[k], (const char *) out + o);
            }
            o += lens[k];
        }
        check_end("split_inline %zu: %zu bytes \"%.*s\"", i + 1, sc->len,
                  (int) sc->len, sc->line);
    }
}

/* One reader, these bytes in one feed: how many frames, then SH_OK and
 * pending bytes or SH_ERROR with err. */
static void
check_inline_read(const char *what, const char *in, size_t len, int frames,
    const char *arg2, const char *err)
{
    sh_resp_reader_t *r = sh_resp_reader_new(SH_RESP_REQUEST, NULL);
    sh_frame_t *f;
    int n = 0, rc;

    check_begin();
    sh_resp_reader_feed(r, (const uint8_t *) in, len);
    for (;;) {
        f = NULL;
        rc = sh_resp_reader_next(r, &f);
        if (rc != SH_OK || f == NULL) {
            break;
        }
        if (n == 0 && arg2 != NULL
            && (f->argc < 2 || f->argv[1].len != strlen(arg2)
                || memcmp(f->data + f->argv[1].off, arg2, strlen(arg2)) != 0))
        {
            diag("first frame's second argument differs");
        }
        n++;
        sh_frame_unref(f);
    }
    if (n != frames) {
        diag("%d frames, expected %d", n, frames);
    }
    if (err == NULL && rc != SH_OK) {
        diag("error %s", sh_resp_reader_error(r));
    }
    if (err != NULL && (rc != SH_ERROR
                        || strcmp(sh_resp_reader_error(r), err) != 0))
    {
        diag("expected the error %s, got %s", err,
             rc == SH_ERROR ? sh_resp_reader_error(r) : "none");
    }
    sh_resp_reader_free(r);
    check_end("inline reader: %s", what);
}

/*
 * The line around the splitter, as processInlineBuffer finds it: Redis
 * looks for the '\n' with strchr(), which stops at a NUL, so a NUL before
 * the newline means no line yet -- until more than 64 KiB are pending.
 */
static void
test_inline_lines(void)
{
    static const char nul_line[] = "ECHO a\0b\r\nPING\r\n";
    char *big;
    size_t n = 70000;

    check_inline_read("\\v inside an argument", T_S("ECHO a\vb\r\n"), 1,
                      "a\vb", NULL);
    check_inline_read("a quoted part inside an argument",
                      T_S("ECHO a\"b c\"\r\nPING\n"), 2, "ab c", NULL);
    check_inline_read("a NUL hides the newline", nul_line,
                      sizeof(nul_line) - 1, 0, NULL, NULL);
    check_inline_read("after a complete line, a NUL hides the next",
                      T_S("PING\r\n\0PING\r\nPING\r\n"), 1, NULL, NULL);
    big = xalloc(n);
    memset(big, 'x', n);
    memcpy(big, nul_line, sizeof(nul_line) - 1);
    check_inline_read("a NUL-hidden line over 64 KiB", big, n, 0, NULL,
                      "Protocol error: too big inline request");
    free(big);
    check_inline_read("unbalanced quotes after a good line",
                      T_S("PING\r\nECHO a\"b\"c\r\n"), 1, NULL,
                      "Protocol error: unbalanced quotes in request");
}

int
main(int argc, char **argv)
{
    tcase_t *cases;
    int n, i, full;

    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: test-resp FIXTURES_DIR [NAME]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    full = getenv("SH_TEST_RESP_FULL") != NULL
           && strcmp(getenv("SH_TEST_RESP_FULL"), "0") != 0;
    cases = load_cases(argv[1], &n);
    printf("# %d fixtures from %s%s\n", n, argv[1],
           full ? " (every split)" : "");
    for (i = 0; i < n; i++) {
        if (argc == 3 && strstr(cases[i].name, argv[2]) == NULL) {
            continue;
        }
        test_case(&cases[i], full);
    }
    if (argc == 2) {
        test_reader_basics();
        test_split_inline();
        test_inline_lines();
        test_deep_replies();
        test_reader_space_growth();
        test_reader_raw();
        test_classify();
        test_command_ids();
        test_encode();
        test_describe();
    }
    free_cases(cases, n);
    printf("1..%d\n", t_passed + t_failed);
    printf("%d passed, %d failed\n", t_passed, t_failed);
    return t_failed == 0 ? 0 : 1;
}
