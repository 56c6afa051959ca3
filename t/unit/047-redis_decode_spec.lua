-- The RESP reply decoder (shotover.redis.decode): real replies captured
-- from redis-server 7.0 (t/fixtures/resp, cut at the offsets cases.txt
-- gives) decoded into Lua values, read in place from reply frames.
local ffi = require "ffi"
local message = require "shotover.message"
local decode = require "shotover.redis.decode"

local NULL = decode.NULL
local src = os.getenv("SHOTOVER_SRC") or "."

local function fixture(name)
    local f = assert(io.open(src .. "/t/fixtures/resp/" .. name, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

-- the reply at [off, off + len) of a captured .rep file, as a frame
local function reply(name, off, len)
    local s = fixture(name):sub(off + 1, off + len)
    return assert(message.frame_from_resp(s))
end

local function dec(name, off, len)
    local f = reply(name, off, len)
    local v, err = decode.frame(f)
    assert(v ~= nil, err)
    return v
end

describe("the RESP decoder", function()
    it("decodes strings, nulls and integers of real RESP2 replies", function()
        assert.are.equal("OK", dec("strings.rep", 0, 5))
        assert.are.equal("bar", dec("strings.rep", 5, 9))
        assert.are.equal(NULL, dec("strings.rep", 14, 5))
        assert.are.equal("", dec("strings.rep", 24, 6))
        assert.are.equal(6, dec("strings.rep", 34, 4))
        assert.are.equal(-42, dec("strings.rep", 48, 6))
        assert.are.equal("a\r\nb\0c\r\n", dec("binary.rep", 5, 14))
        assert.are.equal("\xff\xfe\x80\x7f\x01", dec("binary.rep", 61, 11))
    end)

    it("keeps 64-bit integers exact", function()
        local v = dec("integers.rep", 8, 53)
        assert.are.equal(3, #v)
        assert.are.equal("int64_t", tostring(ffi.typeof(v[1])):match("int64_t"))
        assert.is_true(v[1] == -9223372036854775807LL - 1)
        assert.are.equal(0, v[2])
        assert.is_true(v[3] == 9223372036854775807LL)
        assert.is_true(dec("integers.rep", 114, 22) == 9223372036854775807LL)
    end)

    it("gives arrays with nulls in place, empty arrays and null arrays", function()
        assert.are.same({ "v1", "v2", NULL, "", "with space" },
                        dec("mset_mget.rep", 5, 48))
        assert.are.same({ "a", "b", "c", "", "d" }, dec("arrays.rep", 4, 38))
        assert.are.same({}, dec("arrays.rep", 42, 4))
        assert.are.equal(NULL, dec("arrays.rep", 46, 5))
        assert.are.same({ 1, NULL, "x", {}, { {} } }, dec("nested.rep", 24, 32))
        assert.are.same({ { "1-1", { "field", "value", "f2", "v2" } },
                          { "2-1", { "a", "b" } } },
                        dec("nested.rep", 74, 90))
    end)

    it("gives errors as distinct values with their code", function()
        local e = dec("errors.rep", 4, 68)
        assert.is_true(decode.is_error(e))
        assert.are.equal("WRONGTYPE", e.code)
        assert.are.equal("WRONGTYPE Operation against a key holding the "
                         .. "wrong kind of value", e.message)
        assert.are.equal(e.message, tostring(e))
        local e2 = dec("errors.rep", 214, 50)
        assert.are.equal("ERR", e2.code)
        assert.is_false(decode.is_error("ERR"))
        assert.is_false(decode.is_error(dec("errors.rep", 0, 4)))
    end)

    it("decodes RESP3 maps, sets, pushes, doubles, booleans and verbatim strings", function()
        local hello = dec("resp3.rep", 0, 146)
        assert.are.equal("redis", hello.server)
        assert.are.equal(3, hello.proto)
        assert.are.same({}, hello.modules)
        assert.are.same({ f1 = "v1", f2 = "" }, dec("resp3.rep", 150, 34))
        assert.are.same({}, dec("resp3.rep", 184, 4))
        assert.are.same({ "a" }, dec("resp3.rep", 192, 11))
        assert.are.equal(1.5, dec("resp3.rep", 207, 6))
        assert.are.equal(NULL, dec("resp3.rep", 213, 3))
        assert.are.same({ { "m", 1.5 }, { "n", 2 } }, dec("resp3.rep", 216, 36))
        local d = "debug_protocol_resp3.rep"
        assert.are.equal(3.141, dec(d, 172, 8))
        assert.are.same({ 0, 1, 2 }, dec(d, 199, 16))
        assert.are.same({ [0] = false, [1] = true, [2] = false }, dec(d, 215, 28))
        assert.are.same({ "server-cpu-usage", 42 }, dec(d, 243, 32))
        assert.are.equal("This is a verbatim\nstring", dec(d, 322, 36))
        assert.are.equal(true, dec(d, 358, 4))
        assert.are.equal(false, dec(d, 362, 4))
        assert.are.same({ 1, { x = { "y" } } }, dec("lua_resp3.rep", 186, 30))
        assert.are.equal("MYERR", dec("lua_resp3.rep", 216, 15).code)
    end)

    it("decodes big numbers and skips attributes", function()
        -- captured from redis-server 7.0.15 (--enable-debug-command yes):
        -- HELLO 3, DEBUG PROTOCOL bignum, DEBUG PROTOCOL attrib
        local big = decode.string("(1234567999999999999999999999999999999\r\n")
        assert.are.equal(decode.BigNumber, getmetatable(big))
        assert.are.equal("1234567999999999999999999999999999999", big.digits)
        assert.are.equal(big.digits, tostring(big))
        assert.are.equal("Some real reply following the attribute",
                         decode.string("|1\r\n$14\r\nkey-popularity\r\n*2\r\n"
                                       .. "$7\r\nkey:123\r\n:90\r\n$39\r\n"
                                       .. "Some real reply following the "
                                       .. "attribute\r\n"))
        assert.are.same({ 1, "x" },
                        decode.string("*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n+x\r\n"))
        assert.are.equal(1 / 0, decode.string(",inf\r\n"))
        assert.are.equal(-1 / 0, decode.string(",-inf\r\n"))
        local nan = decode.string(",nan\r\n")
        assert.is_true(nan ~= nan)
    end)

    it("decodes the deepest reply Redis sent through the codec", function()
        local v = dec("deep32.rep", 0, 132)
        for _ = 1, 31 do
            assert.are.equal(1, #v)
            v = v[1]
        end
        assert.are.same({ 1 }, v)
    end)

    it("decodes a reply nested 100 levels deep in place, without recursion", function()
        -- deeper than the RESP reader lets a backend send (32): the bytes
        -- are in C memory, read where they are
        local s = string.rep("*1\r\n", 99) .. "*2\r\n:7\r\n$-1\r\n"
        local buf = ffi.new("uint8_t[?]", #s)
        ffi.copy(buf, s, #s)
        local v, used = decode.view(buf, #s)
        assert.are.equal(#s, used)
        for _ = 1, 99 do
            assert.are.equal(1, #v)
            v = v[1]
        end
        assert.are.same({ 7, NULL }, v)
        -- far deeper than any Lua or C stack would take recursively
        local deep = string.rep("*1\r\n", 200000) .. ":1\r\n"
        local w = assert(decode.string(deep, { max_depth = 200000 }))
        for _ = 1, 200000 do
            w = w[1]
        end
        assert.are.equal(1, w)
        -- and the limit holds
        local none, err = decode.string(s, { max_depth = 50 })
        assert.is_nil(none)
        assert.matches("nested deeper than 50", err)
    end)

    it("checks lengths against its limits and the bytes before allocating", function()
        local function fails(s, pat, opts)
            local v, err = decode.string(s, opts)
            assert.is_nil(v, s)
            assert.matches(pat, err)
        end
        fails("*2147483647\r\n:1\r\n", "over the limit")
        fails("*1000\r\n:1\r\n", "runs past the reply")
        fails("%1000000\r\n", "over the limit")
        fails("$1000\r\nabc\r\n", "runs past the reply")
        fails("$5\r\nabc\r\n", "runs past the reply")
        fails("$3\r\nabcd\r\n", "no CRLF after the string")
        fails("$10\r\n0123456789\r\n", "over the limit", { max_bulk = 4 })
        fails("*3\r\n:1\r\n:2\r\n:3\r\n", "over the limit",
              { max_elements = 2 })
        fails(":12a\r\n", "bad integer")
        fails(":99999999999999999999\r\n", "bad integer")
        fails("#x\r\n", "bad boolean")
        fails("?\r\n", "unknown reply type")
        fails("+OK", "no CRLF")
        fails("*2\r\n$3\r\nabc\r\n", "truncated")
        fails("+OK\r\n+OK\r\n", "bytes after the reply")
        -- every captured reply decodes, whole
        for _, name in ipairs({ "strings.rep", "nested.rep", "resp3.rep",
                                "lua_resp3.rep", "command_docs_resp3.rep" })
        do
            local s = fixture(name)
            local at = 0
            while at < #s do
                local v, used = decode.view(ffi.cast("const uint8_t *", s)
                                            + at, #s - at)
                assert(v ~= nil, name .. " at " .. at .. ": "
                                 .. tostring(used))
                at = at + used
            end
        end
    end)
end)
