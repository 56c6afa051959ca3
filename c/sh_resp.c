/*
 * sh_resp.c -- RESP codec.
 *
 * Implements the Redis serialization protocol as specified in
 * https://redis.io/docs/reference/protocol-spec/ :
 *   requests: RESP arrays of bulk strings, and inline commands (split the way
 *             redis' sdssplitargs does, then re-encoded as arrays so every
 *             backend sees exactly the arguments we parsed);
 *   replies:  every RESP2 type and every RESP3 type (null, boolean, double,
 *             big number, blob error, verbatim string, map, set, push,
 *             attribute), nested to max_depth (a backend's replies:
 *             as deep as it sends, the stack growing with them).
 *
 * The reader is a resumable state machine over one growing buffer: each call
 * continues where the previous one stopped, a frame is a slice of the buffer
 * (no payload copy), and when the buffer fills up only the unfinished frame
 * is moved to a new one.  Nesting is tracked on an explicit stack.
 *
 * Not supported: RESP3 streamed strings and aggregates ("$?" / "*?"), which
 * Redis never sends; they are rejected as protocol errors.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sh_resp.h"

#define SH_RESP_DESCRIBE_DEPTH 64        /* sh_resp_describe's recursion */
/* A reply reader made without limits (a backend's) nests as deep as the
 * backend sends -- Redis returns what a Lua script builds -- up to this
 * many levels; its stack grows as levels open (16 bytes each), and each
 * level takes at least 4 bytes of input, so memory follows what arrived. */
#define SH_RESP_REPLY_MAX_DEPTH (1024 * 1024)
#define SH_RESP_STACK_SMALL 16           /* levels kept in the reader */
#define SH_RESP_LINE_MAX (64 * 1024)     /* Redis' PROTO_INLINE_MAX_SIZE */
#define SH_RESP_PREALLOC_ARGS 1024       /* slices allocated up front */

const sh_resp_limits_t sh_resp_default_limits = {
    .max_bulk_len = 512u * 1024 * 1024,
    .max_elements = 1024 * 1024,
    .max_inline_len = SH_RESP_LINE_MAX,
    .max_depth = 32,
};

enum {
    SH_RS_START = 0,         /* at the first byte of a frame */
    SH_RS_BULK_HEADER,       /* request: at an argument's "$len" line */
    SH_RS_BULK_DATA,         /* request: waiting for an argument's bytes */
    SH_RS_VALUE,             /* reply: at the type byte of an element */
    SH_RS_VALUE_DATA         /* reply: waiting for a blob's bytes */
};

typedef struct sh_resp_level_s {
    int64_t left;            /* elements still to read at this level */
    int attr;                /* this level is an attribute map */
} sh_resp_level_t;

struct sh_resp_reader_s {
    int mode;                /* SH_RESP_REQUEST or SH_RESP_REPLY */
    int state;               /* SH_RS_* */
    sh_resp_limits_t lim;    /* limits in force */
    sh_buf_t *buf;           /* buffer being filled (we hold a ref) */
    uint32_t start;          /* first byte of the unfinished frame */
    uint32_t pos;            /* parse cursor */
    uint32_t end;            /* bytes filled */
    uint32_t need;           /* bytes from start the frame needs, 0: unknown */
    int failed;              /* sticky error flag */
    char errstr[128];        /* error text, in Redis' words */
    /* request state */
    sh_frame_t *frame;       /* request under construction */
    int32_t argi;            /* next argument to read */
    uint32_t bulk_len;       /* length of the argument being read */
    uint32_t args_cap;       /* slices allocated for a big request */
    /* reply state */
    int depth;               /* levels open on the stack */
    uint8_t top_type;        /* type byte of the top-level value */
    int32_t top_count;       /* its element count (-1 null) */
    uint8_t resp3;           /* a RESP3-only type was seen */
    sh_resp_level_t *stack;  /* open aggregates: small, or grown */
    uint32_t stack_cap;      /* levels stack holds */
    sh_resp_level_t small[SH_RESP_STACK_SMALL]; /* the first levels */
};

static int
sh_resp_fail(sh_resp_reader_t *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
sh_resp_fail(sh_resp_reader_t *r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->errstr, sizeof(r->errstr), fmt, ap);
    va_end(ap);
    r->failed = 1;
    return SH_ERROR;
}

sh_resp_reader_t *
sh_resp_reader_new(int mode, const sh_resp_limits_t *limits)
{
    sh_resp_reader_t *r = sh_calloc(1, sizeof(*r));

    r->mode = mode;
    r->lim = limits ? *limits : sh_resp_default_limits;
    if (limits == NULL && mode == SH_RESP_REPLY) {
        /* a backend's reply: as deep and as long as it is (SMEMBERS of a
         * big set); nothing is allocated per element */
        r->lim.max_depth = SH_RESP_REPLY_MAX_DEPTH;
        r->lim.max_elements = INT32_MAX;
    }
    if (r->lim.max_depth == 0 || r->lim.max_depth > SH_RESP_REPLY_MAX_DEPTH) {
        r->lim.max_depth = SH_RESP_REPLY_MAX_DEPTH;
    }
    r->stack = r->small;
    r->stack_cap = SH_RESP_STACK_SMALL;
    r->state = mode == SH_RESP_REQUEST ? SH_RS_START : SH_RS_VALUE;
    return r;
}

void
sh_resp_reader_free(sh_resp_reader_t *r)
{
    if (r == NULL) {
        return;
    }
    sh_frame_unref(r->frame);
    sh_buf_unref(r->buf);
    if (r->stack != r->small) {
        sh_free(r->stack);
    }
    sh_free(r);
}

const char *
sh_resp_reader_error(const sh_resp_reader_t *r)
{
    return r->failed ? r->errstr : NULL;
}

size_t
sh_resp_reader_pending(const sh_resp_reader_t *r)
{
    return r->end - r->start;
}

void
sh_resp_reader_space(sh_resp_reader_t *r, uint8_t **p, size_t *n)
{
    if (sh_buf_reader_space(&r->buf, &r->start, &r->pos, &r->end, r->need,
                            p, n) != SH_OK && !r->failed)
    {
        /* the connection fails with this, the process goes on */
        sh_resp_fail(r, "Protocol error: out of memory for a %u-byte "
                    "frame", r->need);
    }
}

void
sh_resp_reader_commit(sh_resp_reader_t *r, size_t n)
{
    r->end += (uint32_t) n;
}

