-- query_type_filter: lets through only requests of the allowed classes (or
-- all but the denied ones); the others get a protocol-correct error and go
-- nowhere.  Classes: read, write, read_write, schema_change, pubsub, use,
-- dcl, other.  See docs/transforms/query_type_filter.md.
local message = require "shotover.message"
local commands = require "shotover.redis.commands"
local cql_reply = require "shotover.cql.reply"
local parse = require("shotover.cql.parser").parse

local error_reply = message.error_reply
local upper = string.upper
local fmt = string.format

local CLASSES = { read = true, write = true, read_write = true,
                  schema_change = true, pubsub = true, use = true, dcl = true,
                  other = true }

local _M = {
    name = "query_type_filter",
    version = "0.1.0",
    capabilities = { lanes = true },
    schema = {
        allow = { type = "table" },
        deny = { type = "table" },
    },
}

local mt = { __index = {} }

function _M.check_config(conf)
    if (conf.allow == nil) == (conf.deny == nil) then
        return nil, "give exactly one of allow and deny"
    end
    for _, c in ipairs(conf.allow or conf.deny) do
        if not CLASSES[c] then
            return nil, fmt("unknown query type %q (one of read, write, "
                            .. "read_write, schema_change, pubsub, use, dcl, "
                            .. "other)", tostring(c))
        end
    end
    return true
end

function _M.new(conf)
    local set = {}
    for _, c in ipairs(conf.allow or conf.deny) do
        set[c] = true
    end
    return setmetatable({ set = set, allow = conf.allow ~= nil,
                          name = conf.name or "query_type_filter" }, mt)
end

-- CQL opcodes that carry no statement: the handshake and housekeeping
local CQL_PASS = { [0x01] = true, [0x05] = true, [0x0B] = true,
                   [0x0F] = true }

local function cql_class(ast)
    if ast.class == "write"
       and (ast.if_not_exists or ast.if_exists or ast.if_conditions)
    then
        return "read_write"                 -- a lightweight transaction
    end
    if ast.kind == "batch" then
        local class = "write"
        for _, st in ipairs(ast.statements or {}) do
            if cql_class(st) == "read_write" then
                class = "read_write"
            end
        end
        return class
    end
    return ast.class
end

-- The class of a request, nil when it is never filtered, or false and a
-- reply to send instead (an EXECUTE nobody here saw prepared).
local function classify(m, chain)
    if m.proto == 1 then
        return commands[upper(m:arg(1) or "")] or "other"
    end
    if CQL_PASS[m.rtype] then
        return nil
    end
    if m.rtype == 0x0D then                 -- BATCH: its strongest child
        local class = "write"
        for _, child in ipairs(m:batch_children()) do
            if not child.query then
                return false                -- prepared through no worker here
            end
            local ast = parse(child.query)
            if ast and cql_class(ast) == "read_write" then
                class = "read_write"
            end
        end
        return class
    end
    local ast, why = m:statement(chain.conn)
    if ast then
        return cql_class(ast)
    end
    if m.rtype == 0x0A and why ~= "statement does not parse" then
        return false                -- an EXECUTE no worker here prepared
    end
    return "other"
end

function mt.__index.transform(self, batch, chain)
    local n = batch.n
    local refused
    for i = 1, n do
        local m = batch[i]
        local class = classify(m, chain)
        local denied
        if class == false then
            refused = refused or {}
            refused[i] = cql_reply.unprepared(m, "shotover: "
                .. self.name .. " needs this statement prepared here")
        elseif class ~= nil then
            denied = self.set[class]
            if self.allow then
                denied = not denied
            end
            if denied then
                refused = refused or {}
                refused[i] = error_reply(m, fmt("shotover: %s: %s queries "
                                                .. "are not allowed",
                                                self.name, class), 0x2100)
            end
        end
    end
    if refused == nil then
        return chain:next(batch)
    end
    -- the rest go on; the replies are put back in request order
    return chain:next_except(batch, refused)
end

return _M
