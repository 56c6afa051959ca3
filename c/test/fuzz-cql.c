/*
 * fuzz-cql.c -- libFuzzer target for the CQL side of shotover: the codec
 * (c/sh_cql.c, its handshake switch and the body functions of sh_ffi.h)
 * and the body decoders the Lua side runs on what it reads
 * (lua/shotover/cql/, driven by t/fuzz/cql.lua).  `t/run-fuzz cql`.
 *
 * An input is one conversation, a client's bytes and the node's answers,
 * laid out and read as fuzz-cql.h says (the proxy's way: the handshake
 * switches v5 to segments); bit 4 of byte 0 puts what Lua reads right
 * after an unmapped page instead of right before one.  Checked:
 *   - reading whole or cut in two gives the same envelopes and errors;
 *     errors are sticky;
 *   - every envelope is whole (header and the body its length declares)
 *     and parses alone again (parse_one), the same (same);
 *   - a v4 body compressed with LZ4 or Snappy decompresses or fails
 *     cleanly, and set_body re-encodes a body to one that reads back equal;
 *   - each direction's envelopes re-encoded as v5 segments (plain or LZ4)
 *     read back equal;
 *   - an ERROR for each envelope parses, on its stream and version;
 *   - the Lua decoders (t/fuzz/cql.lua) on every envelope, a response
 *     paired with the request of its stream, read nothing outside the body
 *     (fuzz-lua.h's guard pages), end, and keep the setters' round trips;
 *     their lines are coverage for libFuzzer (fuzz-lua.h).
 *
 * Structure-aware: the custom mutator and cross-over are fuzz-cql.h's,
 * which keep envelopes, v5 segments, CRCs and compression valid while
 * mutating bodies, header fields and the list of envelopes.
 *
 * Seeds: with SHOTOVER_FUZZ_SEEDS=DIR in the environment the binary reads
 * the captured sessions named on its command line (NAME.c2s, with
 * NAME.s2c beside it), writes them to DIR cut into conversations of a few
 * KiB, each with the state it starts in, and exits (t/run-fuzz does this).
 */
#include <errno.h>
#include <sanitizer/lsan_interface.h>
#include <sys/mman.h>
#include <unistd.h>

#include <lauxlib.h>

#include "sh_lua.h"

#include "fuzz-cql.h"
#include "fuzz-lua.h"

/* --- reading an input ------------------------------------------------- */

static uint32_t
fz_be32(const uint8_t *p)
{
    return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16)
           | ((uint32_t) p[2] << 8) | p[3];
}

static void
fz_keep(fz_conv_t *cv, int dir, sh_frame_t *f, int mode)
{
    fz_side_t *s = &((fz_read_t *) cv->ctx)->side[dir];

    sh_unused(mode);
    if (s->keep != NULL && s->nkeep < FZ_MAX_ENV) {
        s->keep[s->nkeep++] = sh_frame_ref(f);
    }
}

static void
fz_count(fz_conv_t *cv, int dir, sh_frame_t *f, int mode)
{
    sh_unused(cv);
    sh_unused(dir);
    sh_unused(f);
    sh_unused(mode);
}

/* Read an input; cut: whether each direction is fed in two parts. */
static void
fz_read(const uint8_t *data, size_t size, int cut, fz_read_t *rd,
    void (*visit)(fz_conv_t *, int, sh_frame_t *, int))
{
    fz_conv_t cv;
    int d;

    memset(&cv, 0, sizeof(cv));
    fz_split(data, size, &rd->side[0].d, &rd->side[0].len, &rd->side[1].d,
             &rd->side[1].len);
    for (d = 0; d < 2; d++) {
        rd->side[d].cut = cut ? (size_t) data[1] * rd->side[d].len / 255
                              : rd->side[d].len;
        cv.r[d] = fz_reader(d);
    }
    cv.state = data[0];
    cv.next = fz_read_next;
    cv.visit = visit;
    cv.ctx = rd;
    fz_converse(&cv);
    for (d = 0; d < 2; d++) {
        sh_cql_reader_free(cv.r[d]);
    }
}


