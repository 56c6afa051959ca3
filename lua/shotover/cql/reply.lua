-- Constructors for CQL responses a transform produces itself.  Each takes
-- the request it answers (for its protocol version and stream id) and
-- returns a message (sh_frame_t) living as long as the batch.
local bit = require "bit"
local ffi = require "ffi"
local message = require "shotover.message"
local C = require("shotover.ffi").C

local band, rshift = bit.band, bit.rshift
local char = string.char
local concat = table.concat
local floor = math.floor
local type = type
local error = error
local frame_from_cql = message.frame_from_cql

local _M = { _VERSION = "0.1.0" }

_M.OPCODE = {
    ERROR = C.SH_CQL_ERROR, READY = C.SH_CQL_READY,
    AUTHENTICATE = C.SH_CQL_AUTHENTICATE, SUPPORTED = C.SH_CQL_SUPPORTED,
    RESULT = C.SH_CQL_RESULT, AUTH_SUCCESS = C.SH_CQL_AUTH_SUCCESS,
}
local OPCODE = _M.OPCODE

-- error codes (native_protocol_v4.spec section 9; those the C core uses
-- too come from its header)
_M.CODE = {
    SERVER_ERROR = C.SH_CQL_SERVER_ERROR,
    PROTOCOL_ERROR = C.SH_CQL_PROTOCOL_ERROR, AUTH_ERROR = 0x0100,
    UNAVAILABLE = 0x1000, OVERLOADED = C.SH_CQL_OVERLOADED,
    IS_BOOTSTRAPPING = 0x1002, TRUNCATE_ERROR = 0x1003,
    WRITE_TIMEOUT = 0x1100, READ_TIMEOUT = 0x1200,
    READ_FAILURE = 0x1300, FUNCTION_FAILURE = 0x1400,
    WRITE_FAILURE = 0x1500, SYNTAX_ERROR = 0x2000, UNAUTHORIZED = 0x2100,
    INVALID = 0x2200, CONFIG_ERROR = 0x2300, ALREADY_EXISTS = 0x2400,
    UNPREPARED = 0x2500,
}

-- column type option ids
local TYPE = {
    ascii = 0x0001, bigint = 0x0002, blob = 0x0003, boolean = 0x0004,
    counter = 0x0005, double = 0x0007, float = 0x0008, int = 0x0009,
    timestamp = 0x000B, uuid = 0x000C, text = 0x000D, varchar = 0x000D,
    timeuuid = 0x000F, smallint = 0x0013, tinyint = 0x0014,
}
_M.TYPE = TYPE

local function be16(n)
    return char(band(rshift(n, 8), 0xff), band(n, 0xff))
end

local function be32(n)
    return char(band(rshift(n, 24), 0xff), band(rshift(n, 16), 0xff),
                band(rshift(n, 8), 0xff), band(n, 0xff))
end

local function be64(n)
    if n ~= floor(n) or n >= 2^63 or n < -2^63 then
        error("cql reply: bigint out of range: " .. n, 4)
    end
    local hi = floor(n / 2^32)
    local lo = n - hi * 2^32
    return be32(hi % 2^32) .. be32(lo)
end