void
sh_resp_reader_feed(sh_resp_reader_t *r, const uint8_t *data, size_t len)
{
    uint8_t *p;
    size_t n;

    while (len > 0) {
        sh_resp_reader_space(r, &p, &n);
        if (n == 0) {
            return;                      /* failed: out of memory */
        }
        n = sh_min(n, len);
        memcpy(p, data, n);
        sh_resp_reader_commit(r, n);
        data += n;
        len -= n;
    }
}

/* The offset of "\r\n" at or after from, or -1. */
static int64_t
sh_resp_find_crlf(const sh_resp_reader_t *r, uint32_t from)
{
    const uint8_t *d = r->buf->data;
    const uint8_t *p;

    while (from < r->end) {
        p = memchr(d + from, '\r', r->end - from);
        if (p == NULL || p + 1 >= d + r->end) {
            return -1;
        }
        if (p[1] == '\n') {
            return p - d;
        }
        from = (uint32_t) (p - d) + 1;
    }
    return -1;
}

/* Parse a signed decimal of [p, p+len) strictly, as Redis' string2ll. */
static int
sh_resp_parse_ll(const uint8_t *p, size_t len, int64_t *out)
{
    int neg = 0;
    uint64_t v = 0;
    size_t i = 0;

    if (len == 0 || len > 20) {
        return SH_ERROR;
    }
    if (p[0] == '-') {
        neg = 1;
        i = 1;
        if (len == 1) {
            return SH_ERROR;
        }
    }
    if (p[i] == '0' && (len > i + 1 || neg)) {
        return SH_ERROR;                 /* leading zeros and "-0", as Redis */
    }
    for (; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return SH_ERROR;
        }
        if (v > (UINT64_MAX - 9) / 10) {
            return SH_ERROR;
        }
        v = v * 10 + (uint64_t) (p[i] - '0');
    }
    if (v > (uint64_t) INT64_MAX + (uint64_t) neg) {
        return SH_ERROR;
    }
    /* -9223372036854775808 is valid: negate in unsigned arithmetic */
    *out = neg ? (int64_t) (0 - v) : (int64_t) v;
    return SH_OK;
}

static void
sh_resp_frame_done(sh_resp_reader_t *r, sh_frame_t *f)
{
    f->buf = r->buf;
    sh_buf_ref(r->buf);
    f->data = r->buf->data + r->start;
    f->len = r->pos - r->start;
    r->start = r->pos;
    r->need = 0;
}

/* --- inline requests ------------------------------------------------- */

/*
 * Inline commands are read the way Redis 7.0 reads them
 * (processInlineBuffer in src/networking.c, sdssplitargs in src/sds.c),
 * byte for byte -- checked against redis-server by
 * t/integration/045-redis_inline_differential_spec.lua:
 *
 *   - A line ends at the first '\n'; one '\r' before it is dropped.  Redis
 *     looks for the '\n' with strchr(), which stops at a NUL byte: a NUL
 *     before the '\n' hides the newline, so the line never ends and the
 *     connection says nothing until more than max_inline_len bytes are
 *     pending, then gets "too big inline request".
 *   - Between arguments, isspace() in the C locale is skipped: space, \t,
 *     \n, \v, \f, \r.  But an unquoted argument ends only at space, \t,
 *     \n, \r (or the end): "a\vb" is one argument, and so is "a\v".
 *   - A quote anywhere in an argument opens a quoted part of the same
 *     argument: ECHO a"b c" says "ab c".  A closing quote must be followed
 *     by one of the six blanks or the end of the line, otherwise the whole
 *     line is "unbalanced quotes".
 *   - In double quotes: \xHH (two hex digits) is that byte; \n \r \t \b \a
 *     their control characters; a backslash before anything else stands
 *     for that character.  In single quotes only \' is an escape.
 *   - Empty and all-blank lines are skipped without a reply; an empty
 *     quoted argument ("" or '') is an argument.
 */

