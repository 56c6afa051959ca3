/*
 * fuzz-chain.c -- libFuzzer target for the path a request takes through
 * the proxy: bytes from a client -> the connection's reader -> the Lua
 * chain -> the replies written back (`t/run-fuzz chain`), so that the seam
 * between the codecs and Lua is fuzzed with the rest.
 *
 * LLVMFuzzerInitialize starts a worker in this thread as `shotover run`
 * does (sh_lua_worker_init on t/fuzz/chain.lua): a Redis and a Cassandra
 * source whose chains read every request through the message API, then
 * the transforms that read requests (query_counter, query_type_filter,
 * tee, router, parallel_map), ending in sinks that answer without a
 * backend (null, debug_returner).  Clients connect over a Unix socket
 * that a listener of each source accepts on (beside its TCP one: the same
 * sh_conn_accept, no ports or TIME_WAIT per input).
 *
 * Each input is one client connection:
 *
 *   byte 0   bit 0: the source (0 Redis, 1 Cassandra); bits 1-7: where
 *            the bytes are cut in two (Redis)
 *   ...      Redis: the bytes the client sends; Cassandra: a fuzz-cql.h
 *            conversation, whose client part is sent (from the handshake
 *            on, as a new connection: the mutator keeps it so) and whose
 *            node part is ignored
 *
 * The client sends the first part and, once the proxy has answered it,
 * the rest (CQL: the first part ends with the STARTUP, as a driver waits
 * for READY before it sends in the framing READY switches to), then shuts
 * its write side; the worker's loop runs until the proxy closes the
 * connection.  Checked, besides ASan and UBSan over the whole core:
 *   - the proxy closes the connection after EOF within a bound;
 *   - what came back reads as replies of the protocol with nothing left
 *     over (a RESP reply reader; a CQL response reader switched to v5
 *     segments as the client's is): one per request (Redis: up to a QUIT),
 *     and one error more when the requests ended in a protocol error;
 *   - a CQL reply is on the stream of a request still unanswered (but
 *     that protocol error);
 *   - every connection is freed once closed.
 * Lua lines count as coverage (fuzz-lua.h).
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sanitizer/lsan_interface.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sh_conn.h"
#include "sh_upstream.h"

#include "fuzz-cql.h"
#include "fuzz-lua.h"

#define FZ_LOOPS 20000           /* loop turns before a hang is declared */

static sh_worker_t *fz_w;
static int fz_verbose;           /* SHOTOVER_FUZZ_VERBOSE: what was read */

/* --- the worker ---------------------------------------------------------- */

/* as sh_server.c's listener does: accept on readiness, hand each over */
static void
fz_accept_cb(uv_poll_t *p, int status, int events)
{
    sh_listener_t *l = p->data;
    int fd;

    (void) events;
    FZ_CHECK(status == 0, "accept failed");
    while ((fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC))
           >= 0)
    {
        sh_conn_accept(l, fd, NULL);
    }
}

/* The Unix socket of source `which`, in the abstract namespace (no file
 * is left behind when a run crashes); its address length. */
