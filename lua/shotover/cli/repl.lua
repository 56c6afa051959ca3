-- `shotover repl -c CONF [--dry] [--source NAME]`: load the config as
-- `check` does, then read Redis commands or CQL statements (by the current
-- source's protocol) and show, for each, the path it took through the chain,
-- what every transform did to it and the reply.  Lines starting with "="
-- evaluate a Lua expression, "lua " a Lua chunk; ".help" lists the rest.
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
  .help  .quit              (also Ctrl-D)
]]

pcall(ffi.cdef, "int isatty(int fd);")

-- Line input: libedit (or GNU readline) through the FFI when stdin is a
-- terminal, with history in ~/.shotover_history (but no line for which
-- secret(line) is true: a password typed stays out of the file); plain
-- reads otherwise, each line echoed as shown(line) gives it.
local function line_reader(secret, shown)
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
    ]])
    local home = os.getenv("HOME")
    local hist = home and (home .. "/.shotover_history")
    if hist then
        lib.read_history(hist)
    end
    return function(prompt)
        local p = lib.readline(prompt)
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

-- "STATEMENT -- values: 1, 'x'": the statement and its values
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
    return stmt, t
end

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
    local read, save = line_reader(secret, shown)
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
                elseif #res > 1 then
                    local t = {}
                    for k = 2, table.maxn(res) do
                        t[#t + 1] = tostring(res[k])
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
    return 0
end

return _M
