-- redis_cache: a read-through cache of CQL SELECTs in Redis, per table, with
-- every write path to a cached partition invalidating it before the writer
-- gets its reply.  See docs/transforms/redis_cache.md.
--
-- In Redis, per table ks.t (the {ks.t} hash tag puts a table on one
-- cluster node, so each script below touches one slot):
--   PREFIX{ks.t}:T            the table's version (INCR on TRUNCATE, DROP
--                             and writes whose partition is not known)
--   PREFIX{ks.t}:P:<key>      one hash per partition (<key>: the typed
--                             bytes of its partition key): field "v" the
--                             partition's version, and per cached
--                             statement shape S, field S holding the
--                             RESULT body and field "@"..S holding
--                             "<table version>:<partition version>:
--                             <expiry, ms since 1970>"
-- A lookup is two plain commands, pipelined (GET of the table's version,
-- HMGET of the entry, its stamp and the partition's version); a miss keeps
-- both versions, and the reply is stored only if neither moved meanwhile
-- (one script, atomic in Redis).  A write bumps its partition's version
-- (HINCRBY: every entry stamped with an older one is then a miss, and is
-- overwritten by the next store or expires with the hash) once Cassandra
-- answered it, before its client gets the reply.  So a SELECT that read
-- the old row while a write went by cannot put it back: that is the race
-- closed.
local bit = require "bit"
local ffi = require "ffi"
local base = require "shotover.ffi"
local message = require "shotover.message"
local metrics = require "shotover.metrics"
local log = require "shotover.log"
local schema = require "shotover.cql.schema"
local session = require "shotover.cql.session"
local bound = require "shotover.cql.bound"
local types = require "shotover.cql.types"
local decode = require "shotover.redis.decode"

local C = base.C
local band, bor, bnot, rshift = bit.band, bit.bor, bit.bnot, bit.rshift
local char, fmt, concat = string.char, string.format, table.concat
local floor = math.floor
local new_batch = message.new_batch
local command = message.command
local pairs, ipairs, pcall, type, tostring = pairs, ipairs, pcall, type,
                                              tostring

local OP_QUERY, OP_EXECUTE = C.SH_CQL_QUERY, C.SH_CQL_EXECUTE
local OP_BATCH, OP_RESULT = C.SH_CQL_BATCH, C.SH_CQL_RESULT
local FLAG_COMPRESSED = C.SH_CQL_FLAG_COMPRESSED
local FLAG_TRACING = C.SH_CQL_FLAG_TRACING
-- [query parameters] flags
local SKIP_METADATA, PAGE_SIZE, PAGING_STATE = 0x02, 0x04, 0x08
local KEYSPACE_NOW = 0x180              -- v5: its own keyspace, "now"
local SERIAL, LOCAL_SERIAL = 0x0008, 0x0009
local ROWS = 2

local _M = {
    name = "redis_cache",
    version = "0.1.0",
    -- what a batch needs lives in the batch's own locals
    capabilities = { lanes = true, subchains = true },
    protocols = { "cassandra" },
    schema = {
        tables = { type = "table", required = true },
        ttl_seconds = { type = "integer", min = 1, required = true },
        max_entry_bytes = { type = "integer", min = 1, default = 1048576 },
        timeout_ms = { type = "integer", min = 1, default = 250 },
        key_prefix = { type = "string", default = "shotover:cache:" },
        cache_chain = { type = "table", required = true },
    },
}

local mt = { __index = {} }

function _M.subchains(conf)
    return { { chain = conf.cache_chain, path = ".cache_chain",
               protocol = "redis" } }
end

-- tables: a list of "ks.t", or "ks.t" -> { ttl_seconds =, max_entry_bytes
-- = } (either may be left out: the transform's own apply)
local TABLE_KEYS = { ttl_seconds = true, max_entry_bytes = true }

local function table_settings(conf)
    local out, errs = {}, {}
    for k, v in pairs(conf.tables) do
        local name, t = k, {}
        if type(k) == "number" then
            name = v
        elseif type(v) == "table" then
            t = v
        else
            errs[#errs + 1] = fmt("tables: give %q a table of settings "
                                  .. "(ttl_seconds, max_entry_bytes)", k)
        end
        if type(name) ~= "string" or not name:match("^[^.]+%.[^.]+$") then
            errs[#errs + 1] = fmt("tables: %s is not \"keyspace.table\"",
                                  tostring(name))
        else
            for key, val in pairs(t) do
                if not TABLE_KEYS[key] then
                    errs[#errs + 1] = fmt("tables: %q has an unknown key "
                                          .. "%s (ttl_seconds, "
                                          .. "max_entry_bytes)",
                                          name, tostring(key))
                elseif type(val) ~= "number" or val < 1 or val ~= floor(val)
                then
                    errs[#errs + 1] = fmt("tables: %q: %s must be a "
                                          .. "positive integer", name, key)
                end
            end
            out[name] = {
                ttl_ms = (t.ttl_seconds or conf.ttl_seconds) * 1000,
                max_entry = t.max_entry_bytes or conf.max_entry_bytes,
            }
        end
    end
    if next(out) == nil and #errs == 0 then
        errs[#errs + 1] = "tables: name at least one \"keyspace.table\""
    end
    return out, errs
end

function _M.check_config(conf)
    local _, errs = table_settings(conf)
    if #errs > 0 then
        return nil, errs
    end
    return true
end

-- The scripts, by SHA1 (EVALSHA; EVAL when Redis does not have them yet).
local STORE = [[
if (redis.call('HGET', KEYS[1], 'v') or '0') ~= ARGV[2] then return 0 end
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[5],
           '@' .. ARGV[1], ARGV[3] .. ':' .. ARGV[2] .. ':' .. ARGV[4])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[6]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
return 1
]]

-- How long a partition's version outlives its last write or entry: longer
-- than any SELECT can take between its lookup and its store (Cassandra's
-- own request timeouts are seconds).
local GRACE_MS = 120000

function _M.new(conf, env)
    local tables = table_settings(conf)
    -- the cache's own time bound: no Redis request waits longer than
    -- timeout_ms, whatever its sink would allow
    local elements = {}
    for i, el in ipairs(conf.cache_chain) do
        if type(el) == "table" and el[1] == "redis" then
            local copy = {}
            for k, v in pairs(el) do
                copy[k] = v
            end
            copy.request_timeout_ms = math.min(copy.request_timeout_ms
                                               or conf.timeout_ms,
                                               conf.timeout_ms)
            el = copy
        end
        elements[i] = el
    end
    local name = conf.name or "redis_cache"
    local self = setmetatable({
        name = name, tables = tables, prefix = conf.key_prefix,
        cache = env.build_chain(elements, "cache_chain", "redis"),
        sha = {},                       -- learnt with SCRIPT LOAD
        -- per prepared SELECT (the session's record of it): its plan
        plans = setmetatable({}, { __mode = "k" }),
        pending = {}, npending = 0,    -- invalidations Redis did not take
        m = {},
    }, mt)
    for _, k in ipairs({ "hits", "misses", "stores", "invalidations",
                         "errors", "hit_bytes", "stored_bytes",
                         "bypassed" }) do
        self.m[k] = metrics.counter("shotover_cache_" .. k .. "_total",
            "redis_cache: " .. k:gsub("_", " "), { name = name })
    end
    return self
end

local add = metrics.add

-- Redis keys of a table and of a partition.
local function table_key(self, ns)
    return self.prefix .. "{" .. ns .. "}:T"
end

local function partition_key(self, ns, key_bytes)
    return self.prefix .. "{" .. ns .. "}:P:" .. key_bytes
end

-- The field of one SELECT shape in its partition's hash: everything that
-- makes two SELECTs of a partition give different bytes, with every value
-- as its typed bytes (so a literal and the same value bound are one
-- field): protocol version, selectors, restrictions, order, limits, page
-- size.  Length-prefixed parts: no two shapes share a field.
local function part(t, s)
    s = tostring(s)
    t[#t + 1] = #s .. ":" .. s
end

-- The part of a shape that depends on the statement alone, made once per
-- parsed statement (the parser keeps one AST per distinct text).
local statics = setmetatable({}, { __mode = "k" })

local function static_shape(ast)
    local t = { "s" }
    for _, c in ipairs(ast.columns or {}) do
        part(t, type(c) == "table" and (c.text or c.name or "?") or c)
    end
    for _, x in ipairs(ast.selectors or {}) do
        part(t, type(x) == "table" and (x.text or "?") or x)
    end
    part(t, ast.distinct and "d" or "")
    part(t, ast.json and "j" or "")
    for _, w in ipairs(ast.where or {}) do
        part(t, w.column or "?")
        part(t, w.op)
    end
    for _, o in ipairs(ast.order_by or {}) do
        part(t, type(o) == "table" and ((o.column or "?") .. " "
                                        .. (o.order or "")) or o)
    end
    for _, g in ipairs(ast.group_by or {}) do
        part(t, g)
    end
    local st = concat(t, "|")
    statics[ast] = st
    return st
end

local function shape(m, ast, qi, flags)
    local t = { statics[ast] or static_shape(ast), m:version() }
    for _, r in ipairs(qi.restrictions) do
        if type(r.bytes) == "table" then
            part(t, #r.bytes)
            for _, b in ipairs(r.bytes) do
                part(t, b)
            end
        else
            part(t, r.bytes)
        end
    end
    part(t, qi.limit or "")
    part(t, qi.per_partition_limit or "")
    part(t, band(flags, PAGE_SIZE) ~= 0 and m:page_size() or "")
    return concat(t, "|")
end

-- Is request m (qi its query_info) a SELECT this cache may answer?  Its
-- shape and its query flags, or nil.
local function cacheable(self, m, qi, chain)
    if qi.op ~= "select" or not qi.complete or qi.key_bytes == nil
       or qi.filtering or qi.multi_partition
       or self.tables[qi.namespace] == nil then
        return nil
    end
    local flags = m:query_flags() or 0
    if band(m.data[1], FLAG_TRACING) ~= 0
       or (band(flags, PAGING_STATE) ~= 0 and m:paging_state() ~= nil) then
        return nil               -- a traced request, or not the first page
    end
    -- a Paxos read (SERIAL) sees in-flight LWTs; a v5 request's own
    -- keyspace or "now" (flags 0x80, 0x100) are not part of the entry
    if qi.consistency == "SERIAL" or qi.consistency == "LOCAL_SERIAL"
       or band(flags, 0x180) ~= 0 then
        return nil
    end
    for _, r in ipairs(qi.restrictions) do
        if not r.known then
            return nil
        end
    end
    local ast = m:statement(chain.conn)
    if not ast or ast.kind ~= "select" then
        return nil
    end
    return shape(m, ast, qi, flags), flags, ast
end

-- The fast path: a plan per prepared SELECT.
--
-- Drivers read through prepared statements, and everything that makes a
-- lookup from an EXECUTE but its bound values is the same for each one:
-- the table, which relations key the partition, what the shape's static
-- part is.  A plan holds that, made from the first EXECUTE of the
-- statement that cacheable() accepts; later EXECUTEs are read against it
-- straight from the body's bytes (the key and shape from the bound
-- values' bytes: what query_info() and shape() would give, without their
-- tables).  Anything the plan does not cover goes the general way: named
-- or null values, a paging state, a SERIAL read, a custom payload,
-- tracing, IN relations, bound limits.

local function be32s(n)
    return char(band(rshift(n, 24), 255), band(rshift(n, 16), 255),
                band(rshift(n, 8), 255), band(n, 255))
end

-- A plan for EXECUTE m of prepared statement st, which cacheable() took
-- (qi its query_info, ast and ks its statement and keyspace), or false
-- when its statement is not one the plan covers.
local function make_plan(self, st, m, qi, ast, ks)
    local tab = schema.get(ks, ast.table)
    if not tab or qi.op ~= "select" then
        return false
    end
    local plan = {
        kind = "read", gen = schema.generation, ns = qi.namespace,
        -- a statement naming no keyspace reads the session's
        conn_ks = not (ast.keyspace or st.keyspace) and ks or nil,
        tkey = table_key(self, qi.namespace),
        pkey = partition_key(self, qi.namespace, ""),
        static = statics[ast] or static_shape(ast),
        rel = {},                       -- per relation: a marker or a part
        -- per partition column: a marker, or its part of key_bytes
        key = {},
        needs = {},                     -- marker -> true
        nmarkers = 0,
    }
    local nkey = 0
    for j, rel in ipairs(ast.where or {}) do
        local node = rel.value
        if rel.values or node == nil or node.name then
            return false                -- IN, or named markers
        end
        if node.marker then
            plan.rel[j] = node.marker
            plan.needs[node.marker] = true
            plan.nmarkers = math.max(plan.nmarkers, node.marker)
        else
            local b = qi.restrictions[j].bytes
            plan.rel[j] = #b .. ":" .. b
        end
        if rel.op == "=" and tab.kinds[rel.column] == "partition_key" then
            for k, col in ipairs(tab.partition) do
                if col == rel.column and plan.key[k] == nil then
                    local b = qi.restrictions[j].bytes
                    plan.key[k] = node.marker or be32s(#b) .. b
                    nkey = nkey + 1
                end
            end
        end
    end
    if nkey ~= #tab.partition then
        return false
    end
    for _, x in ipairs({ ast.limit, ast.per_partition_limit }) do
        if x and x.marker then
            return false
        end
    end
    local function opt(v)
        v = tostring(v or "")
        return #v .. ":" .. v
    end
    plan.tail = "|" .. opt(qi.limit) .. "|" .. opt(qi.per_partition_limit)
    return plan
end

-- The plan of a prepared statement the cache has nothing to do with (a
-- SELECT or a write of a table it does not hold).
local NONE = { kind = "none" }

-- Is NONE right for statement `ast` prepared as `st` whose table the
-- cache does not hold?  Only when its keyspace cannot change (named, or
-- the session's when it was prepared): not after a USE.
local function fixed_keyspace(ast, st)
    return ast.keyspace ~= nil or st.keyspace ~= nil
end

-- A write's plan: the partition it invalidates, from bound markers or
-- literals of its key (INSERT's columns, UPDATE's or DELETE's WHERE); nil
-- when this EXECUTE cannot show it, false when a plan cannot cover it.
local function make_write_plan(self, st, qi, ast, ks)
    local kind = ast.kind
    local tab = schema.get(ks, ast.table)
    if not tab then
        return nil
    end
    if qi.namespace and self.tables[qi.namespace] == nil then
        return fixed_keyspace(ast, st) and NONE or false
    end
    if (kind ~= "insert" and kind ~= "update" and kind ~= "delete")
       or ast.json or not qi.key_bytes then
        return false
    end
    local plan = {
        kind = "write", gen = schema.generation, ns = qi.namespace,
        conn_ks = not (ast.keyspace or st.keyspace) and ks or nil,
        pkey = partition_key(self, qi.namespace, ""),
        key = {}, needs = {}, nmarkers = 0,
    }
    local nkey = 0
    local function put(col, node)
        if node == nil or tab.kinds[col] ~= "partition_key" then
            return true
        end
        for k, c in ipairs(tab.partition) do
            if c == col and plan.key[k] == nil then
                if node.marker then
                    if node.name then
                        return false
                    end
                    plan.key[k] = node.marker
                    plan.needs[node.marker] = true
                    plan.nmarkers = math.max(plan.nmarkers, node.marker)
                else
                    local b = qi.key_parts[col]
                    plan.key[k] = be32s(#b) .. b
                end
                nkey = nkey + 1
            end
        end
        return true
    end
    if not bound.each_keyed(ast, put) or nkey ~= #tab.partition then
        return false
    end
    return plan
end

local vals, parts = {}, {}          -- scratch: filled and emptied per call

-- key_bytes as query_info() makes it (each part with its length), from a
-- plan's key: per column a marker (its bound value) or the part itself.
local function key_bytes(key)
    local kb
    for k = 1, #key do
        local x = key[k]
        if type(x) == "number" then
            x = vals[x]
            x = be32s(#x) .. x
        end
        kb = k == 1 and x or kb .. x
    end
    return kb
end
-- The record of EXECUTE m (body p, n) by its plan: a read's lookup or a
-- write's partition; nil when this EXECUTE is not one the plan covers.
local function by_plan(plan, m, p, n)
    local cl, flags, i, count = bound.read(m, p, n, plan.needs, vals)
    if plan.kind == "write" then
        local r
        if cl ~= nil and band(flags, KEYSPACE_NOW) == 0
           and count >= plan.nmarkers then
            r = { write = plan.pkey .. key_bytes(plan.key), ns = plan.ns }
        end
        return r
    end
    local ok = cl ~= nil and cl ~= SERIAL and cl ~= LOCAL_SERIAL
               and band(flags, KEYSPACE_NOW + PAGING_STATE) == 0
               and count >= plan.nmarkers
    local page = ""
    if ok and band(flags, PAGE_SIZE) ~= 0 then
        if i + 4 > n then
            ok = false
        else
            page = tostring(bound.s32(p, i))
        end
    end
    local r
    if ok then
        local version = band(m.data[0], 0x7f)
        -- the shape as shape() makes it: static|version|part|...
        local rel = plan.rel
        parts[1], parts[2], parts[3] = plan.static, "|", version
        local np = 3
        for j = 1, #rel do
            local x = rel[j]
            if type(x) == "number" then
                x = vals[x]
                parts[np + 1], parts[np + 2], parts[np + 3] = "|", #x, ":"
                np = np + 3
            else
                np = np + 1
                parts[np] = "|"
            end
            np = np + 1
            parts[np] = x
        end
        parts[np + 1], parts[np + 2] = plan.tail, "|"
        parts[np + 3], parts[np + 4], parts[np + 5] = #page, ":", page
        local sh = concat(parts, "", 1, np + 5)
        r = { ns = plan.ns, field = sh, flags = flags,
              pkey = plan.pkey .. key_bytes(plan.key), tkey = plan.tkey }
    end
    return r
end


-- A read record for EXECUTE m when its plan covers it, else nil.
local function fast_read(self, m, conn)
    if band(m.data[1], FLAG_TRACING) ~= 0 then
        return nil
    end
    local st, p, n = bound.statement(m)
    local plan = st and self.plans[st]
    if plan == NONE then
        return NONE
    end
    if not plan or plan.gen ~= schema.generation
       or (plan.conn_ks and plan.conn_ks ~= (conn and conn.keyspace)) then
        return nil
    end
    local r = by_plan(plan, m, p, n)
    for k = 1, plan.nmarkers do
        vals[k] = nil
    end
    return r
end

local SCRIPTS = { store = STORE }
_M.scripts = SCRIPTS                    -- for the specs

-- A script's call: EVALSHA once its SHA1 is known (SCRIPT LOAD, on the
-- first batch that needs one), EVAL until then.
local function evalsha(self, which, script, keys, args)
    local sha = self.sha[which]
    local a = { sha and "EVALSHA" or "EVAL", sha or script,
                tostring(#keys) }
    for _, k in ipairs(keys) do
        a[#a + 1] = k
    end
    for _, v in ipairs(args) do
        a[#a + 1] = tostring(v)
    end
    return { args = a, script = script }
end

-- Run Redis commands (each { args =, script = }) through the cache chain;
-- each reply decoded, or nil and the error.  A NOSCRIPT is answered by
-- running the script itself (EVAL), once.
local function run_cache(self, chain, cmds)
    local b = new_batch(0)
    for _, c in ipairs(cmds) do
        b:push(command(c.args))
    end
    local load
    if self.sha.store == nil then           -- loaded with the first store
        for _, c in ipairs(cmds) do
            if c.script then
                load = {}
                break
            end
        end
    end
    if load then
        for which, script in pairs(SCRIPTS) do
            load[#load + 1] = which
            b:push(command({ "SCRIPT", "LOAD", script }))
        end
    end
    local ok, replies = pcall(chain.run_sub, chain, self.cache, b)
    if ok and load then
        for k, which in ipairs(load) do
            local r = replies[#cmds + k]
            local v = r ~= nil and r:decode()
            if type(v) == "string" then
                self.sha[which] = v
            end
        end
    end
    local out, again = {}, nil
    for i, c in ipairs(cmds) do
        local v, err
        if ok and replies[i] ~= nil then
            v, err = replies[i]:decode()
        else
            err = ok and "no reply" or tostring(replies)
        end
        if decode.is_error(v) then
            if c.script and v.code == "NOSCRIPT" then
                again = again or {}
                again[#again + 1] = i
            else
                v, err = nil, tostring(v)
            end
        end
        out[i], out[-i] = v, err
    end
    if again then
        local b2 = new_batch(0)
        for _, i in ipairs(again) do
            local a = cmds[i].args
            local args = { "EVAL", cmds[i].script }
            for k = 3, #a do
                args[#args + 1] = a[k]
            end
            b2:push(command(args))
        end
        local ok2, r2 = pcall(chain.run_sub, chain, self.cache, b2)
        for k, i in ipairs(again) do
            local v, err
            if ok2 and r2[k] ~= nil then
                v, err = r2[k]:decode()
            else
                err = ok2 and "no reply" or tostring(r2)
            end
            if decode.is_error(v) then
                v, err = nil, tostring(v)
            end
            out[i], out[-i] = v, err
        end
    end
    return out
end

-- Wall-clock milliseconds: entries carry their expiry in this clock, so
-- every shotover sharing a Redis agrees on it (as far as their clocks do).
ffi.cdef [[
struct sh_cache_timeval { long tv_sec; long tv_usec; };
int gettimeofday(struct sh_cache_timeval *tv, void *tz);
]]
local timeval = ffi.new("struct sh_cache_timeval")
local function now_ms()
    C.gettimeofday(timeval, nil)
    return tonumber(timeval.tv_sec) * 1000
           + floor(tonumber(timeval.tv_usec) / 1000)
end

-- A lookup's replies (the table's version; the entry, its stamp and the
-- partition's version from HMGET; false for a null): the entry's body
-- when it is current, else nil, having kept in r the versions a store
-- must find still there.
local find, sub, byte = string.find, string.sub, string.byte
local function entry(tv, body, stamp, pv, now, r)
    tv = tv or "0"
    r.tv, r.pv = tv, pv or "0"
    if not body or not stamp then
        return nil
    end
    -- "<table version>:<partition version>:<expiry>"
    local a = #tv + 1
    if find(stamp, tv, 1, true) ~= 1 or byte(stamp, a) ~= 58 then
        return nil
    end
    local pv_ = r.pv
    local b = a + #pv_ + 1
    if find(stamp, pv_, a + 1, true) ~= a + 1 or byte(stamp, b) ~= 58 then
        return nil
    end
    if now < (tonumber(sub(stamp, b + 1)) or 0) then
        return body
    end
    return nil
end

-- The replies of a lookup, read in place: a RESP bulk string (or null) at
-- p[i], and the offset after it; nil when it is something else.
local function bulk_at(p, i, n)
    if i + 3 > n then
        return nil
    end
    local c = p[i]
    if c == 95 then                                     -- "_\r\n"
        return false, i + 3
    end
    if c ~= 36 then                                     -- "$"
        return nil
    end
    i = i + 1
    if p[i] == 45 then                                  -- "$-1\r\n"
        return false, i + 4
    end
    local len = 0
    while i < n and p[i] ~= 13 do
        len = len * 10 + p[i] - 48
        i = i + 1
    end
    i = i + 2
    if i + len + 2 > n then
        return nil
    end
    return ffi.string(p + i, len), i + len + 2
end

-- HMGET's three fields from reply f, or nil.
local function three_at(f)
    local p, n = f.data, f.len
    if n < 4 or p[0] ~= 42 or p[1] ~= 51 or p[2] ~= 13 then   -- "*3\r"
        return nil
    end
    local a, b, c, i
    a, i = bulk_at(p, 4, n)
    if a == nil then
        return nil
    end
    b, i = bulk_at(p, i, n)
    if b == nil then
        return nil
    end
    c = bulk_at(p, i, n)
    if c == nil then
        return nil
    end
    return a, b, c
end

-- Why reply f is not what a lookup expects.
local function unexpected(f)
    if f == nil then
        return "no reply"
    end
    local v = f:decode()
    return decode.is_error(v) and tostring(v) or "unexpected reply"
end

-- Look up each read's entry: one GET per table, one HMGET per read, in
-- one round trip.  Each read's body when it hits; r.err when the cache
-- did not answer.
local largs = {}
local function lookup(self, chain, reads)
    local b = new_batch(0)
    local tk, nt = {}, 0
    for k = 1, #reads do
        local key = reads[k].tkey
        if tk[key] == nil then
            nt = nt + 1
            tk[key] = nt
            largs[1], largs[2] = "GET", key
            b:push(command(largs))
        end
    end
    largs[1], largs[2] = "HMGET", nil
    for k = 1, #reads do
        local r = reads[k]
        largs[2], largs[3], largs[4], largs[5] = r.pkey, r.field,
                                                  "@" .. r.field, "v"
        b:push(command(largs))
    end
    for k = 1, 5 do
        largs[k] = nil
    end
    local ok, replies = pcall(chain.run_sub, chain, self.cache, b)
    if not ok then
        for k = 1, #reads do
            reads[k].err = tostring(replies)
        end
        return
    end
    local tvs = {}
    for key, at in pairs(tk) do
        local f, tv = replies[at], nil
        if f ~= nil then
            tv = bulk_at(f.data, 0, f.len)
        end
        tvs[key] = tv == nil and { unexpected(f) } or tv
    end
    local now = now_ms()
    for k = 1, #reads do
        local r = reads[k]
        local tv = tvs[r.tkey]
        local f = replies[nt + k]
        if type(tv) == "table" then
            r.err = tv[1]
        else
            local body, stamp, pv
            if f ~= nil then
                body, stamp, pv = three_at(f)
            end
            if body == nil then
                r.err = unexpected(f)
            else
                r.body = entry(tv, body, stamp, pv, now, r)
            end
        end
    end
end

local warned = 0
local function cache_error(self, err)
    add(self.m.errors, 1)
    local now = os.time()
    if now > warned then
        warned = now
        log.warn("%s: cache unavailable, going to Cassandra: %s", self.name,
                 tostring(err))
    end
end

-- The RESULT message of a reply: its body after the tracing id, warnings
-- and custom payload; nil unless a RESULT Rows.
local function rows_body(r)
    if r == nil or r.rtype ~= OP_RESULT then
        return nil
    end
    local p, n = r:body_view()
    local ok, at = pcall(session.response_start, r, p, n)
    if not ok or at + 4 > n or types.be32(p, at) ~= ROWS then
        return nil
    end
    return ffi.string(p + at, n - at)
end

-- A stored Rows body for a request that asked the node to skip the
-- metadata (the driver has it from PREPARE): the same rows, flagged
-- No_metadata, without the column specs.
local function strip_metadata(body)
    local p = ffi.cast("const uint8_t *", body)
    local n = #body
    local flags = types.be32(p, 4)
    local paging = ""
    if band(flags, 0x0002) ~= 0 then                -- Has_more_pages
        local len = types.s32(p, 12, n, "a paging state")
        paging = body:sub(13, 16 + (len > 0 and len or 0))
    end
    local _, rows_at = types.read_rows_metadata(p, 4, n)
    -- No_metadata; no global table spec, no new metadata id (v5)
    local nf = bor(band(flags, bnot(0x0009)), 0x0004)
    return body:sub(1, 4) .. char(band(rshift(nf, 24), 255),
                                  band(rshift(nf, 16), 255),
                                  band(rshift(nf, 8), 255), band(nf, 255))
           .. body:sub(9, 12) .. paging .. body:sub(rows_at + 1)
end

-- A stored Rows body for a request that skips metadata, made once per
-- body while it is in use (hits of one entry get the same string from
-- Redis): at most STRIPPED_BYTES of them are kept, then all forgotten.
local STRIPPED_BYTES = 8 * 1024 * 1024
local stripped, stripped_bytes = {}, 0
local function stripped_of(body)
    local s = stripped[body]
    if s == nil then
        s = strip_metadata(body)
        if stripped_bytes + #s > STRIPPED_BYTES then
            stripped, stripped_bytes = {}, 0
        end
        stripped[body] = s
        stripped_bytes = stripped_bytes + #s
    end
    return s
end

-- The reply a hit gives: a RESULT answering req on its stream and version,
-- compressed when the connection's v4 frames are.
local hit_buf, hit_cap = nil, 0
local function hit_reply(req, body)
    local version = band(req.data[0], 0x7f)
    local compress = version < 5 and req.cmd ~= 0   -- LZ4 or Snappy
    local stream = req.argc % 65536
    if compress then
        local f = assert(message.frame_from_cql(
            char(0x80 + version, FLAG_COMPRESSED,
                 floor(stream / 256), stream % 256, OP_RESULT, 0, 0, 0, 0)))
        f.cmd = req.cmd                 -- the connection's algorithm
        f:set_body(body)
        return f
    end
    -- the envelope in a reused buffer, copied once into the frame
    local n = #body
    if hit_cap < n + 9 then
        hit_cap = math.max(n + 9, 2 * hit_cap, 4096)
        hit_buf = ffi.new("uint8_t[?]", hit_cap)
    end
    local h = hit_buf
    h[0], h[1], h[2], h[3], h[4] = 0x80 + version, 0, rshift(stream, 8),
                                   band(stream, 255), OP_RESULT
    h[5], h[6], h[7], h[8] = rshift(n, 24), band(rshift(n, 16), 255),
                             band(rshift(n, 8), 255), band(n, 255)
    ffi.copy(h + 9, body, n)
    return assert(message.frame_from_cql(h, n + 9))
end

-- What the batch writes, as invalidations: { [redis key] = "p" } for
-- partitions, "t" for whole tables.  `qi` of a write, or of a BATCH.
local function writes_of(self, qi, out)
    if qi.kind == "batch" then
        for _, s in ipairs(qi.statements or {}) do
            writes_of(self, s, out)
        end
        return
    end
    local ns = qi.namespace
    if qi.kind == "write" or qi.kind == "delete" then
        if ns and self.tables[ns] then
            if qi.key_bytes then
                out[partition_key(self, ns, qi.key_bytes)] = ns
            else
                out[table_key(self, ns)] = "t"
            end
        end
    elseif qi.kind == "truncate" or qi.kind == "schema_change" then
        if qi.op == "drop_keyspace" or qi.op == "alter_keyspace" then
            for name in pairs(self.tables) do
                if name:sub(1, #qi.keyspace + 1) == qi.keyspace .. "." then
                    out[table_key(self, name)] = "t"
                end
            end
        elseif ns and self.tables[ns] then
            out[table_key(self, ns)] = "t"
        end
    end
end

-- A partition's invalidation: its version up by one (entries stamped
-- with the old one are misses from now on), and the hash kept as long as
-- a SELECT that read before the write could try to store (the store
-- checks the version).  No script: two plain commands.
local function invalidation(self, key, what, cmds, what_of)
    if what == "t" then
        cmds[#cmds + 1] = { args = { "INCR", key } }
        what_of[#cmds] = key
        return
    end
    cmds[#cmds + 1] = { args = { "HINCRBY", key, "v", "1" } }
    what_of[#cmds] = key
    cmds[#cmds + 1] = { args = { "PEXPIRE", key,
                                 tostring(self.tables[what].ttl_ms
                                          + GRACE_MS) } }
end

function mt.__index.transform(self, batch, chain)
    if chain.c == nil then
        return chain:next(batch)            -- dry: no cache
    end
    local n = batch.n
    local relevant = false
    for i = 1, n do
        local op = batch[i].rtype
        if op == OP_QUERY or op == OP_EXECUTE or op == OP_BATCH then
            relevant = true
            break
        end
    end
    if not relevant then
        return chain:next(batch)
    end
    -- reads a plan covers first; the rest the general way
    local conn = chain.conn
    local reads, writes, slow = {}, {}, nil
    for i = 1, n do
        local m = batch[i]
        local op = m.rtype
        local r = op == OP_EXECUTE and fast_read(self, m, conn)
        if r == NONE then                       -- luacheck: ignore
        elseif r and r.write then
            writes[r.write] = r.ns
        elseif r then
            r.i = i
            reads[#reads + 1] = r
        elseif op == OP_QUERY or op == OP_EXECUTE or op == OP_BATCH then
            slow = slow or {}
            slow[#slow + 1] = i
        end
    end
    local unknown_write = false
    if slow then
        schema.prepare(chain, batch, slow)
        for _, i in ipairs(slow) do
            local m = batch[i]
            local qi = m:query_info(chain)
            if qi then
                local sh, flags, ast = cacheable(self, m, qi, chain)
                local st = m.rtype == OP_EXECUTE and session.prepared(m)
                local cur = st and self.plans[st]
                -- a plan to make: none yet (false: none possible), or
                -- one older than the schemas
                local learn = st and cur ~= false
                              and (not cur or cur.gen ~= schema.generation)
                if sh then
                    local ns = qi.namespace
                    reads[#reads + 1] = { i = i, ns = ns, field = sh,
                        flags = flags,
                        pkey = partition_key(self, ns, qi.key_bytes),
                        tkey = table_key(self, ns) }
                    if learn then
                        self.plans[st] = make_plan(self, st, m, qi, ast,
                                                   qi.keyspace)
                    end
                else
                    writes_of(self, qi, writes)
                    if qi.op == "execute" and not qi.complete then
                        unknown_write = true -- a statement not known here
                    elseif learn and qi.complete then
                        if qi.kind ~= "read" then
                            self.plans[st] = make_write_plan(self, st, qi,
                                m:statement(conn))
                        elseif self.tables[qi.namespace] == nil
                               and fixed_keyspace(m:statement(conn), st)
                        then
                            self.plans[st] = NONE    -- an uncached table
                        end
                    end
                end
            end
        end
    end
    -- invalidations Redis missed earlier go first; until they are in,
    -- this worker does not read their tables from the cache
    local held = self.npending > 0 and self.pending or nil
    local answered = {}
    if #reads > 0 then
        lookup(self, chain, reads)
        local hits, hit_bytes, misses = 0, 0, 0
        for _, r in ipairs(reads) do
            local v = r.body
            if held and (held[r.pkey] or held[r.tkey]) then
                v, r.pv = nil, nil
                add(self.m.bypassed, 1)
            end
            if v then
                local req = batch[r.i]
                local ok, f = pcall(hit_reply, req,
                    band(r.flags, SKIP_METADATA) ~= 0
                    and stripped_of(v) or v)
                if ok then
                    answered[r.i] = f
                    hits, hit_bytes = hits + 1, hit_bytes + #v
                else
                    cache_error(self, f)
                end
            else
                if r.err then
                    cache_error(self, r.err)
                end
                misses = misses + 1
            end
            if answered[r.i] == nil and r.pv then
                -- store the rows with their metadata, whatever the
                -- driver asked: hits serve both kinds of request
                if band(r.flags, SKIP_METADATA) ~= 0 then
                    batch[r.i]:set_query_flags(band(r.flags,
                                                    bnot(SKIP_METADATA)))
                end
            end
        end
        if hits > 0 then
            add(self.m.hits, hits)
            add(self.m.hit_bytes, hit_bytes)
        end
        if misses > 0 then
            add(self.m.misses, misses)
        end
    end
    local resp = next(answered) and chain:next_except(batch, answered)
                 or chain:next(batch)
    if slow then
        schema.observe(resp, slow)  -- (a planned request changes none)
    end
    if unknown_write then
        -- an EXECUTE of a statement no worker saw prepared may have
        -- written anything: a Void answer means it did
        for i = 1, n do
            local r = resp[i]
            if r ~= nil and batch[i].rtype == OP_EXECUTE
               and r.rtype == OP_RESULT and rows_body(r) == nil then
                for name in pairs(self.tables) do
                    writes[table_key(self, name)] = "t"
                end
                break
            end
        end
    end
    -- after the node answered, before the client hears: invalidate what
    -- was written (whatever the answer: a timeout may have applied it),
    -- and store what missed
    local cmds, what = {}, {}
    if held then
        for key, w in pairs(held) do
            if writes[key] == nil then
                writes[key] = w
            end
        end
    end
    for key, w in pairs(writes) do
        invalidation(self, key, w, cmds, what)
    end
    local ninv = #cmds
    for _, r in ipairs(reads) do
        local body = r.pv and answered[r.i] == nil and rows_body(resp[r.i])
        local t = self.tables[r.ns]
        if body and #body <= t.max_entry then
            cmds[#cmds + 1] = evalsha(self, "store", STORE,
                { r.pkey, r.tkey },
                { r.field, r.pv, r.tv, fmt("%.0f", now_ms() + t.ttl_ms),
                  body, t.ttl_ms + GRACE_MS })
            what[#cmds] = #body
        end
    end
    if #cmds > 0 then
        local got = run_cache(self, chain, cmds)
        for k = 1, #cmds do
            if k <= ninv then
                local key = what[k]      -- (nil: a PEXPIRE after HINCRBY)
                if key == nil then       -- luacheck: ignore
                elseif got[k] ~= nil then
                    add(self.m.invalidations, 1)
                    if self.pending[key] then
                        self.pending[key] = nil
                        self.npending = self.npending - 1
                    end
                else
                    cache_error(self, got[-k])
                    if not self.pending[key] then
                        self.pending[key] = writes[key]
                        self.npending = self.npending + 1
                    end
                end
            elseif got[k] == 1 then
                add(self.m.stores, 1)
                add(self.m.stored_bytes, what[k])
            elseif got[k] == nil then
                cache_error(self, got[-k])
            end
        end
    end
    return resp
end

return _M
