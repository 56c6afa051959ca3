/*
 * test-shdict.c -- tests of the shared dict (c/sh_shdict.c).
 *
 * The GCRA step with an injected clock (burst, refusal, retry time, refill,
 * costs, the never-passes case), get/set/incr/delete, eviction at capacity,
 * and the point of it all: threads hammering one key with the clock frozen
 * are granted exactly the burst between them, never more (no race), and
 * threads incrementing one counter lose no increment.
 *
 * The last line is "N passed, M failed"; the exit status is non-zero on
 * any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "sh_core.h"
#include "sh_metrics.h"

#include "check.h"

#define MS 1000000ull
#define SEC 1000000000ull
#define K(s) (const uint8_t *) (s), strlen(s)

static sh_shdict_t *
open_dict(const char *name, uint32_t cap)
{
    sh_shdict_t *d = NULL;
    const char *err = NULL;

    if (sh_ffi_shdict_open(name, cap, &d, &err) != SH_OK) {
        printf("not ok - open %s: %s\n", name, err);
        exit(1);
    }
    return d;
}

static void
test_gcra(void)
{
    sh_shdict_t *d = open_dict("gcra", 100);
    uint64_t retry, t0 = 1000 * SEC, iv = 100 * MS;   /* 10 per second */
    int i, ok = 0;

    /* burst 5 from an idle key, then refused with a sane retry time */
    for (i = 0; i < 8; i++) {
        if (sh_ffi_shdict_gcra(d, K("k"), t0, iv, 5 * iv, 1, &retry)
            == SH_OK)
        {
            ok++;
        }
    }
    CHECK(ok == 5, "burst of 5 allowed, got %d", ok);
    CHECK(sh_ffi_shdict_gcra(d, K("k"), t0, iv, 5 * iv, 1, &retry)
          == SH_DECLINED && retry == iv,
          "refused, retry after one interval (%llu)",
          (unsigned long long) retry);
    /* one interval later exactly one more passes */
    CHECK(sh_ffi_shdict_gcra(d, K("k"), t0 + iv, iv, 5 * iv, 1, &retry)
          == SH_OK, "refilled one after an interval");
    CHECK(sh_ffi_shdict_gcra(d, K("k"), t0 + iv, iv, 5 * iv, 1, &retry)
          == SH_DECLINED, "and only one");
    /* idle for long: a full burst again, not more */
    ok = 0;
    for (i = 0; i < 10; i++) {
        ok += sh_ffi_shdict_gcra(d, K("k"), t0 + 60 * SEC, iv, 5 * iv, 1,
                                 &retry) == SH_OK;
    }
    CHECK(ok == 5, "full burst after idling, got %d", ok);
    /* costs: 3 then 3 of a bucket of 5 */
    CHECK(sh_ffi_shdict_gcra(d, K("c"), t0, iv, 5 * iv, 3, &retry) == SH_OK,
          "cost 3 fits");
    CHECK(sh_ffi_shdict_gcra(d, K("c"), t0, iv, 5 * iv, 3, &retry)
          == SH_DECLINED && retry == iv, "cost 3 again waits one interval");
    CHECK(sh_ffi_shdict_gcra(d, K("c"), t0, iv, 5 * iv, 2, &retry) == SH_OK,
          "cost 2 still fits");
    CHECK(sh_ffi_shdict_gcra(d, K("c"), t0, iv, 5 * iv, 6, &retry)
          == SH_DECLINED && retry == UINT64_MAX, "cost over burst never");
    CHECK(sh_ffi_shdict_gcra(d, K("c"), t0, iv, 5 * iv, 0, &retry) == SH_OK,
          "cost 0 always");
    /* a clock that goes back a little changes nothing */
    CHECK(sh_ffi_shdict_gcra(d, K("c"), t0 - SEC, iv, 5 * iv, 1, &retry)
          == SH_DECLINED, "earlier clock: still full");
    /* kinds do not mix */
    CHECK(sh_ffi_shdict_set(d, K("b"), K("x"), 0, NULL) == SH_OK, "set");
    CHECK(sh_ffi_shdict_gcra(d, K("b"), t0, iv, 5 * iv, 1, &retry)
          == SH_ERROR, "gcra on a bytes value");
    CHECK(sh_ffi_shdict_gcra(d, K(""), t0, iv, 5 * iv, 1, &retry)
          == SH_ERROR, "empty key");
    CHECK(sh_ffi_shdict_gcra(d, K("z"), t0, 0, 5 * iv, 1, &retry)
          == SH_ERROR, "zero interval");
}