/* isspace() of the C locale, whatever locale the process runs in */
static int
sh_resp_isblank(int c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* the byte at k of a line of n bytes, or 0 past its end: sdssplitargs
 * reads a C string, and peeks up to three bytes ahead */
static int
sh_resp_at(const uint8_t *line, size_t n, size_t k)
{
    return k < n ? line[k] : 0;
}

static int
sh_resp_hex(int c)
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
 * Split one inline line (without its "\r\n") the way Redis' sdssplitargs
 * splits the C string it is given: the line ends at len or at its first
 * NUL byte, whichever comes first.  The unescaped arguments are written
 * back to back into out (never longer than the line), their lengths into
 * lens.  Returns the argument count (0 for a blank line), or -1 when the
 * line is invalid: an unterminated quote, or a closing quote followed by
 * something other than a blank.  maxargs must be at least len / 2 + 1:
 * every argument but the last takes a byte and a blank after it.
 */
int
sh_resp_split_inline(const uint8_t *line, size_t len, uint8_t *out,
    size_t *lens, int maxargs)
{
    const uint8_t *nul = memchr(line, '\0', len);
    size_t n = nul != NULL ? (size_t) (nul - line) : len;
    size_t i = 0, o = 0, mark;
    int argc = 0, inq, insq, done, c, next;

    for (;;) {
        while (i < n && sh_resp_isblank(line[i])) {
            i++;
        }
        if (i == n) {
            return argc;
        }
        if (argc == maxargs) {
            return -1;                   /* cannot happen, see above */
        }
        mark = o;
        inq = insq = done = 0;
        while (!done) {
            c = sh_resp_at(line, n, i);
            next = sh_resp_at(line, n, i + 1);
            if (inq) {
                if (c == '\\' && next == 'x'
                    && sh_resp_hex(sh_resp_at(line, n, i + 2)) >= 0
                    && sh_resp_hex(sh_resp_at(line, n, i + 3)) >= 0)
                {
                    out[o++] = (uint8_t) (sh_resp_hex(line[i + 2]) * 16
                                          + sh_resp_hex(line[i + 3]));
                    i += 3;
                } else if (c == '\\' && next != 0) {
                    i++;
                    switch (next) {
                    case 'n': out[o++] = '\n'; break;
                    case 'r': out[o++] = '\r'; break;
                    case 't': out[o++] = '\t'; break;
                    case 'b': out[o++] = '\b'; break;
                    case 'a': out[o++] = '\a'; break;
                    default: out[o++] = (uint8_t) next; break;
                    }
                } else if (c == '"') {
                    if (next != 0 && !sh_resp_isblank(next)) {
                        return -1;       /* "a"b */
                    }
                    done = 1;
                } else if (c == 0) {
                    return -1;           /* unterminated quotes */
                } else {
                    out[o++] = (uint8_t) c;
                }
            } else if (insq) {
                if (c == '\\' && next == '\'') {
                    i++;
                    out[o++] = '\'';
                } else if (c == '\'') {
                    if (next != 0 && !sh_resp_isblank(next)) {
                        return -1;       /* 'a'b */
                    }
                    done = 1;
                } else if (c == 0) {
                    return -1;           /* unterminated quotes */
                } else {
                    out[o++] = (uint8_t) c;
                }
            } else {
                switch (c) {
                case ' ':
                case '\n':
                case '\r':
                case '\t':
                case 0:
                    done = 1;            /* not \v, \f: they join in */
                    break;
                case '"':
                    inq = 1;             /* a"b c" is one argument */
                    break;
                case '\'':
                    insq = 1;
                    break;
                default:
                    out[o++] = (uint8_t) c;
                    break;
                }
            }
            if (i < n) {
                i++;
            }
        }
        lens[argc++] = o - mark;
    }
}

/*
 * Read the inline command at r->start.  Returns SH_OK with *out set to the
 * command re-encoded as a multibulk (flagged SH_FRAME_INLINE); SH_OK with
 * *out NULL and r->start moved past the line when the line was blank;
 * SH_OK with nothing moved when the line has not ended yet; SH_ERROR (and
 * the reader's sticky error) for a line over max_inline_len or unbalanced
 * quotes.
 *
 * A line over max_inline_len fails even once its '\n' has come: Redis
 * notices the size only while the line is still unfinished after a read,
 * so what it accepts depends on how its reads fall (in one read it takes
 * lines of up to ~80 KiB); the codec answers the same however the bytes
 * are split, as Redis does when they trickle in.
 */
static int
sh_resp_read_inline(sh_resp_reader_t *r, sh_frame_t **out)
{
    const uint8_t *d = r->buf->data;
    const uint8_t *nl;
    uint8_t stack_out[512];
    size_t stack_lens[64];
    const uint8_t *stack_args[64];
    uint8_t *words;
    size_t *lens;
    const uint8_t **args;
    size_t len, i, o;
    int argc, maxargs;

    nl = memchr(d + r->start, '\n', r->end - r->start);
    if (nl != NULL
        && memchr(d + r->start, '\0', (size_t) (nl - (d + r->start))))
    {
        nl = NULL;      /* Redis' strchr() stops at the NUL: no line yet */
    }
    if (nl == NULL) {
        if (r->end - r->start > r->lim.max_inline_len) {
            return sh_resp_fail(r, "Protocol error: too big inline request");
        }
        return SH_OK;
    }
    len = (size_t) (nl - (d + r->start));
    if (len > r->lim.max_inline_len) {
        return sh_resp_fail(r, "Protocol error: too big inline request");
    }
    if (len > 0 && d[r->start + len - 1] == '\r') {
        len--;
    }
    maxargs = (int) (len / 2 + 1);
    if (len <= sizeof(stack_out) && maxargs <= 64) {
        words = stack_out;
        lens = stack_lens;
        args = stack_args;
    } else {
        words = sh_alloc(len);
        lens = sh_alloc((size_t) maxargs * sizeof(size_t));
        args = sh_alloc((size_t) maxargs * sizeof(uint8_t *));
    }
    argc = sh_resp_split_inline(d + r->start, len, words, lens, maxargs);
    if (argc > 0) {
        for (i = 0, o = 0; i < (size_t) argc; i++) {
            args[i] = words + o;
            o += lens[i];
        }
        *out = sh_resp_encode_command(args, lens, argc);
        (*out)->flags |= SH_FRAME_INLINE;
    }
    if (words != stack_out) {
        sh_free(words);
        sh_free(lens);
        sh_free(args);
    }
    if (argc < 0) {
        return sh_resp_fail(r, "Protocol error: unbalanced quotes in request");
    }
    r->start = r->pos = (uint32_t) (nl - d) + 1;
    return SH_OK;
}

/* --- multibulk requests ---------------------------------------------- */

static int
sh_resp_read_request(sh_resp_reader_t *r, sh_frame_t **out)
{
    const uint8_t *d;
    int64_t crlf, ll;
    sh_frame_t *f;

    for (;;) {
        d = r->buf->data;
        switch (r->state) {
        case SH_RS_START:
            if (r->start == r->end) {
                return SH_OK;
            }
            if (d[r->start] != '*') {
                uint32_t before = r->start;

                if (sh_resp_read_inline(r, out) != SH_OK) {
                    return SH_ERROR;
                }
                if (*out != NULL || r->start == before) {
                    return SH_OK;        /* a command, or need more */
                }
                continue;                /* an empty line was skipped */
            }
            crlf = sh_resp_find_crlf(r, r->start + 1);
            if (crlf < 0) {
                if (r->end - r->start > SH_RESP_LINE_MAX) {
                    return sh_resp_fail(r,
                        "Protocol error: too big mbulk count string");
                }
                return SH_OK;
            }
            if (sh_resp_parse_ll(d + r->start + 1,
                    (size_t) crlf - r->start - 1, &ll) != SH_OK
                || ll > (int64_t) r->lim.max_elements)
            {
                return sh_resp_fail(r,
                    "Protocol error: invalid multibulk length");
            }
            r->pos = (uint32_t) crlf + 2;
            if (ll <= 0) {
                /* Redis ignores empty multibulks: no reply either */
                r->start = r->pos;
                continue;
            }
            if (ll <= SH_RESP_PREALLOC_ARGS) {
                r->frame = sh_frame_alloc(SH_PROTO_REDIS, (uint32_t) ll);
            } else {
                /* never trust a declared count for a big allocation: the
                 * slices grow as arguments really arrive */
                r->frame = sh_frame_alloc(SH_PROTO_REDIS, 0);
                r->frame->argv = sh_alloc(SH_RESP_PREALLOC_ARGS
                                          * sizeof(sh_slice_t));
                r->frame->flags |= SH_FRAME_OWN_ARGS;
                r->args_cap = SH_RESP_PREALLOC_ARGS;
            }
            r->frame->argc = (int32_t) ll;
            r->frame->rtype = '*';
            r->argi = 0;
            r->state = SH_RS_BULK_HEADER;
            /* fall through */
        case SH_RS_BULK_HEADER:
            if (r->pos == r->end) {
                return SH_OK;
            }
            if (d[r->pos] != '$') {
                return sh_resp_fail(r, "Protocol error: expected '$', got '%c'",
                                    d[r->pos]);
            }
            crlf = sh_resp_find_crlf(r, r->pos + 1);
            if (crlf < 0) {
                if (r->end - r->pos > SH_RESP_LINE_MAX) {
                    return sh_resp_fail(r,
                        "Protocol error: too big bulk count string");
                }
                return SH_OK;
            }
            if (sh_resp_parse_ll(d + r->pos + 1, (size_t) crlf - r->pos - 1,
                    &ll) != SH_OK
                || ll < 0 || ll > (int64_t) r->lim.max_bulk_len)
            {
                return sh_resp_fail(r, "Protocol error: invalid bulk length");
            }
            r->pos = (uint32_t) crlf + 2;
            r->bulk_len = (uint32_t) ll;
            if ((r->frame->flags & SH_FRAME_OWN_ARGS)
                && (uint32_t) r->argi == r->args_cap)
            {
                r->args_cap *= 2;
                r->frame->argv = sh_realloc(r->frame->argv,
                    r->args_cap * sizeof(sh_slice_t));
            }
            r->frame->argv[r->argi].off = r->pos - r->start;
            r->frame->argv[r->argi].len = r->bulk_len;
            r->need = r->pos - r->start + r->bulk_len + 2;
            r->state = SH_RS_BULK_DATA;
            /* fall through */
        case SH_RS_BULK_DATA:
            if (r->end - r->start < r->need) {
                return SH_OK;
            }
            r->pos = r->start + r->need;
            if (d[r->pos - 2] != '\r' || d[r->pos - 1] != '\n') {
                return sh_resp_fail(r,
                    "Protocol error: bulk string not followed by CRLF");
            }
            r->need = 0;
            if (++r->argi < r->frame->argc) {
                r->state = SH_RS_BULK_HEADER;
                continue;
            }
            f = r->frame;
            r->frame = NULL;
            r->state = SH_RS_START;
            sh_resp_frame_done(r, f);
            f->cmd_id = (uint16_t) sh_resp_command_id(
                f->data + f->argv[0].off, f->argv[0].len);
            f->cmd = sh_resp_classify(f->data + f->argv[0].off,
                f->argv[0].len,
                f->argc > 1 ? f->data + f->argv[1].off : NULL,
                f->argc > 1 ? f->argv[1].len : 0);
            if (f->cmd == 0 && f->argv[0].len >= 5
                && (f->data[f->argv[0].off] | 0x20) == 'x')
            {
                /* XREAD / XREADGROUP only block with a BLOCK option */
                int32_t i;
                for (i = 1; i < f->argc; i++) {
                    if (f->argv[i].len == 5 && strncasecmp(
                        (const char *) f->data + f->argv[i].off, "block", 5)
                        == 0)
                    {
                        f->cmd = sh_resp_classify(f->data + f->argv[0].off,
                            f->argv[0].len, (const uint8_t *) "BLOCK", 5);
                        break;
                    }
                }
            }
            *out = f;
            return SH_OK;
        default:
            return sh_resp_fail(r, "Protocol error: bad reader state");
        }
    }
}

/* --- replies ----------------------------------------------------------- */

/* Double the stack of open aggregates (the first levels live in the
 * reader; deeper replies get a heap array). */
static void
sh_resp_stack_grow(sh_resp_reader_t *r)
{
    uint32_t cap = r->stack_cap * 2;
    sh_resp_level_t *st;

    if (r->stack == r->small) {
        st = sh_alloc(cap * sizeof(*st));
        memcpy(st, r->small, sizeof(r->small));
    } else {
        st = sh_realloc(r->stack, cap * sizeof(*st));
    }
    r->stack = st;
    r->stack_cap = cap;
}

/*
 * One element has been read completely at the current level: count it off,
 * closing every aggregate it completes.  Returns 1 when the top-level value
 * is complete.
 */
static int
sh_resp_element_done(sh_resp_reader_t *r)
{
    while (r->depth > 0) {
        sh_resp_level_t *lv = &r->stack[r->depth - 1];

        if (--lv->left > 0) {
            return 0;
        }
        r->depth--;
        if (lv->attr) {
            /* an attribute map is followed by the value it annotates */
            return 0;
        }
    }
    return 1;
}

static int
sh_resp_read_reply(sh_resp_reader_t *r, sh_frame_t **out)
{
    const uint8_t *d;
    int64_t crlf, ll;
    uint8_t t;
    sh_frame_t *f;
    int complete;

    for (;;) {
        d = r->buf->data;
        if (r->state == SH_RS_VALUE_DATA) {
            if (r->end - r->start < r->need) {
                return SH_OK;
            }
            r->pos = r->start + r->need;
            if (d[r->pos - 2] != '\r' || d[r->pos - 1] != '\n') {
                return sh_resp_fail(r,
                    "Protocol error: bulk string not followed by CRLF");
            }
            r->need = 0;
            r->state = SH_RS_VALUE;
            complete = sh_resp_element_done(r);
        } else {
            if (r->pos == r->end) {
                return SH_OK;
            }
            /* a line (type byte and CR included) is at most max_bulk_len */
            crlf = sh_resp_find_crlf(r, r->pos + 1);
            if ((crlf < 0 && r->end - r->pos > r->lim.max_bulk_len)
                || (crlf >= 0
                    && (uint64_t) crlf + 1 - r->pos > r->lim.max_bulk_len))
            {
                return sh_resp_fail(r, "Protocol error: line too long");
            }
            if (crlf < 0) {
                return SH_OK;
            }
            t = d[r->pos];
            if (r->pos == r->start || (r->top_type == '|' && r->depth == 0)) {
                r->top_type = t;
                r->top_count = 0;
            }
            complete = 0;
            switch (t) {
            case '_': case '#': case ',': case '(':
                r->resp3 = 1;
                /* fall through */
            case '+': case '-': case ':':
                if (t == '#' && ((size_t) crlf - r->pos != 2
                    || (d[r->pos + 1] != 't' && d[r->pos + 1] != 'f')))
                {
                    return sh_resp_fail(r, "Protocol error: invalid boolean");
                }
                if (t == ':' && sh_resp_parse_ll(d + r->pos + 1,
                        (size_t) crlf - r->pos - 1, &ll) != SH_OK)
                {
                    return sh_resp_fail(r, "Protocol error: invalid integer");
                }
                r->pos = (uint32_t) crlf + 2;
                complete = sh_resp_element_done(r);
                break;
            case '!': case '=':
                r->resp3 = 1;
                /* fall through */
            case '$':
                if (sh_resp_parse_ll(d + r->pos + 1,
                        (size_t) crlf - r->pos - 1, &ll) != SH_OK
                    || ll < -1 || ll > (int64_t) r->lim.max_bulk_len
                    || (ll == -1 && t != '$'))
                {
                    return sh_resp_fail(r,
                        "Protocol error: invalid bulk length");
                }
                r->pos = (uint32_t) crlf + 2;
                if (r->depth == 0 && r->top_type == t) {
                    r->top_count = ll < 0 ? -1 : 0;
                }
                if (ll < 0) {
                    complete = sh_resp_element_done(r);
                    break;
                }
                r->need = r->pos - r->start + (uint32_t) ll + 2;
                r->state = SH_RS_VALUE_DATA;
                continue;
            case '%': case '~': case '>': case '|':
                r->resp3 = 1;
                /* fall through */
            case '*':
                if (sh_resp_parse_ll(d + r->pos + 1,
                        (size_t) crlf - r->pos - 1, &ll) != SH_OK
                    || ll < -1 || ll > (int64_t) r->lim.max_elements
                    || (ll == -1 && t != '*'))
                {
                    return sh_resp_fail(r,
                        "Protocol error: invalid multibulk length");
                }
                r->pos = (uint32_t) crlf + 2;
                if (r->depth == 0 && r->top_type == t) {
                    r->top_count = (int32_t) ll;
                }
                if (ll <= 0) {
                    complete = t == '|' ? 0 : sh_resp_element_done(r);
                    break;
                }
                if ((uint32_t) r->depth >= r->lim.max_depth) {
                    return sh_resp_fail(r,
                        "Protocol error: nesting deeper than %u",
                        r->lim.max_depth);
                }
                if ((uint32_t) r->depth == r->stack_cap) {
                    sh_resp_stack_grow(r);
                }
                r->stack[r->depth].left = (t == '%' || t == '|') ? ll * 2 : ll;
                r->stack[r->depth].attr = t == '|';
                r->depth++;
                continue;
            default:
                return sh_resp_fail(r, "Protocol error: invalid reply type "
                                    "byte 0x%02x", t);
            }
        }
        if (!complete) {
            continue;
        }
        f = sh_frame_alloc(SH_PROTO_REDIS, 0);
        f->rtype = r->top_type;
        f->argc = r->top_count;
        if (r->resp3) {
            f->flags |= SH_FRAME_RESP3;
        }
        r->resp3 = 0;
        sh_resp_frame_done(r, f);
        *out = f;
        return SH_OK;
    }
}

/*
 * sh_resp_reader_raw: every byte received and not yet returned, as one
 * frame (NULL when there is none), whatever it holds.  For a connection
 * that stops speaking RESP -- the replication stream after SYNC -- whose
 * bytes are relayed as they come; the reader is then only a buffer.
 */
int
sh_resp_reader_raw(sh_resp_reader_t *r, sh_frame_t **out)
{
    sh_frame_t *f;

    *out = NULL;
    if (r->buf == NULL || r->end == r->start) {
        return SH_OK;
    }
    f = sh_frame_alloc(SH_PROTO_REDIS, 0);
    r->pos = r->end;
    r->depth = 0;
    r->state = r->mode == SH_RESP_REQUEST ? SH_RS_START : SH_RS_VALUE;
    sh_resp_frame_done(r, f);
    *out = f;
    return SH_OK;
}

int
sh_resp_reader_next(sh_resp_reader_t *r, sh_frame_t **out)
{
    *out = NULL;
    if (r->failed) {
        return SH_ERROR;
    }
    if (r->buf == NULL) {
        return SH_OK;
    }
    if (r->mode == SH_RESP_REQUEST) {
        return sh_resp_read_request(r, out);
    }
    return sh_resp_read_reply(r, out);
}

/* --- command classes ------------------------------------------------- */

typedef struct sh_resp_cmd_s {
    const char *name;        /* upper-case command name */
    const char *sub;         /* subcommand, or NULL for any */
    uint32_t cmd;            /* SH_CMD_* bits */
} sh_resp_cmd_t;

/* Commands that change how a connection behaves; all others are 0. */
static const sh_resp_cmd_t sh_resp_cmds[] = {
    { "CLIENT", "REPLY", SH_CMD_PIN | SH_CMD_STREAM },
    /* what could close or stall connections other clients share: the
     * sink looks at their arguments (sh_redis_pool.c) */
    { "CLIENT", "KILL", SH_CMD_PIN | SH_CMD_VET },
    { "CLIENT", "PAUSE", SH_CMD_PIN | SH_CMD_VET },
    { "CLIENT", "UNPAUSE", SH_CMD_PIN | SH_CMD_VET },
    { "CLIENT", NULL, SH_CMD_PIN },
    { "MULTI", NULL, SH_CMD_PIN },
    { "WATCH", NULL, SH_CMD_PIN },
    { "SELECT", NULL, SH_CMD_PIN },
    { "AUTH", NULL, SH_CMD_PIN },
    { "HELLO", NULL, SH_CMD_PIN },
    { "RESET", NULL, SH_CMD_PIN },
    { "READONLY", NULL, SH_CMD_PIN },
    { "READWRITE", NULL, SH_CMD_PIN },
    { "SUBSCRIBE", NULL, SH_CMD_PIN | SH_CMD_STREAM },
    { "PSUBSCRIBE", NULL, SH_CMD_PIN | SH_CMD_STREAM },
    { "SSUBSCRIBE", NULL, SH_CMD_PIN | SH_CMD_STREAM },
    { "MONITOR", NULL, SH_CMD_PIN | SH_CMD_STREAM },
    /* one reply per channel named, subscribed to or not: on a shared
     * connection the extras would answer other clients' requests */
    { "UNSUBSCRIBE", NULL, SH_CMD_PIN | SH_CMD_STREAM },
    { "PUNSUBSCRIBE", NULL, SH_CMD_PIN | SH_CMD_STREAM },
    { "SUNSUBSCRIBE", NULL, SH_CMD_PIN | SH_CMD_STREAM },
    /* the replication stream is not RESP: its bytes are relayed raw */
    { "SYNC", NULL, SH_CMD_PIN | SH_CMD_STREAM | SH_CMD_RAW },
    { "PSYNC", NULL, SH_CMD_PIN | SH_CMD_STREAM | SH_CMD_RAW },
    /* REPLCONF ACK / GETACK get no reply at all */
    { "REPLCONF", NULL, SH_CMD_PIN | SH_CMD_STREAM },
    /* the Lua debugger answers EVAL with a stream of its own */
    { "SCRIPT", "DEBUG", SH_CMD_PIN | SH_CMD_STREAM },
    { "BLPOP", NULL, SH_CMD_PIN | SH_CMD_BLOCKING },
    { "BRPOP", NULL, SH_CMD_PIN | SH_CMD_BLOCKING },
    { "BRPOPLPUSH", NULL, SH_CMD_PIN | SH_CMD_BLOCKING },
    { "BLMOVE", NULL, SH_CMD_PIN | SH_CMD_BLOCKING },
    { "BLMPOP", NULL, SH_CMD_PIN | SH_CMD_BLOCKING },
    { "BZPOPMIN", NULL, SH_CMD_PIN | SH_CMD_BLOCKING },
    { "BZPOPMAX", NULL, SH_CMD_PIN | SH_CMD_BLOCKING },
    { "BZMPOP", NULL, SH_CMD_PIN | SH_CMD_BLOCKING },
    /* they count what acknowledged this connection's writes */
    { "WAIT", NULL, SH_CMD_PIN | SH_CMD_BLOCKING | SH_CMD_WAIT },
    { "WAITAOF", NULL, SH_CMD_PIN | SH_CMD_BLOCKING | SH_CMD_WAIT },
    { "XREAD", "BLOCK", SH_CMD_PIN | SH_CMD_BLOCKING },
    { "XREADGROUP", "BLOCK", SH_CMD_PIN | SH_CMD_BLOCKING },
    { "QUIT", NULL, SH_CMD_QUIT },
};

static int
sh_resp_name_eq(const uint8_t *p, size_t len, const char *name)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (name[i] == '\0' || (p[i] & ~0x20) != (uint8_t) name[i]) {
            return 0;
        }
    }
    return name[len] == '\0';
}

