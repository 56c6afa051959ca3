-- debug_printer: logs every request and its reply at info level, then
-- passes the batch on unchanged.  Credentials are never logged: every
-- message is printed through shotover.redact (an AUTH's password, a
-- CONFIG GET requirepass's answer, a CQL AUTH_RESPONSE... show as
-- <redacted>).
local log = require "shotover.log"
local redact = require "shotover.redact"

local message = redact.message

local _M = { name = "debug_printer", version = "0.1.0", schema = {},
             capabilities = { lanes = true } }

local mt = { __index = {} }

function _M.new(conf)
    return setmetatable({ name = conf.name or "debug_printer" }, mt)
end

function mt.__index.transform(self, batch, chain)
    local enabled = log.enabled(log.INFO)
    if enabled then
        for i = 1, batch.n do
            log.info("%s: request %d/%d: %s", self.name, i, batch.n,
                     message(batch[i], nil, "log"))
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
            log.info("%s: reply %d/%d: %s", self.name, i, resp.n,
                     message(resp[i], batch[i], "log"))
        end
    end
    return resp
end

return _M
