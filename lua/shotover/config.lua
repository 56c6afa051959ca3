-- Config loading and validation.  A config is a Lua file returning a table.
-- Validation walks all of it before anything starts and reports every
-- problem with its path, e.g.
--   sources[1].chain[2].remote: expected "host:port", got 6380
local schema = require "shotover.schema"
local protocols = require "shotover.protocols"
local resolve = require "shotover.resolve"

local type = type
local pairs = pairs
local ipairs = ipairs
local pcall = pcall
local select = select
local rawget = rawget
local setmetatable = setmetatable
local tostring = tostring
local concat = table.concat
local fmt = string.format
local overlapping            -- (below) two listen addresses that collide

local _M = { _VERSION = "0.1.0" }

-- the protocols a transform module supports when it does not say
-- (`protocols = { ... }` in its module table): today's two
local DEFAULT_PROTOCOLS = { "redis", "cassandra" }

-- Every key a config may have.  `doc` says what it means: the config
-- reference (docs/shotover.lua.5.md, the man page shotover.lua(5)) is
-- written from these tables by docs/gen-config.lua.
local top_schema = {
    workers = { type = "workers", default = 1,
        doc = "Worker threads, each with its own event loop, Lua state, "
              .. "listening sockets and backend connections. Takes a "
              .. "restart to change." },
    admin = { type = "table",
        doc = "The admin endpoint (health, readiness, metrics, log level, "
              .. "reload, switches): see ADMIN KEYS. None without it. "
              .. "Takes a restart to change." },
    busy_poll_us = { type = "integer", min = 0, max = 1000, default = 50,
        doc = "Microseconds a worker keeps polling for the next reply or "
              .. "request before it sleeps, after it found work: a reply "
              .. "that follows within it costs no wake-up (a context "
              .. "switch, tens of µs on a VM). Adaptive: waits longer than "
              .. "this shrink the next poll to nothing, so slow backends "
              .. "and idle clients cost no CPU. 0 turns it off." },
    io_uring = { type = "boolean", default = true,
        doc = "Receive from the client sockets a poll finds readable in "
              .. "one io_uring submission after the poll, and send the "
              .. "small replies of a loop iteration in one before the "
              .. "next, instead of a read(2) or write(2) each (TLS "
              .. "clients, replies of 16 KiB or more and backend sockets "
              .. "go as before). Fewer system calls per request without "
              .. "pipelining. Where io_uring is not available (an old "
              .. "kernel, a seccomp filter such as a container runtime's "
              .. "default) sockets are read and written one by one, with "
              .. "a warning at start." },
    drain_timeout = { type = "number", min = 0, max = 86400, default = 30,
        doc = "Seconds a SIGTERM or SIGINT drain may take; then the "
              .. "connections that remain are closed." },
    sources = { type = "table", required = true,
        doc = "The listeners, each a table of SOURCE KEYS; at least one." },
}

