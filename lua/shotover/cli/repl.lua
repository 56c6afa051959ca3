-- `shotover repl -c CONF [--dry] [--source NAME]`: load the config as
-- `check` does, then read Redis commands or CQL statements (by the current
-- source's protocol) and show, for each, the path it took through the chain,
-- what every transform did to it and the reply.  Lines starting with "="
-- evaluate a Lua expression (its values pretty-printed), "lua " a Lua
-- chunk; ".help" lists the rest (".reload" re-reads the config; any other
-- line starting with "." is refused here, never sent).
--
-- Live (the default): the config's chains run in one in-process worker
-- (sh_ffi_workers_start) listening on free loopback ports; the repl is a
-- plain client of it and the worker appends each batch's trace to a file
-- the repl reads back (shotover.cli.live).  --dry: the chains are built
-- without a worker in this Lua state; sinks answer without a backend
-- (shotover.dry).  See docs/route-test.md.
local ffi = require "ffi"
local common = require "shotover.cli.common"
local trace = require "shotover.trace"
local redact = require "shotover.redact"
local message = require "shotover.message"

local fmt = string.format
local concat = table.concat

local _M = { _VERSION = "0.1.0" }

local USAGE = "usage: shotover repl -c CONF [--dry] [--source NAME] "
              .. "[--timeout SECONDS]\n"

local HELP = [[
  COMMAND ARGS...           a Redis command (redis source), quotes as redis-cli
  STATEMENT -- values: 1,'x' a CQL statement with bound values (cassandra)
  = EXPR                    evaluate a Lua expression (conf, source, sources,
                            trace, message; chain in --dry mode)
  lua CHUNK                 run Lua statements
  .source NAME              send to another source; .sources lists them
  .reload                   re-read the config (kept as it was if invalid)
  .help  .quit              (also Ctrl-D)
]]

local DOT_COMMANDS = { ".source", ".sources", ".reload", ".help", ".quit",
                       ".exit" }

-- Pretty-printing Lua values ---------------------------------------------

local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in
            local nil not or repeat return then true until
            while]]):gmatch("%a+") do
    KEYWORDS[w] = true
end

local function key_text(k)
    if type(k) == "string" and k:match("^[%a_][%w_]*$")
       and not KEYWORDS[k] then
        return k
    end
    if type(k) == "string" then
        return "[" .. fmt("%q", k):gsub("\\\n", "\\n") .. "]"
    end
    return "[" .. tostring(k) .. "]"
end

