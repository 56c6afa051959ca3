-- authorize: rules per user or role allow or deny requests by query class,
-- command (CQL: statement kind), Redis key prefix, CQL keyspace and table;
-- evaluated in order on m:query_info(), the first rule that matches
-- decides, and a request no rule matches is denied.  Refused requests get
-- the protocol's own error (Redis -NOPERM, CQL UNAUTHORIZED); each
-- decision goes to chain.decisions[i] for audit and to a trace note for
-- route-test and the repl.  The user is chain.conn.user (authenticate).
-- See docs/transforms/authorize.md.
local protocols = require "shotover.protocols"
local schema = require "shotover.schema"
local trace = require "shotover.trace"

local by_id = protocols.by_id
local fmt = string.format
local upper, lower, sub = string.upper, string.lower, string.sub
local type, pairs, ipairs = type, pairs, ipairs

local _M = {
    name = "authorize",
    version = "0.1.0",
    -- decisions are made as a batch enters and kept per batch
    capabilities = { lanes = true },
    schema = {
        rules = { type = "table", required = true },
        roles = { type = "table" },
    },
}

local mt = { __index = {} }

local CLASSES = { read = true, write = true, read_write = true,
                  schema_change = true, pubsub = true, use = true, dcl = true,
                  connection = true, admin = true, other = true }
local RULE_KEYS = { user = true, role = true, allow = true, deny = true,
                    classes = true, commands = true, key_prefixes = true,
                    keyspaces = true, tables = true }
local LISTS = { "classes", "commands", "key_prefixes", "keyspaces",
                "tables" }

