-- What `shotover route-test` and `shotover repl` share: loading a config as
-- `check` does, building its chains dry (no worker: sinks answer without a
-- backend, see dry() in shotover.protocols.*), turning typed text into
-- requests, and running one request through a chain with a trace.
local chain = require "shotover.chain"
local config = require "shotover.config"
local protocols = require "shotover.protocols"
local message = require "shotover.message"
local cql_request = require "shotover.cql.request"
local trace = require "shotover.trace"

local concat = table.concat
local fmt = string.format
local char = string.char
local tonumber = tonumber

local _M = { _VERSION = "0.1.0" }

-- Split a Redis command line into arguments like redis-cli does: blanks
-- separate, "double quotes" take \n \r \t \" \\ \xHH escapes, 'single
-- quotes' take \' only.  Returns the list, or nil and a message.
function _M.split(line)
    local args, i, n = {}, 1, #line
    while true do
        i = line:find("%S", i)
        if i == nil then
            return args
        end
        local c = line:sub(i, i)
        local buf = {}
        if c == '"' or c == "'" then
            local q = c
            i = i + 1
            while true do
                if i > n then
                    return nil, "unbalanced quotes"
                end
                c = line:sub(i, i)
                if c == "\\" and i < n then
                    local e = line:sub(i + 1, i + 1)
                    if q == "'" then
                        buf[#buf + 1] = e == "'" and "'" or "\\" .. e
                        i = i + 2
                    elseif e == "x" and line:sub(i + 2, i + 3):match("^%x%x$")
                    then
                        buf[#buf + 1] = char(tonumber(line:sub(i + 2, i + 3),
                                                      16))
                        i = i + 4
                    else
                        buf[#buf + 1] = ({ n = "\n", r = "\r", t = "\t",
                                           a = "\a", b = "\b" })[e] or e
                        i = i + 2
                    end
                elseif c == q then
                    i = i + 1
                    if i <= n and not line:sub(i, i):match("%s") then
                        return nil, "closing quote must be followed by a "
                                    .. "space"
                    end
                    break
                else
                    buf[#buf + 1] = c
                    i = i + 1
                end
            end
        else
            local j = line:find("%s", i) or n + 1
            buf[1] = line:sub(i, j - 1)
            i = j
        end
        args[#args + 1] = concat(buf)
    end
end

-- Load and validate a config file.  Returns conf or nil and the error text.
function _M.load_config(path)
    local conf, errs = config.load(path)
    if not conf then
        return nil, concat(errs, "\n")
    end
    return conf
end

-- The dry chains of every source: { [i] = src, by_name = { name = src } },
-- each src = { name, protocol, chain, ctx }.  One context per source: the
-- requests of a case file (or a repl session) are one client session.
function _M.build_dry(conf)
    local out = { by_name = {} }
    for i, src in ipairs(conf.sources) do
        local ch = chain.build(src.chain, {
            worker = nil, protocol = src.protocol, name = src.name,
            path = fmt("sources[%d].chain", i), listen = src.listen,
        })
        local s = { name = src.name, protocol = src.protocol, chain = ch,
                    ctx = ch:context(nil), listen = src.listen }
        out[i] = s
        out.by_name[src.name] = s
    end
    return out
end

-- Requests from what a user typed, by protocol: a Redis command (a line
-- to split, or a list of arguments) or a CQL statement with values.
local REQUEST = {
    redis = function(req)
        local args = req
        if type(req) == "string" then
            local err
            args, err = _M.split(req)
            if not args then
                return nil, err
            end
        end
        if type(args) ~= "table" or #args == 0 then
            return nil, "empty command"
        end
        return message.command(args)
    end,
    cassandra = function(req, values, opts)
        if type(req) ~= "string" then
            return nil, "a CQL statement is a string"
        end
        local ok, f = pcall(cql_request.query, req, values, opts)
        if not ok then
            return nil, tostring(f)
        end
        return f
    end,
}

-- A request message for a source of `protocol`.  Returns the message or
-- nil, message.
function _M.request(protocol, req, values, opts)
    local make = REQUEST[protocol]
    if make == nil then
        return nil, "cannot make " .. tostring(protocol) .. " requests"
    end
    return make(req, values, opts)
end

-- Is reply f an error (Redis -ERR..., CQL ERROR)?
function _M.is_error(f)
    if f == nil or f:is_noreply() then
        return false
    end
    return protocols.by_id(f.proto).is_error_reply(f)
end

-- Run one request through source s's chain with a trace.  Returns the
-- reply message and the trace.
function _M.run(s, f)
    local batch = message.new_batch(0)
    batch:push(f)
    local tr = {}
    s.ctx.trace = tr
    local resp = s.chain:run(s.ctx, batch)
    s.ctx.trace = nil
    trace.finish(tr, resp, batch)
    return resp[1], tr
end

-- load_config then build_dry: conf, sources, or nil and the message to
-- print (for the commands' start-up)
function _M.load_dry(path)
    local conf, err = _M.load_config(path)
    if not conf then
        return nil, err
    end
    local ok, sources = pcall(_M.build_dry, conf)
    if not ok then
        return nil, "shotover: " .. tostring(sources)
    end
    return conf, sources
end

return _M
