-- Inline commands, differentially: the same generated lines go to
-- redis-server directly and through shotover, and the replies must be the
-- same bytes, with the connection closed by both or by neither.
--
-- Lines: every byte 0x00-0xFF around separators, after closing quotes,
-- inside quotes and after a backslash; random mixes of quotes, escapes and
-- blanks (\v and \f included); CR/LF variants and blank lines; lines near
-- the 64 KiB limit; unbalanced quotes.  Most run as arguments of
-- `EVAL "return ARGV" 0 ...`, whose reply shows exactly how the line was
-- split.  Each line is sent with a sentinel command after it in the same
-- write, and the reply is everything before the sentinel's (or everything
-- up to the close); a line whose newline a NUL hides gets no reply at all
-- from Redis, so those are compared by silence instead.
local h = require("harness")

local EVAL = 'EVAL "return ARGV" 0 '
local SENTINEL = "ECHO __sentinel__\r\n"
local SENTINEL_REPLY = "$12\r\n__sentinel__\r\n"

-- One side of the comparison: a connection to `port`, made anew whenever
-- the previous one was closed by the server.
local Side = {}
Side.__index = Side

local function side(port, name)
    return setmetatable({ port = port, name = name }, Side)
end

function Side:conn()
    if not self.c or self.c.eof then
        if self.c then self.c:close() end
        self.c = h.connect(self.port)
    end
    return self.c
end

function Side:drop()
    if self.c then self.c:close() end
    self.c = nil
end

