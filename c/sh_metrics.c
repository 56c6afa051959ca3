/*
 * sh_metrics.c -- counters, gauges and histograms shared by every worker.
 *
 * Series are registered at start (or first use) under a mutex and never
 * freed; updates are relaxed atomic adds, so the hot path takes no lock.
 * Histograms count observations in nanoseconds into fixed buckets fine
 * enough for tens of microseconds, exposed in seconds.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "sh_metrics.h"

#define SH_METRIC_BUCKETS 19

/* bucket upper bounds in nanoseconds (the last is +Inf) */
static const uint64_t sh_metric_bounds[SH_METRIC_BUCKETS - 1] = {
    10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000,
    10000000, 25000000, 50000000, 100000000, 250000000, 500000000,
    1000000000, 2500000000u, 5000000000ull,
};

struct sh_metric_s {
    int kind;                /* SH_METRIC_* */
    char *name;              /* metric family name */
    char *help;              /* its help text */
    char *labels;            /* label text, "" for none */
    int64_t value;           /* counter or gauge */
    uint64_t buckets[SH_METRIC_BUCKETS]; /* histogram: per bucket */
    uint64_t sum_ns;         /* histogram: sum of observations */
    uint32_t id;             /* sh_metric_by_id's key, 0 when none */
    sh_metric_t *next;       /* registry order */
};

static uv_mutex_t sh_metrics_lock;
static uv_once_t sh_metrics_once = UV_ONCE_INIT;
static sh_metric_t *sh_metrics_head, **sh_metrics_tail = &sh_metrics_head;

/* Series by id (id - 1), for the classic Lua C functions, which take plain
 * numbers.  Entries are written under the lock before any thread can learn
 * the id, and never change. */
#define SH_METRIC_MAX_IDS 65536
static sh_metric_t *sh_metrics_by_id[SH_METRIC_MAX_IDS];
static uint32_t sh_metrics_nids;

static void
sh_metrics_init(void)
{
    uv_mutex_init(&sh_metrics_lock);
}

static char *
sh_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = sh_alloc(n);

    memcpy(d, s, n);
    return d;
}

sh_metric_t *
sh_metric_get(int kind, const char *name, const char *help,
    const char *labels)
{
    sh_metric_t *m;

    uv_once(&sh_metrics_once, sh_metrics_init);
    uv_mutex_lock(&sh_metrics_lock);
    for (m = sh_metrics_head; m != NULL; m = m->next) {
        if (strcmp(m->name, name) == 0 && strcmp(m->labels, labels) == 0) {
            break;
        }
    }
    if (m == NULL) {
        m = sh_calloc(1, sizeof(*m));
        m->kind = kind;
        m->name = sh_strdup(name);
        m->help = sh_strdup(help);
        m->labels = sh_strdup(labels);
        if (sh_metrics_nids < SH_METRIC_MAX_IDS) {
            sh_metrics_by_id[sh_metrics_nids++] = m;
            m->id = sh_metrics_nids;
        }
        *sh_metrics_tail = m;
        sh_metrics_tail = &m->next;
    }
    uv_mutex_unlock(&sh_metrics_lock);
    return m;
}

sh_metric_t *
sh_metric_by_id(uint32_t id)
{
    return id >= 1 && id <= SH_METRIC_MAX_IDS ? sh_metrics_by_id[id - 1]
                                              : NULL;
}

uint32_t
sh_ffi_metric_id(const sh_metric_t *m)
{
    return m->id;
}

/* query_counter's pass over a batch (see sh_ffi.h) */
int
sh_ffi_batch_count_ids(const sh_batch_t *b, uint32_t *counts,
    sh_metric_t **series, uint32_t ncounts, uint16_t *missing,
    uint32_t *nmissing)
{
    uint32_t i, nt = 0, nm = 0, rest = 0;

    /* count per id; missing[] first lists every id seen */
    for (i = 0; i < b->n; i++) {
        const sh_frame_t *f = b->frames[i];
        uint16_t id;

        if (f == NULL || f->proto != SH_PROTO_REDIS || f->cmd_id >= ncounts) {
            rest++;
            continue;
        }
        id = f->cmd_id;
        if (counts[id]++ == 0) {
            missing[nt++] = id;
        }
    }
    /* one add per id; those without a series stay for the caller */
    for (i = 0; i < nt; i++) {
        uint16_t id = missing[i];

        if (series[id] != NULL) {
            sh_ffi_metric_add(series[id], counts[id]);
            counts[id] = 0;
        } else {
            missing[nm++] = id;
        }
    }
    *nmissing = nm;
    return (int) rest;
}

int64_t
sh_ffi_metric_value(const sh_metric_t *m)
{
    return __atomic_load_n(&m->value, __ATOMIC_RELAXED);
}

