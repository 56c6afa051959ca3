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

void
sh_buf_unref(sh_buf_t *b)
{
    if (b != NULL && --b->refs == 0) {
        sh_free(b);
    }
}

sh_frame_t *
sh_frame_alloc(int proto, uint32_t nargs)
{
    sh_frame_t *f;

    /* the argument slices live right after the frame: one allocation */
    f = sh_alloc(sizeof(sh_frame_t) + (size_t) nargs * sizeof(sh_slice_t));
    memset(f, 0, sizeof(*f));
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
    sh_batch_t *b = sh_alloc(sizeof(sh_batch_t));
    uint32_t cap = n < 4 ? 4 : n;

    memset(b, 0, sizeof(*b));
    b->frames = sh_calloc(cap, sizeof(sh_frame_t *));
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
    sh_free(b->frames);
    sh_free(b);
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
