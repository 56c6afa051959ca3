-- The Cassandra protocol (CQL native protocol v3-v5): everything the Lua
-- side knows about CQL messages that is not a transform's own business.
-- Its codec is c/sh_cql.c; the message methods are in shotover.cql.message,
-- the reply builders in shotover.cql.reply, the statement parser in
-- shotover.cql.parser.  See shotover.protocols for the shape every protocol
-- module has.
--
-- This module must not require shotover.message at load time (message
-- installs the methods through shotover.protocols): what needs it is
-- required on first use.
local bit = require "bit"
local base = require "shotover.ffi"
local types = require "shotover.cql.types"

local C = base.C
local band = bit.band
local concat = table.concat
local fmt = string.format
local pcall = pcall
local tostring = tostring
local type = type
local ipairs = ipairs
local require = require
local setmetatable = setmetatable

local OP_STARTUP, OP_OPTIONS = C.SH_CQL_STARTUP, C.SH_CQL_OPTIONS
local OP_QUERY, OP_PREPARE = C.SH_CQL_QUERY, C.SH_CQL_PREPARE
local OP_EXECUTE, OP_BATCH = C.SH_CQL_EXECUTE, C.SH_CQL_BATCH
local OP_REGISTER, OP_AUTH_RESPONSE = C.SH_CQL_REGISTER, C.SH_CQL_AUTH_RESPONSE

local _M = {
    _VERSION = "0.1.0",
    name = "cassandra",
    id = C.SH_PROTO_CQL,
    -- replies carry their request's stream id: a connection's batches may
    -- run at once (lanes) and replies go back in any order
    lanes = true,
    -- the message methods: opcode_name, stream, query, statement, rows...
    install = require "shotover.cql.message",
}

-- m:query_info(chain): shotover.cql.query_info, loaded on first use
function _M.query_info(m, chain)
    local info = require("shotover.cql.query_info").info
    _M.query_info = info
    return info(m, chain)
end

local message                   -- shotover.message, on first use
local function msg()
    message = message or require "shotover.message"
    return message
end

-- ERROR codes for the protocol-neutral reasons transforms give
-- (native_protocol_v4.spec section 9)
local CODES = {
    server = C.SH_CQL_SERVER_ERROR,
    protocol = C.SH_CQL_PROTOCOL_ERROR,
    overloaded = C.SH_CQL_OVERLOADED,
    unauthorized = 0x2100,              -- UNAUTHORIZED (not in the header:
                                        -- the C core never sends it)
}

local OPCODES = {
    [0] = "ERROR", "STARTUP", "READY", "AUTHENTICATE", nil, "OPTIONS",
    "SUPPORTED", "QUERY", "RESULT", "PREPARE", "EXECUTE", "REGISTER", "EVENT",
    "BATCH", "AUTH_CHALLENGE", "AUTH_RESPONSE", "AUTH_SUCCESS",
}

-- "CQL v4 QUERY stream 3, 52 bytes"
function _M.describe(f)
    return fmt("CQL v%d %s stream %d, %d bytes", band(f.data[0], 0x7f),
               OPCODES[f.rtype] or ("opcode " .. f.rtype), f.argc, f.len)
end

-- How a message is logged (debug_printer): the header, and the statement
-- a request runs, passed through `filter` (shotover.redact's statement:
-- text -> the text to show).  Raw without a filter: print messages
-- through shotover.redact, never through this.
function _M.log_text(m, filter)
    local d = _M.describe(m)
    local ok, q = pcall(m.query, m)
    if ok and q then
        return d .. ": " .. (filter and filter(q) or q)
    end
    local st = require("shotover.cql.session").prepared(m)
    if st then
        return d .. " (prepared): " .. (filter and filter(st.query)
                                        or st.query)
    end
    return d
end

-- Replies -------------------------------------------------------------------

-- Is reply f an ERROR?
function _M.is_error_reply(f)
    return f.rtype == C.SH_CQL_ERROR and band(f.data[0], 0x80) ~= 0
end

-- An ERROR on req's stream: code by reason ("server" by default,
-- "overloaded", "unauthorized", "protocol") or a CQL error code number.
function _M.error_reply(req, text, why)
    local code = type(why) == "number" and why or CODES[why or "server"]
                 or C.SH_CQL_SERVER_ERROR
    return msg().error_reply(req, text, code)
