-- Builders for CQL requests, as a driver would send them: for
-- `shotover route-test` and `shotover repl`, and for specs.  Each returns a
-- message (sh_frame_t) owned by Lua (garbage collected).
local message = require "shotover.message"
local reply = require "shotover.cql.reply"
local C = require("shotover.ffi").C

local char = string.char
local concat = table.concat
local floor = math.floor
local type = type
local error = error

local _M = { _VERSION = "0.1.0" }

local OP = { STARTUP = C.SH_CQL_STARTUP, OPTIONS = C.SH_CQL_OPTIONS,
             QUERY = C.SH_CQL_QUERY, PREPARE = C.SH_CQL_PREPARE,
             EXECUTE = C.SH_CQL_EXECUTE }
_M.OP = OP

local CONSISTENCY = {
    ANY = 0, ONE = 1, TWO = 2, THREE = 3, QUORUM = 4, ALL = 5,
    LOCAL_QUORUM = 6, EACH_QUORUM = 7, SERIAL = 8, LOCAL_SERIAL = 9,
    LOCAL_ONE = 10,
}

local be16, be32 = reply.be16, reply.be32

-- A marker for a null value in a values list.
_M.NULL = setmetatable({}, { __tostring = function() return "null" end })

-- One bound value: Lua integers in the int range are CQL int, other numbers
-- double, strings text, booleans boolean; { type = "bigint", value = 5 }
-- names the type (types of cql/reply.lua's rows()); NULL is a null.
local function value(v)
    local t = type(v)
    if v == _M.NULL then
        return reply.cell("int", nil)
    elseif t == "table" then
        return reply.cell(v.type or error("cql request: a typed value needs "
                                          .. "type = ...", 4), v.value)
    elseif t == "number" then
        if v == floor(v) and v >= -2^31 and v < 2^31 then
            return reply.cell("int", v)
        end
        return reply.cell("double", v)
    elseif t == "string" then
        return reply.cell("text", v)
    elseif t == "boolean" then
        return reply.cell("boolean", v)
    end
    error("cql request: cannot bind a " .. t, 4)
end

-- an envelope: version 4 unless opts.version, stream opts.stream or 0
function _M.envelope(opcode, body, opts)
    opts = opts or {}
    local f, err = message.frame_from_cql(char(opts.version or 4, 0)
                                          .. be16(opts.stream or 0)
                                          .. char(opcode) .. be32(#body)
                                          .. body)
    if not f then
        error("cql request: " .. err, 2)
    end
    return f
end

-- [query parameters]: consistency, flags, values (v4: flags are a byte)
local function parameters(values, opts)
    local cl = CONSISTENCY[opts.consistency or "ONE"]
    if cl == nil then
        error("cql request: unknown consistency " .. tostring(opts.consistency),
              3)
    end
    local parts = { be16(cl) }
    local flags = 0
    local n = values and #values or 0
    if n > 0 then
        flags = 0x01
    end
    if (opts.version or 4) >= 5 then
        parts[2] = be32(flags)
    else
        parts[2] = char(flags)
    end
    if n > 0 then
        parts[3] = be16(n)
        for i = 1, n do
            parts[#parts + 1] = value(values[i])
        end
    end
    return concat(parts)
end

-- query(text, values, opts): a QUERY; opts: version, stream, consistency
-- (a name, default ONE)
function _M.query(text, values, opts)
    opts = opts or {}
    return _M.envelope(OP.QUERY, be32(#text) .. text
                                 .. parameters(values, opts), opts)
end

function _M.prepare(text, opts)
    return _M.envelope(OP.PREPARE, be32(#text) .. text
                                   .. (((opts or {}).version or 4) >= 5
                                       and be32(0) or ""), opts)
end

-- execute(id, values, opts): an EXECUTE of prepared statement `id` (v4)
function _M.execute(id, values, opts)
    opts = opts or {}
    return _M.envelope(OP.EXECUTE, be16(#id) .. id
                                   .. parameters(values, opts), opts)
end

function _M.options(opts)
    return _M.envelope(OP.OPTIONS, "", opts)
end

function _M.startup(opts)
    local body = be16(1) .. be16(11) .. "CQL_VERSION" .. be16(5) .. "3.0.0"
    return _M.envelope(OP.STARTUP, body, opts)
end

return _M