/*
 * sh_resp_classify: the SH_CMD_* bits of a command.  Most commands are 0 and
 * are rejected by the length and first-letter test before any compare.
 */
uint32_t
sh_resp_classify(const uint8_t *name, size_t len, const uint8_t *sub,
    size_t sublen)
{
    size_t i;
    uint8_t c0;

    if (len < 4 || len > 12) {       /* WAIT .. PUNSUBSCRIBE */
        return 0;
    }
    c0 = name[0] & ~0x20;
    for (i = 0; i < sizeof(sh_resp_cmds) / sizeof(sh_resp_cmds[0]); i++) {
        const sh_resp_cmd_t *c = &sh_resp_cmds[i];

        if ((uint8_t) c->name[0] != c0 || !sh_resp_name_eq(name, len, c->name))
        {
            continue;
        }
        if (c->sub != NULL
            && (sub == NULL || !sh_resp_name_eq(sub, sublen, c->sub)))
        {
            continue;
        }
        return c->cmd;
    }
    return 0;
}

/* --- command ids ----------------------------------------------------- */

/*
 * Every Redis command has an id, its position (from 1) in the generated
 * sh_resp_command_names (lua/shotover/redis/commands.lua's order).  The
 * reader stores it in f->cmd_id.  Why: transforms that go by command
 * (router, query_counter) index arrays by it, instead of making an
 * upper-cased Lua string of the name per request and hashing that.
 * Lookup: a hash of the name folded to upper case, into an open-address
 * table built once per process.
 */