static socklen_t
fz_unix_addr(struct sockaddr_un *sa, int which)
{
    int n;

    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    n = snprintf(sa->sun_path + 1, sizeof(sa->sun_path) - 1,
                 "shotover-fuzz-chain.%d.%d", (int) getpid(), which);
    return (socklen_t) (offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

/* A listener beside the source's TCP one, on a Unix socket. */
static void
fz_listen_unix(int proto, int which)
{
    struct sockaddr_un sa;
    sh_listener_t *l, *tcp;
    socklen_t len;
    int fd;

    for (tcp = fz_w->listeners; tcp != NULL; tcp = tcp->next) {
        if (tcp->conf.proto == proto) {
            break;
        }
    }
    FZ_CHECK(tcp != NULL, "a source is missing");
    len = fz_unix_addr(&sa, which);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FZ_CHECK(fd >= 0 && bind(fd, (struct sockaddr *) &sa, len) == 0
             && listen(fd, 16) == 0, "cannot listen on a Unix socket");
    l = sh_calloc(1, sizeof(*l));
    *l = *tcp;
    l->next = NULL;
    l->fd = fd;
    FZ_CHECK(fcntl(fd, F_SETFL, O_NONBLOCK) == 0
             && uv_poll_init(&fz_w->loop, &l->poll, fd) == 0,
             "cannot listen");
    l->poll.data = l;
    FZ_CHECK(uv_poll_start(&l->poll, UV_READABLE, fz_accept_cb) == 0,
             "cannot listen");
}

static void
fz_summary(void)
{
    fprintf(stderr, "fuzz-chain: Lua lines reached: %u\n", fz_lua_lines());
}

/* a free loopback port for a source's TCP listener (unused here) */
static int
fz_free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    FZ_CHECK(fd >= 0 && bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0
             && getsockname(fd, (struct sockaddr *) &sa, &len) == 0,
             "no free port");
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[4096], addr[64];

    sh_unused(argc);
    sh_unused(argv);
    fz_verbose = getenv("SHOTOVER_FUZZ_VERBOSE") != NULL;
    signal(SIGPIPE, SIG_IGN);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", fz_free_port());
    setenv("SHOTOVER_FUZZ_REDIS", addr, 1);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", fz_free_port());
    setenv("SHOTOVER_FUZZ_CQL", addr, 1);
    setenv("SHOTOVER_LUA_PATH", SH_FUZZ_DIR "/?.lua", 1);

    fz_w = sh_calloc(1, sizeof(*fz_w));
    sh_worker_init(fz_w, 0);
    fz_w->conf_path = SH_FUZZ_DIR "/chain.lua";
    sh_worker_hook(fz_w, sh_run_wake_all);
    sh_worker_hook(fz_w, sh_upstream_flush_all);
    sh_worker_cur = fz_w;
    /* What the chains make at start lives as long as the worker, held by
     * Lua alone (shared reply frames) in NaN-tagged values, which the leak
     * checks run after an input do not read as pointers. */
    __lsan_disable();
    if (sh_lua_worker_init(fz_w, err, sizeof(err)) != SH_OK) {
        fprintf(stderr, "fuzz-chain: %s\n", err);
        abort();
    }
    __lsan_enable();
    /* (the tee's mismatches would be a warning per request) */
    sh_ffi_log_set_level(fz_verbose ? SH_LOG_DEBUG : SH_LOG_ERROR);
    fz_lua_cover(fz_w->L);
    fz_listen_unix(SH_PROTO_REDIS, 0);
    fz_listen_unix(SH_PROTO_CQL, 1);
    atexit(fz_summary);
    return 0;
}

/* --- one client connection ----------------------------------------------- */

typedef struct fz_client_s {
    int fd;                  /* our end */
    uint8_t *got;            /* what the proxy sent */
    size_t len, cap;         /* of it */
    size_t got_first;        /* of it before the second part was sent */
    int eof;                 /* the proxy closed */
} fz_client_t;

static void
fz_turn(fz_client_t *c)
{
    ssize_t n;

    uv_run(&fz_w->loop, UV_RUN_NOWAIT);
    while (!c->eof) {
        if (c->cap - c->len < 4096) {
            c->cap = c->cap * 2 + 65536;
            c->got = sh_realloc(c->got, c->cap);
        }
        n = read(c->fd, c->got + c->len, c->cap - c->len);
        if (n > 0) {
            c->len += (size_t) n;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            c->eof = 1;              /* (a reset counts as a close) */
        } else {
            return;
        }
    }
}

/* Send p[0..n), turning the loop while the proxy reads. */
static void
fz_send(fz_client_t *c, const uint8_t *p, size_t n)
{
    ssize_t w;
    int turns = 0;

    while (n > 0 && !c->eof) {
        w = write(c->fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t) w;
        } else {
            FZ_CHECK(w < 0 && (errno == EAGAIN || errno == EINTR
                               || errno == EPIPE || errno == ECONNRESET),
                     "write failed");
            if (errno == EPIPE || errno == ECONNRESET) {
                return;              /* the proxy closed: fine */
            }
        }
        fz_turn(c);
        FZ_CHECK(++turns < FZ_LOOPS, "the proxy stopped reading");
    }
}

/* Turn the loop a few times: what the proxy can do with what it has. */
static void
fz_settle(fz_client_t *c)
{
    int i;

    for (i = 0; i < 8 && !c->eof; i++) {
        fz_turn(c);
    }
}

