-- The Kafka test harness itself (t/lib/kafka.lua): a real Kafka broker
-- (KRaft, broker and controller in one JVM) from the Maven Central jars
-- starts on free loopback ports; kcat produces keyed records to a
-- 3-partition topic and reads them back in offset order per partition, on
-- the partitions Kafka's Java clients would pick; the data survives a clean
-- stop and a crash.  No shotover here: these specs prove the ground the
-- Kafka change-data-capture specs stand on.

local h = require("harness")
local kafka = require("kafka")
local bit = require("bit")

-- n records with keys k-0 .. k-<keys-1> round robin, values unique
local function records(n, keys, tag)
    local list = {}
    for i = 0, n - 1 do
        list[#list + 1] = { key = "k-" .. (i % keys), value = string.format("%s-%03d", tag, i) }
    end
    return list
end

-- every record produced is read back once, in produce order within its
-- partition, on the partition its key hashes to
local function check_roundtrip(sent, got, partitions)
    assert.equal(#sent, #got)
    local want = {}
    for _, r in ipairs(sent) do
        local p = kafka.partition_for(r.key, partitions)
        want[p] = want[p] or {}
        table.insert(want[p], r)
    end
    local byp = kafka.by_partition(got)
    for p = 0, partitions - 1 do
        local w, g = want[p] or {}, byp[p] or {}
        assert.equal(#w, #g, "records in partition " .. p)
        for i, r in ipairs(g) do
            assert.equal(i - 1, r.offset, "offset in partition " .. p)
            assert.equal(w[i].key, r.key)
            assert.equal(w[i].value, r.value)
        end
    end
end

describe("kafka harness", function()
    local k

    setup(function()
        k = kafka.start()
        io.stderr:write(string.format("# kafka %s started in %.1fs (broker %d, controller %d)\n",
            k.version, k.startup_seconds, k.port, k.controller_port))
    end)
    teardown(h.cleanup)

    it("runs the version pinned in t/versions in KRaft mode on free loopback ports", function()
        assert.equal(kafka.versions().KAFKA_VERSION, k.version)
        assert.is_true(k:alive())
        assert.are_not.equal(9092, k.port)
        assert.equal("127.0.0.1:" .. k.port, k:brokers())
        local props = h.read_file(k.config_path)
        assert.truthy(props:find("process.roles=broker,controller", 1, true))
        assert.truthy(props:find("PLAINTEXT://127.0.0.1:" .. k.port, 1, true))
        -- log4j2 is bound: the broker logs to server.log
        assert.truthy(k:log():find("Kafka Server started", 1, true), k:log_tail(20))
        assert.truthy(k:log():find("Kafka version: " .. k.version, 1, true))
        -- storage formatted with this cluster id; ids never look like an
        -- option to StorageTool's command line
        assert.truthy(h.read_file(k.data_dir .. "/meta.properties")
            :find("cluster.id=" .. k.cluster_id, 1, true))
        for _ = 1, 500 do
            local id = kafka.random_cluster_id()
            assert.equal(22, #id)
            assert.is_nil(id:find("^%-"), id)
            assert.is_nil(id:find("[^%w_-]"), id)
        end
    end)

    it("hashes keys like Kafka's Java clients (murmur2 vectors from Kafka's UtilsTest)", function()
        local cases = { ["21"] = -973932308, foobar = -790332482, abc = 479470107,
            ["a-little-bit-long-string"] = -985981536,
            ["a-little-bit-longer-string"] = -1486304829,
            ["lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"] = -58897971 }
        for key, want in pairs(cases) do
            assert.equal(want, bit.tobit(kafka.murmur2(key)), key)
        end
    end)

    it("produces keyed records to a 3-partition topic and reads them back in order per partition", function()
        k:create_topic("harness.keyed", 3)
        assert.equal(3, k:topic_partitions("harness.keyed"))
        local sent = records(24, 6, "v")
        for _, r in ipairs(sent) do k:produce("harness.keyed", r.key, r.value) end
        local got = k:consume("harness.keyed", #sent, 20)
        check_roundtrip(sent, got, 3)
        -- the 6 keys spread over more than one partition
        local used = 0
        for _ in pairs(kafka.by_partition(got)) do used = used + 1 end
        assert.is_true(used > 1)
        -- one partition alone, and nothing more than was sent
        local p0 = k:consume("harness.keyed", nil, 20, { partition = 0, to_end = true })
        for _, r in ipairs(p0) do assert.equal(0, r.partition) end
        assert.equal(#(kafka.by_partition(got)[0] or {}), #p0)
    end)

    it("carries any bytes, null keys and tombstones; auto-creates topics on produce", function()
        local bin = "line 1\nline 2\0\255\r\n:" .. string.rep("x", 5000)
        k:produce("harness.auto", "key with spaces:and\ttabs", bin)
        k:produce("harness.auto", nil, "no key")
        k:produce("harness.auto", "gone", nil)
        k:produce("harness.auto", "hdr", "with headers", { headers = { "op=c", "source=shotover" } })
        k:produce("harness.auto", "\0nul\0key", "")
        assert.equal(1, k:topic_partitions("harness.auto"))
        local got = k:consume("harness.auto", 5, 20)
        assert.equal("key with spaces:and\ttabs", got[1].key)
        assert.equal(bin, got[1].value)
        assert.is_nil(got[2].key)
        assert.equal("no key", got[2].value)
        assert.equal("gone", got[3].key)
        assert.is_nil(got[3].value)
        assert.equal("with headers", got[4].value)
        assert.equal("\0nul\0key", got[5].key)
        assert.equal("", got[5].value)
        for i, r in ipairs(got) do
            assert.equal(i - 1, r.offset)
            assert.is_true(r.timestamp > 0)
        end
        -- fewer records than asked for: an error naming the shortfall
        local ok, err = pcall(k.consume, k, "harness.auto", 6, 2)
        assert.is_false(ok)
        assert.truthy(tostring(err):find("5 of 6 records", 1, true), tostring(err))
    end)

    it("keeps the data across a clean stop and restart (same log dir and ports)", function()
        k:create_topic("harness.durable", 3)
        local sent = records(12, 4, "before")
        k:produce_many("harness.durable", sent)
        local st, killed = k:stop(30)
        assert.is_false(killed, "kafka needed SIGKILL to stop:\n" .. k:log_tail(30))
        assert.is_not_nil(st)
        assert.is_false(k:alive())
        k:start()
        io.stderr:write(string.format("# kafka restarted in %.1fs\n", k.startup_seconds))
        assert.equal(3, k:topic_partitions("harness.durable"))
        check_roundtrip(sent, k:consume("harness.durable", #sent, 20), 3)
        -- the log goes on where it was: offsets continue after the restart
        local more = records(6, 4, "after")
        k:produce_many("harness.durable", more)
        local all = {}
        for _, r in ipairs(sent) do all[#all + 1] = r end
        for _, r in ipairs(more) do all[#all + 1] = r end
        check_roundtrip(all, k:consume("harness.durable", #all, 20), 3)
    end)

    it("keeps acknowledged records across a crash (SIGKILL, log recovery)", function()
        local sent = records(6, 3, "crash")
        for _, r in ipairs(sent) do k:produce("harness.keyed", r.key, r.value) end
        local before = k:consume("harness.keyed", 30, 20)
        k:kill()
        assert.is_false(k:alive())
        k:start()
        local after = k:consume("harness.keyed", 30, 20)
        -- (kcat interleaves partitions as they come: compare per partition)
        assert.same(kafka.by_partition(before), kafka.by_partition(after))
    end)
end)
