-- audit: config errors with their paths, the redaction of Redis commands
-- and CQL statements (passwords never written, values replaced, show_values
-- patterns), and the lines a dry chain writes to a file (fail_closed with
-- an unwritable file refusing, fail_closed = false serving).
-- t/integration/099... runs it in front of a real redis-server.
local testing = require "shotover.testing"
local audit = require "shotover.transforms.audit"
local buffer = require "string.buffer"
local cjson_ok = pcall(require, "cjson")        -- luacheck: ignore

local function errs(el, proto)
    local _, e = testing.check({ el, { "null" } },
                               { protocol = proto or "redis" })
    return table.concat(e or {}, "\n")
end

local function redis_text(args, show)
    local pats = {}
    for i, p in ipairs(show or {}) do
        pats[i] = "^" .. p:gsub("%*", ".*") .. "$"
    end
    return audit.redis_text(testing.redis(args), pats, buffer.new())
                :tostring()
end

local function cql(q)
    return audit.cql_text(q, buffer.new()):tostring()
end

local tmp = os.getenv("TMPDIR") or "/tmp"
local n = 0
local function tmpfile()
    n = n + 1
    return string.format("%s/audit-unit-%d-%d.jsonl", tmp,
                         math.floor(os.time()), n)
end

local function lines(path)
    local out = {}
    local f = io.open(path)
    if f == nil then
        return out
    end
    for l in f:lines() do
        out[#out + 1] = l
    end
    f:close()
    return out
end

describe("audit", function()
    it("reports config problems with their paths, all at once", function()
        assert.matches("chain%[1%]%.file: give exactly one output",
                       errs({ "audit" }))
        assert.matches("chain%[1%]%.file: give exactly one output",
                       errs({ "audit", file = "/tmp/x",
                              syslog = { path = "/dev/log" } }))
        local e = errs({ "audit", file = "/tmp/x", fsync = "sometimes",
                         buffer_size = 1 })
        assert.matches("chain%[1%]%.fsync: ", e)
        assert.matches("chain%[1%]%.buffer_size: ", e)
        e = errs({ "audit", file = "/tmp/x",
                   classes = { "write", "writes", 3 }, show_values = { "" } })
        assert.matches('chain%[1%]%.classes%[2%]: unknown class "writes"', e)
        assert.matches("chain%[1%]%.classes%[3%]: expected a non%-empty "
                       .. "string, got number", e)
        assert.matches("chain%[1%]%.show_values%[1%]: expected a non%-empty"
                       .. " string", e)
        e = errs({ "audit", syslog = { facility = "local9", port = 1 } })
        assert.matches('chain%[1%]%.syslog%.facility: unknown facility "local9"', e)
        assert.matches("chain%[1%]%.syslog%.port: unknown key", e)
        e = errs({ "audit", kafka = { brokers = "127.0.0.1:9092" },
                   fsync = "always" })
        assert.matches("chain%[1%]%.kafka%.topic: required", e)
        assert.matches("chain%[1%]%.fsync: only for a file output", e)
        assert.is_nil(testing.errors({ { "audit", file = "/tmp/x",
            classes = { "write", "admin" }, show_values = { "session:*" },
            fsync = "interval", fsync_interval_ms = 200, fail_closed = true },
            { "null" } }))
    end)

    it("keeps a Redis command's name and keys and hides its values", function()
        assert.are.equal("SET user:1 ?",
                         redis_text({ "SET", "user:1", "s3cret-value" }))
        assert.are.equal("MSET a ? b ?",
                         redis_text({ "MSET", "a", "1", "b", "2" }))
        assert.are.equal("GET k", redis_text({ "GET", "k" }))
        assert.are.equal('SET "a key" ?', redis_text({ "SET", "a key", "v" }))
        assert.are.equal("HSET h ? ? ? ?",
                         redis_text({ "HSET", "h", "f1", "v1", "f2", "v2" }))
        local args = { "MSET" }
        for i = 1, 1000 do
            args[#args + 1], args[#args + 2] = "k" .. i, "v"
        end
        local b = buffer.new()
        audit.redis_text(testing.redis(args), {}, b, 64)
        assert.is_true(#b < 80)
    end)

    it("never writes a Redis password, whatever show_values says", function()
        local t = redis_text({ "AUTH", "alice", "hunter2" }, { "*" })
        assert.are.equal("AUTH ? ?", t)
        t = redis_text({ "HELLO", "3", "AUTH", "alice", "hunter2" }, { "*" })
        assert.not_matches("hunter2", t)
        t = redis_text({ "CONFIG", "SET", "requirepass", "hunter2" }, { "*" })
        assert.not_matches("hunter2", t)
        t = redis_text({ "MIGRATE", "h", "1", "k", "0", "5", "AUTH",
                         "hunter2" }, { "*" })
        assert.not_matches("hunter2", t)
        assert.matches("^MIGRATE", t)
    end)

    it("shows the values of commands whose keys all match show_values", function()
        assert.are.equal("SET session:1 abc",
            redis_text({ "SET", "session:1", "abc" }, { "session:*" }))
        assert.are.equal("SET user:1 ?",
            redis_text({ "SET", "user:1", "abc" }, { "session:*" }))
        -- one key that does not match hides them all
        assert.are.equal("MSET session:1 ? user:1 ?",
            redis_text({ "MSET", "session:1", "a", "user:1", "b" },
                       { "session:*" }))
    end)

    it("replaces every CQL literal by ?", function()
        assert.are.equal(
            "INSERT INTO ks.t (k, v, n, f, b, u, ok) VALUES (?, ?, ?, ?, ?, ?, ?)",
            cql("INSERT INTO ks.t (k, v, n, f, b, u, ok) VALUES ('it''s', "
                .. "$$dollar$$, -42, 1.5e-3, 0xcafe, "
                .. "123e4567-e89b-12d3-a456-426614174000, true)"))
        assert.are.equal('SELECT "Col" FROM ks.t WHERE k = ? AND c > ?',
                         cql('SELECT "Col" FROM ks.t WHERE k = ? AND c > 5'))
        assert.are.equal("UPDATE t USING TTL ? SET d = ? WHERE k = ?",
                         cql("UPDATE t USING TTL 60 SET d = 1h30m WHERE "
                             .. "k = 'a' -- a comment 'x'"):gsub("%s+$", ""))
        assert.are.equal("CREATE ROLE alice WITH PASSWORD = ? AND LOGIN = ?",
            cql("CREATE ROLE alice WITH PASSWORD = 'hunter2' AND LOGIN = true"))
        assert.not_matches("hunter2",
            cql("ALTER USER bob WITH PASSWORD $$hunter2$$"))
        -- a long statement is read up to its limit: a literal cut there
        -- is still a literal
        local long = "INSERT INTO t (k) VALUES ('" .. ("x"):rep(100) .. "')"
        assert.are.equal("INSERT INTO t (k) VALUES (?...",
                         audit.cql_text(long, buffer.new(), 40):tostring())
    end)

    it("never writes a CQL AUTH_RESPONSE token or bound values", function()
        local cr = testing.cql_request
        local b = buffer.new()
        local m = testing.cql("INSERT INTO ks.t (k, v) VALUES (?, ?)",
                              { "key-bound", "value-bound" })
        assert.are.equal("INSERT INTO ks.t (k, v) VALUES (?, ?)",
                         audit.cql_request_text(m, b):tostring())
        b:reset()
        local token = "\0alice\0hunter2"
        local s = audit.cql_request_text(cr.envelope(
            require("shotover.ffi").C.SH_CQL_AUTH_RESPONSE,
            "\0\0\0" .. string.char(#token) .. token), b):tostring()
        assert.are.equal("AUTH_RESPONSE", s)
    end)

    it("writes one line per request with its fields", function()
        local path = tmpfile()
        local t = testing.build({ { "audit", file = path },
                                  { "debug_returner", error = "WRONGTYPE no" } })
        local conn = t.ctx.conn
        conn.user, conn.tls_subject = "alice", "CN=alice,O=test"
        t:run({ "SET", "k1", "secret-value" }, { "AUTH", "alice", "hunter2" })
        local got = lines(path)
        assert.are.equal(2, #got)
        local raw = table.concat(got, "\n")
        assert.not_matches("secret%-value", raw)
        assert.not_matches("hunter2", raw)
        local l = got[1]
        assert.matches('^{"time":"%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ"', l)
        assert.matches('"statement":"SET k1 %?"', l)
        assert.matches('"user":"alice"', l)
        assert.matches('"tls_subject":"CN=alice,O=test"', l)
        assert.matches('"decision":"allowed"', l)
        assert.matches('"outcome":"WRONGTYPE"', l)
        assert.matches('"latency_us":%d+}$', l)
        assert.matches('"class":"read_write"', l)
        assert.matches('"statement":"AUTH %? %?"', got[2])
        os.remove(path)
    end)

    it("writes only the configured classes and a later element's decision",
       function()
        local path = tmpfile()
        local t = testing.build({ { "audit", file = path,
                                    classes = { "write", "admin" } },
            function(batch, chain)
                chain.decisions = { [1] = "denied by rule 2" }
                return chain:next(batch)
            end,
            { "debug_returner", simple = "OK" } })
        t:run({ "SET", "k", "v" }, { "GET", "k" }, { "FLUSHALL" })
        local got = lines(path)
        assert.are.equal(2, #got)
        assert.matches('"statement":"SET k %?".*"decision":"denied by rule 2"'
                       .. '.*"outcome":"ok"', got[1])
        assert.matches('"statement":"FLUSHALL".*"decision":"allowed"', got[2])
        os.remove(path)
    end)

    it("refuses with fail_closed when the file cannot be written, and "
       .. "serves without it", function()
        local path = tmp .. "/audit-unit-no-such-dir/x.jsonl"
        local t = testing.build({ { "audit", file = path, fail_closed = true },
                                  { "debug_returner", simple = "OK" } })
        local r = t:replies({ "SET", "k", "v" })
        assert.matches("^ERR shotover: audit: the audit trail cannot be "
                       .. "written %(.*No such file or directory%)", r[1])
        t = testing.build({ { "audit", file = path .. "2" },
                            { "debug_returner", simple = "OK" } })
        assert.are.same({ "OK" }, t:replies({ "SET", "k", "v" }))
    end)

    it("shows CQL values only for the columns show_values names", function()
        local m = testing.cql("INSERT INTO ks.t (k, v, w) VALUES ('a', 'b', 'c')")
        assert.is_nil(audit.cql_values(m, { conn = {} }, {}))
        assert.are.same({ v = "b" },
            audit.cql_values(m, { conn = {} }, { "^ks%.t%.v$" }))
        m = testing.cql("UPDATE ks.t SET v = ? WHERE k = ?", { "vv", "kk" })
        assert.are.same({ v = "vv", k = "kk" },
            audit.cql_values(m, { conn = {} }, { "^ks%.t%.[vk]$" }))
        local d = testing.cql("CREATE ROLE r WITH PASSWORD = 'hunter2'")
        assert.is_nil(audit.cql_values(d, { conn = {} }, { ".*" }))
    end)

    it("sends a syslog datagram per line", function()
        local ffi = require "ffi"
        pcall(ffi.cdef, [[
int sh_audit_spec_bind(int fd, const struct sh_audit_sockaddr_un *a,
                       unsigned int len) __asm__("bind");
long sh_audit_spec_recv(int fd, void *p, size_t n, int flags)
    __asm__("recv");
]])
        local C = ffi.C
        local path = tmpfile() .. ".sock"
        local fd = C.sh_audit_socket(1, 2 + 2048, 0)   -- nonblocking dgram
        assert.is_true(fd >= 0)
        local a = ffi.new("struct sh_audit_sockaddr_un")
        a.sun_family = 1
        ffi.copy(a.sun_path, path)
        assert.are.equal(0, C.sh_audit_spec_bind(fd, a, ffi.sizeof(a)))
        local t = testing.build({ { "audit", syslog = { path = path,
                                      facility = "local0", tag = "aud" } },
                                  { "debug_returner", simple = "OK" } })
        t:run({ "SET", "k", "secret" })
        local buf = ffi.new("char[4096]")
        local got = tonumber(C.sh_audit_spec_recv(fd, buf, 4096, 0))
        C.sh_audit_close(fd)
        os.remove(path)
        assert.is_true(got > 0)
        local d = ffi.string(buf, got)
        assert.matches('^<134>aud: {"time":', d)
        assert.matches('"statement":"SET k %?"', d)
        assert.not_matches("secret", d)
        assert.not_matches("\n$", d)
    end)

    it("keeps what it could not write within buffer_size, dropping the rest",
       function()
        local path = tmp .. "/audit-unit-no-such-dir/full.jsonl"
        local t = testing.build({ { "audit", file = path, buffer_size = 1024 },
                                  { "debug_returner", simple = "OK" } })
        for i = 1, 50 do
            assert.are.same({ "OK" }, t:replies({ "SET", "key:" .. i, "v" }))
        end
        local out = t.chain.elements[1].inst.out
        assert.is_true(#out.buf > 512 and #out.buf <= 1024)
        -- with fail_closed the same full buffer refuses
        local t2 = testing.build({ { "audit", file = path, buffer_size = 1024,
                                     fail_closed = true },
                                   { "debug_returner", simple = "OK" } })
        assert.matches("cannot be written", t2:replies({ "GET", "k" })[1])
    end)
end)
