-- key_namespace: gives each client of a Redis source its own key space on
-- a shared Redis: `prefix` goes in front of every key of every request (by
-- Redis' key specs, shotover.redis.keys) and comes off every key a reply
-- carries (KEYS, SCAN, the BLPOP and LMPOP families, XREAD, and those
-- inside an EXEC); RANDOMKEY answers a key of the namespace.  Commands
-- that would reach or reveal keys outside the namespace are refused.  See
-- docs/transforms/key_namespace.md.
local ffi = require "ffi"
local bit = require "bit"
local message = require "shotover.message"
local keys = require "shotover.redis.keys"
local command_ids = require "shotover.redis.command_ids"
local base = require "shotover.ffi"

local C = base.C
local bor, band = bit.bor, bit.band
local sub = string.sub
local byte = string.byte
local find = string.find
local tonumber = tonumber
local fmt = string.format
local positions = keys.positions
local arg_is = keys.arg_is
local error_reply = message.error_reply
local command = message.command
local frame_from_resp = message.frame_from_resp
local replies                   -- shotover.redis.reply, on first use
local function reply()
    replies = replies or require "shotover.redis.reply"
    return replies
end

local FRAME_MODIFIED = C.SH_FRAME_MODIFIED
local FRAME_INLINE = C.SH_FRAME_INLINE

local _M = {
    name = "key_namespace",
    version = "0.1.0",
    capabilities = { lanes = true },
    protocols = { "redis" },
    schema = {
        prefix = { type = "string", required = true },
        allow_scripts = { type = "boolean", default = false },
    },
}

local mt = { __index = {} }

function _M.check_config(conf)
    local p = conf.prefix
    if p == "" then
        return nil, "prefix: give a non-empty prefix"
    end
    -- it goes into KEYS and SCAN MATCH patterns and SORT's BY/GET patterns
    if find(p, "[%*%?%[%]\\]") then
        return nil, "prefix: no glob characters (* ? [ ] \\)"
    end
    return true
end

local function id(name)
    return assert(command_ids.id(name), name)
end

-- What each command needs beyond its keys, by command id.
local REFUSE = {}               -- id -> why
for _, n in ipairs({ "FLUSHALL", "FLUSHDB", "SWAPDB", "DBSIZE" }) do
    REFUSE[id(n)] = n .. " reaches beyond the namespace"
end
local SCRIPTS = {}
for _, n in ipairs({ "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL",
                     "FCALL_RO", "SCRIPT", "FUNCTION" }) do
    SCRIPTS[id(n)] = true
end
local SUBSCRIBE, PSUBSCRIBE = id("SUBSCRIBE"), id("PSUBSCRIBE")
local KEYS, SCAN, SORT, CLIENT = id("KEYS"), id("SCAN"), id("SORT"),
                                 id("CLIENT")
local SORT_RO = id("SORT_RO")
local MULTI, EXEC, DISCARD = id("MULTI"), id("EXEC"), id("DISCARD")
local RESET = id("RESET")
local RANDOMKEY = id("RANDOMKEY")

-- Replies that carry keys: how to take the prefix off them (below).
local STRIP = {}                -- id -> kind
for _, n in ipairs({ "BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX", "LMPOP",
                     "BLMPOP", "ZMPOP", "BZMPOP" }) do
    STRIP[id(n)] = "first"      -- [key, ...]
end
STRIP[KEYS] = "all"             -- [key, key, ...]
STRIP[SCAN] = "scan"            -- [cursor, [key, ...]]
STRIP[id("XREAD")] = "streams"  -- [[key, entries], ...] or %{key: entries}
STRIP[id("XREADGROUP")] = "streams"

function _M.new(conf)
    return setmetatable({ prefix = conf.prefix, plen = #conf.prefix,
                          scripts = conf.allow_scripts }, mt)
end

-- RESP walking ---------------------------------------------------------------

-- The end (index after it) of the RESP value at s[pos], or nil.
local function skip(s, pos, depth)
    local t = byte(s, pos)
    local e = find(s, "\r\n", pos, true)
    if not t or not e or depth > 32 then
        return nil
    end
    if t == 36 or t == 33 or t == 61 then            -- $ ! =
        local n = tonumber(sub(s, pos + 1, e - 1))
        if not n then
            return nil
        end
        return n < 0 and e + 2 or e + 2 + n + 2
    elseif t == 42 or t == 126 or t == 62 or t == 37 or t == 124 then
        local n = tonumber(sub(s, pos + 1, e - 1))
        if not n then
            return nil
        end
        if t == 37 or t == 124 then
            n = n * 2
        end
        local p = e + 2
        for _ = 1, n do
            p = skip(s, p, depth + 1)
            if not p then
                return nil
            end
        end
        if t == 124 then                            -- an attribute: then
            return skip(s, p, depth + 1)            -- the value it is on
        end
        return p
    end
    return e + 2                                    -- a line
end

-- The elements of the aggregate at s[pos]: its header and a list of
-- element substrings, or nil (not an aggregate: null, error...).
local function elements(s, pos)
    local t = byte(s, pos)
    if t ~= 42 and t ~= 126 and t ~= 62 and t ~= 37 then
        return nil
    end
    local e = find(s, "\r\n", pos, true)
    local n = tonumber(sub(s, pos + 1, e - 1))
    if not n or n < 0 then
        return nil
    end
    if t == 37 then
        n = n * 2
    end
    local out, p = {}, e + 2
    for i = 1, n do
        local q = skip(s, p, 1)
        if not q then
            return nil
        end
        out[i] = sub(s, p, q - 1)
        p = q
    end
    return sub(s, pos, e + 1), out, t
end

-- A string value (bulk or simple) with the prefix taken off, when it has
-- it; else as it was.
local function strip(self, v)
    local t = byte(v, 1)
    local p, plen = self.prefix, self.plen
    if t == 36 then
        local e = find(v, "\r\n", 1, true)
        local n = tonumber(sub(v, 2, e - 1))
        if n and n >= plen and sub(v, e + 2, e + 1 + plen) == p then
            return "$" .. (n - plen) .. "\r\n" .. sub(v, e + 2 + plen)
        end
    elseif t == 43 and sub(v, 2, 1 + plen) == p then
        return "+" .. sub(v, 2 + plen)
    end
    return v
end

local rewrite                   -- kind -> function(self, s) -> s

local function each(self, s, fn)
    local head, els = elements(s, 1)
    if not head then
        return s
    end
    for i = 1, #els do
        els[i] = fn(self, els[i], i)
    end
    return head .. table.concat(els)
end

rewrite = {
    all = function(self, s)
        return each(self, s, strip)
    end,
    first = function(self, s)
        return each(self, s, function(_, v, i)
            return i == 1 and strip(self, v) or v
        end)
    end,
    scan = function(self, s)
        return each(self, s, function(_, v, i)
            return i == 2 and rewrite.all(self, v) or v
        end)
    end,
    streams = function(self, s)
        if byte(s, 1) == 37 then                    -- RESP3: key, entries
            return each(self, s, function(_, v, i)
                return i % 2 == 1 and strip(self, v) or v
            end)
        end
        return each(self, s, function(_, v)         -- [key, entries]
            return rewrite.first(self, v)
        end)
    end,
}

-- The reply frame r with its keys' prefix taken off by kind (a string, or
-- a list of kinds for an EXEC's elements).
local function unprefix(self, r, kind)
    local s = r:raw()
    local out
    if type(kind) == "table" then
        out = each(self, s, function(_, v, i)
            local k = kind[i]
            return k and rewrite[k](self, v) or v
        end)
    else
        out = rewrite[kind](self, s)
    end
    if out == s then
        return r
    end
    return frame_from_resp(out) or r
end

-- Requests -------------------------------------------------------------------

local kpos = {}                 -- key positions, reused
local err_out = ffi.new("const char *[1]")
local kbuf, kcap = nil, 0       -- prefix .. key, built in C memory
local args = {}                 -- a rebuilt request's arguments, reused
local nargs = 0

local function load_args(m)
    nargs = m:nargs()
    for i = 1, nargs do
        args[i] = m:arg(i)
    end
end

-- Put request args[1..nargs] in slot i in place of m (one encoding for
-- any number of changed arguments).
local function replace(batch, i, m)
    for k = nargs + 1, #args do
        args[k] = nil
    end
    local nm = assert(command(args))
    nm.flags = bor(nm.flags, band(m.flags, FRAME_INLINE), FRAME_MODIFIED)
    batch:set(i, nm)
    return nm
end

-- Prefix every key of m (in slot i); returns the request now in the slot.
local function prefix_keys(self, batch, i, m)
    local n = positions(m, kpos)
    if n == 0 then
        return m
    end
    local p = self.prefix
    if n == 1 then
        -- the one key: prefix and key copied into a reused buffer and set
        -- from there, no Lua string made
        local a = kpos[1]
        local ptr, len = m:arg_view(a)
        local plen = self.plen
        if plen + len > kcap then
            kcap = (plen + len) * 2
            kbuf = ffi.new("uint8_t[?]", kcap)
        end
        ffi.copy(kbuf, p, plen)
        ffi.copy(kbuf + plen, ptr, len)
        if C.sh_ffi_frame_set_arg(m, a - 1, kbuf, plen + len, err_out) ~= 0 then
            error("key_namespace: " .. ffi.string(err_out[0]))
        end
        return m
    end
    load_args(m)
    for k = 1, n do
        local a = kpos[k]
        args[a] = p .. args[a]
    end
    return replace(batch, i, m)
end

-- Why request m is refused, or nil; what its reply needs (a STRIP kind),
-- after rewriting the arguments that are patterns rather than keys.
local function vet(self, batch, i, m, conn)
    local cid = m.cmd_id
    local why = REFUSE[cid]
    if why then
        return why
    end
    if SCRIPTS[cid] and not self.scripts then
        return "scripts can reach any key (allow_scripts = true to let "
               .. "them through)"
    end
    local p = self.prefix
    if cid == KEYS then
        if m:nargs() == 2 then
            m:set_arg(2, p .. m:arg(2))
        end
    elseif cid == SCAN then
        load_args(m)
        local matched = false
        local k = 3
        while k <= nargs do
            if arg_is(m, k, "MATCH") and k < nargs then
                args[k + 1] = p .. args[k + 1]
                matched = true
            end
            k = k + 2
        end
        if not matched then
            args[nargs + 1], args[nargs + 2] = "MATCH", p .. "*"
            nargs = nargs + 2
        end
        m = replace(batch, i, m)
    elseif (cid == SORT or cid == SORT_RO) and m:nargs() > 2 then
        -- BY and GET patterns name keys too (GET # is the element)
        load_args(m)
        local changed = false
        local k = 3
        while k < nargs do
            if arg_is(m, k, "LIMIT") then
                k = k + 2
            elseif arg_is(m, k, "STORE") then
                k = k + 1               -- its key: prefixed as a key
            elseif (arg_is(m, k, "BY") or arg_is(m, k, "GET"))
                   and args[k + 1] ~= "#" then
                args[k + 1] = p .. args[k + 1]
                changed = true
                k = k + 1
            end
            k = k + 1
        end
        if changed then
            m = replace(batch, i, m)
        end
    elseif cid == SUBSCRIBE or cid == PSUBSCRIBE then
        -- keyspace notifications (__keyspace@0__:KEY, __keyevent@0__:...)
        -- name keys of every namespace: no channel of theirs, nor a
        -- pattern that could match one (one starting with _ or a wildcard)
        for k = 2, m:nargs() do
            local c = m:arg(k)
            if sub(c, 1, 5) == "__key"
               or (cid == PSUBSCRIBE and find(c, "^[_%*%?%[\\]")) then
                return "keyspace notification channels name keys of "
                       .. "every namespace"
            end
        end
    elseif cid == CLIENT and m:nargs() >= 3 and arg_is(m, 2, "TRACKING")
           and arg_is(m, 3, "ON") then
        return "tracking invalidations name keys of every namespace"
    end
    -- a transaction: the kinds of its queued commands, for EXEC's reply
    local multi = conn.key_namespace_multi
    if cid == RANDOMKEY then
        if multi then
            return "RANDOMKEY inside MULTI cannot be kept to the namespace"
        end
        return nil, m, "random"
    end
    if cid == MULTI then
        conn.key_namespace_multi = {}
    elseif cid == EXEC then
        conn.key_namespace_multi = nil
        return nil, m, multi
    elseif cid == DISCARD or cid == RESET then
        conn.key_namespace_multi = nil
    elseif multi then
        multi[#multi + 1] = STRIP[cid] or false
        return nil, m, nil
    end
    return nil, m, STRIP[cid]
end

-- RANDOMKEY within the namespace: Redis' RANDOMKEY while it gives a key of
-- the namespace within a few tries (the namespace holds most keys), else a
-- random key of the first SCAN page holding any (MATCH prefix*); null when
-- the namespace has none.  Not uniform, but never another tenant's key.
local RANDOM_TRIES = 8
local function random_key(self, chain)
    local p, plen = self.prefix, self.plen
    for _ = 1, RANDOM_TRIES do
        local b = message.new_batch(0)
        b:push(command({ "RANDOMKEY" }))
        local r = chain:next(b)[1]
        local t = r and r:type()
        if r == nil or t ~= "bulk" then
            return r                    -- an error, or null: no key at all
        end
        local k = r:decode()
        if type(k) ~= "string" then
            return r                    -- null: the database is empty
        end
        if sub(k, 1, plen) == p then
            return reply().bulk(sub(k, plen + 1))
        end
    end
    local cursor = "0"
    repeat
        local b = message.new_batch(0)
        b:push(command({ "SCAN", cursor, "MATCH", p .. "*", "COUNT", "1000" }))
        local r = chain:next(b)[1]
        if r == nil or r:is_error() then
            return r
        end
        local v = r:decode()
        local ks = type(v) == "table" and v[2]
        if type(ks) ~= "table" then
            return r
        end
        if #ks > 0 then
            return reply().bulk(sub(ks[math.random(#ks)], plen + 1))
        end
        cursor = v[1]
    until cursor == "0" or cursor == nil
    return reply().null()
end

-- Run batch in order when it holds RANDOMKEYs (randoms[i]): the requests
-- between them as sub-batches (refused ones answered from `refused`), each
-- RANDOMKEY after what came before it, so it sees their writes.
local function run_split(self, batch, chain, refused, randoms)
    local n = batch.n
    local resp = message.new_batch(n)
    local i = 1
    while i <= n do
        if randoms[i] then
            resp:set(i, random_key(self, chain))
            i = i + 1
        else
            local j = i
            while j <= n and not randoms[j] do
                j = j + 1
            end
            local part = message.new_batch(0)
            local answered
            for x = i, j - 1 do
                part:push(batch[x])
                if refused and refused[x] then
                    answered = answered or {}
                    answered[x - i + 1] = refused[x]
                end
            end
            local r = answered and chain:next_except(part, answered)
                      or chain:next(part)
            for x = i, j - 1 do
                resp:set(x, r[x - i + 1])
            end
            i = j
        end
    end
    return resp
end

function mt.__index.transform(self, batch, chain)
    local n = batch.n
    local refused, fix, randoms
    local conn = chain.conn
    for i = 1, n do
        local m = batch[i]
        if m:is_request() then
            local why, nm, kind = vet(self, batch, i, m, conn)
            if why then
                refused = refused or {}
                refused[i] = error_reply(m, fmt("shotover: key_namespace: %s",
                                                why))
            else
                prefix_keys(self, batch, i, nm)
                if kind == "random" then
                    randoms = randoms or {}
                    randoms[i] = true
                elseif kind then
                    fix = fix or {}
                    fix[i] = kind
                end
            end
        end
    end
    local resp
    if randoms then
        resp = run_split(self, batch, chain, refused, randoms)
    elseif refused then
        resp = chain:next_except(batch, refused)
    else
        resp = chain:next(batch)
    end
    if fix then
        for i, kind in pairs(fix) do
            local r = resp[i]
            if r ~= nil and not r:is_error() then
                resp:set(i, unprefix(self, r, kind))
            end
        end
    end
    return resp
end

_M.unprefix = unprefix          -- for the specs

return _M
