/*
 * sh_metrics.h -- the metrics registry shared by all workers, and its
 * Prometheus text exposition.
 */
#ifndef SH_METRICS_H
#define SH_METRICS_H

#include "sh_core.h"

/* A series, registered (or found) by C code. */
sh_metric_t *sh_metric_get(int kind, const char *name, const char *help,
    const char *labels);

/* Observe (now - t0) for count requests; t0 on sh_ffi_now_ns's clock
 * (shotover.core.since calls it). */
void sh_metric_since(sh_metric_t *m, double t0, uint32_t count);

/* The series with id (sh_ffi_metric_id), NULL when none. */
sh_metric_t *sh_metric_by_id(uint32_t id);

/* key="value" into out (cap bytes, NUL-terminated, cut short when it does
 * not fit), preceded by a comma when comma is set, with the value escaped
 * as the Prometheus text format wants (\\, \", \n).  Returns the length
 * written. */
size_t sh_metric_label(char *out, size_t cap, int comma, const char *key,
    const char *value);

/* The failures counter of one backend of one sink. */
sh_metric_t *sh_metric_backend_errors(const char *sink, const char *remote);

/* The whole registry in Prometheus text format 0.0.4, malloc'd. */
char *sh_metrics_render(size_t *len);

#endif /* SH_METRICS_H */
