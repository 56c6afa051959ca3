-- Messages and batches: FFI metatypes over the C frames and batches, so a
-- message is a pointer to the codec's struct and nothing is copied until a
-- transform asks for a Lua string.
local ffi = require "ffi"
local bit = require "bit"
local base = require "shotover.ffi"
local protocols = require "shotover.protocols"

local C = base.C
local ffi_string = ffi.string
local ffi_gc = ffi.gc
local type = type
local error = error
local by_id = protocols.by_id

local DECLINED = base.DECLINED
local FRAME_MODIFIED = C.SH_FRAME_MODIFIED
local FRAME_NOREPLY = C.SH_FRAME_NOREPLY

local frame_out = ffi.new("sh_frame_t *[1]")
local batch_out = ffi.new("sh_batch_t *[1]")
local err_out = ffi.new("const char *[1]")

local _M = { _VERSION = "0.1.0" }

-- methods of every message (sh_frame_t)
local frame = {}
_M.frame_methods = frame

-- Own a frame C handed us outside a batch (specs, transform set-up).
local function adopt_frame(rc)
    if rc == DECLINED then
        return ffi_gc(frame_out[0], C.sh_ffi_frame_unref)
    elseif rc ~= 0 then
        return nil, ffi_string(err_out[0])
    end
    return frame_out[0]
end

-- A message from RESP bytes (exactly one value).
function _M.frame_from_resp(s)
    return adopt_frame(C.sh_ffi_frame_new(base.PROTO_REDIS, s, #s, frame_out,
                                          err_out))
end

-- A message from the bytes of one CQL envelope (header and body): a
-- string, or a pointer to len bytes (copied).
function _M.frame_from_cql(s, len)
    return adopt_frame(C.sh_ffi_frame_new(base.PROTO_CQL, s, len or #s,
                                          frame_out, err_out))
end

-- A Redis command from Lua strings: command{"SET", "k", "v"}.
local args_buf, lens_buf, args_cap = nil, nil, 0
function _M.command(args)
    local n = #args
    if n > args_cap then
        args_cap = n * 2
        args_buf = ffi.new("const uint8_t *[?]", args_cap)
        lens_buf = ffi.new("size_t[?]", args_cap)
    end
    for i = 1, n do
        local a = args[i]
        if type(a) ~= "string" then
            a = tostring(a)
        end
        args_buf[i - 1] = a
        lens_buf[i - 1] = #a
    end
    local f, err = adopt_frame(C.sh_ffi_frame_new_command(args_buf, lens_buf,
                                                           n, frame_out,
                                                           err_out))
    -- keep no pointers into the Lua strings
    for i = 0, n - 1 do
        args_buf[i] = nil
    end
    return f, err
end

-- Batches reach Lua as struct references (p[0]), not pointers: indexing a
-- pointer with a number is pointer arithmetic in the FFI, while a reference
-- sends batch[i] to the metatype's __index.  C functions taking
-- sh_batch_t * accept the reference as is.
function _M.new_batch(n)
    local rc = C.sh_ffi_batch_new(n or 0, batch_out)
    local b = batch_out[0][0]
    if rc == DECLINED then
        return ffi_gc(b, C.sh_ffi_batch_unref)
    end
    return b
end

-- An error reply to request `req`, in its protocol: Redis "-ERR msg" (msg
-- as is when it starts with a code like "WRONGTYPE ...") or a CQL ERROR with
-- `code` (default SERVER_ERROR) on the request's stream.
local CQL_SERVER_ERROR = C.SH_CQL_SERVER_ERROR
function _M.error_reply(req, msg, code)
    return adopt_frame(C.sh_ffi_frame_error(req, code or CQL_SERVER_ERROR,
                                            msg, frame_out))
end

-- One error reply per request of batch, each in its request's protocol (a
-- CQL ERROR carries its request's stream id).
function _M.error_batch(batch, msg, code)
    local n = batch.n
    local resp = _M.new_batch(n)
    for i = 1, n do
        resp:set(i, _M.error_reply(batch[i], msg, code))
    end
    return resp
end

-- A batch of n slots all holding message f (one reference each): the
-- responses of sinks that answer everything alike.
function _M.constant_batch(n, f)
    local b = _M.new_batch(n)
    for i = 1, n do
        b:set(i, f)
    end
    return b
end

-- The batch view of an sh_batch_t * the C core handed over.
function _M.batch(p)
    return p[0]
end

function frame.raw(f)
    return ffi_string(f.data, f.len)
end

-- The name of the message's protocol ("redis", "cassandra").
function frame.protocol(f)
    return by_id(f.proto).name
end

function frame.is_modified(f)
    return bit.band(f.flags, FRAME_MODIFIED) ~= 0
end

function frame.is_noreply(f)
    return bit.band(f.flags, FRAME_NOREPLY) ~= 0
end

-- One line of text, as the message's protocol describes it, with its
-- credentials hidden (shotover.redact: an AUTH's password, a CONFIG GET
-- requirepass's answer...).
local redact_message
function frame.describe(f)
    if bit.band(f.flags, FRAME_NOREPLY) ~= 0 then
        return "(no reply)"             -- a slot that writes nothing
    end
    redact_message = redact_message or require("shotover.redact").message
    return redact_message(f, nil, "describe")
end

-- The protocol-independent view of a request (docs/lua-api.md,
-- "m:query_info()"): its kind, namespace, keys and the values it writes, as
-- the message's protocol reads them (its module's `query_info`); nil for a
-- reply, a handshake, or a protocol without one.
function frame.query_info(f, chain)
    local qi = by_id(f.proto).query_info
    return qi and qi(f, chain) or nil
end

-- Protocol methods ------------------------------------------------------------

-- Every protocol's methods go on every message (one FFI metatype): Redis
-- requests and replies (shotover.protocols.redis), CQL envelopes
-- (shotover.cql.message), and those of protocols loaded later.
protocols.attach(frame)
ffi.metatype("sh_frame_t", { __index = frame })

-- Batches ---------------------------------------------------------------------

local batch = {}
_M.batch_methods = batch

function batch.set(b, i, f)
    if C.sh_ffi_batch_set(b, i - 1, f) ~= 0 then
        error("batch:set: index " .. i .. " out of range 1.." .. b.n, 2)
    end
end

function batch.push(b, f)
    C.sh_ffi_batch_push(b, f)
end

function batch.get(b, i)
    if i < 1 or i > b.n then
        return nil
    end
    local f = b.frames[i - 1]
    if f == nil then
        return nil
    end
    return f
end

local batch_get = batch.get

ffi.metatype("sh_batch_t", {
    __len = function(b) return b.n end,
    __index = function(b, k)
        if type(k) == "number" then
            return batch_get(b, k)
        end
        return batch[k]
    end,
})

return _M
