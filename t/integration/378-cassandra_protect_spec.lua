-- protect in front of a real Cassandra node, driven by the DataStax
-- driver: the application writes and reads plaintext (literals, prepared
-- statements with skip_metadata, BATCH, USE, protocol v4, v4 LZ4 and v5,
-- the row an INSERT IF NOT EXISTS finds) while the node holds envelopes;
-- misuse is refused with the reason; a value moved to another row fails
-- its read; a redis_cache behind it caches envelopes only; a KEK rotation
-- keeps old values readable and writes new ones under the new KEK id.
local h = require("harness")
local cassandra = require("cassandra")

local KEK1 = string.rep("1f", 32)
local KEK2 = string.rep("2e", 32)

describe("the protect transform in front of cassandra", function()
    local node, P, proxy, dir

    local function start(km)
        return cassandra.start_proxy{ remote = node.port, workers = 2,
            chain = string.format([[
            { "protect", columns = { "pr.t.secret", "pr.c.secret",
                                     "pr.wrong.secret", "pr.wrong2.secret" },
              key_manager = %s },]], km) }
    end

    setup(function()
        node = cassandra.start{}
        cassandra.python([==[
c, s = connect()
s.execute("CREATE KEYSPACE pr WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE pr.t (k text PRIMARY KEY, secret blob, note text)")
s.execute("CREATE TABLE pr.c (a text, b int, secret blob, "
          "PRIMARY KEY ((a, b)))")
s.execute("CREATE TABLE pr.wrong (k text PRIMARY KEY, secret text)")
s.execute("CREATE TABLE pr.wrong2 (k text PRIMARY KEY, secret int)")
]==], { port = node.port })
        dir = h.tmpdir("protect")
        h.write_file(dir .. "/kek1", KEK1 .. "\n")
        h.write_file(dir .. "/kek2", KEK2 .. "\n")
        proxy, P = start(string.format(
            '{ "local", kek_file = %q, kek_id = "v1" }', dir .. "/kek1"))
    end)
    teardown(h.cleanup)

    it("writes ciphertext and reads plaintext, every way a driver does",
       function()
        local out = cassandra.python([==[
from cassandra.query import BatchStatement
c, s = connect()
s.execute("INSERT INTO pr.t (k, secret, note) VALUES ('lit', "
          "0x6c69742d706c61696e, 'n1')")          # 'lit-plain'
ins = s.prepare("INSERT INTO pr.t (k, secret, note) VALUES (?, ?, ?)")
s.execute(ins, ('prep', b'prepared-plain', 'n2'))
s.execute("INSERT INTO pr.t (k, secret) VALUES (%s, %s)",
          ('simple', b'simple-plain'))
upd = s.prepare("UPDATE pr.c SET secret = ? WHERE a = ? AND b = ?")
s.execute(upd, (b'composite-plain', 'x', 7))
b = BatchStatement()
b.add(ins, ('batch1', b'batch-plain-1', 'n3'))
b.add("INSERT INTO pr.t (k, secret) VALUES ('batch2', 0x62322d706c61696e)")
s.execute(b)
for r in sorted(s.execute("SELECT k, secret FROM pr.t"), key=lambda r: r.k):
    print('all', r.k, r.secret.decode())
sel = s.prepare("SELECT secret, note FROM pr.t WHERE k = ?")
for k in ('lit', 'prep', 'simple', 'batch1', 'batch2'):
    r = s.execute(sel, (k,)).one()
    print('one', k, r.secret.decode(), r.note)
print('composite', s.execute("SELECT secret FROM pr.c WHERE a = 'x' AND b = 7")
      .one().secret.decode())
r = s.execute("INSERT INTO pr.t (k, secret) VALUES ('lit', 0x00) "
              "IF NOT EXISTS").one()
print('lwt', r[0], r.secret.decode())
c.shutdown()
cu, su = connect(keyspace='pr')          # unqualified tables, after USE
su.execute(su.prepare("INSERT INTO t (k, secret) VALUES (?, ?)"),
           ('usekey', b'use-plain'))
su.execute("INSERT INTO t (k, secret) VALUES ('uselit', 0x7573652d6c6974)")
for k in ('usekey', 'uselit'):
    print('use', k, su.execute("SELECT secret FROM t WHERE k = %s", (k,))
          .one().secret.decode())
cu.shutdown()
c5, s5 = connect(protocol_version=5)
sel5 = s5.prepare("SELECT k, secret FROM pr.t WHERE k = ?")
print('v5', s5.execute(sel5, ('prep',)).one().secret.decode())
s5.execute(s5.prepare("INSERT INTO pr.t (k, secret) VALUES (?, ?)"),
           ('v5row', b'v5-plain'))
print('v5', s5.execute(sel5, ('v5row',)).one().secret.decode())
c5.shutdown()
c4, s4 = connect(compression='lz4')
s4.execute(s4.prepare("INSERT INTO pr.t (k, secret) VALUES (?, ?)"),
           ('lz4row', b'lz4-plain ' * 50))
v = s4.execute("SELECT secret FROM pr.t WHERE k = 'lz4row'").one().secret
print('lz4', len(v), v[:10].decode())
]==], { port = P, timeout = 120 })
        for _, line in ipairs({
            "all batch1 batch-plain-1", "all batch2 b2-plain",
            "all lit lit-plain", "all prep prepared-plain",
            "all simple simple-plain",
            "one lit lit-plain n1", "one prep prepared-plain n2",
            "one simple simple-plain None", "one batch1 batch-plain-1 n3",
            "one batch2 b2-plain None", "composite composite-plain",
            "lwt False lit-plain", "use usekey use-plain",
            "use uselit use-lit",
            "v5 prepared-plain", "v5 v5-plain", "lz4 500 lz4-plain " }) do
            assert.matches(line .. "\n", out, 1, true)
        end
        -- the node itself holds envelopes: version 1, KEK id v1, no
        -- plaintext
        local direct = cassandra.python([==[
c, s = connect()
for r in s.execute("SELECT k, secret FROM pr.t"):
    v = r.secret
    print('direct', r.k, v[0], v[2:2 + v[1]].decode(), len(v),
          b'plain' in v)
for r in s.execute("SELECT secret FROM pr.c"):
    print('direct composite', r.secret[0], b'plain' in r.secret)
]==], { port = node.port })
        for _, k in ipairs({ "lit", "prep", "simple", "batch1", "batch2",
                             "v5row", "lz4row", "usekey", "uselit" }) do
            assert.matches("direct " .. k .. " 1 v1 %d+ False\n", direct)
        end
        assert.matches("direct composite 1 False", direct, 1, true)
        assert.is_nil(direct:find("True", 1, true))
        assert.is_nil(proxy:log():find("plain", 1, true))
    end)

    it("refuses what cannot work on ciphertext, with the reason", function()
        local out = cassandra.python([==[
c, s = connect()
def attempt(what, q, *args):
    try:
        s.execute(q, *args)
        print(what, 'passed')
    except Exception as e:
        print(what, type(e).__name__, str(e).replace('\n', ' '))
attempt('where', "SELECT k FROM pr.t WHERE secret = 0x01 ALLOW FILTERING")
attempt('nokey', "SELECT secret FROM pr.t")
attempt('text', "INSERT INTO pr.wrong (k, secret) VALUES ('a', 'b')")
attempt('func', "INSERT INTO pr.t (k, secret) VALUES ('a', textAsBlob('b'))")
try:
    s.prepare("SELECT k FROM pr.t WHERE secret = ? ALLOW FILTERING")
    print('prepare passed')
except Exception as e:
    print('prepare', type(e).__name__, str(e).replace('\n', ' '))
try:
    s.prepare("INSERT INTO pr.wrong2 (k, secret) VALUES (?, ?)")
    print('prepare text passed')
except Exception as e:
    print('prepare text', type(e).__name__, str(e).replace('\n', ' '))
]==], { port = P })
        assert.matches("where InvalidRequest .*pr.t.secret is encrypted: a "
                       .. "WHERE restriction on it cannot match", out)
        assert.matches("nokey InvalidRequest .*needs the partition key: "
                       .. "select its column%(s%) %(k%)", out)
        assert.matches("text InvalidRequest .*pr.wrong.secret is configured "
                       .. "as protected but its type is text", out)
        assert.matches("func InvalidRequest .*must be a blob literal", out)
        assert.matches("prepare InvalidRequest .*WHERE restriction", out)
        -- a table first seen in a PREPARE: its schema read then
        assert.matches("prepare text InvalidRequest .*pr.wrong2.secret is "
                       .. "configured as protected but its type is int", out)
        assert.is_nil(out:find("passed", 1, true))
    end)

    it("fails the read of a value moved to another row", function()
        cassandra.python([==[
c, s = connect()
s.execute("INSERT INTO pr.t (k, secret) VALUES ('victim', 0x7365637265742d76)")
s.execute("INSERT INTO pr.t (k, secret) VALUES ('thief', 0x00)")
]==], { port = P })
        -- copied row to row on the node itself, as an attacker with
        -- access to the database could
        cassandra.python([==[
c, s = connect()
v = s.execute("SELECT secret FROM pr.t WHERE k = 'victim'").one().secret
s.execute("UPDATE pr.t SET secret = %s WHERE k = 'thief'", (v,))
]==], { port = node.port })
        local out = cassandra.python([==[
c, s = connect()
print('victim', s.execute("SELECT secret FROM pr.t WHERE k = 'victim'")
      .one().secret.decode())
try:
    r = s.execute("SELECT k, secret FROM pr.t WHERE k = 'thief'").one()
    print('thief read', r.secret)
except Exception as e:
    print('thief', type(e).__name__, str(e).replace('\n', ' '))
]==], { port = P })
        assert.matches("victim secret-v\n", out, 1, true)
        assert.matches("thief ReadFailure .*a value of pr.t.secret: the "
                       .. "value does not authenticate", out)
        assert.is_nil(out:find("thief read", 1, true))
        assert.matches("protect: a value of pr.t.secret: the value does not "
                       .. "authenticate", proxy:log(), 1, true)
        assert.is_nil(proxy:log():find("secret-v", 1, true))
    end)

    it("keeps a redis_cache behind it holding envelopes only", function()
        local redis = h.redis_server()
        local _, PC = cassandra.start_proxy{ remote = node.port,
            chain = string.format([[
            { "protect", columns = { "pr.t.secret" },
              key_manager = { "local", kek_file = %q, kek_id = "v1" } },
            { "redis_cache", ttl_seconds = 60, tables = { "pr.t" },
              cache_chain = { { "redis", remote = "127.0.0.1:%d" } } },]],
            dir .. "/kek1", redis.port) }
        local out = cassandra.python([==[
c, s = connect()
s.execute(s.prepare("INSERT INTO pr.t (k, secret) VALUES (?, ?)"),
          ('cached', b'cache-plain-value'))
sel = s.prepare("SELECT k, secret FROM pr.t WHERE k = ?")
for i in range(3):
    print('read', s.execute(sel, ('cached',)).one().secret.decode())
]==], { port = PC })
        assert.equal(3, select(2, out:gsub("read cache%-plain%-value\n", "")),
                     out)
        -- every cached value, read inside Redis (the keys hold the
        -- partition key's bytes, NULs included: no argv can name them)
        local dump = h.cli(redis.port, "eval", [[
local out = {}
for _, k in ipairs(redis.call('KEYS', '*')) do
  if redis.call('TYPE', k).ok == 'hash' then
    for _, v in ipairs(redis.call('HVALS', k)) do out[#out + 1] = v end
  end
end
return table.concat(out, '|')]], "0")
        assert.truthy(dump:find("cached", 1, true), "nothing cached")
        assert.is_nil(dump:find("cache-plain-value", 1, true))
    end)

    it("after a KEK rotation, reads old values and writes under the new",
       function()
        local _, P2 = start(string.format(
            '{ "local", kek_file = %q, kek_id = "v2", '
            .. 'old_kek_files = { v1 = %q } }', dir .. "/kek2",
            dir .. "/kek1"))
        local out = cassandra.python([==[
c, s = connect()
print('old', s.execute("SELECT secret FROM pr.t WHERE k = 'lit'")
      .one().secret.decode())
s.execute("INSERT INTO pr.t (k, secret) VALUES ('rotated', 0x6e6577)")
print('new', s.execute("SELECT secret FROM pr.t WHERE k = 'rotated'")
      .one().secret.decode())
]==], { port = P2 })
        assert.matches("old lit-plain\nnew new\n", out, 1, true)
        local direct = cassandra.python([==[
c, s = connect()
v = s.execute("SELECT secret FROM pr.t WHERE k = 'rotated'").one().secret
print('kek', v[2:2 + v[1]].decode())
]==], { port = node.port })
        assert.matches("kek v2\n", direct, 1, true)
        -- without the old KEK, an old value is an error, never garbage
        local _, P3 = start(string.format(
            '{ "local", kek_file = %q, kek_id = "v2" }', dir .. "/kek2"))
        out = cassandra.python([==[
c, s = connect()
try:
    print('read', s.execute("SELECT secret FROM pr.t WHERE k = 'lit'").one())
except Exception as e:
    print('old', type(e).__name__, str(e).replace('\n', ' '))
print('new', s.execute("SELECT secret FROM pr.t WHERE k = 'rotated'")
      .one().secret.decode())
]==], { port = P3 })
        assert.matches('old ReadFailure .*no KEK with id "v1"', out)
        assert.matches("new new\n", out, 1, true)
    end)
end)
