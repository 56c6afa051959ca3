-- Blocking name resolution for `shotover check` and the start of `run`
-- (never on an event loop: the sinks resolve without blocking there, see
-- c/sh_upstream.c).  The message reads as c/sh_worker.c's sh_resolve words
-- it: cannot resolve "host": <getaddrinfo's reason>.
local ffi = require "ffi"

local fmt = string.format

local _M = { _VERSION = "0.1.0" }

-- glibc's struct addrinfo under a name of our own (another module may
-- declare the real one); only hints and the result pointer are used
pcall(ffi.cdef, [[
struct sh_lua_addrinfo {
    int ai_flags;
    int ai_family;
    int ai_socktype;
    int ai_protocol;
    unsigned int ai_addrlen;
    void *ai_addr;
    char *ai_canonname;
    struct sh_lua_addrinfo *ai_next;
};
]])

-- getaddrinfo and friends under names of our own too (ffi's asm names), so
-- a cdef elsewhere of the real prototypes cannot clash
pcall(ffi.cdef, [[
int sh_lua_getaddrinfo(const char *node, const char *service,
                       const struct sh_lua_addrinfo *hints,
                       struct sh_lua_addrinfo **res) __asm__("getaddrinfo");
void sh_lua_freeaddrinfo(struct sh_lua_addrinfo *res)
    __asm__("freeaddrinfo");
const char *sh_lua_gai_strerror(int errcode) __asm__("gai_strerror");
]])

local C = ffi.C
local AI_PASSIVE = 1
local SOCK_STREAM = 1

-- Resolve host for a TCP connect (or a bind when passive).  Returns true,
-- or nil and `cannot resolve "host": reason`.
function _M.resolve(host, port, passive)
    local hints = ffi.new("struct sh_lua_addrinfo")
    hints.ai_socktype = SOCK_STREAM
    hints.ai_flags = passive and AI_PASSIVE or 0
    local res = ffi.new("struct sh_lua_addrinfo *[1]")
    local rc = C.sh_lua_getaddrinfo(host, tostring(port), hints, res)
    if rc ~= 0 then
        return nil, fmt("cannot resolve %q: %s", host,
                        ffi.string(C.sh_lua_gai_strerror(rc)))
    end
    C.sh_lua_freeaddrinfo(res[0])
    return true
end

return _M