local source_schema = {
    name = { type = "string", required = true,
        doc = "Its name in logs, metrics and the repl; unique." },
    protocol = { type = "string", required = true,
        doc = "`\"redis\"` (RESP2 and RESP3) or `\"cassandra\"` (CQL "
              .. "native protocol v3 to v5)." },
    listen = { type = "hostport", required = true,
        doc = "The address to listen on; `0.0.0.0` or `[::]` for every "
              .. "address. Two sources may not overlap." },
    chain = { type = "table", required = true,
        doc = "Its chain: see CHAIN ELEMENTS." },
    max_bulk_len = { type = "integer", min = 1, max = 2^32 - 1,
                     default = 512 * 1024 * 1024,
        doc = "Redis: the longest bulk string a client may send; over it "
              .. "the client gets Redis' own protocol error and is "
              .. "disconnected." },
    max_elements = { type = "integer", min = 1, max = 2^31 - 1,
                     default = 1024 * 1024,
        doc = "Redis: the most arguments of one request (and requests held "
              .. "at once by a transform that holds them)." },
    max_inline_len = { type = "integer", min = 16, max = 2^31 - 1,
                       default = 64 * 1024,
        doc = "Redis: the longest inline command line." },
    max_write_queue = { type = "integer", min = 1024, max = 2^32 - 1,
                        default = 16 * 1024 * 1024,
        doc = "Bytes of replies queued to a client that does not read "
              .. "before shotover stops reading from it (and a relay stops "
              .. "reading its backend)." },
    max_batch = { type = "integer", min = 1, max = 65536, default = 256,
        doc = "Requests run through the chain at once." },
    tls = { type = "table",
        doc = "TLS for its clients: `{ cert = \"server.pem\", key = "
              .. "\"server.key\" }`, with `ca = \"ca.pem\"` for client "
              .. "certificates (mTLS); keys `min_version`, `ciphers`, "
              .. "`ciphersuites`, `verify_client`. See docs/tls.md." },
    max_frame_size = { type = "integer", min = 1024, max = 256 * 1024 * 1024,
                       default = 16 * 1024 * 1024,
        doc = "Cassandra: the biggest frame body a client may send." },
    -- CQL: batches of one connection run at once (see sh_conn.c); the
    -- default is DEFAULT_LANES, or 1 when an element needs one at a time
    lanes = { type = "integer", min = 1, max = 1024,
        doc = "Cassandra: batches of one connection that run at once (16 "
              .. "when no element needs one at a time, else 1)." },
    -- another process may listen on the same address (SO_REUSEPORT then
    -- splits the clients between them): refused unless both say so
    share_listen = { type = "boolean", default = false,
        doc = "Let another process listen on the same address (both must "
              .. "say so; the kernel then splits the clients between "
              .. "them). Without it shotover refuses to start on an address "
              .. "in use." },
}

local DEFAULT_LANES = 16

-- The admin endpoint.  A token guards the routes that change something
-- (see c/sh_admin.c); token_file keeps it out of the config.
local admin_schema = {
    listen = { type = "hostport", default = "127.0.0.1:9001",
        doc = "The address of the admin endpoint (HTTP)." },
    token = { type = "string", secret = true,
        doc = "A bearer token (16 to 1024 characters) the routes that "
              .. "change something require; without one they answer "
              .. "loopback clients only." },
    token_file = { type = "string",
        doc = "A file holding the token instead (its first line)." },
    tls = { type = "table",
        doc = "HTTPS: `{ cert = \"admin.pem\", key = \"admin.key\" }`, "
              .. "with `ca` for client certificates; the keys of a "
              .. "source's `tls`. Certificates are read again on SIGHUP." },
}

-- RFC 6750's b64token, 16 to 1024 characters (c/sh_admin.c keeps 1024)
local TOKEN_MIN, TOKEN_MAX = 16, 1024
local TOKEN_RULE = fmt("a bearer token is %d to %d characters of A-Z a-z "
                       .. "0-9 - . _ ~ + / (then = padding)", TOKEN_MIN,
                       TOKEN_MAX)

local function token_ok(t)
    return #t >= TOKEN_MIN and #t <= TOKEN_MAX
           and t:find("^[%w%-%._~%+/]+=*$") ~= nil
end

