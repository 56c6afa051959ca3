-- query_type_filter: lets through only requests of the allowed classes (or
-- all but the denied ones); the others get a protocol-correct error and go
-- nowhere.  Classes: read, write, read_write, schema_change, pubsub, use,
-- dcl, connection, admin, other.  A request in several classes (a Redis
-- FLUSHALL is a write and admin) passes only if each of them would.  See
-- docs/transforms/query_type_filter.md.
local protocols = require "shotover.protocols"
local schema = require "shotover.schema"

local by_id = protocols.by_id
local fmt = string.format

local CLASSES = { read = true, write = true, read_write = true,
                  schema_change = true, pubsub = true, use = true, dcl = true,
                  connection = true, admin = true, other = true }
local CLASS_NAMES = "read, write, read_write, schema_change, pubsub, use, "
                    .. "dcl, connection, admin, other"

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

-- the classes each protocol's requests can have (see the classification
-- below and docs/transforms/query_type_filter.md)
local PROTOCOL_CLASSES = {
    redis = { "read", "write", "read_write", "pubsub", "connection",
              "admin", "other" },
    cassandra = { "read", "write", "read_write", "schema_change", "use",
                  "dcl", "other" },
}

-- every problem at once: true, or nil and the list.  A class that the
-- chain's protocol never gives (schema_change for Redis, pubsub for CQL)
-- is an error: the list would not do what it says.
function _M.check_config(conf, ctx)
    local errs = {}
    if (conf.allow == nil) == (conf.deny == nil) then
        errs[#errs + 1] = "give exactly one of allow and deny"
    end
    local key = conf.allow and "allow" or "deny"
    local classes = ctx and PROTOCOL_CLASSES[ctx.protocol]
    local has = {}
    for _, c in ipairs(classes or {}) do
        has[c] = true
    end
    for i, c in ipairs(conf.allow or conf.deny or {}) do
        if not CLASSES[c] then
            errs[#errs + 1] = fmt("%s[%d]: unknown query type %s (one of "
                                  .. "%s)", key, i, schema.show(c),
                                  CLASS_NAMES)
        elseif classes and not has[c] then
            errs[#errs + 1] = fmt("%s[%d]: %s requests are never %q (their "
                                  .. "classes: %s)", key, i, ctx.protocol, c,
                                  table.concat(classes, ", "))
        end
    end
    if #errs > 0 then
        return nil, errs
    end
    return true
end

function _M.new(conf, env)
    local set = {}
    for _, c in ipairs(conf.allow or conf.deny) do
        set[c] = true
    end
    -- "other" still names what it did before connection and admin were
    -- classes of their own, so a list written then means what it meant
    -- (a deny list with "other" keeps refusing SHUTDOWN)
    if set.other then
        set.connection, set.admin = true, true
    end
    return setmetatable({ set = set, allow = conf.allow ~= nil,
                          name = conf.name or "query_type_filter",
                          proto = protocols.of_env(env),
                          verdicts = {} }, mt)
end

-- The class of list `classes` (a protocol's query_classes) that makes a
-- request refused, or false: precomputed once per shared list.
local function verdict(self, classes)
    local v = self.verdicts[classes]
    if v == nil then
        v = false
        for i = 1, #classes do
            local c = classes[i]
            local denied = self.set[c]
            if self.allow then
                denied = not denied
            end
            if denied then
                v = c
                break
            end
        end
        self.verdicts[classes] = v
    end
    return v
end

function mt.__index.transform(self, batch, chain)
    local n = batch.n
    if n == 0 then
        return chain:next(batch)
    end
    -- the class of a request, nil when it is never filtered (a handshake),
    -- or false when it cannot be told here (an EXECUTE nobody here saw
    -- prepared): see query_class in shotover.protocols.*
    local proto = self.proto or by_id(batch[1].proto)
    local query_class = proto.query_class
    -- protocols whose requests can be in several classes (Redis) give
    -- them as shared lists
    local query_classes = proto.query_classes
    local refused
    for i = 1, n do
        local m = batch[i]
        local bad                       -- the class m is refused for
        if query_classes then
            bad = verdict(self, query_classes(m, chain))
        else
            local class = query_class(m, chain)
            if class == false then
                refused = refused or {}
                refused[i] = proto.unknown_reply(m, "shotover: "
                    .. self.name .. " needs this statement prepared here")
            elseif class ~= nil then
                local denied = self.set[class]
                if self.allow then
                    denied = not denied
                end
                bad = denied and class
            end
        end
        if bad then
            refused = refused or {}
            refused[i] = proto.error_reply(m, fmt("shotover: %s: %s queries "
                                                  .. "are not allowed",
                                                  self.name, bad),
                                           "unauthorized")
        end
    end
    if refused == nil then
        return chain:next(batch)
    end
    -- the rest go on; the replies are put back in request order
    return chain:next_except(batch, refused)
end

return _M
