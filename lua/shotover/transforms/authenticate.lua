-- authenticate: clients authenticate at shotover, against users of the
-- config with salted PBKDF2 hashes (shotover.password).  Redis: AUTH and
-- HELLO ... AUTH are checked and answered here, never forwarded (the sink
-- talks to the backend with its own credentials); until a client is
-- authenticated every other request gets -NOAUTH.  CQL: SASL PLAIN, the
-- AUTH_RESPONSE checked here; a node that asks for a login gets the
-- sink's own (its username/password), one that does not is never told.
-- Failed attempts per client address are limited through a shared dict,
-- so guessing is slow on every worker at once.  Sets chain.conn.user.
-- See docs/transforms/authenticate.md.
local base = require "shotover.ffi"
local message = require "shotover.message"
local cql_reply = require "shotover.cql.reply"
local password = require "shotover.password"
local runner = require "shotover.runner"
local shdict = require "shotover.shdict"
local metrics = require "shotover.metrics"
local schema = require "shotover.schema"

local new_batch = message.new_batch
local command = message.command
local error_reply = message.error_reply
local fmt = string.format
local upper = string.upper
local pairs = pairs
local type = type

local _M = {
    name = "authenticate",
    version = "0.1.0",
    -- the state (chain.conn.user) changes as a batch enters, in request
    -- order, before anything waits: batches in lanes see it in order
    capabilities = { lanes = true },
    protocols = { "redis", "cassandra" },
    schema = {
        users = { type = "table" },
        -- client certificate subjects (mTLS, RFC 2253) -> user name
        tls_subjects = { type = "table" },
        max_failures = { type = "integer", default = 5, min = 1,
                         max = 1000000 },
        lockout_seconds = { type = "number", default = 30,
            check = function(v)
                return v > 0 and v <= 86400, "must be above 0 and at most "
                                             .. "86400"
            end },
        dict = { type = "string", default = "authenticate" },
        dict_capacity = { type = "integer", default = 10000, min = 1,
                          max = 16777216 },
    },
}

local mt = { __index = {} }

local NOAUTH = "NOAUTH Authentication required."
local NOAUTH_HELLO = "NOAUTH HELLO must be called with the client already "
    .. "authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option "
    .. "can be used to authenticate the client and select the RESP protocol "
    .. "version at the same time"
local WRONGPASS = "WRONGPASS invalid username-password pair or user is "
    .. "disabled."
local LOCKED = "shotover: too many failed authentication attempts from this "
    .. "address, try again later"
-- Cassandra's own words for a failed login
local CQL_WRONG = "Provided username and/or password are incorrect"
local AUTHENTICATOR = "org.apache.cassandra.auth.PasswordAuthenticator"

local C = base.C
local PROTO_CQL = base.PROTO_CQL
local OP_STARTUP, OP_OPTIONS = C.SH_CQL_STARTUP, C.SH_CQL_OPTIONS
local OP_READY, OP_AUTH_RESPONSE = C.SH_CQL_READY, C.SH_CQL_AUTH_RESPONSE
local OP_AUTH_SUCCESS = C.SH_CQL_AUTH_SUCCESS

