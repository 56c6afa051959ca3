-- m:query_info(chain) for Redis requests: the protocol-independent view of
-- a request that transforms such as `kafka` read (docs/lua-api.md,
-- "m:query_info()").  Built from the command's class (shotover.redis.
-- commands, through keys.classes) and its key specs (m:keys()); a fresh
-- table per call: this is for transforms that look at writes, not for
-- every request of a hot path.
local keys = require "shotover.redis.keys"
local meta = require "shotover.redis.command_meta"
local command_ids = require "shotover.redis.command_ids"

local _M = { _VERSION = "0.1.0" }

-- the class of a command (commands.lua) -> the query_info kind
local KINDS = {
    read = "read", write = "write", read_write = "write",
    pubsub = "pubsub", connection = "connection", admin = "admin",
    other = "other",
}

-- Whole-key deletes: commands whose every key spec removes its key (DEL,
-- UNLINK), and GETDEL, whose spec Redis marks RW with a delete it does not
-- say in the flag.  Built once from the generated metadata.
local DELETES = { GETDEL = true }
for name, specs in pairs(meta.keys) do
    if specs and #specs > 0 then
        local all = true
        for _, s in ipairs(specs) do
            all = all and s[#s] == "RM"
        end
        if all and not name:find("|", 1, true) then
            DELETES[name] = true
        end
    end
end

local positions = {}

-- The database the client uses: the redis sink records a successful
-- SELECT in chain.conn.redis_db.
local function db_of(chain)
    local conn = chain and chain.conn
    return conn and conn.redis_db or 0
end

function _M.query_info(m, chain)
    if m.argv == nil or m.argc < 1 then
        return nil
    end
    local op = command_ids.name(m.cmd_id) or m:command()
    local kind = KINDS[keys.classes(m)[1]] or "other"
    if kind == "write" and DELETES[op] then
        kind = "delete"
    elseif op == "SELECT" then
        kind = "use"
    end
    -- keys in argument order; the rest (the command name aside) are values
    local n = keys.positions(m, positions)
    local ks, values = {}, {}
    local k = 1
    for i = 2, m.argc do
        if k <= n and positions[k] == i then
            ks[#ks + 1] = m:arg(i)
            k = k + 1
        else
            values[#values + 1] = m:arg(i)
        end
    end
    local db = db_of(chain)
    return {
        protocol = "redis", kind = kind, op = op, db = db,
        namespace = "db" .. db, keys = ks, values = values,
        -- an unknown command's keys cannot be told
        complete = m.cmd_id ~= 0,
    }
end

return _M