-- the token each checked admin table resolved to (a file's content)
local admin_tokens = setmetatable({}, { __mode = "k" })

-- Check admin.token / admin.token_file and read the file; errors name
-- the key, never the token.
local function check_admin_token(admin, errs)
    local token, file = admin.token, admin.token_file
    if type(token) == "string" and type(file) == "string" then
        errs[#errs + 1] = "admin.token_file: give admin.token or "
                          .. "admin.token_file, not both"
        return
    end
    if type(token) == "string" then
        if not token_ok(token) then
            errs[#errs + 1] = "admin.token: " .. TOKEN_RULE
            return
        end
        admin_tokens[admin] = token
    elseif type(file) == "string" then
        local f, err = io.open(file, "rb")
        if not f then
            errs[#errs + 1] = fmt("admin.token_file: cannot read it: %s",
                                  tostring(err))
            return
        end
        local text = f:read(TOKEN_MAX + 64) or ""
        f:close()
        text = text:match("^%s*(.-)%s*$")
        if not token_ok(text) then
            errs[#errs + 1] = fmt("admin.token_file: %q does not hold one "
                                  .. "token: %s", file, TOKEN_RULE)
            return
        end
        admin_tokens[admin] = text
    end
end

-- What a chain element may do, declared by its module as
-- `capabilities = { ... }` and read here only (validation below and
-- shotover.chain's build ask capabilities()).  Each key is a boolean,
-- false when left out:
--   sink           it answers every request itself or through its own
--                  sub-chains, never calling chain:next(): it ends its
--                  chain, and must be last
--   lanes          correct with other batches of the same client running
--                  between its chain:next() and its return (CQL lanes);
--                  a chain gets lanes only if all its elements say so
--   holds_batches  it keeps a batch waiting for later batches of the
--                  connection (shotover.park): its source's chain is run
--                  by the parking runner; implies one batch at a time
--   subchains      it holds chains of its own, which its subchains(conf)
--                  lists so validation checks them like any chain
local CAPABILITIES = { sink = true, lanes = true, holds_batches = true,
                       subchains = true }
_M.CAPABILITIES = CAPABILITIES

-- An inline function element: passes requests on, allows lanes.
local INLINE = { sink = false, lanes = true, holds_batches = false,
                 subchains = false }

local checked = setmetatable({}, { __mode = "k" })

-- The capabilities of module mod (a transform module, or a function for an
-- inline element), every key present.  Returns the table or nil and what
-- is wrong with the declaration.
function _M.capabilities(mod)
    if type(mod) == "function" then
        return INLINE
    end
    local caps = checked[mod]
    if caps ~= nil then
        return caps
    end
    local decl = mod.capabilities
    if decl == nil then
        decl = {}
    elseif type(decl) ~= "table" then
        return nil, "capabilities: expected a table, got " .. schema.show(decl)
    end
    for _, old in ipairs({ "terminal", "lanes" }) do
        if mod[old] ~= nil then
            return nil, fmt("%s: declare it in capabilities (sink, lanes, "
                            .. "holds_batches, subchains)", old)
        end
    end
    caps = {}
    for k, v in pairs(decl) do
        if not CAPABILITIES[k] then
            return nil, fmt("capabilities.%s: unknown capability (one of "
                            .. "sink, lanes, holds_batches, subchains)",
                            tostring(k))
        end
        if type(v) ~= "boolean" then
            return nil, fmt("capabilities.%s: expected a boolean, got %s",
                            k, schema.show(v))
        end
        caps[k] = v
    end
    for k in pairs(CAPABILITIES) do
        caps[k] = caps[k] or false
    end
    if caps.subchains ~= (type(mod.subchains) == "function") then
        return nil, caps.subchains
            and "capabilities.subchains: needs a subchains(conf) function"
            or "subchains(conf): declare capabilities.subchains = true"
    end
    if caps.holds_batches and caps.lanes then
        return nil, "capabilities: holds_batches needs one batch at a time, "
                    .. "so not lanes"
    end
    checked[mod] = caps
    return caps
end

-- Resolve a chain element's module: shotover.transforms.<name>, so an
-- installed rock adds transforms.  Returns module or nil, message.
function _M.load_transform(name)
    local modname = "shotover.transforms." .. name
    local ok, mod = pcall(require, modname)
    if not ok then
        if tostring(mod):find("module '" .. modname .. "' not found", 1, true)
        then
            return nil, fmt("unknown transform %q (no module %s)", name,
                            modname)
        end
        return nil, fmt("transform %q failed to load: %s", name,
                        tostring(mod))
    end
    if type(mod) ~= "table" or type(mod.new) ~= "function" then
        return nil, fmt("module %s is not a transform (no new())", modname)
    end
    local _, err = _M.capabilities(mod)
    if err then
        return nil, fmt("module %s: %s", modname, err)
    end
    return mod
end

-- Does transform module `mod` support protocol `name`?
function _M.supports(mod, name)
    for _, p in ipairs(mod.protocols or DEFAULT_PROTOCOLS) do
        if p == name then
            return true
        end
    end
    return false
end

-- The context a sub-chain is checked in: its own protocol when the
-- transform declares one for it (a `protocol` in its subchains() entry),
-- else its parent's.  What the check learns (ctx.serial) is shared.
local function sub_context(ctx, sub)
    if sub.protocol == nil or ctx == nil or sub.protocol == ctx.protocol then
        return ctx
    end
    return setmetatable({ protocol = sub.protocol }, { __index = ctx })
end

-- Note the "host:port" options of an element (its schema's hostport keys)
-- in `hosts`, for resolve_hosts: { path, host, port }.
local function note_hosts(hosts, opts, s, epath)
    local keys = {}
    for k, spec in pairs(s) do
        if spec.type == "hostport" then
            keys[#keys + 1] = k
        end
    end
    table.sort(keys)
    for _, k in ipairs(keys) do
        local host, port = schema.parse_hostport(opts[k])
        if host then
            hosts[#hosts + 1] = { path = epath .. "." .. k, host = host,
                                  port = port }
        end
    end
end

-- A check_config message under the element's path: one that opens with
-- the option it is about ("routes[2].match.colour: unknown rule") reads
-- as one path, sources[1].chain[1].routes[2].match.colour: ...
local function element_error(epath, msg)
    -- (a key may be indexed by a quoted name: old_keks["2025-01"])
    local key, rest = msg:match('^([%a_][%w_]*[%w_%.%[%]"%-]*): (.*)$')
    if key then
        return fmt("%s.%s: %s", epath, key, rest)
    end
    return epath .. ": " .. msg
end

-- Validate one chain; element configs get their defaults filled in.
-- `errs` collects "path: message" strings; ctx.protocol is the chain's
-- protocol (a source's, or a sub-chain's).
function _M.check_chain(chain, path, errs, ctx)
    if type(chain) ~= "table" then
        errs[#errs + 1] = fmt("%s: expected a list of transforms, got %s",
                              path, schema.show(chain))
        return
    end
    if #chain == 0 then
        errs[#errs + 1] = path .. ": a chain needs at least one element"
        return
    end
    for k in pairs(chain) do
        if type(k) ~= "number" or k < 1 or k > #chain or k % 1 ~= 0 then
            errs[#errs + 1] = fmt("%s: unexpected key %s (a chain is a list)",
                                  path, schema.show(k))
        end
    end
    for i, el in ipairs(chain) do
        local epath = fmt("%s[%d]", path, i)
        local last = i == #chain
        if type(el) == "function" then
            chain[i] = { el }
            el = chain[i]
        end
        if type(el) ~= "table" then
            errs[#errs + 1] = fmt("%s: expected a transform like { \"redis\", "
                                  .. "remote = ... } or a function, got %s",
                                  epath, schema.show(el))
        elseif type(el[1]) == "function" then
            -- inline transform: function(batch, chain)
            for k in pairs(el) do
                if k ~= 1 and k ~= "name" then
                    errs[#errs + 1] = fmt("%s.%s: inline transforms take no "
                                          .. "options", epath, tostring(k))
                end
            end
        elseif type(el[1]) ~= "string" then
            errs[#errs + 1] = fmt("%s[1]: expected a transform name or a "
                                  .. "function, got %s", epath,
                                  schema.show(el[1]))
        else
            local mod, err = _M.load_transform(el[1])
            if not mod then
                errs[#errs + 1] = epath .. ": " .. err
            elseif ctx and ctx.protocol and not _M.supports(mod, ctx.protocol)
            then
                -- nothing else about it matters: it would see messages it
                -- cannot read
                errs[#errs + 1] = fmt("%s: transform %q does not support "
                                      .. "protocol %q", epath, el[1],
                                      ctx.protocol)
            else
                local s = {}
                for k, v in pairs(mod.schema or {}) do
                    s[k] = v
                end
                s.name = s.name or { type = "string" }
                local opts = {}
                for k, v in pairs(el) do
                    if k ~= 1 then
                        opts[k] = v
                    end
                end
                if el[2] ~= nil then
                    errs[#errs + 1] = fmt("%s[2]: options go in named keys, "
                                          .. "got a second list item", epath)
                    opts[2] = nil
                end
                local caps = _M.capabilities(mod)
                -- an element that must see a connection's batches one at a
                -- time (its module does not declare capabilities.lanes)
                if ctx and not caps.lanes and not ctx.serial then
                    ctx.serial = fmt("%s (%s)", epath, el[1])
                end
                local n = #errs
                schema.check(opts, s, epath, errs, ctx)
                if ctx and ctx.hosts then
                    note_hosts(ctx.hosts, opts, s, epath)
                end
                -- its own checks run on options of the right types; they
                -- may find several problems (a list) and every one is
                -- listed, as are the problems of its sub-chains
                local typed = #errs == n
                if typed and mod.check_config then
                    -- a check that raises is a problem of this element,
                    -- reported like the others (not a traceback)
                    local called, ok, e = pcall(mod.check_config, opts, ctx)
                    if not called then
                        ok, e = nil, fmt("%s's check_config raised an "
                                         .. "error: %s", el[1], tostring(ok))
                    end
                    if not ok then
                        for _, msg in ipairs(type(e) == "table" and e
                                             or { e }) do
                            errs[#errs + 1] = element_error(epath,
                                                            tostring(msg))
                        end
                    end
                end
                -- sub-chains (router, tee, ...) are chains like any other:
                -- the module names them, they are checked the same way
                local subs = {}
                if typed and caps.subchains then
                    local called, list = pcall(mod.subchains, opts)
                    if called and type(list) == "table" then
                        subs = list
                    else
                        errs[#errs + 1] = fmt("%s: %s's subchains() %s",
                            epath, el[1], called and "returned no list"
                            or "raised an error: " .. tostring(list))
                    end
                end
                for _, sub in ipairs(subs) do
                    local sctx = sub_context(ctx, sub)
                    if sub.protocol ~= nil
                       and not protocols.find(sub.protocol)
                    then
                        errs[#errs + 1] = fmt("%s%s: %s", epath, sub.path,
                            select(2, protocols.find(sub.protocol)))
                    else
                        _M.check_chain(sub.chain, epath .. sub.path, errs,
                                       sctx)
                    end
                    if sctx ~= ctx then
                        ctx.serial = ctx.serial or rawget(sctx, "serial")
                    end
                end
                for k, v in pairs(opts) do
                    el[k] = v
                end
                if caps.sink and not last then
                    errs[#errs + 1] = fmt("%s: %q is a sink and must be the "
                                          .. "last element of its chain",
                                          epath, el[1])
                elseif last and not caps.sink then
                    errs[#errs + 1] = fmt("%s: the chain must end in a sink "
                                          .. "(%q passes requests on)",
                                          epath, el[1])
                end
            end
        end
    end
end

-- A source's lanes (batches of one connection run at once): only CQL, whose
-- replies carry stream ids, and only when every element allows it; serial
-- is the path of the first element that does not.
function _M.check_lanes(src, path, serial, errs)
    local asked = src.lanes
    if type(asked) ~= "number" then
        asked = nil                  -- the schema reported it
    end
    local proto = protocols.find(src.protocol)
    if not (proto and proto.lanes) then
        if asked and asked > 1 then
            errs[#errs + 1] = fmt("%s.lanes: only cassandra sources run a "
                                  .. "connection's batches at once (a Redis "
                                  .. "client's replies keep its request "
                                  .. "order); got %d", path, asked)
        end
        src.lanes = 1
    elseif serial then
        if asked and asked > 1 then
            errs[#errs + 1] = fmt("%s.lanes: %s sees a connection's batches "
                                  .. "one at a time; set lanes = 1 or leave "
                                  .. "it out", path, serial)
        end
        src.lanes = 1
    else
        src.lanes = asked or DEFAULT_LANES
    end
end

-- What a remote that does not resolve means at run time (the sinks look
-- names up at each connect, without blocking; see docs/transforms/redis.md)
local REMOTE_NOTE = " (`run` starts anyway: requests to it fail until the "
                    .. "name resolves)"

-- Resolve what `hosts` lists ({ path, host, port, listen }), appending
-- "path: cannot resolve ..." to errs.  which: "listen" for the addresses
-- to bind (sources' listen, admin.listen: `run` cannot start without
-- them), "all" for the sinks' remotes too (`shotover check`).
local function resolve_hosts(hosts, which, errs)
    local seen = {}         -- each name is looked up once (DNS may be slow)
    for _, h in ipairs(hosts) do
        if h.listen or which == "all" then
            local key = (h.listen and "L " or "C ") .. h.host
            local got = seen[key]
            if got == nil then
                local ok, e = resolve.resolve(h.host, h.port, h.listen)
                got = ok and true or e
                seen[key] = got
            end
            local ok, err = got == true, got
            if not ok then
                errs[#errs + 1] = fmt("%s: %s%s", h.path, err,
                                      h.listen and "" or REMOTE_NOTE)
            end
        end
    end
end

-- Validate a whole config table.  Returns the config (defaults filled in) or
-- nil and the list of errors.  opts.resolve: nil (resolve nothing),
-- "listen" or "all" (see resolve_hosts; blocking, so never on a worker).
function _M.check(conf, opts)
    local errs = {}
    local hosts = {}
    if type(conf) ~= "table" then
        return nil, { "config: expected the file to return a table, got "
                      .. schema.show(conf) }
    end
    schema.check(conf, top_schema, "", errs)
    if type(conf.admin) == "table" then
        local n = #errs
        schema.check(conf.admin, admin_schema, "admin", errs)
        if type(conf.admin.tls) == "table" then
            for _, e in ipairs(require("shotover.tls").check(
                    conf.admin.tls, "admin.tls", true)) do
                errs[#errs + 1] = e
            end
        end
        check_admin_token(conf.admin, errs)
        if #errs == n then
            local host, port = schema.parse_hostport(conf.admin.listen)
            hosts[#hosts + 1] = { path = "admin.listen", host = host,
                                  port = port, listen = true }
        end
    end
    local sources = conf.sources
    if type(sources) == "table" then
        if #sources == 0 then
            errs[#errs + 1] = "sources: at least one source is needed"
        end
        local names, listens = {}, {}
        for i, src in ipairs(sources) do
            local path = fmt("sources[%d]", i)
            if type(src) ~= "table" then
                errs[#errs + 1] = fmt("%s: expected a table, got %s", path,
                                      schema.show(src))
            else
                local n = #errs
                schema.check(src, source_schema, path, errs)
                if type(src.tls) == "table" then
                    for _, e in ipairs(require("shotover.tls").check(
                            src.tls, path .. ".tls", true)) do
                        errs[#errs + 1] = e
                    end
                end
                local cctx = { protocol = src.protocol }
                if type(src.protocol) == "string"
                   and not protocols.find(src.protocol)
                then
                    errs[#errs + 1] = fmt("%s.protocol: expected \"redis\" "
                                          .. "or \"cassandra\", got %q", path,
                                          src.protocol)
                    cctx.protocol = nil     -- reported once, here
                end
                if type(src.name) == "string" then
                    if names[src.name] then
                        errs[#errs + 1] = fmt("%s.name: %q is already the "
                                              .. "name of sources[%d]", path,
                                              src.name, names[src.name])
                    end
                    names[src.name] = i
                end
                if type(src.listen) == "string" and #errs == n then
                    local host, port = schema.parse_hostport(src.listen)
                    local other = overlapping(listens, host, port)
                    if other then
                        errs[#errs + 1] = fmt("%s.listen: %s overlaps "
                            .. "sources[%d].listen %s (%s)", path,
                            src.listen, other.i, other.listen,
                            other.host == host and "the same address"
                            or "the same port, and a wildcard address is "
                               .. "every address")
                    end
                    listens[#listens + 1] = { i = i, listen = src.listen,
                                              host = host, port = port }
                    hosts[#hosts + 1] = { path = path .. ".listen",
                                          host = host, port = port,
                                          listen = true }
                end
                if src.chain ~= nil then
                    cctx.hosts = hosts
                    _M.check_chain(src.chain, path .. ".chain", errs, cctx)
                end
                _M.check_lanes(src, path, cctx.serial, errs)
            end
        end
    end
    if opts and opts.resolve then
        resolve_hosts(hosts, opts.resolve, errs)
    end
    if #errs > 0 then
        return nil, errs
    end
    return conf
end

-- The source in listens whose address takes port on host too: the same
-- address, or either one a wildcard (0.0.0.0, ::), which binds every
-- address of its family and, for ::, IPv4 as well.
local WILDCARD = { ["0.0.0.0"] = true, ["::"] = true, ["[::]"] = true,
                   ["*"] = true, [""] = true }

overlapping = function(listens, host, port)
    for _, l in ipairs(listens) do
        if l.port == port and (l.host == host or WILDCARD[l.host]
                               or WILDCARD[host])
        then
            return l
        end
    end
end

-- The schemas a config is checked against (for docs/gen-config.lua).
function _M.schemas()
    return { top = top_schema, source = source_schema, admin = admin_schema }
end

-- Load and validate a config file.  Returns the config or nil, errors.
-- opts as for check.
function _M.load(path, opts)
    local chunk, err = loadfile(path)
    if not chunk then
        return nil, { "config: cannot load " .. tostring(err) }
    end
    local ok, conf = pcall(chunk)
    if not ok then
        return nil, { fmt("config: %s raised an error: %s", path,
                          tostring(conf)) }
    end
    return _M.check(conf, opts)
end

-- The bearer token of a checked config's admin endpoint (admin.token or
-- the content of admin.token_file), or nil.
function _M.admin_token(conf)
    return type(conf.admin) == "table" and admin_tokens[conf.admin] or nil
end

-- For the start of `run`, before any worker: returns the worker count
-- (0 for "auto"), the admin endpoint's host and port (nil when none) and
-- its token (nil when none), or nil and the error lines (with JSON logs
-- they are logged, one object each, and the lines are empty).  The addresses
-- to listen on are resolved here, so one that does not resolve stops
-- `run` with its path instead of failing a worker; remotes are not (the
-- sinks look them up at each connect).
function _M.check_file(path)
    local conf, errs = _M.load(path, { resolve = "listen" })
    if not conf then
        -- JSON logs: one error object per problem, as every line `run`
        -- writes is one; text: the lines `check` prints
        local log = require "shotover.log"
        if log.json() then
            for _, e in ipairs(errs) do
                log.error("%s", e)
            end
            return nil, ""
        end
        return nil, concat(errs, "\n") .. "\n"
    end
    local host, port, tls
    if conf.admin then
        host, port = schema.parse_hostport(conf.admin.listen)
        tls = require("shotover.tls").handover(conf.admin.tls)
    end
    return conf.workers == "auto" and 0 or conf.workers, host, port,
           _M.admin_token(conf), math.floor(conf.drain_timeout * 1000 + 0.5),
           tls
end

return _M
