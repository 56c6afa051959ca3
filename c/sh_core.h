/*
 * sh_core.h -- what every C file of the core shares: the FFI types, the
 * status names, logging and small helpers.
 */
#ifndef SH_CORE_H
#define SH_CORE_H

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sh_ffi.h"

#define SH_VERSION "0.1.0"

#define sh_unused(x) ((void) (x))
#define sh_min(a, b) ((a) < (b) ? (a) : (b))
#define sh_max(a, b) ((a) > (b) ? (a) : (b))

/* Allocation that cannot fail silently: out of memory aborts the process. */
void *sh_alloc(size_t n);
void *sh_calloc(size_t n, size_t size);
void *sh_realloc(void *p, size_t n);
#define sh_free free

void sh_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* sh_log with structured fields for JSON logs (f may be NULL) */
void sh_log_with(int level, const sh_log_fields_t *f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sh_log_set_json(int on);

/*
 * A message that may come in floods (every refused connection) is logged at
 * most once per interval by all threads together; the ones held back are
 * counted and said with the next that goes out.  Zero-initialised.
 */
typedef struct sh_log_limit_s {
    uint64_t next_ms;        /* monotonic ms before which messages wait */
    uint64_t held;           /* events held back since the last message */
} sh_log_limit_t;

/* 1: log now, with *held events held back since the last message; 0: the
 * count events were added to the held ones, log nothing. */
int sh_log_limit(sh_log_limit_t *l, uint64_t interval_ms, uint64_t count,
    uint64_t *held);

#define sh_log_error(...) sh_log(SH_LOG_ERROR, __VA_ARGS__)
#define sh_log_warn(...) sh_log(SH_LOG_WARN, __VA_ARGS__)
#define sh_log_info(...) sh_log(SH_LOG_INFO, __VA_ARGS__)
#define sh_log_debug(...)                                                    \
    do {                                                                     \
        if (sh_ffi_log_level() >= SH_LOG_DEBUG) {                            \
            sh_log(SH_LOG_DEBUG, __VA_ARGS__);                               \
        }                                                                    \
    } while (0)

#endif /* SH_CORE_H */