end

-- The reply to a request a filter cannot classify here: an EXECUTE whose
-- PREPARE no worker of this shotover saw gets UNPREPARED, so the driver
-- prepares it again (here) and retries.
function _M.unknown_reply(req, text)
    return _M.reply.unprepared(req, text)
end

-- Fixed replies (debug_returner, null): error (an ERROR with `code`) or
-- null (RESULT Void), with the handshake accepted; they carry the
-- request's stream, so they are made per request.
_M.REPLY_KINDS = { error = true, null = true }

function _M.fixed_reply(kind, value, code)
    local reply = _M.reply
    local answer
    if kind == "error" then
        answer = function(req) return reply.error(req, code, value) end
    elseif kind == "null" then
        answer = reply.void
    else
        return nil, fmt("a cassandra reply is error or null, not %s",
                        tostring(kind))
    end
    local without_backend = reply.without_backend
    return function(req) return without_backend(req, answer) end
end

-- The answer of a sink built without a worker (route-test, repl --dry):
-- the handshake is accepted (SUPPORTED, READY), USE gets RESULT
-- Set_keyspace (so later unqualified statements resolve), every other
-- QUERY, EXECUTE and BATCH gets RESULT Void, PREPARE an error.
local function dry_answer(req, chain)
    local ast = req.rtype == OP_QUERY and req:statement(chain.conn)
    if ast and ast.kind == "use" and ast.keyspace then
        return _M.reply.set_keyspace(req, ast.keyspace)
    end
    return _M.reply.void(req)
end

function _M.dry(batch, chain)
    require("shotover.trace").dry(chain)
    local reply = _M.reply
    local resp = msg().new_batch(batch.n)
    for i = 1, batch.n do
        local req = batch[i]
        resp:set(i, reply.without_backend(req, function(r)
            return dry_answer(r, chain)
        end))
    end
    return resp
end

-- Classification for transforms ---------------------------------------------

-- Handshake and housekeeping (STARTUP, OPTIONS, REGISTER, AUTH_RESPONSE):
-- a driver waits for their answer and they carry no statement, so filters,
-- limits and holds let them through.
local PASS = { [OP_STARTUP] = true, [OP_OPTIONS] = true,
               [OP_REGISTER] = true, [OP_AUTH_RESPONSE] = true }

function _M.passthrough(m)
    return PASS[m.rtype] == true
end

-- REGISTER: its EVENTs come whenever the node sends them, not one per
-- request (a copy would make them reach the client twice).
function _M.streams(m)
    return m.rtype == OP_REGISTER
end

-- CQL requests never need to go on before later ones: nothing blocks.
function _M.urgent(m)                             -- luacheck: no unused
    return false
end

-- A CQL connection has one backend connection per client already.
function _M.pins(m)                               -- luacheck: no unused
    return false
end

-- A BATCH costs one unit per statement, the handshake nothing.
function _M.cost(m)
    local op = m.rtype
    if op == OP_BATCH then
        local ok, n = pcall(m.batch_size, m)
        return ok and n or 1                -- (one the node refuses)
    end
    return PASS[op] and 0 or 1
end

local function statement_class(ast)
    if ast.class == "write"
       and (ast.if_not_exists or ast.if_exists or ast.if_conditions)
    then
        return "read_write"                 -- a lightweight transaction
    end
    if ast.kind == "batch" then
        local class = "write"
        for _, st in ipairs(ast.statements or {}) do
            if statement_class(st) == "read_write" then
                class = "read_write"
            end
        end
        return class
    end
    return ast.class
end

