-- Which arguments of a Redis request are keys, and which classes a request
-- is in: from Redis' own command metadata (key specs and ACL categories,
-- generated from redis-server's COMMAND into shotover.redis.command_meta by
-- t/tools/redis-command-classes).  Everything is precomputed per command
-- id at load; a request costs no Lua table or string (subcommands and
-- keywords are compared in place, byte by byte).
local commands = require "shotover.redis.commands"
local meta = require "shotover.redis.command_meta"
local command_ids = require "shotover.redis.command_ids"

local byte = string.byte
local upper = string.upper

local _M = { _VERSION = "0.1.0" }

local NCMD = command_ids.count

-- Does argument i (1-based) of request f equal `name` (upper case), in
-- any case?  ASCII only, as Redis' strcasecmp for its names.
local function arg_is(f, i, name)
    local s = f.argv[i - 1]
    local n = #name
    if s.len ~= n then
        return false
    end
    local p = f.data + s.off
    for k = 0, n - 1 do
        local c = p[k]
        if c >= 97 and c <= 122 then
            c = c - 32
        end
        if c ~= byte(name, k + 1) then
            return false
        end
    end
    return true
end
_M.arg_is = arg_is

-- Subcommand tables: { [len] = { name1, value1, name2, value2, ... } }, so
-- a request's second argument is compared only with names of its length.
local function sub_table(t, conv)
    local out = {}
    for name, v in pairs(t) do
        local l = out[#name]
        if not l then
            l = {}
            out[#name] = l
        end
        l[#l + 1] = name
        l[#l + 1] = conv(v, name)
    end
    return out
end

-- The value for request f's subcommand in subs (from sub_table), or nil.
local function sub_value(f, subs)
    if f.argc < 2 then
        return nil
    end
    local l = subs[f.argv[1].len]
    if l == nil then
        return nil
    end
    for k = 1, #l, 2 do
        if arg_is(f, 2, l[k]) then
            return l[k + 1]
        end
    end
    return nil
end

-- Classes ---------------------------------------------------------------------

local OTHER = { "other" }
local lists = {}                -- one shared list per distinct set of classes
local function intern(cl)
    local k = table.concat(cl, ",")
    local l = lists[k]
    if not l then
        l = cl
        lists[k] = l
    end
    return l
end

local classes_by_id = { [0] = OTHER }
local subclasses_by_id = {}
local function build_classes()           -- (run at the end: see there)
    for id = 1, NCMD do
        local name = command_ids.name(id)
        classes_by_id[id] = intern(meta.classes[name]
                                   or { commands[name] or "other" })
        local subs = meta.subcommands[name]
        if subs then
            subclasses_by_id[id] = sub_table(subs, intern)
        end
    end
end

-- The classes of request f, a list shared by every request in the same
-- classes (never modify it): its command's (commands.lua), "admin" as well
-- for @admin or @dangerous commands (FLUSHALL, KEYS, SORT...), and for a
-- container command (CLIENT, CONFIG...) its subcommand's.  The first is
-- the request's class.
function _M.classes(f)
    local id = f.cmd_id
    local subs = subclasses_by_id[id]
    if subs then
        local l = sub_value(f, subs)
        if l then
            return l
        end
    end
    return classes_by_id[id] or OTHER
end

-- Every distinct class list (for precomputing verdicts).
function _M.class_lists()
    local out = { OTHER }
    for _, l in pairs(lists) do
        out[#out + 1] = l
    end
    return out
end

-- Key positions ---------------------------------------------------------------

-- A spec: { bs (1 index, 2 keyword), index, keyword, startfrom,
--           fk (1 range, 2 keynum), a, b, c }
local function compile_specs(specs)
    if specs == false or specs == nil then
        return specs
    end
    local out = {}
    for i, s in ipairs(specs) do
        if s[1] == "i" then
            out[i] = { 1, s[2], nil, 0, s[4] == "r" and 1 or 2, s[5], s[6],
                       s[7] }
        else
            out[i] = { 2, 0, upper(s[2]), s[3], s[4] == "r" and 1 or 2, s[5],
                       s[6], s[7] }
        end
    end
    return out
end

local specs_by_id = {}
local subspecs_by_id = {}
local function same(v)
    return v
end
local function build_specs()             -- (run at the end: see there)
    for id = 1, NCMD do
        local name = command_ids.name(id)
        specs_by_id[id] = compile_specs(meta.keys[name])
        local subs = meta.subcommands[name]
        if subs then
            local t = {}
            for sub in pairs(subs) do
                t[sub] = compile_specs(meta.keys[name .. "|" .. sub])
                         or false
            end
            subspecs_by_id[id] = sub_table(t, same)
        end
    end
end

-- The non-negative integer argument i (Lua index), or nil.
local function arg_uint(f, i)
    local s = f.argv[i - 1]
    if s.len == 0 or s.len > 9 then
        return nil
    end
    local p = f.data + s.off
    local v = 0
    for k = 0, s.len - 1 do
        local c = p[k]
        if c < 48 or c > 57 then
            return nil
        end
        v = v * 10 + c - 48
    end
    return v
end

-- Append the keys of one spec (Redis' getKeysUsingKeySpecs, indices from 0
-- for the command name as Redis counts; out gets Lua argument numbers).
local function spec_keys(f, s, out, n)
    local argc = f.argc
    local first
    if s[1] == 1 then
        first = s[2]
    else
        local from = s[4]
        local start, stop, step
        if from > 0 then
            start, stop, step = from, argc - 1, 1
        else
            start, stop, step = argc + from, 0, -1
        end
        local i = start
        while i ~= stop do
            if i >= argc or i < 1 then
                break
            end
            if arg_is(f, i + 1, s[3]) then
                first = i + 1
                break
            end
            i = i + step
        end
        if not first then
            return n
        end
    end
    local last, step
    if s[5] == 1 then
        local lastkey, limit = s[6], s[8]
        step = s[7]
        if lastkey >= 0 then
            last = first + lastkey
        elseif limit == 0 then
            last = argc + lastkey
        else
            last = first + (math.floor((argc - first) / limit) + lastkey)
        end
    else
        local ki = first + s[6]
        if ki >= argc then
            return n
        end
        local numkeys = arg_uint(f, ki + 1)
        if not numkeys then
            return n
        end
        first = first + s[7]
        last = first + numkeys - 1
        step = s[8]
    end
    if step < 1 then
        step = 1
    end
    local i = first
    while i <= last do
        if i >= argc then
            break
        end
        n = n + 1
        out[n] = i + 1
        i = i + step
    end
    return n
end

-- SORT key [BY p] [LIMIT o c] [GET p ...] [ASC|DESC] [ALPHA] [STORE dest]:
-- Redis' sortGetKeys (its key specs say "unknown"): the key, and the last
-- STORE's destination.  BY and GET patterns are not keys.
local function sort_keys(f, out, n, ro)
    local argc = f.argc
    if argc < 2 then
        return n
    end
    n = n + 1
    out[n] = 2
    if ro then
        return n
    end
    local store
    local i = 3
    while i <= argc do
        if arg_is(f, i, "LIMIT") then
            i = i + 2
        elseif arg_is(f, i, "GET") or arg_is(f, i, "BY") then
            i = i + 1
        elseif arg_is(f, i, "STORE") and i + 1 <= argc then
            store = i + 1
        end
        i = i + 1
    end
    if store then
        n = n + 1
        out[n] = store
    end
    return n
end

-- MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw]
-- [AUTH2 user pw] [KEYS key ...]: Redis' migrateGetKeys (the KEYS spec is
-- "incomplete": a password could read KEYS): the key, or with KEYS the
-- keys after it.
local function migrate_keys(f, out, n)
    local argc = f.argc
    if argc < 4 then
        return n
    end
    local i = 7
    while i <= argc do
        if arg_is(f, i, "AUTH2") then
            i = i + 2
        elseif arg_is(f, i, "AUTH") then
            i = i + 1
        elseif arg_is(f, i, "KEYS") then
            if f.argv[3].len > 0 then       -- Redis refuses it: a key too
                n = n + 1
                out[n] = 4
            end
            for k = i + 1, argc do
                n = n + 1
                out[n] = k
            end
            return n
        end
        i = i + 1
    end
    n = n + 1
    out[n] = 4
    return n
end

local SORT, SORT_RO = command_ids.id("SORT"), command_ids.id("SORT_RO")
local MIGRATE = command_ids.id("MIGRATE")

-- Fill out[1..n] with the argument numbers (1 is the command name) of
-- request f's keys, in argument order, and return n: 0 for a command
-- without keys, an unknown command, or arguments too short to hold them.
-- No table is made: pass the same `out` every time.
function _M.positions(f, out)
    if f.argv == nil then
        return 0
    end
    local id = f.cmd_id
    local n = 0
    if id == MIGRATE then
        return migrate_keys(f, out, 0)
    elseif id == SORT or id == SORT_RO then
        return sort_keys(f, out, 0, id == SORT_RO)
    end
    local specs = specs_by_id[id]
    local subs = subspecs_by_id[id]
    if subs then
        specs = sub_value(f, subs)
    end
    if not specs then
        return 0
    end
    for k = 1, #specs do
        n = spec_keys(f, specs[k], out, n)
    end
    -- in argument order, each once (specs may overlap or run backwards)
    for i = 2, n do
        local v = out[i]
        local j = i - 1
        while j >= 1 and out[j] > v do
            out[j + 1] = out[j]
            j = j - 1
        end
        out[j + 1] = v
    end
    local m = 0
    for i = 1, n do
        if i == 1 or out[i] ~= out[m] then
            m = m + 1
            out[m] = out[i]
        end
    end
    return m
end

-- The keys of request f as a new list of strings (convenient; transforms
-- on the hot path use positions with a buffer of their own).
local buf = {}
function _M.keys(f)
    local n = _M.positions(f, buf)
    local t = {}
    for i = 1, n do
        t[i] = f:arg(buf[i])
    end
    return t
end

-- The per-command tables are built last: their loops run hundreds of
-- times at load, so LuaJIT may start a trace in them, and a trace that
-- went on into the rest of the module would meet its function definitions
-- (closure creation is not compiled) and abort.
build_classes()
build_specs()

return _M
