/*
 * sh_switch.h -- switches flipped through the admin endpoint (see
 * sh_switch.c); workers register and read them through sh_ffi.h.
 */
#ifndef SH_SWITCH_H
#define SH_SWITCH_H

#include <stddef.h>

/* "name choice (a|b)\n" per switch; the caller frees */
char *sh_switch_render(size_t *len);

/* SH_OK (msg: the new setting), SH_DECLINED (no such switch) or SH_ERROR
 * (not a choice); msg says which */
int sh_switch_set(const char *name, const char *choice, char *msg,
    size_t cap);

#endif /* SH_SWITCH_H */