/* --- checks on one envelope ---------------------------------------------- */

static void
fz_check_envelope(int dir, sh_frame_t *f)
{
    const uint8_t *b, *b2;
    sh_frame_t *g, *h = NULL, *h2 = NULL, *e;
    char small[8], big[256];
    const char *err;
    size_t n, n2;
    int rc, rc2, compressed;

    /* whole: the header and the body it declares */
    FZ_CHECK(f->len >= SH_CQL_HEADER_LEN
             && f->len == SH_CQL_HEADER_LEN + fz_be32(f->data + 5),
             "an envelope is not its declared length");
    FZ_CHECK(f->rtype == f->data[4]
             && f->argc == (int16_t) ((f->data[2] << 8) | f->data[3]),
             "rtype/argc differ from the header");
    FZ_CHECK(((f->data[0] & 0x80) != 0) == (dir == FZ_RESP),
             "an envelope of the wrong direction");

    /* alone, it parses again to the same bytes (parse_one) */
    rc = sh_ffi_frame_new(SH_PROTO_CQL, f->data, f->len, &g, &err);
    FZ_CHECK(rc == SH_DECLINED, "an envelope the reader gave does not "
             "parse alone");
    FZ_CHECK(g->len == f->len && memcmp(g->data, f->data, f->len) == 0
             && g->rtype == f->rtype && g->argc == f->argc,
             "parse_one gives another envelope");
    g->cmd = f->cmd;

    /* its body: decompressed (v4 with flag 0x01) or in place */
    compressed = (f->data[1] & SH_CQL_FLAG_COMPRESSED)
                 && sh_cql_frame_version(f) < 5;
    rc = sh_ffi_cql_body(f, &h, &b, &n, &err);
    if (!compressed) {
        FZ_CHECK(rc == SH_OK && h == NULL && b == f->data + SH_CQL_HEADER_LEN
                 && n == f->len - SH_CQL_HEADER_LEN,
                 "an uncompressed body is not the envelope's");
    } else if (rc == SH_ERROR) {
        FZ_CHECK(err != NULL && h == NULL, "a failed body without a reason");
    } else {
        FZ_CHECK(rc == SH_DECLINED && h != NULL && h->data == b
                 && h->len == n, "a decompressed body without its holder");
    }
    FZ_CHECK(sh_ffi_frame_same(f, g) == (rc != SH_ERROR),
             "an envelope and its copy are not the same");
    if (rc != SH_ERROR) {
        /* set_body re-encodes (recompresses) it to what reads back */
        FZ_CHECK(sh_ffi_cql_set_body(g, b, n, &err) == SH_OK,
                 "set_body refuses a body");
        FZ_CHECK(memcmp(g->data, f->data, 5) == 0, "set_body changed the "
                 "header");
        FZ_CHECK(compressed || (g->len == f->len
                                && memcmp(g->data, f->data, f->len) == 0),
                 "set_body of the same body changed the envelope");
        rc2 = sh_ffi_cql_body(g, &h2, &b2, &n2, &err);
        FZ_CHECK(rc2 != SH_ERROR && n2 == n && memcmp(b, b2, n) == 0,
                 "a body does not read back as set");
        sh_frame_unref(h2);
    }
    sh_frame_unref(h);
    sh_frame_unref(g);

    /* an ERROR answering it */
    FZ_CHECK(sh_ffi_frame_error(f, SH_CQL_PROTOCOL_ERROR, "fuzz", &e)
             == SH_DECLINED, "no error frame");
    rc = sh_ffi_frame_new(SH_PROTO_CQL, e->data, e->len, &g, &err);
    FZ_CHECK(rc == SH_DECLINED && g->rtype == SH_CQL_ERROR
             && g->argc == f->argc
             && sh_cql_frame_version(g) == sh_cql_frame_version(f)
             && (g->data[0] & 0x80), "an error frame that does not parse");
    sh_frame_unref(g);
    sh_frame_unref(e);

    /* described, whole or cut */
    rc = sh_ffi_frame_describe(f, big, sizeof(big));
    rc2 = sh_ffi_frame_describe(f, small, sizeof(small));
    FZ_CHECK(rc > 0 && rc == rc2 && (size_t) rc < sizeof(big)
             && strncmp(big, small, sizeof(small) - 1) == 0,
             "describe is not consistent");
    if (f->rtype == SH_CQL_STARTUP && dir == FZ_REQ) {
        const char *c = sh_cql_startup_compression(f, small, sizeof(small));

        FZ_CHECK(c == NULL || strlen(c) < sizeof(small),
                 "a STARTUP compression longer than its buffer");
    }
}