-- The query class of request m: read, write, read_write, schema_change,
-- use, dcl or other; nil for the handshake (never filtered); false when it
-- cannot be told here (an EXECUTE, or a BATCH child, prepared through no
-- worker of this shotover: answer it with unknown_reply).
function _M.query_class(m, chain)
    local op = m.rtype
    if PASS[op] then
        return nil
    end
    if op == OP_BATCH then                  -- its strongest child
        local parse = require("shotover.cql.parser").cached
        local class = "write"
        local ok, children = pcall(m.batch_children, m)
        if not ok then
            return "other"                  -- the node refuses it
        end
        for _, child in ipairs(children) do
            if not child.query then
                return false
            end
            local ast = parse(child.query)
            if ast and statement_class(ast) == "read_write" then
                class = "read_write"
            end
        end
        return class
    end
    local ast, why = m:statement(chain.conn)
    if ast then
        return statement_class(ast)
    end
    if op == OP_EXECUTE and why == require("shotover.cql.session").UNKNOWN
    then
        return false                -- prepared through no worker here
    end
    return "other"
end

-- The label query_counter counts m under: the statement kind of a QUERY,
-- PREPARE ("prepare select") or EXECUTE, else the opcode name.
function _M.query_label(m, chain)
    local op = m.rtype
    if op == OP_QUERY or op == OP_PREPARE or op == OP_EXECUTE then
        local ast = m:statement(chain.conn)
        if ast then
            return op == OP_PREPARE and "prepare " .. ast.kind or ast.kind
        end
        return "unparsed"
    end
    return m:opcode_name()
end

-- How a message is shown (traces, REPL) ------------------------------------

local function hex(s)
    return (s:gsub(".", function(c) return fmt("%02x", c:byte()) end))
end

local function show_value(v)
    if v == nil then
        return "null"
    elseif type(v) == "string" then
        if v:find("[^%g ]") then
            return "0x" .. hex(v)
        end
        return fmt("%q", v)
    end
    return tostring(v)
end

local RESULT_KINDS = { "Void", "Rows", "Set_keyspace", "Prepared",
                       "Schema_change" }

-- A RESULT as its kind (and row count, or keyspace); raises when its body
-- does not read.
local function show_result(f)
    local p, n = f:body_view()
    local at = require("shotover.cql.session").response_start(f, p, n)
    local kind = RESULT_KINDS[types.s32(p, at, n, "a result kind")] or "?"
    if kind == "Rows" then
        local ok, rows = pcall(f.rows, f)
        if ok and rows then
            return fmt("RESULT Rows (%d row%s)", #rows,
                       #rows == 1 and "" or "s")
        end
    elseif kind == "Set_keyspace" then
        return "RESULT Set_keyspace " .. types.cql_string(p, at + 4, n)
    end
    return "RESULT " .. kind
end

-- A request as opcode, statement and values; a response as opcode and
-- what it says (error code and message, result kind and row count).  The
-- statement goes through `filter` (shotover.redact's statement: text ->
-- the text to show, its secrets, whether to hide the values).  Raw
-- without a filter: print messages through shotover.redact.
function _M.show(f, filter)
    local op = f:opcode_name()
    if band(f.data[0], 0x80) == 0 then
        if op == "QUERY" or op == "PREPARE" or op == "EXECUTE" then
            local ok, text = pcall(f.query, f)
            -- an EXECUTE of a statement not known here may set a password
            local hide = false
            if op == "EXECUTE" then
                local st = require("shotover.cql.session").prepared(f)
                text = st and st.query or "(prepared elsewhere)"
                hide = filter ~= nil and st == nil
            end
            if filter and ok and text and not hide then
                local _
                text, _, hide = filter(text)
            end
            local out = op .. " " .. fmt("%q", tostring(text))
            local okv, vals = pcall(f.values, f)
            if okv and vals and #vals > 0 then
                local t = {}
                for k = 1, #vals do
                    t[k] = hide and require("shotover.redact").MARK
                           or show_value(vals[k])
                end
                out = out .. " [" .. concat(t, ", ") .. "]"
            end
            return ok and out or op
        end
        return op
    end
    if op == "ERROR" then
        local ok, e = pcall(f.error_info, f)
        if ok and e then
            return fmt("ERROR 0x%04x %s", e.code, e.message)
        end
    elseif op == "RESULT" then
        local ok, text = pcall(show_result, f)
        if ok then
            return text
        end
    end
    return op
end

-- reply builders (shotover.cql.reply) load on first use
setmetatable(_M, { __index = function(t, k)
    if k == "reply" then
        t.reply = require "shotover.cql.reply"
        return t.reply
    end
    return nil
end })

return _M
