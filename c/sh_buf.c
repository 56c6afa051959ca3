/*
 * sh_buf.c -- reference-counted buffers, frames and batches.
 */
#include "sh_buf.h"

sh_buf_t *
sh_buf_new(uint32_t cap)
{
    sh_buf_t *b = sh_alloc(sizeof(sh_buf_t) + cap);

    b->refs = 1;
    b->cap = cap;
    return b;
}

sh_buf_t *
sh_buf_try_new(uint32_t cap)
{
    sh_buf_t *b = malloc(sizeof(sh_buf_t) + cap);

    if (b != NULL) {
        b->refs = 1;
        b->cap = cap;
    }
    return b;
}

void
sh_buf_unref(sh_buf_t *b)
{
    if (b != NULL && --b->refs == 0) {
        sh_free(b);
    }
}

/* sh_ffi_buf_eq: 1 when the len bytes at a and b are equal, else 0.  For
 * Lua's compares of a view with a string (key prefixes, exact keys): one
 * FFI call instead of a byte loop inside the transform's batch loop. */
int
sh_ffi_buf_eq(const uint8_t *a, const uint8_t *b, size_t len)
{
    return memcmp(a, b, len) == 0;
}

/*
 * Frames and batches come from per-thread free lists.  Why: at -P 16 the
 * proxy made several mallocs per request (request frame, reply frame,
 * batches) and malloc/free were ~9% of its CPU.  A frame or batch is freed
 * on the thread that made it (a connection never leaves its worker), so the
 * lists need no lock.  Frames of up to SH_POOL_ARGS arguments (nearly every
 * command, and every reply) share one size; bigger ones use malloc.
 */
#define SH_POOL_ARGS 4                   /* argument slices in a pooled frame */
#define SH_POOL_MAX 4096                 /* free objects kept per list */
#define SH_POOL_BATCH_FRAMES 256         /* keep batch arrays up to this */

static __thread sh_frame_t *sh_frame_pool;  /* free frames, linked by buf */
static __thread uint32_t sh_frame_pooled;   /* how many */
static __thread sh_batch_t *sh_batch_pool;  /* free batches, linked by conn */
static __thread uint32_t sh_batch_pooled;   /* how many */

sh_frame_t *
sh_frame_alloc(int proto, uint32_t nargs)
{
    sh_frame_t *f;

    if (nargs <= SH_POOL_ARGS) {
        f = sh_frame_pool;
        if (f != NULL) {
            sh_frame_pool = (sh_frame_t *) f->buf;
            sh_frame_pooled--;
        } else {
            f = sh_alloc(sizeof(sh_frame_t)
                         + SH_POOL_ARGS * sizeof(sh_slice_t));
        }
        memset(f, 0, sizeof(*f));
        f->flags = SH_FRAME_POOLED;
    } else {
        /* the argument slices live right after the frame: one allocation */
        f = sh_alloc(sizeof(sh_frame_t) + (size_t) nargs * sizeof(sh_slice_t));
        memset(f, 0, sizeof(*f));
    }
    f->refs = 1;
    f->proto = (uint8_t) proto;
    f->argv = nargs ? (sh_slice_t *) (f + 1) : NULL;
    return f;
}

void
sh_frame_unref(sh_frame_t *f)
{
    if (f == NULL || f->refs == UINT32_MAX) {
        return;                          /* static frames are never freed */
    }
    if (--f->refs == 0) {
        sh_buf_unref(f->buf);
        if (f->flags & SH_FRAME_OWN_ARGS) {
            sh_free(f->argv);
        }
        if ((f->flags & SH_FRAME_POOLED) && sh_frame_pooled < SH_POOL_MAX) {
            f->buf = (sh_buf_t *) sh_frame_pool;
            sh_frame_pool = f;
            sh_frame_pooled++;
            return;
        }
        sh_free(f);
    }
}

void
sh_ffi_frame_unref(sh_frame_t *f)
{
    sh_frame_unref(f);
}

sh_frame_t *
sh_frame_copy(int proto, const uint8_t *data, size_t len)
{
    sh_frame_t *f = sh_frame_alloc(proto, 0);
    sh_buf_t *b = sh_buf_new((uint32_t) len);

    memcpy(b->data, data, len);
    f->buf = b;
    f->data = b->data;
    f->len = (uint32_t) len;
    return f;
}

