-- router: sends each request to the first route whose rule matches it, or
-- to the default chain.  Routes are sub-chains in the same syntax as any
-- chain.  See docs/transforms/router.md.
local ffi = require "ffi"
local re = require "re"
local base = require "shotover.ffi"
local message = require "shotover.message"
local command_ids = require "shotover.redis.command_ids"
local schema = require "shotover.schema"
local redis_commands = require "shotover.redis.commands"

local C = base.C
local buf_eq = C.sh_ffi_buf_eq          -- resolved at load, not in a trace
local new_batch = message.new_batch
local ffi_string = ffi.string
local byte = string.byte
local str_sub = string.sub
local find = string.find
local upper = string.upper
local fmt = string.format
local type = type

local _M = {
    name = "router",
    version = "0.1.0",
    -- a sink: its routes end in sinks
    capabilities = { sink = true, lanes = true, subchains = true },
    schema = {
        routes = { type = "table", required = true },
        default = { type = "table", required = true },
    },
}

local mt = { __index = {} }

-- each rule and the protocol whose requests it reads
local RULES = { command = "redis", key = "redis", key_prefix = "redis",
                key_pattern = "redis", kind = "cassandra",
                class = "cassandra", keyspace = "cassandra",
                table = "cassandra" }
local RULES_OF = { redis = "command, key, key_prefix, key_pattern",
                   cassandra = "kind, class, keyspace, table" }

local function list(v)
    return type(v) == "table" and v or { v }
end