/* A direction's envelopes as v5 segments read back the same. */
static void
fz_check_segments(int dir, sh_frame_t **frames, uint32_t n, int how)
{
    sh_cql_reader_t *r;
    sh_frame_t *f;
    sh_buf_t *b;
    uint32_t len, i;

    if (n == 0) {
        return;
    }
    b = sh_cql_segments_encode(frames, n, how, &len);
    r = sh_cql_reader_new(dir == FZ_REQ ? SH_CQL_REQUEST : SH_CQL_RESPONSE,
                          NULL);
    sh_cql_reader_use_segments(r, how);
    sh_cql_reader_feed(r, b->data, len);
    for (i = 0; i < n; i++) {
        FZ_CHECK(sh_cql_reader_next(r, &f) == SH_OK && f != NULL,
                 "segments do not read back");
        FZ_CHECK(f->len == frames[i]->len
                 && memcmp(f->data, frames[i]->data, f->len) == 0,
                 "segments read back another envelope");
        sh_frame_unref(f);
    }
    FZ_CHECK(sh_cql_reader_next(r, &f) == SH_OK && f == NULL
             && sh_cql_reader_pending(r) == 0, "segments hold more");
    sh_cql_reader_free(r);
    sh_buf_unref(b);
}

/* --- Lua, and reads past a body ---------------------------------------- */

