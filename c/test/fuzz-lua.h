/*
 * fuzz-lua.h -- coverage of Lua code for the fuzz targets that run
 * shotover's Lua (fuzz-cql.c, fuzz-chain.c).  Included once per target.
 *
 * libFuzzer only sees edges of instrumented C; the
 * Lua body decoders and transforms would be invisible to it, so an input
 * reaching a new branch of them would not be kept.  A line hook feeds
 * libFuzzer's extra counters instead: each (previous line, line) pair of
 * Lua code run bumps one counter, AFL-style.  Hooks keep LuaJIT in its
 * interpreter (no traces are recorded while one is set); the JIT is the
 * specs' business (t/unit/050-jit_spec.lua).  fz_lua_lines() counts the
 * distinct lines reached, for the summary a target prints at exit.
 */
#ifndef SH_FUZZ_LUA_H
#define SH_FUZZ_LUA_H

#include <lua.h>

#define FZ_LUA_COUNTERS (1 << 16)

__attribute__((section("__libfuzzer_extra_counters")))
static uint8_t fz_lua_counters[FZ_LUA_COUNTERS];
static uint8_t fz_lua_seen[FZ_LUA_COUNTERS / 8]; /* lines reached */
static uint32_t fz_lua_prev;                     /* previous location */

static void
fz_lua_hook(lua_State *L, lua_Debug *ar)
{
    uint32_t loc;
    uintptr_t src;

    if (lua_getinfo(L, "S", ar) == 0 || ar->source == NULL) {
        return;
    }
    /* the chunk name's string lives as long as its function: a stable
     * pointer per file */
    src = (uintptr_t) ar->source;
    loc = (uint32_t) ((src >> 4) * 2654435761u) ^ (uint32_t) ar->currentline
          * 40503u;
    loc &= FZ_LUA_COUNTERS - 1;
    fz_lua_seen[loc >> 3] |= (uint8_t) (1u << (loc & 7));
    fz_lua_counters[(loc ^ (fz_lua_prev >> 1)) & (FZ_LUA_COUNTERS - 1)]++;
    fz_lua_prev = loc;
}

/* Start counting lines of L (and of every coroutine made from it after:
 * LuaJIT hooks are per state, shared by its threads). */
static void
fz_lua_cover(lua_State *L)
{
    lua_sethook(L, fz_lua_hook, LUA_MASKLINE, 0);
}

static uint32_t
fz_lua_lines(void)
{
    uint32_t i, n = 0;

    for (i = 0; i < sizeof(fz_lua_seen); i++) {
        n += (uint32_t) __builtin_popcount(fz_lua_seen[i]);
    }
    return n;
}

#endif /* SH_FUZZ_LUA_H */
