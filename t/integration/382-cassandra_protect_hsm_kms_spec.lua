-- protect with its other key managers, end to end in front of a real
-- Cassandra node and the DataStax driver: pkcs11 with the KEK on a real
-- SoftHSM2 token (the key never leaves it), and aws_kms against the KMS
-- stand-in (t/lib/kms_standin.py: SigV4 checked on every call; no real
-- KMS is reachable here), whose GenerateDataKey a request waits for on
-- libuv's thread pool.  The application reads and writes plaintext; the
-- node holds envelopes naming the KEK; a restarted proxy (new data keys,
-- nothing cached) still opens what the first one wrote.
local h = require "harness"
local cassandra = require "cassandra"
local kms = require "kms"
local softhsm = require "softhsm"

local MODULE = softhsm.MODULE
local PIN = "97531"

local APP = [==[
c, s = connect()
ins = s.prepare("INSERT INTO hk.t (k, secret) VALUES (?, ?)")
for i in range(20):
    s.execute(ins, ('%s%d' % (PREFIX, i), ('%s-secret-%d' % (PREFIX, i)).encode()))
s.execute("INSERT INTO hk.t (k, secret) VALUES ('%slit', 0x6c6974)" % PREFIX)
sel = s.prepare("SELECT secret FROM hk.t WHERE k = ?")
ok = sum(1 for i in range(20)
         if s.execute(sel, ('%s%d' % (PREFIX, i),)).one().secret
            == ('%s-secret-%d' % (PREFIX, i)).encode())
print('plain', ok, s.execute("SELECT secret FROM hk.t WHERE k = '%slit'"
                             % PREFIX).one().secret.decode())
]==]

local DIRECT = [==[
c, s = connect()
ids = set()
for r in s.execute("SELECT k, secret FROM hk.t"):
    if r.k.startswith(PREFIX):
        v = r.secret
        assert b'-secret-' not in v, 'plaintext on the node'
        ids.add(v[2:2 + v[1]].decode())
print('kek', ' '.join(sorted(ids)))
]==]

describe("protect with pkcs11 and aws_kms in front of cassandra", function()
    local node

    local function proxy(km)
        local _, port = cassandra.start_proxy{ remote = node.port,
            workers = 2, chain = string.format([[
            { "protect", columns = { "hk.t.secret" }, key_manager = %s },]],
            km) }
        return port
    end

    local function app(port, prefix)
        return cassandra.python("PREFIX = '" .. prefix .. "'\n" .. APP,
                                { port = port })
    end

    local function direct(prefix)
        return cassandra.python("PREFIX = '" .. prefix .. "'\n" .. DIRECT,
                                { port = node.port })
    end

    setup(function()
        node = cassandra.start{}
        cassandra.python([==[
c, s = connect()
s.execute("CREATE KEYSPACE hk WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE hk.t (k text PRIMARY KEY, secret blob)")
]==], { port = node.port })
    end)
    teardown(h.cleanup)

    it("keeps the KEK on a SoftHSM2 token", function()
        softhsm.token("protect", PIN, "kek-2026")
        local km = string.format('{ "pkcs11", module = %q, token_label = '
            .. '"protect", pin = %q, key_label = "kek-2026" }', MODULE, PIN)
        assert.matches("plain 20 lit\n", app(proxy(km), "hsm"), 1, true)
        assert.matches("kek kek-2026\n", direct("hsm"), 1, true)
        -- another proxy, its own sessions and data keys, nothing cached
        local out = cassandra.python([==[
c, s = connect()
print('read', s.execute("SELECT secret FROM hk.t WHERE k = 'hsm7'")
      .one().secret.decode())
]==], { port = proxy(km) })
        assert.matches("read hsm-secret-7\n", out, 1, true)
    end)

    it("wraps data keys with KMS, waited for off the loop", function()
        local standin = kms.start({ delay_ms = 200 })
        local km = string.format('{ "aws_kms", region = %q, key_id = '
            .. '"alias/shotover", endpoint = %q, ca = %q, access_key_id = %q, '
            .. 'secret_access_key = %q, timeout_ms = 5000 }', kms.REGION,
            standin.endpoint, standin.ca, kms.ACCESS_KEY, kms.SECRET)
        assert.matches("plain 20 lit\n", app(proxy(km), "kms"), 1, true)
        assert.matches("kek " .. kms.KEY1 .. "\n", direct("kms"), 1, true)
        local out = cassandra.python([==[
c, s = connect()
print('read', s.execute("SELECT secret FROM hk.t WHERE k = 'kms3'")
      .one().secret.decode())
]==], { port = proxy(km) })
        assert.matches("read kms-secret-3\n", out, 1, true)
        -- both calls KMS has: a data key made, one opened by the second
        local log = h.read_file(standin.log) or ""
        assert.matches("GenerateDataKey", log, 1, true)
        assert.matches("Decrypt", log, 1, true)
    end)
end)