-- every problem at once, each under its path (users.alice.hash: ...); a
-- hash is a secret, never shown
function _M.check_config(conf)
    local errs = {}
    local users = conf.users
    if type(users) == "table" then
        local n = 0
        for name, u in pairs(users) do
            n = n + 1
            local path = "users." .. tostring(name)
            if type(name) ~= "string" or name == "" then
                errs[#errs + 1] = fmt("users: user names are non-empty "
                                      .. "strings, got %s", schema.show(name))
            elseif type(u) ~= "table" then
                errs[#errs + 1] = fmt("%s: expected { hash = \"...\" }, got "
                                      .. "a %s", path, type(u))
            else
                for k in pairs(u) do
                    if k ~= "hash" then
                        errs[#errs + 1] = fmt("%s: unknown key %s", path,
                                              schema.show(k))
                    end
                end
                if u.hash == nil then
                    errs[#errs + 1] = path .. ".hash: required"
                else
                    local ok, e = password.parse(u.hash)
                    if not ok then
                        errs[#errs + 1] = path .. ".hash: " .. e
                    end
                end
            end
        end
        if n == 0 then
            errs[#errs + 1] = "users: give at least one user"
        end
    elseif conf.tls_subjects == nil then
        errs[#errs + 1] = "users: required (or tls_subjects)"
    end
    if type(conf.tls_subjects) == "table" then
        for subject, user in pairs(conf.tls_subjects) do
            if type(subject) ~= "string" or subject == ""
               or type(user) ~= "string" or user == ""
            then
                errs[#errs + 1] = fmt("tls_subjects: expected "
                    .. "[\"CN=...,O=...\"] = \"user\", got [%s] = %s",
                    schema.show(subject), schema.show(user))
            end
        end
    end
    if #errs > 0 then
        return nil, errs
    end
    return true
end

function _M.new(conf)
    local users = {}
    for name, u in pairs(conf.users or {}) do
        users[name] = assert(password.parse(u.hash))
    end
    local name = conf.name or "authenticate"
    local lock = conf.lockout_seconds or 30
    local maxf = conf.max_failures or 5
    local d = assert(shdict.open(conf.dict or "authenticate",
                                 conf.dict_capacity or 10000))
    return setmetatable({
        name = name,
        users = users,
        subjects = conf.tls_subjects,
        dict = d,
        -- max_failures failures from one address within lockout_seconds of
        -- the first lock it out for lockout_seconds
        max_failures = maxf,
        lockout = lock,
        -- a per-worker secret for the cache of verified passwords: a
        -- repeated AUTH costs one HMAC instead of PBKDF2's iterations
        secret = password.random(32),
        verified = {},
        m_ok = metrics.counter("shotover_auth_total",
            "authentication attempts at shotover by result",
            { name = name, result = "ok" }),
        m_fail = metrics.counter("shotover_auth_total",
            "authentication attempts at shotover by result",
            { name = name, result = "failed" }),
        m_locked = metrics.counter("shotover_auth_total",
            "authentication attempts at shotover by result",
            { name = name, result = "locked_out" }),
    }, mt)
end

-- the client's address without its port ("dry" without a connection)
local function address(chain)
    local p = runner.peer(chain.c)
    if p == nil then
        return "dry"
    end
    return p:match("^%[?(.-)%]?:%d+$") or p
end

-- Check user/pass: true, or nil and why: "wrong" or "locked".
local function check(self, chain, user, pass)
    local key = "lock:" .. address(chain)
    if self.dict:get(key) ~= nil then
        metrics.add(self.m_locked, 1)
        return nil, "locked"
    end
    local h = self.users[user]
    local ok = false
    if h ~= nil then
        local quick = password.pbkdf2(pass, self.secret .. h.salt, 1)
        if self.verified[user] == quick then
            ok = true
        elseif password.verify(h, pass) then
            ok = true
            self.verified[user] = quick
        end
    end
    if ok then
        metrics.add(self.m_ok, 1)
        return true
    end
    metrics.add(self.m_fail, 1)
    -- count the failure in the address's window (which the first failure
    -- opens, with a time to live that incr keeps)
    local d, fkey = self.dict, "fail:" .. address(chain)
    local nfail = d:incr(fkey, 1, 0)
    if nfail == 1 then
        d:set(fkey, "1", self.lockout)
    end
    if nfail == nil or nfail >= self.max_failures then
        d:set(key, "1", self.lockout)
        d:delete(fkey)
    end
    return nil, "wrong"
end

-- HELLO's arguments: the HELLO to forward without AUTH, and AUTH's user
-- and password (nil without); nil and an error text for a syntax error
local function parse_hello(m)
    local n = m:nargs()
    local args = { m:arg(1) }
    local user, pass
    local i = 2
    if n >= 2 then
        args[2] = m:arg(2)
        i = 3
    end
    while i <= n do
        local opt = upper(m:arg(i))
        if opt == "AUTH" and i + 2 <= n then
            user, pass = m:arg(i + 1), m:arg(i + 2)
            i = i + 3
        elseif opt == "SETNAME" and i + 1 <= n then
            args[#args + 1] = m:arg(i)
            args[#args + 1] = m:arg(i + 1)
            i = i + 2
        else
            return nil, fmt("ERR Syntax error in HELLO option '%s'",
                            m:arg(i))
        end
    end
    return args, user, pass
end

-- What to do with request m: the request to forward (m itself or a
-- rewritten HELLO), or nil and the error reply's text.
local function step(self, m, chain)
    local conn = chain.conn
    if m:command_is("AUTH") then
        local n = m:nargs()
        if n ~= 2 and n ~= 3 then
            return nil, "ERR wrong number of arguments for 'auth' command"
        end
        local user = n == 3 and m:arg(2) or "default"
        local ok, why = check(self, chain, user, m:arg(n))
        if not ok then
            return nil, why == "locked" and "ERR " .. LOCKED or WRONGPASS
        end
        conn.user = user
        return "OK"
    elseif m:command_is("HELLO") then
        local args, user, pass = parse_hello(m)
        if args == nil then
            return nil, user
        end
        if user ~= nil then
            local ok, why = check(self, chain, user, pass)
            if not ok then
                return nil, why == "locked" and "ERR " .. LOCKED or WRONGPASS
            end
            conn.user = user
            return assert(command(args))
        elseif conn.user == nil then
            return nil, NOAUTH_HELLO
        end
        return m
    elseif conn.user == nil and not m:command_is("QUIT") then
        return nil, NOAUTH
    elseif m:command_is("RESET") then
        -- Redis' RESET goes back to the default user: here, to none,
        -- or the one the client's certificate names
        conn.user = conn.tls_user
    end
    return m
end

-- The user and password of a SASL PLAIN token ("authzid\0user\0pass")
-- in AUTH_RESPONSE m, or nil when it is not one.
local function plain_token(m)
    local ok, body = pcall(m.body, m)
    if not ok or #body < 4 then
        return nil
    end
    local b1, b2, b3, b4 = body:byte(1, 4)
    local n = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
    if b1 >= 128 or #body < 4 + n then
        return nil
    end
    local _, user, pass = body:sub(5, 4 + n):match("^([^%z]*)%z([^%z]*)%z(.*)$")
    return user, pass
end

-- CQL: what to do with request m before the client logged in: the request
-- to forward and what to look at in its reply ("startup", "auth"), or
-- nil and the reply frame
local function step_cql(self, m, chain)
    local conn = chain.conn
    local op = m.rtype
    if conn.user ~= nil or op == OP_OPTIONS then
        return m
    elseif op == OP_STARTUP then
        return m, "startup"
    elseif op == OP_AUTH_RESPONSE then
        local user, pass = plain_token(m)
        if user == nil then
            return nil, cql_reply.error(m, "PROTOCOL_ERROR", "shotover: "
                .. "authenticate: expected a SASL PLAIN token")
        end
        local ok, why = check(self, chain, user, pass)
        if not ok then
            return nil, cql_reply.error(m, "AUTH_ERROR",
                                        why == "locked" and LOCKED
                                        or CQL_WRONG)
        end
        conn.user = user
        if conn.cql_node_ready then
            -- the node asked for no login: shotover's answer is the last
            return nil, cql_reply.auth_success(m)
        end
        return m, "auth"
    end
    return nil, cql_reply.error(m, "UNAUTHORIZED", "shotover: authenticate: "
                                .. "log in first (STARTUP, AUTH_RESPONSE)")
end

-- CQL: the node's reply r to a forwarded request m, as the client gets it
local function after_cql(what, m, r, chain)
    local conn = chain.conn
    if what == "startup" then
        if r ~= nil and r.rtype == OP_READY then
            -- a node without logins: the client logs in here all the same
            conn.cql_node_ready = true
            return cql_reply.authenticate(m, AUTHENTICATOR)
        end
        conn.cql_node_ready = false
    elseif what == "auth" and (r == nil or r.rtype ~= OP_AUTH_SUCCESS) then
        conn.user = nil             -- the node refused the sink's login
    end
    return r
end

function mt.__index.transform(self, batch, chain)
    local n = batch.n
    local conn = chain.conn
    local cql = n > 0 and batch[1].proto == PROTO_CQL
    -- a client certificate this element knows logs its client in as its
    -- user, once, before its first request
    if self.subjects ~= nil and conn.tls_checked == nil then
        conn.tls_checked = true
        local user = conn.tls_subject and self.subjects[conn.tls_subject]
        if user ~= nil then
            conn.user, conn.tls_user = user, user
            metrics.add(self.m_ok, 1)
        end
    end
    -- the common case: an authenticated client sending no AUTH, HELLO or
    -- RESET, the batch goes on as it is
    if conn.user ~= nil then
        local plain = true
        for i = 1, cql and 0 or n do
            local m = batch[i]
            if m:command_is("AUTH") or m:command_is("HELLO")
               or m:command_is("RESET")
            then
                plain = false
                break
            end
        end
        if plain then
            return chain:next(batch)
        end
    end
    local answered, pass = {}, new_batch(0)
    local after
    local ok_reply
    for i = 1, n do
        local m = batch[i]
        if cql then
            local fwd, x = step_cql(self, m, chain)
            if fwd == nil then
                answered[i] = x
            else
                pass:push(fwd)
                if x then
                    after = after or {}
                    after[i] = x
                end
            end
        else
            local fwd, err = step(self, m, chain)
            if fwd == nil then
                answered[i] = error_reply(m, err)
            elseif fwd == "OK" then
                ok_reply = ok_reply
                           or assert(message.frame_from_resp("+OK\r\n"))
                answered[i] = ok_reply
            else
                pass:push(fwd)
            end
        end
    end
    local sub = pass.n > 0 and chain:next(pass) or nil
    -- what an authorizing element after this one decided for request k of
    -- the sub-batch is for request i of this batch (audit, before this
    -- element, reads chain.decisions by its own indexes)
    local decisions = chain.decisions
    local resp, k = new_batch(n), 0
    local moved = decisions ~= nil and {} or nil
    for i = 1, n do
        local r = answered[i]
        if r == nil then
            k = k + 1
            r = sub[k]
            if moved then
                moved[i] = decisions[k]
            end
            if after and after[i] then
                r = after_cql(after[i], batch[i], r, chain)
            end
        end
        resp:set(i, r)
    end
    if moved then
        for i = 1, n do
            decisions[i] = moved[i]
        end
    end
    return resp
end

return _M
