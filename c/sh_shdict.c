/*
 * sh_shdict.c -- named key/value dictionaries shared by every worker thread
 * (OpenResty's lua_shared_dict, in process memory across threads).
 *
 * A dict is found by name: sh_ffi_shdict_open() from any worker returns the
 * same one, so workers share counters, rate-limit state and small caches.
 * Dicts live as long as the process (a reload finds them again by name).
 *
 * Layout: the keys are spread by hash over a few shards (a power of two, up
 * to 16); each shard has its own mutex, a fixed bucket array (sized for its
 * share of the capacity, so it never grows) and an LRU list.  Every call
 * takes exactly one shard lock, for a few dozen instructions.  When a shard
 * holds its share of the capacity, a new key evicts that shard's least
 * recently used entry (counted in the stats): the dict never grows past its
 * capacity, at the price of forgetting the coldest keys.
 *
 * Values are bytes (at most SH_SHDICT_MAX_VALUE); incr keeps integers as
 * decimal text, like Redis, so get returns them readable.  GCRA state (one
 * theoretical arrival time per key) is an entry of its own kind: gcra on a
 * bytes entry, or incr on a GCRA entry, is an error.  Set takes an optional
 * time to live on the monotonic clock; expired entries read as absent and
 * are freed when found.
 *
 * Not supported: iteration over keys, resizing a dict, freeing a dict.
 */
#include <stdio.h>
#include <uv.h>

#include "sh_core.h"
#include "sh_metrics.h"

#define SH_SHDICT_MAX_SHARDS 16
#define SH_SHDICT_MAX_KEY 65535
#define SH_SHDICT_MAX_VALUE (1024 * 1024)
#define SH_SHDICT_MAX_CAPACITY (16u * 1024 * 1024)
#define SH_SHDICT_SMALL 16

enum {
    SH_SHDICT_BYTES = 1,
    SH_SHDICT_GCRA = 2
};

typedef struct sh_shdict_node_s sh_shdict_node_t;

struct sh_shdict_node_s {
    sh_shdict_node_t *hnext; /* next in the bucket's chain */
    sh_shdict_node_t *prev;  /* LRU neighbour, more recently used */
    sh_shdict_node_t *next;  /* LRU neighbour, less recently used */
    uint64_t hash;           /* hash of the key */
    uint64_t expires_ns;     /* monotonic deadline, 0 for never */
    uint8_t *val;            /* value bytes: `small` or a heap block */
    uint32_t vlen;           /* value length */
    uint32_t klen;           /* key length */
    uint8_t kind;            /* SH_SHDICT_BYTES or SH_SHDICT_GCRA */
    uint8_t small[SH_SHDICT_SMALL]; /* short values live here */
    uint8_t key[];           /* klen bytes */
};

/* One lock's worth of the dict, on its own cache lines. */
typedef struct {
    uv_mutex_t lock;         /* guards everything below */
    sh_shdict_node_t **buckets; /* mask + 1 chains */
    uint32_t mask;           /* buckets - 1 (a power of two minus one) */
    uint32_t count;          /* entries held */
    uint32_t cap;            /* entries allowed */
    sh_shdict_node_t *head;  /* most recently used */
    sh_shdict_node_t *tail;  /* least recently used: evicted first */
    uint64_t evictions;      /* entries dropped to make room */
    sh_metric_t *evicted;    /* the dict's evictions counter (all shards) */
} __attribute__((aligned(64))) sh_shdict_shard_t;

struct sh_shdict_s {
    char *name;              /* the name it is opened by */
    uint32_t capacity;       /* entries allowed in all, as asked */
    uint32_t nshards;        /* a power of two */
    uint64_t seed;           /* hash seed, per dict */
    sh_shdict_t *next;       /* registry list */
    sh_shdict_shard_t *shards; /* nshards of them */
};

static uv_mutex_t sh_shdict_lock;
static uv_once_t sh_shdict_once = UV_ONCE_INIT;
static sh_shdict_t *sh_shdict_head;

static void
sh_shdict_init(void)
{
    uv_mutex_init(&sh_shdict_lock);
}

