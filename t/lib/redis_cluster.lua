-- t/lib/redis_cluster.lua -- a real Redis Cluster for the integration specs
-- (the ground for shotover's cluster-aware Redis sink): masters * (1 +
-- replicas) Debian redis-server processes in cluster mode on loopback,
-- joined by `redis-cli --cluster create`, with redis-cli as the client.
--
-- Choices, and why:
--   * Every node gets two free loopback ports from h.free_port: its client
--     port and its cluster bus port (--cluster-port, Redis 7).  The default
--     bus port (client + 10000) can collide with anything or pass 65535 for
--     the kernel's ephemeral ports, so it is never used.
--   * Each node has its own dir (h.tmpdir) holding its nodes.conf, its log
--     (redis.log) and nothing else: --appendonly no --save '' (no
--     persistence; a restarted node gets its data from its master).
--     restart() starts it in the same dir on the same ports, so it reads its
--     nodes.conf and rejoins with its old node id.
--   * cluster-node-timeout 2000 ms by default (opts.node_timeout_ms): from
--     a master's SIGKILL to its replica promoted and every node ok took
--     3.5-4.5 s on the 2-core dev machine (about 2.7 s at 1000 ms), while a
--     node that stalls for a moment on a loaded machine is not failed over
--     by mistake (1000 ms works too but leaves little margin).  Startup,
--     spawn to ready, is about 3 s, most of it redis-cli --cluster create
--     waiting for the join.
--   * cluster-replica-validity-factor 0: a replica always tries to fail
--     over, however long it was cut off from its master, so a spec never
--     waits for a promotion that Redis decided against.
--   * repl-diskless-sync-delay 0: a replica's first sync starts at once
--     (Redis 7 waits 5 s by default for more replicas to share it).
--   * cluster-require-full-coverage yes (Redis's default): a cluster missing
--     a slot reports cluster_state:fail, which is what wait_ok checks.
--   * Ready means, for every live node: CLUSTER INFO says cluster_state:ok,
--     16384 slots assigned and ok, and it knows every node; its CLUSTER
--     NODES gives the same topology as every other live node's (ids,
--     addresses, roles, masters, slots, migrations), sees no live node
--     failing or disconnected; and if it is a replica its link to its master
--     is up.  Polled with h.wait_until, never a fixed sleep.
--   * The harness itself talks to the nodes in-process (h.connect, RESP2),
--     one cached connection per node: polling six nodes through redis-cli
--     processes would cost ~20 forks per poll on a 2-core machine.  cli()
--     is redis-cli, for specs that want the real client.
--   * h.defer stops every node (SIGTERM to all at once, SIGKILL after a
--     deadline) before harness.cleanup removes the dirs.
--
--   local h = require("harness")
--   local rc = require("redis_cluster")
--   describe("...", function()
--     local cl
--     setup(function() cl = rc.start{ masters = 3, replicas = 1 } end)
--     teardown(h.cleanup)              -- stops every node, removes the dirs
--     it("...", function()
--       assert.equal("OK", cl:cli(1, "set", "k", "v", { pre = { "-c" } }))
--     end)
--   end)
--
-- rc.start(opts) -> Cluster.  opts (all optional): masters = 3, replicas =
--   1 (per master), node_timeout_ms = 2000, args = { ... } (extra
--   redis-server arguments for every node), ready_timeout = s (default 60),
--   tls = { cert = path, key = path, ca = path }: every node speaks only
--   TLS, to clients, on its bus (tls-cluster) and to its master
--   (tls-replication), on its `port` (--port 0 --tls-port port); client
--   certificates are not asked for.  The harness's in-process queries then
--   go through a t/tools/tls-tunnel per node (node.tunnel), redis-cli gets
--   --tls --cacert ca (cl.tls holds those options).
-- Cluster fields: nodes = { { port, bus_port, dir, proc, log_path, id,
--   argv }, ... } in start order, node_timeout_ms, startup_seconds (spawn to
--   ready), create_output (what redis-cli --cluster create printed).
-- Cluster methods (a node is named by its index in nodes or by its port):
--   seeds()                 { "127.0.0.1:PORT", ... } of every node
--   ports()                 { PORT, ... } of every node
--   node(i_or_port)         the node's entry in nodes
--   cli(i_or_port, args..., [opts])
--                           redis-cli -p PORT args (no -c; pass { pre =
--                           { "-c" } } for cluster mode): h.cli's stdout,
--                           exit code, stderr
--   query(i_or_port, args...)
--                           one command in-process: the RESP reply (as
--                           h.resp_parse gives it), or nil and an error
--                           (connection failure or the server's error)
--   node_id(i_or_port)      CLUSTER MYID (the recorded id when it is down)
--   topology(i_or_port)     CLUSTER NODES of that node (default: the first
--                           live node) as a list of { id, port, bus_port,
--                           flags = { master = true, ... }, role ("master" /
--                           "replica"), master_id (nil for masters), link,
--                           ranges = { { lo, hi }, ... }, migrating }
--   masters() / replicas([master_port])
--                           ports (sorted) of the nodes the first live node
--                           sees as masters / replicas (of that master),
--                           leaving out any it has flagged as failed (fail)
--   slots_of(i_or_port)     the slots that node owns, as a sorted list
--   master_of_slot(slot)    the port of the master owning slot (nil: none)
--   slot_of(key)            CLUSTER KEYSLOT key
--   check()                 true when the cluster is ready as above, else
--                           false and why (one poll of wait_ok)
--   wait_ok(timeout = 30)   until check() holds; the seconds it took
--   cluster_check()         `redis-cli --cluster check`: ok (exit 0 and all
--                           slots covered), its output
--   kill(i_or_port)         SIGKILL the node (a crash); records its role,
--                           slots and replicas for wait_failover
--   restart(i_or_port, timeout)
--                           start a stopped node again in its dir (same
--                           ports and nodes.conf, so the same id); returns
--                           once it answers PING with its old id -- wait_ok
--                           waits for it to rejoin
--   wait_failover(old_master_port, timeout = 60)
--                           until one of the old master's replicas is a
--                           master owning its slots and the cluster is ok;
--                           the new master's port and the seconds it took
--   reshard(from, to, nslots, timeout = 120)
--                           redis-cli --cluster reshard from -> to of
--                           nslots slots (keys migrate with them), then
--                           wait_ok; the list of slots that moved
--   alive(i_or_port), log(i_or_port), log_tail(i_or_port, n)
--   stop(grace = 5)         SIGTERM every node, SIGKILL after grace s
--
-- Needs redis-server and redis-cli 7.x (Debian redis-server / redis-tools,
-- which scripts/deps installs for every build).  The spec of the harness itself is
-- t/integration/700-*.  SHOTOVER_KEEP_TMP=1 keeps the node dirs.

local h = require("harness")

local M = {}

M.SLOTS = 16384
M.HOST = "127.0.0.1"

local Cluster = {}
Cluster.__index = Cluster
M.Cluster = Cluster

---------------------------------------------------------------------------
-- parsing what Redis says
---------------------------------------------------------------------------

-- "k:v\r\n" lines (CLUSTER INFO, INFO) as a table
local function info_fields(text)
    local t = {}
    for k, v in tostring(text):gmatch("([%w_]+):([^\r\n]*)") do t[k] = v end
    return t
end
M.info_fields = info_fields

-- one line of CLUSTER NODES:
-- <id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv>
-- <config-epoch> <link-state> <slot> <slot> ...
local function parse_node_line(line)
    local f = {}
    for w in line:gmatch("%S+") do f[#f + 1] = w end
    if #f < 8 then return nil end
    local port, bus = f[2]:match(":(%d+)@(%d+)")
    local e = { id = f[1], addr = f[2], port = tonumber(port),
        bus_port = tonumber(bus), flags = {}, link = f[8], ranges = {},
        migrating = {}, epoch = tonumber(f[7]) }
    for fl in f[3]:gmatch("[^,]+") do e.flags[fl] = true end
    e.role = e.flags.master and "master" or (e.flags.slave and "replica" or "?")
    if f[4] ~= "-" then e.master_id = f[4] end
    for i = 9, #f do
        local s = f[i]
        if s:sub(1, 1) == "[" then
            -- [slot->-id] migrating / [slot-<-id] importing
            e.migrating[#e.migrating + 1] = s
        else
            local lo, hi = s:match("^(%d+)%-(%d+)$")
            lo = tonumber(lo or s)
            e.ranges[#e.ranges + 1] = { lo, tonumber(hi) or lo }
        end
    end
    return e
end

function M.parse_nodes(text)
    local list = {}
    for line in tostring(text):gmatch("[^\r\n]+") do
        local e = parse_node_line(line)
        if e then list[#list + 1] = e end
    end
    table.sort(list, function(a, b) return (a.port or 0) < (b.port or 0) end)
    return list
end

-- what every node must agree on: ids, addresses, roles, masters, slots and
-- migrations (not liveness flags, epochs or ping times, which are each
-- node's own)
local function topology_key(list)
    local lines = {}
    for _, e in ipairs(list) do
        local r = {}
        for _, rg in ipairs(e.ranges) do r[#r + 1] = rg[1] .. "-" .. rg[2] end
        local odd = {}
        for _, fl in ipairs({ "handshake", "noaddr", "nofailover" }) do
            if e.flags[fl] then odd[#odd + 1] = fl end
        end
        lines[#lines + 1] = table.concat({ e.id, (e.addr:gsub(",.*", "")),
            e.role, e.master_id or "-", table.concat(odd, ","),
            table.concat(r, ","), table.concat(e.migrating, ",") }, " ")
    end
    return table.concat(lines, "\n")
end

---------------------------------------------------------------------------
-- starting
---------------------------------------------------------------------------

function M.start(opts)
    opts = opts or {}
    local masters = opts.masters or 3
    local replicas = opts.replicas or 1
    assert(masters >= 3, "redis_cluster: Redis Cluster needs 3 masters or more")
    local cl = setmetatable({
        nodes = {}, by_port = {}, conns = {}, killed = {},
        masters_n = masters, replicas_n = replicas,
        node_timeout_ms = opts.node_timeout_ms or 2000,
        extra = opts.args or {},
        tls_files = opts.tls,
        tls = opts.tls and { ca = opts.tls.ca } or nil,
    }, Cluster)
    -- stopped before harness.cleanup removes the dirs
    h.defer(function() cl:stop() end)
    local t0 = h.now()
    for i = 1, masters * (1 + replicas) do
        local n = { index = i, port = h.free_port(), bus_port = h.free_port(),
            dir = h.tmpdir("redis-cluster-" .. i) }
        n.log_path = n.dir .. "/redis.log"
        n.argv = { "redis-server",
            "--port", tostring(n.port), "--cluster-port", tostring(n.bus_port),
            "--bind", M.HOST, "--protected-mode", "no", "--daemonize", "no",
            "--dir", n.dir, "--save", "", "--appendonly", "no",
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", tostring(cl.node_timeout_ms),
            "--cluster-replica-validity-factor", "0",
            "--repl-diskless-sync-delay", "0" }
        if opts.tls then
            n.argv[3] = "0"
            for _, a in ipairs({ "--tls-port", tostring(n.port),
                    "--tls-cluster", "yes", "--tls-replication", "yes",
                    "--tls-cert-file", opts.tls.cert, "--tls-key-file", opts.tls.key,
                    "--tls-ca-cert-file", opts.tls.ca, "--tls-auth-clients", "no" }) do
                n.argv[#n.argv + 1] = a
            end
        end
        for _, a in ipairs(cl.extra) do n.argv[#n.argv + 1] = a end
        cl.nodes[i] = n
        cl.by_port[n.port] = n
    end
    -- all spawned first, then waited for: they start side by side
    for _, n in ipairs(cl.nodes) do cl:_spawn(n) end
    if opts.tls then
        for _, n in ipairs(cl.nodes) do
            n.tunnel = h.tls_tunnel({ port = n.port, ca = opts.tls.ca })
        end
    end
    for _, n in ipairs(cl.nodes) do cl:_wait_ping(n, 10) end
    for _, n in ipairs(cl.nodes) do n.id = assert(cl:query(n.port, "CLUSTER", "MYID")) end
    cl:_create()
    cl:wait_ok(opts.ready_timeout or 60)
    cl.startup_seconds = h.now() - t0
    return cl
end

function Cluster:_spawn(n)
    n.proc = h.spawn(n.argv, { stdout = n.log_path, stderr = "stdout", append = true })
    n.proc.is_redis_cluster_node = n
end

function Cluster:_wait_ping(n, timeout)
    h.wait_until(function()
        if not n.proc:alive() then
            error(string.format("cluster node %d exited (%s); log:\n%s", n.port,
                h.status_string(n.proc:poll()), self:log_tail(n.port, 30)), 0)
        end
        local v, err = self:query(n.port, "PING")
        return type(v) == "table" and v.status == "PONG", err
    end, timeout, "cluster node " .. n.port .. " to answer PONG")
end

function Cluster:_create()
    local argv = { "redis-cli", "--cluster", "create" }
    for _, s in ipairs(self:seeds()) do argv[#argv + 1] = s end
    for _, a in ipairs(h.tls_args(self.tls)) do argv[#argv + 1] = a end
    for _, a in ipairs({ "--cluster-replicas", self.replicas_n, "--cluster-yes" }) do
        argv[#argv + 1] = tostring(a)
    end
    local r = h.run(argv, { timeout = 60 })
    self.create_output = r.stdout .. r.stderr
    if r.code ~= 0 or r.timed_out
            or not r.stdout:find("[OK] All 16384 slots covered", 1, true) then
        error(string.format("redis-cli --cluster create failed (%s%s):\n%s",
            tostring(r.code), r.timed_out and ", timed out" or "",
            self.create_output), 0)
    end
end

---------------------------------------------------------------------------
-- nodes
---------------------------------------------------------------------------

function Cluster:node(x)
    local n = self.nodes[x] or self.by_port[x]
    if not n then error("redis_cluster: no node " .. tostring(x), 3) end
    return n
end

function Cluster:port(x) return self:node(x).port end

function Cluster:ports()
    local t = {}
    for i, n in ipairs(self.nodes) do t[i] = n.port end
    return t
end

function Cluster:seeds()
    local t = {}
    for i, n in ipairs(self.nodes) do t[i] = M.HOST .. ":" .. n.port end
    return t
end

function Cluster:alive(x)
    local n = self:node(x)
    return n.proc ~= nil and n.proc:alive()
end

function Cluster:live_nodes()
    local t = {}
    for _, n in ipairs(self.nodes) do
        if n.proc:alive() then t[#t + 1] = n end
    end
    return t
end

function Cluster:log(x) return h.read_file(self:node(x).log_path) or "" end

function Cluster:log_tail(x, count)
    local lines = {}
    for l in self:log(x):gmatch("[^\n]*\n?") do
        if l ~= "" then lines[#lines + 1] = l end
    end
    return table.concat(lines, "", math.max(1, #lines - (count or 40) + 1))
end

function Cluster:cli(x, ...)
    if not self.tls then return h.cli(self:port(x), ...) end
    local args = { ... }
    local opts = {}
    if type(args[#args]) == "table" then opts = table.remove(args) end
    local o = { tls = self.tls }
    for k, v in pairs(opts) do o[k] = v end
    args[#args + 1] = o
    return h.cli(self:port(x), unpack(args))
end

-- one command over the node's cached connection; a connection that fails
-- or times out is dropped (a late reply must not answer the next command)
function Cluster:query(x, ...)
    local port = self:port(x)
    local c = self.conns[port]
    if not c then
        local err
        local n = self:node(x)
        -- a TLS node through its tunnel (which closes the connection at
        -- once when the node cannot be reached)
        c, err = h.try_connect(n.tunnel and n.tunnel.port or port, 1)
        if not c then return nil, err end
        self.conns[port] = c
    end
    local ok, err = c:send(h.resp_command(...), 3)
    local v
    if ok then v, err = c:try_read_reply(5) end
    if v == nil then
        c:close()
        self.conns[port] = nil
        return nil, err
    end
    if type(v) == "table" and v.err then return nil, v.err end
    return v
end

function Cluster:node_id(x)
    local n = self:node(x)
    if n.proc:alive() then
        local id = self:query(n.port, "CLUSTER", "MYID")
        if id then return id end
    end
    return n.id
end

function Cluster:_first_live()
    for _, n in ipairs(self.nodes) do
        if n.proc:alive() then return n end
    end
    error("redis_cluster: no live node", 3)
end

function Cluster:topology(x)
    local n = x and self:node(x) or self:_first_live()
    local text, err = self:query(n.port, "CLUSTER", "NODES")
    if not text then
        error("redis_cluster: CLUSTER NODES on " .. n.port .. ": " .. tostring(err), 2)
    end
    return M.parse_nodes(text)
end

local function flag_list(e)
    local fl = {}
    for k in pairs(e.flags) do fl[#fl + 1] = k end
    table.sort(fl)
    return table.concat(fl, ",")
end

local function usable(e)
    return not (e.flags.fail or e.flags.handshake or e.flags.noaddr)
end

function Cluster:masters()
    local t = {}
    for _, e in ipairs(self:topology()) do
        if e.role == "master" and usable(e) then t[#t + 1] = e.port end
    end
    return t
end

function Cluster:replicas(master)
    local topo = self:topology()
    local mid
    if master then
        mid = self:node(master).id
    end
    local t = {}
    for _, e in ipairs(topo) do
        if e.role == "replica" and usable(e) and (not mid or e.master_id == mid) then
            t[#t + 1] = e.port
        end
    end
    return t
end

local function expand(ranges)
    local t = {}
    for _, r in ipairs(ranges) do
        for s = r[1], r[2] do t[#t + 1] = s end
    end
    return t
end

function Cluster:slots_of(x)
    local port = self:port(x)
    for _, e in ipairs(self:topology()) do
        if e.port == port then return expand(e.ranges) end
    end
    return {}
end

function Cluster:master_of_slot(slot)
    for _, e in ipairs(self:topology()) do
        for _, r in ipairs(e.ranges) do
            if slot >= r[1] and slot <= r[2] then return e.port end
        end
    end
    return nil
end

function Cluster:slot_of(key)
    local v, err = self:query(self:_first_live().port, "CLUSTER", "KEYSLOT", key)
    if type(v) ~= "number" then
        error("redis_cluster: CLUSTER KEYSLOT: " .. tostring(err), 2)
    end
    return v
end

---------------------------------------------------------------------------
-- readiness
---------------------------------------------------------------------------

-- is the cluster settled?  true, or false and why
function Cluster:check()
    local live = self:live_nodes()
    if #live == 0 then return false, "no live node" end
    local live_port = {}
    for _, n in ipairs(live) do live_port[n.port] = true end
    local want_key, want_from
    for _, n in ipairs(live) do
        local where = "node " .. n.port .. ": "
        local info, err = self:query(n.port, "CLUSTER", "INFO")
        if not info then return false, where .. tostring(err) end
        local ci = info_fields(info)
        if ci.cluster_state ~= "ok" then
            return false, where .. "cluster_state:" .. tostring(ci.cluster_state)
        end
        if tonumber(ci.cluster_slots_assigned) ~= M.SLOTS
                or tonumber(ci.cluster_slots_ok) ~= M.SLOTS then
            return false, string.format("%sslots assigned %s, ok %s", where,
                tostring(ci.cluster_slots_assigned), tostring(ci.cluster_slots_ok))
        end
        if tonumber(ci.cluster_known_nodes) ~= #self.nodes then
            return false, where .. "knows " .. tostring(ci.cluster_known_nodes) .. " nodes"
        end
        local text
        text, err = self:query(n.port, "CLUSTER", "NODES")
        if not text then return false, where .. tostring(err) end
        local topo = M.parse_nodes(text)
        local me
        for _, e in ipairs(topo) do
            if live_port[e.port] then
                if e.flags.fail or e.flags["fail?"] or e.link ~= "connected" then
                    return false, string.format("%ssees %d as %s %s", where,
                        e.port, flag_list(e), e.link)
                end
            end
            if e.flags.myself then me = e end
        end
        local key = topology_key(topo)
        if not want_key then
            want_key, want_from = key, n.port
        elseif key ~= want_key then
            return false, string.format("nodes %d and %d disagree:\n%s\n--\n%s",
                want_from, n.port, want_key, key)
        end
        if me and me.role == "replica" then
            local ri = info_fields(self:query(n.port, "INFO", "replication") or "")
            if ri.master_link_status ~= "up" then
                return false, where .. "replica link " .. tostring(ri.master_link_status)
            end
        end
    end
    return true
end

function Cluster:wait_ok(timeout)
    local t0 = h.now()
    h.wait_until(function() return self:check() end, timeout or 30,
        "the redis cluster to be ok", 0.05)
    return h.now() - t0
end

function Cluster:cluster_check()
    local port = self:_first_live().port
    local argv = { "redis-cli", "--cluster", "check", M.HOST .. ":" .. port }
    for _, a in ipairs(h.tls_args(self.tls)) do argv[#argv + 1] = a end
    local r = h.run(argv, { timeout = 30 })
    local out = r.stdout .. r.stderr
    return r.code == 0 and not r.timed_out
        and out:find("[OK] All 16384 slots covered", 1, true) ~= nil, out
end

---------------------------------------------------------------------------
-- failures
---------------------------------------------------------------------------

function Cluster:kill(x)
    local n = self:node(x)
    assert(n.proc:alive(), "redis_cluster: node " .. n.port .. " is not running")
    -- what it was just before, for wait_failover
    local ok, topo = pcall(self.topology, self, n.port)
    local was = { id = n.id, replicas = {} }
    if ok then
        for _, e in ipairs(topo) do
            if e.id == n.id then was.role, was.ranges = e.role, e.ranges end
            if e.master_id == n.id then was.replicas[#was.replicas + 1] = e.port end
        end
    end
    self.killed[n.port] = was
    n.proc:kill(h.SIGKILL)
    assert(n.proc:wait(10), "redis_cluster: node " .. n.port .. " did not die")
    local c = self.conns[n.port]
    if c then c:close(); self.conns[n.port] = nil end
    return was
end

function Cluster:restart(x, timeout)
    local n = self:node(x)
    assert(not n.proc:alive(), "redis_cluster: node " .. n.port .. " is running")
    self:_spawn(n)
    self:_wait_ping(n, timeout or 10)
    local id = self:query(n.port, "CLUSTER", "MYID")
    if id ~= n.id then
        error(string.format("redis_cluster: node %d came back as %s, not %s",
            n.port, tostring(id), n.id), 2)
    end
    return n
end

function Cluster:wait_failover(old, timeout)
    local n = self:node(old)
    local was = self.killed[n.port]
    if not was then
        -- not killed through kill(): ask the live ones now
        was = { id = n.id, replicas = {} }
        for _, e in ipairs(self:topology()) do
            if e.id == n.id then was.role, was.ranges = e.role, e.ranges end
            if e.master_id == n.id then was.replicas[#was.replicas + 1] = e.port end
        end
    end
    if was.role ~= "master" or #was.replicas == 0 then
        error(string.format("redis_cluster: node %d was %s with %d replicas: no failover to wait for",
            n.port, tostring(was.role), #was.replicas), 2)
    end
    local t0 = h.now()
    local promoted
    h.wait_until(function()
        promoted = nil
        local ok, topo = pcall(self.topology, self)
        if not ok then return false, topo end
        for _, e in ipairs(topo) do
            for _, p in ipairs(was.replicas) do
                if e.port == p and e.role == "master" then promoted = p end
            end
        end
        if not promoted then return false, "no replica of " .. n.port .. " promoted yet" end
        local first = was.ranges and was.ranges[1]
        if first and self:master_of_slot(first[1]) ~= promoted then
            return false, "slot " .. first[1] .. " not yet on " .. promoted
        end
        return self:check()
    end, timeout or 60, "a replica of " .. n.port .. " to take over", 0.05)
    return promoted, h.now() - t0
end

---------------------------------------------------------------------------
-- resharding
---------------------------------------------------------------------------

function Cluster:reshard(from, to, nslots, timeout)
    local fport, tport = self:port(from), self:port(to)
    local fid, tid = self:node_id(fport), self:node_id(tport)
    local before = {}
    for _, s in ipairs(self:slots_of(fport)) do before[s] = true end
    local argv = { "redis-cli", "--cluster", "reshard", M.HOST .. ":" .. fport,
        "--cluster-from", fid, "--cluster-to", tid,
        "--cluster-slots", tostring(nslots), "--cluster-yes" }
    for _, a in ipairs(h.tls_args(self.tls)) do argv[#argv + 1] = a end
    local r = h.run(argv, { timeout = timeout or 120 })
    if r.code ~= 0 or r.timed_out then
        error(string.format("redis-cli --cluster reshard failed (%s%s):\n%s%s",
            tostring(r.code), r.timed_out and ", timed out" or "",
            r.stdout, r.stderr), 2)
    end
    self:wait_ok(30)
    local moved = {}
    for _, s in ipairs(self:slots_of(tport)) do
        if before[s] then moved[#moved + 1] = s end
    end
    return moved
end

---------------------------------------------------------------------------
-- stopping
---------------------------------------------------------------------------

function Cluster:stop(grace)
    for _, c in pairs(self.conns) do c:close() end
    self.conns = {}
    -- SIGTERM to all first, so they shut down side by side
    for _, n in ipairs(self.nodes) do
        if n.proc then n.proc:kill(h.SIGTERM) end
    end
    for _, n in ipairs(self.nodes) do
        if n.proc then n.proc:stop(grace or 5) end
    end
end

return M
