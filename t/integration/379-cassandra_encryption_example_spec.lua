-- examples/cassandra-encryption end to end: that exact config (moved to
-- free ports through its SHOTOVER_EXAMPLE_* variables), schema and scripts
-- in front of a real Cassandra 5.0: the application's rows in plaintext
-- through shotover and envelopes when Cassandra is read directly; then the
-- README's key rotation: a second KEK with the first kept as old, the
-- re-encryption tool moving every value to the new KEK id, and a shotover
-- with only the new KEK reading everything; and --from-plaintext
-- encrypting a value written before protect.
local h = require("harness")
local cassandra = require("cassandra")

local src = os.getenv("SHOTOVER_SRC") or "."
local dir = src .. "/examples/cassandra-encryption"

describe("examples/cassandra-encryption", function()
    local node, tmp

    local function proxy(env)
        local P = h.free_port()
        local wrap = { "env", "SHOTOVER_EXAMPLE_LISTEN=127.0.0.1:" .. P,
                       "SHOTOVER_EXAMPLE_CASSANDRA=127.0.0.1:" .. node.port }
        for _, e in ipairs(env or {}) do
            wrap[#wrap + 1] = e
        end
        local s = h.shotover({ config = h.read_file(dir .. "/shotover.lua"),
                               wrap = wrap })
        h.wait_until(function()
            local c = h.try_connect(P, 1)
            if c then c:close() end
            return c ~= nil
        end, 15, "shotover to listen on " .. P)
        return s, P
    end

    local function script(path, ...)
        local r = h.run({ cassandra.PYTHON, path, ... }, { timeout = 120 })
        assert.equal(0, r.code, r.stdout .. r.stderr)
        return r.stdout
    end

    setup(function()
        node = cassandra.start{}
        cassandra.python([[
c, s = connect()
for stmt in open(ARGS[0]).read().split(';'):
    if stmt.strip():
        s.execute(stmt)
]], { port = node.port, args = { dir .. "/schema.cql" } })
        tmp = h.tmpdir("encryption-example")
        h.write_file(tmp .. "/new.kek", string.rep("5a", 32))
    end)
    teardown(h.cleanup)

    it("passes shotover check", function()
        -- from any directory: the KEK file by its variable (the default
        -- is a path from the source tree's root)
        local r = h.run({ "env", "SHOTOVER_EXAMPLE_KEK_FILE=" .. dir
                          .. "/demo.kek", h.shotover_bin(), "check", "-c",
                          dir .. "/shotover.lua" }, { timeout = 30 })
        assert.are.equal(0, r.code, r.stdout .. r.stderr)
    end)

    it("walks through the README, rotation included", function()
        -- the demo key is the config's default (a path from the source
        -- tree's root)
        local _, P = proxy({ "SHOTOVER_EXAMPLE_KEK_FILE=" .. dir
                             .. "/demo.kek" })
        local out = script(dir .. "/app.py", "127.0.0.1:" .. P, "write")
        assert.equal("c1 | Ada | 4111 1111 1111 1111 | prefers email\n"
                     .. "c2 | Grace | 5500 0000 0000 0004 | vip customer\n",
                     out)
        local direct = "127.0.0.1:" .. node.port
        local peek = script(dir .. "/peek.py", direct)
        -- version 1, the id "demo-1", a 61-byte (0x003d) wrapped key
        assert.matches("^c1 card_number envelope v1 kek=demo%-1 118 bytes "
                       .. "0x010664656d6f2d31003d01", peek)
        local _, n = peek:gsub("envelope v1 kek=demo%-1", "")
        assert.equal(4, n, peek)
        assert.is_nil(peek:find("NOT AN ENVELOPE", 1, true))
        for _, plain in ipairs({ "4111", "prefers", "vip" }) do
            local hexed = plain:gsub(".", function(c)
                return string.format("%02x", c:byte())
            end)
            assert.is_nil(peek:find(hexed, 1, true), plain)
        end
        -- the README's refusal
        local refused = cassandra.python([[
c, s = connect()
try:
    s.execute("SELECT * FROM shop.customers WHERE card_number = 0x01 "
              "ALLOW FILTERING")
except Exception as e:
    print(type(e).__name__, e)
]], { port = P })
        assert.matches("InvalidRequest .*shop.customers.card_number is "
                       .. "encrypted: a WHERE restriction", refused)

        -- rotation: demo-2 current, demo-1 kept as old
        local _, P2 = proxy({ "SHOTOVER_EXAMPLE_KEK_FILE=" .. tmp
                              .. "/new.kek",
                              "SHOTOVER_EXAMPLE_KEK_ID=demo-2",
                              "SHOTOVER_EXAMPLE_OLD_KEK_ID=demo-1",
                              "SHOTOVER_EXAMPLE_OLD_KEK_FILE=" .. dir
                              .. "/demo.kek" })
        assert.equal(out, script(dir .. "/app.py", "127.0.0.1:" .. P2,
                                 "read"))
        -- a row written before protect covered the table
        cassandra.python([[
c, s = connect()
s.execute("INSERT INTO shop.customers (customer_id, name, card_number) "
          "VALUES ('c0', 'Old', 0x6f6c642d706c61696e)")   # 'old-plain'
]], { port = node.port })
        local tool = src .. "/tools/protect-reencrypt.py"
        local r = script(tool, "--direct", direct, "--proxy",
                         "127.0.0.1:" .. P2, "--table", "shop.customers",
                         "--columns", "card_number,notes", "--kek-id",
                         "demo-2")
        assert.matches("shop.customers.card_number: 2 rewritten, 0 already "
                       .. "under demo-2, 1 not envelopes (left alone), "
                       .. "0 failed", r, 1, true)
        assert.matches("shop.customers.notes: 2 rewritten, 0 already under "
                       .. "demo-2, 0 not envelopes (left alone), 0 failed",
                       r, 1, true)
        r = script(tool, "--direct", direct, "--proxy", "127.0.0.1:" .. P2,
                   "--table", "shop.customers", "--columns",
                   "card_number,notes", "--kek-id", "demo-2",
                   "--from-plaintext")
        assert.matches("card_number: 1 rewritten, 2 already under demo-2",
                       r, 1, true)
        peek = script(dir .. "/peek.py", direct)
        _, n = peek:gsub("envelope v1 kek=demo%-2", "")
        assert.equal(5, n, peek)
        assert.is_nil(peek:find("demo-1", 1, true))
        assert.is_nil(peek:find("NOT AN ENVELOPE", 1, true))

        -- the old KEK retired: everything still reads
        local _, P3 = proxy({ "SHOTOVER_EXAMPLE_KEK_FILE=" .. tmp
                              .. "/new.kek",
                              "SHOTOVER_EXAMPLE_KEK_ID=demo-2" })
        assert.equal(out, script(dir .. "/app.py", "127.0.0.1:" .. P3,
                                 "read"))
        local old = cassandra.python([[
c, s = connect()
print(s.execute("SELECT customer_id, card_number FROM shop.customers "
                "WHERE customer_id = 'c0'").one().card_number.decode())
]], { port = P3 })
        assert.equal("old-plain\n", old)
    end)
end)
