-- How a message is printed for humans -- by debug_printer, a tee's
-- mismatch log and error, the traces of route-test and the repl, error
-- messages and m:describe() -- with every credential it carries replaced
-- by MARK.  The one place that knows where protocols carry secrets:
--
--   Redis requests   AUTH [user] pass; HELLO ... AUTH user pass; MIGRATE
--                    ... AUTH pass / AUTH2 user pass; CONFIG SET of a
--                    secret parameter (SECRET_PARAMS); SENTINEL SET and
--                    SENTINEL CONFIG SET of auth-pass / sentinel-pass; ACL
--                    SETUSER rules >pass <pass #hash !hash; the command
--                    inside ACL DRYRUN
--   Redis replies    CONFIG GET and SENTINEL CONFIG GET (each secret
--                    parameter's value, pair-wise in the array or map), ACL
--                    GETUSER (its passwords), ACL LIST (#hash); and an
--                    error reply echoing a secret of its request
--   CQL requests     AUTH_RESPONSE (the SASL token); the literal after
--                    PASSWORD (also HASHED PASSWORD, in CREATE/ALTER ROLE
--                    and USER) in QUERY and PREPARE text, and every bound
--                    value of a statement whose password is a bind marker
--                    (QUERY and EXECUTE)
--   CQL replies      an ERROR echoing a secret of its request
--
-- A reply is matched with its request when the caller has it (`req`);
-- without it the reply rules above apply to any reply that looks like one
-- of those (more is hidden, never less).  Application data is not looked
-- at: a password stored in a key or a column is the application's.
--
-- Only printing comes here: nothing on the path of a request does.
local ffi = require "ffi"
local bit = require "bit"
local protocols = require "shotover.protocols"

local band = bit.band
local concat = table.concat
local sort = table.sort
local find, sub, lower, upper = string.find, string.sub, string.lower,
                                string.upper
local byte = string.byte
local fmt = string.format
local tonumber = tonumber
local tostring = tostring
local type = type
local pcall = pcall
local pairs = pairs
local ipairs = ipairs
local next = next
local require = require

local _M = { _VERSION = "0.1.0" }

-- What stands where a secret was.
local MARK = "<redacted>"
_M.MARK = MARK

local message                   -- shotover.message, on first use (it
local function msg()            -- requires this module for describe)
    message = message or require "shotover.message"
    return message
end

-- Every occurrence of the strings in `secrets` (longest first) replaced by
-- MARK in s.
local function replace_all(s, secrets)
    for _, secret in ipairs(secrets) do
        if secret ~= "" and find(s, secret, 1, true) then
            local out, i = {}, 1
            while true do
                local a, b = find(s, secret, i, true)
                if a == nil then
                    break
                end
                out[#out + 1] = sub(s, i, a - 1)
                out[#out + 1] = MARK
                i = b + 1
            end
            out[#out + 1] = sub(s, i)
            s = concat(out)
        end
    end
    return s
end

local function longest_first(a, b)
    return #a > #b
end

-- Redis --------------------------------------------------------------------

-- CONFIG (and Sentinel) parameters whose value is a secret
local SECRET_PARAMS = {
    requirepass = true, masterauth = true,
    ["tls-key-file-pass"] = true, ["tls-client-key-file-pass"] = true,
    ["auth-pass"] = true, ["sentinel-pass"] = true,
}
_M.SECRET_PARAMS = SECRET_PARAMS

local function uarg(a, i)
    return a[i] and upper(a[i]) or nil
end

-- out[i] = what argument i is shown as; secrets gets each original
local function hide(a, i, out, secrets, shown)
    if a[i] ~= nil then
        out[i] = shown or MARK
        secrets[#secrets + 1] = a[i]
    end
end

-- name/value pairs from argument `from` on: the values of secret names
local function hide_pairs(a, from, out, secrets)
    for i = from, #a - 1, 2 do
        if SECRET_PARAMS[lower(a[i])] then
            hide(a, i + 1, out, secrets)
        end
    end
end

-- an ACL rule: every word starting with > < # ! (set or remove a password
-- or a hash) keeps its first character, the rest is hidden
local function hide_rule(a, i, out, secrets)
    local hidden = false
    local shown = (" " .. a[i]):gsub("(%s)([><#!])(%S*)", function(sp, c, w)
        hidden = true
        secrets[#secrets + 1] = c .. w
        secrets[#secrets + 1] = w
        return sp .. c .. MARK
    end)
    if hidden then
        out[i] = sub(shown, 2)
    end
end

local REDIS_REQUEST = {}
local redis_marks

-- AUTH pass | AUTH user pass (anything else: every argument)
REDIS_REQUEST.AUTH = function(a, out, secrets)
    if #a == 3 then
        hide(a, 3, out, secrets)
    else
        for i = 2, #a do
            hide(a, i, out, secrets)
        end
    end
end

-- HELLO [protover [AUTH user pass] [SETNAME name]]
REDIS_REQUEST.HELLO = function(a, out, secrets)
    local i = 2
    while i <= #a do
        if upper(a[i]) == "AUTH" then
            hide(a, a[i + 2] ~= nil and i + 2 or i + 1, out, secrets)
            i = i + 3
        else
            i = i + 1
        end
    end
end

-- MIGRATE host port key db timeout [COPY] [REPLACE] [AUTH pass |
-- AUTH2 user pass] [KEYS key...]
REDIS_REQUEST.MIGRATE = function(a, out, secrets)
    for i = 7, #a do
        local w = upper(a[i])
        if w == "KEYS" then
            break
        elseif w == "AUTH" then
            hide(a, i + 1, out, secrets)
        elseif w == "AUTH2" then
            hide(a, a[i + 2] ~= nil and i + 2 or i + 1, out, secrets)
        end
    end
end

-- CONFIG SET name value [name value ...]
REDIS_REQUEST.CONFIG = function(a, out, secrets)
    if uarg(a, 2) == "SET" then
        hide_pairs(a, 3, out, secrets)
    end
end

-- SENTINEL SET master name value ...; SENTINEL CONFIG SET name value ...
REDIS_REQUEST.SENTINEL = function(a, out, secrets)
    local s = uarg(a, 2)
    if s == "SET" or (s == "CONFIG" and uarg(a, 3) == "SET") then
        hide_pairs(a, 4, out, secrets)
    end
end

-- ACL SETUSER user rule...; ACL DRYRUN user command arg...
REDIS_REQUEST.ACL = function(a, out, secrets)
    local s = uarg(a, 2)
    if s == "SETUSER" then
        for i = 4, #a do
            hide_rule(a, i, out, secrets)
        end
    elseif s == "DRYRUN" and #a >= 4 then
        local inner = {}
        for i = 4, #a do
            inner[i - 3] = a[i]
        end
        local o = redis_marks(inner, secrets)
        if o then
            for i, v in pairs(o) do
                out[i + 3] = v
            end
        end
    end
end

-- The arguments of command `a` (a list of strings, the name first) to show
-- in place of the real ones ({ [i] = shown }), or nil when none is secret;
-- the secrets are appended to `secrets`.
redis_marks = function(a, secrets)
    local rule = a[1] and REDIS_REQUEST[upper(a[1])]
    if rule == nil then
        return nil
    end
    local out = {}
    rule(a, out, secrets)
    return next(out) ~= nil and out or nil
end

-- The arguments of Redis request m when its command is one that may carry
-- a credential, else nil: a SET of a big value is never copied into Lua
-- to be printed.
local function rule_args(m)
    if not m:is_request() or REDIS_REQUEST[m:command()] == nil then
        return nil
    end
    return m:args()
end

local function redis_request_secrets(m)
    local secrets = {}
    local a = rule_args(m)
    if a then
        redis_marks(a, secrets)
    end
    return secrets
end

-- A RESP value as a tree: { t = type byte, line = ... } for lines and
-- nulls, { t, s = payload } for bulk strings, { t, n, items, after } for
-- aggregates (maps flattened to key, value, ...).  nil when malformed or
-- deeper than 64.
local AGG = { [42] = true, [126] = true, [62] = true, [37] = true,
              [124] = true }                            -- * ~ > % |
local BULK = { [36] = true, [33] = true, [61] = true }  -- $ ! =

local function parse(s, pos, depth)
    if depth > 64 then
        return nil
    end
    local t = byte(s, pos)
    local e = find(s, "\r\n", pos + 1, true)
    if t == nil or e == nil then
        return nil
    end
    local line = sub(s, pos + 1, e - 1)
    local at = e + 2
    if BULK[t] or AGG[t] then
        local n = tonumber(line)
        if n == nil then
            return nil
        elseif n < 0 then
            return { t = t, line = line }, at
        elseif BULK[t] then
            if at + n + 1 > #s then
                return nil
            end
            return { t = t, s = sub(s, at, at + n - 1) }, at + n + 2
        end
        local node = { t = t, n = n, items = {} }
        local k = (t == 37 or t == 124) and 2 * n or n
        for i = 1, k do
            node.items[i], at = parse(s, at, depth + 1)
            if node.items[i] == nil then
                return nil
            end
        end
        if t == 124 then                        -- an attribute, then a value
            node.after, at = parse(s, at, depth + 1)
            if node.after == nil then
                return nil
            end
        end
        return node, at
    end
    return { t = t, line = line }, at
end

local function encode(node, out)
    local t = string.char(node.t)
    if node.s ~= nil then
        out[#out + 1] = t .. #node.s .. "\r\n" .. node.s .. "\r\n"
    elseif node.items ~= nil then
        out[#out + 1] = t .. node.n .. "\r\n"
        for _, x in ipairs(node.items) do
            encode(x, out)
        end
        if node.after then
            encode(node.after, out)
        end
    else
        out[#out + 1] = t .. node.line .. "\r\n"
    end
    return out
end

-- the text of a string node (bulk, simple, error, verbatim), or nil
local function text_of(node)
    if node.s ~= nil then
        return node.s
    elseif node.t == 43 or node.t == 45 then            -- + -
        return node.line
    end
    return nil
end

local function set_text(node, s)
    if node.s ~= nil then
        node.s = s
    else
        node.line = s
    end
end

-- every string in node and below
local function each_string(node, fn)
    if node.items ~= nil then
        for _, x in ipairs(node.items) do
            each_string(x, fn)
        end
        if node.after then
            each_string(node.after, fn)
        end
    elseif text_of(node) ~= nil then
        set_text(node, fn(text_of(node)))
    end
end

local function hide_all(node)
    each_string(node, function() return MARK end)
end

-- a flat aggregate of name/value pairs (CONFIG GET in RESP2 or RESP3): the
-- value of each name in `names` hidden
local function hide_reply_pairs(node, names)
    local items = node.items
    if items == nil then
        return
    end
    for i = 1, #items - 1, 2 do
        local k = text_of(items[i])
        if k and names[lower(k)] then
            hide_all(items[i + 1])
        end
    end
end

-- a reply this big that may hold a secret is not shown at all (none of
-- the replies above is ever near it)
local MAX_REWRITE = 4 * 1024 * 1024

local PASSWORDS = { passwords = true }
local HASH = "#" .. ("%x"):rep(64)

local function hide_hashes(node)
    each_string(node, function(s)
        return (s:gsub(HASH, "#" .. MARK))
    end)
end

-- Which reply rules apply to reply m answering req (nil: not known):
-- pairs, getuser, hashes, and the secrets to scrub from an error reply.
local function redis_reply_rules(m, req, is_error)
    local r = {}
    if req ~= nil and req.proto == protocols.get("redis").id
       and req:is_request()
    then
        local a = rule_args(req)
        if a == nil then
            return nil
        end
        local c, s = uarg(a, 1), uarg(a, 2)
        r.pairs = (c == "CONFIG" and s == "GET")
                  or (c == "SENTINEL" and s == "CONFIG"
                      and uarg(a, 3) == "GET")
        r.getuser = c == "ACL" and s == "GETUSER"
        r.hashes = c == "ACL" and s == "LIST"
        if is_error then
            local secrets = {}
            redis_marks(a, secrets)
            if #secrets > 0 then
                sort(secrets, longest_first)
                r.scrub = secrets
            end
        end
    elseif not is_error and m.len <= MAX_REWRITE then
        -- no request: whatever looks like one of those replies (none of
        -- them is ever MAX_REWRITE big: a bigger one is data)
        local raw = m:raw()
        local l = lower(raw)
        for name in pairs(SECRET_PARAMS) do
            r.pairs = r.pairs or find(l, name, 1, true) ~= nil
        end
        r.getuser = find(l, "passwords", 1, true) ~= nil
        r.hashes = find(raw, HASH) ~= nil
    end
    return (r.pairs or r.getuser or r.hashes or r.scrub) and r or nil
end


local function redis_text(m, req)
    local p = protocols.get("redis")
    if m:is_request() then
        local a = rule_args(m)
        local out = a and redis_marks(a, {})
        if out == nil then
            return p.describe(m)
        end
        for i, v in pairs(out) do
            a[i] = v
        end
        return p.describe(msg().command(a))
    end
    local rules = redis_reply_rules(m, req, p.is_error_reply(m))
    if rules == nil then
        return p.describe(m)
    end
    local tree = m.len <= MAX_REWRITE and parse(m:raw(), 1, 0)
    if not tree then
        return fmt("%s (a reply of %d bytes that may hold a credential)",
                   MARK, tonumber(m.len))
    end
    local top = tree.t == 124 and tree.after or tree
    if rules.pairs then
        hide_reply_pairs(top, SECRET_PARAMS)
    end
    if rules.getuser then
        hide_reply_pairs(top, PASSWORDS)
    end
    if rules.hashes then
        hide_hashes(top)
    end
    if rules.scrub then
        each_string(top, function(s) return replace_all(s, rules.scrub) end)
    end
    local f = msg().frame_from_resp(concat(encode(tree, {})))
    return f and p.describe(f) or MARK
end

local REDIS = {
    -- describe, show and log are one text for Redis
    text = function(m, req)
        return redis_text(m, req)
    end,
    secrets = redis_request_secrets,
}

-- CQL ----------------------------------------------------------------------

-- The tokens of CQL text: { kind, first, last } with kind "str" ('...',
-- $$...$$), "ident" ("..."), "word" or "punct"; comments and blanks
-- skipped.  An unterminated literal runs to the end.
-- Where the CQL string or quoted identifier opening at q[i] (quote: "'"
-- or '"') ends: the offset of its closing quote (a doubled quote is one
-- quote inside it), or the text's end when it is not closed.
function _M.quoted_end(q, i, quote)
    local j = i + 1
    while true do
        local k = find(q, quote, j, true)
        if k == nil then
            return #q
        elseif sub(q, k + 1, k + 1) == quote then
            j = k + 2
        else
            return k
        end
    end
end

local function cql_tokens(q)
    local toks, i, n = {}, 1, #q
    while i <= n do
        local c = sub(q, i, i)
        local two = sub(q, i, i + 1)
        if find(c, "^%s") then
            i = i + 1
        elseif two == "--" or two == "//" then
            i = (find(q, "\n", i, true) or n) + 1
        elseif two == "/*" then
            local _, e = find(q, "*/", i + 2, true)
            i = (e or n) + 1
        elseif c == "'" or c == '"' then
            local j = _M.quoted_end(q, i, c)
            toks[#toks + 1] = { c == "'" and "str" or "ident", i, j }
            i = j + 1
        elseif two == "$$" then
            local _, e = find(q, "$$", i + 2, true)
            toks[#toks + 1] = { "str", i, e or n }
            i = (e or n) + 1
        elseif find(c, "^[%w_]") then
            local _, e = find(q, "^[%w_]+", i)
            toks[#toks + 1] = { "word", i, e }
            i = e + 1
        else
            toks[#toks + 1] = { "punct", i, i }
            i = i + 1
        end
    end
    return toks
end

-- The text of a CQL statement with the literal after each PASSWORD
-- (PASSWORD 'x', PASSWORD = 'x', HASHED PASSWORD 'x') replaced: the text
-- to show, the secrets it held (each literal as written and its value),
-- and whether the password is a bind marker (then the statement's bound
-- values are hidden too).
function _M.statement(q)
    if type(q) ~= "string" or not find(lower(q), "password", 1, true) then
        return q, {}, false
    end
    local toks = cql_tokens(q)
    local secrets, hides = {}, false
    local out, at = {}, 1
    for k, t in ipairs(toks) do
        if t[1] == "word" and lower(sub(q, t[2], t[3])) == "password" then
            local nx = toks[k + 1]
            local target
            if nx and nx[1] == "punct" and sub(q, nx[2], nx[3]) == "=" then
                target = toks[k + 2]
            elseif nx and nx[1] == "str" then
                target = nx
            end
            if target then
                local tk = sub(q, target[2], target[3])
                if tk == "?" or tk == ":" then
                    hides = true
                elseif target[2] >= at then
                    out[#out + 1] = sub(q, at, target[2] - 1)
                    out[#out + 1] = target[1] == "str" and "'" .. MARK .. "'"
                                    or MARK
                    at = target[3] + 1
                    secrets[#secrets + 1] = tk
                    if sub(tk, 1, 2) == "$$" then
                        secrets[#secrets + 1] = tk:match("^%$%$(.-)%$?%$?$")
                    elseif target[1] == "str" then
                        local inner = tk:match("^'(.-)'?$"):gsub("''", "'")
                        secrets[#secrets + 1] = inner
                    end
                end
            end
        end
    end
    if at == 1 then
        return q, secrets, hides
    end
    out[#out + 1] = sub(q, at)
    return concat(out), secrets, hides
end

local function cql_proto()
    return protocols.get("cassandra")
end

local OP = {}
local function op(name)
    OP[name] = OP[name] or ffi.C["SH_CQL_" .. name]
    return OP[name]
end

local function is_response(m)
    return band(m.data[0], 0x80) ~= 0
end

-- the statement text a QUERY, PREPARE or EXECUTE runs, or nil
local function cql_text(m)
    local o = m.rtype
    if o == op("QUERY") or o == op("PREPARE") then
        local ok, q = pcall(m.query, m)
        return ok and q or nil
    elseif o == op("EXECUTE") then
        local st = require("shotover.cql.session").prepared(m)
        return st and st.query or nil
    end
    return nil
end

local function cql_secrets(m)
    if is_response(m) then
        return {}
    end
    if m.rtype == op("AUTH_RESPONSE") then
        local ok, body = pcall(m.body, m)
        local secrets = {}
        if ok and body and #body > 4 then
            local token = sub(body, 5)
            secrets[1] = token
            -- SASL PLAIN: authzid \0 user \0 password
            local pass = token:match("%z([^%z]*)$")
            if pass then
                secrets[2] = pass
            end
        end
        return secrets
    end
    local _, secrets, hides = _M.statement(cql_text(m))
    if hides then
        local ok, vals = pcall(m.values, m)
        if ok and vals then
            for k = 1, #vals do
                if type(vals[k]) == "string" then
                    secrets[#secrets + 1] = vals[k]
                end
            end
        end
    end
    return secrets
end

local CQL = {
    text = function(m, req, style)
        local p = cql_proto()
        if style == "describe" then
            return p.describe(m)            -- the header: never a secret
        end
        if not is_response(m) then
            if m.rtype == op("AUTH_RESPONSE") then
                return (style == "log" and p.describe(m) .. ": "
                        or "AUTH_RESPONSE ") .. MARK
            end
            if style == "log" then
                return p.log_text(m, _M.statement)
            end
            return p.show(m, _M.statement)
        end
        local text = style == "log" and p.describe(m) or p.show(m)
        if req ~= nil and p.is_error_reply(m) and req.proto == p.id then
            local secrets = cql_secrets(req)
            if #secrets > 0 then
                sort(secrets, longest_first)
                text = replace_all(text, secrets)
            end
        end
        return text
    end,
    secrets = cql_secrets,
}

-- The entry points ---------------------------------------------------------

local RULES = { redis = REDIS, cassandra = CQL }

-- the rules for m's protocol: ours, or the protocol module's own `redact`
-- table ({ text = fn(m, req, style), secrets = fn(m) }); nil for a
-- protocol that has none
local function rules_of(m)
    local p = protocols.by_id(m.proto)
    return RULES[p.name] or p.redact, p
end

-- Message m (a request or a reply, any protocol) as one line of text with
-- its credentials replaced by MARK.  `req` is the request m answers, when
-- m is a reply and the caller knows it (a CONFIG GET's reply is told by
-- its request).  `style`: "show" (traces, the repl: CQL as opcode,
-- statement and values; the default), "log" (debug_printer, tee: CQL as
-- header and statement) or "describe" (m:describe(): CQL as header only).
-- Redis looks the same in all three.
function _M.message(m, req, style)
    if m == nil then
        return "(none)"
    end
    if m:is_noreply() then
        return "(no reply)"             -- a slot that writes nothing
    end
    local r, p = rules_of(m)
    if r == nil then
        return fmt("(a %s message of %d bytes: not shown)", p.name,
                   tonumber(m.len))
    end
    local ok, text = pcall(r.text, m, req, style or "show")
    if not ok then
        -- never the raw bytes
        return fmt("(a %s message of %d bytes: %s)", p.name, tonumber(m.len),
                   tostring(text))
    end
    return text
end

-- The secrets request m carries, longest first (for scrub).
function _M.secrets(m)
    if m == nil or m:is_noreply() then
        return {}
    end
    local r = rules_of(m)
    if r == nil or r.secrets == nil then
        return {}
    end
    local ok, secrets = pcall(r.secrets, m)
    if not ok then
        return {}
    end
    sort(secrets, longest_first)
    return secrets
end

-- Text (an error message, say) with every secret of `reqs` -- a request, a
-- batch, or a list of requests -- replaced by MARK: for messages that may
-- echo what a client sent.
function _M.scrub(text, reqs)
    text = tostring(text)
    if reqs == nil then
        return text
    end
    local all = {}
    local function add(m)
        if m ~= nil then
            for _, s in ipairs(_M.secrets(m)) do
                all[#all + 1] = s
            end
        end
    end
    if type(reqs) == "table" then
        for _, m in ipairs(reqs) do
            add(m)
        end
    elseif ffi.istype("sh_batch_t", reqs) then
        for i = 1, reqs.n do
            add(reqs[i])
        end
    else
        add(reqs)
    end
    if #all == 0 then
        return text
    end
    sort(all, longest_first)
    return replace_all(text, all)
end

return _M