static void
fz_connect(fz_client_t *c, int which)
{
    struct sockaddr_un sa;
    socklen_t len = fz_unix_addr(&sa, which);

    memset(c, 0, sizeof(*c));
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    FZ_CHECK(c->fd >= 0 && connect(c->fd, (struct sockaddr *) &sa, len) == 0,
             "cannot connect");
}

/* Shut our side, run until the proxy closes and frees the connection. */
static void
fz_finish(fz_client_t *c)
{
    int turns = 0;

    shutdown(c->fd, SHUT_WR);
    while (!c->eof) {
        fz_turn(c);
        FZ_CHECK(++turns < FZ_LOOPS, "the proxy did not close the "
                 "connection after EOF");
    }
    close(c->fd);
    while (fz_w->conns != NULL || fz_w->shadows != NULL) {
        uv_run(&fz_w->loop, UV_RUN_NOWAIT);
        FZ_CHECK(++turns < 2 * FZ_LOOPS, "a closed connection lingers");
    }
    uv_run(&fz_w->loop, UV_RUN_NOWAIT);  /* its close callback */
}

/* --- Redis --------------------------------------------------------------- */

/*
 * Replies: exactly the bytes of whole RESP replies, one per request read,
 * up to and including a QUIT (the proxy closes after answering it); when
 * the requests ended in a protocol error, one more (-ERR) after them.
 */
static void
fz_redis_check(const uint8_t *d, size_t n, const fz_client_t *c)
{
    sh_resp_limits_t lim = sh_resp_default_limits;
    sh_resp_reader_t *r;
    sh_frame_t *f;
    uint32_t nreq = 0, nrep = 0;
    int failed = 0, quit = 0;

    lim.max_bulk_len = 1 << 20;          /* as t/fuzz/chain.lua */
    lim.max_elements = 4096;
    lim.max_inline_len = 4096;
    r = sh_resp_reader_new(SH_RESP_REQUEST, &lim);
    sh_resp_reader_feed(r, d, n);
    for (;;) {
        if (sh_resp_reader_next(r, &f) != SH_OK) {
            failed = 1;
            break;
        }
        if (f == NULL) {
            break;
        }
        nreq++;
        quit = (f->cmd & SH_CMD_QUIT) != 0;
        sh_frame_unref(f);
        if (quit) {
            break;
        }
    }
    sh_resp_reader_free(r);

    r = sh_resp_reader_new(SH_RESP_REPLY, NULL);
    sh_resp_reader_feed(r, c->got, c->len);
    for (;;) {
        FZ_CHECK(sh_resp_reader_next(r, &f) == SH_OK,
                 "the proxy sent something that is not RESP");
        if (f == NULL) {
            break;
        }
        nrep++;
        sh_frame_unref(f);
    }
    FZ_CHECK(sh_resp_reader_pending(r) == 0,
             "the proxy sent part of a reply");
    sh_resp_reader_free(r);
    FZ_CHECK(nrep == nreq + (failed && !quit),
             "not one reply per request");
}

static void
fz_redis(const uint8_t *d, size_t n, size_t cut)
{
    fz_client_t c;

    fz_connect(&c, 0);
    fz_send(&c, d, cut);
    fz_settle(&c);
    fz_send(&c, d + cut, n - cut);
    fz_finish(&c);
    fz_redis_check(d, n, &c);
    sh_free(c.got);
}

/* --- Cassandra ----------------------------------------------------------- */

static uint32_t
fz_be32(const uint8_t *p)
{
    return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16)
           | ((uint32_t) p[2] << 8) | p[3];
}

/*
 * Reading what the client sent and what came back as the proxy did: the
 * first part (up to the STARTUP) was read whole before any reply went
 * out, and its replies all came before the second part was sent; a READY
 * or AUTHENTICATE answering after a STARTUP switched v5 to segments both
 * ways (sh_cql_framing_*, the proxy's own functions).  When the proxy
 * could have switched in the middle of the second part (a v5 STARTUP in
 * it, or one not answered with READY before it), where it switched
 * depends on how its reads fell: the replies are then not checked.
 */