sh_metric_t *
sh_metric_backend_errors(const char *sink, const char *remote)
{
    char labels[1200];
    size_t n;

    n = sh_metric_label(labels, sizeof(labels), 0, "sink", sink);
    sh_metric_label(labels + n, sizeof(labels) - n, 1, "backend", remote);
    return sh_metric_get(SH_METRIC_COUNTER, "shotover_backend_errors_total",
                         "backend connection failures: refused, timed out, "
                         "lost", labels);
}

size_t
sh_metric_label(char *out, size_t cap, int comma, const char *key,
    const char *value)
{
    size_t n = 0;
    const char *v;

#define SH_PUT(ch) do { if (n + 1 < cap) { out[n++] = (ch); } } while (0)
    if (comma) {
        SH_PUT(',');
    }
    for (v = key; *v; v++) {
        SH_PUT(*v);
    }
    SH_PUT('=');
    SH_PUT('"');
    for (v = value; *v; v++) {
        if (*v == '\\' || *v == '"') {
            SH_PUT('\\');
            SH_PUT(*v);
        } else if (*v == '\n') {
            SH_PUT('\\');
            SH_PUT('n');
        } else {
            SH_PUT(*v);
        }
    }
    SH_PUT('"');
#undef SH_PUT
    if (cap > 0) {
        out[n] = '\0';
    }
    return n;
}

static int
sh_metric_name_ok(const char *s)
{
    if (*s == '\0') {
        return 0;
    }
    for (; *s; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')
              || (*s >= '0' && *s <= '9') || *s == '_' || *s == ':'))
        {
            return 0;
        }
    }
    return 1;
}

int
sh_ffi_metric_register(int kind, const char *name, const char *help,
    const char *labels, sh_metric_t **out, const char **err)
{
    sh_metric_t *m;

    if (kind < SH_METRIC_COUNTER || kind > SH_METRIC_HISTOGRAM
        || !sh_metric_name_ok(name))
    {
        *err = "bad metric kind or name";
        return SH_ERROR;
    }
    m = sh_metric_get(kind, name, help, labels ? labels : "");
    if (m->kind != kind) {
        *err = "a series of that name has another kind";
        return SH_ERROR;
    }
    *out = m;
    return SH_OK;
}

void
sh_ffi_metric_add(sh_metric_t *m, int64_t delta)
{
    __atomic_fetch_add(&m->value, delta, __ATOMIC_RELAXED);
}

void
sh_ffi_metric_observe(sh_metric_t *m, uint64_t ns, uint64_t count)
{
    int b = 0;

    while (b < SH_METRIC_BUCKETS - 1 && ns > sh_metric_bounds[b]) {
        b++;
    }
    __atomic_fetch_add(&m->buckets[b], count, __ATOMIC_RELAXED);
    __atomic_fetch_add(&m->sum_ns, ns * count, __ATOMIC_RELAXED);
    /* _count is the sum of the buckets, added up when rendered */
}

double
sh_ffi_now_ns(void)
{
    return (double) uv_hrtime();
}

void
sh_metric_since(sh_metric_t *m, double t0, uint32_t count)
{
    double d = sh_ffi_now_ns() - t0;

    sh_ffi_metric_observe(m, d > 0 ? (uint64_t) d : 0, count);
}

/* --- exposition ------------------------------------------------------------ */

typedef struct sh_text_s {
    char *p;                 /* text */
    size_t len;              /* used */
    size_t cap;              /* allocated */
} sh_text_t;

static void
sh_text_printf(sh_text_t *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
sh_text_printf(sh_text_t *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t) n < t->cap - t->len) {
            t->len += (size_t) n;
            return;
        }
        t->cap = t->cap * 2 + (size_t) (n > 0 ? n : 0);
        t->p = sh_realloc(t->p, t->cap);
    }
}

/* "{labels}" or "{labels,extra}" */
static void
sh_text_labels(sh_text_t *t, const char *labels, const char *extra)
{
    if (*labels == '\0' && extra == NULL) {
        return;
    }
    sh_text_printf(t, "{%s%s%s}", labels, (*labels && extra) ? "," : "",
                   extra ? extra : "");
}

/* When the process started, in seconds since the epoch: the kernel's boot
 * time plus the process's start in clock ticks after it (as Prometheus'
 * own clients read it); 0 when /proc does not say. */
static double
sh_process_start_time(void)
{
    char buf[1024], *p;
    unsigned long long start = 0, btime = 0;
    FILE *f;
    size_t n;
    int field;

    f = fopen("/proc/self/stat", "r");
    if (f == NULL) {
        return 0;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')');               /* the command name may hold ' ' */
    for (field = 2; p != NULL && field < 22; field++) {
        p = strchr(p + 1, ' ');
    }
    if (p == NULL || sscanf(p + 1, "%llu", &start) != 1) {
        return 0;
    }
    f = fopen("/proc/stat", "r");
    if (f == NULL) {
        return 0;
    }
    while (fgets(buf, sizeof(buf), f) != NULL) {
        if (sscanf(buf, "btime %llu", &btime) == 1) {
            break;
        }
    }
    fclose(f);
    return (double) btime + (double) start / (double) sysconf(_SC_CLK_TCK);
}

