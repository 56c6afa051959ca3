-- redis_cluster: the sink for a Redis Cluster, behind one endpoint for
-- clients that know nothing of clusters.  See docs/transforms/redis_cluster.md.
--
-- Per worker and settings, one cluster view (shotover.pools): the slot map
-- (CLUSTER SLOTS from any known node), and one redis pool per node
-- (the C pool of the `redis` sink: pipelined shared connections, dedicated
-- ones for a client's stateful commands).  A batch is cut into parts, each
-- for one slot (or, fanned out, one node): a request on keys of one slot
-- is one part; MGET, MSET, DEL, UNLINK, EXISTS and TOUCH across slots are
-- one part per slot, joined in order; DBSIZE, KEYS, SCAN, FLUSHALL,
-- FLUSHDB go to every master.  Parts go to their nodes together (one wait
-- for all), then replies are looked at: MOVED updates the map and sends
-- the part again, ASK sends it again after ASKING on the same connection,
-- TRYAGAIN and a node that could not be reached (before the request was
-- sent) send it again after a fresh map, up to max_redirects times.
-- MULTI ... EXEC is queued here and sent at EXEC in one piece to the
-- node of its slot.
local ffi = require "ffi"
local bit = require "bit"
local base = require "shotover.ffi"
local message = require "shotover.message"
local schema = require "shotover.schema"
local pools = require "shotover.pools"
local log = require "shotover.log"
local command_ids = require "shotover.redis.command_ids"
local reply = require "shotover.redis.reply"
local decode = require "shotover.redis.decode"
local keys = require "shotover.redis.keys"

local C = base.C
local band = bit.band
local new_batch, command = message.new_batch, message.command
local fmt, find, sub = string.format, string.find, string.sub
local tonumber, tostring, ipairs, pairs, type = tonumber, tostring, ipairs,
                                                 pairs, type

local CMD_STREAM = C.SH_CMD_STREAM

local _M = {
    name = "redis_cluster",
    version = "0.1.0",
    capabilities = { sink = true, lanes = true },
    protocols = { "redis" },
    schema = {
        nodes = { type = "table", required = true },
        read_from = { type = "enum", values = { "master", "replica" },
                      default = "master" },
        max_redirects = { type = "integer", min = 1, max = 100, default = 5 },
        refresh_interval_ms = { type = "integer", min = 0, default = 10000 },
    },
}
-- each node's pool: the `redis` sink's settings
local redis_sink = require "shotover.transforms.redis"
for _, k in ipairs(redis_sink.POOL_SETTINGS) do
    _M.schema[k] = redis_sink.schema[k]
end

function _M.check_config(conf)
    if #conf.nodes == 0 then
        return nil, "nodes: at least one \"host:port\" of the cluster"
    end
    for i, n in ipairs(conf.nodes) do
        if schema.parse_hostport(n) == nil then
            return nil, fmt('nodes[%d]: expected "host:port", got %s', i,
                            tostring(n))
        end
    end
    if conf.username and not conf.password then
        return nil, "username needs a password"
    end
    return require("shotover.tls").check_sink(conf)
end

local mt = { __index = {} }
local methods = mt.__index

-- The cluster view ----------------------------------------------------------

local Cluster = {}
Cluster.__index = Cluster

local function new_cluster(worker, conf, name)
    return setmetatable({
        worker = worker, conf = conf, name = name,
        pools = {},             -- "host:port" or "host:port/ro" -> pool
        master = {},            -- slot -> "host:port"
        replicas = {},          -- slot -> { "host:port", ... } (shared)
        masters = {},           -- the masters, in slot order
        seeds = conf.nodes,
        known = false,          -- a map was read once
        refreshed = 0,          -- when (ns)
        stale = false,          -- a MOVED or a failure: read it again
        refreshing = false,
        rr = 0,
    }, Cluster)
end

function Cluster.free(cl)
    for _, p in pairs(cl.pools) do
        C.sh_ffi_redis_pool_free(p)
    end
    cl.pools = {}
end

-- The pool of node addr (made on first use); ro: its READONLY pool.
function Cluster.pool(cl, addr, ro)
    local k = ro and addr .. "/ro" or addr
    local p = cl.pools[k]
    if p == nil then
        p = redis_sink.new_pool(cl.worker, cl.conf, addr, cl.name, cl.name,
                                ro)
        cl.pools[k] = p
    end
    return p
end

local now_ns = require("shotover.metrics").now_ns

-- Send batch b to pool p for this client; its replies (filled once the
-- client's wait ends when the pool answered AGAIN).
local function send(p, chain, b)
    local resp = new_batch(b.n)
    C.sh_ffi_redis_send(p, chain.c, b, resp)
    return resp
end

local function addr_of(node, asked)
    local host = node[1]
    if host == nil or host == "" or host == "?" then
        host = asked:match("^(.*):%d+$")
    end
    if find(host, ":", 1, true) then
        host = "[" .. host .. "]"
    end
    return host .. ":" .. tostring(node[2])
end

-- Take a CLUSTER SLOTS reply (asked of node `asked`).
function Cluster.learn(cl, v, asked)
    local master, replicas, masters, seen = {}, {}, {}, {}
    for _, range in ipairs(v) do
        local from, to = tonumber(range[1]), tonumber(range[2])
        local m = type(range[3]) == "table" and addr_of(range[3], asked)
        if from and to and m then
            local reps = {}
            for k = 4, #range do
                if type(range[k]) == "table" then
                    reps[#reps + 1] = addr_of(range[k], asked)
                end
            end
            for s = from, to do
                master[s], replicas[s] = m, reps
            end
            if not seen[m] then
                seen[m] = true
                masters[#masters + 1] = m
            end
        end
    end
    if #masters == 0 then
        return false
    end
    cl.master, cl.replicas, cl.masters = master, replicas, masters
    cl.known, cl.stale, cl.refreshed = true, false, now_ns()
    return true
end

-- Read the slot map again, asking the known masters, then the seeds, one
-- after the other until one answers.  On the client's connection (its
-- wait); a refresh already running elsewhere is not repeated.
local SLOTS_CMD = { "CLUSTER", "SLOTS" }
function Cluster.refresh(cl, chain)
    if cl.refreshing then
        return cl.known
    end
    cl.refreshing = true
    local tried, ok = {}, false
    local list = {}
    for _, a in ipairs(cl.masters) do list[#list + 1] = a end
    for _, a in ipairs(cl.seeds) do list[#list + 1] = a end
    for _, a in ipairs(list) do
        if not tried[a] then
            tried[a] = true
            local b = new_batch(0)
            b:push(command(SLOTS_CMD))
            local done, resp = pcall(function()
                local r = send(cl:pool(a), chain, b)
                chain:wait()
                return r
            end)
            local r = done and resp[1]
            if r and r:is_error() then
                cl.last_error = r:line()     -- why, for the clients
            elseif r then
                local v = r:decode()
                if type(v) == "table" and cl:learn(v, a) then
                    ok = true
                    break
                end
            end
        end
    end
    cl.refreshing = false
    if ok then
        cl.last_error = nil
    else
        cl.stale, cl.refreshed = true, now_ns()
        log.warn("%s: no node answered CLUSTER SLOTS (tried %d)", cl.name,
                 #list)
    end
    return ok
end

-- What a batch's requests become ---------------------------------------------

local id = command_ids.id
local MGET, MSET = id("MGET"), id("MSET")     -- (MSETNX: never split)
local DEL, UNLINK, EXISTS, TOUCH = id("DEL"), id("UNLINK"), id("EXISTS"),
                                   id("TOUCH")
local DBSIZE, KEYS, SCAN = id("DBSIZE"), id("KEYS"), id("SCAN")
local FLUSHALL, FLUSHDB = id("FLUSHALL"), id("FLUSHDB")
local MULTI, EXEC, DISCARD = id("MULTI"), id("EXEC"), id("DISCARD")
local WATCH, UNWATCH = id("WATCH"), id("UNWATCH")
local READONLY, READWRITE, ASKING = id("READONLY"), id("READWRITE"),
                                    id("ASKING")
local SUM = { [DEL] = true, [UNLINK] = true, [EXISTS] = true,
              [TOUCH] = true }
local FANOUT = { [DBSIZE] = "sum", [KEYS] = "concat", [FLUSHALL] = "ok",
                 [FLUSHDB] = "ok" }

local CROSSSLOT = "CROSSSLOT Keys in request don't hash to the same slot"

local kpos = {}
local function slot_of_arg(m, i)
    local p, n = m:arg_view(i)
    return C.sh_ffi_redis_key_slot(p, n)
end

-- The slot of all of m's keys: slot (nil: no keys), or false when they
-- are in several slots.
local function slot_of(m)
    local n = keys.positions(m, kpos)
    if n == 0 then
        return nil
    end
    local s = slot_of_arg(m, kpos[1])
    for k = 2, n do
        if slot_of_arg(m, kpos[k]) ~= s then
            return false
        end
    end
    return s
end

-- A part: a request for one slot (slot) or one node (node), its reply.
local function part(m, slot, node)
    return { m = m, slot = slot, node = node }
end

-- MGET, MSET, DEL... across slots: one part per slot, keys in order.
local function split(m, step)
    local by, order = {}, {}
    local n = m.argc
    if (n - 1) % step ~= 0 then
        return nil                  -- Redis will say what is wrong with it
    end
    for i = 2, n, step do
        local s = slot_of_arg(m, i)
        local g = by[s]
        if g == nil then
            g = { args = { m:arg(1) }, at = {} }
            by[s] = g
            order[#order + 1] = s
        end
        for k = 0, step - 1 do
            g.args[#g.args + 1] = m:arg(i + k)
        end
        g.at[#g.at + 1] = (i - 2) / step + 1       -- key number
    end
    if #order == 1 then
        return nil                                  -- one slot after all
    end
    local parts = {}
    for k, s in ipairs(order) do
        local p = part(command(by[s].args), s)
        p.at = by[s].at
        parts[k] = p
    end
    return parts
end

-- The reply of a request the cluster left unanswered.
local function no_reply()
    return reply.error("shotover: no reply from the cluster")
end

-- Joins: the client's reply from its parts' replies.
local function first_error(parts)
    for _, p in ipairs(parts) do
        if p.reply == nil then
            return no_reply()
        elseif p.reply:is_error() then
            return p.reply
        end
    end
    return nil
end

local function join_sum(parts)
    local e = first_error(parts)
    if e then return e end
    local total = 0
    for _, p in ipairs(parts) do
        local v = p.reply:decode()
        total = total + (type(v) == "number" and v or 0)
    end
    return reply.integer(total)
end

local function join_ok(parts)
    return first_error(parts) or reply.simple("OK")
end

local function join_mget(parts, nkeys)
    local e = first_error(parts)
    if e then return e end
    local out = {}
    for k = 1, nkeys do out[k] = reply.NULL end
    for _, p in ipairs(parts) do
        local v = p.reply:decode()
        for k, at in ipairs(p.at) do
            local x = type(v) == "table" and v[k]
            out[at] = (x == nil or x == decode.NULL) and reply.NULL or x
        end
    end
    return reply.array(out)
end

local function join_concat(parts)
    local e = first_error(parts)
    if e then return e end
    local out = {}
    for _, p in ipairs(parts) do
        local v = p.reply:decode()
        for _, x in ipairs(type(v) == "table" and v or {}) do
            out[#out + 1] = x
        end
    end
    return reply.array(out)
end

-- SCAN over every master: the client's cursor is the node's cursor times
-- 1024 plus the node's number in the slot-ordered list of masters (0 on
-- the first call); when a node's scan ends, the next node's begins.
local CURSOR_NODES = 1024
local function scan_parts(cl, m)
    local cur = tonumber(m:arg(2)) or 0
    local idx = cur % CURSOR_NODES
    local node_cur = (cur - idx) / CURSOR_NODES
    local node = cl.masters[idx + 1]
    if node == nil then
        return nil, reply.error("ERR invalid cursor")
    end
    local args = m:args()
    args[2] = fmt("%.0f", node_cur)
    local p = part(command(args), nil, node)
    p.idx = idx
    return { p }
end

local function join_scan(parts, cl)
    local e = first_error(parts)
    if e then return e end
    local p = parts[1]
    local v = p.reply:decode()
    if type(v) ~= "table" then
        return p.reply
    end
    local next_cur = tonumber(v[1]) or 0
    local idx = p.idx
    local cursor
    if next_cur ~= 0 then
        cursor = next_cur * CURSOR_NODES + idx
    elseif idx + 1 < #cl.masters then
        cursor = idx + 1                            -- the next node's start
    else
        cursor = 0
    end
    return reply.array({ fmt("%.0f", cursor), v[2] or {} })
end

-- Routing and sending ---------------------------------------------------

local READ = "read"
local query_class = require("shotover.protocols.redis").query_class

-- The pool a part goes to (nil: no node holds its slot).
local function pool_of(self, cl, p)
    if p.ask then
        return cl:pool(p.ask), p.ask
    end
    local addr = p.node
    if addr == nil then
        if p.slot == nil then
            addr = cl.masters[1]
        else
            addr = cl.master[p.slot]
            if self.replica_reads and not p.write then
                local reps = cl.replicas[p.slot]
                if reps and #reps > 0 then
                    cl.rr = cl.rr + 1
                    local r = reps[cl.rr % #reps + 1]
                    return cl:pool(r, true), r
                end
            end
        end
    end
    if addr == nil then
        return nil
    end
    return cl:pool(addr), addr
end

-- What a reply says about where its request belongs: "moved", slot,
-- addr; "ask", slot, addr; "again" (TRYAGAIN, or a node not reached:
-- safe to send again); nil.
local function redirect(r)
    if r == nil or not r:is_error() then
        return nil
    end
    if r.rtype ~= 45 or r.len < 3 then             -- "-...\r\n" only
        return nil
    end
    local line = ffi.string(r.data + 1, r.len - 3)
    if sub(line, 1, 6) == "MOVED " or sub(line, 1, 4) == "ASK " then
        local kind, s, addr = line:match("^(%u+) (%d+) (%S+)$")
        if kind then
            return kind == "MOVED" and "moved" or "ask", tonumber(s), addr
        end
    elseif sub(line, 1, 9) == "TRYAGAIN " then
        return "again"
    elseif find(line, "^ERR shotover: backend .* unavailable: .*"
                .. "%(retrying%)$") then
        return "again", nil, nil, true          -- and read the map again
    end
    return nil
end

local ASKING_CMD = { "ASKING" }
local UNWATCH_CMD = { "UNWATCH" }

-- Send every part to its node, all at once, until each has a reply that
-- is not a redirection (or max_redirects sends were made).
function methods.run_parts(self, cl, chain, parts)
    local todo = parts
    for attempt = 1, self.max_redirects + 1 do
        local groups, order = {}, {}
        for _, p in ipairs(todo) do
            local pool, addr = pool_of(self, cl, p)
            if pool == nil then
                p.reply = reply.error("CLUSTERDOWN Hash slot not served")
            else
                -- (a pool is one cdata object per node: a key as it is)
                local key = p.ask and "ask " .. addr or pool
                local g = groups[key]
                if g == nil then
                    g = { pool = pool, b = new_batch(0), parts = {},
                          at = {} }
                    groups[key] = g
                    order[#order + 1] = g
                end
                if p.ask then
                    g.b:push(command(ASKING_CMD))
                end
                g.b:push(p.m)
                g.parts[#g.parts + 1] = p
                g.at[#g.at + 1] = g.b.n
            end
        end
        for _, g in ipairs(order) do
            g.resp = send(g.pool, chain, g.b)
        end
        if #order > 0 then
            chain:wait()
        end
        local again, refresh = {}, false
        for _, g in ipairs(order) do
            for k, p in ipairs(g.parts) do
                local r = g.resp[g.at[k]]
                p.reply = r
                local kind, s, addr, down = redirect(r)
                if kind and attempt <= self.max_redirects then
                    p.ask = nil
                    if kind == "moved" then
                        cl.master[s] = addr
                        cl.stale = true
                    elseif kind == "ask" then
                        p.ask = addr
                    elseif down then
                        refresh = true
                    end
                    again[#again + 1] = p
                end
            end
        end
        if #again == 0 then
            return
        end
        if refresh then
            cl:refresh(chain)
        end
        todo = again
    end
end

-- MULTI ... EXEC: queued per client, sent at EXEC in one piece.
local function txn_queue(self, chain, m)
    local t = chain.conn[self]
    local s = slot_of(m)
    if s == false or (s ~= nil and t.slot ~= nil and s ~= t.slot) then
        t.dirty = true
        return reply.error(CROSSSLOT)
    end
    if s ~= nil then
        t.slot = s
    end
    t.cmds[#t.cmds + 1] = m:args()
    return reply.simple("QUEUED")
end

function methods.exec(self, cl, chain)
    local t = chain.conn[self]
    chain.conn[self] = nil
    if t.dirty then
        return reply.error("EXECABORT Transaction discarded because of "
                           .. "previous errors.")
    end
    local b = new_batch(0)
    b:push(command({ "MULTI" }))
    for _, a in ipairs(t.cmds) do
        b:push(command(a))
    end
    b:push(command({ "EXEC" }))
    for _ = 1, self.max_redirects do
        local addr = t.slot and cl.master[t.slot] or t.node or cl.masters[1]
        if addr == nil then
            return reply.error("CLUSTERDOWN Hash slot not served")
        end
        local resp = send(cl:pool(addr), chain, b)
        chain:wait()
        local moved = false
        for i = 1, resp.n - 1 do
            local kind, s, to = redirect(resp[i])
            if kind == "moved" then
                cl.master[s], cl.stale, moved = to, true, true
            elseif kind then
                moved = true
            end
        end
        if not moved then
            return resp[resp.n]
        end
        cl:refresh(chain)
    end
    return reply.error("TRYAGAIN the transaction's slot kept moving")
end

-- The common batch: requests on keys of one slot each, every slot's
-- master the same node (one client, or pipelined keys of one node): the
-- batch goes there as it is, in one send and without a table per request
-- (a -P 1 client's batches are one request: the loops above would not
-- compile for them).  nil when the batch is not like that.  Replies that
-- are redirections are sent again the general way, one part each.
local SPECIAL = {}
for _, c in ipairs({ MGET, MSET, DEL, UNLINK, EXISTS, TOUCH, DBSIZE, KEYS,
                     SCAN, FLUSHALL, FLUSHDB, MULTI, EXEC, DISCARD, WATCH,
                     UNWATCH, READONLY, READWRITE, ASKING }) do
    SPECIAL[c] = true
end

function methods.one_node(self, cl, chain, batch)
    local addr
    for i = 1, batch.n do
        local m = batch[i]
        if SPECIAL[m.cmd_id] or band(m.cmd, CMD_STREAM) ~= 0 then
            return nil
        end
        local s = slot_of(m)
        if not s then
            return nil                  -- no key, or several slots
        end
        local a = cl.master[s]
        if a == nil or (addr ~= nil and a ~= addr) then
            return nil
        end
        addr = a
    end
    if addr == nil then
        return nil
    end
    local resp = send(cl:pool(addr), chain, batch)
    chain:wait()
    local redo
    for i = 1, batch.n do
        local r = resp[i]
        if r == nil or (r.rtype == 45 and redirect(r)) then
            redo = redo or {}
            redo[#redo + 1] = i
        end
    end
    if redo then
        local parts = {}
        for k, i in ipairs(redo) do
            local m = batch[i]
            parts[k] = part(m, slot_of(m))
            parts[k].write = true
        end
        self:run_parts(cl, chain, parts)
        for k, i in ipairs(redo) do
            resp:set(i, parts[k].reply)
        end
    end
    return resp
end

-- The replies of the parts that are whole requests (p.i: the request's
-- place in the batch), into resp.
local function settle(resp, parts)
    for _, p in ipairs(parts) do
        if p.i then
            resp:set(p.i, p.reply or no_reply())
        end
    end
end

-- The batch ----------------------------------------------------------------

function _M.new(conf, env)
    local name = conf.name or "redis_cluster"
    local self = setmetatable({
        watching = {},          -- chain.conn key: the slot WATCHed
        name = name, max_redirects = conf.max_redirects,
        replica_reads = conf.read_from == "replica",
        refresh_ns = conf.refresh_interval_ms * 1e6,
    }, mt)
    if env.worker ~= nil then
        local settings = {}
        for k, v in pairs(conf) do settings[k] = v end
        self.cluster = pools.get("redis_cluster", settings, function()
            return new_cluster(env.worker, settings, name)
        end, Cluster.free)
    end
    return self
end

-- a map known stale (MOVED, a node down) is read again at most this often
local STALE_NS = 100e6

local WRITE_CLASSES = { write = true, read_write = true, admin = true,
                        other = true }

function methods.transform(self, batch, chain)
    local cl = self.cluster
    if cl == nil then                       -- no worker: answer dry
        return require("shotover.protocols.redis").dry(batch, chain)
    end
    local age = now_ns() - cl.refreshed
    if not cl.known or (cl.stale and age > STALE_NS)
       or (self.refresh_ns > 0 and age > self.refresh_ns)
    then
        if not cl:refresh(chain) and not cl.known then
            -- the last node's error says which sink and why (a TLS
            -- handshake that failed, a refused connection)
            return message.error_batch(batch, "CLUSTERDOWN shotover: no "
                .. "node of the cluster answered"
                .. (cl.last_error and " (" .. cl.last_error .. ")" or ""))
        end
    end
    local n = batch.n
    local conn = chain.conn
    if conn[self] == nil and not self.replica_reads then
        local resp = self:one_node(cl, chain, batch)
        if resp then
            return resp
        end
    end
    local resp = new_batch(n)
    local parts, jobs = {}, {}
    for i = 1, n do
        local m = batch[i]
        local cid = m.cmd_id
        local txn = conn[self]
        local done, ps, join
        if txn and cid == WATCH then
            done = reply.error("ERR WATCH inside MULTI is not allowed")
        elseif txn and cid ~= EXEC and cid ~= DISCARD and cid ~= MULTI then
            done = txn_queue(self, chain, m)
        elseif cid == MULTI then
            if txn then
                done = reply.error("ERR MULTI calls can not be nested")
            else
                -- keys WATCHed pin the transaction to their slot
                conn[self] = { cmds = {}, slot = conn[self.watching] }
                done = reply.simple("OK")
            end
        elseif cid == EXEC then
            if txn then
                -- what came before it in the batch goes first
                if #parts > 0 then
                    self:run_parts(cl, chain, parts)
                    settle(resp, parts)
                    parts = {}
                end
                done = self:exec(cl, chain)
                conn[self.watching] = nil
            else
                done = reply.error("ERR EXEC without MULTI")
            end
        elseif cid == DISCARD then
            local w = conn[self.watching]
            conn[self] = nil
            conn[self.watching] = nil
            if not txn then
                done = reply.error("ERR DISCARD without MULTI")
            elseif w == nil then
                done = reply.simple("OK")
            else
                -- the node holds the WATCH: DISCARD would have dropped it
                ps, join = { part(command(UNWATCH_CMD), w) }, "ok"
            end
        elseif cid == WATCH then
            local s = slot_of(m)
            local w = conn[self.watching]
            if s == false or (s ~= nil and w ~= nil and s ~= w) then
                done = reply.error(CROSSSLOT)
            else
                conn[self.watching] = s
                ps = { part(m, s) }
            end
        elseif cid == UNWATCH then
            local w = conn[self.watching]
            conn[self.watching] = nil
            if w == nil then
                done = reply.simple("OK")
            else
                ps = { part(m, w) }
            end
        elseif cid == READONLY or cid == READWRITE or cid == ASKING then
            done = reply.simple("OK")   -- shotover decides where reads go
        elseif FANOUT[cid] then
            ps = {}
            for k, a in ipairs(cl.masters) do
                ps[k] = part(m, nil, a)
            end
            join = FANOUT[cid]
        elseif cid == SCAN then
            local err
            ps, err = scan_parts(cl, m)
            done, join = err, "scan"
        else
            local s = slot_of(m)
            if s == false then
                if cid == MGET or SUM[cid] then
                    ps = split(m, 1)
                    join = cid == MGET and "mget" or "sum"
                elseif cid == MSET then
                    ps = split(m, 2)
                    join = "ok"
                end
                if ps == nil and cid == MSET then
                    ps = { part(m, slot_of_arg(m, 2)) }   -- a wrong arity
                elseif ps == nil then
                    done = reply.error(CROSSSLOT)
                end
            else
                -- one part, its reply the client's: no job for it
                local p = part(m, s)
                -- subscriptions (and what follows them) and keyless
                -- commands go to the first master, like the pool's pins
                if s == nil and band(m.cmd, CMD_STREAM) ~= 0 then
                    p.node = cl.masters[1]
                end
                p.write = not self.replica_reads or query_class(m) ~= READ
                p.i = i
                parts[#parts + 1] = p
            end
        end
        if done then
            resp:set(i, done)
        elseif ps then
            for _, p in ipairs(ps) do
                if p.write == nil then
                    p.write = WRITE_CLASSES[query_class(p.m)] or false
                end
                parts[#parts + 1] = p
            end
            jobs[#jobs + 1] = { i = i, parts = ps, join = join, m = m }
        end
    end
    if #parts > 0 then
        self:run_parts(cl, chain, parts)
        settle(resp, parts)
    end
    for _, j in ipairs(jobs) do
        local r
        if j.join == nil then
            r = j.parts[1].reply
        elseif j.join == "sum" then
            r = join_sum(j.parts)
        elseif j.join == "ok" then
            r = join_ok(j.parts)
        elseif j.join == "mget" then
            r = join_mget(j.parts, j.m.argc - 1)
        elseif j.join == "concat" then
            r = join_concat(j.parts)
        elseif j.join == "scan" then
            r = join_scan(j.parts, cl)
        end
        resp:set(j.i, r or no_reply())
    end
    return resp
end

_M.key_slot = function(key)
    return C.sh_ffi_redis_key_slot(key, #key)
end

return _M
