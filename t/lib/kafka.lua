-- t/lib/kafka.lua -- a real Apache Kafka broker for the integration specs
-- (the ground for the Kafka change-data-capture feature), run straight from
-- the Maven Central jars (t/maven-fetch), with kcat as the client.
--
-- One JVM in KRaft mode, broker and controller in one process (node.id 1,
-- a static one-voter quorum): a PLAINTEXT listener and a CONTROLLER
-- listener on two free loopback ports, its log dirs in a harness temp dir,
-- storage formatted (kafka.tools.StorageTool) before the first start, topic
-- auto-creation on, one partition and replication factor 1 for internal
-- topics, small heap and segments and few threads for a 2-core machine.
-- Ready means `kcat -L` gets metadata from it naming this broker, with no
-- partition of a known topic lacking a leader (so after a restart the old
-- topics are served again) -- never a fixed sleep.  h.defer stops it
-- (SIGTERM, SIGKILL after a deadline) before harness.cleanup removes the
-- dir.  The spec of the harness itself is t/integration/600-*.
--
--   local h = require("harness")
--   local kafka = require("kafka")
--   describe("...", function()
--     local k
--     setup(function() k = kafka.start() end)
--     teardown(h.cleanup)              -- stops the broker, removes its dir
--     it("...", function()
--       k:create_topic("cdc", 3)
--       k:produce("cdc", "key-1", "value-1")
--       local recs = k:consume("cdc", 1, 10)
--       assert.equal("value-1", recs[1].value)
--     end)
--   end)
--
-- kafka.start(opts) -> Broker.  opts (all optional): heap = "512m",
--   heap_min = "128m", port / controller_port (default: free ports),
--   cluster_id (22-char base64 UUID; default random), properties =
--   { ["name"] = value } (added to / overriding the generated
--   server.properties), jvm_args = { ... }, ready_timeout = s (default 90),
--   version (default KAFKA_VERSION from t/versions), log_level = "INFO".
-- Broker fields: host ("127.0.0.1"), port, controller_port, dir,
--   data_dir (log.dirs), config_path, log_path (server.log), out_path (JVM
--   stdout/stderr), cluster_id, version, lib (the jar dir),
--   startup_seconds (last start, spawn to ready).
-- Broker methods:
--   brokers()                   "127.0.0.1:PORT" (bootstrap servers)
--   create_topic(name, partitions = 1, configs = { k = v })
--                               Kafka's own org.apache.kafka.tools.
--                               TopicCommand (kafka-topics.sh) in a short
--                               JVM on the same class path (about 1 s), then
--                               waits until kcat sees every partition with a
--                               leader.  Auto-creation (a produce to a new
--                               name) also works, but only with the
--                               broker's default of 1 partition.
--   produce(topic, key, value, opts)
--                               one record with kcat -P; key nil: no key,
--                               value nil: a tombstone (null value).  Any
--                               bytes (fed on kcat's stdin between
--                               multi-byte delimiters); "" and nil cannot
--                               mix in one call (kcat -Z makes every empty
--                               key or value null).  Keyed records go where
--                               Kafka's Java clients put them (kcat's
--                               murmur2 partitioner; no key: a random
--                               partition); opts.partition pins one;
--                               opts.headers = { "k=v", ... } (sent, not
--                               read back by consume).  acks=all; raises
--                               unless delivered.
--   produce_many(topic, { { key =, value = }, ... }, opts)
--                               the same for a list, in one kcat run (in
--                               order: one partition keeps the list order)
--   consume(topic, n, timeout = 10, opts)
--                               the first n records from the beginning with
--                               kcat -C, as { key, value, partition, offset,
--                               timestamp } (key / value nil when null),
--                               in each partition in offset order.  Raises
--                               when fewer than n come within timeout s.
--                               opts.partition, opts.offset (kcat -o:
--                               "beginning", "end", n, -n), opts.to_end
--                               (n may be nil: everything up to the end of
--                               each partition, kcat -e).
--   topic_partitions(name)      partition count from metadata (nil: none)
--   stop(grace = 30)            SIGTERM (a controlled shutdown, ~2 s),
--                               SIGKILL after grace s; returns the status
--                               and whether SIGKILL was needed
--   kill()                      SIGKILL (a crash: log recovery at next start)
--   start(timeout)              again after stop/kill: same dir, ports,
--                               cluster id; the data survives
--   restart(), alive(), log(), log_tail(n), wait_log(needle, timeout),
--   kcat(args, opts)            any kcat run against this broker (h.run
--                               result); metadata(topic) (kcat -L text),
--   java(class, args, opts)     a short JVM on the broker's class path
--                               (another Kafka tool; h.run result)
-- kafka.by_partition(records) -> { [partition] = { records in offset order } }
-- kafka.partition_for(key, n) -> the partition Kafka's Java clients (and
--   kcat here) pick for `key` among n: murmur2(key) & 0x7fffffff % n;
--   kafka.murmur2(key) -> the hash (unsigned 32-bit)
--
-- Environment: SHOTOVER_CACHE (jar cache, see t/maven-fetch),
-- SHOTOVER_KEEP_TMP=1 (keep the broker dir: config, logs, data), JAVA (the
-- java binary; default $JAVA_HOME/bin/java or java in PATH), KAFKA_VERSION.
-- Needs kcat (Debian package kcat; scripts/deps test installs it).

