-- router: sends each request to the first route whose rule matches it, or
-- to the default chain.  Routes are sub-chains in the same syntax as any
-- chain.  See docs/transforms/router.md.
local re = require "re"
local message = require "shotover.message"

local new_batch = message.new_batch
local upper = string.upper
local fmt = string.format
local type = type

local _M = {
    name = "router",
    version = "0.1.0",
    terminal = true,                      -- its routes end in sinks
    schema = {
        routes = { type = "table", required = true },
        default = { type = "table", required = true },
    },
}

local mt = { __index = {} }

local RULES = { command = true, key = true, key_prefix = true,
                key_pattern = true, kind = true, class = true,
                keyspace = true, table = true }

local function list(v)
    return type(v) == "table" and v or { v }
end

-- the routes' chains, checked like any chain by config
function _M.subchains(conf)
    local out = {}
    for i, r in ipairs(conf.routes) do
        if type(r) == "table" then
            out[#out + 1] = { chain = r.chain, path = fmt(".routes[%d].chain", i) }
        end
    end
    out[#out + 1] = { chain = conf.default, path = ".default" }
    return out
end

function _M.check_config(conf)
    if #conf.routes == 0 then
        return nil, "routes: give at least one route"
    end
    for i, r in ipairs(conf.routes) do
        if type(r) ~= "table" or type(r.chain) ~= "table" then
            return nil, fmt("routes[%d]: expected { match = {...} or "
                            .. "when = function, chain = {...} }", i)
        end
        if r.when == nil and type(r.match) ~= "table" then
            return nil, fmt("routes[%d]: give match = { ... } or when = "
                            .. "function(msg, chain)", i)
        end
        for k, v in pairs(r.match or {}) do
            if not RULES[k] then
                return nil, fmt("routes[%d].match.%s: unknown rule (command, "
                                .. "key, key_prefix, key_pattern, kind, class, "
                                .. "keyspace, table)", i, tostring(k))
            end
            if k == "key_pattern" then
                for _, pat in ipairs(list(v)) do
                    local ok, err = pcall(re.compile, pat)
                    if not ok then
                        return nil, fmt("routes[%d].match.key_pattern: bad "
                                        .. "LPeg re pattern %q: %s", i, pat,
                                        tostring(err))
                    end
                end
            end
        end
    end
    return true
end

-- A compiled rule: function(msg, chain) -> bool.
local function compile(r)
    if r.when then
        return nil
    end
    local m = r.match
    local commands, keys, prefixes, patterns, sets = nil, nil, nil, nil, {}
    if m.command then
        commands = {}
        for _, c in ipairs(list(m.command)) do
            commands[upper(c)] = true
        end
    end
    if m.key then
        keys = {}
        for _, k in ipairs(list(m.key)) do
            keys[k] = true
        end
    end
    if m.key_prefix then
        prefixes = list(m.key_prefix)
    end
    if m.key_pattern then
        patterns = {}
        for i, p in ipairs(list(m.key_pattern)) do
            -- anchored: the whole key must match
            patterns[i] = re.compile("(" .. p .. ") !.")
        end
    end
    for _, field in ipairs({ "kind", "class", "keyspace", "table" }) do
        if m[field] then
            sets[field] = {}
            for _, v in ipairs(list(m[field])) do
                sets[field][v] = true
            end
        end
    end
    local cql = next(sets) ~= nil
    -- cmd and key are computed once per request by the caller (Redis)
    return function(msg, chain, cmd, key)
        if msg.proto == 1 then
            if cql then
                return false
            end
            if commands and not commands[cmd] then
                return false
            end
            if keys or prefixes or patterns then
                if key == nil then
                    return false
                end
                if keys and not keys[key] then
                    return false
                end
                if prefixes then
                    local hit = false
                    for _, p in ipairs(prefixes) do
                        hit = hit or key:sub(1, #p) == p
                    end
                    if not hit then
                        return false
                    end
                end
                if patterns then
                    local hit = false
                    for _, p in ipairs(patterns) do
                        hit = hit or p:match(key) ~= nil
                    end
                    if not hit then
                        return false
                    end
                end
            end
            return true
        end
        -- CQL: by the parsed statement
        if commands or keys or prefixes or patterns then
            return false
        end
        local ast, keyspace = msg:statement(chain.conn)
        if not ast then
            return false
        end
        if sets.kind and not sets.kind[ast.kind] then
            return false
        end
        if sets.class and not sets.class[ast.class] then
            return false
        end
        if sets.keyspace and not sets.keyspace[keyspace] then
            return false
        end
        if sets.table and not sets.table[ast.table] then
            return false
        end
        return true
    end
end

function _M.new(conf, env)
    local self = setmetatable({ routes = {} }, mt)
    for i, r in ipairs(conf.routes) do
        local test = compile(r)
        if r.when then
            local when = r.when
            test = function(msg, chain) return when(msg, chain) end
        end
        self.routes[i] = { test = test,
                           chain = env.build_chain(r.chain, "route" .. i) }
    end
    self.default = env.build_chain(conf.default, "default")
    return self
end

-- CQL requests without a statement (handshake) go to the default chain
function mt.__index.transform(self, batch, chain)
    local n, routes = batch.n, self.routes
    local nroutes = #routes
    local pick = {}
    local single = nil
    for i = 1, n do
        local m, r = batch[i], nroutes + 1
        local cmd, key
        if m.proto == 1 then
            cmd, key = upper(m:arg(1) or ""), m:key()
        end
        for k = 1, nroutes do
            if routes[k].test(m, chain, cmd, key) then
                r = k
                break
            end
        end
        pick[i] = r
        if single == nil then
            single = r
        elseif single ~= r then
            single = false
        end
    end
    local function target(r)
        return r <= nroutes and routes[r].chain or self.default
    end
    if single then
        return chain:run_sub(target(single), batch)
    end
    -- several routes: each gets its requests, in order; replies are put
    -- back in request order
    local resp = new_batch(n)
    for r = 1, nroutes + 1 do
        local sub, idx = nil, nil
        for i = 1, n do
            if pick[i] == r then
                sub = sub or new_batch(0)
                idx = idx or {}
                sub:push(batch[i])
                idx[#idx + 1] = i
            end
        end
        if sub then
            local got = chain:run_sub(target(r), sub)
            for k, i in ipairs(idx) do
                resp:set(i, got[k])
            end
        end
    end
    return resp
end

return _M
