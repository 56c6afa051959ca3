/*
 * sh_log.c -- one line per message on stderr, text or JSON, safe to call
 * from any worker thread (each line is written with a single write(2)).
 * A message's own line breaks are escaped in both formats.
 */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "sh_core.h"

static volatile int sh_log_level_cur = SH_LOG_INFO;
static int sh_log_json;

static const char *const sh_log_names[] = {
    "none", "error", "warn", "info", "debug"
};

/*
 * The allocators of sizes the proxy chose.  Sizes a peer announces go
 * through sh_buf_try_new and fail one connection; running out here means
 * the process itself cannot go on: it says so (no allocation on the way)
 * and aborts.
 */
static void
sh_oom(size_t n)
{
    char line[96];
    int len = snprintf(line, sizeof(line),
                       "shotover: out of memory allocating %zu bytes\n", n);

    if (write(STDERR_FILENO, line, (size_t) len) < 0) {
        /* nothing left to tell it with */
    }
    abort();
}

void *
sh_alloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (p == NULL) {
        sh_oom(n);
    }
    return p;
}

void *
sh_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (p == NULL) {
        sh_oom(n * size);
    }
    return p;
}

void *
sh_realloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (p == NULL) {
        sh_oom(n);
    }
    return p;
}

const char *
sh_status_name(int status)
{
    switch (status) {
    case SH_OK:
        return "OK";
    case SH_ERROR:
        return "ERROR";
    case SH_AGAIN:
        return "AGAIN";
    case SH_DECLINED:
        return "DECLINED";
    default:
        return "UNKNOWN";
    }
}

int
sh_ffi_log_level(void)
{
    return sh_log_level_cur;
}

void
sh_ffi_log_set_level(int level)
{
    if (level < SH_LOG_ERROR) {
        level = SH_LOG_ERROR;
    }
    if (level > SH_LOG_DEBUG) {
        level = SH_LOG_DEBUG;
    }
    sh_log_level_cur = level;
}

void
sh_log_set_json(int on)
{
    sh_log_json = on;
}

int
sh_ffi_log_json(void)
{
    return sh_log_json;
}

/* Append s to out as the inside of a JSON string. */
static size_t
sh_log_json_escape(char *out, size_t cap, const char *s, size_t len)
{
    size_t n = 0;
    size_t i;

    for (i = 0; i < len && n + 7 < cap; i++) {
        unsigned char ch = (unsigned char) s[i];

        if (ch == '"' || ch == '\\') {
            out[n++] = '\\';
            out[n++] = (char) ch;
        } else if (ch < 0x20) {
            n += (size_t) snprintf(out + n, cap - n, "\\u%04x", ch);
        } else {
            out[n++] = (char) ch;
        }
    }
    return n;
}

/*
 * Append s to out for a text line: a line break or tab in a message (a Lua
 * traceback, a config error list) becomes \n, \r or \t, so one message
 * stays one line and log collectors never split it.  Bytes past cap are
 * dropped.
 */
static size_t
sh_log_text_escape(char *out, size_t cap, const char *s, size_t len)
{
    size_t n = 0;
    size_t i;

    for (i = 0; i < len && n + 2 <= cap; i++) {
        char ch = s[i];

        if (ch == '\n' || ch == '\r' || ch == '\t') {
            out[n++] = '\\';
            out[n++] = ch == '\n' ? 'n' : ch == '\r' ? 'r' : 't';
        } else {
            out[n++] = ch;
        }
    }
    return n;
}

/* Append `,"key":"value"` to out (value escaped, cut to fit). */
static size_t
sh_log_json_str(char *out, size_t cap, const char *key, const char *v)
{
    size_t n;

    if (v == NULL || cap < 64) {
        return 0;
    }
    n = (size_t) snprintf(out, cap, ",\"%s\":\"", key);
    n += sh_log_json_escape(out + n, cap - n - 2, v, strlen(v));
    out[n++] = '"';
    return n;
}