local function cql_string(s)
    return be16(#s) .. s
end

local dbl = ffi.new("double[1]")
local flt = ffi.new("float[1]")

local function ieee(buf, n, v)
    buf[0] = v
    local p = ffi.cast("const uint8_t *", buf)
    local t = {}
    for i = n - 1, 0, -1 do               -- big-endian on the wire
        t[#t + 1] = char(p[i])
    end
    return concat(t)
end

-- the [bytes] of one cell of type `ty` holding Lua value v (nil: null)
local function cell(ty, v)
    if v == nil then
        return be32(0xffffffff)
    end
    local b
    if ty == "text" or ty == "varchar" or ty == "ascii" or ty == "blob" then
        b = v
    elseif ty == "int" then
        b = be32(v % 2^32)
    elseif ty == "smallint" then
        b = be16(v % 2^16)
    elseif ty == "tinyint" then
        b = char(v % 256)
    elseif ty == "bigint" or ty == "counter" or ty == "timestamp" then
        b = be64(v)
    elseif ty == "boolean" then
        b = char(v and 1 or 0)
    elseif ty == "double" then
        b = ieee(dbl, 8, v)
    elseif ty == "float" then
        b = ieee(flt, 4, v)
    elseif ty == "uuid" or ty == "timeuuid" then
        b = v                             -- 16 raw bytes
    else
        error("cql reply: unsupported column type " .. tostring(ty), 4)
    end
    return be32(#b) .. b
end

-- cell(type, v): one [bytes] value, also for requests (cql/request.lua)
_M.cell = cell
_M.be16, _M.be32 = be16, be32       -- for the request builders

-- an envelope answering request `req` with `opcode` and `body`
local function envelope(req, opcode, body)
    local version = band(req.data[0], 0x7f)
    local stream = req.argc % 65536
    local f, err = frame_from_cql(char(0x80 + version, 0) .. be16(stream)
                                  .. char(opcode) .. be32(#body) .. body)
    if not f then
        error("cql reply: " .. err, 3)
    end
    return f
end

function _M.ready(req)
    return envelope(req, OPCODE.READY, "")
end

-- AUTHENTICATE naming the authenticator class (answering a STARTUP)
function _M.authenticate(req, class)
    return envelope(req, OPCODE.AUTHENTICATE, cql_string(class))
end

-- AUTH_SUCCESS with no token (answering an AUTH_RESPONSE)
function _M.auth_success(req)
    return envelope(req, OPCODE.AUTH_SUCCESS, be32(0xffffffff))
end

-- error(req, code, message[, extra]): code is a number or a name of CODE;
-- extra holds the code's further fields, already encoded
function _M.error(req, code, msg, extra)
    if type(code) == "string" then
        code = _M.CODE[code]
               or error("cql reply: unknown error code " .. code, 2)
    end
    return envelope(req, OPCODE.ERROR, be32(code) .. cql_string(msg or "")
                               .. (extra or ""))
end

-- UNPREPARED for an EXECUTE: the driver prepares the statement again on
-- this connection and retries.  An EXECUTE whose id does not read gets a
-- PROTOCOL_ERROR instead (there is no id to name).
function _M.unprepared(req, msg)
    local ok, id = pcall(req.prepared_id, req)
    if not ok then
        return _M.error(req, "PROTOCOL_ERROR", "shotover: " .. id)
    end
    return _M.error(req, "UNPREPARED", msg, be16(#id) .. id)
end

function _M.void(req)
    return envelope(req, OPCODE.RESULT, be32(1))
end

function _M.set_keyspace(req, keyspace)
    return envelope(req, OPCODE.RESULT, be32(3) .. cql_string(keyspace))
end

-- supported(req, { CQL_VERSION = { "3.4.7" }, COMPRESSION = {} })
function _M.supported(req, options)
    local keys, parts = {}, {}
    for k in pairs(options) do
        keys[#keys + 1] = k
    end
    table.sort(keys)
    parts[1] = be16(#keys)
    for _, k in ipairs(keys) do
        parts[#parts + 1] = cql_string(k) .. be16(#options[k])
        for _, v in ipairs(options[k]) do
            parts[#parts + 1] = cql_string(v)
        end
    end
    return envelope(req, OPCODE.SUPPORTED, concat(parts))
end

-- rows(req, { keyspace = "ks", table = "t",
--             columns = { { "k", "int" }, { "v", "text" } },
--             rows = { { 1, "one" }, { 2, nil } } })
function _M.rows(req, spec)
    local cols = spec.columns
    local parts = { be32(2), be32(0x0001), be32(#cols),
                    cql_string(spec.keyspace or ""),
                    cql_string(spec.table or "") }
    for _, c in ipairs(cols) do
        local id = TYPE[c[2]] or error("cql reply: unsupported column type "
                                       .. tostring(c[2]), 2)
        parts[#parts + 1] = cql_string(c[1]) .. be16(id)
    end
    local rows = spec.rows or {}
    parts[#parts + 1] = be32(#rows)
    for _, r in ipairs(rows) do
        for i, c in ipairs(cols) do
            parts[#parts + 1] = cell(c[2], r[i])
        end
    end
    return envelope(req, OPCODE.RESULT, concat(parts))
end

-- The answer a backend-less sink gives: the handshake is accepted (OPTIONS
-- gets SUPPORTED, STARTUP and REGISTER get READY), requests get `answer`
-- (a function of the request), anything else a PROTOCOL_ERROR.
local OPTIONS, STARTUP = C.SH_CQL_OPTIONS, C.SH_CQL_STARTUP
local REGISTER, QUERY = C.SH_CQL_REGISTER, C.SH_CQL_QUERY
local EXECUTE, BATCH = C.SH_CQL_EXECUTE, C.SH_CQL_BATCH
local PREPARE = C.SH_CQL_PREPARE

function _M.without_backend(req, answer)
    local op = req.rtype
    if op == OPTIONS then
        return _M.supported(req, { CQL_VERSION = { "3.4.7" },
                                   COMPRESSION = {} })
    elseif op == STARTUP or op == REGISTER then
        return _M.ready(req)
    elseif op == QUERY or op == EXECUTE or op == BATCH then
        return answer(req)
    elseif op == PREPARE then
        return _M.error(req, "SERVER_ERROR",
                        "shotover: no backend to prepare statements on")
    end
    return _M.error(req, "PROTOCOL_ERROR", "shotover: unexpected "
                    .. req:opcode_name() .. " request")
end

return _M
