-- The Redis protocol (RESP2, RESP3 passed through): everything the Lua side
-- knows about Redis messages that is not a transform's own business.  Its
-- codec is c/sh_resp.c; see shotover.protocols for the shape every protocol
-- module has, and docs/lua-api.md for the methods.
--
-- This module must not require shotover.message at load time (message
-- installs the methods below through shotover.protocols): what needs it is
-- required on first use.
local ffi = require "ffi"
local bit = require "bit"
local base = require "shotover.ffi"
local keys = require "shotover.redis.keys"
local command_ids = require "shotover.redis.command_ids"

local C = base.C
local ffi_string = ffi.string
local band, bor = bit.band, bit.bor
local byte = string.byte
local upper = string.upper
local type = type
local tostring = tostring
local error = error
local pairs = pairs
local require = require
local setmetatable = setmetatable

local CMD_PIN = C.SH_CMD_PIN
local CMD_STREAM = C.SH_CMD_STREAM
-- requests that must not wait for later ones: replies stream, the command
-- may block, or the connection ends
local CMD_URGENT = bor(C.SH_CMD_STREAM, C.SH_CMD_BLOCKING, C.SH_CMD_QUIT)

local err_out = ffi.new("const char *[1]")
local describe_cap = 8192
local describe_buf = ffi.new("char[?]", describe_cap)

-- reply types by the RESP type byte
local TYPES = {
    [43] = "simple", [45] = "error", [58] = "integer", [36] = "bulk",
    [42] = "array", [95] = "null", [35] = "boolean", [44] = "double",
    [40] = "bignum", [33] = "blob_error", [61] = "verbatim", [37] = "map",
    [126] = "set", [62] = "push", [124] = "attribute",
}
local T_ERROR, T_BLOB_ERROR = 45, 33

local _M = {
    _VERSION = "0.1.0",
    name = "redis",
    id = C.SH_PROTO_REDIS,
    -- replies match requests by their order: a connection runs one batch
    -- at a time and replies go back in request order
    lanes = false,
}

local message                   -- shotover.message, on first use
local function msg()
    message = message or require "shotover.message"
    return message
end

-- Message methods -------------------------------------------------------------

local methods = {}
_M.methods = methods

-- Requests

function methods.is_request(f)
    return f.argv ~= nil
end

function methods.nargs(f)
    return f.argc
end

-- A zero-copy view of argument i (1 is the command name): pointer, length.
function methods.arg_view(f, i)
    if f.argv == nil or i < 1 or i > f.argc then
        return nil, 0
    end
    local s = f.argv[i - 1]
    return f.data + s.off, s.len
end

function methods.arg(f, i)
    if f.argv == nil or i < 1 or i > f.argc then
        return nil
    end
    local s = f.argv[i - 1]
    return ffi_string(f.data + s.off, s.len)
end

function methods.command(f)
    return f.argv ~= nil and upper(methods.arg(f, 1)) or nil
end

-- Case-insensitive test of the command name, without making a string.
function methods.command_is(f, name)
    if f.argv == nil then
        return false
    end
    local s = f.argv[0]
    local n = #name
    if s.len ~= n then
        return false
    end
    local p = f.data + s.off
    for i = 0, n - 1 do
        if bor(p[i], 0x20) ~= bor(byte(name, i + 1), 0x20) then
            return false
        end
    end
    return true
end

-- The first key: the argument after the command name, for the commands
-- that have one there (which is nearly all of them).
function methods.key(f)
    if f.argv == nil or f.argc < 2 then
        return nil
    end
    return methods.arg(f, 2)
end

-- The keys of a request, by Redis' key specs (shotover.redis.keys): a new
-- list of strings.
methods.keys = keys.keys

-- The argument numbers of its keys into out[1..n]; returns n (no table made).
methods.key_positions = keys.positions

function methods.args(f)
    local t = {}
    for i = 1, (f.argv ~= nil and f.argc or 0) do
        t[i] = methods.arg(f, i)
    end
    return t
end

