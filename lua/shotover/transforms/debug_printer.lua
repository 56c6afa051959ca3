-- debug_printer: logs every request and its reply at info level, then
-- passes the batch on unchanged.  Commands that may carry credentials are
-- logged without their arguments.
local log = require "shotover.log"
local protocols = require "shotover.protocols"

local by_id = protocols.by_id

local _M = { name = "debug_printer", version = "0.1.0", schema = {},
             capabilities = { lanes = true } }

local mt = { __index = {} }

-- How a message is logged is its protocol's business (log_text in
-- shotover.protocols.*): secrets never appear in logs.
local function show(m)
    return by_id(m.proto).log_text(m)
end

function _M.new(conf)
    return setmetatable({ name = conf.name or "debug_printer" }, mt)
end

function mt.__index.transform(self, batch, chain)
    local enabled = log.enabled(log.INFO)
    if enabled then
        for i = 1, batch.n do
            log.info("%s: request %d/%d: %s", self.name, i, batch.n,
                     show(batch[i]))
        end
    end
    local resp = chain:next(batch)
    local conn = chain.conn
    if enabled and conn.keyspace ~= conn.debug_printer_keyspace then
        conn.debug_printer_keyspace = conn.keyspace
        log.info("%s: session keyspace is now %s", self.name,
                 tostring(conn.keyspace))
    end
    if enabled and resp ~= nil then
        for i = 1, resp.n do
            local f = resp[i]
            log.info("%s: reply %d/%d: %s", self.name, i, resp.n,
                     f and f:describe() or "(none)")
        end
    end
    return resp
end

return _M
