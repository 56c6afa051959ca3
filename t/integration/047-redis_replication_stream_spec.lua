-- Replication through shotover: SYNC and PSYNC turn the client's dedicated
-- backend connection into a raw byte stream from Redis to the client (the
-- "\n" keep-alives, "$<len>\r\n<rdb>" with no CRLF after it or
-- "$EOF:<mark>\r\n<rdb><mark>", then the command stream), relayed exactly as
-- it arrives, while what the client sends (REPLCONF ACK ...) still goes
-- through the chain.  Every check compares the proxy with what redis-server
-- sends a client connected to it directly:
--
--   * redis-cli --rdb (disk-based and diskless sync) writes the same RDB;
--   * a raw SYNC / PSYNC ? -1 reader gets the same RDB and then the same
--     command stream for writes made afterwards;
--   * a real redis-server replica and redis-cli --replica work through it;
--   * a reader that does not read is held back (bounded memory), a reader
--     that leaves mid-transfer leaves nothing behind.
--
-- Two RDBs of the same keyspace differ in their header aux fields (ctime,
-- used-mem, repl-id, repl-offset, ...), so "the same RDB" is: the bytes from
-- the first opcode after the aux fields through the EOF opcode (0xFF), the
-- 8-byte checksum left out.
--
-- SHOTOVER_REPL_DIRECT=1 runs every step against redis-server itself (the
-- "proxy" port is the master's): that checks the test logic, every test must
-- pass so.
local h = require("harness")
local ffi = require("ffi")
local bit = require("bit")

local DIRECT = os.getenv("SHOTOVER_REPL_DIRECT") == "1"
local OK = h.status("OK")

---------------------------------------------------------------------------
-- helpers
---------------------------------------------------------------------------

local function q(s, n) return string.format("%q", s:sub(1, n or 120)) end

-- error unless a == b; for big strings: say where they first differ
local function same_bytes(a, b, what)
    if a == b then return end
    local n, i, step = math.min(#a, #b), 1, 4096
    while i <= n and a:sub(i, i + step - 1) == b:sub(i, i + step - 1) do
        i = i + step
    end
    while i <= n and a:byte(i) == b:byte(i) do i = i + 1 end
    error(string.format("%s differ: %d bytes vs %d, first difference at byte %d: %s vs %s",
        what, #a, #b, i, q(a:sub(i), 40), q(b:sub(i), 40)), 2)
end

local function no_errors(replies, what)
    for i, v in ipairs(replies) do
        if type(v) == "table" and v.err then
            error(string.format("%s: reply %d is an error: %s", what, i, v.err), 2)
        end
    end
end

-- INFO <section> of the redis on port as { field = value }
local function info(port, section)
    local out = h.cli(port, "info", section)
    local t = {}
    for k, v in out:gmatch("([%w_]+):([^\r\n]*)") do t[k] = v end
    return t, out
end

-- the replicas a master lists in INFO replication: { ip, port, state, offset }
local function replicas_of(port)
    local t = info(port, "replication")
    local list = {}
    for k, v in pairs(t) do
        if k:match("^slave%d+$") then
            local e = {}
            for f, x in v:gmatch("(%w+)=([^,]*)") do e[f] = x end
            list[#list + 1] = e
        end
    end
    return list
end

local function replica_states(port)
    local s = {}
    for _, e in ipairs(replicas_of(port)) do s[#s + 1] = e.state end
    table.sort(s)
    return table.concat(s, ",")
end

-- the master's CLIENT LIST entries of replicas (flag S)
local function replica_clients(port)
    local list = {}
    for _, e in ipairs(h.client_list(port)) do
        if (e.flags or ""):find("S", 1, true) then list[#list + 1] = e end
    end
    return list
end

-- every DB's main and expires hash tables done rehashing: two RDBs of an
-- unchanged keyspace then list the keys in the same order
local function settle(port)
    h.wait_until(function()
        local ks = h.cli(port, "info", "keyspace")
        for db in ks:gmatch("db(%d+):keys=") do
            local st = h.cli(port, "debug", "htstats", db)
            if st:find("rehashing", 1, true) then return false, "db " .. db end
        end
        return true
    end, 20, "the keyspace's hash tables to finish rehashing", 0.1)
end

-- local port of a Conn (the harness declared getsockname and the sockaddr)
local function local_port(c)
    local sa = ffi.new("struct sh_t_sockaddr_in")
    local len = ffi.new("uint32_t[1]", ffi.sizeof(sa))
    assert(ffi.C.getsockname(c.fd, sa, len) == 0, "getsockname")
    return sa.port[0] * 256 + sa.port[1]
end

-- a small fixed receive buffer (no autotuning up to tcp_rmem's max), so a
-- client that does not read holds little in its kernel buffer
local function small_rcvbuf(c, bytes)
    local v = ffi.new("int[1]", bytes)
    assert(ffi.C.setsockopt(c.fd, 1, 8, v, 4) == 0, "setsockopt SO_RCVBUF") -- SOL_SOCKET, SO_RCVBUF
end

-- established IPv4 sockets with their queues (bytes not yet read: rx)
local function tcp_sockets()
    local out = {}
    for line in (h.read_file("/proc/net/tcp") or ""):gmatch("[^\n]+") do
        local lp, rp, st, tx, rx = line:match(
            "^%s*%d+: %x+:(%x+) %x+:(%x+) (%x+) (%x+):(%x+)")
        if lp and st == "01" then
            out[#out + 1] = { lport = tonumber(lp, 16), rport = tonumber(rp, 16),
                              tx = tonumber(tx, 16), rx = tonumber(rx, 16) }
        end
    end
    return out
end

-- SYNC readers are closed after each test, passed or not, and the master
-- given a moment to drop them, so that one failure does not leave a replica
-- behind for the next test (a test that checks the dropping does it itself)
local open_readers = {}
local function reader(port)
    local c = h.connect(port)
    open_readers[#open_readers + 1] = c
    return c
end

local function close_readers(master_port)
    if #open_readers == 0 then return end
    for i = #open_readers, 1, -1 do
        open_readers[i]:close()
        open_readers[i] = nil
    end
    pcall(h.wait_until, function() return #replica_clients(master_port) == 0 end,
          10, "the readers to be gone")
end

---------------------------------------------------------------------------
-- reading what a master sends a replica
---------------------------------------------------------------------------

local function wait_more(c, deadline, what)
    if c.eof then
        error(string.format("connection closed%s while reading %s (buffered %d bytes: %s)",
            c.reset and (" (" .. c.reset .. ")") or "", what, c.nbuf, q(c:buffer())), 3)
    end
    local left = deadline - h.now()
    if left <= 0 then
        error(string.format("timed out reading %s (buffered %d bytes: %s)",
            what, c.nbuf, q(c:buffer())), 3)
    end
    c:fill(math.min(left, 1))
end

-- the next line (without CRLF), after any "\n" keep-alives; the line and
-- how many keep-alives came before it
local function read_line(c, deadline, what)
    local skipped = 0
    while true do
        local b = c:buffer()
        local i = 1
        while b:byte(i) == 10 do i = i + 1 end
        if i > 1 then
            c:consume(i - 1)
            skipped = skipped + i - 1
            b = c:buffer()
        end
        local nl = b:find("\r\n", 1, true)
        if nl then return c:consume(nl + 1):sub(1, -3), skipped end
        wait_more(c, deadline, what)
    end
end

-- the RDB payload: "$<len>\r\n" and len bytes, or "$EOF:<40-byte mark>\r\n"
-- and the bytes up to the mark.  Returns the RDB and { form = "len"|"eof",
-- keepalives = n, header = line }.  What follows stays buffered in c.
local function read_rdb(c, timeout)
    local deadline = h.now() + (timeout or 30)
    local line, kas = read_line(c, deadline, "the RDB header")
    local info_ = { keepalives = kas, header = line }
    local mark = line:match("^%$EOF:(" .. string.rep(".", 40) .. ")$")
    if mark then
        info_.form = "eof"
        local from = 1
        while true do
            local b = c:buffer()
            local s = b:find(mark, from, true)
            if s then
                local rdb = c:consume(s - 1)
                c:consume(#mark)
                return rdb, info_
            end
            from = math.max(1, #b - #mark)
            wait_more(c, deadline, "a diskless RDB")
        end
    end
    local len = tonumber(line:match("^%$(%d+)$") or "")
    if not len then
        error("not an RDB header after SYNC: " .. q(line .. "\r\n" .. c:buffer()), 2)
    end
    info_.form = "len"
    while c.nbuf < len do wait_more(c, deadline, "an RDB of " .. len .. " bytes") end
    return c:consume(len), info_
end

-- RDB string encoding (length prefix, or an int / LZF special encoding)
local function rdb_len(s, pos)
    local b = s:byte(pos)
    if not b then error("RDB truncated at byte " .. pos) end
    local kind = bit.rshift(b, 6)
    if kind == 0 then return bit.band(b, 0x3f), pos + 1 end
    if kind == 1 then return bit.band(b, 0x3f) * 256 + s:byte(pos + 1), pos + 2 end
    if b == 0x80 or b == 0x81 then
        local n, v = (b == 0x80) and 4 or 8, 0
        for i = 1, n do v = v * 256 + s:byte(pos + i) end
        return v, pos + 1 + n
    end
    if kind == 3 then return nil, pos + 1, bit.band(b, 0x3f) end
    error(string.format("bad RDB length byte 0x%02x at %d", b, pos))
end

local function rdb_string(s, pos)
    local len, p, enc = rdb_len(s, pos)
    if len then return s:sub(p, p + len - 1), p + len end
    if enc <= 2 then
        local n = ({ [0] = 1, 2, 4 })[enc]
        local v = 0
        for i = n, 1, -1 do v = v * 256 + s:byte(p + i - 1) end
        if v >= 2 ^ (8 * n - 1) then v = v - 2 ^ (8 * n) end
        return tostring(v), p + n
    end
    if enc == 3 then
        local clen
        clen, p = rdb_len(s, p)
        local _
        _, p = rdb_len(s, p)
        return "<lzf>", p + clen
    end
    error("bad RDB string encoding " .. enc .. " at byte " .. pos)
end

-- an RDB's keyspace part (from the first opcode after the header's aux
-- fields through the EOF opcode, without the checksum) and its aux fields
local function rdb_split(rdb, what)
    if #rdb < 18 or rdb:sub(1, 5) ~= "REDIS" then
        error(what .. ": not an RDB: " .. q(rdb, 60), 2)
    end
    local aux, pos = {}, 10
    while rdb:byte(pos) == 0xFA do
        local k, v
        k, pos = rdb_string(rdb, pos + 1)
        v, pos = rdb_string(rdb, pos)
        aux[k] = v
    end
    if rdb:byte(#rdb - 8) ~= 0xFF then
        error(what .. ": no EOF opcode before the checksum: " .. q(rdb:sub(-20)), 2)
    end
    return rdb:sub(pos, #rdb - 8), aux
end

-- read c until `needle` (plain) arrived; the whole buffer (kept in c)
local function read_until(c, needle, timeout, what)
    local deadline = h.now() + (timeout or 15)
    while not c:buffer():find(needle, 1, true) do
        wait_more(c, deadline, what or q(needle))
    end
    return c:buffer()
end

-- the part of a command stream from `first` through `last` (raw commands)
local function region(stream, first, last, what)
    local a = stream:find(first, 1, true)
    local _, e = stream:find(last, a or 1, true)
    if not (a and e) then error(what .. ": markers not found in " .. q(stream, 400), 2) end
    return stream:sub(a, e)
end

-- commands as lists of strings, PINGs left out
local function commands(raw)
    local out = {}
    for _, v in ipairs(h.resp_parse_all(raw)) do
        assert.is_table(v)
        if not (#v == 1 and v[1]:upper() == "PING") then out[#out + 1] = v end
    end
    return out
end

---------------------------------------------------------------------------
-- data
---------------------------------------------------------------------------

-- n pseudo-random bytes (an LCG: the same every run)
local function noise(n, seed)
    local buf = ffi.new("uint8_t[?]", n)
    local x = seed or 12345
    for i = 0, n - 1 do
        x = (x * 69069 + 1) % 4294967296
        buf[i] = bit.band(bit.rshift(x, 16), 0xff)
    end
    return ffi.string(buf, n)
end

-- a few hundred keys of every type, with TTLs, a ~1 MiB value, functions,
-- in several DBs
local function populate(port)
    local cmds = {}
    local function add(...) cmds[#cmds + 1] = h.resp_command(...) end
    local function addl(list) cmds[#cmds + 1] = h.resp_command(list) end
    add("SELECT", 0)
    for i = 1, 120 do add("SET", "str:" .. i, "value-" .. i .. string.rep("x", i % 50)) end
    for i = 1, 60 do add("SET", "int:" .. i, i * 1000 - 7) end
    add("SET", "bin", "a\0b\r\nc\255\n$3\r\n")
    add("SET", "big:noise", noise(1024 * 1024))
    add("SET", "big:text", string.rep("compressible text ", 60000))
    add("RPUSH", "list:small", "a", "b", "c", 1, 2, 3)
    local l = { "RPUSH", "list:big" }
    for i = 1, 3000 do l[#l + 1] = "item-" .. i end
    addl(l)
    add("HSET", "hash:small", "f1", "v1", "f2", 2, "f3", "")
    local hh = { "HSET", "hash:big" }
    for i = 1, 600 do hh[#hh + 1] = "field-" .. i; hh[#hh + 1] = "v" .. i * 3 end
    addl(hh)
    local si = { "SADD", "set:int" }
    for i = 1, 200 do si[#si + 1] = i * 13 end
    addl(si)
    local ss = { "SADD", "set:str" }
    for i = 1, 300 do ss[#ss + 1] = "member-" .. i end
    addl(ss)
    add("ZADD", "zset:small", 1, "a", 2.5, "b", -3, "c")
    local z = { "ZADD", "zset:big" }
    for i = 1, 400 do z[#z + 1] = i * 0.5; z[#z + 1] = "m" .. i end
    addl(z)
    for i = 1, 50 do add("XADD", "stream:1", "1-" .. i, "field", "v" .. i, "n", i) end
    add("XGROUP", "CREATE", "stream:1", "g1", "0")
    add("XREADGROUP", "GROUP", "g1", "alice", "COUNT", 10, "STREAMS", "stream:1", ">")
    add("PFADD", "hll", "a", "b", "c", "d")
    add("GEOADD", "geo", "13.361389", "38.115556", "Palermo", "15.087269", "37.502669", "Catania")
    for i = 1, 40 do add("SET", "ttl:" .. i, "t" .. i, "EX", 100000 + i) end
    add("HSET", "ttl:hash", "a", 1)
    add("PEXPIREAT", "ttl:hash", "4102444800000")
    add("FUNCTION", "LOAD", "#!lua name=replspec\n"
        .. "redis.register_function('replspec_one', function() return 1 end)")
    for _, db in ipairs({ 1, 2, 5, 9, 15 }) do
        add("SELECT", db)
        for i = 1, 30 do add("SET", "db" .. db .. ":" .. i, db * 100 + i) end
        add("RPUSH", "db" .. db .. ":list", "x", "y")
        add("HSET", "db" .. db .. ":hash", "k", "v")
        add("SET", "db" .. db .. ":ttl", "t", "EX", 200000)
    end
    local c = h.connect(port)
    assert(c:send(table.concat(cmds), 60))
    no_errors(c:read_replies(#cmds, 60), "populate")
    c:close()
end

-- every key of the redis on port, sorted: { db, key, description } where
-- the description has its type, encoding, DEBUG DIGEST-VALUE, PEXPIRETIME
-- and DUMP -- but for the hashtable encoding, whose DUMP follows the order
-- of a dict, which depends on the server's random hash seed
local function keyspace_of(port)
    local c = h.connect(port)
    local out = {}
    for db in c:cmd("INFO", "keyspace"):gmatch("db(%d+):keys=") do
        assert.same(OK, c:cmd("SELECT", db))
        local keys = c:cmd("KEYS", "*")
        table.sort(keys)
        local p = {}
        for _, k in ipairs(keys) do
            p[#p + 1] = h.resp_command("TYPE", k) .. h.resp_command("OBJECT", "ENCODING", k)
                .. h.resp_command("DEBUG", "DIGEST-VALUE", k)
                .. h.resp_command("PEXPIRETIME", k) .. h.resp_command("DUMP", k)
        end
        assert(c:send(table.concat(p)))
        local r = c:read_replies(5 * #keys, 60)
        no_errors(r, "describing the keys")
        for i, k in ipairs(keys) do
            local j = 5 * (i - 1)
            local enc = r[j + 2]
            out[#out + 1] = { db, k, string.format("%s %s digest %s expires %s dump %s",
                r[j + 1].status, enc, r[j + 3][1].status, r[j + 4],
                enc == "hashtable" and "-" or r[j + 5]) }
        end
    end
    c:close()
    return out
end

local function same_keyspace(a, b, what)
    for i = 1, math.max(#a, #b) do
        local x, y = a[i] or {}, b[i] or {}
        if x[1] ~= y[1] or x[2] ~= y[2] or x[3] ~= y[3] then
            error(string.format("%s: key %d differs: db %s %s %s vs db %s %s %s",
                what, i, tostring(x[1]), tostring(x[2]), q(tostring(x[3]), 100),
                tostring(y[1]), tostring(y[2]), q(tostring(y[3]), 100)), 2)
        end
    end
end

-- a fresh redis-server that loads the RDB file at path
local function load_rdb(path)
    local dir = h.tmpdir("load")
    h.write_file(dir .. "/dump.rdb", assert(h.read_file(path)))
    return h.redis_server({ args = { "--dir", dir, "--dbfilename", "dump.rdb",
                                     "--enable-debug-command", "yes" } })
end

local function digest(port) return h.cli(port, "debug", "digest") end

---------------------------------------------------------------------------
-- setups
---------------------------------------------------------------------------

-- a master (redis args) and a shotover in front of it
local function start(args, source)
    local r = h.redis_server({ args = args })
    local port = h.free_port()
    local s = h.shotover({ config = h.config({ listen = port, remote = r.port,
        workers = 1, source = source }), port = port })
    return r, s, DIRECT and r.port or port
end

-- writes made through the proxy P (and one straight to the master R)
-- after readers attached; the raw first and last command and the commands
-- the stream must hold from the first through the last
local function write_marked(P, R, tag)
    local first = { "SET", tag .. ":begin", "1" }
    local last = { "SET", tag .. ":end", "1" }
    local c = h.connect(P)
    local function run(conn, ...)
        local v = conn:cmd(...)
        if type(v) == "table" and v.err then error(tag .. ": " .. v.err, 3) end
    end
    run(c, unpack(first))
    run(c, "SET", tag .. ":k", "bin\r\n\0value")
    run(c, "INCR", tag .. ":n")
    run(c, "RPUSH", tag .. ":l", "a", "b")
    run(c, "HSET", tag .. ":h", "f", "v")
    local pinned = h.connect(P)
    run(pinned, "SELECT", "5")
    run(pinned, "SET", tag .. ":db5", "x")
    run(h.connect(R), "SET", tag .. ":direct", "d")
    run(c, unpack(last))
    c:close(); pinned:close()
    return h.resp_command(first), h.resp_command(last), {
        first,
        { "SET", tag .. ":k", "bin\r\n\0value" },
        { "INCR", tag .. ":n" },
        { "RPUSH", tag .. ":l", "a", "b" },
        { "HSET", tag .. ":h", "f", "v" },
        { "SELECT", "5" },
        { "SET", tag .. ":db5", "x" },
        { "SELECT", "0" },
        { "SET", tag .. ":direct", "d" },
        last,
    }
end

---------------------------------------------------------------------------
-- RDB and command stream, compared with a direct replica
---------------------------------------------------------------------------

describe("replication through shotover, a keyspace of every type", function()
    local R, S, P

    setup(function()
        local r
        r, S, P = start({ "--enable-debug-command", "yes",
                          "--repl-diskless-sync-delay", "0",
                          "--repl-ping-replica-period", "3600" })
        R = r.port
        populate(R)
        settle(R)
    end)
    after_each(function() close_readers(R) end)
    teardown(h.cleanup)

    it("redis-cli --rdb through the proxy exits 0 and writes the same RDB as directly, disk-based and diskless", function()
        local master_digest = digest(R)
        for _, diskless in ipairs({ "no", "yes" }) do
            assert.equal("OK", h.cli(R, "config", "set", "repl-diskless-sync", diskless))
            settle(R)
            local files, outs = {}, {}
            for i, port in ipairs({ P, R }) do
                files[i] = h.tmpfile("cli-" .. (i == 1 and "proxy" or "direct") .. ".rdb")
                local r = h.run({ "redis-cli", "-p", port, "--rdb", files[i] }, { timeout = 30 })
                outs[i] = r.stdout .. r.stderr
                assert.equal(0, r.code, string.format("redis-cli -p %d --rdb (diskless %s): exit %s, timed out %s: %s",
                    port, diskless, tostring(r.code), tostring(r.timed_out), outs[i]))
                assert.truthy(outs[i]:find("Transfer finished with success", 1, true), outs[i])
                -- diskless sync is the $EOF:<mark> form
                assert.equal(diskless == "yes", outs[i]:find("EOF marker", 1, true) ~= nil, outs[i])
            end
            local kp, auxp = rdb_split(h.read_file(files[1]), "the RDB through the proxy")
            local kd, auxd = rdb_split(h.read_file(files[2]), "the direct RDB")
            assert.equal(auxd["redis-ver"], auxp["redis-ver"])
            assert.truthy(#kd > 1024 * 1024, "the keyspace part is only " .. #kd .. " bytes")
            same_bytes(kp, kd, "keyspace parts of the RDBs (diskless " .. diskless .. ")")
            -- and both load into a redis-server as the master's keyspace
            local lp, ld = load_rdb(files[1]), load_rdb(files[2])
            assert.equal(master_digest, digest(lp.port))
            assert.equal(master_digest, digest(ld.port))
            local ksp, ksd = keyspace_of(lp.port), keyspace_of(ld.port)
            assert.truthy(#ksd > 300, #ksd .. " keys")
            same_keyspace(ksp, ksd, "keys loaded from the two RDBs")
            assert.equal("1", h.cli(lp.port, "fcall", "replspec_one", "0"))
            lp:stop(); ld:stop()
        end
    end)

    -- one SYNC reader through the proxy and one direct, both raw; `eof`:
    -- REPLCONF capa eof and diskless sync ($EOF:<mark>), after which the
    -- master waits for a REPLCONF ACK before it streams commands
    local function sync_pair(eof, tag)
        assert.equal("OK", h.cli(R, "config", "set", "repl-diskless-sync", eof and "yes" or "no"))
        settle(R)
        local readers = { reader(P), reader(R) }
        local rdbs, infos = {}, {}
        for _, c in ipairs(readers) do
            if eof then assert.same(OK, c:cmd("REPLCONF", "capa", "eof")) end
            assert(c:send("SYNC\r\n"))
        end
        for i, c in ipairs(readers) do rdbs[i], infos[i] = read_rdb(c, 30) end
        assert.equal(eof and "eof" or "len", infos[1].form, infos[1].header)
        assert.equal(infos[2].form, infos[1].form)
        local kp, auxp = rdb_split(rdbs[1], "the RDB through the proxy")
        local kd, auxd = rdb_split(rdbs[2], "the direct RDB")
        assert.equal(auxd["repl-id"], auxp["repl-id"])
        same_bytes(kp, kd, "keyspace parts of the RDBs")
        if eof then
            for _, c in ipairs(readers) do assert(c:send(h.resp_command("REPLCONF", "ACK", "0"))) end
        end
        -- the command stream: writes made now arrive on both, the same bytes
        local first, last, expect = write_marked(P, R, tag)
        local streams = {}
        for i, c in ipairs(readers) do
            streams[i] = read_until(c, last, 15, "the command stream up to " .. q(last))
        end
        -- all of it RESP commands, from its first byte
        for i = 1, 2 do
            local _, e = streams[i]:find(last, 1, true)
            assert.is_table(h.resp_parse_all(streams[i]:sub(1, e)))
        end
        local rp = region(streams[1], first, last, "stream through the proxy")
        local rd = region(streams[2], first, last, "direct stream")
        same_bytes(rp, rd, "command streams")
        assert.same(expect, commands(rp))
        for _, c in ipairs(readers) do c:close() end
    end

    it("relays a raw SYNC: the RDB ($<len>, no CRLF after it), then written keys as the same RESP commands as directly", function()
        sync_pair(false, "r2disk")
    end)

    it("relays a raw diskless SYNC ($EOF:<mark>) and passes the client's REPLCONF ACK that starts the stream", function()
        sync_pair(true, "r2eof")
    end)

    it("relays PSYNC ? -1: +FULLRESYNC, the RDB, the stream; REPLCONF listening-port and ACK reach the master", function()
        assert.equal("OK", h.cli(R, "config", "set", "repl-diskless-sync", "no"))
        settle(R)
        local readers = { reader(P), reader(R) }
        local lports = { "7001", "7002" }
        local ids, offs, rdbs = {}, {}, {}
        for i, c in ipairs(readers) do
            assert.same(OK, c:cmd("REPLCONF", "listening-port", lports[i]))
            assert(c:send(h.resp_command("PSYNC", "?", "-1")))
        end
        for i, c in ipairs(readers) do
            local line = read_line(c, h.now() + 15, "+FULLRESYNC")
            ids[i], offs[i] = line:match("^%+FULLRESYNC (%x+) (%d+)$")
            assert.truthy(ids[i], "PSYNC reply " .. q(line))
            offs[i] = tonumber(offs[i])
            rdbs[i] = read_rdb(c, 30)
        end
        assert.equal(ids[2], ids[1])
        assert.equal(40, #ids[1])
        local kp, auxp = rdb_split(rdbs[1], "the RDB through the proxy")
        local kd = rdb_split(rdbs[2], "the direct RDB")
        assert.equal(ids[1], auxp["repl-id"])
        same_bytes(kp, kd, "keyspace parts of the RDBs")
        local first, last, expect = write_marked(P, R, "r3")
        local streams = {}
        for i, c in ipairs(readers) do streams[i] = read_until(c, last, 15) end
        local rp = region(streams[1], first, last, "stream through the proxy")
        same_bytes(rp, region(streams[2], first, last, "direct stream"), "command streams")
        assert.same(expect, commands(rp))
        -- the master sees the ACKs each sends: its offset plus what it read
        local acks = {}
        for i, c in ipairs(readers) do
            acks[i] = tostring(offs[i] + #streams[i])
            assert(c:send(h.resp_command("REPLCONF", "ACK", acks[i])))
        end
        h.wait_until(function()
            local got = {}
            for _, e in ipairs(replicas_of(R)) do got[e.port] = e.offset end
            return got[lports[1]] == acks[1] and got[lports[2]] == acks[2],
                string.format("master lists %s", h.cli(R, "info", "replication"))
        end, 10, "the master to see both replicas' ACK offsets")
        for _, c in ipairs(readers) do c:close() end
    end)

    it("runs redis-cli --replica through the proxy: it prints the commands written afterwards, as directly", function()
        assert.equal("OK", h.cli(R, "config", "set", "repl-diskless-sync", "yes"))
        local outs, procs = {}, {}
        for i, port in ipairs({ P, R }) do
            outs[i] = h.tmpfile("replica-" .. i .. ".out")
            procs[i] = h.spawn({ "redis-cli", "-p", tostring(port), "--replica" },
                               { stdout = outs[i], stderr = "stdout" })
        end
        for i = 1, 2 do
            h.wait_until(function()
                local o = h.read_file(outs[i]) or ""
                return o:find("Logging commands from master", 1, true) ~= nil, o
            end, 20, "redis-cli --replica " .. (i == 1 and "through the proxy" or "direct") .. " to sync")
        end
        write_marked(P, R, "r5")
        local texts = {}
        for i = 1, 2 do
            texts[i] = h.wait_until(function()
                local o = h.read_file(outs[i]) or ""
                return o:find('"r5:end"', 1, true) and o, o
            end, 15, "redis-cli --replica to print the last write")
        end
        local function part(t)
            local a = t:find('"SET","r5:begin","1"', 1, true)
            local _, e = t:find('"SET","r5:end","1"\n', a or 1, true)
            assert.truthy(a and e, t)
            return t:sub(a, e)
        end
        assert.equal(part(texts[2]), part(texts[1]))
        assert.truthy(part(texts[1]):find('"SELECT","5"\n"SET","r5:db5","x"\n', 1, true), texts[1])
        for i = 1, 2 do assert.is_true(procs[i]:alive(), h.read_file(outs[i])) end
        for i = 1, 2 do procs[i]:stop(3) end
        if not DIRECT then assert.is_true(S:alive()) end
    end)
end)

---------------------------------------------------------------------------
-- a real replica
---------------------------------------------------------------------------

describe("a redis-server replica of the proxy", function()
    local M, S, P, R

    setup(function()
        M, S, P = start({ "--enable-debug-command", "yes", "--repl-diskless-sync-delay", "0" })
        R = M.port
        populate(R)
    end)
    teardown(h.cleanup)

    it("syncs, follows writes made through the proxy and directly, and loses its link at once when the master dies", function()
        local rep = h.redis_server({ args = { "--replicaof", "127.0.0.1", tostring(P),
                                              "--enable-debug-command", "yes" } })
        local RP = rep.port
        h.wait_until(function()
            local t, text = info(RP, "replication")
            return t.master_link_status == "up", text
        end, 30, "the replica's master_link_status to be up")
        -- the whole keyspace arrived
        h.wait_until(function() return digest(R) == digest(RP) end, 5,
            "the replica's keyspace to equal the master's")
        local reps = replicas_of(R)
        assert.equal(1, #reps)
        assert.equal(tostring(RP), reps[1].port)
        assert.equal("online", reps[1].state)
        assert.equal("1", info(R, "replication").connected_slaves)
        -- new writes, through the proxy and straight to the master
        local c = h.connect(P)
        for i = 1, 50 do assert.same(OK, c:cmd("SET", "r4:p" .. i, "v" .. i)) end
        local pinned = h.connect(P)
        assert.same(OK, pinned:cmd("SELECT", "7"))
        assert.same(OK, pinned:cmd("SET", "r4:db7", "seven"))
        assert.same(OK, h.connect(R):cmd("SET", "r4:direct", "d"))
        assert.same(OK, c:cmd("SET", "r4:big", noise(300000, 7)))
        h.wait_until(function()
            return h.cli(RP, "get", "r4:p50") == "v50" and h.cli(RP, "get", "r4:direct") == "d"
                and h.cli(RP, "-n", "7", "get", "r4:db7") == "seven"
        end, 10, "the writes to reach the replica")
        h.wait_until(function() return digest(R) == digest(RP) end, 10,
            "the replica's keyspace to equal the master's")
        -- its REPLCONF ACKs (sent through the chain) reach the master
        h.wait_until(function()
            local t = info(R, "replication")
            local e = replicas_of(R)[1]
            return e and e.offset == t.master_repl_offset, (e and e.offset or "?") .. " vs " .. t.master_repl_offset
        end, 10, "the master to see the replica's ACK of its whole stream")
        -- the master dies: the replica notices at once (not after repl-timeout, 60 s)
        M:stop(h.SIGKILL)
        local t0 = h.now()
        h.wait_until(function()
            local t, text = info(RP, "replication")
            return t.master_link_status == "down", text
        end, 10, "the replica's master_link_status to go down")
        assert.is_true(h.now() - t0 < 10)
        assert.equal("v50", h.cli(RP, "get", "r4:p50"))
        if not DIRECT then
            assert.is_true(S:alive(), "shotover died")
            local pc = h.connect(P)
            local reply = pc:cmd("PING")
            -- an error for the dead backend is fine: an answer is what counts
            assert.truthy(reply.status == "PONG" or reply.err, tostring(reply))
            assert.is_true(S:alive(), "shotover died")
        end
    end)
end)

---------------------------------------------------------------------------
-- readers that do not read, and readers that leave
---------------------------------------------------------------------------

describe("SYNC of a large dataset through the proxy", function()
    local M, S, P, R
    local NKEYS, SIZE = 128, 1024 * 1024       -- an RDB of 128 MiB

    setup(function()
        M, S, P = start({ "--enable-debug-command", "yes", "--rdbcompression", "no",
                          "--repl-diskless-sync", "no",
                          "--repl-ping-replica-period", "3600" },
                        "max_write_queue = 65536,")
        R = M.port
        assert.equal("OK", h.cli(R, "debug", "populate", NKEYS, "big", SIZE, { timeout = 60 }))
        settle(R)
    end)
    after_each(function() close_readers(R) end)
    teardown(h.cleanup)

    it("holds back a reader that does not read (bounded memory); once it reads it gets the whole RDB and the stream", function()
        local rss0 = S:status_kb("VmRSS")
        local c = reader(P)
        small_rcvbuf(c, 65536)
        local lp = local_port(c)
        assert(c:send("SYNC\r\n"))
        h.wait_until(function()
            return replica_states(R) == "send_bulk", replica_states(R)
        end, 30, "the master to send the RDB (state send_bulk)")
        -- nothing moves any more: the reader's receive queue, shotover's
        -- unread bytes from the master and its RSS hold still
        local last, same, got = nil, 0, nil
        h.wait_until(function()
            local crx, brx = 0, 0
            for _, s in ipairs(tcp_sockets()) do
                if s.lport == lp then crx = s.rx
                elseif not DIRECT and s.rport == R then brx = brx + s.rx end
            end
            local rss = S:status_kb("VmRSS")
            local now = string.format("reader rx %d, shotover rx from master %d, RSS %d MiB",
                crx, brx, math.floor(rss / 1024))
            if now == last and crx > 0 then same = same + 1 else same = 0 end
            last = now
            got = { crx = crx, brx = brx, rss = rss }
            return same >= 5, now
        end, 30, "the transfer to stall", 0.2)
        -- the master is still sending: most of the RDB has not left it
        assert.equal("send_bulk", replica_states(R))
        if not DIRECT then
            local grown = got.rss - rss0
            assert.is_true(grown < 32 * 1024, string.format(
                "shotover's RSS grew by %d kB while the reader read nothing (RDB %d MiB)",
                grown, NKEYS * SIZE / 1048576))
            assert.is_true(got.brx > 0, "shotover kept reading from the master: " .. last)
        end
        -- now read it all
        local kp
        do
            local rdb, inf = read_rdb(c, 120)
            assert.equal("len", inf.form)
            assert.is_true(#rdb > NKEYS * SIZE, #rdb .. " bytes")
            kp = rdb_split(rdb, "the RDB through the proxy")
        end
        h.wait_until(function() return replica_states(R) == "online", replica_states(R) end,
            20, "the master to see the sync done")
        -- the same keyspace as a direct reader gets
        local d = reader(R)
        assert(d:send("SYNC\r\n"))
        local kd = rdb_split((read_rdb(d, 120)), "the direct RDB")
        same_bytes(kp, kd, "keyspace parts of the RDBs")
        -- and the command stream follows on both
        local p = h.connect(P)
        assert.same(OK, p:cmd("SET", "r6:after", "yes"))
        local set = h.resp_command("SET", "r6:after", "yes")
        read_until(c, set, 10)
        read_until(d, set, 10)
        c:close(); d:close()
        h.wait_until(function() return #replica_clients(R) == 0, #replica_clients(R) end,
            10, "both readers gone from the master")
        assert.equal(1, p:cmd("DEL", "r6:after"))
    end)

    -- a reader that leaves: the backend connection for it goes, the proxy
    -- and its other clients go on
    local function leaves(what)
        local c = reader(P)
        small_rcvbuf(c, 65536)
        assert(c:send("SYNC\r\n"))
        local gone = what(c)
        local addr = gone.addr
        c:close()
        h.wait_until(function()
            for _, e in ipairs(h.client_list(R)) do
                if e.addr == addr then return false, e.cmd end
            end
            return #replica_clients(R) == 0, info(R, "replication").connected_slaves
        end, 10, "the master to drop the connection of the reader that left")
        assert.equal("0", info(R, "replication").connected_slaves)
        if not DIRECT then assert.is_true(S:alive(), "shotover died") end
        assert.equal("PONG", h.cli(P, "ping"))
        local o = h.connect(P)
        assert.same(OK, o:cmd("SET", "r7:other", "still"))
        assert.equal("still", o:cmd("GET", "r7:other"))
        assert.equal(1, o:cmd("DEL", "r7:other"))
    end

    local function the_replica_client()
        local list = replica_clients(R)
        assert.equal(1, #list)
        return list[1]
    end

    it("drops the backend connection of a SYNC reader that leaves in the middle of the RDB", function()
        leaves(function(c)
            h.wait_until(function() return replica_states(R) == "send_bulk", replica_states(R) end,
                30, "the master to send the RDB (state send_bulk)")
            local e = the_replica_client()
            local deadline = h.now() + 30
            local line = read_line(c, deadline, "the RDB header")
            assert.truthy((tonumber(line:match("^%$(%d+)$") or "") or 0) > NKEYS * SIZE, line)
            while c.nbuf < 1024 * 1024 do wait_more(c, deadline, "1 MiB of the RDB") end
            assert.equal("REDIS", c:buffer():sub(1, 5))
            assert.equal("send_bulk", replica_states(R))
            return e
        end)
    end)

    it("drops the backend connection of a SYNC reader that leaves while the master still makes the RDB (keep-alives relayed)", function()
        -- 100 ms a key: the BGSAVE takes ~13 s, the master sends "\n" each second
        assert.equal("OK", h.cli(R, "config", "set", "rdb-key-save-delay", "100000"))
        leaves(function(c)
            h.wait_until(function() return replica_states(R) == "wait_bgsave", replica_states(R) end,
                20, "the master to make the RDB (state wait_bgsave)")
            local e = the_replica_client()
            local deadline = h.now() + 5
            while c.nbuf < 1 do wait_more(c, deadline, "a keep-alive newline") end
            assert.truthy(c:buffer():match("^\n+$"), q(c:buffer()))
            assert.equal("wait_bgsave", replica_states(R))
            return e
        end)
        assert.equal("OK", h.cli(R, "config", "set", "rdb-key-save-delay", "0"))
    end)
end)
