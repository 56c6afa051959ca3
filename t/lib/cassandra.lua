-- t/lib/cassandra.lua -- a real Apache Cassandra node for the integration
-- specs, run straight from the Maven Central jars (t/maven-fetch), plus
-- a minimal raw CQL client (native protocol v3/v4 frames) and a runner for
-- the DataStax Python driver.
--
-- Processes, ports, temp dirs, deadlines and cleanup come from harness.lua:
--
--   local h = require("harness")
--   local cassandra = require("cassandra")
--   describe("...", function()
--     local node
--     setup(function() node = cassandra.start{ auth = false } end)
--     teardown(h.cleanup)              -- stops the node, removes its dir
--     it("...", function()
--       local c = cassandra.connect(node.port)   -- raw CQL, v4
--       local r = c:query("SELECT release_version FROM system.local")
--       assert.equal("5.0.5", r.rows[1][1])
--     end)
--   end)
--
-- cassandra.start(opts) -> Node.  opts (all optional):
--   auth = true          PasswordAuthenticator + CassandraAuthorizer (the
--                        default superuser cassandra/cassandra); readiness
--                        then waits until that login works
--   authorizer = "..."   override (default AllowAllAuthorizer without auth)
--   cluster_name, heap = "1g", heap_min = "256m", jmx = true (nodetool on a
--   free loopback port; default false), yaml = "extra: lines\n" (appended to
--   the generated cassandra.yaml), jvm_args = { ... }, ready_timeout = s
--   (default 120), port / storage_port (default: free ports)
--   tls = { cert = path, key = path (PKCS#8 PEM), ca = path,
--           require_client_auth = false, optional = false,
--           client = { cert = path, key = path } }: client
--           encryption on the native port (client_encryption_options,
--           PEM files through PEMBasedSslContextFactory); `ca` is the
--           truststore for client certificates and what the readiness
--           probe trusts, `client` the certificate the probe presents.
--           Not optional: the probe is the Python driver
--           with an SSL context (the raw client below speaks no TLS);
--           optional = true: TLS and plain text on the one port.
-- Node fields: host ("127.0.0.1"), port (native transport), storage_port,
--   jmx_port (or nil), dir, yaml_path, log_path (system.log), out_path
--   (JVM stdout/stderr), user / password (with auth), version
--   (release_version as reported), startup_seconds (last start, spawn to
--   ready).
-- Node methods: stop(grace) (SIGTERM, then SIGKILL after grace s), kill()
--   (SIGKILL, a crash), start(timeout) (again, same dir and ports: data and
--   schema survive), restart(), pause() / resume() (SIGSTOP / SIGCONT: a hung
--   node), alive(), log(), log_tail(n), wait_log(needle, timeout),
--   nodetool(args...) (needs jmx = true), python(code, opts) and
--   python_spawn(code, opts) (the DataStax driver against this node; see
--   M.python), probe() (one raw CQL login + system.local read), launch()
--   (spawn the JVM and return at once; wait_ready(timeout) then waits).
--
-- cassandra.start_ring(opts) -> Ring: one node per loopback address (all
-- of 127.0.0.0/8 binds on Linux), the same native, storage and ssl
-- storage ports on every address (free on all of them), the first node the
-- seed, one cluster_name, SimpleSnitch (datacenter1 / rack1).  Each node
-- gets num_tokens fixed tokens (the ring's tokens evenly spread, the nodes'
-- interleaved: no token allocator) and auto_bootstrap: false (an empty test
-- cluster, nothing to stream), so the nodes start in parallel and join at
-- once: about 6 s for two nodes on 2 idle cores (8-14 s when other work
-- shares them).  opts: the options of
-- cassandra.start (auth, heap = "1g" per node, yaml, jvm_args, ...) and
--   hosts = { "127.0.0.2", "127.0.0.3" }   (2 or more)
--   num_tokens = 8, port / storage_port (default: free on every host),
--   cluster_name = "shotover-ring", sequential = true (start the nodes one
--   after the other), ready_timeout = s (default 120, for the ring to form),
--   shutdown_announce_ms = 300 (a stopping node tells the others it goes
--   down and waits that long: they see it DOWN at once, not ~10 s later)
-- start_ring returns when every node answers CQL and each lists every other
-- in system.peers_v2 (native address and port, num_tokens tokens) with its
-- own schema version, and a read at ALL of system_traces (replicated on 2
-- nodes) through each works (each sees all the others up).
-- Ring fields: nodes (Node objects: host, port, dir, ... as above, each
--   stop/kill/start/restart/alive/probe/python/python_spawn on its own
--   address), hosts, port (native, the same on every node), storage_port,
--   num_tokens, user / password (with auth), startup_seconds (spawn to
--   formed), ready_seconds (nodes answering CQL to ring formed).
-- Ring methods: node(i), seeds() ({ "host:port" } of the seed's native
--   transport), contact_points() ({ "host:port", ... } of every node),
--   connect(i, opts) (raw CQL to node i), view(i) (what node i sees:
--   { local = { host_id, schema_version, data_center, rack, tokens,
--   rpc_address, native_port }, peers = { [address] = { peer,
--   native_address, native_port, data_center, rack, tokens, schema_version,
--   host_id, rpc_address } } }), all_up_from(i) (true, or false and why:
--   the ALL read above through node i), not_ready() (nil, or why the ring
--   is not formed), wait_ready(timeout) (after a node's restart, or for
--   schema agreement after DDL), python(code, opts) / python_spawn(code,
--   opts) (the driver with every node as a contact point: CONTACTS, and
--   connect() talks to all of them; a Node's python talks to its own host
--   only), stop(grace).
-- Helpers for what a ring reports: inet_of(bytes) ("a.b.c.d"),
--   text_list_of(bytes) (a set<text> / list<text> value), ring_tokens(
--   nnodes, num_tokens, i) (node i's initial_token list).
--
--   local ring = cassandra.start_ring{ hosts = { "127.0.0.2", "127.0.0.3" } }
--   local c = ring:connect(1)              -- raw CQL to 127.0.0.2:ring.port
--   c:query("INSERT ...", { consistency = "ALL" })
--   ring:node(2):stop(); ...; ring:node(2):start(); ring:wait_ready()
--   ring:python("c, s = connect(); print(len(c.metadata.all_hosts()))")
--
-- Environment: SHOTOVER_CACHE (jar cache, see t/maven-fetch),
-- SHOTOVER_KEEP_TMP=1 (keep the node dir: yaml, logs, data), JAVA (the java
-- binary; default $JAVA_HOME/bin/java or java in PATH), SHOTOVER_CASSANDRA_CDS=0
-- (do not use a class-data-sharing archive).

local h = require("harness")
local jvm = require("jvm")
local bit = require("bit")

local M = {}

local src = jvm.src
M.src = src

---------------------------------------------------------------------------
-- versions, jars, java
---------------------------------------------------------------------------

-- versions, jars and java: t/lib/jvm.lua
M.versions = jvm.versions
M.java = jvm.java

function M.version()
    return jvm.version("cassandra")
end

function M.lib_dir(version)
    return jvm.lib_dir("cassandra", version)
end

-- Java 17 flags from Cassandra 5.0's conf/jvm17-server.options (JPMS) and
-- conf/jvm-server.options, minus the ones for big production heaps.
local JPMS = {
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports", "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports", "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports", "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports", "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
    "-ea", "-da:net.openhft...",
    "-XX:+UseThreadPriorities",
    "-Xss256k",
    "-XX:+PerfDisableSharedMem",
    "-Djava.net.preferIPv4Stack=true",
}

-- Test-only switches that make a fresh single node start (and take DDL) fast.
local FAST = {
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.gossip_settle_min_wait_ms=0",
    "-Dcassandra.ring_delay_ms=1000",
    "-Dcassandra.superuser_setup_delay_ms=0",
    "-Dcassandra.unsafesystem=true",                    -- no flush of system tables
    "-Dcassandra.test.flush_local_schema_changes=false",
    "-Dcassandra.skip_schema_check=true",
    "-Dcassandra.test.ignore_sigar=true",
    "-Dcassandra.skip_sync=true",                       -- no fsync (page cache only)
    "-Dcassandra.ignore_kernel_bug_1057843_check=true",
    -- measured once (SkipListMemtable: 180) instead of a ~4 s estimate at
    -- every start
    "-Dcassandra.memtable.row_overhead_size=180",
    -- no 2 s gossip shutdown announcement, no 2 s messaging quiesce wait
    "-Dcassandra.shutdown_announce_in_ms=0",
    "-Dcassandra.test.messagingService.nonGracefulShutdown=true",
    -- small test JVM: one C1 tier starts faster on 2 cores; serial GC
    -- starts fastest and is plenty for a <=1 GB heap
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
    "-XX:-UsePerfData",
}

---------------------------------------------------------------------------
-- config files
---------------------------------------------------------------------------

-- client_encryption_options for opts.tls (see the header); the key and
-- the certificate in one PEM file, as the PEM factory's keystore wants
local function tls_yaml(n)
    local t = n.tls
    if not t then return "" end
    local keystore = n.dir .. "/keystore.pem"
    h.write_file(keystore, h.read_file(t.key) .. h.read_file(t.cert))
    return string.format([[
client_encryption_options:
  enabled: true
  optional: %s
  ssl_context_factory:
    class_name: org.apache.cassandra.security.PEMBasedSslContextFactory
  keystore: %s
  truststore: %s
  require_client_auth: %s
]], t.optional and "true" or "false", keystore, t.ca,
        t.require_client_auth and "true" or "false")
end

local function yaml_text(n)
    local authn = n.auth and "PasswordAuthenticator" or "AllowAllAuthenticator"
    local authz = n.authorizer or (n.auth and "CassandraAuthorizer" or "AllowAllAuthorizer")
    local d = n.dir
    return string.format([[
# generated by t/lib/cassandra.lua
cluster_name: '%s'
num_tokens: %d
initial_token: %s
allocate_tokens_for_local_replication_factor: 1
auto_bootstrap: %s
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
authenticator: %s
authorizer: %s
role_manager: CassandraRoleManager
network_authorizer: AllowAllNetworkAuthorizer
roles_validity: 0ms
permissions_validity: 0ms
credentials_validity: 0ms
data_file_directories:
    - %s/data
commitlog_directory: %s/commitlog
saved_caches_directory: %s/saved_caches
hints_directory: %s/hints
cdc_raw_directory: %s/cdc_raw
cdc_enabled: false
# batch: a write is acknowledged once its commit log section is marked
# synced, so acknowledged writes survive SIGKILL (with periodic sync the
# replay stops at the last sync marker: up to 10 s of acknowledged writes
# lost); -Dcassandra.skip_sync=true keeps that free of fsync
commitlog_sync: batch
commitlog_segment_size: 8MiB
seed_provider:
    - class_name: org.apache.cassandra.locator.SimpleSeedProvider
      parameters:
          - seeds: "%s"
listen_address: %s
rpc_address: %s
storage_port: %d
ssl_storage_port: %d
start_native_transport: true
native_transport_port: %d
native_transport_allow_older_protocols: true
endpoint_snitch: SimpleSnitch
dynamic_snitch: false
snapshot_before_compaction: false
auto_snapshot: false
incremental_backups: false
concurrent_compactors: 1
compaction_throughput: 0MiB/s
key_cache_size: 0MiB
counter_cache_size: 0MiB
row_cache_size: 0MiB
memtable_heap_space: 128MiB
memtable_offheap_space: 128MiB
auto_hints_cleanup_enabled: true
hinted_handoff_enabled: false
user_defined_functions_enabled: false
materialized_views_enabled: true
sasi_indexes_enabled: true
storage_compatibility_mode: NONE
read_request_timeout: 10000ms
write_request_timeout: 10000ms
request_timeout: 20000ms
]], n.cluster_name, n.num_tokens, n.initial_token, n.auto_bootstrap and "true" or "false",
        authn, authz, d, d, d, d, d, n.seeds or (n.host .. ":" .. n.storage_port), n.host, n.host,
        n.storage_port, n.ssl_storage_port, n.port) .. tls_yaml(n) .. (n.extra_yaml or "")
end

local function logback_text(n)
    return string.format([[
<configuration scan="false">
  <appender name="SYSTEMLOG" class="ch.qos.logback.core.FileAppender">
    <file>%s</file>
    <append>true</append>
    <encoder>
      <pattern>%%-5level [%%thread] %%date{ISO8601} %%logger{0} - %%msg%%n</pattern>
    </encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="SYSTEMLOG" />
  </root>
  <logger name="org.apache.cassandra" level="%s" />
  <logger name="com.thinkaurelius.thrift" level="ERROR" />
</configuration>
]], n.log_path, n.log_level or "INFO")
end

---------------------------------------------------------------------------
-- the node
---------------------------------------------------------------------------

local Node = {}
Node.__index = Node
M.Node = Node

-- a Node table (config written, not started); `over` sets what a ring
-- decides per node (host, ports, tokens, seeds)
local function new_node(opts, over)
    local n = setmetatable({
        host = "127.0.0.1",
        num_tokens = 1,
        initial_token = "0",
        auto_bootstrap = true,
        auth = opts.auth and true or false,
        authorizer = opts.authorizer,
        cluster_name = opts.cluster_name or "shotover-test",
        heap = opts.heap or "1g",
        heap_min = opts.heap_min or "256m",
        port = opts.port or h.free_port(),
        storage_port = opts.storage_port or h.free_port(),
        ssl_storage_port = h.free_port(),
        jmx_port = opts.jmx and h.free_port() or nil,
        extra_yaml = opts.yaml,
        tls = opts.tls,
        jvm_args = opts.jvm_args or {},
        log_level = opts.log_level,
        cversion = opts.version or M.version(),
        ready_timeout = opts.ready_timeout or 120,
    }, Node)
    for k, v in pairs(over or {}) do n[k] = v end
    if n.auth then n.user, n.password = "cassandra", "cassandra" end
    n.lib = M.lib_dir(n.cversion)
    n.dir = h.tmpdir("cassandra")
    n.yaml_path = n.dir .. "/cassandra.yaml"
    n.log_path = n.dir .. "/system.log"
    n.out_path = n.dir .. "/output.log"
    n.logback_path = n.dir .. "/logback.xml"
    for _, sub in ipairs({ "data", "commitlog", "saved_caches", "hints", "cdc_raw", "triggers" }) do
        h.run({ "mkdir", "-p", n.dir .. "/" .. sub })
    end
    h.write_file(n.yaml_path, yaml_text(n))
    h.write_file(n.logback_path, logback_text(n))
    -- stopped before harness.cleanup removes the dir
    h.defer(function() n:stop(5) end)
    return n
end

function M.start(opts)
    opts = opts or {}
    return new_node(opts):start()
end

-- the class-data-sharing archive for this version's class path: written by
-- the first node that exits cleanly, used by every later JVM (much faster
-- class loading: startup is mostly that)
local function cds_path(n)
    local v = os.getenv("SHOTOVER_CASSANDRA_CDS")
    if v == "0" then return nil end
    return n.lib .. "/../cassandra.jsa"
end

function Node:argv()
    local cp = jvm.class_path(self.lib)
    local argv = { M.java(), "-Xms" .. self.heap_min, "-Xmx" .. self.heap }
    for _, a in ipairs(JPMS) do argv[#argv + 1] = a end
    for _, a in ipairs(FAST) do argv[#argv + 1] = a end
    local cds = cds_path(self)
    if cds then
        if h.read_file(cds) then
            argv[#argv + 1] = "-XX:SharedArchiveFile=" .. cds
            argv[#argv + 1] = "-Xshare:auto"
        elseif not self.cds_writer and not M._cds_writing then
            -- written at JVM exit; to a temp name, renamed by stop()
            M._cds_writing = true
            self.cds_writer = cds .. ".tmp" .. tostring(self.port)
            argv[#argv + 1] = "-XX:ArchiveClassesAtExit=" .. self.cds_writer
        end
    end
    local props = {
        "-Dcassandra.config=file://" .. self.yaml_path,
        "-Dcassandra-foreground=yes",
        "-Dcassandra.logdir=" .. self.dir,
        "-Dcassandra.storagedir=" .. self.dir,
        "-Dcassandra.triggers_dir=" .. self.dir .. "/triggers",
        "-Dlogback.configurationFile=file://" .. self.logback_path,
        "-Dcassandra.initial_token=" .. self.initial_token,
    }
    if self.jmx_port then
        -- local-only JMX (loopback, no auth) for nodetool
        props[#props + 1] = "-Dcassandra.jmx.local.port=" .. self.jmx_port
        props[#props + 1] = "-Dcom.sun.management.jmxremote.authenticate=false"
    end
    for _, a in ipairs(props) do argv[#argv + 1] = a end
    for _, a in ipairs(self.jvm_args) do argv[#argv + 1] = a end
    argv[#argv + 1] = "-cp"
    argv[#argv + 1] = cp
    argv[#argv + 1] = "org.apache.cassandra.service.CassandraDaemon"
    return argv
end

-- spawn the JVM and return at once (start() without the wait)
function Node:launch()
    assert(not (self.proc and self.proc:alive()), "cassandra already running")
    self.launched_at = h.now()
    self.proc = h.spawn(self:argv(), { stdout = self.out_path, stderr = "stdout", append = true })
    self.proc.is_cassandra = self
    return self
end

-- start (or start again after stop/kill: same dir, ports and data); returns
-- once a CQL client can log in and read system.local
function Node:start(timeout)
    self:launch()
    self:wait_ready(timeout or self.ready_timeout)
    self.startup_seconds = h.now() - self.launched_at
    return self
end

function Node:restart(grace, timeout)
    self:stop(grace)
    return self:start(timeout)
end

-- probe once: the release_version, or nil and why not
function Node:probe(timeout)
    if self.tls and not self.tls.optional then
        -- the native port speaks only TLS: the driver, once it listens
        if not self:log():find("Starting listening for CQL clients", 1, true) then
            return nil, "native transport not started yet"
        end
        local t = self.tls
        local out, code, err = M.python([[
c, s = connect(ssl_context=tls_context(ARGS[0], ARGS[1] or None, ARGS[2] or None))
print(s.execute("SELECT release_version FROM system.local").one()[0])
c.shutdown()
]], { port = self.port, host = self.host, user = self.user,
            password = self.password, may_fail = true, timeout = (timeout or 3) + 10,
            args = { t.ca, t.client and t.client.cert or "",
                     t.client and t.client.key or "" } })
        if code == 0 then return (out:match("([%d.]+)%s*$")) end
        return nil, err
    end
    local ok, res = pcall(function()
        local c = M.connect(self.port, { host = self.host, user = self.user,
            password = self.password, timeout = timeout or 3 })
        local r = c:query("SELECT release_version FROM system.local", { timeout = timeout or 3 })
        c:close()
        return r.rows and r.rows[1] and r.rows[1][1]
    end)
    if ok and res then return res end
    return nil, res
end

function Node:wait_ready(timeout)
    local proc = self.proc
    local why
    h.wait_until(function()
        if not proc:alive() then
            error(string.format("cassandra exited (%s) before it was ready; output:\n%s\nsystem.log tail:\n%s",
                h.status_string(proc:poll()), h.read_file(self.out_path) or "", self:log_tail(40)), 0)
        end
        local v, err = self:probe(5)
        if v then self.version = v; return true end
        why = err
        return false, err
    end, timeout or 120, "cassandra on " .. self.host .. ":" .. self.port .. " to answer CQL", 0.1)
    return why
end

local function finish_cds(self)
    if self.cds_writer then
        -- the JVM writes the archive as it exits (after SIGTERM too)
        local f = io.open(self.cds_writer, "rb")
        local size = f and f:seek("end") or 0
        if f then f:close() end
        if size > 0 and self.proc.status and self.proc.status.signal == nil then
            os.rename(self.cds_writer, cds_path(self))
        end
        os.remove(self.cds_writer)
        self.cds_writer = nil
        M._cds_writing = false
    end
end

-- SIGTERM (a clean shutdown: Cassandra drains), SIGKILL after `grace`
-- seconds (default 30).  Returns the exit status and whether SIGKILL was
-- needed.
function Node:stop(grace)
    if not self.proc then return end
    if self.paused then self:resume() end
    grace = grace or 30
    -- the JVM writing the class-data-sharing archive needs a while to exit
    if self.cds_writer and grace < 60 then grace = 60 end
    local s, killed = self.proc:stop(grace)
    finish_cds(self)
    return s, killed
end

-- SIGKILL: a crash; the commit log is replayed on the next start
function Node:kill()
    if not self.proc then return end
    if self.paused then self.proc:kill(h.SIGCONT); self.paused = false end
    self.proc:kill(h.SIGKILL)
    assert(self.proc:wait(10), "cassandra did not die on SIGKILL")
    if self.cds_writer then os.remove(self.cds_writer); self.cds_writer = nil; M._cds_writing = false end
end

function Node:pause() self.proc:kill(h.SIGSTOP); self.paused = true end
function Node:resume() self.proc:kill(h.SIGCONT); self.paused = false end

function Node:alive() return self.proc ~= nil and self.proc:alive() end

function Node:log() return h.read_file(self.log_path) or "" end

function Node:log_tail(n)
    local lines = {}
    for l in self:log():gmatch("[^\n]*\n?") do
        if l ~= "" then lines[#lines + 1] = l end
    end
    return table.concat(lines, "", math.max(1, #lines - (n or 40) + 1))
end

function Node:wait_log(needle, timeout)
    return h.wait_until(function()
        return self:log():find(needle, 1, true) ~= nil
    end, timeout or 10, "system.log to mention " .. needle)
end

-- nodetool ARGS... (the node must have been started with jmx = true);
-- returns stdout, exit code, stderr
function Node:nodetool(...)
    assert(self.jmx_port, "nodetool needs cassandra.start{ jmx = true }")
    local argv = { M.java(), "-Xmx128m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC" }
    for _, a in ipairs(JPMS) do argv[#argv + 1] = a end
    argv[#argv + 1] = "-Dlogback.configurationFile=file://" .. self.logback_path
    argv[#argv + 1] = "-cp"
    argv[#argv + 1] = jvm.class_path(self.lib)
    argv[#argv + 1] = "org.apache.cassandra.tools.NodeTool"
    argv[#argv + 1] = "-h"; argv[#argv + 1] = "127.0.0.1"
    argv[#argv + 1] = "-p"; argv[#argv + 1] = tostring(self.jmx_port)
    for _, a in ipairs({ ... }) do argv[#argv + 1] = tostring(a) end
    local r = h.run(argv, { timeout = 120 })
    return r.stdout, r.code, r.stderr
end

-- M.python with this node's port and (with auth) credentials
function Node:python(code, opts)
    opts = opts or {}
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    if not o.contacts then
        o.port = o.port or self.port
        o.host = o.host or self.host
    end
    o.user = o.user or self.user
    o.password = o.password or self.password
    return M.python(code, o)
end

---------------------------------------------------------------------------
-- a ring of nodes, one per loopback address
---------------------------------------------------------------------------

local Ring = {}
Ring.__index = Ring
M.Ring = Ring

-- the initial tokens of node idx (1-based) of nnodes, ntok each: all
-- nnodes * ntok tokens evenly spread over the Murmur3 range, the nodes'
-- interleaved (so every node owns an equal share without the token
-- allocator, which needs the other nodes' tokens, hence a running ring)
local function ring_tokens(nnodes, ntok, idx)
    local total = nnodes * ntok
    local step = 2 ^ 64 / total
    local t = {}
    for k = 0, ntok - 1 do
        t[#t + 1] = string.format("%.0f", -2 ^ 63 + (k * nnodes + idx - 1) * step)
    end
    return table.concat(t, ",")
end
M.ring_tokens = ring_tokens

function M.start_ring(opts)
    opts = opts or {}
    local hosts = opts.hosts or { "127.0.0.2", "127.0.0.3" }
    assert(#hosts >= 2, "start_ring: two hosts or more")
    local ntok = opts.num_tokens or 8
    -- the same ports on every address (each node binds only its own)
    local port = opts.port or h.free_port(hosts)
    local storage_port = opts.storage_port or h.free_port(hosts)
    local ssl_storage_port = h.free_port(hosts)
    local seeds = hosts[1] .. ":" .. storage_port
    local r = setmetatable({ hosts = hosts, port = port, storage_port = storage_port,
        num_tokens = ntok, nodes = {}, auth = opts.auth and true or false }, Ring)
    local base_args = {
        -- a stopped node tells the others at once (not after the failure
        -- detector convicts it, ~10 s later)
        "-Dcassandra.shutdown_announce_in_ms=" .. tostring(opts.shutdown_announce_ms or 300),
    }
    for _, a in ipairs(opts.jvm_args or {}) do base_args[#base_args + 1] = a end
    for i, host in ipairs(hosts) do
        r.nodes[i] = new_node(opts, {
            host = host, port = port, storage_port = storage_port,
            ssl_storage_port = ssl_storage_port,
            cluster_name = opts.cluster_name or "shotover-ring",
            num_tokens = ntok, initial_token = ring_tokens(#hosts, ntok, i),
            -- an empty test cluster: nothing to stream, join at once
            auto_bootstrap = false,
            seeds = seeds, jvm_args = base_args,
        })
    end
    r.user, r.password = r.nodes[1].user, r.nodes[1].password
    local t0 = h.now()
    if opts.sequential then
        for _, n in ipairs(r.nodes) do n:start() end
    else
        -- in parallel: with fixed tokens and no bootstrap no node waits for
        -- another to start
        for _, n in ipairs(r.nodes) do n:launch() end
        for i, n in ipairs(r.nodes) do
            local ok, err = pcall(n.wait_ready, n, n.ready_timeout)
            if not ok and i > 1 and tostring(err):find(
                    "Unable to gossip with any peers", 1, true) then
                -- it asked the seed before the seed's gossip was up (a
                -- busy machine: ring_delay is 1 s here); the seed (node
                -- 1) is ready now: start it again
                n:launch()
                ok, err = pcall(n.wait_ready, n, n.ready_timeout)
            end
            if not ok then
                error(err, 0)
            end
            n.startup_seconds = h.now() - n.launched_at
        end
    end
    r:wait_ready(opts.ready_timeout or 120)
    r.startup_seconds = h.now() - t0
    return r
end

function Ring:node(i) return self.nodes[i] end

-- "host:port" of the seed (the first node)
function Ring:seeds() return { self.nodes[1].host .. ":" .. self.nodes[1].port } end

-- "host:port" of every node's native transport
function Ring:contact_points()
    local t = {}
    for i, n in ipairs(self.nodes) do t[i] = n.host .. ":" .. n.port end
    return t
end

function Ring:stop(grace)
    for _, n in ipairs(self.nodes) do n:stop(grace) end
end

-- a raw CQL connection to node i
function Ring:connect(i, opts)
    local o = { user = self.user, password = self.password }
    for k, v in pairs(opts or {}) do o[k] = v end
    o.host = self.nodes[i].host
    return M.connect(self.nodes[i].port, o)
end

-- inet bytes -> "a.b.c.d"
function M.inet_of(b)
    if b == nil then return nil end
    local t = {}
    for i = 1, #b do t[i] = tostring(b:byte(i)) end
    return table.concat(t, ".")
end

-- set<text> / list<text> bytes (protocol v3+) -> Lua list
function M.text_list_of(b)
    if b == nil then return {} end
    local n, p = M.rd32(b, 1)
    local t = {}
    for i = 1, n do t[i], p = M.rd_bytes(b, p) end
    return t
end

-- what node i sees of the ring: { local = { host_id, schema_version,
-- data_center, rack, tokens, rpc_address, native_port }, peers = {
-- [address] = { peer, native_address, native_port, data_center, rack,
-- tokens, schema_version, host_id (system.peers_v2), rpc_address
-- (system.peers) } } }
function Ring:view(i, timeout)
    local c = self:connect(i, { timeout = timeout or 5 })
    local l = c:query("SELECT host_id, schema_version, data_center, rack, tokens, "
        .. "rpc_address, rpc_port FROM system.local").rows[1]
    local v = { ["local"] = { host_id = l[1], schema_version = l[2], data_center = l[3],
        rack = l[4], tokens = M.text_list_of(l[5]), rpc_address = M.inet_of(l[6]),
        native_port = M.int_of(l[7]) }, peers = {} }
    local rows = c:query("SELECT peer, native_address, native_port, data_center, rack, "
        .. "tokens, schema_version, host_id FROM system.peers_v2").rows
    -- the legacy table (drivers of protocol v4 and older read this one)
    local legacy = c:query("SELECT peer, rpc_address FROM system.peers").rows
    c:close()
    for _, row in ipairs(rows) do
        local p = { peer = M.inet_of(row[1]), native_address = M.inet_of(row[2]),
            native_port = M.int_of(row[3]), data_center = row[4], rack = row[5],
            tokens = M.text_list_of(row[6]), schema_version = row[7], host_id = row[8] }
        v.peers[p.peer] = p
    end
    for _, row in ipairs(legacy) do
        local p = v.peers[M.inet_of(row[1])]
        if p then p.rpc_address = M.inet_of(row[2]) end
    end
    return v
end

-- whether node i sees every other node up: a read at ALL through i of a
-- whole table replicated on 2 nodes (system_traces), which reads every token
-- range, so needs every node (each is a replica of some range): refused as
-- unavailable unless i's failure detector marks all of them alive, and
-- then needs their answers.  (Not system_distributed: its replication
-- factor 3 is more replicas than a 2-node ring has, so ALL can never be met
-- there.)
function Ring:all_up_from(i, timeout)
    local ok, res = pcall(function()
        local c = self:connect(i, { timeout = timeout or 5 })
        local r = c:query("SELECT session_id FROM system_traces.sessions",
            { consistency = "ALL", may_fail = true, timeout = timeout or 5 })
        c:close()
        return r
    end)
    if not ok then return false, tostring(res) end
    if res.opname ~= "RESULT" then
        return false, string.format("0x%04x %s", res.code % 0x100000000, tostring(res.message))
    end
    return true
end

-- nil when every node answers CQL and lists every other node in
-- system.peers_v2 (native address and port, tokens) with the same schema
-- version as its own, and a read at ALL through it works (every other node
-- up as it sees them); else why not
function Ring:not_ready()
    for i, n in ipairs(self.nodes) do
        local ok, v = pcall(self.view, self, i, 3)
        if not ok then return n.host .. ": " .. tostring(v) end
        for j, m in ipairs(self.nodes) do
            if i ~= j then
                local p = v.peers[m.host]
                if not p then return n.host .. " has no peer " .. m.host end
                if p.native_address ~= m.host or p.native_port ~= m.port then
                    return string.format("%s sees %s native at %s:%s", n.host, m.host,
                        tostring(p.native_address), tostring(p.native_port))
                end
                if #p.tokens ~= self.num_tokens then
                    return string.format("%s sees %d tokens of %s", n.host, #p.tokens, m.host)
                end
                if p.schema_version ~= v["local"].schema_version then
                    return n.host .. ": no schema agreement with " .. m.host
                end
            end
        end
        local up, why = self:all_up_from(i, 3)
        if not up then return n.host .. ": read at ALL: " .. tostring(why) end
    end
    return nil
end

function Ring:wait_ready(timeout)
    local t0 = h.now()
    h.wait_until(function()
        for _, n in ipairs(self.nodes) do
            if not n:alive() then
                error(string.format("cassandra %s exited (%s); system.log tail:\n%s", n.host,
                    h.status_string(n.proc:poll()), n:log_tail(40)), 0)
            end
        end
        local why = self:not_ready()
        return why == nil, why
    end, timeout or 120, "the ring to form", 0.2)
    self.ready_seconds = h.now() - t0
    return self
end

-- M.python against every node (contacts = the native host:port of each)
function Ring:python(code, opts)
    local o = { contacts = self:contact_points(), user = self.user, password = self.password }
    for k, v in pairs(opts or {}) do o[k] = v end
    return M.python(code, o)
end

function Ring:python_spawn(code, opts)
    local o = { contacts = self:contact_points(), user = self.user, password = self.password }
    for k, v in pairs(opts or {}) do o[k] = v end
    return M.python_spawn(code, o)
end

---------------------------------------------------------------------------
-- the DataStax Python driver (Debian python3-cassandra; /usr/bin/python3)
---------------------------------------------------------------------------

M.PYTHON = "/usr/bin/python3"

-- A prelude every script gets: PORT, HOST (the first contact point),
-- CONTACTS (a list of (host, port): one for a node, every node of a ring),
-- USER, PASSWORD, ARGS (further args), tls_context(ca, cert, key) (an
-- SSLContext for connect(ssl_context=...)) and connect(protocol_version=4,
-- compression=False, user=..., hosts=CONTACTS, lbp=None, ...), which
-- returns (cluster, session) with the driver talking only to those hosts
-- (a WhiteListRoundRobinPolicy of them unless lbp, a load balancing
-- policy, is given): one connection to HOST:PORT for a single node.
local PRELUDE = [[
import sys, os
CONTACTS = [(hp.rpartition(':')[0] or '127.0.0.1', int(hp.rpartition(':')[2]))
            for hp in sys.argv[1].split(',')]
HOST, PORT = CONTACTS[0]
USER = sys.argv[2] or None; PASSWORD = sys.argv[3] or None
ARGS = sys.argv[4:]
from cassandra.cluster import Cluster, ExecutionProfile, EXEC_PROFILE_DEFAULT
from cassandra.policies import WhiteListRoundRobinPolicy, ConstantReconnectionPolicy
from cassandra.auth import PlainTextAuthProvider
import cassandra
def tls_context(ca, cert=None, key=None):
    """An SSLContext that trusts the CA file ca (names checked), with a
    client certificate when cert/key are given: connect(ssl_context=...)."""
    import ssl
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx
def connect(protocol_version=4, compression=False, user=USER, password=PASSWORD, port=None,
            keyspace=None, hosts=None, lbp=None, **kw):
    auth = PlainTextAuthProvider(username=user, password=password) if user else None
    hosts = [(hp, port or PORT) if isinstance(hp, str) else hp for hp in (hosts or CONTACTS)]
    if port: hosts = [(a, port) for a, _ in hosts]
    prof = ExecutionProfile(load_balancing_policy=lbp or WhiteListRoundRobinPolicy([a for a, _ in hosts]),
                            request_timeout=kw.pop('request_timeout', 30))
    c = Cluster(hosts, port=port or PORT, protocol_version=protocol_version,
                compression=compression, auth_provider=auth, connect_timeout=10,
                control_connection_timeout=10,
                execution_profiles={EXEC_PROFILE_DEFAULT: prof},
                reconnection_policy=ConstantReconnectionPolicy(0.2, None), **kw)
    return c, c.connect(keyspace)
]]

-- python(code, { port, host = "127.0.0.1" | contacts = { "host:port", ... },
-- user, password, args = {...}, timeout = 60 }): runs PRELUDE .. code under
-- /usr/bin/python3; returns stdout.  Raises with stderr when the script
-- fails (opts.may_fail: return stdout, code, stderr instead).
local function python_argv(code, opts)
    local contacts = opts.contacts and table.concat(opts.contacts, ",")
        or ((opts.host or "127.0.0.1") .. ":" .. tostring(opts.port or 0))
    local argv = { M.PYTHON, "-u", "-c", PRELUDE .. code, contacts,
        opts.user or "", opts.password or "" }
    for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = tostring(a) end
    return argv
end

function M.python(code, opts)
    opts = opts or {}
    local r = h.run(python_argv(code, opts), { timeout = opts.timeout or 60 })
    if opts.may_fail then return r.stdout, r.code, r.stderr end
    if r.code ~= 0 or r.timed_out then
        error(string.format("python failed (%s%s):\n%s\n--- stdout:\n%s",
            tostring(r.code), r.timed_out and ", timed out" or "", r.stderr, r.stdout), 2)
    end
    return r.stdout
end

-- python_spawn(code, opts): the same script in the background (a client
-- that keeps running while a test stops and restarts the node).  Returns
-- the harness Proc and the path of its stdout+stderr file (unbuffered).
function M.python_spawn(code, opts)
    opts = opts or {}
    local out = h.tmpfile("python") .. ".out"
    local p = h.spawn(python_argv(code, opts), { stdout = out, stderr = "stdout" })
    return p, out
end

function Node:python_spawn(code, opts)
    opts = opts or {}
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    if not o.contacts then
        o.port = o.port or self.port
        o.host = o.host or self.host
    end
    o.user = o.user or self.user
    o.password = o.password or self.password
    return M.python_spawn(code, o)
end

---------------------------------------------------------------------------
-- raw CQL (native protocol v3/v4 frames, uncompressed): enough for probes
-- and for tests that need exact bytes
---------------------------------------------------------------------------

M.op = {
    ERROR = 0x00, STARTUP = 0x01, READY = 0x02, AUTHENTICATE = 0x03,
    OPTIONS = 0x05, SUPPORTED = 0x06, QUERY = 0x07, RESULT = 0x08,
    PREPARE = 0x09, EXECUTE = 0x0A, REGISTER = 0x0B, EVENT = 0x0C,
    BATCH = 0x0D, AUTH_CHALLENGE = 0x0E, AUTH_RESPONSE = 0x0F, AUTH_SUCCESS = 0x10,
}
M.opname = {}
for k, v in pairs(M.op) do M.opname[v] = k end

M.consistency = { ANY = 0, ONE = 1, TWO = 2, THREE = 3, QUORUM = 4, ALL = 5,
    LOCAL_QUORUM = 6, EACH_QUORUM = 7, SERIAL = 8, LOCAL_SERIAL = 9, LOCAL_ONE = 10 }

local function u8(n) return string.char(bit.band(n, 0xff)) end
local function be16(n) return string.char(bit.band(bit.rshift(n, 8), 0xff), bit.band(n, 0xff)) end
local function be32(n)
    return string.char(bit.band(bit.rshift(n, 24), 0xff), bit.band(bit.rshift(n, 16), 0xff),
        bit.band(bit.rshift(n, 8), 0xff), bit.band(n, 0xff))
end
M.be16, M.be32 = be16, be32

local function rd16(s, p) return s:byte(p) * 256 + s:byte(p + 1), p + 2 end
local function rd32(s, p)
    local v = ((s:byte(p) * 256 + s:byte(p + 1)) * 256 + s:byte(p + 2)) * 256 + s:byte(p + 3)
    if v >= 0x80000000 then v = v - 0x100000000 end
    return v, p + 4
end
local function rds16(s, p)
    local v; v, p = rd16(s, p)
    if v >= 0x8000 then v = v - 0x10000 end
    return v, p
end

-- [string] [long string] [bytes] [string map] [string multimap] [bytes map]
function M.string(s) return be16(#s) .. s end
function M.long_string(s) return be32(#s) .. s end
function M.bytes(s) if s == nil then return be32(-1 % 0x100000000) end return be32(#s) .. s end
function M.string_map(t)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys)
    local out = { be16(#keys) }
    for _, k in ipairs(keys) do out[#out + 1] = M.string(k) .. M.string(t[k]) end
    return table.concat(out)
end

local function rd_string(s, p)
    local n; n, p = rd16(s, p)
    return s:sub(p, p + n - 1), p + n
end
local function rd_bytes(s, p)
    local n; n, p = rd32(s, p)
    if n < 0 then return nil, p end
    return s:sub(p, p + n - 1), p + n
end
local function rd_string_list(s, p)
    local n; n, p = rd16(s, p)
    local l = {}
    for i = 1, n do l[i], p = rd_string(s, p) end
    return l, p
end
local function rd_multimap(s, p)
    local n; n, p = rd16(s, p)
    local m = {}
    for _ = 1, n do
        local k; k, p = rd_string(s, p)
        m[k], p = rd_string_list(s, p)
    end
    return m, p
end
M.rd16, M.rd32, M.rd_string, M.rd_bytes = rd16, rd32, rd_string, rd_bytes

-- a frame: version byte (request), flags, stream, opcode, body
function M.frame(version, stream, opcode, body, flags)
    body = body or ""
    return u8(version) .. u8(flags or 0) .. be16(stream % 0x10000) .. u8(opcode)
        .. be32(#body) .. body
end

-- parse a frame header + body from s at 1: frame table and bytes used, or
-- nil if incomplete
function M.parse_frame(s)
    if #s < 9 then return nil end
    local len = rd32(s, 6)
    if #s < 9 + len then return nil end
    local f = {
        version = bit.band(s:byte(1), 0x7f), response = s:byte(1) >= 0x80,
        flags = s:byte(2), stream = rds16(s, 3), opcode = s:byte(5),
        length = len, body = s:sub(10, 9 + len),
    }
    f.opname = M.opname[f.opcode] or string.format("0x%02x", f.opcode)
    return f, 9 + len
end

-- a column type [option]: a readable name and the next position
local TYPES = { [0x01] = "ascii", [0x02] = "bigint", [0x03] = "blob", [0x04] = "boolean",
    [0x05] = "counter", [0x06] = "decimal", [0x07] = "double", [0x08] = "float",
    [0x09] = "int", [0x0B] = "timestamp", [0x0C] = "uuid", [0x0D] = "varchar",
    [0x0E] = "varint", [0x0F] = "timeuuid", [0x10] = "inet", [0x11] = "date",
    [0x12] = "time", [0x13] = "smallint", [0x14] = "tinyint", [0x15] = "duration" }
local function rd_type(s, p)
    local id; id, p = rd16(s, p)
    if id == 0 then local c; c, p = rd_string(s, p); return "custom(" .. c .. ")", p end
    if TYPES[id] then return TYPES[id], p end
    if id == 0x20 or id == 0x22 then
        local e; e, p = rd_type(s, p)
        return (id == 0x20 and "list<" or "set<") .. e .. ">", p
    end
    if id == 0x21 then
        local k, v; k, p = rd_type(s, p); v, p = rd_type(s, p)
        return "map<" .. k .. ", " .. v .. ">", p
    end
    if id == 0x30 then
        local ks, name, n; ks, p = rd_string(s, p); name, p = rd_string(s, p); n, p = rd16(s, p)
        for _ = 1, n do _, p = rd_string(s, p); _, p = rd_type(s, p) end
        return "udt(" .. ks .. "." .. name .. ")", p
    end
    if id == 0x31 then
        local n; n, p = rd16(s, p)
        local parts = {}
        for i = 1, n do parts[i], p = rd_type(s, p) end
        return "tuple<" .. table.concat(parts, ", ") .. ">", p
    end
    error(string.format("unknown CQL type id 0x%04x", id))
end

local function rd_metadata(s, p)
    local flags, ncols; flags, p = rd32(s, p); ncols, p = rd32(s, p)
    local md = { flags = flags, columns = {} }
    if bit.band(flags, 0x02) ~= 0 then md.paging_state, p = rd_bytes(s, p) end
    if bit.band(flags, 0x04) ~= 0 then return md, p end      -- no metadata
    local global = bit.band(flags, 0x01) ~= 0
    if global then md.keyspace, p = rd_string(s, p); md.table, p = rd_string(s, p) end
    for i = 1, ncols do
        local col = {}
        if not global then col.keyspace, p = rd_string(s, p); col.table, p = rd_string(s, p) end
        col.name, p = rd_string(s, p)
        col.type, p = rd_type(s, p)
        md.columns[i] = col
    end
    md.ncols = ncols
    return md, p
end

-- decode a response body by opcode into a table
function M.decode(f)
    local s, p = f.body, 1
    local r = { opcode = f.opcode, opname = f.opname, stream = f.stream, flags = f.flags }
    -- tracing id, warnings, custom payload precede the body proper
    if bit.band(f.flags, 0x02) ~= 0 then r.tracing_id = s:sub(p, p + 15); p = p + 16 end
    if bit.band(f.flags, 0x08) ~= 0 then r.warnings, p = rd_string_list(s, p) end
    if bit.band(f.flags, 0x04) ~= 0 then
        local n; n, p = rd16(s, p)
        for _ = 1, n do _, p = rd_string(s, p); _, p = rd_bytes(s, p) end
    end
    if f.opcode == M.op.ERROR then
        r.code, p = rd32(s, p)
        r.message, p = rd_string(s, p)
        r.rest = s:sub(p)
    elseif f.opcode == M.op.SUPPORTED then
        r.options = rd_multimap(s, p)
    elseif f.opcode == M.op.AUTHENTICATE then
        r.authenticator = rd_string(s, p)
    elseif f.opcode == M.op.AUTH_CHALLENGE or f.opcode == M.op.AUTH_SUCCESS then
        r.token = rd_bytes(s, p)
    elseif f.opcode == M.op.RESULT then
        local kind; kind, p = rd32(s, p)
        r.kind = kind
        if kind == 1 then r.result = "void"
        elseif kind == 2 then
            r.result = "rows"
            r.metadata, p = rd_metadata(s, p)
            local nrows; nrows, p = rd32(s, p)
            r.rows = {}
            local ncols = r.metadata.ncols or 0
            for i = 1, nrows do
                local row = {}
                for j = 1, ncols do row[j], p = rd_bytes(s, p) end
                r.rows[i] = row
            end
        elseif kind == 3 then r.result = "set_keyspace"; r.keyspace = rd_string(s, p)
        elseif kind == 4 then
            r.result = "prepared"
            r.id, p = rd_string(s, p)
            r.rest = s:sub(p)
        elseif kind == 5 then
            r.result = "schema_change"
            r.change, p = rd_string(s, p)
            r.target, p = rd_string(s, p)
            r.keyspace, p = rd_string(s, p)
            if r.target ~= "KEYSPACE" then r.name = rd_string(s, p) end
        end
    elseif f.opcode == M.op.EVENT then
        r.event, p = rd_string(s, p)
        r.rest = s:sub(p)
    end
    return r
end

local Cql = {}
Cql.__index = Cql
M.Cql = Cql

-- connect(port, { host = "127.0.0.1", version = 4, user, password,
-- timeout = 5, keyspace, compression, no_startup = true }): a raw connection, after STARTUP (and
-- the SASL PLAIN exchange when user is given) unless no_startup.  Frames
-- are never compressed by this client: do not ask for compression unless
-- the test handles compressed bodies itself.  Raises on failure.
function M.connect(port, opts)
    opts = opts or {}
    local conn = h.connect(port, opts.timeout or 5, opts.host)
    local c = setmetatable({ conn = conn, version = opts.version or 4, next_stream = 0,
        timeout = opts.timeout or 10 }, Cql)
    if not opts.no_startup then c:startup(opts) end
    return c
end

function Cql:close() self.conn:close() end

-- send one request; returns its stream id
function Cql:send(opcode, body, stream, flags)
    if not stream then
        stream = self.next_stream
        self.next_stream = (self.next_stream + 1) % 0x8000
    end
    local ok, err = self.conn:send(M.frame(self.version, stream, opcode, body, flags))
    if not ok then error(err, 2) end
    return stream
end

-- the next response frame (raw table, see parse_frame); raises on timeout/EOF
function Cql:read_frame(timeout)
    local deadline = h.now() + (timeout or self.timeout)
    while true do
        local f, used = M.parse_frame(self.conn:buffer())
        if f then self.conn:consume(used); return f end
        if self.conn.eof then
            error("CQL connection closed" .. (self.conn.reset and (" (" .. self.conn.reset .. ")") or ""), 2)
        end
        local left = deadline - h.now()
        if left <= 0 then error(string.format("no CQL frame within %.1fs", timeout or self.timeout), 2) end
        self.conn:fill(left)
    end
end

-- send and read the response on the same stream (EVENTs on stream -1 are
-- kept in self.events); returns the decoded response
function Cql:request(opcode, body, opts)
    opts = opts or {}
    local stream = self:send(opcode, body, opts.stream, opts.flags)
    while true do
        local f = self:read_frame(opts.timeout)
        local r = M.decode(f)
        if f.stream == stream then return r, f end
        self.events = self.events or {}
        self.events[#self.events + 1] = r
    end
end

function Cql:options()
    return self:request(M.op.OPTIONS, "")
end

-- STARTUP, then SASL PLAIN if the server asks and opts.user is given
function Cql:startup(opts)
    opts = opts or {}
    local so = { CQL_VERSION = "3.0.0" }
    if opts.compression then so.COMPRESSION = opts.compression end
    local r = self:request(M.op.STARTUP, M.string_map(so), opts)
    if r.opcode == M.op.AUTHENTICATE then
        if not opts.user then error("server wants authentication (" .. tostring(r.authenticator) .. ")", 2) end
        r = self:request(M.op.AUTH_RESPONSE,
            M.bytes("\0" .. opts.user .. "\0" .. (opts.password or "")), opts)
        if r.opcode ~= M.op.AUTH_SUCCESS then
            error("authentication failed: " .. tostring(r.message or r.opname), 2)
        end
    elseif r.opcode ~= M.op.READY then
        error("STARTUP: " .. tostring(r.message or r.opname), 2)
    end
    if opts.keyspace then self:query("USE " .. opts.keyspace) end
    return r
end

-- the body of a QUERY of q at consistency (default ONE), without values
function M.query_body(q, consistency)
    return M.long_string(q) .. be16(M.consistency[consistency or "ONE"]) .. u8(0)
end

-- QUERY with consistency ONE (opts.consistency), no values; raises on ERROR
-- unless opts.may_fail.  Returns the decoded RESULT (rows: lists of raw
-- bytes, nil for null).
function Cql:query(q, opts)
    opts = opts or {}
    local r = self:request(M.op.QUERY, M.query_body(q, opts.consistency), opts)
    if r.opcode == M.op.ERROR and not opts.may_fail then
        error(string.format("CQL error 0x%04x: %s (query %q)", r.code % 0x100000000, r.message, q), 2)
    end
    return r
end

-- PREPARE q (protocol v3/v4); returns the prepared id, raises on ERROR
function Cql:prepare(q, opts)
    local r = self:request(M.op.PREPARE, M.long_string(q), opts)
    if r.opcode == M.op.ERROR then
        error(string.format("PREPARE: CQL error 0x%04x: %s", r.code % 0x100000000, r.message), 2)
    end
    return r.id
end

-- EXECUTE prepared id with values (each already serialized for its
-- column, nil for null), consistency ONE (opts.consistency); protocol
-- v3/v4.  Returns the decoded response.
function Cql:execute(id, values, opts)
    opts = opts or {}
    values = values or {}
    local out = { be16(#id), id, be16(M.consistency[opts.consistency or "ONE"]) }
    if #values > 0 then
        out[#out + 1] = u8(0x01) .. be16(#values)
        for _, v in ipairs(values) do out[#out + 1] = M.bytes(v) end
    else
        out[#out + 1] = u8(0)
    end
    return self:request(M.op.EXECUTE, table.concat(out), opts)
end

function Cql:register(events)
    local out = { be16(#events) }
    for _, e in ipairs(events) do out[#out + 1] = M.string(e) end
    return self:request(M.op.REGISTER, table.concat(out))
end

-- big-endian signed int of a value's bytes (int, bigint up to 2^53)
function M.int_of(b)
    if b == nil then return nil end
    local v = 0
    for i = 1, #b do v = v * 256 + b:byte(i) end
    if #b > 0 and b:byte(1) >= 0x80 then v = v - 2 ^ (8 * #b) end
    return v
end

---------------------------------------------------------------------------
-- failure context: a failing test prints the tail of each live node's log
---------------------------------------------------------------------------

do
    local ok, busted = pcall(require, "busted")
    if ok and type(busted) == "table" and busted.subscribe then
        local live = setmetatable({}, { __mode = "k" })
        local orig = Node.launch
        function Node:launch(...)
            live[self] = true
            return orig(self, ...)
        end
        pcall(busted.subscribe, { "test", "end" }, function(element, parent, status)
            if status == "failure" or status == "error" then
                for n in pairs(live) do
                    if n.proc and n.proc:alive() then
                        io.stderr:write(string.format("---- %s: cassandra %s system.log tail (%s) ----\n%s\n----\n",
                            element and element.name or "?", n.host, n.log_path, n:log_tail(20)))
                    end
                end
            end
            return nil, true
        end)
    end
end

---------------------------------------------------------------------------
-- shotover in front of a node
---------------------------------------------------------------------------

-- start_proxy{ remote = node port, chain = "elements before the sink, each
-- followed by a comma" (optional), sink = "options of the cassandra sink"
-- (optional), workers = n (default 1), no_sink = true (chain is the whole
-- chain), extra = "top-level config keys, each followed by a comma",
-- source = "more keys of the source, each followed by a comma", prelude =
-- "Lua code before the config's return (e.g. inline functions)" }: a
-- shotover with one cassandra source; returns (proc, port) once it accepts
-- connections.
function M.start_proxy(o)
    local port = h.free_port()
    local chain = o.chain or ""
    if not o.no_sink then
        chain = chain .. string.format('{ "cassandra", remote = "127.0.0.1:%d", %s }',
                                       o.remote, o.sink or "")
    end
    local p = h.shotover({ config = string.format([[
%s
return {
  workers = %d, %s
  sources = {
    { name = "cql", protocol = "cassandra", listen = "127.0.0.1:%d", %s
      chain = { %s } },
  },
}
]], o.prelude or "", o.workers or 1, o.extra or "", port, o.source or "",
    chain) })
    h.wait_listening(port, "shotover")
    return p, port
end

-- An EVENT (as decode() gives it) as one line of text:
-- "STATUS_CHANGE DOWN 127.0.0.3:9042", "TOPOLOGY_CHANGE NEW_NODE a:p",
-- "SCHEMA_CHANGE CREATED TABLE ks.t", "SCHEMA_CHANGE DROPPED KEYSPACE ks".
function M.event_text(e)
    local s = e.rest
    local change, p = M.rd_string(s, 1)
    if e.event == "SCHEMA_CHANGE" then
        local target, ks
        target, p = M.rd_string(s, p)
        ks, p = M.rd_string(s, p)
        local name = target ~= "KEYSPACE" and M.rd_string(s, p)
        return string.format("SCHEMA_CHANGE %s %s %s%s", change, target, ks,
                             name and "." .. name or "")
    end
    local n = s:byte(p)
    return string.format("%s %s %s:%d", e.event, change,
                         M.inet_of(s:sub(p + 1, p + n)), M.rd32(s, p + 1 + n))
end

-- Read events on raw connection c (REGISTERed) until one reads `want`
-- (event_text); events that came with other replies are in c.events, kept
-- by Cql:request, the rest are read here.  Returns every event seen, as
-- text; raises at the timeout or when the connection closes.
function M.wait_event(c, want, timeout)
    c.events = c.events or {}
    local seen, i = {}, 1
    h.wait_until(function()
        while i <= #c.events do
            local e = c.events[i]
            i = i + 1
            if e.opname == "EVENT" then
                seen[#seen + 1] = M.event_text(e)
                if seen[#seen] == want then
                    return true
                end
            end
        end
        local ok, f = pcall(c.read_frame, c, 0.5)
        if ok then
            c.events[#c.events + 1] = M.decode(f)
        elseif c.conn.eof then
            error("the connection closed while waiting for " .. want, 0)
        end
        return false, table.concat(seen, ", ")
    end, timeout, want, 0)
    return seen
end

return M
