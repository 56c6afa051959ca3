-- Helpers for a transform's busted specs, run inside shotover
-- (`shotover lua busted spec/`): validate a chain config as `shotover
-- check` does (errors with their paths), build it dry (sinks answer without
-- a backend, see shotover.dry), make Redis and CQL requests, run a batch
-- and read the replies as text.  Nothing here needs a worker or a network.
--
--   local testing = require "shotover.testing"
--   local t = testing.build({ { "key_prefix", prefix = "app:" },
--                             { "debug_returner", simple = "OK" } })
--   assert.are.same({ "OK" }, t:replies({ "SET", "k", "v" }))
--
-- See "Testing a transform" in docs/lua-api.md.
local ffi = require "ffi"
local chain = require "shotover.chain"
local config = require "shotover.config"
local message = require "shotover.message"
local trace = require "shotover.trace"
local common = require "shotover.cli.common"
local cql_request = require "shotover.cql.request"
local PROTO_REDIS = require("shotover.ffi").C.SH_PROTO_REDIS

local type = type
local error = error
local select = select
local istype = ffi.istype
local ipairs = ipairs
local setmetatable = setmetatable
local tostring = tostring
local concat = table.concat

local _M = { _VERSION = "0.1.0" }

-- the builders of CQL requests (query, prepare, execute, options,
-- startup, envelope, NULL), as a driver would send them
_M.cql_request = cql_request

local SOURCE_PATH = "sources[1]."

-- opts: a protocol name, or { protocol = "redis" | "cassandra", lanes = n }
local function options(opts)
    if type(opts) == "string" or opts == nil then
        return { protocol = opts or "redis" }
    end
    if type(opts) ~= "table" then
        error('bad "opts" argument: a protocol name or a table', 3)
    end
    opts.protocol = opts.protocol or "redis"
    return opts
end

-- Validate chain `elements` as the chain of one source (config.check).
-- Returns the validated elements (defaults filled in) and the source's
-- settings (its `lanes`), or nil and the list of errors, each
-- "PATH: message" with PATH from the chain: "chain[2].remote: ...".
function _M.check(elements, opts)
    opts = options(opts)
    local conf, errs = config.check({ sources = { {
        name = opts.name or "test", protocol = opts.protocol,
        listen = "127.0.0.1:1", chain = elements, lanes = opts.lanes } } })
    if not conf then
        local out = {}
        for i, e in ipairs(errs) do
            if e:sub(1, #SOURCE_PATH) == SOURCE_PATH then
                e = e:sub(#SOURCE_PATH + 1)
            end
            out[i] = e
        end
        return nil, out
    end
    return conf.sources[1].chain, conf.sources[1]
end

local Test = {}
Test.__index = Test

-- Build `elements` dry: validated first (raises with every error), then
-- built without a worker, so the redis and cassandra sinks answer without
-- a backend (Redis +DRY; CQL READY, RESULT Void, Set_keyspace for USE).
-- Returns a test chain t: t.chain (its parks and lanes), t.ctx (one client
-- connection: its session table is t.ctx.conn), t:run, t:replies.
-- opts: as check's, plus name (the chain's name, default "test").
function _M.build(elements, opts)
    opts = options(opts)
    local els, errs = _M.check(elements, opts)
    if not els then
        error("invalid chain:\n" .. concat(errs, "\n"), 2)
    end
    local ch = chain.build(els, { worker = nil, protocol = opts.protocol,
                                  name = opts.name or "test",
                                  path = "chain" })
    return setmetatable({ chain = ch, ctx = ch:context(nil),
                          protocol = opts.protocol }, Test)
end

-- A new client connection: a fresh context (and session table) for the
-- runs that follow.
function Test:reconnect()
    self.ctx = self.chain:context(nil)
    return self
end

-- Run a batch (or requests, as testing.batch takes them) through the chain
-- as one client batch.  Returns the responses (a batch).  An element that
-- raises fails the batch's requests with error replies, as in the proxy.
function Test:run(...)
    local b = ...
    if select("#", ...) ~= 1 or not istype("sh_batch_t", b) then
        b = _M.batch(...)
    end
    return self.chain:run(self.ctx, b)
end

-- Run requests and return their replies as text (testing.text).
function Test:replies(...)
    return _M.texts(self:run(...))
end

-- A Redis request: redis("GET", "k"), redis({ "GET", "k" }) or a line split
-- as redis-cli does, redis('SET k "a b"').
function _M.redis(cmd, ...)
    local req = cmd
    if type(cmd) == "string" and select("#", ...) > 0 then
        req = { cmd, ... }
    end
    local f, err = common.request("redis", req)
    if not f then
        error("redis request: " .. tostring(err), 2)
    end
    return f
end

-- A CQL QUERY (v4 unless opts.version), values bound in order (see
-- shotover.cql.request: numbers as int or double, strings as text, {
-- type = "bigint", value = 5 } typed, testing.cql_request.NULL null);
-- opts: version, stream, consistency.
function _M.cql(text, values, opts)
    return cql_request.query(text, values, opts)
end

-- A batch of requests: messages, Redis command tables ({ "GET", "k" }) or
-- Redis command lines ("GET k").
function _M.batch(...)
    local b = message.new_batch(0)
    for i = 1, select("#", ...) do
        local r = select(i, ...)
        if type(r) ~= "cdata" then
            r = _M.redis(r)
        end
        b:push(r)
    end
    return b
end

-- One reply as text: Redis as redis-cli would show its value, without
-- RESP's markers ("OK", "ERR no", "42", "v", "(nil)", arrays as
-- trace.show renders them); CQL as opcode and result ("READY",
-- "RESULT Void", "ERROR 0x2200 ...").
function _M.text(f)
    if f == nil then
        return "(none)"
    end
    if f.proto ~= PROTO_REDIS then
        return trace.show(f)            -- as its protocol shows it
    end
    local ty = f:type()
    if ty == "simple" or ty == "error" or ty == "integer" then
        return f:line()
    elseif ty == "bulk" then
        local raw = f:raw()
        if raw:sub(1, 3) == "$-1" then
            return "(nil)"
        end
        return raw:sub(raw:find("\r\n", 1, true) + 2, -3)
    elseif ty == "null" then
        return "(nil)"
    end
    return trace.show(f)
end

-- Every reply of a batch as text, in order.
function _M.texts(resp)
    local out = {}
    for i = 1, resp.n do
        out[i] = _M.text(resp[i])
    end
    return out
end

-- Is reply f an error (Redis -ERR..., CQL ERROR)?
_M.is_error = common.is_error

-- One request through the chain with a trace, as `shotover route-test`
-- records it: returns the reply and the trace (see shotover.trace;
-- trace.format(tr) renders it).
function Test:trace(req)
    if type(req) ~= "cdata" then
        req = _M.redis(req)
    end
    return common.run({ chain = self.chain, ctx = self.ctx }, req)
end

_M.format_trace = trace.format

-- for messages: "chain[2].remote: ..." lines as one string
function _M.errors(elements, opts)
    local ok, errs = _M.check(elements, opts)
    if ok then
        return nil
    end
    return concat(errs, "\n")
end

return _M