typedef struct fz_cql_read_s {
    sh_cql_reader_t *req, *resp; /* the client's bytes, the proxy's */
    sh_cql_framing_t fr_req;     /* switches req, as the connection does */
    sh_cql_framing_t fr_resp;    /* switches resp, as a driver does */
    int16_t *streams;            /* requests not answered yet */
    uint32_t nstreams;           /* how many */
    uint32_t nreq, nresp;        /* read */
    uint32_t startups;           /* STARTUPs among the requests */
    int req_failed;              /* the requests ended in a protocol error */
    int resp_failed;             /* the replies did not read */
    uint32_t stray;              /* replies on no request's stream */
} fz_cql_read_t;

static void
fz_cql_requests(fz_cql_read_t *cr, const uint8_t *d, size_t n)
{
    sh_frame_t *f;

    sh_cql_reader_feed(cr->req, d, n);
    while (!cr->req_failed) {
        if (sh_cql_reader_next(cr->req, &f) != SH_OK) {
            cr->req_failed = 1;
            break;
        }
        if (f == NULL) {
            break;
        }
        if (fz_verbose) {
            fprintf(stderr, "fuzz-chain: request v%d opcode 0x%02x stream "
                    "%d, %u bytes\n", sh_cql_frame_version(f), f->rtype,
                    (int) f->argc, f->len);
        }
        sh_cql_framing_request(&cr->fr_req, f);
        sh_cql_framing_request(&cr->fr_resp, f);
        cr->startups += f->rtype == SH_CQL_STARTUP;
        cr->streams[cr->nstreams++] = (int16_t) f->argc;
        cr->nreq++;
        sh_frame_unref(f);
    }
}

static void
fz_cql_replies(fz_cql_read_t *cr, const uint8_t *d, size_t n)
{
    sh_frame_t *f;
    uint32_t i;
    int found;

    sh_cql_reader_feed(cr->resp, d, n);
    while (!cr->resp_failed) {
        if (sh_cql_reader_next(cr->resp, &f) != SH_OK) {
            cr->resp_failed = 1;
            break;
        }
        if (f == NULL) {
            break;
        }
        if (fz_verbose) {
            fprintf(stderr, "fuzz-chain: reply v%d opcode 0x%02x stream %d, "
                    "%u bytes\n", sh_cql_frame_version(f), f->rtype,
                    (int) f->argc, f->len);
        }
        cr->nresp++;
        found = 0;
        for (i = 0; i < cr->nstreams && !found; i++) {
            if (cr->streams[i] == f->argc) {
                cr->streams[i] = cr->streams[--cr->nstreams];
                found = 1;
            }
        }
        cr->stray += !found;
        sh_cql_framing_response(&cr->fr_req, f, cr->req);
        sh_cql_framing_response(&cr->fr_resp, f, cr->resp);
        sh_frame_unref(f);
    }
}

/*
 * Replies: whole envelopes (in segments once READY went out in v5), with
 * nothing left over; one per request, on its stream; after requests that
 * ended in a protocol error, that error (on the stream it could read, or
 * 0): the one stray reply allowed.
 */
static void
fz_cql_check(const uint8_t *d, size_t n, size_t cut, const fz_client_t *c)
{
    fz_cql_read_t cr;
    int sure;
    sh_cql_limits_t lim = { .max_body_len = 1 << 20 }; /* as chain.lua */

    memset(&cr, 0, sizeof(cr));
    cr.req = sh_cql_reader_new(SH_CQL_REQUEST, &lim);
    cr.resp = sh_cql_reader_new(SH_CQL_RESPONSE, NULL);
    cr.streams = sh_alloc((n / SH_CQL_HEADER_LEN + 1) * sizeof(int16_t));
    fz_cql_requests(&cr, d, cut);
    fz_cql_replies(&cr, c->got, c->got_first);
    sure = sh_cql_reader_pending(cr.resp) == 0
           && !(cr.fr_req.startup && sh_cql_reader_version(cr.req) >= 5);
    if (!cr.req_failed) {
        fz_cql_requests(&cr, d + cut, n - cut);
    }
    if (cr.startups > 1 && sh_cql_reader_version(cr.req) >= 5) {
        sure = 0;
    }
    fz_cql_replies(&cr, c->got + c->got_first, c->len - c->got_first);
    if (cr.req_failed && cr.nreq == 0 && sh_cql_reader_version(cr.req) == 0)
    {
        /* refused at once (a version we do not speak): one ERROR, in the
         * client's version when it is older (as Cassandra answers) */
        FZ_CHECK(c->len >= SH_CQL_HEADER_LEN && (c->got[0] & 0x80)
                 && c->got[4] == SH_CQL_ERROR
                 && c->len == SH_CQL_HEADER_LEN + fz_be32(c->got + 5),
                 "no ERROR for a version the proxy does not speak");
        sure = 0;
    }
    if (sure) {
        FZ_CHECK(!cr.resp_failed && sh_cql_reader_pending(cr.resp) == 0,
                 "the proxy sent something that is not CQL");
        if (cr.nresp != cr.nreq + (cr.req_failed ? 1 : 0)
            || cr.stray > (uint32_t) cr.req_failed)
        {
            fprintf(stderr, "fuzz-chain: %u requests%s, %u replies (%u on "
                    "no request's stream)\n", cr.nreq,
                    cr.req_failed ? " (then a protocol error)" : "",
                    cr.nresp, cr.stray);
            FZ_CHECK(0, "not one reply per request");
        }
    }
    sh_cql_reader_free(cr.req);
    sh_cql_reader_free(cr.resp);
    sh_free(cr.streams);
}

