-- scatter: multi-region active-active.  Every request goes to every
-- region's chain at once; a write is answered once `write_quorum` regions
-- acknowledged it, a read once `read_quorum` regions gave byte-equal
-- replies, and the regions that answered a one-key read differently are
-- repaired in the background (DUMP from an agreeing region, RESTORE ...
-- REPLACE, or DEL when the key is gone there).  Only reads and idempotent
-- writes are scattered; every other command is refused.  See
-- docs/transforms/scatter.md.
--
-- How it runs.  Each region serves each client on a shadow run of its own
-- (shotover.runner: a connection without a socket, with its own coroutine
-- and backend connections, that outlives the client until its queue is
-- done).  A client batch becomes a "gather": its requests are pushed to
-- every region's shadow and the client awaits a batch of its own
-- (chain:await); each region's handler, as its replies come, records them
-- in the gather and decides what it can, and the one that decides the last
-- request settles the batch, which wakes the client.  Slower regions keep
-- going on their shadows after the client has its replies.  A watch tick
-- (shotover.watch) marks the regions past their timeout as failed for
-- what they still owe, so no region holds the client longer than its
-- timeout.  Without a worker (dry runs, specs), and on a shadow run (an
-- asynchronous tee's chain), the regions run at once on the connection at
-- hand, which waits for all of them, and nothing is repaired.
local ffi = require "ffi"
local bit = require "bit"
local base = require "shotover.ffi"
local message = require "shotover.message"
local metrics = require "shotover.metrics"
local log = require "shotover.log"
local runner = require "shotover.runner"
local watch = require "shotover.watch"
local pools = require "shotover.pools"
local command_ids = require "shotover.redis.command_ids"
local commands = require "shotover.redis.commands"
local decode = require "shotover.redis.decode"

local C = base.C
local fmt = string.format
local concat = table.concat
local floor, max, min = math.floor, math.max, math.min
local pairs, ipairs, type, tostring = pairs, ipairs, type, tostring
local next, tonumber, pcall, setmetatable = next, tonumber, pcall,
                                            setmetatable
local band, bor = bit.band, bit.bor
local new_batch, error_reply, command = message.new_batch,
                                        message.error_reply, message.command
local add, now_ns = metrics.add, metrics.now_ns
local same = C.sh_ffi_frame_same
local buf_eq = C.sh_ffi_buf_eq
local ffi_string = ffi.string

local tnew = require "table.new"      -- (LuaJIT 2.1)

local _M = {
    name = "scatter",
    version = "0.1.0",
    -- a sink: its regions end in sinks; its per-client shadows follow one
    -- batch after another (no lanes)
    capabilities = { sink = true, subchains = true },
    protocols = { "redis" },
    schema = {
        regions = { type = "table", required = true },
        write_quorum = { type = "integer", min = 1 },
        read_quorum = { type = "integer", min = 1 },
        timeout_ms = { type = "integer", min = 1, default = 1000 },
        buffer_size = { type = "integer", min = 1, default = 1024 },
        repair = { type = "boolean", default = true },
    },
}

local REGION_KEYS = { name = true, chain = true, timeout_ms = true }

-- What a request becomes --------------------------------------------------

local READ, ANY, WRITE, LOCAL = 1, 2, 3, 4
_M.READ, _M.ANY, _M.WRITE = READ, ANY, WRITE

-- Writes whose effect is the same however often and in whatever region
-- they are applied (given the same arguments): safe to apply in every
-- region and, after a failure, again.
local IDEMPOTENT = {
    "SET", "SETEX", "PSETEX", "SETNX", "MSET", "MSETNX", "SETRANGE",
    "SETBIT", "DEL", "UNLINK", "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT",
    "PERSIST", "HSET", "HMSET", "HSETNX", "HDEL", "SADD", "SREM", "ZADD",
    "ZREM", "ZREMRANGEBYSCORE", "ZREMRANGEBYLEX", "LSET", "PFADD", "GEOADD",
    "RESTORE", "SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE", "ZUNIONSTORE",
    "ZINTERSTORE", "ZDIFFSTORE", "ZRANGESTORE", "COPY",
}
-- Reads whose reply depends on when or how a server answers, not only on
-- the data (a TTL counts down, a random member, a cursor): the first
-- region's reply, no agreement, no repair.
local VOLATILE = {
    "TTL", "PTTL", "RANDOMKEY", "SRANDMEMBER", "HRANDFIELD", "ZRANDMEMBER",
    "SCAN", "SSCAN", "HSCAN", "ZSCAN", "KEYS", "OBJECT", "MEMORY", "DBSIZE",
    "LOLWUT", "DUMP",
}
-- Commands without data answered by the first region.
local HOUSEKEEPING = { "PING", "ECHO", "COMMAND", "INFO", "TIME", "LASTSAVE" }

local MODE = {}
for name, class in pairs(commands) do
    if class == "read" then
        MODE[command_ids.id(name)] = READ
    end
end
for _, name in ipairs(VOLATILE) do MODE[command_ids.id(name)] = ANY end
for _, name in ipairs(HOUSEKEEPING) do MODE[command_ids.id(name)] = ANY end
for _, name in ipairs(IDEMPOTENT) do MODE[command_ids.id(name)] = WRITE end
MODE[command_ids.id("QUIT")] = LOCAL
MODE[0] = nil
local ZADD = command_ids.id("ZADD")

-- The mode of request m: READ, ANY, WRITE, LOCAL, or nil (refused) and
-- why.  ZADD's INCR option adds: not idempotent.
-- What the codec marks as tying a client to one backend connection or as
-- waiting for an event (MULTI, SUBSCRIBE, XREAD ... BLOCK, WAIT...):
-- never scattered, whatever its class.
local ONE_CONNECTION = bor(C.SH_CMD_PIN, C.SH_CMD_BLOCKING, C.SH_CMD_STREAM,
                           C.SH_CMD_RAW, C.SH_CMD_WAIT)

local kpos = {}
local function mode_of(m)
    local mode = MODE[m.cmd_id]
    if mode == nil or band(m.cmd, ONE_CONNECTION) ~= 0 then
        return nil
    end
    if mode == WRITE and m.cmd_id == ZADD then
        for a = 3, m:nargs() do
            local v = m:arg(a)
            if #v == 4 and v:upper() == "INCR" then
                return nil
            end
        end
    end
    if mode == READ then
        local nk = m:key_positions(kpos)
        if nk == 0 then
            return ANY
        end
        return READ, nk == 1 and kpos[1] or nil
    end
    return mode
end
_M.mode_of = mode_of

-- Config -------------------------------------------------------------------

function _M.subchains(conf)
    local out = {}
    if type(conf.regions) ~= "table" then
        return out
    end
    for k, r in ipairs(conf.regions) do
        if type(r) == "table" and r.chain ~= nil then
            out[#out + 1] = { chain = r.chain,
                              path = fmt(".regions[%d].chain", k) }
        end
    end
    return out
end

-- The first element of chain (or of its sub-chains) that holds batches
-- (coalesce): a region runs on a shadow, which cannot park a batch.
local function holder(chain)
    if type(chain) ~= "table" then
        return nil
    end
    for _, el in ipairs(chain) do
        if type(el) == "table" and type(el[1]) == "string" then
            local ok, mod = pcall(require, "shotover.transforms." .. el[1])
            if ok and type(mod) == "table" then
                local caps = mod.capabilities
                if type(caps) == "table" and caps.holds_batches then
                    return el[1]
                end
                if type(mod.subchains) == "function" then
                    local got, subs = pcall(mod.subchains, el)
                    for _, sub in ipairs(got and type(subs) == "table"
                                         and subs or {}) do
                        local name = holder(sub.chain)
                        if name then
                            return name
                        end
                    end
                end
            end
        end
    end
    return nil
end

-- every problem at once: true, or nil and the list
function _M.check_config(conf)
    local errs = {}
    local regions = conf.regions
    local seen = {}
    local n = 0
    for k in pairs(regions) do
        if type(k) ~= "number" or k < 1 or k > #regions or k % 1 ~= 0 then
            errs[#errs + 1] = fmt("regions: expected a list of regions, "
                                  .. "got the key %s", tostring(k))
        end
    end
    for k, r in ipairs(regions) do
        n = n + 1
        local p = fmt("regions[%d]", k)
        if type(r) ~= "table" then
            errs[#errs + 1] = fmt("%s: expected a table { name = ..., "
                                  .. "chain = { ... } }, got %s", p,
                                  type(r))
        else
            for key in pairs(r) do
                if not REGION_KEYS[key] then
                    errs[#errs + 1] = fmt("%s.%s: unknown key (a region has "
                                          .. "name, chain, timeout_ms)", p,
                                          tostring(key))
                end
            end
            if type(r.name) ~= "string" or r.name == "" then
                errs[#errs + 1] = fmt("%s.name: required, a non-empty "
                                      .. "string", p)
            elseif seen[r.name] then
                errs[#errs + 1] = fmt("%s.name: duplicate region name %q "
                                      .. "(also regions[%d])", p, r.name,
                                      seen[r.name])
            else
                seen[r.name] = k
            end
            if r.chain == nil then
                errs[#errs + 1] = p .. ".chain: required"
            elseif type(r.chain) ~= "table" then
                errs[#errs + 1] = fmt("%s.chain: expected a list of "
                                      .. "transforms, got %s", p,
                                      type(r.chain))
            elseif holder(r.chain) then
                errs[#errs + 1] = fmt("%s.chain: %q holds batches, which "
                                      .. "a region cannot (it runs on a "
                                      .. "shadow of the client)", p,
                                      holder(r.chain))
            end
            local t = r.timeout_ms
            if t ~= nil and (type(t) ~= "number" or t % 1 ~= 0 or t < 1) then
                errs[#errs + 1] = fmt("%s.timeout_ms: expected an integer "
                                      .. ">= 1, got %s", p, tostring(t))
            end
        end
    end
    if n == 0 then
        errs[#errs + 1] = "regions: at least one region"
    end
    for _, q in ipairs({ "write_quorum", "read_quorum" }) do
        local v = conf[q]
        if v ~= nil and n > 0 and v > n then
            errs[#errs + 1] = fmt("%s: %d is more than the %d region%s",
                                  q, v, n, n == 1 and "" or "s")
        end
    end
    -- repairs copy the agreed value over the others: only a majority may
    -- agree (with read_quorum = 1 a region that came back empty would
    -- delete a key everywhere it is read)
    local rq = conf.read_quorum
    if conf.repair and rq ~= nil and n > 0 and rq <= n and rq * 2 <= n then
        errs[#errs + 1] = fmt("read_quorum: read repair needs a majority of "
                              .. "the regions (%d of %d), or repair = false",
                              floor(n / 2) + 1, n)
    end
    if #errs > 0 then
        return nil, errs
    end
    return true
end

local mt = { __index = {} }
local methods = mt.__index

-- Replies -------------------------------------------------------------------

-- A reply that says the region failed rather than what its data is:
-- none, an error shotover made (backend unavailable, request timeout, an
-- element that raised), or the server's word that it cannot serve now.
local UNAVAILABLE = { "-ERR shotover", "-CLUSTERDOWN", "-LOADING", "-BUSY",
                      "-MASTERDOWN", "-READONLY", "-OOM", "-MISCONF",
                      "-NOREPLICAS", "-TRYAGAIN", "-NOAUTH", "-MOVED",
                      "-ASK" }
local function unavailable(r)           -- (r: an error reply)
    for _, p in ipairs(UNAVAILABLE) do
        local n = #p
        if r.len > n and buf_eq(r.data, p, n) == 1 then
            local c = r.data[n]
            -- the whole word: "-BUSYKEY" is about the data
            if c == 32 or c == 13 or c == 58 then     -- " ", "\r", ":"
                return true
            end
        end
    end
    return false
end

local function failed(r)
    return r == nil or (r:is_error() and unavailable(r))
end
_M.failed = failed

local function err_text(r)
    if r == nil then
        return "no reply"
    end
    local s = ffi_string(r.data, min(r.len, 200))
    return (s:gsub("^%-", ""):gsub("\r\n.*$", ""))
end

-- Gathers: one client batch on its way through the regions ----------------

local function new_gather(self, batch)
    local n, R = batch.n, self.R
    return {
        n = n, reqs = batch, out = new_batch(n),
        rep = new_batch(n * R),     -- region k's reply to i at (k-1)*n+i
        st = tnew(n * R, 0),        -- nil owed, 1 a value, 2 a failure
        mode = tnew(n, 0), pos = tnew(n, 0),
        ok = tnew(n, 0), bad = tnew(n, 0), done = tnew(n, 0),
        src = tnew(n, 0),           -- reads: a region that agreed
        left = 0,                   -- requests not decided yet
        open = true,                -- the client has not its replies yet
        waiting = false,            -- the client awaits `wait` (a batch)
        t0 = now_ns(),              -- timeouts count from here
        -- made when needed: wait; why (failure texts, by slot); timed
        -- (regions past their timeout); agreed and key (a read's agreed
        -- bytes and key, for replies that come after close())
    }
end

-- Decide request i with frame f (nil: an error from the failures).
local function decide(self, g, i, f, src)
    g.done[i] = true
    g.left = g.left - 1
    if f ~= nil then
        g.out:set(i, f)
        g.src[i] = src
        return
    end
    -- the regions' own errors when they all agree on one (WRONGTYPE...)
    local n, first, alike = g.n, nil, true
    local parts = {}
    for k = 1, self.R do
        local s = (k - 1) * n + i
        local st, r = g.st[s], g.rep[s]
        if st ~= nil then
            local err = r ~= nil and r:is_error()
            if st == 2 or err then
                parts[#parts + 1] = fmt("%s: %s", self.names[k],
                                        (g.why and g.why[s]) or err_text(r))
            else
                parts[#parts + 1] = fmt(g.mode[i] == WRITE
                                        and "%s: acknowledged"
                                        or "%s: a reply that does not agree",
                                        self.names[k])
            end
            if err and not failed(r) then
                if first == nil then
                    first = r
                elseif same(first, r) == 0 then
                    alike = false
                end
            else
                alike = false
            end
        end
    end
    if first ~= nil and alike then
        g.out:set(i, first)
        return
    end
    add(self.m_quorum_failed, 1)
    local mode = g.mode[i]
    local what
    if mode == WRITE then
        what = fmt("write quorum %d of %d not reached", self.W, self.R)
    elseif mode == READ then
        what = fmt("read quorum %d of %d not reached (no %d replies agree)",
                   self.RQ, self.R, self.RQ)
    else
        what = fmt("no region answered (of %d)", self.R)
    end
    local text = fmt("shotover scatter \"%s\": %s: %s", self.name, what,
                     #parts > 0 and concat(parts, "; ") or "no replies")
    g.out:set(i, error_reply(g.reqs[i], text))
end

-- Can request i still be decided, and how?  Called after each reply to it.
local function evaluate(self, g, i, k)
    if g.done[i] then
        return
    end
    local mode, n, R = g.mode[i], g.n, self.R
    if mode == WRITE then
        if g.ok[i] >= self.W then
            decide(self, g, i, g.rep[(k - 1) * n + i], k)
        elseif g.bad[i] > R - self.W then
            decide(self, g, i, nil)
        end
    elseif mode == ANY then
        if g.ok[i] >= 1 then
            decide(self, g, i, g.rep[(k - 1) * n + i], k)
        elseif g.bad[i] >= R then
            decide(self, g, i, nil)
        end
    else
        -- READ: the largest group of equal replies
        local st, rep, RQ = g.st, g.rep, self.RQ
        if k ~= nil and st[(k - 1) * n + i] == 1 then
            local r = rep[(k - 1) * n + i]
            local cnt = 0
            for j = 1, R do
                local s = (j - 1) * n + i
                if st[s] == 1 and (j == k or same(r, rep[s]) == 1) then
                    cnt = cnt + 1
                end
            end
            if cnt >= RQ then
                return decide(self, g, i, r, k)
            end
        end
        local best, answered = 0, 0
        for j = 1, R do
            local s = (j - 1) * n + i
            if st[s] ~= nil then
                answered = answered + 1
            end
            if st[s] == 1 then
                local cnt = 0
                for l = 1, R do
                    local s2 = (l - 1) * n + i
                    if st[s2] == 1 and (l == j or same(rep[s], rep[s2]) == 1)
                    then
                        cnt = cnt + 1
                    end
                end
                best = max(best, cnt)
            end
        end
        if best + (R - answered) < RQ then
            decide(self, g, i, nil)
        end
    end
end

-- Region k failed request i of g (why: text).
local function fail(self, g, k, i, why)
    local s = (k - 1) * g.n + i
    if g.st[s] ~= nil then
        return
    end
    g.st[s] = 2
    g.why = g.why or {}
    g.why[s] = why
    g.bad[i] = g.bad[i] + 1
    add(self.m_region_failed[k], 1)
    evaluate(self, g, i, nil)
end

-- A client that closed while it waited: its batches went with it (the
-- awaited one is kept until settled), so nothing is written to them again.
local function gone(g)
    local w = g.wait
    return g.open and w ~= nil and w.run == nil and w.waiting > 0
end

local function abandon(self, g)
    g.open = false
    g.reqs, g.out, g.rep, g.agreed = nil, nil, nil, nil
    self.live[g] = nil
    if g.waiting then
        g.waiting = false
        C.sh_ffi_batch_settle(g.wait)
    end
    g.wait = nil
end

local function wake(g)
    if g.left == 0 and g.waiting then
        g.waiting = false
        C.sh_ffi_batch_settle(g.wait)
    end
end

-- Does reply r (a value, late) differ from what request i agreed on?
local function differs(g, i, r)
    if g.open then
        return same(r, g.out[i]) == 0
    end
    local a = g.agreed and g.agreed[i]
    if a == nil then
        return false
    end
    return not (r.len == #a and buf_eq(r.data, a, r.len) == 1)
end

-- Region k's reply r to request i of g.  Returns a repair to make in
-- region k (the key and the region to copy from), if any.
local function arrive(self, g, k, i, r)
    local s = (k - 1) * g.n + i
    local mode = g.mode[i]
    if g.open and g.st[s] == nil then
        local err = r == nil or r:is_error()
        local down = err and (r == nil or unavailable(r))
        if down or (err and mode == WRITE) then
            g.st[s] = 2
            if down then
                g.why = g.why or {}
                g.why[s] = err_text(r)
            end
            if r ~= nil then
                g.rep:set(s, r)
            end
            g.bad[i] = g.bad[i] + 1
            add(self.m_region_failed[k], 1)
        else
            g.st[s] = 1
            g.rep:set(s, r)
            g.ok[i] = g.ok[i] + 1
        end
        evaluate(self, g, i, k)
        -- (the client's close() compares what arrived before it)
        return nil
    elseif r == nil or (r:is_error() and failed(r)) then
        return nil
    end
    -- a reply after the request was decided: a read to repair?
    if mode == READ and self.repair and g.pos[i] and g.done[i]
       and g.src[i] ~= nil and g.src[i] ~= k and differs(g, i, r)
    then
        local key
        if g.open then
            key = g.reqs[i]:arg(g.pos[i])
        else
            key = g.key and g.key[i]
        end
        if key ~= nil then
            return key, g.src[i]
        end
    end
    return nil
end

-- Region shadows ------------------------------------------------------------

local REPAIR = {}            -- a fifo entry that is a repair, not a reply

local function fifo_new()
    return { head = 1, tail = 0 }
end

local function fifo_push(q, a, b)
    local t = q.tail
    q[t + 1], q[t + 2] = a, b
    q.tail = t + 2
end

local function fifo_pop(q)
    local h = q.head
    if h > q.tail then
        return nil
    end
    local a, b = q[h], q[h + 1]
    q[h], q[h + 1] = nil, nil
    h = h + 2
    if h > q.tail then
        q.head, q.tail = 1, 0
    else
        q.head = h
    end
    return a, b
end

-- The queue of shadow sh of region k (new: just made, its session empty).
local function queue_of(self, k, sh, new)
    local key = runner.key(sh)
    local q = self.fifos[k][key]
    if new or q == nil then
        q = fifo_new()
        self.fifos[k][key] = q
    end
    return q
end

-- Make region k (its shadow st) hold key as region src has it.
local function repair(self, st, k, key, src)
    local b = new_batch(0)
    b:push(command({ "DUMP", key }))
    b:push(command({ "PTTL", key }))
    local region = self.regions[src]
    local ctx = st.ctxs[src]
    if ctx == nil then
        ctx = region.chain:context(st.c)
        ctx.conn = st.ctx.conn
        st.ctxs[src] = ctx
    end
    local got = region.chain:run(ctx, b)
    local dump, pttl = got[1], got[2]
    local fix = new_batch(0)
    if dump == nil or dump:is_error() or pttl == nil or pttl:is_error() then
        add(self.m_repair_failed[k], 1)
        log.warn("scatter \"%s\": repair of %q in %s: %s did not give it: "
                 .. "%s", self.name, key, self.names[k], self.names[src],
                 err_text(dump ~= nil and dump:is_error() and dump or pttl))
        return
    end
    local payload = dump:decode()
    local ttl = tonumber(pttl:decode()) or -1
    if payload == decode.NULL or ttl == -2 then
        fix:push(command({ "DEL", key }))
    else
        fix:push(command({ "RESTORE", key, tostring(ttl > 0 and ttl or 0),
                           payload, "REPLACE" }))
    end
    local done = st.chain:run(st.ctx, fix)
    if done[1] == nil or done[1]:is_error() then
        add(self.m_repair_failed[k], 1)
        log.warn("scatter \"%s\": repair of %q in %s failed: %s", self.name,
                 key, self.names[k], err_text(done[1]))
    else
        add(self.m_repairs[k], 1)
        log.debug("scatter \"%s\": repaired %q in %s from %s", self.name,
                  key, self.names[k], self.names[src])
    end
end

-- The n replies of region k (resp, without the repairs' places) to
-- their gathers, in queue order; returns the repairs to make, if any.
-- A function of its own: it runs after the region's wait, where the
-- caller's code stays interpreted, and gets a trace of its own.
local function deliver(self, q, k, n, resp)
    local todo, t, last = nil, 0, nil
    for _ = 1, n do
        local g, i = fifo_pop(q)
        if g == REPAIR then
            todo = todo or {}
            todo[#todo + 1] = i
        elseif g ~= nil then
            t = t + 1
            if g ~= last then
                if last ~= nil then
                    wake(last)      -- (once all of it is decided)
                end
                last = g
                if gone(g) then
                    abandon(self, g)
                end
            end
            local key, src = arrive(self, g, k, i, resp[t])
            if key ~= nil then
                todo = todo or {}
                todo[#todo + 1] = { key, src }
                add(self.m_divergent, 1)
            end
        end
    end
    if last ~= nil then
        wake(last)
    end
    return todo
end

-- A region shadow's batch: what its client's gathers pushed (and the
-- repairs pushed after them).  Replies go to their gathers; repairs run
-- after the batch, one at a time.
local function region_batch(self, st, batch)
    local fifos, n = self.fifos[st.k], batch.n
    local q = fifos[st.key]
    if q == nil then                    -- (nothing of ours: never expected)
        q = fifo_new()
        fifos[st.key] = q
    end
    local send, rep = batch, nil
    local h = q.head
    for j = 1, n do
        if q[h + 2 * (j - 1)] == REPAIR then
            rep = true
            break
        end
    end
    if rep then
        send = new_batch(0)
        for j = 1, n do
            if q[h + 2 * (j - 1)] ~= REPAIR then
                send:push(batch[j])
            end
        end
    end
    local resp = send.n > 0 and st.chain:run(st.ctx, send) or nil
    local k = st.k
    local todo = deliver(self, q, k, n, resp)
    -- a queue emptied goes (the next push makes one): a client's queues
    -- do not outlive its shadows
    if q.head > q.tail and fifos[st.key] == q then
        fifos[st.key] = nil
    end
    if todo then
        for _, r in ipairs(todo) do
            local ok, err = pcall(repair, self, st, k, r[1], r[2])
            if not ok then
                add(self.m_repair_failed[k], 1)
                log.warn("scatter \"%s\": repair in %s failed: %s",
                         self.name, self.names[k], tostring(err))
            end
        end
    end
    return resp or new_batch(0)
end

local function region_open(self, k)
    return function(c)
        local ctx = self.regions[k].chain:context(c)
        return region_batch, self, { k = k, c = c, key = runner.key(c),
                                     ctx = ctx, ctxs = {},
                                     chain = self.regions[k].chain }
    end
end

-- Deadlines: regions past their timeout fail what they still owe ----------

local function tick(self)
    local live = self.live
    if next(live) == nil then
        return
    end
    local now = now_ns()
    for g in pairs(live) do
        if gone(g) then
            abandon(self, g)
        end
        for k = 1, g.open and self.R or 0 do
            if not g.timed[k] and now >= g.t0 + self.tmo_ns[k] then
                g.timed[k] = true
                local why = fmt("timed out after %d ms", self.tmo[k])
                local n = g.n
                for i = 1, n do
                    if g.mode[i] ~= 0 and g.st[(k - 1) * n + i] == nil
                       and not g.done[i]
                    then
                        add(self.m_timeouts[k], 1)
                        fail(self, g, k, i, why)
                    end
                end
            end
        end
        if g.left == 0 then
            live[g] = nil
            wake(g)
        end
    end
end

-- One watch tick per worker and interval, shared by the instances that
-- use it across reloads (shotover.pools: closed once no configuration in
-- use has one); an instance goes from its list with its configuration.
local function ticker(w, ms)
    return pools.get("scatter.tick", { ms = ms }, function()
        local t = { w = w, list = setmetatable({}, { __mode = "k" }) }
        t.token = watch.pipe(w, function()
            for inst in pairs(t.list) do
                tick(inst)
            end
        end)
        watch.tick(w, t.token, ms)
        return t
    end, function(t)
        watch.close(t.w, t.token)
    end)
end

-- Instance -----------------------------------------------------------------

function _M.new(conf, env)
    local R = #conf.regions
    local self = setmetatable({
        name = conf.name or "scatter", R = R,
        W = conf.write_quorum or floor(R / 2) + 1,
        RQ = conf.read_quorum or floor(R / 2) + 1,
        buffer = conf.buffer_size, repair = conf.repair,
        regions = {}, names = {}, tmo = {}, tmo_ns = {},
        fifos = {}, handlers = nil, live = {},
        m_region_failed = {}, m_timeouts = {}, m_repairs = {},
        m_repair_failed = {}, m_dropped = {},
    }, mt)
    local labels = { name = self.name }
    self.m_requests = metrics.counter("shotover_scatter_requests_total",
        "requests sent to every region", labels)
    self.m_refused = metrics.counter("shotover_scatter_refused_total",
        "requests refused: not a read nor an idempotent write", labels)
    self.m_quorum_failed = metrics.counter(
        "shotover_scatter_quorum_failures_total",
        "requests answered with an error: no quorum", labels)
    self.m_divergent = metrics.counter("shotover_scatter_divergent_total",
        "region replies to a read that differed from the agreed one",
        labels)
    local tmin = math.huge
    for k, r in ipairs(conf.regions) do
        self.regions[k] = { name = r.name,
                            chain = env.build_chain(r.chain, r.name) }
        self.names[k] = r.name
        self.tmo[k] = r.timeout_ms or conf.timeout_ms
        self.tmo_ns[k] = self.tmo[k] * 1e6
        tmin = min(tmin, self.tmo[k])
        self.fifos[k] = {}
        local l = { name = self.name, region = r.name }
        self.m_region_failed[k] = metrics.counter(
            "shotover_scatter_region_failures_total",
            "requests a region failed (an error of its own, a timeout)", l)
        self.m_timeouts[k] = metrics.counter(
            "shotover_scatter_timeouts_total",
            "requests a region did not answer within its timeout", l)
        self.m_repairs[k] = metrics.counter("shotover_scatter_repairs_total",
            "keys repaired in a region by read repair", l)
        self.m_repair_failed[k] = metrics.counter(
            "shotover_scatter_repair_failures_total",
            "read repairs that could not be made", l)
        self.m_dropped[k] = metrics.counter("shotover_scatter_dropped_total",
            "requests not sent to a region: its queue for the client was "
            .. "full", l)
    end
    if env.worker ~= nil then
        self.handlers = {}
        for k = 1, R do
            self.handlers[k] = runner.add_handler(region_open(self, k))
        end
        ticker(env.worker, max(1, min(50, floor(tmin / 10)))).list[self] =
            true
    end
    return self
end

-- Without shadows (dry, or no worker): each region on the client's
-- connection, all at once, the client waiting for every one.
local function run_region(chain, region, b)
    return chain:run_sub(region.chain, b)
end

local function run_inline(self, chain, g, sub, idx)
    local tasks = {}
    for k = 1, self.R do
        tasks[k] = chain:spawn(run_region, chain, self.regions[k], sub)
    end
    for k = 1, self.R do
        local ok, resp = pcall(chain.join, chain, tasks[k])
        for j = 1, #idx do
            local i = idx[j]
            if ok then
                arrive(self, g, k, i, resp[j])
            else
                fail(self, g, k, i, tostring(resp))
            end
        end
    end
end

-- After the client's replies: repairs of the regions that differed, and
-- what late replies will be compared against.
local function close(self, chain, g, idx)
    local n, R = g.n, self.R
    for j = 1, #idx do
        local i = idx[j]
        if g.mode[i] == READ and g.pos[i] and g.src[i] ~= nil then
            local agreed = g.out[i]
            local key, owed
            for k = 1, R do
                local s = (k - 1) * n + i
                if g.st[s] == 1 and same(g.rep[s], agreed) == 0 then
                    key = key or g.reqs[i]:arg(g.pos[i])
                    add(self.m_divergent, 1)
                    local sh, new = runner.shadow(chain.c, self.handlers[k])
                    if sh ~= nil and runner.queued(sh) < self.buffer
                       and runner.push(sh, g.reqs[i], nil) == 0
                    then
                        fifo_push(queue_of(self, k, sh, new), REPAIR,
                                  { key, g.src[i] })
                    else
                        add(self.m_repair_failed[k], 1)
                    end
                elseif g.st[s] ~= 1 then
                    owed = true         -- it may answer yet (late)
                end
            end
            if owed then
                g.agreed = g.agreed or {}
                g.key = g.key or {}
                g.agreed[i] = agreed:raw()
                g.key[i] = key or g.reqs[i]:arg(g.pos[i])
            end
        end
    end
    g.open = false
    g.reqs, g.out, g.rep, g.wait = nil, nil, nil, nil
end

function methods.transform(self, batch, chain)
    local n = batch.n
    local g = new_gather(self, batch)
    local idx, nidx = {}, 0
    for i = 1, n do
        local m = batch[i]
        local mode, pos = mode_of(m)
        if mode == nil then
            g.mode[i] = 0
            g.done[i] = true
            add(self.m_refused, 1)
            g.out:set(i, error_reply(m, fmt(
                "shotover scatter \"%s\": %s is not sent to every region "
                .. "(only reads and idempotent writes are): refused",
                self.name, m:command())))
        elseif mode == LOCAL then
            -- QUIT: the first region's sink answers it on the client's own
            -- run, and so closes the client once its replies are written
            g.mode[i] = 0
            g.done[i] = true
            local b = new_batch(0)
            b:push(m)
            g.out:set(i, chain:run_sub(self.regions[1].chain, b)[1])
        else
            g.mode[i], g.pos[i] = mode, pos
            g.ok[i], g.bad[i], g.done[i] = 0, 0, false
            nidx = nidx + 1
            idx[nidx] = i
        end
    end
    if nidx == 0 then
        return g.out
    end
    g.left = nidx
    add(self.m_requests, nidx)
    -- inline: without a worker, and on a shadow run itself (scatter in
    -- an asynchronous tee's chain), which cannot have shadows of its own
    if chain.c == nil or self.handlers == nil
       or runner.is_shadow(chain.c)
    then
        local sub = batch
        if nidx < n then
            sub = new_batch(0)
            for j = 1, nidx do
                sub:push(batch[idx[j]])
            end
        end
        run_inline(self, chain, g, sub, idx)
        return g.out
    end
    -- every region's shadow gets the requests; a region whose queue for
    -- this client already holds buffer_size requests fails the batch at
    -- once (a batch is never cut: a healthy region takes any batch)
    g.timed = {}
    for k = 1, self.R do
        local sh, new = runner.shadow(chain.c, self.handlers[k])
        if sh == nil then
            for j = 1, nidx do
                fail(self, g, k, idx[j], "no connection to the region")
            end
        else
            local q = queue_of(self, k, sh, new)
            local room = runner.queued(sh) < self.buffer
            for j = 1, nidx do
                local i = idx[j]
                if room and runner.push(sh, batch[i], nil) == 0 then
                    fifo_push(q, g, i)
                else
                    add(self.m_dropped[k], 1)
                    fail(self, g, k, i, "its queue for this client is full")
                end
            end
        end
    end
    if g.left > 0 then
        self.live[g] = true
        g.wait = new_batch(0)
        while g.left > 0 do
            if g.wait.waiting == 0 then
                g.waiting = true
                chain:await(g.wait, 1)
            else
                chain:wait()        -- (still owed: never expected)
            end
        end
        self.live[g] = nil
    end
    local out = g.out
    if self.repair then
        close(self, chain, g, idx)
    else
        g.open = false
    end
    return out
end

return _M