extern const char *const sh_resp_command_names[];
extern const size_t sh_resp_ncommands;

#define SH_RESP_ID_SLOTS 2048        /* 2^11 (the hash's bits), > 4x the
                                        commands */
#define SH_RESP_NAME_MAX 32          /* longer names are no command */

static uint16_t sh_resp_id_slots[SH_RESP_ID_SLOTS];  /* id, 0 = empty */
static pthread_once_t sh_resp_id_once = PTHREAD_ONCE_INIT;

static uint8_t
sh_resp_upper(uint8_t c)
{
    return (c >= 'a' && c <= 'z') ? (uint8_t) (c - ('a' - 'A')) : c;
}

/*
 * The slot hash of a name: its length and four of its bytes (first,
 * second, middle, last), folded to upper case.  Why not every byte: this
 * runs for every request, and these spread Redis's 240 names over the slots
 * about as well as FNV over all bytes does (1.10 probes per name on
 * average, 3 at most), in constant time.
 */
static uint32_t
sh_resp_name_hash(const uint8_t *p, size_t len)
{
    uint32_t h = (uint32_t) len * 0x9e3779b1u;

    h ^= (uint32_t) sh_resp_upper(p[0]) << 16;
    h ^= (uint32_t) sh_resp_upper(p[len > 1 ? 1 : 0]) << 24;
    h ^= (uint32_t) sh_resp_upper(p[len - 1]) << 8;
    h ^= (uint32_t) sh_resp_upper(p[len >> 1]);
    return (h * 0x85ebca6bu) >> 21;          /* 11 bits: SH_RESP_ID_SLOTS */
}