-- every problem at once, each with its path
function _M.check_config(conf)
    local errs = {}
    local function err(...)
        errs[#errs + 1] = fmt(...)
    end
    local roles = conf.roles or {}
    for role, members in pairs(roles) do
        if type(role) ~= "string" then
            err("roles: role names are strings, got %s", schema.show(role))
        elseif type(members) ~= "table" then
            err("roles.%s: expected a list of user names", role)
        else
            for i, u in ipairs(members) do
                if type(u) ~= "string" or u == "" then
                    err("roles.%s[%d]: expected a user name, got %s", role, i,
                        schema.show(u))
                end
            end
        end
    end
    local rules = conf.rules
    if type(rules) == "table" then
        if #rules == 0 then
            err("rules: give at least one rule")
        end
        for i, r in ipairs(rules) do
            local path = fmt("rules[%d]", i)
            if type(r) ~= "table" then
                err("%s: expected a table, got %s", path, schema.show(r))
            else
                for k in pairs(r) do
                    if not RULE_KEYS[k] then
                        err("%s: unknown key %s (one of user, role, allow, "
                            .. "deny, classes, commands, key_prefixes, "
                            .. "keyspaces, tables)", path, schema.show(k))
                    end
                end
                if (r.allow == true) == (r.deny == true)
                   or (r.allow ~= nil and r.allow ~= true)
                   or (r.deny ~= nil and r.deny ~= true)
                then
                    err("%s: give exactly one of allow = true and deny = true",
                        path)
                end
                if r.user ~= nil and r.role ~= nil then
                    err("%s: give at most one of user and role", path)
                end
                if r.user ~= nil and (type(r.user) ~= "string"
                                      or r.user == "") then
                    err("%s.user: expected a user name, got %s", path,
                        schema.show(r.user))
                end
                if r.role ~= nil and (type(r.role) ~= "string"
                                      or roles[r.role] == nil) then
                    err("%s.role: unknown role %s", path, schema.show(r.role))
                end
                for _, key in ipairs(LISTS) do
                    local l = r[key]
                    if l ~= nil then
                        if type(l) ~= "table" or #l == 0 then
                            err("%s.%s: expected a non-empty list", path, key)
                        else
                            for j, v in ipairs(l) do
                                if type(v) ~= "string" or v == "" then
                                    err("%s.%s[%d]: expected a non-empty "
                                        .. "string, got %s", path, key, j,
                                        schema.show(v))
                                elseif key == "classes" and not CLASSES[v]
                                then
                                    err("%s.classes[%d]: unknown query type "
                                        .. "%s", path, j, schema.show(v))
                                end
                            end
                        end
                    end
                end
            end
        end
    end
    if #errs > 0 then
        return nil, errs
    end
    return true
end

local function set_of(list, norm)
    if list == nil then
        return nil
    end
    local s = {}
    for _, v in ipairs(list) do
        s[norm and norm(v) or v] = true
    end
    return s
end

function _M.new(conf, env)
    local members = {}                  -- role -> { user = true }
    for role, users in pairs(conf.roles or {}) do
        members[role] = set_of(users)
    end
    local rules = {}
    for i, r in ipairs(conf.rules) do
        local classes = set_of(r.classes)
        if classes and classes.other then
            -- as in query_type_filter: "other" still covers them
            classes.connection, classes.admin = true, true
        end
        rules[i] = {
            label = fmt("rules[%d]", i),
            allow = r.allow == true,
            user = r.user,
            members = r.role and members[r.role],
            classes = classes,
            commands = set_of(r.commands, upper),
            key_prefixes = r.key_prefixes,
            keyspaces = set_of(r.keyspaces, lower),
            tables = set_of(r.tables, lower),
        }
    end
    return setmetatable({ rules = rules, name = conf.name or "authorize",
                          proto = protocols.of_env(env) }, mt)
end

local function has_prefix(s, prefixes)
    for _, p in ipairs(prefixes) do
        if sub(s, 1, #p) == p then
            return true
        end
    end
    return false
end

-- Does condition set `want` hold for the values `got` (a list)?  An allow
-- rule needs every one of them in it (a FLUSHALL is a write and admin: an
-- allow of writes alone does not let it through), a deny rule any one;
-- an empty list never matches.
local function holds(allow, got, test, want)
    if #got == 0 then
        return false
    end
    for _, v in ipairs(got) do
        local ok = test(v, want)
        if allow and not ok then
            return false
        elseif not allow and ok then
            return true
        end
    end
    return allow
end

local function in_set(v, set)
    return v ~= nil and set[v] == true
end

-- the tables a CQL request names, as "ks.t" and "t"
local function tables_of(info)
    local out = {}
    local sts = info.statements or { info }
    for _, st in ipairs(sts) do
        if st.table then
            out[#out + 1] = lower((st.keyspace and st.keyspace .. "." or "")
                                  .. st.table)
        end
    end
    return out
end

local function keyspaces_of(info)
    local out = {}
    for _, st in ipairs(info.statements or { info }) do
        if st.keyspace then
            out[#out + 1] = lower(st.keyspace)
        end
    end
    return out
end

local function table_in(t, set)
    if set[t] then
        return true
    end
    local bare = t:match("^[^.]+%.(.+)$")
    return bare ~= nil and set[bare] == true
end

-- Does rule r match request m of user `user` (nil: not authenticated)?
-- req holds what was found of m (its classes, query_info), found lazily.
local function matches(r, user, req)
    if r.user ~= nil and r.user ~= user then
        return false
    end
    if r.members ~= nil and (user == nil or not r.members[user]) then
        return false
    end
    local allow = r.allow
    if r.classes and not holds(allow, req.classes, in_set, r.classes) then
        return false
    end
    local info = req.info
    if r.commands then
        local op = info and info.op
        if op == nil or not r.commands[upper(op)] then
            return false
        end
    end
    if r.key_prefixes and not holds(allow, info and info.keys or {},
                                     has_prefix, r.key_prefixes) then
        return false
    end
    if r.keyspaces and not holds(allow, info and keyspaces_of(info) or {},
                                 in_set, r.keyspaces) then
        return false
    end
    if r.tables and not holds(allow, info and tables_of(info) or {},
                              table_in, r.tables) then
        return false
    end
    return true
end

-- The rule deciding request m: the rule (nil: none matched, denied by
-- default).
function mt.__index.decide(self, m, chain, proto)
    local user = chain.conn.user
    local classes
    if proto.query_classes then
        classes = proto.query_classes(m, chain)
    else
        local c = proto.query_class(m, chain)
        classes = { c }
    end
    local req = { classes = classes, info = m:query_info(chain) }
    for _, r in ipairs(self.rules) do
        if matches(r, user, req) then
            return r
        end
    end
    return nil
end

function mt.__index.transform(self, batch, chain)
    local n = batch.n
    if n == 0 then
        return chain:next(batch)
    end
    local proto = self.proto or by_id(batch[1].proto)
    local decisions = chain.decisions
    if decisions == nil then
        decisions = {}
        chain.decisions = decisions
    end
    local user = chain.conn.user
    local refused
    for i = 1, n do
        local m = batch[i]
        local decision
        if proto.passthrough(m) then
            decision = nil              -- the handshake is never refused
        elseif proto.query_class(m, chain) == false then
            refused = refused or {}
            refused[i] = proto.unknown_reply(m, "shotover: " .. self.name
                .. " needs this statement prepared here")
            decision = "denied: statement not prepared here"
        else
            local r = self:decide(m, chain, proto)
            if r and r.allow then
                decision = "allowed by " .. r.label
            else
                decision = r and "denied by " .. r.label
                           or "denied by default"
                local what = m:query_info(chain)
                local op = what and what.op or "?"
                refused = refused or {}
                local text = fmt("User %s has no permissions to run the "
                                 .. "'%s' command (shotover: %s: %s)",
                                 user or "(not authenticated)", lower(op),
                                 self.name, decision)
                if proto.name == "redis" then
                    text = "NOPERM " .. text
                end
                refused[i] = proto.error_reply(m, text, "unauthorized")
            end
        end
        decisions[i] = decision
        if chain.trace ~= nil and decision then
            trace.note(chain, decision)
        end
    end
    if refused == nil then
        return chain:next(batch)
    end
    return chain:next_except(batch, refused)
end

return _M