sh_frame_t *
sh_frame_noreply(void)
{
    static sh_frame_t noreply = {
        .data = (const uint8_t *) "",
        .refs = UINT32_MAX,
        .flags = SH_FRAME_NOREPLY,
    };

    return &noreply;
}

sh_batch_t *
sh_batch_alloc(uint32_t n)
{
    sh_batch_t *b = sh_batch_pool;
    sh_frame_t **frames;
    uint32_t cap;

    if (b != NULL) {
        sh_batch_pool = (sh_batch_t *) b->run;
        sh_batch_pooled--;
        frames = b->frames;
        cap = b->cap;
        if (cap < n) {
            frames = sh_realloc(frames, n * sizeof(sh_frame_t *));
            cap = n;
        }
        memset(frames, 0, n * sizeof(sh_frame_t *));
    } else {
        b = sh_alloc(sizeof(sh_batch_t));
        cap = n < 16 ? 16 : n;
        frames = sh_calloc(cap, sizeof(sh_frame_t *));
    }
    memset(b, 0, sizeof(*b));
    b->frames = frames;
    b->cap = cap;
    b->n = n;
    b->refs = 1;
    return b;
}

void
sh_batch_unref(sh_batch_t *b)
{
    uint32_t i;

    if (b == NULL || --b->refs != 0) {
        return;
    }
    for (i = 0; i < b->n; i++) {
        sh_frame_unref(b->frames[i]);
    }
    if (sh_batch_pooled < SH_POOL_MAX && b->cap <= SH_POOL_BATCH_FRAMES) {
        b->run = (sh_run_t *) sh_batch_pool;
        sh_batch_pool = b;
        sh_batch_pooled++;
        return;
    }
    sh_free(b->frames);
    sh_free(b);
}

/* Give the pools back to malloc (a worker thread ending, memory released
 * after a burst of connections, or a test). */
void
sh_buf_pools_free(void)
{
    while (sh_frame_pool != NULL) {
        sh_frame_t *f = sh_frame_pool;

        sh_frame_pool = (sh_frame_t *) f->buf;
        sh_free(f);
    }
    sh_frame_pooled = 0;
    while (sh_batch_pool != NULL) {
        sh_batch_t *b = sh_batch_pool;

        sh_batch_pool = (sh_batch_t *) b->run;
        sh_free(b->frames);
        sh_free(b);
    }
    sh_batch_pooled = 0;
}

void
sh_batch_put(sh_batch_t *b, uint32_t i, sh_frame_t *f)
{
    sh_frame_t *old = b->frames[i];

    b->frames[i] = f ? sh_frame_ref(f) : NULL;
    sh_frame_unref(old);
}

void
sh_batch_append(sh_batch_t *b, sh_frame_t *f)
{
    if (b->n == b->cap) {
        b->cap *= 2;
        b->frames = sh_realloc(b->frames, b->cap * sizeof(sh_frame_t *));
    }
    b->frames[b->n++] = f ? sh_frame_ref(f) : NULL;
}

/*
 * sh_buf_reader_space: make room for the next read of a reader whose
 * unparsed bytes are [*start, *end) of *bufp and whose cursor is *pos.  A
 * fully parsed buffer that no frame references is reused from the start; a
 * full one is replaced and only the unfinished frame's bytes move.
 *
 * `need` is how many bytes from *start the unfinished frame needs when
 * known (0 otherwise).  It is the peer's word, not bytes received: a client
 * that announces a 512 MiB bulk and sends 20 KB must not hold 512 MiB.  So
 * a buffer grows by at most SH_BUF_GROW_STEP beyond what arrived, or to
 * twice what arrived when that is more: memory follows the bytes received
 * (at most about twice them), a value up to the step is still read straight
 * into its final place, and a bigger one is copied O(1) times per byte.
 *
 * SH_ERROR when the memory cannot be had (*p NULL, *n 0, the reader's
 * state untouched): the caller fails that connection, not the process.
 */
