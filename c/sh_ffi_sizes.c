/*
 * sh_ffi_sizes.c -- C's sizeof for every struct in sh_ffi.h, so the FFI
 * spec can prove LuaJIT lays them out the same way.
 */
#include <string.h>

#include "sh_ffi.h"

#define SH_SIZE(t) { #t, sizeof(t) }

static const struct {
    const char *name;        /* type name as written in sh_ffi.h */
    size_t size;             /* sizeof */
} sh_ffi_sizes[] = {
    SH_SIZE(sh_slice_t),
    SH_SIZE(sh_frame_t),
    SH_SIZE(sh_batch_t),
    SH_SIZE(sh_redis_conf_t),
    SH_SIZE(sh_cql_conf_t),
    SH_SIZE(sh_source_conf_t),
    SH_SIZE(sh_log_fields_t),
    SH_SIZE(sh_tls_conf_t),
    SH_SIZE(sh_fetch_conf_t),
};

size_t
sh_ffi_sizeof(const char *type)
{
    size_t i;

    for (i = 0; i < sizeof(sh_ffi_sizes) / sizeof(sh_ffi_sizes[0]); i++) {
        if (strcmp(sh_ffi_sizes[i].name, type) == 0) {
            return sh_ffi_sizes[i].size;
        }
    }
    return 0;
}