-- the routes' chains, checked like any chain by config (a route without
-- a chain table is check_config's to report)
function _M.subchains(conf)
    local out = {}
    for i, r in ipairs(conf.routes) do
        if type(r) == "table" and type(r.chain) == "table" then
            out[#out + 1] = { chain = r.chain,
                              path = fmt(".routes[%d].chain", i) }
        end
    end
    out[#out + 1] = { chain = conf.default, path = ".default" }
    return out
end

local RULE_NAMES = "command, key, key_prefix, key_pattern, kind, class, "
                   .. "keyspace, table"

-- v is a string or a non-empty list of strings
local function strings(v)
    if type(v) == "string" then
        return true
    end
    if type(v) ~= "table" or #v == 0 then
        return false
    end
    for k, x in pairs(v) do
        if type(k) ~= "number" or type(x) ~= "string" then
            return false
        end
    end
    return true
end

local ROUTE_KEYS = { match = true, when = true, chain = true }

-- Levenshtein distance of a and b, or max + 1 once it exceeds max
local function distance(a, b, max)
    if math.abs(#a - #b) > max then
        return max + 1
    end
    local prev = {}
    for j = 0, #b do
        prev[j] = j
    end
    for i = 1, #a do
        local cur, best = { [0] = i }, i
        local ca = byte(a, i)
        for j = 1, #b do
            local cost = ca == byte(b, j) and 0 or 1
            local d = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            cur[j] = d
            if d < best then
                best = d
            end
        end
        if best > max then
            return max + 1
        end
        prev = cur
    end
    return prev[#b]
end

-- " (did you mean "x"?)" for the key of set nearest to name, or ""
local function nearest(name, set)
    local best, best_d = nil, 3
    for known in pairs(set) do
        local d = distance(name, known, 2)
        if d < best_d or (best and d == best_d and known < best) then
            best, best_d = known, d
        end
    end
    return best and fmt(" (did you mean %q?)", best) or ""
end

-- the values CQL rules can match: statement kinds and their classes, made
-- at the first check that needs them (a loop run at load can be picked up
-- by the JIT, and what follows it is not for traces)
local KINDS, CLASSES
local function cql_values()
    if KINDS == nil then
        KINDS, CLASSES = {}, {}
        for kind, class in pairs(require("shotover.cql.parser").CLASS) do
            KINDS[kind] = true
            CLASSES[class] = true
        end
    end
    return KINDS, CLASSES
end

-- The problem with value `v` of rule `k`, or nil.  A command name the
-- command table (shotover.redis.commands) lacks is a typo, unless it is a
-- module's command (they have a dot: JSON.GET, FT.SEARCH).
local function value_problem(k, v)
    if k == "command" then
        local up = upper(v)
        if redis_commands[up] or find(v, ".", 1, true) then
            return nil
        end
        return fmt("unknown Redis command %q%s", v, nearest(up, redis_commands))
    end
    local kinds, classes = cql_values()
    if k == "kind" and not kinds[v] then
        return fmt("unknown statement kind %q%s", v, nearest(v, kinds))
    elseif k == "class" and not classes[v] then
        local names = {}
        for c in pairs(classes) do
            names[#names + 1] = c
        end
        table.sort(names)
        return fmt("unknown statement class %q (one of %s)", v,
                   table.concat(names, ", "))
    end
    return nil
end

-- The problems of route i's match table m, appended to errs; proto is
-- the router's protocol (nil: unknown, its rules are not checked for it).
local function check_match(i, m, errs, proto)
    local names = {}
    for k in pairs(m) do
        names[#names + 1] = tostring(k)
    end
    table.sort(names)
    for _, k in ipairs(names) do
        local v = m[k]
        local path = fmt("routes[%d].match.%s", i, k)
        if not RULES[k] then
            errs[#errs + 1] = fmt("%s: unknown rule (%s)", path, RULE_NAMES)
        elseif not strings(v) then
            errs[#errs + 1] = fmt("%s: expected a string or a list of "
                                  .. "strings, got %s", path, schema.show(v))
        elseif proto and RULES_OF[proto] and RULES[k] ~= proto then
            -- it would never match: the router sees no such requests
            errs[#errs + 1] = fmt("%s: a %s rule, and this router's "
                                  .. "requests are %s (its rules: %s)", path,
                                  RULES[k], proto, RULES_OF[proto])
        elseif k == "command" or k == "kind" or k == "class" then
            for j, x in ipairs(list(v)) do
                local problem = value_problem(k, x)
                if problem then
                    errs[#errs + 1] = fmt("%s%s: %s", path, type(v) == "table"
                                          and fmt("[%d]", j) or "", problem)
                end
            end
        elseif k == "key_pattern" then
            for _, pat in ipairs(list(v)) do
                local ok, err = pcall(re.compile, pat)
                if not ok then
                    errs[#errs + 1] = fmt("%s: bad LPeg re pattern %q: %s",
                                          path, tostring(pat), tostring(err))
                end
            end
        end
    end
end

-- Every problem of the routes, not only the first: returns true, or nil
-- and the list of messages.
function _M.check_config(conf, ctx)
    local errs = {}
    local proto = ctx and ctx.protocol
    if #conf.routes == 0 then
        errs[#errs + 1] = "routes: give at least one route"
    end
    for i, r in ipairs(conf.routes) do
        if type(r) ~= "table" then
            errs[#errs + 1] = fmt("routes[%d]: expected { match = {...} or "
                                  .. "when = function, chain = {...} }", i)
        else
            if type(r.chain) ~= "table" then
                errs[#errs + 1] = fmt("routes[%d].chain: expected a chain "
                                      .. "{ ... }, got %s", i,
                                      schema.show(r.chain))
            end
            if r.when == nil and type(r.match) ~= "table" then
                errs[#errs + 1] = fmt("routes[%d]: give match = { ... } or "
                                      .. "when = function(msg, chain)", i)
            end
            if r.when ~= nil and type(r.when) ~= "function" then
                errs[#errs + 1] = fmt("routes[%d].when: expected a function, "
                                      .. "got %s", i, schema.show(r.when))
            end
            if r.when ~= nil and r.match ~= nil then
                errs[#errs + 1] = fmt("routes[%d]: give match or when, not "
                                      .. "both", i)
            end
            if type(r.match) == "table" then
                check_match(i, r.match, errs, proto)
            end
            local unknown = {}
            for k in pairs(r) do
                if not ROUTE_KEYS[k] then
                    unknown[#unknown + 1] = tostring(k)
                end
            end
            table.sort(unknown)
            for _, k in ipairs(unknown) do
                errs[#errs + 1] = fmt("routes[%d].%s: unknown key (match, "
                                      .. "when, chain)", i, k)
            end
        end
    end
    if #errs > 0 then
        return nil, errs
    end
    return true
end

-- The literal every key that the re pattern `pat` matches must start with,
-- or nil when the pattern's text does not plainly say so.  Conservative: the
-- pattern must open with a quoted literal (re literals have no escapes) that
-- no repetition suffix (* + ? ^) follows, no comment, and no '/' outside
-- parentheses, braces, strings and classes.  Why: a key that
-- lacks the prefix is rejected by a byte compare on its view, without a Lua
-- string and an LPeg call.
local function literal_prefix(pat)
    local lit, rest = pat:match("^%s*'([^']*)'(.*)$")
    if lit == nil then
        lit, rest = pat:match('^%s*"([^"]*)"(.*)$')
    end
    if lit == nil or lit == "" or rest:match("^%s*[%*%+%?%^]")
       or find(pat, "--", 1, true) then
        return nil
    end
    local depth, i, n = 0, 1, #rest
    while i <= n do
        local c = str_sub(rest, i, i)
        if c == "'" or c == '"' then
            i = find(rest, c, i + 1, true)
            if i == nil then
                return nil
            end
        elseif c == "[" then
            local j = i + 1
            if str_sub(rest, j, j) == "^" then
                j = j + 1
            end
            if str_sub(rest, j, j) == "]" then      -- a ']' first is a member
                j = j + 1
            end
            i = find(rest, "]", j, true)
            if i == nil then
                return nil
            end
        elseif c == "(" or c == "{" then
            depth = depth + 1
        elseif c == ")" or c == "}" then
            depth = depth - 1
        elseif c == "/" and depth == 0 then
            return nil
        end
        i = i + 1
    end
    return lit
end
_M.literal_prefix = literal_prefix      -- for the specs

-- A route's rules as data: `commands` (command id -> true), `extra`
-- (upper-case names the command table lacks -> true), `keys`, `prefixes`,
-- `patterns` ({ pat = LPeg, lit = literal prefix or nil }), CQL `sets`;
-- or `when` for a function route.
local function rules_of(r)
    local rule = { when = r.when }
    if r.when then
        return rule
    end
    local m = r.match
    if m.command then
        rule.commands = {}
        for _, c in ipairs(list(m.command)) do
            local id = command_ids.id(c)
            if id then
                rule.commands[id] = true
            else
                rule.extra = rule.extra or {}
                rule.extra[upper(c)] = true
            end
        end
    end
    if m.key then
        rule.keys = list(m.key)
    end
    if m.key_prefix then
        rule.prefixes = list(m.key_prefix)
    end
    if m.key_pattern then
        rule.patterns = {}
        for i, p in ipairs(list(m.key_pattern)) do
            -- anchored: the whole key must match
            rule.patterns[i] = { pat = re.compile("(" .. p .. ") !."),
                                 lit = literal_prefix(p) }
        end
    end
    rule.keyed = rule.keys ~= nil or rule.prefixes ~= nil
                 or rule.patterns ~= nil
    local sets = {}
    for _, field in ipairs({ "kind", "class", "keyspace", "table" }) do
        if m[field] then
            sets[field] = {}
            for _, v in ipairs(list(m[field])) do
                sets[field][v] = true
            end
        end
    end
    if next(sets) ~= nil then
        rule.sets = sets
    end
    return rule
end

-- Does CQL route rule `rule` match request msg (by its parsed statement)?
local function cql_match(rule, msg, chain)
    local sets = rule.sets or {}
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

-- helpers the generated matcher calls
local H = {
    -- the n bytes at p are string s (the caller checked n >= #s)
    eq = function(p, s, n)
        return buf_eq(p, s, n) == 1
    end,
    -- the upper-cased command name of a Redis request, "" without one (for
    -- names Redis lacks, which have no command id)
    name = function(m)
        if m.argv == nil or m.argc < 1 then
            return ""
        end
        local s = m.argv[0]
        return upper(ffi_string(m.data + s.off, s.len))
    end,
    -- LPeg pattern pat matches the whole key at (kp, kn)
    pattern = function(pat, kp, kn)
        return pat:match(ffi_string(kp, kn)) ~= nil
    end,
    cql_match = cql_match,
}

--[[
The matcher: one Lua function generated from the routes, with every rule
unrolled into straight-line tests.  Why: a loop over routes (and over each
route's prefixes) nested in the batch loop breaks LuaJIT's trace of the
batch loop into pieces; straight-line code keeps it one trace.  Config
values never enter the source: they are read from the table K by index;
only numbers (lengths, bytes, indexes) are written into it.
]]
local function gen_matcher(rules)
    local K, src = {}, {}
    local function const(v)
        K[#K + 1] = v
        return "K[" .. #K .. "]"
    end
    local function bytes_test(s, exact)
        -- the key at (kp, kn) is s (exact) or starts with s
        local n = #s
        if n == 0 then
            return exact and "kn == 0" or "true"
        end
        return fmt("(kn %s %d and kp[0] == %d and eq(kp, %s, %d))",
                   exact and "==" or ">=", n, byte(s, 1), const(s), n)
    end
    local function any(tests)
        return "(" .. table.concat(tests, " or ") .. ")"
    end
    local nroutes = #rules
    src[#src + 1] = "local K, H = ...\n"
    src[#src + 1] = "local eq, name, pattern, cql_match = H.eq, H.name, "
                    .. "H.pattern, H.cql_match\n"
    src[#src + 1] = "return function(m, chain)\n"
    src[#src + 1] = fmt("if m.proto == %d then\n", C.SH_PROTO_REDIS)
    src[#src + 1] = "local cid, kp, kn = 0, nil, 0\n"
    src[#src + 1] = "local argv = m.argv\n"
    src[#src + 1] = "if argv ~= nil then\n"
    src[#src + 1] = "cid = m.cmd_id\n"
    src[#src + 1] = "if m.argc >= 2 then local s = argv[1] "
                    .. "kp, kn = m.data + s.off, s.len end\n"
    src[#src + 1] = "end\n"
    for k, rule in ipairs(rules) do
        local tests = nil
        if rule.when then
            tests = { fmt("%s(m, chain)", const(rule.when)) }
        elseif not rule.sets then
            tests = {}
            if rule.commands then
                local t = { fmt("%s[cid]", const(rule.commands)) }
                if rule.extra then
                    t[2] = fmt("(cid == 0 and %s[name(m)])",
                               const(rule.extra))
                end
                tests[#tests + 1] = any(t)
            end
            if rule.keyed then
                tests[#tests + 1] = "kp ~= nil"
            end
            if rule.keys then
                local t = {}
                for _, key in ipairs(rule.keys) do
                    t[#t + 1] = bytes_test(key, true)
                end
                tests[#tests + 1] = any(t)
            end
            if rule.prefixes then
                local t = {}
                for _, pre in ipairs(rule.prefixes) do
                    t[#t + 1] = bytes_test(pre, false)
                end
                tests[#tests + 1] = any(t)
            end
            if rule.patterns then
                local t = {}
                for _, pt in ipairs(rule.patterns) do
                    local call = fmt("pattern(%s, kp, kn)", const(pt.pat))
                    t[#t + 1] = pt.lit and "(" .. bytes_test(pt.lit, false)
                                           .. " and " .. call .. ")" or call
                end
                tests[#tests + 1] = any(t)
            end
            if #tests == 0 then
                tests[1] = "true"
            end
        end
        if tests then
            src[#src + 1] = fmt("if %s then return %d end\n",
                                table.concat(tests, " and "), k)
        end
    end
    src[#src + 1] = fmt("return %d\nend\n", nroutes + 1)
    -- rules are Redis or CQL rules: another protocol is never taken for
    -- either (config validation refuses it first: see `protocols`)
    src[#src + 1] = fmt("if m.proto ~= %d then error('router: protocol ' "
                        .. ".. m.proto .. ' has no rules') end\n",
                        C.SH_PROTO_CQL)
    -- CQL: by the parsed statement; no statement: the default
    for k, rule in ipairs(rules) do
        if rule.when then
            src[#src + 1] = fmt("if %s(m, chain) then return %d end\n",
                                const(rule.when), k)
        elseif not rule.commands and not rule.keyed then
            src[#src + 1] = fmt("if cql_match(%s, m, chain) then return %d "
                                .. "end\n", const(rule), k)
        end
    end
    src[#src + 1] = fmt("return %d\nend\n", nroutes + 1)
    local code = table.concat(src)
    local chunk = assert(load(code, "=router matcher"))
    return chunk(K, H), code
end

function _M.new(conf, env)
    local self = setmetatable({ chains = {} }, mt)
    local rules = {}
    for i, r in ipairs(conf.routes) do
        rules[i] = rules_of(r)
        self.chains[i] = env.build_chain(r.chain, "route" .. i)
    end
    self.nroutes = #rules
    self.route_of, self.source = gen_matcher(rules)
    self.default = env.build_chain(conf.default, "default")
    self.chains[#rules + 1] = self.default
    return self
end

-- the replies of task k (route routes[k]) to their requests' places
local function put_back(k, got, resp, idxs, routes)
    for j, i in ipairs(idxs[routes[k]]) do
        resp:set(i, got[j])
    end
end

function mt.__index.transform(self, batch, chain)
    local n, chains, nroutes = batch.n, self.chains, self.nroutes
    local route_of = self.route_of
    -- the route of each request: a table per router and coroutine (chain
    -- context), none made per batch; not in the session, which the batches
    -- of one client share when they run at once (lanes), and a `when`
    -- function may wait
    local pick = chain[self]
    if pick == nil then
        pick = {}
        chain[self] = pick
    end
    local single = nil
    for i = 1, n do
        local r = route_of(batch[i], chain)
        pick[i] = r
        if single == nil then
            single = r
        elseif single ~= r then
            single = false
        end
    end
    if single then
        return chain:run_sub(chains[single], batch)
    end
    -- several routes: each gets its requests, in order; replies are put
    -- back in request order
    local subs, idxs = {}, {}
    for i = 1, n do
        local r = pick[i]
        local sub = subs[r]
        if sub == nil then
            sub = new_batch(0)
            subs[r], idxs[r] = sub, {}
        end
        sub:push(batch[i])
        local idx = idxs[r]
        idx[#idx + 1] = i
    end
    -- the routes run at once (each until it waits for its backends); one
    -- wait serves them all
    local tasks, routes = {}, {}
    for r = 1, nroutes + 1 do
        local sub = subs[r]
        if sub then
            tasks[#tasks + 1] = chain:spawn(chain.run_sub, chain, chains[r],
                                            sub)
            routes[#tasks] = r
        end
    end
    local resp = new_batch(n)
    chain:join_each(tasks, put_back, resp, idxs, routes)
    return resp
end

return _M