-- send line and the sentinel; the reply bytes before the sentinel's, and
-- whether the server closed the connection instead of answering it
function Side:exchange(line, timeout)
    local c = self:conn()
    c:send(line .. SENTINEL)       -- a server that closed early: send fails
    local deadline = h.now() + (timeout or 10)
    while true do
        local b = c:buffer()
        if b:sub(-#SENTINEL_REPLY) == SENTINEL_REPLY then
            c:consume(#b)
            return b:sub(1, -#SENTINEL_REPLY - 1), false
        end
        if c.eof then
            c:consume(#b)
            self:drop()
            return b, true
        end
        local left = deadline - h.now()
        if left <= 0 then
            error(string.format("%s: no sentinel within %ss after %q (got %q)",
                self.name, timeout or 10, line:sub(1, 200), b:sub(1, 200)))
        end
        c:fill(left)
    end
end

-- send bytes and collect what comes in `quiet` seconds: data, closed
function Side:quiet(bytes, quiet)
    local c = self:conn()
    c:send(bytes)
    local deadline = h.now() + 10
    while not c.eof and h.now() < deadline do
        if not c:fill(quiet or 0.2) then break end
    end
    local data, closed = c:consume(c.nbuf), c.eof
    if closed then self:drop() end
    return data, closed
end

-- does a NUL come before the first "\n" of s (Redis then sees no line)?
local function nul_hides_newline(s)
    local z = s:find("\0", 1, true)
    local nl = s:find("\n", 1, true)
    return z ~= nil and (nl == nil or z < nl)
end

-- Every case through both sides; the mismatches, as readable lines, and
-- counts of what Redis did (so a spec that tests nothing shows).
local function compare(redis, proxy, cases)
    local bad, seen = {}, { replies = 0, closes = 0, silent = 0 }
    for _, line in ipairs(cases) do
        local rd, rc, pd, pc
        if nul_hides_newline(line) then
            rd, rc = redis:quiet(line .. SENTINEL)
            pd, pc = proxy:quiet(line .. SENTINEL)
            -- the connection waits for more forever: start afresh
            redis:drop()
            proxy:drop()
            seen.silent = seen.silent + 1
        else
            rd, rc = redis:exchange(line)
            pd, pc = proxy:exchange(line)
            seen[rc and "closes" or "replies"] = seen[rc and "closes" or "replies"] + 1
        end
        if rd ~= pd or rc ~= pc then
            bad[#bad + 1] = string.format("%q:\n  redis    %q%s\n  shotover %q%s",
                line:sub(1, 120), rd:sub(1, 200), rc and " (closed)" or "",
                pd:sub(1, 200), pc and " (closed)" or "")
        end
    end
    return bad, seen
end

local function assert_same(redis, proxy, cases, min)
    local bad, seen = compare(redis, proxy, cases)
    if #bad > 0 then
        local show = {}
        for i = 1, math.min(#bad, 15) do show[i] = bad[i] end
        error(string.format("%d of %d lines got other replies through shotover:\n%s",
            #bad, #cases, table.concat(show, "\n")), 2)
    end
    for k, n in pairs(min or {}) do
        assert(seen[k] >= n, string.format("only %d %s from redis-server", seen[k], k))
    end
    return seen
end

---------------------------------------------------------------------------
-- the lines
---------------------------------------------------------------------------

-- every byte in every position that matters to the splitter
local function byte_cases()
    local templates = {
        EVAL .. "a%sb\r\n",           -- inside an unquoted argument
        EVAL .. "%sa\r\n",            -- before an argument
        EVAL .. "a%s\r\n",            -- at the end of the line
        EVAL .. "a %s b\n",           -- alone between blanks
        EVAL .. '"a"%sb\r\n',         -- after a closing double quote
        EVAL .. "'a'%sb\r\n",         -- after a closing single quote
        EVAL .. '"a%sb"\r\n',         -- inside double quotes
        EVAL .. "'a%sb'\r\n",         -- inside single quotes
        EVAL .. '"\\%s" x\r\n',       -- escaped in double quotes
        EVAL .. "'\\%s' x\r\n",       -- after a backslash in single quotes
        EVAL .. '"\\x%sf" "\\xf%s"\r\n', -- as a hex digit
        EVAL .. 'a"%s"b c\r\n',       -- a quoted part inside an argument
        "ECHO%sa\r\n",                -- right after the command
    }
    local out = {}
    for _, t in ipairs(templates) do
        for b = 0, 255 do
            local c = string.char(b)
            out[#out + 1] = (t:gsub("%%s", function() return c end))
        end
    end
    return out
end

-- random lines from the characters the splitter cares about (fixed seed:
-- the same lines on every run)
local function random_cases(n)
    local alphabet = { "a", "b", "x", "4", "f", "G", " ", " ", "\t", "\v",
        "\f", "\r", '"', '"', "'", "'", "\\", "\\", "\\x", "\\n", "\\'",
        '\\"', "\\\\", "\128", "\255" }
    math.randomseed(4517)
    local out = {}
    for i = 1, n do
        local parts = {}
        for k = 1, math.random(1, 10) do
            parts[k] = alphabet[math.random(#alphabet)]
        end
        out[i] = EVAL .. table.concat(parts) .. (i % 3 == 0 and "\n" or "\r\n")
    end
    return out
end

local function line_end_cases()
    return {
        "PING\r\n", "PING\n", "PING\r\r\n", "PING \r\n", "PING\t\n",
        "PING\v\r\n", "PING\f\n", "\r\n", "\n", "\r\r\n", " \r\n",
        "\t\v\f\r\n", "\v\n", "\f\r\n", "\r\n\r\nPING\r\n", "\n\nPING\n",
        "PING\n\r\n", "  PING  \r\n", "\vPING\n", "\fPING\r\n",
        "ECHO a\rb\r\n", "ECHO a\r\r\n", "ECHO \"a\r\"\r\n",
        "ECHO 'a\rb'\n", "PING\rPING\r\n",
        EVAL .. "a b c\r\nPING\r\n",
        EVAL .. "a\r\n" .. EVAL .. "b\n" .. EVAL .. "c\r\r\n",
        -- the issue's examples
        'ECHO a"b c"\r\n', "ECHO a\vb\r\n", "ECHO a\fb\r\n",
        "ECHO \va\r\n", "ECHO a\v\r\n", 'ECHO ""\r\n', "ECHO ''\r\n",
        -- SET then GET: the value as stored
        'SET inline:k a"b c"\r\nGET inline:k\r\n',
        "SET inline:k 'x\\'y'\r\nGET inline:k\r\n",
        "SET inline:k \"\\x00\\xff\\n\"\r\nGET inline:k\r\n",
        -- RPUSH then LRANGE: the split shows in the list
        "DEL inline:l\r\nRPUSH inline:l a\vb c\fd 'e f'\"g\" \"\\x41\"\r\n"
            .. "LRANGE inline:l 0 -1\r\n",
    }
end

local function unbalanced_cases()
    return {
        'ECHO "a\r\n', "ECHO 'a\r\n", 'ECHO "a"b\r\n', "ECHO 'a'b\r\n",
        'ECHO a"b"c\r\n', "ECHO a'b'c\r\n", '"a"\'b\'\r\n', 'ECHO "a\\"\r\n',
        'ECHO "a\\\r\n', "ECHO 'a\\'\r\n", 'ECHO a""b\r\n', "ECHO \"\"''\r\n",
        'PING\r\nECHO "x\r\nPING\r\n', 'ECHO "a\nb"\r\n',
        EVAL .. '"\\x4"x\r\n', EVAL .. "ok 'fine' \"also\" 'bad'x\r\n",
    }
end

-- the line without its ending is `len` bytes: ECHO and a quoted or plain
-- argument of the rest
local function long_line(len, quoted)
    if quoted then
        return 'ECHO "' .. string.rep("q", len - 7) .. '"'
    end
    return "ECHO " .. string.rep("x", len - 5)
end

---------------------------------------------------------------------------

describe("inline commands through shotover and straight to redis-server", function()
    local env, redis, proxy

    setup(function()
        env = h.start_pair({ workers = 1 })
        redis = side(env.redis.port, "redis-server")
        proxy = side(env.port, "shotover")
    end)
    teardown(h.cleanup)

    it("split a known line the same way (the comparison works)", function()
        local data, closed = redis:exchange(EVAL .. 'a"b c" \'d\'\r\n')
        assert.equal("*2\r\n$4\r\nab c\r\n$1\r\nd\r\n", data)
        assert.is_false(closed)
        assert.same({ data, false }, { proxy:exchange(EVAL .. 'a"b c" \'d\'\r\n') })
    end)

    it("answer every byte 0x00-0xFF around separators, quotes and escapes alike", function()
        local cases = byte_cases()
        local seen = assert_same(redis, proxy, cases,
                                 { replies = 2000, closes = 100, silent = 13 })
        assert.equal(#cases, seen.replies + seen.closes + seen.silent)
    end)

    it("answer random mixes of quotes, escapes and blanks alike", function()
        assert_same(redis, proxy, random_cases(1500), { replies = 300, closes = 300 })
    end)

    it("answer CR/LF variants, blank lines and the issue's examples alike", function()
        assert_same(redis, proxy, line_end_cases(), { replies = 30 })
    end)

    it("refuse unbalanced quotes alike, closing the connection", function()
        assert_same(redis, proxy, unbalanced_cases(), { closes = 16 })
    end)

    it("answer lines up to the 64 KiB limit alike", function()
        local cases = {}
        for _, len in ipairs({ 16383, 16384, 16385, 65000, 65534, 65535 }) do
            cases[#cases + 1] = long_line(len) .. "\r\n"    -- the CR counts
            cases[#cases + 1] = long_line(len + 1) .. "\n"
            cases[#cases + 1] = long_line(len, true) .. "\r\n"
        end
        cases[#cases + 1] = EVAL .. string.rep("a ", 32000) .. "\r\n"
        assert_same(redis, proxy, cases, { replies = #cases })
    end)

    it("refuse far longer lines alike, closing the connection", function()
        -- Redis checks the limit only while a line is unfinished after one
        -- of its reads, so lines a little over 64 KiB that arrive in one
        -- read pass there; shotover refuses every line over the limit,
        -- which Redis also does once its reads have seen 64 KiB without a
        -- newline: at these sizes, always.
        local cases = {}
        for _, len in ipairs({ 200000, 400000 }) do
            cases[#cases + 1] = long_line(len) .. "\r\n"
            cases[#cases + 1] = long_line(len, true) .. "\n"
        end
        assert_same(redis, proxy, cases, { closes = #cases })
        -- 64 KiB and a CR, its LF not sent: over the limit for both
        for _, s in ipairs({ redis, proxy }) do
            local data, closed = s:quiet(long_line(65536) .. "\r", 0.5)
            assert.equal("-ERR Protocol error: too big inline request\r\n", data, s.name)
            assert.is_true(closed, s.name)
        end
    end)

    it("say nothing to a line whose newline a NUL hides, then refuse it past 64 KiB", function()
        local line = "ECHO a\0b\r\nPING\r\n"
        local rd, rc = redis:quiet(line, 0.3)
        local pd, pc = proxy:quiet(line, 0.3)
        assert.same({ "", false }, { rd, rc })
        assert.same({ rd, rc }, { pd, pc })
        local more = string.rep("PING\r\n", 12000)
        rd, rc = redis:quiet(more, 0.5)
        pd, pc = proxy:quiet(more, 0.5)
        assert.same({ "-ERR Protocol error: too big inline request\r\n", true }, { rd, rc })
        assert.same({ rd, rc }, { pd, pc })
    end)

    it("kept shotover serving", function()
        assert.equal("PONG", h.cli(env.port, "ping"))
        assert.is_true(env.proxy:alive())
    end)
end)