static void
sh_resp_ids_init(void)
{
    size_t i;

    for (i = 0; i < sh_resp_ncommands && i < SH_RESP_ID_SLOTS / 4; i++) {
        const char *n = sh_resp_command_names[i];
        uint32_t h = sh_resp_name_hash((const uint8_t *) n, strlen(n));

        while (sh_resp_id_slots[h & (SH_RESP_ID_SLOTS - 1)] != 0) {
            h++;
        }
        sh_resp_id_slots[h & (SH_RESP_ID_SLOTS - 1)] = (uint16_t) (i + 1);
    }
}

/*
 * sh_resp_command_id: the id of the command named by len bytes at name, in
 * any case (a-z fold to A-Z, as Lua's string.upper does), or 0 when Redis
 * has no such command.
 */
uint32_t
sh_resp_command_id(const uint8_t *name, size_t len)
{
    uint32_t h;
    uint16_t id;

    if (len == 0 || len > SH_RESP_NAME_MAX) {
        return 0;
    }
    pthread_once(&sh_resp_id_once, sh_resp_ids_init);
    h = sh_resp_name_hash(name, len);
    while ((id = sh_resp_id_slots[h & (SH_RESP_ID_SLOTS - 1)]) != 0) {
        const char *n = sh_resp_command_names[id - 1];
        size_t i;

        for (i = 0; i < len; i++) {
            if (sh_resp_upper(name[i]) != (uint8_t) n[i]) {
                break;                      /* stops at n's NUL too */
            }
        }
        if (i == len && n[len] == '\0') {
            return id;
        }
        h++;
    }
    return 0;
}

