/*
 * sh_switch.c -- switches: small named settings that the admin endpoint can
 * flip while shotover runs (a tee's result_source), read by every worker's
 * Lua through a pointer without a lock.  Each has a fixed list of choices;
 * its value is the index of the current one.
 */
#include <stdio.h>

#include <uv.h>

#include "sh_core.h"
#include "sh_switch.h"

#define SH_SWITCH_CHOICES 8

typedef struct sh_switch_s sh_switch_t;

struct sh_switch_s {
    int32_t value;           /* index of the current choice (atomic) */
    char *name;              /* e.g. "mirror.result_source" */
    char *choices[SH_SWITCH_CHOICES]; /* their names */
    int nchoices;
    sh_switch_t *next;
};

static uv_once_t sh_switch_once = UV_ONCE_INIT;
static uv_mutex_t sh_switch_lock;
static sh_switch_t *sh_switch_head, **sh_switch_tail = &sh_switch_head;

static void
sh_switch_init(void)
{
    uv_mutex_init(&sh_switch_lock);
}

static char *
sh_switch_strndup(const char *s, size_t n)
{
    char *d = sh_alloc(n + 1);

    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* split "a|b|c" into sw->choices; 0 or -1 when malformed */
static int
sh_switch_parse(sh_switch_t *sw, const char *choices)
{
    const char *p = choices, *bar;
    size_t n;

    for (;;) {
        bar = strchr(p, '|');
        n = bar ? (size_t) (bar - p) : strlen(p);

        if (n == 0 || sw->nchoices == SH_SWITCH_CHOICES) {
            return -1;
        }
        sw->choices[sw->nchoices++] = sh_switch_strndup(p, n);
        if (bar == NULL) {
            return 0;
        }
        p = bar + 1;
    }
}

static sh_switch_t *
sh_switch_find(const char *name)
{
    sh_switch_t *sw;

    for (sw = sh_switch_head; sw != NULL; sw = sw->next) {
        if (strcmp(sw->name, name) == 0) {
            return sw;
        }
    }
    return NULL;
}

int
sh_ffi_switch_register(const char *name, const char *choices, int initial,
    int32_t **out, const char **err)
{
    sh_switch_t *sw, tmp;
    int i, rc = SH_OK;

    memset(&tmp, 0, sizeof(tmp));
    if (sh_switch_parse(&tmp, choices) != 0 || initial < 0
        || initial >= tmp.nchoices)
    {
        *err = "choices must be 1 to 8 names separated by '|', and the "
               "initial one of them";
        rc = SH_ERROR;
        goto done;
    }
    uv_once(&sh_switch_once, sh_switch_init);
    uv_mutex_lock(&sh_switch_lock);
    sw = sh_switch_find(name);
    if (sw == NULL) {
        sw = sh_calloc(1, sizeof(*sw));
        *sw = tmp;
        tmp.nchoices = 0;                  /* the switch owns the names */
        sw->name = sh_switch_strndup(name, strlen(name));
        sw->value = initial;
        *sh_switch_tail = sw;
        sh_switch_tail = &sw->next;
    } else if (sw->nchoices != tmp.nchoices) {
        *err = "a switch of that name exists with other choices";
        rc = SH_ERROR;
    } else {
        for (i = 0; i < tmp.nchoices; i++) {
            if (strcmp(sw->choices[i], tmp.choices[i]) != 0) {
                *err = "a switch of that name exists with other choices";
                rc = SH_ERROR;
            }
        }
    }
    if (rc == SH_OK) {
        *out = &sw->value;
    }
    uv_mutex_unlock(&sh_switch_lock);
done:
    for (i = 0; i < tmp.nchoices; i++) {
        sh_free(tmp.choices[i]);
    }
    return rc;
}

char *
sh_switch_render(size_t *len)
{
    size_t cap = 256, n = 0, need;
    char *out = sh_alloc(cap);
    sh_switch_t *sw;
    int i;

    out[0] = '\0';
    uv_once(&sh_switch_once, sh_switch_init);
    uv_mutex_lock(&sh_switch_lock);
    for (sw = sh_switch_head; sw != NULL; sw = sw->next) {
        need = strlen(sw->name) + 16;
        for (i = 0; i < sw->nchoices; i++) {
            need += strlen(sw->choices[i]) + 1;
        }
        if (n + need >= cap) {
            cap = (n + need) * 2;
            out = sh_realloc(out, cap);
        }
        n += (size_t) snprintf(out + n, cap - n, "%s %s (", sw->name,
            sw->choices[__atomic_load_n(&sw->value, __ATOMIC_RELAXED)]);
        for (i = 0; i < sw->nchoices; i++) {
            n += (size_t) snprintf(out + n, cap - n, "%s%s", i ? "|" : "",
                                   sw->choices[i]);
        }
        n += (size_t) snprintf(out + n, cap - n, ")\n");
    }
    uv_mutex_unlock(&sh_switch_lock);
    *len = n;
    return out;
}

int
sh_switch_set(const char *name, const char *choice, char *msg, size_t cap)
{
    sh_switch_t *sw;
    int i, rc = SH_DECLINED;

    uv_once(&sh_switch_once, sh_switch_init);
    uv_mutex_lock(&sh_switch_lock);
    sw = sh_switch_find(name);
    if (sw == NULL) {
        snprintf(msg, cap, "no switch named \"%s\" (GET /switches lists "
                 "them)\n", name);
    } else {
        rc = SH_ERROR;
        snprintf(msg, cap, "switch %s: \"%s\" is not one of its choices:",
                 name, choice);
        for (i = 0; i < sw->nchoices; i++) {
            if (strcmp(sw->choices[i], choice) == 0) {
                __atomic_store_n(&sw->value, i, __ATOMIC_RELAXED);
                snprintf(msg, cap, "%s %s\n", name, choice);
                rc = SH_OK;
                break;
            }
        }
        for (i = 0; rc == SH_ERROR && i < sw->nchoices; i++) {
            size_t n = strlen(msg);

            snprintf(msg + n, cap - n, " %s", sw->choices[i]);
        }
        if (rc == SH_ERROR) {
            size_t n = strlen(msg);

            snprintf(msg + n, cap - n, "\n");
        }
    }
    uv_mutex_unlock(&sh_switch_lock);
    return rc;
}