function methods.set_arg(f, i, v)
    if type(v) ~= "string" then
        v = tostring(v)
    end
    if C.sh_ffi_frame_set_arg(f, i - 1, v, #v, err_out) ~= 0 then
        error("set_arg: " .. ffi_string(err_out[0]), 2)
    end
end

-- Replies

function methods.type(f)
    return TYPES[f.rtype] or "unknown"
end

function methods.is_error(f)
    return f.rtype == T_ERROR or f.rtype == T_BLOB_ERROR
end

-- The payload of a simple string, error or integer reply, as a string.
function methods.line(f)
    if f.argv ~= nil or f.len < 3 then
        return nil
    end
    return ffi_string(f.data + 1, f.len - 3)
end

-- The reply decoded into Lua values (shotover.redis.decode, loaded on
-- first use).
local decode_frame
function methods.decode(f, opts)
    if decode_frame == nil then
        decode_frame = require("shotover.redis.decode").frame
    end
    return decode_frame(f, opts)
end

function _M.install(frame)
    for k, v in pairs(methods) do
        frame[k] = v
    end
end

-- A frame as text: RESP decoded by C (`["GET", "k"]`, `"v"`, `(nil)`).
function _M.describe(f)
    local n = C.sh_ffi_frame_describe(f, describe_buf, describe_cap)
    if n < 0 then
        return "(undecodable " .. f.len .. " bytes)"
    end
    return ffi_string(describe_buf, n < describe_cap and n or describe_cap - 1)
end

-- How traces, the REPL and logs show a message: raw.  Print messages
-- through shotover.redact, which hides credentials, never through these.
_M.show = _M.describe
_M.log_text = _M.describe

-- Replies -------------------------------------------------------------------

-- Is reply f an error (-ERR ..., !blob error)?
function _M.is_error_reply(f)
    return f.rtype == T_ERROR or f.rtype == T_BLOB_ERROR
end

-- An error reply to req: "-ERR msg" (msg as is when it starts with a code
-- like "WRONGTYPE ...").  `why` (the protocol-neutral reason other
-- protocols map to a code: "server", "overloaded", "unauthorized",
-- "protocol") has no wire form in RESP.
function _M.error_reply(req, text, why)           -- luacheck: no unused
    return msg().error_reply(req, text)
end

-- The reply to a request a filter cannot classify here (never happens for
-- Redis: every request names its command).
function _M.unknown_reply(req, text)
    return msg().error_reply(req, text)
end

-- Fixed replies (debug_returner, null): kind -> value -> make(req).  Redis
-- replies do not depend on the request, so one frame serves every slot.
_M.REPLY_KINDS = { simple = true, error = true, integer = true, bulk = true,
                   null = true }

function _M.fixed_reply(kind, value)
    local reply = _M.reply
    local f = kind == "null" and reply.null() or reply[kind](value)
    return function() return f end, f
end

-- The answer of a sink built without a worker (route-test, repl --dry):
-- every request gets the simple string +DRY (not a nil bulk, which a real
-- server also sends: a dry reply must never pass for data).  A reply frame
-- of its own per batch, not one shared constant: a trace tells which
-- sink's reply the client got by the frame's identity (a tee's copy
-- answers +DRY too).
function _M.dry(batch, chain)
    require("shotover.trace").dry(chain)
    return msg().constant_batch(batch.n, _M.reply.simple("DRY"))
end

-- Classification for transforms ---------------------------------------------

-- The query class of request m (query_type_filter, router): read, write,
-- read_write, pubsub, connection, admin or other (shotover.redis.commands,
-- by subcommand for CLIENT, CONFIG...); never nil (no Redis request is
-- exempt from filtering) nor false.
local classes = keys.classes
function _M.query_class(m)
    return classes(m)[1]
end

-- All the classes m is in, a shared list (do not modify it): its class,
-- then "admin" too for @admin/@dangerous commands that also read or write
-- (FLUSHALL, KEYS, SORT...).  A filter refusing any of them refuses m.
_M.query_classes = classes

-- The label query_counter counts m under: the command when Redis knows it.
function _M.query_label(m)
    return command_ids.name(m.cmd_id) or "other"
end

-- Handshake and housekeeping requests that filters, limits and holds must
-- let through: none in RESP (AUTH and HELLO are commands like others).
function _M.passthrough(m)                        -- luacheck: no unused
    return false
end

-- Requests whose replies are not one per request (SUBSCRIBE, MONITOR...).
function _M.streams(m)
    return band(m.cmd, CMD_STREAM) ~= 0
end

-- Requests that must go on at once rather than wait for later ones:
-- streaming, blocking, QUIT.
function _M.urgent(m)
    return band(m.cmd, CMD_URGENT) ~= 0
end

-- Requests that tie the client to a dedicated backend connection (MULTI,
-- SELECT, AUTH, ...): whatever follows must reach the same one.
function _M.pins(m)
    return band(m.cmd, CMD_PIN) ~= 0
end

-- Units of work a request costs a rate limit.
function _M.cost(m)                               -- luacheck: no unused
    return 1
end

-- reply builders (shotover.redis.reply), the decoder and query_info load
-- on first use
setmetatable(_M, { __index = function(t, k)
    if k == "reply" then
        t.reply = require "shotover.redis.reply"
        return t.reply
    elseif k == "decode" then
        t.decode = require "shotover.redis.decode"
        return t.decode
    elseif k == "query_info" then
        t.query_info = require("shotover.redis.query_info").query_info
        return t.query_info
    end
    return nil
end })

return _M