int
sh_ffi_resp_command_id(const uint8_t *name, size_t len)
{
    return (int) sh_resp_command_id(name, len);
}

const char *
sh_ffi_resp_command_name(int id)
{
    if (id < 1 || (size_t) id > sh_resp_ncommands) {
        return NULL;
    }
    return sh_resp_command_names[id - 1];
}

/* --- encoding ---------------------------------------------------------- */

static size_t
sh_resp_digits(size_t v)
{
    size_t n = 1;

    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* Write "<c><v>\r\n" at p; the bytes written (sprintf cost ~0.1 us a call
 * here, a few per command). */
static size_t
sh_resp_put_len(uint8_t *p, char c, size_t v)
{
    size_t n = sh_resp_digits(v), i;

    p[0] = (uint8_t) c;
    for (i = n; i > 0; i--) {
        p[i] = (uint8_t) ('0' + v % 10);
        v /= 10;
    }
    p[n + 1] = '\r';
    p[n + 2] = '\n';
    return n + 3;
}

sh_frame_t *
sh_resp_encode_command(const uint8_t *const *args, const size_t *lens,
    int nargs)
{
    sh_frame_t *f = sh_frame_alloc(SH_PROTO_REDIS, (uint32_t) nargs);
    size_t total, o;
    sh_buf_t *b;
    int i;

    total = 1 + sh_resp_digits((size_t) nargs) + 2;
    for (i = 0; i < nargs; i++) {
        total += 1 + sh_resp_digits(lens[i]) + 2 + lens[i] + 2;
    }
    b = sh_buf_new((uint32_t) total);
    o = sh_resp_put_len(b->data, '*', (size_t) nargs);
    for (i = 0; i < nargs; i++) {
        o += sh_resp_put_len(b->data + o, '$', lens[i]);
        f->argv[i].off = (uint32_t) o;
        f->argv[i].len = (uint32_t) lens[i];
        if (lens[i]) {
            memcpy(b->data + o, args[i], lens[i]);
        }
        o += lens[i];
        b->data[o++] = '\r';
        b->data[o++] = '\n';
    }
    f->buf = b;
    f->data = b->data;
    f->len = (uint32_t) o;
    f->argc = nargs;
    f->rtype = '*';
    f->cmd = sh_resp_classify(args[0], lens[0], nargs > 1 ? args[1] : NULL,
                              nargs > 1 ? lens[1] : 0);
    f->cmd_id = (uint16_t) sh_resp_command_id(args[0], lens[0]);
    return f;
}

/* --- describe ---------------------------------------------------------- */

typedef struct sh_resp_out_s {
    char *p;                 /* output buffer */
    size_t cap;              /* its size */
    size_t n;                /* bytes that would have been written */
} sh_resp_out_t;

static void
sh_resp_put(sh_resp_out_t *o, const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++, o->n++) {
        if (o->n + 1 < o->cap) {
            o->p[o->n] = s[i];
        }
    }
}

static void
sh_resp_put_escaped(sh_resp_out_t *o, const uint8_t *s, size_t len)
{
    char esc[8];
    size_t i;

    for (i = 0; i < len; i++) {
        if (s[i] < 0x20 || s[i] >= 0x7f) {
            snprintf(esc, sizeof(esc), "\\x%02x", s[i]);
            sh_resp_put(o, esc, 4);
        } else {
            sh_resp_put(o, (const char *) s + i, 1);
        }
    }
}

static void
sh_resp_put_quoted(sh_resp_out_t *o, const uint8_t *s, size_t len)
{
    char esc[8];
    size_t i;

    sh_resp_put(o, "\"", 1);
    for (i = 0; i < len; i++) {
        switch (s[i]) {
        case '"': sh_resp_put(o, "\\\"", 2); break;
        case '\\': sh_resp_put(o, "\\\\", 2); break;
        case '\n': sh_resp_put(o, "\\n", 2); break;
        case '\r': sh_resp_put(o, "\\r", 2); break;
        case '\t': sh_resp_put(o, "\\t", 2); break;
        default:
            if (s[i] < 0x20 || s[i] >= 0x7f) {
                snprintf(esc, sizeof(esc), "\\x%02x", s[i]);
                sh_resp_put(o, esc, 4);
            } else {
                sh_resp_put(o, (const char *) s + i, 1);
            }
        }
    }
    sh_resp_put(o, "\"", 1);
}

/*
 * Describe one value at *pos; recursion is bounded by SH_RESP_DESCRIBE_DEPTH
 * (this is for logs and tests, not the hot path).
 */
static int
sh_resp_describe_value(const uint8_t *d, size_t len, size_t *pos,
    sh_resp_out_t *o, int depth)
{
    const uint8_t *line, *crlf;
    size_t linelen;
    int64_t ll, i;
    uint8_t t;

    if (depth > SH_RESP_DESCRIBE_DEPTH || *pos >= len) {
        return -1;
    }
    t = d[*pos];
    line = d + *pos + 1;
    crlf = NULL;
    for (const uint8_t *p = line; p + 1 < d + len; p++) {
        if (p[0] == '\r' && p[1] == '\n') {
            crlf = p;
            break;
        }
    }
    if (crlf == NULL) {
        return -1;
    }
    linelen = (size_t) (crlf - line);
    *pos = (size_t) (crlf - d) + 2;
    switch (t) {
    case '+': case '-': case ':': case ',': case '(': case '#':
        /* lines may hold any byte but CR LF: escape what would garble logs */
        sh_resp_put(o, (const char *) &t, 1);
        sh_resp_put_escaped(o, line, linelen);
        return 0;
    case '_':
        sh_resp_put(o, "nil", 3);
        return 0;
    case '$': case '!': case '=':
        if (sh_resp_parse_ll(line, linelen, &ll) != SH_OK || ll < -1) {
            return -1;
        }
        if (ll == -1) {
            sh_resp_put(o, "nil", 3);
            return 0;
        }
        if ((size_t) ll + 2 > len - *pos) {
            return -1;
        }
        if (t != '$') {
            sh_resp_put(o, (const char *) &t, 1);
        }
        sh_resp_put_quoted(o, d + *pos, (size_t) ll);
        *pos += (size_t) ll + 2;
        return 0;
    case '*': case '~': case '>': case '%': case '|':
        if (sh_resp_parse_ll(line, linelen, &ll) != SH_OK || ll < -1) {
            return -1;
        }
        if (ll == -1) {
            sh_resp_put(o, "nil", 3);
            return 0;
        }
        if (t == '~' || t == '>' || t == '|') {
            sh_resp_put(o, (const char *) &t, 1);
        }
        sh_resp_put(o, (t == '%' || t == '|') ? "{" : "[", 1);
        for (i = 0; i < ll; i++) {
            if (i > 0) {
                sh_resp_put(o, ", ", 2);
            }
            if (sh_resp_describe_value(d, len, pos, o, depth + 1) < 0) {
                return -1;
            }
            if (t == '%' || t == '|') {
                sh_resp_put(o, ": ", 2);
                if (sh_resp_describe_value(d, len, pos, o, depth + 1) < 0) {
                    return -1;
                }
            }
        }
        sh_resp_put(o, (t == '%' || t == '|') ? "}" : "]", 1);
        if (t == '|') {
            sh_resp_put(o, " ", 1);
            return sh_resp_describe_value(d, len, pos, o, depth + 1);
        }
        return 0;
    default:
        return -1;
    }
}