int
sh_buf_reader_space(sh_buf_t **bufp, uint32_t *start, uint32_t *pos,
    uint32_t *end, uint32_t need, uint8_t **p, size_t *n)
{
    sh_buf_t *b = *bufp;
    uint32_t partial, cap;
    sh_buf_t *nb;

    *p = NULL;
    *n = 0;
    if (b == NULL) {
        b = sh_buf_try_new(SH_BUF_READ_SIZE);
        if (b == NULL) {
            return SH_ERROR;
        }
        *bufp = b;
        *start = *pos = *end = 0;
    } else if (*start == *end && b->refs == 1) {
        *start = *pos = *end = 0;
    }
    partial = *end - *start;
    /* replace or slide when nearly full, or at once when the frame will
     * not fit the first, small buffer (read it straight into its place) */
    if (b->cap - *end < SH_BUF_MIN_FREE
        || (*start + need > b->cap && b->cap < SH_BUF_GROW_STEP))
    {
        if (b->refs == 1 && partial + SH_BUF_MIN_FREE <= b->cap
            && need <= b->cap)
        {
            /* nobody else points into it: slide the partial frame down */
            memmove(b->data, b->data + *start, partial);
        } else {
            /* At least double: `need` may only reach the end of one small
             * element of a big frame, and growing by small steps would copy
             * the unfinished frame again at every step.  A big value gets
             * up to a step ahead of its bytes, then doubles. */
            cap = sh_max(SH_BUF_READ_SIZE,
                         sh_max(partial * 2, partial + SH_BUF_MIN_FREE));
            if (need > cap) {
                cap = sh_min(need, sh_max(cap, partial + SH_BUF_GROW_STEP));
            }
            nb = sh_buf_try_new(cap);
            if (nb == NULL) {
                return SH_ERROR;
            }
            memcpy(nb->data, b->data + *start, partial);
            sh_buf_unref(b);
            b = *bufp = nb;
        }
        *pos -= *start;
        *end = partial;
        *start = 0;
    }
    *p = b->data + *end;
    *n = b->cap - *end;
    return SH_OK;
}

/* --- cycles ------------------------------------------------------------- */

__thread sh_cycle_t *sh_cycle_cur;

static void
sh_cycle_push(sh_cycle_t *cy, void *p)
{
    if (cy->n == cy->cap) {
        cy->cap = cy->cap ? cy->cap * 2 : 16;
        cy->items = sh_realloc(cy->items, cy->cap * sizeof(void *));
    }
    cy->items[cy->n++] = p;
}

void
sh_cycle_push_frame(sh_cycle_t *cy, sh_frame_t *f)
{
    sh_cycle_push(cy, f);
}

void
sh_cycle_push_batch(sh_cycle_t *cy, sh_batch_t *b)
{
    sh_cycle_push(cy, (void *) ((uintptr_t) b | 1));
}

int
sh_cycle_add_frame(sh_frame_t *f)
{
    if (sh_cycle_cur == NULL) {
        return SH_DECLINED;
    }
    sh_cycle_push(sh_cycle_cur, f);
    return SH_OK;
}

int
sh_cycle_add_batch(sh_batch_t *b)
{
    if (sh_cycle_cur == NULL) {
        return SH_DECLINED;
    }
    sh_cycle_push_batch(sh_cycle_cur, b);
    return SH_OK;
}

void
sh_cycle_release(sh_cycle_t *cy)
{
    uint32_t i;

    for (i = 0; i < cy->n; i++) {
        uintptr_t p = (uintptr_t) cy->items[i];

        if (p & 1) {
            sh_batch_unref((sh_batch_t *) (p & ~(uintptr_t) 1));
        } else {
            sh_frame_unref((sh_frame_t *) p);
        }
    }
    cy->n = 0;
}

void
sh_cycle_free(sh_cycle_t *cy)
{
    sh_cycle_release(cy);
    sh_free(cy->items);
    cy->items = NULL;
    cy->cap = 0;
}

/* --- batches for Lua ---------------------------------------------------- */

int
sh_ffi_batch_new(uint32_t n, sh_batch_t **out)
{
    sh_batch_t *b = sh_batch_alloc(n);

    *out = b;
    return sh_cycle_add_batch(b);
}

int
sh_ffi_batch_set(sh_batch_t *b, uint32_t i, sh_frame_t *f)
{
    if (i >= b->n) {
        return SH_ERROR;
    }
    sh_batch_put(b, i, f);
    return SH_OK;
}

int
sh_ffi_batch_push(sh_batch_t *b, sh_frame_t *f)
{
    sh_batch_append(b, f);
    return SH_OK;
}

void
sh_ffi_batch_unref(sh_batch_t *b)
{
    sh_batch_unref(b);
}