local h = require("harness")
local jvm = require("jvm")
local bit = require("bit")

local M = {}

local src = jvm.src
M.src = src

M.KCAT = "kcat"

---------------------------------------------------------------------------
-- versions, jars, java
---------------------------------------------------------------------------

-- versions, jars and java: t/lib/jvm.lua
M.versions = jvm.versions
M.java = jvm.java

function M.version()
    return jvm.version("kafka")
end

function M.lib_dir(version)
    return jvm.lib_dir("kafka", version)
end

-- a small, fast-starting test JVM on 2 cores (one C1 tier, serial GC)
local JVM = {
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
    "-XX:-UsePerfData",
    "-XX:+PerfDisableSharedMem",
    "-Djava.net.preferIPv4Stack=true",
    "-Djava.awt.headless=true",
}

-- a random cluster id: 16 bytes as unpadded URL-safe base64 (what
-- `kafka-storage.sh random-uuid` prints); like Kafka's Uuid.randomUuid,
-- never one starting with "-" (a command line would take it for an option)
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
function M.random_cluster_id()
    local f = assert(io.open("/dev/urandom", "rb"))
    while true do
        local b = f:read(16)
        local bits = {}
        for i = 1, 16 do
            local c = b:byte(i)
            for j = 7, 0, -1 do bits[#bits + 1] = math.floor(c / 2 ^ j) % 2 end
        end
        while #bits % 6 ~= 0 do bits[#bits + 1] = 0 end
        local out = {}
        for i = 1, #bits, 6 do
            local v = 0
            for j = 0, 5 do v = v * 2 + bits[i + j] end
            out[#out + 1] = B64:sub(v + 1, v + 1)
        end
        local id = table.concat(out)
        if id:sub(1, 1) ~= "-" then f:close(); return id end
    end
end

---------------------------------------------------------------------------
-- config files
---------------------------------------------------------------------------

local function properties(b)
    local p = {
        { "process.roles", "broker,controller" },
        { "node.id", "1" },
        { "controller.quorum.voters", "1@127.0.0.1:" .. b.controller_port },
        { "listeners", string.format("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d",
            b.port, b.controller_port) },
        { "advertised.listeners", "PLAINTEXT://127.0.0.1:" .. b.port },
        { "controller.listener.names", "CONTROLLER" },
        { "inter.broker.listener.name", "PLAINTEXT" },
        { "listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT" },
        { "log.dirs", b.data_dir },
        { "auto.create.topics.enable", "true" },
        { "num.partitions", "1" },
        { "default.replication.factor", "1" },
        { "min.insync.replicas", "1" },
        -- internal topics: one replica, one partition (created faster)
        { "offsets.topic.replication.factor", "1" },
        { "offsets.topic.num.partitions", "1" },
        { "transaction.state.log.replication.factor", "1" },
        { "transaction.state.log.min.isr", "1" },
        { "transaction.state.log.num.partitions", "1" },
        { "share.coordinator.state.topic.replication.factor", "1" },
        { "share.coordinator.state.topic.min.isr", "1" },
        { "share.coordinator.state.topic.num.partitions", "1" },
        { "group.initial.rebalance.delay.ms", "0" },
        -- after a crash the restarted broker is fenced until the old
        -- registration's session expires (default 9 s of a 12 s start)
        { "broker.session.timeout.ms", "3000" },
        { "broker.heartbeat.interval.ms", "500" },
        -- 2 cores: few threads, small segments and buffers
        { "num.network.threads", "2" },
        { "num.io.threads", "2" },
        { "num.recovery.threads.per.data.dir", "1" },
        { "background.threads", "2" },
        { "log.cleaner.threads", "1" },
        { "log.cleaner.dedupe.buffer.size", tostring(4 * 1024 * 1024) },
        { "log.segment.bytes", tostring(1024 * 1024) },
        { "log.index.size.max.bytes", tostring(64 * 1024) },
        { "log.retention.hours", "168" },
        { "log.retention.check.interval.ms", "300000" },
        { "socket.send.buffer.bytes", "131072" },
        { "socket.receive.buffer.bytes", "131072" },
    }
    local seen, lines = {}, { "# generated by t/lib/kafka.lua" }
    for _, kv in ipairs(p) do
        local v = b.extra_props[kv[1]]
        if v == nil then v = kv[2] end
        seen[kv[1]] = true
        if v ~= false then lines[#lines + 1] = kv[1] .. "=" .. tostring(v) end
    end
    local extra = {}
    for k in pairs(b.extra_props) do
        if not seen[k] then extra[#extra + 1] = k end
    end
    table.sort(extra)
    for _, k in ipairs(extra) do
        lines[#lines + 1] = k .. "=" .. tostring(b.extra_props[k])
    end
    return table.concat(lines, "\n") .. "\n"
end

-- log4j2 (Kafka 4 logs through slf4j 1.7 -> log4j-slf4j-impl): one file
local function log4j2_text(b)
    return string.format([[
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="FILE" fileName="%s" append="true">
      <PatternLayout pattern="[%%d] %%p %%m (%%c)%%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Root level="%s"><AppenderRef ref="FILE"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
  </Loggers>
</Configuration>
]], b.log_path, b.log_level)
end

---------------------------------------------------------------------------
-- the broker
---------------------------------------------------------------------------

local Broker = {}
Broker.__index = Broker
M.Broker = Broker

function M.start(opts)
    opts = opts or {}
    local b = setmetatable({
        host = "127.0.0.1",
        heap = opts.heap or "512m",
        heap_min = opts.heap_min or "128m",
        port = opts.port or h.free_port(),
        controller_port = opts.controller_port or h.free_port(),
        cluster_id = opts.cluster_id or M.random_cluster_id(),
        extra_props = opts.properties or {},
        jvm_args = opts.jvm_args or {},
        log_level = opts.log_level or "INFO",
        version = opts.version or M.version(),
        ready_timeout = opts.ready_timeout or 90,
    }, Broker)
    b.lib = M.lib_dir(b.version)
    b.cp = jvm.class_path(b.lib)
    b.dir = h.tmpdir("kafka")
    b.data_dir = b.dir .. "/data"
    b.config_path = b.dir .. "/server.properties"
    b.log4j_path = b.dir .. "/log4j2.xml"
    b.log_path = b.dir .. "/server.log"
    b.out_path = b.dir .. "/output.log"
    h.write_file(b.config_path, properties(b))
    h.write_file(b.log4j_path, log4j2_text(b))
    -- stopped before harness.cleanup removes the dir
    h.defer(function() b:stop(10) end)
    b:format()
    b:start()
    return b
end

-- a short JVM on the broker's class path: h.run result
function Broker:java(class, args, opts)
    local argv = { M.java(), "-Xmx128m" }
    for _, a in ipairs(JVM) do argv[#argv + 1] = a end
    argv[#argv + 1] = "-Dlog4j2.configurationFile=" .. self.log4j_path
    argv[#argv + 1] = "-cp"
    argv[#argv + 1] = self.cp
    argv[#argv + 1] = class
    for _, a in ipairs(args) do argv[#argv + 1] = tostring(a) end
    return h.run(argv, opts or { timeout = 60 })
end

-- kafka-storage.sh format: once, before the first start
function Broker:format()
    local r = self:java("kafka.tools.StorageTool",
        { "format", "--cluster-id=" .. self.cluster_id, "--config=" .. self.config_path })
    if r.code ~= 0 or r.timed_out then
        error(string.format("kafka StorageTool format failed (%s%s):\n%s%s",
            tostring(r.code), r.timed_out and ", timed out" or "", r.stdout, r.stderr), 2)
    end
end

function Broker:argv()
    local argv = { M.java(), "-Xms" .. self.heap_min, "-Xmx" .. self.heap }
    for _, a in ipairs(JVM) do argv[#argv + 1] = a end
    argv[#argv + 1] = "-Dlog4j2.configurationFile=" .. self.log4j_path
    argv[#argv + 1] = "-Dkafka.logs.dir=" .. self.dir
    for _, a in ipairs(self.jvm_args) do argv[#argv + 1] = a end
    argv[#argv + 1] = "-cp"
    argv[#argv + 1] = self.cp
    argv[#argv + 1] = "kafka.Kafka"
    argv[#argv + 1] = self.config_path
    return argv
end

function Broker:brokers() return self.host .. ":" .. self.port end

-- kcat ARGS against this broker: the h.run result
function Broker:kcat(args, opts)
    local argv = { M.KCAT, "-b", self:brokers() }
    for _, a in ipairs(args) do argv[#argv + 1] = tostring(a) end
    return h.run(argv, opts or { timeout = 30 })
end

-- metadata as kcat -L prints it (one topic or all), or nil and why not
function Broker:metadata(topic, timeout)
    local args = { "-L", "-m", tostring(timeout or 3) }
    if topic then args[#args + 1] = "-t"; args[#args + 1] = topic end
    local r = self:kcat(args, { timeout = (timeout or 3) + 5 })
    if r.code ~= 0 or r.timed_out then
        return nil, h.chomp(r.stderr .. r.stdout)
    end
    return r.stdout
end

-- the metadata names this broker and every partition listed has a leader
local function metadata_ready(self, md)
    if not md:find("broker 1 at 127.0.0.1:" .. self.port, 1, true) then
        return false, "broker not listed:\n" .. md
    end
    if md:find("leader %-1") or md:find("error:", 1, true)
            or md:find("Broker:", 1, true) then
        return false, "partitions without a leader:\n" .. md
    end
    return true
end

-- start (or start again after stop/kill: same dir, ports, data); returns
-- once kcat gets metadata naming this broker with every partition led
function Broker:start(timeout)
    assert(not (self.proc and self.proc:alive()), "kafka already running")
    local t0 = h.now()
    self.proc = h.spawn(self:argv(), { stdout = self.out_path, stderr = "stdout", append = true })
    self.proc.is_kafka = self
    self:wait_ready(timeout or self.ready_timeout)
    self.startup_seconds = h.now() - t0
    return self
end

function Broker:wait_ready(timeout)
    local proc = self.proc
    h.wait_until(function()
        if not proc:alive() then
            error(string.format("kafka exited (%s) before it was ready; output:\n%s\nserver.log tail:\n%s",
                h.status_string(proc:poll()), h.read_file(self.out_path) or "", self:log_tail(40)), 0)
        end
        local md, err = self:metadata(nil, 2)
        if not md then return false, err end
        return metadata_ready(self, md)
    end, timeout or 90, "kafka on port " .. self.port .. " to serve metadata", 0.1)
end

function Broker:restart(grace, timeout)
    self:stop(grace)
    return self:start(timeout)
end

-- SIGTERM (a controlled shutdown), SIGKILL after `grace` seconds (default
-- 30).  Returns the exit status and whether SIGKILL was needed.
function Broker:stop(grace)
    if not self.proc then return end
    return self.proc:stop(grace or 30)
end

-- SIGKILL: a crash; the next start recovers the logs
function Broker:kill()
    if not self.proc then return end
    self.proc:kill(h.SIGKILL)
    assert(self.proc:wait(10), "kafka did not die on SIGKILL")
end

function Broker:alive() return self.proc ~= nil and self.proc:alive() end

function Broker:log() return h.read_file(self.log_path) or "" end

function Broker:log_tail(n)
    local lines = {}
    for l in self:log():gmatch("[^\n]*\n?") do
        if l ~= "" then lines[#lines + 1] = l end
    end
    return table.concat(lines, "", math.max(1, #lines - (n or 40) + 1))
end

function Broker:wait_log(needle, timeout)
    return h.wait_until(function()
        return self:log():find(needle, 1, true) ~= nil
    end, timeout or 10, "server.log to mention " .. needle)
end

---------------------------------------------------------------------------
-- topics
---------------------------------------------------------------------------

-- the partition count of `name` from metadata, or nil when it has none
function Broker:topic_partitions(name)
    local md = self:metadata(name)
    if not md then return nil end
    return tonumber(md:match('topic "[^"]*" with (%d+) partitions'))
end

-- kafka-topics.sh --create, then wait until every partition has a leader
function Broker:create_topic(name, partitions, configs)
    partitions = partitions or 1
    local args = { "--bootstrap-server", self:brokers(), "--create", "--topic", name,
        "--partitions", partitions, "--replication-factor", 1 }
    local keys = {}
    for k in pairs(configs or {}) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
        args[#args + 1] = "--config"
        args[#args + 1] = k .. "=" .. tostring(configs[k])
    end
    local r = self:java("org.apache.kafka.tools.TopicCommand", args)
    if r.code ~= 0 or r.timed_out then
        error(string.format("kafka-topics --create %s failed (%s%s):\n%s%s", name,
            tostring(r.code), r.timed_out and ", timed out" or "", r.stdout, r.stderr), 2)
    end
    h.wait_until(function()
        local md, err = self:metadata(name)
        if not md then return false, err end
        local n = tonumber(md:match('topic "[^"]*" with (%d+) partitions'))
        if n ~= partitions then return false, md end
        return metadata_ready(self, md)
    end, 30, "topic " .. name .. " to have " .. partitions .. " led partitions", 0.05)
    return self
end

---------------------------------------------------------------------------
-- records, through kcat
---------------------------------------------------------------------------

-- kcat -P reads records from stdin split by these (multi-byte, so no
-- real key or value holds them; checked): KEY<KD>VALUE<MD>...
local KD, MD = "\31<kcat-key>\31", "\30<kcat-end>\30"
local KD_ARG, MD_ARG = "\\x1f<kcat-key>\\x1f", "\\x1e<kcat-end>\\x1e"

-- produce records { { key = k, value = v }, ... } with one kcat -P
function Broker:produce_many(topic, recs, opts)
    opts = opts or {}
    local null, empty = false, false
    local buf = {}
    for i, r in ipairs(recs) do
        local k, v = r.key, r.value
        if k == nil or v == nil then null = true end
        if k == "" or v == "" then empty = true end
        if k and k:find(KD, 1, true) or v and v:find(MD, 1, true) then
            error("kafka produce: record " .. i .. " holds kcat's delimiter", 2)
        end
        buf[#buf + 1] = (k or "") .. KD .. (v or "") .. MD
    end
    if null and empty then
        -- kcat -Z turns every empty key or value into null
        error("kafka produce: null and empty keys/values in one kcat run", 2)
    end
    local args = { "-P", "-t", topic, "-K", KD_ARG, "-D", MD_ARG,
        -- the Java clients' partitioner, so keyed records land where a Java
        -- producer (and Kafka Connect) would put them
        "-X", "topic.partitioner=murmur2_random",
        "-X", "message.timeout.ms=" .. math.floor((opts.timeout or 15) * 1000),
        "-X", "request.required.acks=-1" }
    if null then args[#args + 1] = "-Z" end
    if opts.partition then args[#args + 1] = "-p"; args[#args + 1] = opts.partition end
    for _, hd in ipairs(opts.headers or {}) do
        args[#args + 1] = "-H"; args[#args + 1] = hd
    end
    local r = self:kcat(args, { timeout = (opts.timeout or 15) + 10, stdin = table.concat(buf) })
    if r.code ~= 0 or r.timed_out or r.stderr:find("Delivery failed", 1, true)
            or r.stderr:find("ERROR", 1, true) then
        error(string.format("kcat produce to %s failed (%s%s): %s", topic, tostring(r.code),
            r.timed_out and ", timed out" or "", r.stderr .. r.stdout), 2)
    end
    return self
end

-- produce one record (key nil: no key; value nil: a tombstone)
function Broker:produce(topic, key, value, opts)
    return self:produce_many(topic, { { key = key, value = value } }, opts)
end

-- kcat -f: a header line "partition offset timestamp keylen valuelen",
-- then the key and value bytes (binary-safe: lengths, not delimiters)
local FORMAT = "%p %o %T %K %S\\n%k%s\\n"

local function parse_records(out)
    local recs, pos = {}, 1
    while pos <= #out do
        local p, o, t, kl, vl, nxt = out:match("^(%d+) (%d+) (%-?%d+) (%-?%d+) (%-?%d+)\n()", pos)
        if not p then break end
        kl, vl = tonumber(kl), tonumber(vl)
        local key, value
        if kl >= 0 then key = out:sub(nxt, nxt + kl - 1); nxt = nxt + kl end
        if vl >= 0 then value = out:sub(nxt, nxt + vl - 1); nxt = nxt + vl end
        if out:sub(nxt, nxt) ~= "\n" then break end   -- cut off (timeout)
        recs[#recs + 1] = { partition = tonumber(p), offset = tonumber(o),
            timestamp = tonumber(t), key = key, value = value }
        pos = nxt + 1
    end
    return recs
end
M.parse_records = parse_records

function Broker:consume(topic, n, timeout, opts)
    opts = opts or {}
    timeout = timeout or 10
    local args = { "-C", "-q", "-t", topic, "-o", opts.offset or "beginning",
        "-f", FORMAT }
    if n then args[#args + 1] = "-c"; args[#args + 1] = n end
    if opts.to_end then args[#args + 1] = "-e" end
    if opts.partition then args[#args + 1] = "-p"; args[#args + 1] = opts.partition end
    local r = self:kcat(args, { timeout = timeout })
    local recs = parse_records(r.stdout)
    if (n and #recs < n) or (not r.timed_out and r.code ~= 0) then
        error(string.format("kcat consume of %s: %d of %s records in %.1fs (%s%s): %s",
            topic, #recs, tostring(n or "all"), r.elapsed, tostring(r.code),
            r.timed_out and ", timed out" or "", r.stderr), 2)
    end
    return recs
end

-- Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), unsigned
local function u32(x) return x % 4294967296 end
local function mul32(a, b)
    a, b = u32(a), u32(b)
    local ah, al = math.floor(a / 65536), a % 65536
    return u32(((ah * b) % 65536) * 65536 + al * b)
end

function M.murmur2(s)
    local m = 0x5bd1e995
    local len = #s
    local hh = u32(bit.bxor(0x9747b28c, len))
    local n4 = math.floor(len / 4)
    for i = 0, n4 - 1 do
        local b1, b2, b3, b4 = s:byte(i * 4 + 1, i * 4 + 4)
        local k = b1 + b2 * 256 + b3 * 65536 + b4 * 16777216
        k = mul32(k, m)
        k = u32(bit.bxor(k, bit.rshift(k, 24)))
        k = mul32(k, m)
        hh = u32(bit.bxor(mul32(hh, m), k))
    end
    local rem, base = len % 4, n4 * 4
    if rem == 3 then hh = u32(bit.bxor(hh, bit.lshift(s:byte(base + 3), 16))) end
    if rem >= 2 then hh = u32(bit.bxor(hh, bit.lshift(s:byte(base + 2), 8))) end
    if rem >= 1 then hh = mul32(u32(bit.bxor(hh, s:byte(base + 1))), m) end
    hh = u32(bit.bxor(hh, bit.rshift(hh, 13)))
    hh = mul32(hh, m)
    return u32(bit.bxor(hh, bit.rshift(hh, 15)))
end

function M.partition_for(key, n)
    return bit.band(M.murmur2(key), 0x7fffffff) % n
end

-- records grouped by partition, each list in offset order
function M.by_partition(records)
    local t = {}
    for _, r in ipairs(records) do
        t[r.partition] = t[r.partition] or {}
        table.insert(t[r.partition], r)
    end
    for _, list in pairs(t) do
        table.sort(list, function(a, b) return a.offset < b.offset end)
    end
    return t
end

return M