/* The process collector's series, under Prometheus' standard names. */
static void
sh_metrics_process(sh_text_t *t)
{
    struct rusage ru;
    struct rlimit rl;
    unsigned long long pages = 0, resident = 0;
    long open_fds = 0;
    DIR *d;
    FILE *f;

    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        sh_text_printf(t, "# HELP process_cpu_seconds_total Total user and "
            "system CPU time spent in seconds.\n# TYPE "
            "process_cpu_seconds_total counter\nprocess_cpu_seconds_total "
            "%.6f\n", (double) ru.ru_utime.tv_sec + ru.ru_stime.tv_sec
            + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    }
    f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        if (fscanf(f, "%llu %llu", &pages, &resident) == 2) {
            long page = sysconf(_SC_PAGESIZE);

            sh_text_printf(t, "# HELP process_resident_memory_bytes "
                "Resident memory size in bytes.\n# TYPE "
                "process_resident_memory_bytes gauge\n"
                "process_resident_memory_bytes %llu\n"
                "# HELP process_virtual_memory_bytes Virtual memory size in "
                "bytes.\n# TYPE process_virtual_memory_bytes gauge\n"
                "process_virtual_memory_bytes %llu\n",
                resident * (unsigned long long) page,
                pages * (unsigned long long) page);
        }
        fclose(f);
    }
    d = opendir("/proc/self/fd");
    if (d != NULL) {
        struct dirent *e;

        while ((e = readdir(d)) != NULL) {
            open_fds += e->d_name[0] != '.';
        }
        closedir(d);
        sh_text_printf(t, "# HELP process_open_fds Number of open file "
            "descriptors.\n# TYPE process_open_fds gauge\n"
            "process_open_fds %ld\n", open_fds - 1);   /* not opendir's */
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        sh_text_printf(t, "# HELP process_max_fds Maximum number of open "
            "file descriptors.\n# TYPE process_max_fds gauge\n"
            "process_max_fds %llu\n", (unsigned long long) rl.rlim_cur);
    }
    sh_text_printf(t, "# HELP process_start_time_seconds Start time of the "
        "process since unix epoch in seconds.\n# TYPE "
        "process_start_time_seconds gauge\nprocess_start_time_seconds "
        "%.2f\n", sh_process_start_time());
}

char *
sh_metrics_render(size_t *len)
{
    static const char *const types[] = { "", "counter", "gauge", "histogram" };
    sh_text_t t = { sh_alloc(4096), 0, 4096 };
    sh_metric_t *fam, *m, *prev;
    char le[48];
    uint64_t cum;
    int b;

    uv_once(&sh_metrics_once, sh_metrics_init);
    uv_mutex_lock(&sh_metrics_lock);
    /* families in first-registered order, each with all its series */
    for (fam = sh_metrics_head; fam != NULL; fam = fam->next) {
        for (prev = sh_metrics_head; prev != fam; prev = prev->next) {
            if (strcmp(prev->name, fam->name) == 0) {
                break;
            }
        }
        if (prev != fam) {
            continue;                    /* family already written */
        }
        sh_text_printf(&t, "# HELP %s %s\n# TYPE %s %s\n", fam->name,
                       fam->help, fam->name, types[fam->kind]);
        for (m = fam; m != NULL; m = m->next) {
            if (strcmp(m->name, fam->name) != 0) {
                continue;
            }
            if (m->kind != SH_METRIC_HISTOGRAM) {
                sh_text_printf(&t, "%s", m->name);
                sh_text_labels(&t, m->labels, NULL);
                sh_text_printf(&t, " %lld\n", (long long)
                    __atomic_load_n(&m->value, __ATOMIC_RELAXED));
                continue;
            }
            cum = 0;
            for (b = 0; b < SH_METRIC_BUCKETS; b++) {
                cum += __atomic_load_n(&m->buckets[b], __ATOMIC_RELAXED);
                if (b < SH_METRIC_BUCKETS - 1) {
                    snprintf(le, sizeof(le), "le=\"%g\"",
                             (double) sh_metric_bounds[b] / 1e9);
                } else {
                    snprintf(le, sizeof(le), "le=\"+Inf\"");
                }
                sh_text_printf(&t, "%s_bucket", m->name);
                sh_text_labels(&t, m->labels, le);
                sh_text_printf(&t, " %llu\n", (unsigned long long) cum);
            }
            sh_text_printf(&t, "%s_sum", m->name);
            sh_text_labels(&t, m->labels, NULL);
            sh_text_printf(&t, " %.9f\n", (double)
                __atomic_load_n(&m->sum_ns, __ATOMIC_RELAXED) / 1e9);
            sh_text_printf(&t, "%s_count", m->name);
            sh_text_labels(&t, m->labels, NULL);
            sh_text_printf(&t, " %llu\n", (unsigned long long) cum);
        }
    }
    uv_mutex_unlock(&sh_metrics_lock);
    sh_metrics_process(&t);
    *len = t.len;
    return t.p;
}