/* The fields of f as JSON members, each starting with a comma. */
static size_t
sh_log_json_fields(char *out, size_t cap, const sh_log_fields_t *f)
{
    size_t n = 0;

    if (f == NULL) {
        return 0;
    }
    n += sh_log_json_str(out + n, cap - n, "source", f->source);
    if (f->conn != 0 && cap - n > 32) {
        n += (size_t) snprintf(out + n, cap - n, ",\"conn\":%llu",
                               (unsigned long long) f->conn);
    }
    n += sh_log_json_str(out + n, cap - n, "client", f->client);
    n += sh_log_json_str(out + n, cap - n, "chain", f->chain);
    n += sh_log_json_str(out + n, cap - n, "element", f->element);
    if (f->element_index > 0 && cap - n > 32) {
        n += (size_t) snprintf(out + n, cap - n, ",\"element_index\":%d",
                               (int) f->element_index);
    }
    return n;
}

static void
sh_log_write(int level, const char *msg, size_t len,
    const sh_log_fields_t *f)
{
    char line[8192];
    char fields[1024];
    struct timespec ts;
    struct tm tm;
    size_t n, fn;

    if (level > sh_log_level_cur) {
        return;
    }
    if (level < SH_LOG_ERROR || level > SH_LOG_DEBUG) {
        level = SH_LOG_INFO;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    if (sh_log_json) {
        n = (size_t) snprintf(line, sizeof(line),
            "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\","
            "\"level\":\"%s\",\"msg\":\"",
            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
            tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
            sh_log_names[level]);
        fn = sh_log_json_fields(fields, sizeof(fields), f);
        n += sh_log_json_escape(line + n, sizeof(line) - n - fn - 4, msg,
                                len);
        line[n++] = '"';
        memcpy(line + n, fields, fn);
        n += fn;
        line[n++] = '}';
    } else {
        n = (size_t) snprintf(line, sizeof(line),
            "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] ",
            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
            tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
            sh_log_names[level]);
        n += sh_log_text_escape(line + n, sizeof(line) - n - 1, msg, len);
    }
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, n) < 0) {
        /* nowhere left to report it */
    }
}

void
sh_ffi_log(int level, const char *msg, size_t len)
{
    sh_log_write(level, msg, len, NULL);
}

void
sh_ffi_log_fields(int level, const char *msg, size_t len,
    const sh_log_fields_t *f)
{
    sh_log_write(level, msg, len, f);
}

static void
sh_log_va(int level, const sh_log_fields_t *f, const char *fmt, va_list ap)
{
    char msg[4096];
    int n;

    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (n < 0) {
        return;
    }
    sh_log_write(level, msg, sh_min((size_t) n, sizeof(msg) - 1), f);
}

void
sh_log(int level, const char *fmt, ...)
{
    va_list ap;

    if (level > sh_log_level_cur) {
        return;
    }
    va_start(ap, fmt);
    sh_log_va(level, NULL, fmt, ap);
    va_end(ap);
}

void
sh_log_with(int level, const sh_log_fields_t *f, const char *fmt, ...)
{
    va_list ap;

    if (level > sh_log_level_cur) {
        return;
    }
    va_start(ap, fmt);
    sh_log_va(level, f, fmt, ap);
    va_end(ap);
}

int
sh_log_limit(sh_log_limit_t *l, uint64_t interval_ms, uint64_t count,
    uint64_t *held)
{
    struct timespec ts;
    uint64_t now, next;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
    next = __atomic_load_n(&l->next_ms, __ATOMIC_RELAXED);
    if (now >= next
        && __atomic_compare_exchange_n(&l->next_ms, &next, now + interval_ms,
                                       0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
    {
        *held = __atomic_exchange_n(&l->held, 0, __ATOMIC_RELAXED);
        return 1;
    }
    __atomic_add_fetch(&l->held, count, __ATOMIC_RELAXED);
    return 0;
}
