-- t/lib/redis_diff.lua -- run scripted multi-connection Redis scenarios on
-- two sides (redis-server directly, and shotover in front of another
-- redis-server of the same build) and compare the raw bytes each
-- connection receives, step by step.
--
-- A scenario is { name = "...", steps = { step, ... }, final_mask = mask }
-- (final_mask: applied to what connections receive after the last step,
-- see below).  Steps:
--
--   { "a", "HSET", "h", "f", "1" }      connection "a" sends one command and
--                                       reads one frame
--   { "a", "HDEL", "h", "f", n = 2 }    ... and reads two frames (the reply
--                                       and a RESP3 push, say)
--   { "a", pipe = { {"GET","k"}, {"PING"} }, n = 2 }
--                                       several commands in one write
--   { "a", "BLPOP", "l", "0", n = 0 }   send, read nothing yet
--   { "a", read = 1 }                   send nothing, read one frame (a
--                                       pub/sub message, a blocked reply)
--   { "a", closed = true }              the server closes "a": wait for the
--                                       end of stream (bytes before it count)
--   { "a", close = true }               the test closes "a" (a later step
--                                       naming "a" opens a new connection)
--   { blocked = 1 }                     wait until the side's redis-server
--                                       reports 1 in INFO's blocked_clients
--   { gone = "id_b" }                   wait until the side's redis-server
--                                       has no client of the id saved as
--                                       id_b (shotover closes a dedicated
--                                       backend connection a moment after
--                                       its client's)
--
-- Connections are opened on first use; a connection is a fresh TCP
-- connection to the side's port (redis-server's or shotover's).
-- Options of a step:
--   save = "id_a"      the first frame's value (integer or string) is kept
--                      under that name, per side; later arguments "$id_a"
--                      (anywhere in an argument) are replaced by it.  Every
--                      side also knows $addr: 127.0.0.1:<the port its
--                      connections go to>.
--   mask = { { pattern, replacement }, ... } or function(bytes) -> bytes:
--                      applied to both sides' bytes before they are
--                      compared (for client ids, addresses); the failure
--                      shows the raw bytes as well.
--   timeout = s        the read deadline (default 3 s).
--   took_at_least = s  the step's frames must take at least s seconds to
--                      come, on both sides (CLIENT PAUSE).
--   shotover = { reply = "-ERR shotover:", why = "...", kept = { "b" } }
--                      a known difference: through shotover the reply must
--                      start with `reply` (direct Redis says what it says);
--                      `kept` lists connections that direct Redis closes
--                      as a consequence and shotover keeps open and
--                      serving (their final PING is answered PONG).
--
-- Reading is by readiness only: a step reads until its n frames are
-- parsed, the connection closes, or the deadline passes (noted as such and
-- compared).  After the last step every connection still open sends PING
-- and reads one frame, then a short drain asserts silence: so a push or a
-- reply that is late, or one too many, shows as a difference.
local h = require("harness")

local M = {}

local DEFAULT_TIMEOUT = 3

---------------------------------------------------------------------------
-- masks
---------------------------------------------------------------------------

M.mask = {}

-- every integer reply or element (":123") becomes ":N"
M.mask.ints = { { ":%-?%d+\r\n", ":N\r\n" } }

-- the id field of a HELLO reply (RESP2 array or RESP3 map)
M.mask.hello = { { "(\r\n%$2\r\nid\r\n:)%d+", "%1N" } }

-- CLIENT INFO / CLIENT LIST ID: the field names in their order, values
-- blanked, and the bulk (or verbatim) length with them
M.mask.client_fields = function(s)
    s = s:gsub("^([%$=])%d+\r\n", "%1N\r\n")
    return (s:gsub("=[^%s]*", "="))
end

-- a MONITOR line: its timestamp and client address
M.mask.monitor = { { "%+%d+%.%d+ %[(%d+) [^%]]*%]", "+T [%1 ADDR]" } }

local function apply_mask(mask, s)
    if not mask or not s then return s end
    if type(mask) == "function" then return mask(s) end
    for _, m in ipairs(mask) do s = s:gsub(m[1], m[2]) end
    return s
end

---------------------------------------------------------------------------
-- describing steps
---------------------------------------------------------------------------

local function cmd_text(cmd)
    local out = {}
    for i, a in ipairs(cmd) do out[i] = string.format("%q", tostring(a)):gsub("\\\n", "\\n") end
    -- plain words unquoted: easier to read
    for i, a in ipairs(cmd) do
        if tostring(a):match("^[%w_:%$%.%-%*>]+$") then out[i] = tostring(a) end
    end
    return table.concat(out, " ")
end

local function step_cmds(st)
    if st.pipe then return st.pipe end
    if st[2] then
        local c = {}
        for i = 2, #st do c[#c + 1] = st[i] end
        return { c }
    end
    return {}
end

local function step_frames(st)
    if st.n then return st.n end
    if st.read then return st.read end
    return #step_cmds(st)
end

function M.describe_step(st)
    if st.blocked then return string.format("(wait until %d blocked client(s))", st.blocked) end
    if st.gone then return string.format("(wait until client $%s is gone)", st.gone) end
    if st.close then return st[1] .. ": (the test closes the connection)" end
    local parts = {}
    for _, c in ipairs(step_cmds(st)) do parts[#parts + 1] = cmd_text(c) end
    local s = st[1] .. ": "
    if st.closed then
        s = s .. "(expect the server to close the connection)"
    elseif st.read then
        s = s .. string.format("(read %d frame(s))", st.read)
    elseif st.pipe then
        s = s .. "pipeline [" .. table.concat(parts, "; ") .. "]"
    else
        s = s .. parts[1]
    end
    if st.pipe or (st.n and not st.read) then
        s = s .. string.format(" (%d frame(s))", step_frames(st))
    end
    return s
end

---------------------------------------------------------------------------
-- one side
---------------------------------------------------------------------------

local Side = {}
Side.__index = Side

-- new_side{ name, port = where connections go, server_port = the
-- redis-server whose INFO says what is blocked }
function M.side(o)
    return setmetatable({ name = o.name, port = o.port,
        server_port = o.server_port, conns = {}, order = {}, vars = {} }, Side)
end

function Side:reset()
    for _, c in pairs(self.conns) do c:close() end
    self.conns, self.order = {}, {}
    self.vars = { addr = "127.0.0.1:" .. self.port }
end

function Side:conn(name)
    local c = self.conns[name]
    if not c then
        c = h.connect(self.port)
        self.conns[name] = c
        self.order[#self.order + 1] = name
    end
    return c
end

function Side:expand(arg)
    arg = tostring(arg)
    return (arg:gsub("%$([%a_][%w_]*)", function(name)
        local v = self.vars[name]
        if v == nil then
            error(string.format("%s: $%s used before it was saved", self.name, name), 0)
        end
        return v
    end))
end

local function blocked_clients(port)
    local info = h.cli(port, "info", "clients", { timeout = 5 })
    return tonumber(info:match("blocked_clients:(%d+)"))
end
M.blocked_clients = blocked_clients

-- Read until n complete frames are in the buffer, the connection closes or
-- the deadline passes.  Returns bytes (the n frames; everything buffered
-- when short), note (nil when all came), values.
local function read_frames(c, n, timeout)
    local deadline = h.now() + timeout
    local pos, values = 1, {}
    while #values < n do
        local b = c:buffer()
        local ok, v, np = pcall(h.resp_parse, b, pos)
        if not ok then
            return c:consume(c.nbuf), "not RESP: " .. tostring(v), values
        end
        if v ~= nil then
            values[#values + 1] = v
            pos = np
        else
            local left = deadline - h.now()
            if c.eof then
                return c:consume(c.nbuf), string.format(
                    "closed after %d of %d frames", #values, n), values
            end
            if left <= 0 then
                return c:consume(c.nbuf), string.format(
                    "timed out after %.1fs with %d of %d frames", timeout, #values, n), values
            end
            c:fill(left)
        end
    end
    return c:consume(pos - 1), nil, values
end

-- the end of stream within timeout: bytes before it, "closed" or "open"
local function read_close(c, timeout)
    local deadline = h.now() + timeout
    while not c.eof do
        local left = deadline - h.now()
        if left <= 0 then break end
        c:fill(left)
    end
    return c:consume(c.nbuf), c.eof and "closed" or
        string.format("open (no end of stream within %.1fs)", timeout)
end

local function saved_value(v)
    if type(v) == "number" then return tostring(v) end
    if type(v) == "string" then return v end
    if type(v) == "table" and v.status then return v.status end
    return nil
end

-- run one step; a record { bytes, note, took }
function Side:step(st)
    local timeout = st.timeout or DEFAULT_TIMEOUT
    local t0 = h.now()
    if st.blocked then
        local ok = pcall(h.wait_until, function()
            return blocked_clients(self.server_port) == st.blocked
        end, timeout, "blocked clients")
        return { bytes = "", note = (not ok) and string.format(
            "redis-server never reported %d blocked client(s) within %.1fs (now %s)",
            st.blocked, timeout, tostring(blocked_clients(self.server_port))) or nil }
    end
    if st.gone then
        local id = self.vars[st.gone]
        if id == nil then
            error(string.format("%s: $%s used before it was saved", self.name, st.gone), 0)
        end
        local ok = pcall(h.wait_until, function()
            return h.cli(self.server_port, "client", "list", "id", id, { timeout = 5 }) == ""
        end, timeout, "client gone")
        return { bytes = "", note = (not ok) and string.format(
            "redis-server still has client %s after %.1fs", id, timeout) or nil }
    end
    if st.close then
        local c = self.conns[st[1]]
        if c then
            c:close()
            self.conns[st[1]] = nil
            for i, n in ipairs(self.order) do
                if n == st[1] then table.remove(self.order, i) break end
            end
        end
        return { bytes = "" }
    end
    local c = self:conn(st[1])
    local out = {}
    for _, cmd in ipairs(step_cmds(st)) do
        local args = {}
        for i, a in ipairs(cmd) do args[i] = self:expand(a) end
        out[#out + 1] = h.resp_command(args)
    end
    if #out > 0 then
        if c.eof then
            return { bytes = c:consume(c.nbuf), note = "already closed: nothing sent" }
        end
        local ok, err = c:send(table.concat(out))
        if not ok then
            c:fill(0)
            return { bytes = c:consume(c.nbuf), note = "send failed: " .. tostring(err) }
        end
    end
    local rec
    if st.closed then
        local bytes, note = read_close(c, timeout)
        rec = { bytes = bytes, note = note }
    else
        local bytes, note, values = read_frames(c, step_frames(st), timeout)
        rec = { bytes = bytes, note = note, values = values }
        if st.save then
            local v = saved_value(values[st.save_frame or 1])
            if v then self.vars[st.save] = v end
        end
    end
    rec.took = h.now() - t0
    return rec
end

-- after the last step: every connection not yet seen closed sends PING,
-- reads a frame and is drained for `quiet` seconds.  { [conn] = record }
function Side:final(quiet)
    local out = {}
    for _, name in ipairs(self.order) do
        local c = self.conns[name]
        c:fill(0)
        if c.eof then
            out[name] = { bytes = c:consume(c.nbuf), note = "closed" }
        else
            local ok = c:send(h.resp_command("PING"))
            local bytes, note = read_frames(c, ok and 1 or 0, DEFAULT_TIMEOUT)
            local extra = c:drain(quiet or 0.1, 2)
            out[name] = { bytes = bytes .. extra,
                note = note or (c.eof and "closed" or "open") }
        end
    end
    return out
end

---------------------------------------------------------------------------
-- a scenario on both sides
---------------------------------------------------------------------------

-- the side's state must not leak between scenarios: no blocked client and
-- no subscriber left over from the last one (shotover closes its
-- dedicated backend connections a moment after the client's), and an
-- empty server
function M.prepare(side, proxy_port)
    h.wait_until(function()
        local pubsub = h.cli(side.server_port, "client", "list", "type", "pubsub", { timeout = 5 })
        return blocked_clients(side.server_port) == 0 and pubsub == ""
    end, 5, side.name .. ": no blocked client and no subscriber left")
    for _, cmd in ipairs({ { "flushall" }, { "script", "flush" }, { "function", "flush" } }) do
        local out = h.cli(side.server_port, cmd[1], cmd[2], { timeout = 5 })
        assert(out == "OK", side.name .. ": " .. table.concat(cmd, " ") .. ": " .. out)
    end
    if proxy_port then
        -- a scenario may have had shotover's shared connections killed
        h.wait_until(function()
            local c = h.try_connect(proxy_port, 2)
            if not c then return false end
            c:send(h.resp_command("PING"))
            local v = c:try_read_reply(2)
            c:close()
            return type(v) == "table" and v.status == "PONG", v and (v.err or v.status)
        end, 10, "shotover to answer PING")
    end
end

function M.run(side, sc)
    side:reset()
    local recs = {}
    for i, st in ipairs(sc.steps) do
        local ok, rec = pcall(side.step, side, st)
        if not ok then rec = { bytes = "", note = "error: " .. tostring(rec) } end
        recs[i] = rec
    end
    local final = side:final()
    side:reset()
    return recs, final
end

local function show(rec)
    if not rec then return "(nothing)" end
    local s = string.format("%q", rec.bytes):gsub("\\\n", "\\n")
    if rec.note then s = s .. "  [" .. rec.note .. "]" end
    return s
end

local function show_masked(mask, rec)
    local m = apply_mask(mask, rec.bytes)
    if m == rec.bytes then return show(rec) end
    return show({ bytes = m, note = rec.note }) .. "\n               raw " .. show(rec)
end

-- Compare the records of the direct side (d) and the proxy side (p).
-- Returns a list of problems (strings): corpus errors (direct Redis did
-- not do what the scenario expects of any server) and differences.
function M.compare(sc, d, p)
    local dr, df = d.recs, d.final
    local pr, pf = p.recs, p.final
    local problems = {}
    local kept = {}
    local function add(fmt, ...) problems[#problems + 1] = string.format(fmt, ...) end
    for i, st in ipairs(sc.steps) do
        local a, b = dr[i], pr[i]
        local title = string.format("step %d %s", i, M.describe_step(st))
        -- direct Redis is the reference: it must have done all the step asks
        local direct_ok = (a.note == nil) or (st.closed and a.note == "closed")
        if not direct_ok then
            add("%s: CORPUS: redis-server itself did not do what the step expects:\n"
                .. "    redis    %s", title, show(a))
        elseif st.took_at_least and a.took < st.took_at_least then
            add("%s: CORPUS: redis-server answered after %.3fs, expected >= %.3fs",
                title, a.took, st.took_at_least)
        end
        if st.shotover then
            for _, k in ipairs(st.shotover.kept or {}) do kept[k] = st.shotover end
            local pre = st.shotover.reply
            if b.note ~= nil or b.bytes:sub(1, #pre) ~= pre then
                add("%s: KNOWN DIFFERENCE NOT MET (%s): shotover's reply must start with %q\n"
                    .. "    redis    %s\n    shotover %s", title, st.shotover.why, pre,
                    show(a), show(b))
            end
        else
            local am, bm = apply_mask(st.mask, a.bytes), apply_mask(st.mask, b.bytes)
            if am ~= bm or a.note ~= b.note then
                add("%s:%s\n    redis    %s\n    shotover %s", title,
                    st.mask and " (masked)" or "", show_masked(st.mask, a),
                    show_masked(st.mask, b))
            elseif st.took_at_least and b.took < st.took_at_least then
                add("%s: shotover answered after %.3fs, redis-server after %.3fs (expected >= %.3fs)",
                    title, b.took, a.took, st.took_at_least)
            end
        end
    end
    local names, seen = {}, {}
    for _, t in ipairs({ df, pf }) do
        for k in pairs(t) do
            if not seen[k] then seen[k] = true; names[#names + 1] = k end
        end
    end
    table.sort(names)
    for _, k in ipairs(names) do
        local a, b = df[k], pf[k]
        local title = string.format("end of scenario, connection %q (PING, then silence)", k)
        if kept[k] then
            if not (a and a.note == "closed") then
                add("%s: CORPUS: redis-server was expected to close it: %s", title, show(a))
            end
            local pong = b and (b.bytes == "+PONG\r\n" or b.bytes == "*2\r\n$4\r\npong\r\n$0\r\n\r\n")
            if not (b and b.note == "open" and pong) then
                add("%s: KNOWN DIFFERENCE NOT MET (%s): shotover must keep it open and serving\n"
                    .. "    redis    %s\n    shotover %s", title, kept[k].why, show(a), show(b))
            end
        else
            if a and a.note ~= "closed" and a.note ~= "open" then
                add("%s: CORPUS: %s", title, show(a))
            end
            local fm = sc.final_mask
            if not a or not b or a.note ~= b.note
               or apply_mask(fm, a.bytes) ~= apply_mask(fm, b.bytes) then
                add("%s:%s\n    redis    %s\n    shotover %s", title, fm and " (masked)" or "",
                    a and show_masked(fm, a) or "(none)", b and show_masked(fm, b) or "(none)")
            end
        end
    end
    return problems
end

-- SHOTOVER_DIFF_TRACE=file: every scenario, step and both sides' bytes
-- are appended to file (to read what the corpus exercises)
function M.trace(path, sc, drecs, dfinal, precs, pfinal, problems)
    local f = assert(io.open(path, "a"))
    f:write(string.format("== %s%s\n", sc.name, #problems > 0 and "  [DIFFERS]" or ""))
    for i, st in ipairs(sc.steps) do
        f:write(string.format("  %2d %s\n     redis    %s\n", i, M.describe_step(st),
            show(drecs[i])))
        if precs[i].bytes ~= drecs[i].bytes or precs[i].note ~= drecs[i].note then
            f:write("     shotover " .. show(precs[i]) .. "\n")
        end
    end
    for _, k in ipairs({ "a", "b", "c", "d" }) do
        if dfinal[k] or pfinal[k] then
            f:write(string.format("  end %s redis    %s\n", k, show(dfinal[k])))
            if not dfinal[k] or not pfinal[k] or pfinal[k].bytes ~= dfinal[k].bytes
               or pfinal[k].note ~= dfinal[k].note then
                f:write(string.format("  end %s shotover %s\n", k, show(pfinal[k])))
            end
        end
    end
    f:close()
end

-- run sc on both sides (each prepared first) and raise with every
-- difference, the scenario, the step and both byte strings
function M.check(sc, direct, proxy, proxy_port)
    M.prepare(direct)
    local drecs, dfinal = M.run(direct, sc)
    M.prepare(proxy, proxy_port)
    local precs, pfinal = M.run(proxy, sc)
    local problems = M.compare(sc, { recs = drecs, final = dfinal },
                               { recs = precs, final = pfinal })
    local trace = os.getenv("SHOTOVER_DIFF_TRACE")
    if trace and trace ~= "" then
        M.trace(trace, sc, drecs, dfinal, precs, pfinal, problems)
    end
    if #problems > 0 then
        error(string.format("scenario %q: %d difference(s)%s\n  %s", sc.name, #problems,
            sc.note and (" -- " .. sc.note) or "", table.concat(problems, "\n  ")), 0)
    end
end

return M