int
sh_resp_describe(const uint8_t *data, size_t len, char *out, size_t cap)
{
    sh_resp_out_t o = { out, cap, 0 };
    size_t pos = 0;

    if (sh_resp_describe_value(data, len, &pos, &o, 0) < 0) {
        if (cap > 0) {
            out[0] = '\0';
        }
        return -1;
    }
    if (cap > 0) {
        if (o.n >= cap) {
            if (cap > 4) {
                memcpy(out + cap - 4, "...", 3);
            }
            out[cap - 1] = '\0';
        } else {
            out[o.n] = '\0';
        }
    }
    return (int) o.n;
}

/* --- frames for Lua ------------------------------------------------------ */

/*
 * sh_resp_error_frame: the error reply "-CODE msg": msg as it is when it
 * starts with an upper-case code and a space ("WRONGTYPE ...",
 * "MOVED ..."), else "-ERR msg".  Truncated to fit a line of 1 KiB.
 */
sh_frame_t *
sh_resp_error_frame(const char *msg)
{
    char line[1024];
    const char *p = msg;
    sh_frame_t *f;
    int n;

    while (*p >= 'A' && *p <= 'Z') {
        p++;
    }
    n = snprintf(line, sizeof(line), "-%s%s\r\n",
                 (p > msg && *p == ' ') ? "" : "ERR ", msg);
    if (n >= (int) sizeof(line)) {
        n = sizeof(line) - 1;
        line[n - 2] = '\r';
        line[n - 1] = '\n';
    }
    f = sh_frame_copy(SH_PROTO_REDIS, (const uint8_t *) line, (size_t) n);
    f->rtype = '-';
    return f;
}

int
sh_ffi_frame_new_command(const uint8_t **args, const size_t *lens,
    int nargs, sh_frame_t **out, const char **err)
{
    if (nargs < 1) {
        *err = "a command needs at least one argument";
        return SH_ERROR;
    }
    *out = sh_resp_encode_command((const uint8_t *const *) args, lens, nargs);
    return sh_cycle_add_frame(*out);
}

/*
 * sh_ffi_frame_set_arg: replace argument i (0-based) of a request, re-encoding
 * the frame into a buffer of its own and marking it modified.
 */
int
sh_ffi_frame_set_arg(sh_frame_t *f, int i, const uint8_t *data, size_t len,
    const char **err)
{
    const uint8_t *stack_args[16];
    size_t stack_lens[16];
    const uint8_t **args = stack_args;
    size_t *lens = stack_lens;
    sh_frame_t *nf;
    int k;

    if (f->proto != SH_PROTO_REDIS || f->argv == NULL) {
        *err = "not a Redis request";
        return SH_ERROR;
    }
    if (i < 0 || i >= f->argc) {
        *err = "argument index out of range";
        return SH_ERROR;
    }
    if (f->argc > 16) {
        args = sh_alloc((size_t) f->argc * sizeof(*args));
        lens = sh_alloc((size_t) f->argc * sizeof(*lens));
    }
    for (k = 0; k < f->argc; k++) {
        args[k] = f->data + f->argv[k].off;
        lens[k] = f->argv[k].len;
    }
    args[i] = data;
    lens[i] = len;
    nf = sh_resp_encode_command(args, lens, f->argc);
    /* move the new encoding into f, which everybody else points at */
    sh_buf_unref(f->buf);
    f->buf = nf->buf;
    nf->buf = NULL;
    f->data = nf->data;
    f->len = nf->len;
    memcpy(f->argv, nf->argv, (size_t) f->argc * sizeof(sh_slice_t));
    f->cmd = nf->cmd;
    f->cmd_id = nf->cmd_id;
    f->flags |= SH_FRAME_MODIFIED;
    sh_frame_unref(nf);
    if (args != stack_args) {
        sh_free(args);
        sh_free(lens);
    }
    return SH_OK;
}


/* --- cluster slots -------------------------------------------------------- */

/* CRC16/XMODEM (polynomial 0x1021, initial 0), as Redis Cluster hashes
 * keys (the cluster spec's crc16.c), a table byte by byte. */
static uint16_t sh_crc16_table[256];

static void
sh_crc16_init(void)
{
    uint32_t i, j;

    for (i = 0; i < 256; i++) {
        uint16_t c = (uint16_t) (i << 8);

        for (j = 0; j < 8; j++) {
            c = (uint16_t) ((c & 0x8000) ? (c << 1) ^ 0x1021 : c << 1);
        }
        sh_crc16_table[i] = c;
    }
}

uint32_t
sh_ffi_redis_key_slot(const uint8_t *key, size_t len)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    const uint8_t *open, *close;
    uint16_t crc = 0;
    size_t i;

    pthread_once(&once, sh_crc16_init);
    /* the part between the first '{' and the first '}' after it, when
     * that part is not empty */
    open = memchr(key, '{', len);
    if (open != NULL) {
        close = memchr(open + 1, '}', len - (size_t) (open + 1 - key));
        if (close != NULL && close > open + 1) {
            key = open + 1;
            len = (size_t) (close - key);
        }
    }
    for (i = 0; i < len; i++) {
        crc = (uint16_t) ((crc << 8) ^ sh_crc16_table[((crc >> 8) ^ key[i])
                                                      & 0xff]);
    }
    return crc & 16383;
}