/* require(module) into the registry; aborts with the message on failure */
static int
fz_lua_require(lua_State *L, const char *module)
{
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    if (lua_pcall(L, 1, 1, 0) != 0) {
        fprintf(stderr, "fuzz: require %s: %s\n", module,
                lua_tostring(L, -1));
        abort();
    }
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

/*
 * Call field fn of the table at registry ref `mod` with nargs arguments
 * already pushed.  The helpers catch every error a decoder may raise on
 * bad input; an error that reaches here is a broken invariant (or a broken
 * helper): abort, so that libFuzzer keeps the input.
 */
static void
fz_lua_call(lua_State *L, int mod, const char *fn, int nargs)
{
    int base = lua_gettop(L) - nargs;

    lua_rawgeti(L, LUA_REGISTRYINDEX, mod);
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    lua_insert(L, base + 1);
    if (lua_pcall(L, nargs, 0, 0) != 0) {
        fprintf(stderr, "fuzz: Lua %s: %s\n", fn, lua_tostring(L, -1));
        abort();
    }
    lua_settop(L, base);
}

/*
 * Reads past a body.  LuaJIT's FFI reads are not instrumented by ASan, so
 * a decoder that reads p[i] past the end of a body would read the
 * neighbouring heap silently.  fz_guard_place() copies a frame so that it
 * ends right before an unmapped page (or starts right after one): a read
 * past it faults, and ASan reports the fault (the Lua-side stack is lost;
 * SHOTOVER_FUZZ_TRACE=1 names each decoder as t/fuzz/cql.lua calls it).
 */

#define FZ_GUARD_CAP (8u << 20)  /* the biggest frame copied */
#define FZ_GUARDS 2              /* frames Lua may hold at once */

static uint8_t *fz_guard[FZ_GUARDS]; /* FZ_GUARD_CAP usable bytes each,
                                        between two unmapped pages */

static void
fz_guard_init(void)
{
    size_t page = (size_t) sysconf(_SC_PAGESIZE);
    uint8_t *m;
    int i;

    for (i = 0; i < FZ_GUARDS; i++) {
        m = mmap(NULL, FZ_GUARD_CAP + 2 * page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED
            || mprotect(m, page, PROT_NONE) != 0
            || mprotect(m + page + FZ_GUARD_CAP, page, PROT_NONE) != 0)
        {
            perror("fuzz: guard pages");
            abort();
        }
        fz_guard[i] = m + page;
    }
}

/*
 * A frame of protocol proto over a copy of the n bytes at p in guarded
 * region `which`, ending right before its unmapped page (or, with before,
 * starting right after the one before it); NULL when it does not fit.
 * The frame owns no buffer: its bytes are valid until the region is used
 * again.  The caller fills in what the codec would have (rtype, argc...).
 */
static sh_frame_t *
fz_guard_place(int which, int proto, const uint8_t *p, size_t n, int before)
{
    sh_frame_t *f;
    uint8_t *d;

    if (n > FZ_GUARD_CAP) {
        return NULL;
    }
    d = before ? fz_guard[which] : fz_guard[which] + FZ_GUARD_CAP - n;
    memcpy(d, p, n);
    f = sh_frame_alloc(proto, 0);
    f->data = d;
    f->len = (uint32_t) n;
    return f;
}

/* --- the Lua decoders ---------------------------------------------------- */

static int fz_verbose;                   /* SHOTOVER_FUZZ_VERBOSE: a line
                                            per input */
static lua_State *fz_L;
static int fz_helper;                    /* registry ref of t/fuzz/cql.lua */
static sh_cycle_t fz_cycle;              /* what Lua makes for an input */

/*
 * f as Lua would read it, in guarded region `which`: a compressed v4 body
 * decompressed (the header then says so: flag 0x01 cleared, its length),
 * as sh_ffi_cql_body would hand it; one that does not decompress as it is,
 * so that Lua meets the error.
 */
static sh_frame_t *
fz_lua_frame(int which, sh_frame_t *f, int before)
{
    sh_frame_t *g, *h;
    const uint8_t *b;
    const char *err;
    uint8_t *tmp;
    size_t n;
    int rc = SH_ERROR;

    if ((f->data[1] & SH_CQL_FLAG_COMPRESSED) && sh_cql_frame_version(f) < 5) {
        /* in the input's cycle: released with it */
        rc = sh_ffi_cql_body(f, &h, &b, &n, &err);
    }
    if (rc != SH_ERROR) {
        tmp = sh_alloc(SH_CQL_HEADER_LEN + n);
        memcpy(tmp, f->data, 5);
        tmp[1] &= (uint8_t) ~SH_CQL_FLAG_COMPRESSED;
        tmp[5] = (uint8_t) (n >> 24);
        tmp[6] = (uint8_t) (n >> 16);
        tmp[7] = (uint8_t) (n >> 8);
        tmp[8] = (uint8_t) n;
        memcpy(tmp + SH_CQL_HEADER_LEN, b, n);
        g = fz_guard_place(which, SH_PROTO_CQL, tmp, SH_CQL_HEADER_LEN + n,
                           before);
        sh_free(tmp);
    } else {
        g = fz_guard_place(which, SH_PROTO_CQL, f->data, f->len, before);
        if (g != NULL) {
            g->cmd = f->cmd;
        }
    }
    if (g != NULL) {
        g->rtype = f->rtype;
        g->argc = f->argc;
    }
    return g;
}

static void
fz_lua_request(sh_frame_t *f, int before, int final)
{
    sh_frame_t *g = fz_lua_frame(0, f, before);

    if (g == NULL) {
        return;
    }
    lua_pushlightuserdata(fz_L, g);
    lua_pushboolean(fz_L, final);
    fz_lua_call(fz_L, fz_helper, "request", 2);
    sh_frame_unref(g);
}

/*
 * Every envelope through the Lua decoders: the requests, each response
 * with the request it answers (the earliest unanswered one of its stream),
 * then the requests again with what the responses taught the session
 * (EXECUTE values typed by their PREPARE's metadata), setters included.
 */
static void
fz_lua(fz_read_t *rd, int before)
{
    fz_side_t *q = &rd->side[FZ_REQ], *s = &rd->side[FZ_RESP];
    uint8_t *answered = sh_calloc(q->nkeep + 1, 1);
    sh_frame_t *g, *r;
    uint32_t i, k;

    sh_cycle_cur = &fz_cycle;
    fz_lua_call(fz_L, fz_helper, "reset", 0);
    for (i = 0; i < q->nkeep; i++) {
        fz_lua_request(q->keep[i], before, 0);
    }
    for (i = 0; i < s->nkeep; i++) {
        g = fz_lua_frame(0, s->keep[i], before);
        if (g == NULL) {
            continue;
        }
        r = NULL;
        for (k = 0; k < q->nkeep && s->keep[i]->argc >= 0; k++) {
            if (!answered[k] && q->keep[k]->argc == s->keep[i]->argc) {
                answered[k] = 1;
                r = fz_lua_frame(1, q->keep[k], before);
                break;
            }
        }
        lua_pushlightuserdata(fz_L, g);
        if (r != NULL) {
            lua_pushlightuserdata(fz_L, r);
        } else {
            lua_pushnil(fz_L);
        }
        fz_lua_call(fz_L, fz_helper, "response", 2);
        sh_frame_unref(r);
        sh_frame_unref(g);
    }
    for (i = 0; i < q->nkeep; i++) {
        fz_lua_request(q->keep[i], before, 1);
    }
    sh_cycle_cur = NULL;
    sh_cycle_release(&fz_cycle);
    sh_free(answered);
}

/* --- the target ---------------------------------------------------------- */

static void
fz_release(fz_read_t *rd)
{
    uint32_t i;
    int d;

    for (d = 0; d < 2; d++) {
        for (i = 0; i < rd->side[d].nkeep; i++) {
            sh_frame_unref(rd->side[d].keep[i]);
        }
        sh_free(rd->side[d].keep);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_read_t whole, cut;
    int d;

    if (size < FZ_HDR) {
        return 0;
    }
    memset(&whole, 0, sizeof(whole));
    memset(&cut, 0, sizeof(cut));
    for (d = 0; d < 2; d++) {
        whole.side[d].keep = sh_alloc(FZ_MAX_ENV * sizeof(sh_frame_t *));
    }
    fz_read(data, size, 0, &whole, fz_keep);
    fz_read(data, size, 1, &cut, fz_count);
    for (d = 0; d < 2; d++) {
        FZ_CHECK(whole.side[d].failed == cut.side[d].failed
                 && whole.side[d].n == cut.side[d].n
                 && whole.side[d].hash == cut.side[d].hash,
                 "reading in two parts changed what was read");
    }
    for (d = 0; d < 2; d++) {
        fz_side_t *s = &whole.side[d];
        uint32_t i;

        for (i = 0; i < s->nkeep; i++) {
            fz_check_envelope(d, s->keep[i]);
        }
        fz_check_segments(d, s->keep, s->nkeep,
                          (data[1] & 1) ? SH_CQL_SEGMENTS_LZ4
                                        : SH_CQL_SEGMENTS_PLAIN);
    }
    fz_lua(&whole, (data[0] >> 4) & 1);
    if (fz_verbose) {
        fprintf(stderr, "fuzz-cql: state %u: %u requests%s, %u responses%s\n",
                data[0], whole.side[0].n, whole.side[0].failed ? " (failed)"
                : "", whole.side[1].n, whole.side[1].failed ? " (failed)"
                : "");
    }
    fz_release(&whole);
    return 0;
}

/* --- mutation (fuzz-cql.h) ----------------------------------------------- */

size_t
LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size,
    unsigned int seed)
{
    return fz_cql_mutate(data, size, max_size, seed, 0);
}

size_t
LLVMFuzzerCustomCrossOver(const uint8_t *data1, size_t size1,
    const uint8_t *data2, size_t size2, uint8_t *out, size_t max_out,
    unsigned int seed)
{
    return fz_cql_crossover(data1, size1, data2, size2, out, max_out, seed);
}

/* --- seeds from captured sessions ---------------------------------------- */

static uint8_t *
fz_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *d;
    long n;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0) {
        fprintf(stderr, "fuzz: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    rewind(f);
    d = sh_alloc((size_t) n + 1);
    if (fread(d, 1, (size_t) n, f) != (size_t) n) {
        fprintf(stderr, "fuzz: %s: short read\n", path);
        exit(1);
    }
    fclose(f);
    *len = (size_t) n;
    return d;
}

#define FZ_SEED_SIZE 3000                /* bytes of envelopes per seed */
#define FZ_SEED_MAX_ENV 4096             /* bigger ones are left out */

/*
 * One captured session (client and node bytes) as seeds: cut where the
 * requests reach FZ_SEED_SIZE bytes, each response going with the request
 * it answers, each cut starting in the framing the session was in there.
 */
static void
fz_seed_session(const char *c2s, const char *dir)
{
    char s2c[4096], path[4096];
    const char *base;
    uint8_t *cb, *sb, *all, *out;
    uint32_t *chunk[2], i, k, nchunks = 0, rng = 1, used;
    size_t clen, slen, n;
    fz_in_t in, part;
    int d;
    FILE *f;

    snprintf(s2c, sizeof(s2c), "%.*s.s2c", (int) (strlen(c2s) - 4), c2s);
    cb = fz_slurp(c2s, &clen);
    sb = fz_slurp(s2c, &slen);
    all = sh_alloc(FZ_HDR + clen + slen);
    all[0] = FZ_HANDSHAKE;
    all[1] = 0x80;
    all[2] = (uint8_t) sh_min(clen, 0xffff);
    all[3] = (uint8_t) (sh_min(clen, 0xffff) >> 8);
    memcpy(all + FZ_HDR, cb, clen);
    memcpy(all + FZ_HDR + clen, sb, slen);
    if (clen > 0xffff) {
        /* the split header holds 16 bits: the client's first 64 KiB */
        memmove(all + FZ_HDR + 0xffff, all + FZ_HDR + clen, slen);
        clen = 0xffff;
    }
    fz_parse(all, FZ_HDR + clen + slen, &in);
    fz_plan(&in);

    /* each request's cut */
    for (d = 0; d < 2; d++) {
        chunk[d] = sh_calloc(in.side[d].n + 1, sizeof(uint32_t));
    }
    used = 0;
    for (i = 0; i < in.side[FZ_REQ].n; i++) {
        if (used > FZ_SEED_SIZE) {
            nchunks++;
            used = 0;
        }
        chunk[FZ_REQ][i] = nchunks;
        used += SH_CQL_HEADER_LEN + in.side[FZ_REQ].e[i].blen;
    }
    nchunks++;
    /* each response's: that of the earliest unanswered request of its
     * stream; events and strays go with the response before them */
    {
        uint8_t *answered = sh_calloc(in.side[FZ_REQ].n + 1, 1);
        uint32_t last = 0;

        for (i = 0; i < in.side[FZ_RESP].n; i++) {
            fz_env_t *e = &in.side[FZ_RESP].e[i];

            for (k = 0; k < in.side[FZ_REQ].n; k++) {
                fz_env_t *q = &in.side[FZ_REQ].e[k];

                if (!answered[k] && (e->h[2] & 0x80) == 0
                    && q->h[2] == e->h[2] && q->h[3] == e->h[3])
                {
                    answered[k] = 1;
                    last = chunk[FZ_REQ][k];
                    break;
                }
            }
            chunk[FZ_RESP][i] = last;
        }
        sh_free(answered);
    }

    base = strrchr(c2s, '/');
    base = base ? base + 1 : c2s;
    out = sh_alloc(1 << 20);
    for (k = 0; k < nchunks; k++) {
        memset(&part, 0, sizeof(part));
        part.split = (uint8_t) (k * 37 + 11);
        for (d = 0; d < 2; d++) {
            part.side[d].e = sh_calloc(FZ_MAX_ENV, sizeof(fz_env_t));
            for (i = 0; i < in.side[d].n; i++) {
                fz_env_t *e = &in.side[d].e[i];

                if (chunk[d][i] != k || e->blen > FZ_SEED_MAX_ENV
                    || part.side[d].n == FZ_MAX_ENV)
                {
                    continue;
                }
                if (part.side[d].n == 0 && d == FZ_REQ && k > 0) {
                    /* the state this cut starts in */
                    part.state = e->mode == SH_CQL_SEGMENTS_PLAIN ? FZ_SEG
                                 : e->mode == SH_CQL_SEGMENTS_LZ4 ? FZ_SEG_LZ4
                                 : FZ_FRAMES;
                    part.state |= (uint8_t) (e->algo << 2);
                }
                fz_env_copy(&part.side[d].e[part.side[d].n++], e);
            }
        }
        part.state |= (uint8_t) ((k & 1) << 4);
        n = fz_encode(&part, out, 1 << 20, &rng);
        snprintf(path, sizeof(path), "%s/%.*s.%03u", dir,
                 (int) (strlen(base) - 4), base, k);
        f = fopen(path, "wb");
        if (f == NULL || fwrite(out, 1, n, f) != n || fclose(f) != 0) {
            fprintf(stderr, "fuzz: %s: %s\n", path, strerror(errno));
            exit(1);
        }
        fz_in_free(&part);
    }
    for (d = 0; d < 2; d++) {
        sh_free(chunk[d]);
    }
    sh_free(out);
    fz_in_free(&in);
    sh_free(all);
    sh_free(cb);
    sh_free(sb);
}

/* --- start-up ------------------------------------------------------------ */

static void
fz_summary(void)
{
    fprintf(stderr, "fuzz-cql: Lua lines reached: %u\n", fz_lua_lines());
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *seeds = getenv("SHOTOVER_FUZZ_SEEDS");
    int i, n = 0;

    if (seeds != NULL) {
        for (i = 1; i < *argc; i++) {
            const char *a = (*argv)[i];
            size_t len = strlen(a);

            if (len > 4 && strcmp(a + len - 4, ".c2s") == 0) {
                fz_seed_session(a, seeds);
                n++;
            }
        }
        fprintf(stderr, "fuzz-cql: seeded %s from %d sessions\n", seeds, n);
        exit(n > 0 ? 0 : 1);
    }
    fz_verbose = getenv("SHOTOVER_FUZZ_VERBOSE") != NULL;
    fz_guard_init();
    fz_L = sh_lua_state_new();
    FZ_CHECK(fz_L != NULL, "no Lua state");
    lua_getglobal(fz_L, "package");
    lua_getfield(fz_L, -1, "path");
    lua_pushfstring(fz_L, "%s/?.lua;%s", SH_FUZZ_DIR, lua_tostring(fz_L, -1));
    lua_setfield(fz_L, -3, "path");
    lua_pop(fz_L, 2);
    /* (what modules make as they load is held by Lua alone, in NaN-tagged
     * values the leak checks do not read as pointers) */
    __lsan_disable();
    fz_helper = fz_lua_require(fz_L, "cql");
    __lsan_enable();
    fz_lua_cover(fz_L);
    atexit(fz_summary);
    return 0;
}