-- keys whose string values are credentials (a sink's password, a token)
local function secret_key(k)
    k = k:lower()
    return k:find("password", 1, true) or k:find("secret", 1, true)
           or k:find("token", 1, true) or k:find("passwd", 1, true)
           or k == "auth" or k == "requirepass" or k == "masterauth"
end

local function key_order(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then
        return ta < tb
    end
    if ta == "number" or ta == "string" then
        return a < b
    end
    return tostring(a) < tostring(b)
end

-- A Lua value as text: strings quoted, tables as constructors (the list
-- part first, then the other keys sorted, nested tables indented), a table
-- seen before on the way as <cycle>, below `depth` levels as { ... }; a
-- table with a __tostring as that (CQL nulls, Redis errors).
local function pretty(v, indent, depth, seen)
    local t = type(v)
    if t == "string" then
        return (fmt("%q", v):gsub("\\\n", "\\n"))
    elseif t ~= "table" then
        return tostring(v)
    end
    local mt = getmetatable(v)
    if mt and mt.__tostring then
        return tostring(v)
    end
    indent, depth, seen = indent or "", depth or 6, seen or {}
    if seen[v] then
        return "<cycle>"
    end
    if next(v) == nil then
        return "{}"
    end
    if depth == 0 then
        return "{ ... }"
    end
    seen[v] = true
    local inner = indent .. "  "
    local items, n = {}, #v
    for i = 1, n do
        items[#items + 1] = pretty(v[i], inner, depth - 1, seen)
    end
    local keys = {}
    for k in pairs(v) do
        if not (type(k) == "number" and k >= 1 and k <= n and k % 1 == 0) then
            keys[#keys + 1] = k
        end
    end
    table.sort(keys, key_order)
    for _, k in ipairs(keys) do
        local x = v[k]
        -- a config's passwords and tokens stay out of the transcript
        local text = type(x) == "string" and type(k) == "string"
                     and secret_key(k) and '"<redacted>"'
                     or pretty(x, inner, depth - 1, seen)
        items[#items + 1] = key_text(k) .. " = " .. text
    end
    seen[v] = nil
    local one = "{ " .. concat(items, ", ") .. " }"
    if #one + #indent <= 78 and not one:find("\n") then
        return one
    end
    return "{\n" .. inner .. concat(items, ",\n" .. inner) .. "\n" .. indent
           .. "}"
end
_M.pretty = pretty

-- CQL rows as a table -----------------------------------------------------

local SECRET_COLUMN = { salted_hash = true, password = true, secret = true }

local function cell(v, col)
    if SECRET_COLUMN[col] then
        return "<redacted>"
    end
    if v == nil then
        return "null"
    end
    if type(v) == "string" then
        if v:find("[%z\1-\31\127-\255]") then
            return "0x" .. v:gsub(".", function(c)
                return fmt("%02x", c:byte())
            end)
        end
        return v
    end
    if type(v) == "table" then
        local mt = getmetatable(v)
        if mt and mt.__tostring then
            return tostring(v)
        end
        return pretty(v, "", 3):gsub("%s*\n%s*", " ")
    end
    return tostring(v)
end

-- The rows of a CQL RESULT Rows reply r (to request req) as lines of an
-- aligned text table, or nil for any other reply.
function _M.rows_table(r, req)
    if r.proto ~= require("shotover.ffi").C.SH_PROTO_CQL then
        return nil
    end
    local ok, rows = pcall(r.rows, r, req)
    if not ok or not rows or not rows.columns then
        return nil
    end
    local names, width = {}, {}
    for c, col in ipairs(rows.columns) do
        names[c] = col.name or ("#" .. c)
        width[c] = #names[c]
    end
    if #names == 0 then
        return nil
    end
    local cells = {}
    for i, row in ipairs(rows) do
        cells[i] = {}
        for c, name in ipairs(names) do
            local v = row[name]
            if v == nil then
                v = row[c]
            end
            local text = cell(v, name)
            if #text > 60 then
                text = text:sub(1, 57) .. "..."
            end
            cells[i][c] = text
            if #text > width[c] then
                width[c] = #text
            end
        end
    end
    local function line(vals)
        local out = {}
        for c, v in ipairs(vals) do
            out[c] = v .. string.rep(" ", width[c] - #v)
        end
        return (" " .. concat(out, " | ")):gsub("%s+$", "")
    end
    local rule = {}
    for c = 1, #names do
        rule[c] = string.rep("-", width[c])
    end
    local lines = { line(names), "-" .. concat(rule, "-+-") }
    for _, r1 in ipairs(cells) do
        lines[#lines + 1] = line(r1)
    end
    lines[#lines + 1] = fmt("(%d row%s)", #cells, #cells == 1 and "" or "s")
    return lines
end

-- Completion ----------------------------------------------------------------

local CQL_WORDS = { "SELECT", "INSERT", "UPDATE", "DELETE", "BATCH", "BEGIN",
                    "APPLY", "USE", "CREATE", "ALTER", "DROP", "TRUNCATE",
                    "GRANT", "REVOKE", "LIST", "FROM", "WHERE", "INTO",
                    "VALUES", "SET", "IF", "EXISTS", "NOT", "AND", "LIMIT",
                    "KEYSPACE", "TABLE", "INDEX", "TYPE", "ROLE", "USER" }

local redis_names
-- The completions of the first word `text` of a line, for a source of
-- `protocol`: dot-commands, and Redis command names (from the command
-- table) or CQL keywords, in the case `text` is typed in (lower case when
-- it is all lower case).  Sorted.
function _M.completions(text, protocol)
    local out = {}
    if text:sub(1, 1) == "." then
        for _, d in ipairs(DOT_COMMANDS) do
            if d:sub(1, #text) == text then
                out[#out + 1] = d
            end
        end
        table.sort(out)
        return out
    end
    local words
    if protocol == "cassandra" then
        words = CQL_WORDS
    else
        if not redis_names then
            local ids = require "shotover.redis.command_ids"
            redis_names = {}
            for id = 1, ids.count do
                redis_names[id] = ids.name(id)
            end
        end
        words = redis_names
    end
    local up = text:upper()
    local lower = text ~= "" and text == text:lower()
    for _, w in ipairs(words) do
        if w:sub(1, #up) == up then
            out[#out + 1] = lower and w:lower() or w
        end
    end
    table.sort(out)
    return out
end

pcall(ffi.cdef, "int isatty(int fd);")

-- Line input: libedit (or GNU readline) through the FFI when stdin is a
-- terminal, with history in ~/.shotover_history (but no line for which
-- secret(line) is true: a password typed stays out of the file); plain
-- reads otherwise, each line echoed as shown(line) gives it.
--
-- Tab completes the first word of a line (_M.completions: command names,
-- CQL keywords, dot-commands) through the library's
-- rl_completion_entry_function, a generator called back into Lua; the
-- readline call runs with the JIT off for it, as FFI callbacks require.
local function line_reader(secret, shown, complete)
    if ffi.C.isatty(0) == 0 then
        return function(prompt)
            local line = io.read("*l")
            if line then
                io.stdout:write(prompt, shown(line), "\n")
            end
            return line
        end, function() end
    end
    local lib
    for _, name in ipairs({ "libedit.so.2", "libreadline.so.8", "edit",
                            "readline" }) do
        local ok, l = pcall(ffi.load, name)
        if ok then
            lib = l
            break
        end
    end
    if lib == nil then
        return function(prompt)
            io.stdout:write(prompt)
            io.stdout:flush()
            return io.read("*l")
        end, function() end
    end
    pcall(ffi.cdef, [[
        char *readline(const char *prompt);
        int add_history(const char *line);
        int read_history(const char *file);
        int write_history(const char *file);
        void free(void *p);
        char *strdup(const char *s);
        typedef char *(*sh_rl_compentry_t)(const char *, int);
        extern sh_rl_compentry_t rl_completion_entry_function;
        extern char *rl_line_buffer;
        extern int rl_point;
    ]])
    -- completion: matches for the word being typed, when it is the first
    local matches, callback
    pcall(function()
        callback = ffi.cast("sh_rl_compentry_t", function(text, state)
            if state == 0 then
                local t = ffi.string(text)
                local before = ffi.string(lib.rl_line_buffer, lib.rl_point)
                matches = {}
                if before:match("^%s*%S*$") then
                    matches = complete(t)
                end
            end
            local m = matches[state + 1]
            if m == nil then
                return nil
            end
            return ffi.C.strdup(m)         -- readline frees it
        end)
        lib.rl_completion_entry_function = callback
    end)
    local function readline(prompt)
        return lib.readline(prompt)
    end
    jit.off(readline)
    local home = os.getenv("HOME")
    local hist = home and (home .. "/.shotover_history")
    if hist then
        lib.read_history(hist)
    end
    return function(prompt)
        local p = readline(prompt)
        if p == nil then
            return nil
        end
        local line = ffi.string(p)
        ffi.C.free(p)
        if line:find("%S") and not secret(line) then
            lib.add_history(line)
        end
        return line
    end, function()
        if hist then
            lib.write_history(hist)
        end
    end
end

-- "STATEMENT -- values: 1, 'x'" or "-- values: { 1, 'x' }": the statement
-- and its values (a single table that is a list, not a typed value such as
-- { type = "bigint", value = 5 }, is the list of values)
local function cql_values(line)
    local stmt, vals = line:match("^(.-)%s*%-%-%s*values:%s*(.*)$")
    if not stmt then
        return line
    end
    local fn, err = loadstring("return { " .. vals .. " }", "=values")
    if not fn then
        return nil, err
    end
    local ok, t = pcall(setfenv(fn, { null = require("shotover.cql.request")
                                                .NULL }))
    if not ok then
        return nil, t
    end
    local only = t[1]
    if #t == 1 and type(only) == "table" and only.type == nil
       and getmetatable(only) == nil then
        t = only
    end
    return stmt, t
end
_M.cql_values = cql_values

-- The request a typed line makes on source src, or nil (a command of the
-- repl itself, or a line that makes none).
local function typed_request(src, line)
    line = line:match("^%s*(.-)%s*$")
    if line == "" or line:find("^[.=]") or line:find("^lua%s") then
        return nil
    end
    local req, values = line, nil
    if src.protocol == "cassandra" then
        req, values = cql_values(line)
    end
    return req and common.request(src.protocol, req, values) or nil
end

-- Live mode ----------------------------------------------------------------

local Live = {}
Live.__index = Live

local function start_live(conf_path, conf, timeout)
    local base = require "shotover.ffi"
    local client = require "shotover.cli.client"
    local ports, addrs = {}, {}
    for i in ipairs(conf.sources) do
        ports[i] = client.free_port()
        addrs[i] = "127.0.0.1:" .. ports[i]
    end
    local tpath = os.tmpname()
    client.setenv("SHOTOVER_REPL_LISTEN", concat(addrs, ","))
    client.setenv("SHOTOVER_REPL_TRACE", tpath)
    local err = ffi.new("const char *[1]")
    if base.C.sh_ffi_workers_start(conf_path, 1, err) ~= 0 then
        os.remove(tpath)
        return nil, ffi.string(err[0])
    end
    return setmetatable({ ports = ports, tpath = tpath, offset = 0,
                          pending = {}, conns = {}, client = client,
                          timeout = timeout }, Live)
end

-- The traces the worker has written and the repl not yet read, one per
-- batch, oldest first.
function Live:read_traces()
    local f = io.open(self.tpath, "r")
    if not f then
        return
    end
    f:seek("set", self.offset)
    local data = f:read("*a") or ""
    f:close()
    local consumed = 0
    for line in data:gmatch("([^\n]*)\n") do
        consumed = consumed + #line + 1
        self.pending[#self.pending + 1] = assert(trace.deserialize(line))
    end
    self.offset = self.offset + consumed
end

function Live:next_trace()
    if #self.pending == 0 then
        self:read_traces()
    end
    return table.remove(self.pending, 1)
end

function Live:skip_traces()
    self:read_traces()
    self.pending = {}
end

function Live:conn(i, src)
    local c = self.conns[i]
    if c and c.fd then
        return c
    end
    local err
    c, err = self.client.connect(self.ports[i])
    if not c then
        return nil, err
    end
    if src.protocol == "cassandra" then
        local cq = require "shotover.cql.request"
        c:send(cq.startup():raw())
        local r
        r, err = c:reply("cassandra", self.timeout)
        if not r then
            c:close()
            return nil, "handshake: " .. err
        end
        local f = message.frame_from_cql(r)
        if not f or f.rtype ~= require("shotover.ffi").C.SH_CQL_READY then
            c:close()
            return nil, "handshake: " .. (f and trace.show(f) or "bad reply")
        end
    end
    self:skip_traces()                      -- not the handshake's
    self.conns[i] = c
    return c
end

-- Frames nobody asked for: pub/sub messages (RESP2 arrays and RESP3
-- pushes of these kinds), MONITOR's lines, CQL EVENTs.  Subscription
-- confirmations and a subscriber's PING answer commands: not these.
local PUSH_KINDS = { message = true, pmessage = true, smessage = true,
                     invalidate = true }
local CQL_EVENT = 0x0C

local function unsolicited(proto, r)
    if proto ~= "redis" then
        return r:byte(5) == CQL_EVENT        -- the envelope's opcode
    end
    local kind = r:match("^[>*]%d+\r\n%$%d+\r\n([^\r]*)\r\n")
    if kind then
        return PUSH_KINDS[kind:lower()] == true
    end
    -- +1700000000.123456 [0 127.0.0.1:5555] "GET" "k"
    return r:match("^%+%d+%.%d+ %[") ~= nil
end

local function parse(proto, r)
    if proto == "redis" then
        return message.frame_from_resp(r)
    end
    return message.frame_from_cql(r)
end

-- Is frame r (bytes; m parsed) the reply to the request whose batch trace
-- is tr (nil when none came)?  The chain's own reply is the frame showing
-- as the trace says (RESP3 pushes may come before it); a reply the
-- backend's connection relays (a subscriber's) is the first frame that is
-- not unsolicited.
local function is_reply(proto, r, m, tr, req)
    if unsolicited(proto, r) then
        return false
    end
    if proto == "redis" and tr and tr.relayed and tr.relayed[1] == false then
        return r:sub(1, 1) ~= ">" or trace.show(m, req) == tr.replies[1]
    end
    return true
end

-- Wait for the trace of the batch just sent.  The worker writes it before
-- the batch's replies go out, so a reply read without one means none is
-- coming (no chain ran).  Unsolicited frames read meanwhile go to pushed.
function Live:await_trace(c, proto, pushed)
    local now_ns = require("shotover.metrics").now_ns
    local deadline = now_ns() + self.timeout * 1e6
    while true do
        local tr = self:next_trace()
        if tr then
            return tr
        end
        local r = c:take(proto)
        if r then
            if not unsolicited(proto, r) then
                c:untake(r)
                return self:next_trace()
            end
            pushed[#pushed + 1] = parse(proto, r)
        else
            if now_ns() > deadline then
                return nil
            end
            local ok, err = c:fill(20)
            if not ok and err == "connection closed" then
                return self:next_trace()
            end
        end
    end
end

-- Send f on source i.  Returns the reply, its batch's traces, the frames
-- nobody asked for that came before it (pub/sub messages, RESP3 pushes,
-- CQL events; { late = frame } for a reply to an earlier command) and
-- those right after it ({ more = frame } for another reply to this
-- command), or nil and a message.
function Live:run(i, src, f)
    local c, err = self:conn(i, src)
    if not c then
        return nil, err
    end
    local proto = src.protocol
    -- what came while the repl waited for input
    local pushed = {}
    for _, r in ipairs(c:drain(proto)) do
        pushed[#pushed + 1] = unsolicited(proto, r) and parse(proto, r)
                              or { late = parse(proto, r) }
    end
    self:skip_traces()
    local ok
    ok, err = c:send(f:raw())
    if not ok then
        c:close()
        return nil, err
    end
    local tr = self:await_trace(c, proto, pushed)
    while true do
        local r
        r, err = c:reply(proto, self.timeout)
        if not r then
            c:close()
            return nil, err
        end
        local m = parse(proto, r)
        if is_reply(proto, r, m, tr, f) then
            -- frames right behind it: more replies to the same command
            -- (SUBSCRIBE a b confirms each channel), or pushes
            local after = {}
            for _, x in ipairs(c:drain(proto)) do
                after[#after + 1] = unsolicited(proto, x) and parse(proto, x)
                                    or { more = parse(proto, x) }
            end
            return m, { tr }, pushed, after
        end
        pushed[#pushed + 1] = m
    end
end

function Live:stop()
    for _, c in pairs(self.conns) do
        c:close()
    end
    require("shotover.ffi").C.sh_ffi_workers_stop()
    os.remove(self.tpath)
end

-- The loop ---------------------------------------------------------------

-- Frames nobody asked for are shown as such, apart from the replies: "<-".
-- Every frame is shown as trace.show does (credentials hidden), a reply
-- with its request `req` (a CONFIG GET's answer is told by it).
local function print_unasked(list, req)
    for _, m in ipairs(list or {}) do
        if type(m) ~= "table" then
            print("<- pushed " .. trace.show(m))
        elseif m.late then
            print("<- late reply " .. trace.show(m.late))
        else
            print("=> " .. trace.show(m.more, req))
        end
    end
end

local function print_result(req, reply, traces, pushed, after)
    print_unasked(pushed, req)
    for _, tr in ipairs(traces) do
        print(trace.format(tr, "  "))
    end
    if reply then
        print("=> " .. trace.show(reply, req))
        for _, l in ipairs(_M.rows_table(reply, req) or {}) do
            print("  " .. l)
        end
    end
    print_unasked(after, req)
end

function _M.main(args)
    local conf_path, dry, source_name, timeout = nil, false, nil, 10
    local i = 1
    while i <= #args do
        local a = args[i]
        if (a == "-c" or a == "--config") and args[i + 1] then
            conf_path, i = args[i + 1], i + 1
        elseif a == "--dry" then
            dry = true
        elseif a == "--source" and args[i + 1] then
            source_name, i = args[i + 1], i + 1
        elseif a == "--timeout" and tonumber(args[i + 1] or "") then
            timeout, i = tonumber(args[i + 1]), i + 1
        elseif a == "-h" or a == "--help" then
            io.stdout:write(USAGE, HELP)
            return 0
        else
            io.stderr:write("shotover: unexpected argument \"", a, "\"\n",
                            USAGE)
            return 2
        end
        i = i + 1
    end
    if conf_path == nil then
        io.stderr:write(USAGE)
        return 2
    end
    -- dry chains exist in live mode too, for the Lua environment
    local conf, sources = common.load_dry(conf_path)
    if not conf then
        io.stderr:write(sources, "\n")
        return 1
    end
    local cur = 1
    if source_name then
        local s = sources.by_name[source_name]
        if not s then
            io.stderr:write("shotover: no source named \"", source_name,
                            "\"\n")
            return 2
        end
        for k, x in ipairs(sources) do
            if x == s then
                cur = k
            end
        end
    end
    local live, err
    if not dry then
        local C = require("shotover.ffi").C
        if os.getenv("SHOTOVER_REPL_LOG") == nil then
            C.sh_ffi_log_set_level(2)       -- warnings and errors only
        end
        live, err = start_live(conf_path, conf, timeout * 1000)
        if not live then
            io.stderr:write("shotover: ", err, "\n")
            return 1
        end
    end
    local env = setmetatable({ conf = conf, sources = sources, trace = trace,
                               message = message }, { __index = _G })
    -- a typed line is echoed (stdin not a terminal) without the
    -- credentials of its request, and such a line is kept out of history
    local function secret(line)
        local f = typed_request(sources[cur], line)
        return f ~= nil and #redact.secrets(f) > 0
    end
    local function shown(line)
        local f = typed_request(sources[cur], line)
        return f and redact.scrub(line, f) or line
    end
    local failed = false                -- a .reload that lost the worker
    local read, save = line_reader(secret, shown, function(text)
        return _M.completions(text, sources[cur].protocol)
    end)
    if ffi.C.isatty(0) ~= 0 then
        print(fmt("shotover repl: %s, %s; .help for help", conf_path,
                  dry and "dry (no backend is contacted)"
                      or "live (requests go to the real backends)"))
    end
    while true do
        local src = sources[cur]
        env.source = src
        env.chain = dry and src.chain or nil
        local line = read(src.name .. "> ")
        if line == nil then
            break
        end
        line = line:match("^%s*(.-)%s*$")
        if line == "" then -- luacheck: ignore 542
            -- nothing
        elseif line == ".quit" or line == ".exit" then
            break
        elseif line == ".help" then
            io.stdout:write(HELP)
        elseif line == ".sources" then
            for k, s in ipairs(sources) do
                print(fmt("%s %s (%s)", k == cur and "*" or " ", s.name,
                          s.protocol))
            end
        elseif line == ".reload" then
            -- the config again, validated; the old one stays if it fails
            local c2, s2 = common.load_dry(conf_path)
            if not c2 then
                print("error: " .. s2 .. "\n(the config is unchanged)")
            else
                local ok = true
                if live then
                    live:stop()
                    live, err = start_live(conf_path, c2, timeout * 1000)
                    if not live then
                        -- the old chains are gone with their worker: the
                        -- repl cannot go on live
                        print("error: " .. tostring(err))
                        ok = false
                    end
                end
                if not ok then
                    failed = true
                    break
                end
                local name = sources[cur].name
                conf, sources = c2, s2
                env.conf, env.sources = conf, sources
                cur = 1
                for k, x in ipairs(sources) do
                    if x.name == name then
                        cur = k
                    end
                end
                print(fmt("reloaded %s: %d source%s, current %s", conf_path,
                          #sources, #sources == 1 and "" or "s",
                          sources[cur].name))
            end
        elseif line:match("^%.source%s") then
            local name = line:match("^%.source%s+(%S+)")
            local found
            for k, s in ipairs(sources) do
                if s.name == name then
                    found = k
                end
            end
            if found then
                cur = found
            else
                print("error: no source named " .. tostring(name))
            end
        elseif line == ".source" then
            print("error: .source NAME (.sources lists them)")
        elseif line:sub(1, 1) == "." then
            -- a mistyped repl command is never sent as a request
            print("error: unknown repl command " .. line:match("^%S+")
                  .. " (.help lists them)")
        elseif line:sub(1, 1) == "=" or line:match("^lua%s") then
            local code = line:sub(1, 1) == "=" and "return " .. line:sub(2)
                         or line:sub(5)
            local fn, e = loadstring(code, "=repl")
            if not fn then
                print("error: " .. e)
            else
                local res = { pcall(setfenv(fn, env)) }
                if not res[1] then
                    print("error: " .. tostring(res[2]))
                elseif #res > 1 or table.maxn(res) > 1 then
                    local t = {}
                    for k = 2, table.maxn(res) do
                        t[#t + 1] = pretty(res[k])
                    end
                    print(concat(t, "\t"))
                end
            end
        else
            local req, values = line, nil
            if src.protocol == "cassandra" then
                req, values = cql_values(line)
            end
            local f, e
            if req then
                f, e = common.request(src.protocol, req, values)
            else
                e = values
            end
            if not f then
                print("error: " .. tostring(e))
            elseif dry then
                local reply, tr = common.run(src, f)
                print_result(f, reply, { tr })
            else
                local reply, traces, pushed, after = live:run(cur, src, f)
                if not reply then
                    print("error: " .. tostring(traces))
                else
                    print_result(f, reply, traces, pushed, after)
                end
            end
        end
        io.stdout:flush()
    end
    save()
    if live then
        live:stop()
    end
    return failed and 1 or 0
end

return _M