/* FNV-1a with a per-dict seed, finished with murmur3's mixer. */
static uint64_t
sh_shdict_hash(const sh_shdict_t *d, const uint8_t *key, size_t klen)
{
    uint64_t h = 0xcbf29ce484222325ull ^ d->seed;
    size_t i;

    for (i = 0; i < klen; i++) {
        h ^= key[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static sh_shdict_shard_t *
sh_shdict_shard(sh_shdict_t *d, uint64_t hash)
{
    return &d->shards[(hash >> 56) & (d->nshards - 1)];
}

static void
sh_shdict_lru_unlink(sh_shdict_shard_t *s, sh_shdict_node_t *n)
{
    if (n->prev) {
        n->prev->next = n->next;
    } else {
        s->head = n->next;
    }
    if (n->next) {
        n->next->prev = n->prev;
    } else {
        s->tail = n->prev;
    }
    n->prev = n->next = NULL;
}

static void
sh_shdict_lru_push(sh_shdict_shard_t *s, sh_shdict_node_t *n)
{
    n->prev = NULL;
    n->next = s->head;
    if (s->head) {
        s->head->prev = n;
    } else {
        s->tail = n;
    }
    s->head = n;
}

static void
sh_shdict_touch(sh_shdict_shard_t *s, sh_shdict_node_t *n)
{
    if (s->head != n) {
        sh_shdict_lru_unlink(s, n);
        sh_shdict_lru_push(s, n);
    }
}

static void
sh_shdict_free_value(sh_shdict_node_t *n)
{
    if (n->val != n->small) {
        sh_free(n->val);
    }
    n->val = n->small;
    n->vlen = 0;
}

/* Take n out of its chain and the LRU list, and free it. */
static void
sh_shdict_remove(sh_shdict_shard_t *s, sh_shdict_node_t *n)
{
    sh_shdict_node_t **pp = &s->buckets[n->hash & s->mask];

    while (*pp != n) {
        pp = &(*pp)->hnext;
    }
    *pp = n->hnext;
    sh_shdict_lru_unlink(s, n);
    sh_shdict_free_value(n);
    sh_free(n);
    s->count--;
}

/*
 * The live entry for key in shard s (locked), or NULL.  An expired entry
 * found on the way is freed and reads as absent.
 */
static sh_shdict_node_t *
sh_shdict_find(sh_shdict_shard_t *s, uint64_t hash, const uint8_t *key,
    size_t klen)
{
    sh_shdict_node_t *n;

    for (n = s->buckets[hash & s->mask]; n != NULL; n = n->hnext) {
        if (n->hash == hash && n->klen == klen
            && memcmp(n->key, key, klen) == 0)
        {
            if (n->expires_ns != 0 && uv_hrtime() >= n->expires_ns) {
                sh_shdict_remove(s, n);
                return NULL;
            }
            return n;
        }
    }
    return NULL;
}

/*
 * Lock key's shard and find its live entry (or NULL): the start of every
 * operation.  *sp is the locked shard, *hp the key's hash.
 */
static sh_shdict_node_t *
sh_shdict_lock_find(sh_shdict_t *d, const uint8_t *key, size_t klen,
    sh_shdict_shard_t **sp, uint64_t *hp)
{
    uint64_t hash = sh_shdict_hash(d, key, klen);
    sh_shdict_shard_t *s = sh_shdict_shard(d, hash);

    uv_mutex_lock(&s->lock);
    *sp = s;
    *hp = hash;
    return sh_shdict_find(s, hash, key, klen);
}

/*
 * A new empty entry for key in shard s (locked), most recently used.  When
 * the shard is full its least recently used entry goes first.
 */
static sh_shdict_node_t *
sh_shdict_insert(sh_shdict_shard_t *s, uint64_t hash, const uint8_t *key,
    size_t klen, int kind)
{
    sh_shdict_node_t *n, **b;

    if (s->count >= s->cap && s->tail != NULL) {
        sh_shdict_remove(s, s->tail);
        s->evictions++;
        sh_ffi_metric_add(s->evicted, 1);
    }
    n = sh_calloc(1, sizeof(*n) + klen);
    n->hash = hash;
    n->klen = (uint32_t) klen;
    n->kind = (uint8_t) kind;
    n->val = n->small;
    memcpy(n->key, key, klen);
    b = &s->buckets[hash & s->mask];
    n->hnext = *b;
    *b = n;
    sh_shdict_lru_push(s, n);
    s->count++;
    return n;
}

/* Replace n's value with len bytes from val. */
static void
sh_shdict_store(sh_shdict_node_t *n, const uint8_t *val, size_t len)
{
    sh_shdict_free_value(n);
    if (len > SH_SHDICT_SMALL) {
        n->val = sh_alloc(len);
    }
    if (len > 0) {
        memcpy(n->val, val, len);
    }
    n->vlen = (uint32_t) len;
}

static int
sh_shdict_key_ok(const uint8_t *key, size_t klen)
{
    return key != NULL && klen > 0 && klen <= SH_SHDICT_MAX_KEY;
}

/*
 * Open the dict called name, making it with room for `capacity` entries if
 * no worker has yet.  SH_OK: *out is the dict, the same pointer for the same
 * name from any thread, for the life of the process (the capacity given
 * first wins).  SH_ERROR: *err says why (bad name or capacity).
 */
int
sh_ffi_shdict_open(const char *name, uint32_t capacity, sh_shdict_t **out,
    const char **err)
{
    sh_shdict_t *d;
    uint32_t i, nshards, per, nb;

    if (name == NULL || *name == '\0' || strlen(name) > 200) {
        *err = "shared dict name must be 1 to 200 bytes";
        return SH_ERROR;
    }
    if (capacity < 1 || capacity > SH_SHDICT_MAX_CAPACITY) {
        *err = "shared dict capacity must be 1 to 16777216 entries";
        return SH_ERROR;
    }
    uv_once(&sh_shdict_once, sh_shdict_init);
    uv_mutex_lock(&sh_shdict_lock);
    for (d = sh_shdict_head; d != NULL; d = d->next) {
        if (strcmp(d->name, name) == 0) {
            uv_mutex_unlock(&sh_shdict_lock);
            *out = d;
            return SH_OK;
        }
    }
    /* a shard per 256 entries, up to 16: small dicts take one lock */
    nshards = 1;
    while (nshards < SH_SHDICT_MAX_SHARDS && nshards * 2 * 256 <= capacity) {
        nshards *= 2;
    }
    per = (capacity + nshards - 1) / nshards;
    nb = 8;
    while (nb < per) {
        nb *= 2;
    }
    d = sh_calloc(1, sizeof(*d));
    d->name = sh_alloc(strlen(name) + 1);
    memcpy(d->name, name, strlen(name) + 1);
    d->capacity = capacity;
    d->nshards = nshards;
    d->seed = uv_hrtime() * 0x9e3779b97f4a7c15ull;
    d->shards = aligned_alloc(64, sizeof(sh_shdict_shard_t) * nshards);
    if (d->shards == NULL) {
        abort();
    }
    memset(d->shards, 0, sizeof(sh_shdict_shard_t) * nshards);
    {
        char labels[1200];
        sh_metric_t *m;

        sh_metric_label(labels, sizeof(labels), 0, "dict", name);
        m = sh_metric_get(SH_METRIC_COUNTER, "shotover_shdict_evictions_total",
                          "entries a shared dict dropped to make room (its "
                          "capacity too small for what it holds)", labels);
        for (i = 0; i < nshards; i++) {
            d->shards[i].evicted = m;
        }
    }
    for (i = 0; i < nshards; i++) {
        uv_mutex_init(&d->shards[i].lock);
        d->shards[i].buckets = sh_calloc(nb, sizeof(sh_shdict_node_t *));
        d->shards[i].mask = nb - 1;
        d->shards[i].cap = per;
    }
    d->next = sh_shdict_head;
    sh_shdict_head = d;
    uv_mutex_unlock(&sh_shdict_lock);
    *out = d;
    return SH_OK;
}

/*
 * Copy the value of key into buf (cap bytes).  SH_OK: *vlen bytes copied.
 * SH_DECLINED: no such key (or it expired).  SH_AGAIN: buf is too small,
 * *vlen is the length needed, nothing copied.  SH_ERROR: a bad key.
 */
int
sh_ffi_shdict_get(sh_shdict_t *d, const uint8_t *key, size_t klen,
    uint8_t *buf, size_t cap, size_t *vlen)
{
    uint64_t hash;
    sh_shdict_shard_t *s;
    sh_shdict_node_t *n;
    int rc;

    if (!sh_shdict_key_ok(key, klen)) {
        return SH_ERROR;
    }
    n = sh_shdict_lock_find(d, key, klen, &s, &hash);
    if (n == NULL) {
        rc = SH_DECLINED;
    } else {
        sh_shdict_touch(s, n);
        *vlen = n->vlen;
        if (n->vlen > cap) {
            rc = SH_AGAIN;
        } else {
            if (n->vlen > 0) {
                memcpy(buf, n->val, n->vlen);
            }
            rc = SH_OK;
        }
    }
    uv_mutex_unlock(&s->lock);
    return rc;
}

/*
 * Set key to the vlen bytes at val, living ttl_ns nanoseconds (0: until
 * evicted or deleted), whatever it held before.  SH_OK, or SH_ERROR with
 * *err for a bad key or a value over 1 MiB.
 */
int
sh_ffi_shdict_set(sh_shdict_t *d, const uint8_t *key, size_t klen,
    const uint8_t *val, size_t vlen, uint64_t ttl_ns, const char **err)
{
    uint64_t hash;
    sh_shdict_shard_t *s;
    sh_shdict_node_t *n;

    if (!sh_shdict_key_ok(key, klen)) {
        *err = "shared dict keys are 1 to 65535 bytes";
        return SH_ERROR;
    }
    if (vlen > SH_SHDICT_MAX_VALUE || (vlen > 0 && val == NULL)) {
        *err = "shared dict values are at most 1048576 bytes";
        return SH_ERROR;
    }
    n = sh_shdict_lock_find(d, key, klen, &s, &hash);
    if (n == NULL) {
        n = sh_shdict_insert(s, hash, key, klen, SH_SHDICT_BYTES);
    } else {
        sh_shdict_touch(s, n);
        n->kind = SH_SHDICT_BYTES;
    }
    sh_shdict_store(n, val, vlen);
    n->expires_ns = ttl_ns ? uv_hrtime() + ttl_ns : 0;
    uv_mutex_unlock(&s->lock);
    return SH_OK;
}

/* Parse a decimal int64 of exactly len bytes; 1 on success. */
static int
sh_shdict_parse_int(const uint8_t *p, size_t len, int64_t *out)
{
    uint64_t v = 0, limit;
    size_t i = 0;
    int neg = 0;

    if (len == 0 || len > 20) {
        return 0;
    }
    if (p[0] == '-') {
        neg = 1;
        i = 1;
        if (len == 1) {
            return 0;
        }
    }
    limit = neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;
    for (; i < len; i++) {
        if (p[i] < '0' || p[i] > '9' || v > (limit - (p[i] - '0')) / 10) {
            return 0;
        }
        v = v * 10 + (uint64_t) (p[i] - '0');
    }
    *out = neg ? (int64_t) (0 - v) : (int64_t) v;
    return 1;
}

/*
 * Add delta to the integer at key; an absent key starts at init (ngx's
 * shdict:incr with init).  SH_OK: *out is the new value (also stored, as
 * decimal text; a time to live is kept).  SH_ERROR with *err: a bad key,
 * the value is not a decimal integer, or the sum overflows int64.
 */
int
sh_ffi_shdict_incr(sh_shdict_t *d, const uint8_t *key, size_t klen,
    int64_t delta, int64_t init, int64_t *out, const char **err)
{
    uint64_t hash;
    sh_shdict_shard_t *s;
    sh_shdict_node_t *n;
    int64_t v, sum;
    char text[24];
    int len, rc = SH_OK;

    if (!sh_shdict_key_ok(key, klen)) {
        *err = "shared dict keys are 1 to 65535 bytes";
        return SH_ERROR;
    }
    n = sh_shdict_lock_find(d, key, klen, &s, &hash);
    if (n == NULL) {
        v = init;
    } else if (n->kind != SH_SHDICT_BYTES
               || !sh_shdict_parse_int(n->val, n->vlen, &v))
    {
        *err = "shared dict value is not an integer";
        rc = SH_ERROR;
        goto done;
    }
    if (__builtin_add_overflow(v, delta, &sum)) {
        *err = "shared dict increment would overflow";
        rc = SH_ERROR;
        goto done;
    }
    if (n == NULL) {
        n = sh_shdict_insert(s, hash, key, klen, SH_SHDICT_BYTES);
    } else {
        sh_shdict_touch(s, n);
    }
    len = snprintf(text, sizeof(text), "%lld", (long long) sum);
    sh_shdict_store(n, (const uint8_t *) text, (size_t) len);
    *out = sum;
done:
    uv_mutex_unlock(&s->lock);
    return rc;
}

/* Remove key.  SH_OK: it was there; SH_DECLINED: it was not. */
int
sh_ffi_shdict_delete(sh_shdict_t *d, const uint8_t *key, size_t klen)
{
    uint64_t hash;
    sh_shdict_shard_t *s;
    sh_shdict_node_t *n;

    if (!sh_shdict_key_ok(key, klen)) {
        return SH_DECLINED;
    }
    n = sh_shdict_lock_find(d, key, klen, &s, &hash);
    if (n != NULL) {
        sh_shdict_remove(s, n);
    }
    uv_mutex_unlock(&s->lock);
    return n != NULL ? SH_OK : SH_DECLINED;
}

/* Remove every entry (the eviction count stays). */
void
sh_ffi_shdict_flush(sh_shdict_t *d)
{
    uint32_t i;
    sh_shdict_shard_t *s;

    for (i = 0; i < d->nshards; i++) {
        s = &d->shards[i];
        uv_mutex_lock(&s->lock);
        while (s->head != NULL) {
            sh_shdict_remove(s, s->head);
        }
        uv_mutex_unlock(&s->lock);
    }
}

/* Entries held, entries allowed, and entries evicted so far. */
void
sh_ffi_shdict_stats(sh_shdict_t *d, uint64_t *count, uint64_t *capacity,
    uint64_t *evictions)
{
    uint32_t i;
    sh_shdict_shard_t *s;

    *count = 0;
    *evictions = 0;
    for (i = 0; i < d->nshards; i++) {
        s = &d->shards[i];
        uv_mutex_lock(&s->lock);
        *count += s->count;
        *evictions += s->evictions;
        uv_mutex_unlock(&s->lock);
    }
    *capacity = d->capacity;
}

/*
 * GCRA (the generic cell rate algorithm, the leaky bucket as a meter),
 * atomic per key.  The key holds one time, its theoretical arrival time
 * TAT: when the bucket would be empty again at the allowed rate.  A request
 * of `cost` units at time now is allowed when, after it, the bucket holds at
 * most tolerance_ns of work:
 *
 *     tat' = max(TAT, now) + cost * interval_ns
 *     allowed  iff  tat' - now <= tolerance_ns
 *
 * interval_ns is the time one unit takes at the allowed rate (1e9 / rate);
 * tolerance_ns = burst * interval_ns lets `burst` units through at once
 * from an idle key.  An allowed request stores tat'; a refused one changes
 * nothing, so refusals cost the client nothing extra.
 *
 * now_ns is the caller's clock (any monotonic nanoseconds, the same for
 * every caller of a key); 0 reads uv_hrtime() under the lock.
 *
 * SH_OK: allowed, *retry_after_ns = 0.  SH_DECLINED: over the limit,
 * *retry_after_ns is how long until the same request would pass, or
 * UINT64_MAX when cost alone is over the tolerance (it never will).
 * SH_ERROR: a bad key or interval, or the key holds a value set by
 * set/incr.  Cost 0 is always allowed and changes nothing.
 */
int
sh_ffi_shdict_gcra(sh_shdict_t *d, const uint8_t *key, size_t klen,
    uint64_t now_ns, uint64_t interval_ns, uint64_t tolerance_ns,
    uint64_t cost, uint64_t *retry_after_ns)
{
    uint64_t hash, tat, inc, next;
    sh_shdict_shard_t *s;
    sh_shdict_node_t *n;
    int rc;

    *retry_after_ns = 0;
    if (!sh_shdict_key_ok(key, klen) || interval_ns == 0) {
        return SH_ERROR;
    }
    if (cost == 0) {
        return SH_OK;
    }
    if (__builtin_mul_overflow(cost, interval_ns, &inc)
        || inc > tolerance_ns)
    {
        *retry_after_ns = UINT64_MAX;
        return SH_DECLINED;
    }
    n = sh_shdict_lock_find(d, key, klen, &s, &hash);
    if (now_ns == 0) {
        now_ns = uv_hrtime();        /* read under the lock */
    }
    if (n != NULL && n->kind != SH_SHDICT_GCRA) {
        uv_mutex_unlock(&s->lock);
        return SH_ERROR;
    }
    tat = now_ns;
    if (n != NULL) {
        memcpy(&tat, n->val, sizeof(tat));
        if (tat < now_ns) {
            tat = now_ns;
        }
        sh_shdict_touch(s, n);
    }
    if (__builtin_add_overflow(tat, inc, &next)) {
        next = UINT64_MAX;
    }
    if (next - now_ns > tolerance_ns) {
        /* it passes once now' reaches next - tolerance */
        *retry_after_ns = next - tolerance_ns - now_ns;
        rc = SH_DECLINED;
    } else {
        if (n == NULL) {
            n = sh_shdict_insert(s, hash, key, klen, SH_SHDICT_GCRA);
            n->vlen = sizeof(next);
        }
        memcpy(n->val, &next, sizeof(next));
        rc = SH_OK;
    }
    uv_mutex_unlock(&s->lock);
    return rc;
}
