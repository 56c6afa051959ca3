-- The Lua half of c/test/fuzz-cql.c: every body decoder of the Lua side,
-- run on each envelope of a fuzzed conversation, as transforms and the
-- cassandra sink run them.  A decoder may raise on a bad body (a chain
-- turns that into an error reply for the batch); it must not read outside
-- the body (the C half puts each one against an unmapped page), run
-- without bound (libFuzzer's timeout), or break the round trips of the
-- setters checked here, which raise "fuzz invariant" past every pcall.
local ffi = require "ffi"
local message = require "shotover.message"
local protocols = require "shotover.protocols"
local shdict = require "shotover.shdict"

local cql = protocols.get("cassandra")
local OP_QUERY = ffi.C.SH_CQL_QUERY
local frame_ptr = ffi.typeof("sh_frame_t *")
local cast = ffi.cast
local pcall = pcall
local type = type
local pairs = pairs
local tostring = tostring

-- SHOTOVER_FUZZ_TRACE=1: each decoder's name before it runs (to find the
-- one a crash input stops in)
if os.getenv("SHOTOVER_FUZZ_TRACE") then
    local names = {}
    for k, v in pairs(message.frame_methods) do
        names[v] = "msg:" .. k
    end
    for k, v in pairs(cql) do
        if type(v) == "function" then
            names[v] = "cassandra." .. k
        end
    end
    local real = pcall
    pcall = function(fn, ...)
        io.stderr:write("fuzz: ", names[fn] or tostring(fn), "\n")
        return real(fn, ...)
    end
end

local _M = {}

local session                           -- shotover.cql.session, per input
local conn = {}                         -- the client's session table
local chain = { conn = conn }           -- what classification reads

local function invariant(ok, what)
    if not ok then
        error("fuzz invariant: " .. what, 0)
    end
end

-- A fresh session per input, so that an input replays alone: what an
-- earlier one prepared is forgotten, here and in the shared dict.
function _M.reset()
    package.loaded["shotover.cql.session"] = nil
    session = require "shotover.cql.session"
    local d = shdict.open("shotover.cql.prepared", session.MAX_PREPARED)
    if d then
        d:flush()
    end
    conn = {}
    chain.conn = conn
end

-- Deep equality of decoded values (strings, numbers, int64 cdata,
-- booleans, tables of them).
local function same(a, b)
    if type(a) ~= type(b) then
        return false
    end
    if type(a) == "table" then
        for k, v in pairs(a) do
            if not same(v, b[k]) then
                return false
            end
        end
        for k in pairs(b) do
            if a[k] == nil then
                return false
            end
        end
        return true
    end
    return a == b or tostring(a) == tostring(b)
end

-- What a request says, each decoder on its own: ok flag and result.
local function read_request(m)
    local r = {}
    r.qok, r.q = pcall(m.query, m)
    r.cok, r.c = pcall(m.consistency, m)
    r.vok, r.v = pcall(m.values, m)
    r.pok, r.p = pcall(m.page_size, m)
    return r
end

local function same_reads(a, b, skip)
    for _, k in pairs({ "q", "c", "v", "p" }) do
        if k ~= skip then
            invariant(a[k .. "ok"] == b[k .. "ok"]
                      and (not a[k .. "ok"] or same(a[k], b[k])),
                      "a setter changed what " .. k .. " reads")
        end
    end
end

-- The setters rebuild the body around the part they replace: that part
-- reads back as set, and every other part as before.
local function setters(m)
    local before = read_request(m)
    if before.qok and before.q and pcall(m.set_query, m, "SELECT 1") then
        local after = read_request(m)
        invariant(after.qok and after.q == "SELECT 1",
                  "set_query does not read back")
        same_reads(before, after, "q")
        before = after
    end
    if before.cok and before.c and pcall(m.set_consistency, m, "LOCAL_ONE")
    then
        local after = read_request(m)
        invariant(after.cok and after.c == "LOCAL_ONE",
                  "set_consistency does not read back")
        same_reads(before, after, "c")
        before = after
    end
    -- (a QUERY's values are bytes; an EXECUTE's may be typed)
    if m.rtype == OP_QUERY and before.vok and before.v
       and type(before.v[1]) == "string"
       and pcall(m.set_value, m, 1, "fz")
    then
        local after = read_request(m)
        invariant(after.vok and after.v[1] == "fz",
                  "set_value does not read back")
        before.v[1] = "fz"
        for k, v in pairs(after.v) do
            if type(k) == "string" and v == "fz" then
                before.v[k] = "fz"        -- the first value by its name
            end
        end
        same_reads(before, after)
    end
end

-- A request (an sh_frame_t * as light userdata).  `final`: the last pass,
-- after the responses were learned (EXECUTE values are typed then), which
-- also runs the setters.
function _M.request(p, final)
    local m = cast(frame_ptr, p)
    pcall(m.describe, m)
    pcall(cql.show, m)
    pcall(cql.log_text, m)
    pcall(m.body, m)
    pcall(m.query, m)
    pcall(m.consistency, m)
    pcall(m.values, m)
    pcall(m.partition_key, m)
    pcall(m.page_size, m)
    pcall(m.paging_state, m)
    pcall(m.statement, m, conn)
    pcall(m.batch_children, m)
    pcall(m.batch_size, m)
    pcall(m.prepared_id, m)
    pcall(cql.query_class, m, chain)
    pcall(cql.query_label, m, chain)
    pcall(cql.cost, m)
    if final then
        setters(m)
    end
end

-- A response, and the request of its stream when there was one: decoded,
-- then learned as the cassandra sink learns (USE, PREPARE).
function _M.response(p, q)
    local m = cast(frame_ptr, p)
    local req = q and cast(frame_ptr, q)
    pcall(m.describe, m)
    pcall(cql.show, m)
    pcall(cql.is_error_reply, m)
    pcall(m.rows, m, req)
    pcall(m.rows, m, nil, true)
    pcall(m.paging_state, m)
    pcall(m.error_info, m)
    pcall(m.event, m)
    pcall(m.schema_change, m)
    if req ~= nil then
        local rq, rs = message.new_batch(1), message.new_batch(1)
        rq:set(1, req)
        rs:set(1, m)
        pcall(session.learn, conn, rq, rs)
    end
end

return _M