/* Where the requests of a fresh connection end their handshake: after
 * the first STARTUP envelope (else nowhere: 0). */
static size_t
fz_startup_end(const uint8_t *d, size_t n)
{
    sh_cql_reader_t *r = sh_cql_reader_new(SH_CQL_REQUEST, NULL);
    size_t at = 0, end = 0;
    sh_frame_t *f;

    sh_cql_reader_feed(r, d, n);
    while (sh_cql_reader_next(r, &f) == SH_OK && f != NULL) {
        at += f->len;
        if (f->rtype == SH_CQL_STARTUP) {
            end = at;
            sh_frame_unref(f);
            break;
        }
        sh_frame_unref(f);
    }
    sh_cql_reader_free(r);
    return end;
}

static void
fz_cql(const uint8_t *data, size_t size)
{
    const uint8_t *d, *s;
    size_t n, sn, cut;
    fz_client_t c;

    if (!fz_split(data, size, &d, &n, &s, &sn)) {
        return;
    }
    cut = fz_startup_end(d, n);
    fz_connect(&c, 1);
    fz_send(&c, d, cut);
    fz_settle(&c);
    c.got_first = c.len;
    fz_send(&c, d + cut, n - cut);
    fz_finish(&c);
    fz_cql_check(d, n, cut, &c);
    sh_free(c.got);
}

/* --- the target ---------------------------------------------------------- */

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    if (data[0] & 1) {
        fz_cql(data + 1, size - 1);
    } else {
        fz_redis(data + 1, size - 1, (size - 1) * (data[0] >> 1) / 127);
    }
    return 0;
}

/* CQL inputs keep their structure (fuzz-cql.h), starting as a new
 * connection does; Redis ones are bytes. */
size_t
LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size,
    unsigned int seed)
{
    if (size < 1 || max_size < 2) {
        return LLVMFuzzerMutate(data, size, max_size);
    }
    if (data[0] & 1) {
        return 1 + fz_cql_mutate(data + 1, size - 1, max_size - 1, seed, 1);
    }
    if (seed % 32 == 0) {
        data[0] = (uint8_t) (seed >> 8) & 0xfe;   /* another cut */
        return size;
    }
    return 1 + LLVMFuzzerMutate(data + 1, size - 1, max_size - 1);
}

size_t
LLVMFuzzerCustomCrossOver(const uint8_t *data1, size_t size1,
    const uint8_t *data2, size_t size2, uint8_t *out, size_t max_out,
    unsigned int seed)
{
    size_t n, k, m;

    if (size1 < 1 || size2 < 1 || max_out < 2
        || (data1[0] & 1) != (data2[0] & 1))
    {
        return 0;
    }
    out[0] = data1[0];
    if (data1[0] & 1) {
        n = fz_cql_crossover(data1 + 1, size1 - 1, data2 + 1, size2 - 1,
                             out + 1, max_out - 1, seed);
        return n ? n + 1 : 0;
    }
    /* Redis: the first bytes of one, then the last ones of the other */
    n = sh_min(1 + seed % size1, max_out);
    memcpy(out, data1, n);
    k = size2 > 1 ? 1 + (seed >> 8) % (size2 - 1) : size2;
    m = sh_min(size2 - k, max_out - n);
    memcpy(out + n, data2 + k, m);
    return n + m;
}
