/*
 * sh_buf.h -- reference-counted byte buffers and frames.
 *
 * A read lands in a buffer; every frame parsed from it holds a reference, so
 * the bytes stay valid while any request or reply still points at them, and
 * are forwarded without a copy.  When only the reader holds a buffer and it
 * has been fully parsed, the reader reuses it from the start: in steady state
 * a connection allocates nothing per request.
 */
#ifndef SH_BUF_H
#define SH_BUF_H

#include "sh_core.h"

struct sh_buf_s {
    uint32_t refs;           /* references: the reader's and one per frame */
    uint32_t cap;            /* bytes allocated in data */
    uint8_t data[];          /* the bytes */
};

#define SH_BUF_READ_SIZE (16 * 1024)     /* a reader's default buffer */
#define SH_BUF_MIN_FREE 1024             /* replace the buffer below this */
#define SH_BUF_GROW_STEP (256 * 1024)    /* most a buffer grows ahead of data */

sh_buf_t *sh_buf_new(uint32_t cap);
/* as sh_buf_new, NULL when the memory cannot be had (a size from the wire) */
sh_buf_t *sh_buf_try_new(uint32_t cap);
int sh_buf_reader_space(sh_buf_t **bufp, uint32_t *start, uint32_t *pos,
    uint32_t *end, uint32_t need, uint8_t **p, size_t *n);
static inline void
sh_buf_ref(sh_buf_t *b)
{
    b->refs++;
}
void sh_buf_unref(sh_buf_t *b);

/*
 * sh_frame_alloc: a frame with room for nargs argument slices, one
 * reference held by the caller, all other fields zero.
 */
sh_frame_t *sh_frame_alloc(int proto, uint32_t nargs);
static inline sh_frame_t *
sh_frame_ref(sh_frame_t *f)
{
    if (f->refs != UINT32_MAX) {         /* static frames are not counted */
        f->refs++;
    }
    return f;
}
void sh_frame_unref(sh_frame_t *f);

/* A frame that owns a copy of data (a reply built by the proxy). */
sh_frame_t *sh_frame_copy(int proto, const uint8_t *data, size_t len);

/* The shared NOREPLY frame: a response slot that writes nothing. */
sh_frame_t *sh_frame_noreply(void);

sh_batch_t *sh_batch_alloc(uint32_t n);
static inline sh_batch_t *
sh_batch_ref(sh_batch_t *b)
{
    b->refs++;
    return b;
}
void sh_batch_unref(sh_batch_t *b);
/* put f in slot i (taking a reference), releasing what was there */
void sh_batch_put(sh_batch_t *b, uint32_t i, sh_frame_t *f);
void sh_batch_append(sh_batch_t *b, sh_frame_t *f);
void sh_buf_pools_free(void);

/*
 * A cycle: what Lua creates while one batch runs (frames, batches), released
 * together once the batch's replies are queued (nginx's request pool, in
 * effect).  sh_cycle_cur is the cycle of the batch whose Lua code runs now,
 * set by whoever resumes it; NULL outside a batch (specs, transform set-up),
 * where the FFI layer hands the caller ownership instead (ffi.gc).
 */
typedef struct sh_cycle_s {
    void **items;            /* frames (low bit 0) and batches (low bit 1) */
    uint32_t n;              /* entries in items */
    uint32_t cap;            /* allocated entries */
} sh_cycle_t;

extern __thread sh_cycle_t *sh_cycle_cur;

void sh_cycle_push_frame(sh_cycle_t *cy, sh_frame_t *f);
void sh_cycle_push_batch(sh_cycle_t *cy, sh_batch_t *b);
/* f or b into the running batch's cycle: SH_OK, or SH_DECLINED outside a
 * batch (the caller then owns the reference it has) */
int sh_cycle_add_frame(sh_frame_t *f);
int sh_cycle_add_batch(sh_batch_t *b);
/* drop every reference the cycle holds (the array stays for reuse) */
void sh_cycle_release(sh_cycle_t *cy);
/* release, and free the array */
void sh_cycle_free(sh_cycle_t *cy);

#endif /* SH_BUF_H */