static void
test_basics(void)
{
    sh_shdict_t *d = open_dict("basics", 4), *again = NULL;
    const char *err = NULL;
    uint8_t buf[64];
    size_t len = 0;
    int64_t v = 0;
    uint64_t count, cap, ev;

    CHECK(sh_ffi_shdict_open("basics", 999, &again, &err) == SH_OK
          && again == d, "same name, same dict");
    CHECK(sh_ffi_shdict_open("", 9, &again, &err) == SH_ERROR, "no name");
    CHECK(sh_ffi_shdict_open("x", 0, &again, &err) == SH_ERROR, "no room");
    CHECK(sh_ffi_shdict_get(d, K("a"), buf, sizeof(buf), &len)
          == SH_DECLINED, "absent");
    CHECK(sh_ffi_shdict_set(d, K("a"), K("a long value, over sixteen"), 0,
                            &err) == SH_OK, "set long");
    CHECK(sh_ffi_shdict_get(d, K("a"), buf, 4, &len) == SH_AGAIN
          && len == 26, "too small a buffer gives the length");
    CHECK(sh_ffi_shdict_get(d, K("a"), buf, sizeof(buf), &len) == SH_OK
          && len == 26 && memcmp(buf, "a long value", 12) == 0, "get long");
    CHECK(sh_ffi_shdict_incr(d, K("a"), 1, 0, &v, &err) == SH_ERROR,
          "incr of text");
    CHECK(sh_ffi_shdict_incr(d, K("n"), 5, 10, &v, &err) == SH_OK && v == 15,
          "incr from init");
    CHECK(sh_ffi_shdict_incr(d, K("n"), -20, 0, &v, &err) == SH_OK
          && v == -5, "incr below zero");
    CHECK(sh_ffi_shdict_get(d, K("n"), buf, sizeof(buf), &len) == SH_OK
          && len == 2 && memcmp(buf, "-5", 2) == 0, "kept as text");
    CHECK(sh_ffi_shdict_set(d, K("m"), K("9223372036854775807"), 0, &err)
          == SH_OK && sh_ffi_shdict_incr(d, K("m"), 1, 0, &v, &err)
          == SH_ERROR, "overflow refused");
    CHECK(sh_ffi_shdict_delete(d, K("m")) == SH_OK
          && sh_ffi_shdict_delete(d, K("m")) == SH_DECLINED, "delete");
    /* capacity 4: a fifth key evicts the least recently used (a, unless
     * touched: touch it, so n goes) */
    sh_ffi_shdict_set(d, K("p"), K("1"), 0, &err);
    sh_ffi_shdict_set(d, K("q"), K("1"), 0, &err);
    sh_ffi_shdict_get(d, K("a"), buf, sizeof(buf), &len);
    sh_ffi_shdict_set(d, K("r"), K("1"), 0, &err);
    sh_ffi_shdict_stats(d, &count, &cap, &ev);
    CHECK(count == 4 && cap == 4 && ev == 1, "bounded: %llu entries, %llu "
          "evicted", (unsigned long long) count, (unsigned long long) ev);
    CHECK(sh_ffi_metric_value(sh_metric_get(SH_METRIC_COUNTER,
              "shotover_shdict_evictions_total", "", "dict=\"basics\""))
          == 1, "the eviction is counted in the dict's metric");
    {
        /* a name that needs escaping in the exposition format */
        sh_shdict_t *odd = open_dict("a\"b\\c\nd", 4);
        size_t tlen = 0;
        char *text = sh_metrics_render(&tlen);

        CHECK(odd != NULL && strstr(text, "shotover_shdict_evictions_total"
                                    "{dict=\"a\\\"b\\\\c\\nd\"} 0\n")
              != NULL, "label values are escaped");
        free(text);
    }
    CHECK(sh_ffi_shdict_get(d, K("n"), buf, sizeof(buf), &len)
          == SH_DECLINED, "the least recently used went");
    CHECK(sh_ffi_shdict_get(d, K("a"), buf, sizeof(buf), &len) == SH_OK,
          "the touched one stayed");
    /* a time to live */
    CHECK(sh_ffi_shdict_set(d, K("t"), K("1"), 1, &err) == SH_OK, "ttl set");
    uv_sleep(2);
    CHECK(sh_ffi_shdict_get(d, K("t"), buf, sizeof(buf), &len)
          == SH_DECLINED, "expired");
    sh_ffi_shdict_flush(d);
    sh_ffi_shdict_stats(d, &count, &cap, &ev);
    CHECK(count == 0, "flushed");
}

#define THREADS 4
#define TRIES 20000

typedef struct {
    sh_shdict_t *d;          /* the dict */
    int allowed;             /* grants this thread got */
} worker_t;

static void
hammer_gcra(void *arg)
{
    worker_t *w = arg;
    uint64_t retry;
    int i;

    for (i = 0; i < TRIES; i++) {
        if (sh_ffi_shdict_gcra(w->d, K("shared"), 7 * SEC, MS, 1000 * MS, 1,
                               &retry) == SH_OK)
        {
            w->allowed++;
        }
    }
}

static void
hammer_incr(void *arg)
{
    worker_t *w = arg;
    const char *err;
    int64_t v;
    int i;

    for (i = 0; i < TRIES; i++) {
        w->allowed += sh_ffi_shdict_incr(w->d, K("counter"), 1, 0, &v, &err)
                      == SH_OK;
    }
}

static void
test_threads(void)
{
    worker_t w[THREADS];
    uv_thread_t t[THREADS];
    sh_shdict_t *d = open_dict("threads", 100000);
    uint8_t buf[32];
    size_t len = 0;
    int i, total = 0;

    for (i = 0; i < THREADS; i++) {
        w[i].d = d;
        w[i].allowed = 0;
        uv_thread_create(&t[i], hammer_gcra, &w[i]);
    }
    for (i = 0; i < THREADS; i++) {
        uv_thread_join(&t[i]);
        total += w[i].allowed;
    }
    CHECK(total == 1000, "threads were granted exactly the burst of 1000 "
          "with the clock frozen, got %d", total);
    for (i = 0; i < THREADS; i++) {
        w[i].allowed = 0;
        uv_thread_create(&t[i], hammer_incr, &w[i]);
    }
    for (i = 0; i < THREADS; i++) {
        uv_thread_join(&t[i]);
    }
    CHECK(sh_ffi_shdict_get(d, K("counter"), buf, sizeof(buf), &len)
          == SH_OK && len == 5 && memcmp(buf, "80000", 5) == 0,
          "no increment lost");
}

int
main(void)
{
    test_gcra();
    test_basics();
    test_threads();
    return CHECK_DONE();
}
