-- cassandra: the sink for one Cassandra node.  Each client connection gets
-- its own backend connection; the client's handshake and stream ids pass
-- through untouched, replies are matched by stream id and events relayed.
-- See docs/transforms/cassandra.md.
local ffi = require "ffi"
local base = require "shotover.ffi"
local message = require "shotover.message"
local schema = require "shotover.schema"
local session = require "shotover.cql.session"

local C = base.C
local AGAIN = base.AGAIN
local new_batch = message.new_batch
local setmetatable = setmetatable

local _M = {
    name = "cassandra",
    version = "0.1.0",
    terminal = true,
    schema = {
        remote = { type = "hostport", required = true },
        connect_timeout_ms = { type = "integer", min = 1, default = 3000 },
        request_timeout_ms = { type = "integer", min = 0, default = 12000 },
    },
}

local mt = { __index = {} }

function _M.check_config(conf, ctx)
    if ctx and ctx.protocol and ctx.protocol ~= "cassandra" then
        return nil, "the cassandra sink needs a cassandra source, not "
                    .. tostring(ctx.protocol)
    end
    return true
end

local pool_out = ffi.new("sh_cql_pool_t *[1]")
local err_out = ffi.new("const char *[1]")

function _M.new(conf, env)
    local self = setmetatable({ name = conf.name or "cassandra" }, mt)
    if env.worker ~= nil then
        local host, port = schema.parse_hostport(conf.remote)
        local cc = ffi.new("sh_cql_conf_t", {
            host = host, port = port,
            connect_timeout_ms = conf.connect_timeout_ms,
            request_timeout_ms = conf.request_timeout_ms,
            name = self.name,
        })
        if C.sh_ffi_cql_pool_new(env.worker, cc, pool_out, err_out) ~= 0 then
            error((env.path or "chain") .. ": cassandra sink: "
                  .. ffi.string(err_out[0]), 0)
        end
        self.pool = pool_out[0]
    end
    return self
end

local learn = session.learn

function mt.__index.transform(self, batch, chain)
    local resp
    if self.pool == nil then                -- no worker: see shotover.dry
        resp = require("shotover.dry").cassandra(batch, chain)
        learn(chain.conn, batch, resp)
        return resp
    end
    resp = new_batch(batch.n)
    if C.sh_ffi_cql_send(self.pool, chain.c, batch, resp) == AGAIN then
        chain:wait()
    end
    -- USE and prepared statements, for the transforms in front
    learn(chain.conn, batch, resp)
    return resp
end

return _M
