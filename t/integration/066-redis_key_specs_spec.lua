-- m:keys() against the real redis-server's own answer: for a corpus of
-- commands (multi-key, numkeys, keywords, subcommands, no keys), the keys
-- shotover.redis.keys finds are those COMMAND GETKEYS names.
local h = require("harness")
local message = require "shotover.message"

local CORPUS = {
    { "GET", "k" }, { "SET", "k", "v", "GET" }, { "MSET", "a", "1", "b", "2" },
    { "MSETNX", "a", "1", "b", "2" }, { "MGET", "a", "b", "c" },
    { "DEL", "a", "b" }, { "UNLINK", "a" }, { "EXISTS", "a", "b" },
    { "RENAME", "a", "b" }, { "COPY", "a", "b", "DB", "1" },
    { "LMOVE", "a", "b", "LEFT", "RIGHT" }, { "RPOPLPUSH", "a", "b" },
    { "BLPOP", "a", "b", "0" }, { "BRPOP", "a", "0" },
    { "BLMPOP", "0", "2", "a", "b", "LEFT" }, { "LMPOP", "1", "a", "RIGHT" },
    { "ZMPOP", "2", "a", "b", "MIN" }, { "BZMPOP", "0", "1", "a", "MAX" },
    { "BZPOPMIN", "a", "b", "0" },
    { "EVAL", "return 1", "2", "k1", "k2", "arg" },
    { "EVALSHA", "0000000000000000000000000000000000000000", "1", "k", "a" },
    { "EVAL_RO", "return 1", "1", "k" }, { "FCALL", "f", "2", "a", "b", "x" },
    { "FCALL_RO", "f", "1", "a" },
    { "ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2" },
    { "ZINTERSTORE", "d", "1", "a" }, { "ZUNION", "2", "a", "b" },
    { "ZDIFFSTORE", "d", "2", "a", "b" }, { "ZRANGESTORE", "d", "s", "0", "1" },
    { "SINTERCARD", "2", "a", "b", "LIMIT", "1" },
    { "SUNIONSTORE", "d", "a", "b" }, { "SMOVE", "a", "b", "m" },
    { "XREAD", "COUNT", "1", "STREAMS", "s1", "s2", "0", "0" },
    { "XREAD", "BLOCK", "0", "STREAMS", "s", "$" },
    { "XREADGROUP", "GROUP", "g", "c", "STREAMS", "s1", "s2", ">", ">" },
    { "GEORADIUS", "g", "1", "2", "3", "km", "STORE", "d" },
    { "GEORADIUS", "g", "1", "2", "3", "km", "STOREDIST", "d" },
    { "GEORADIUSBYMEMBER", "g", "m", "3", "km", "STORE", "d" },
    { "GEOSEARCHSTORE", "d", "g", "FROMMEMBER", "m", "BYRADIUS", "1", "km" },
    { "SORT", "l" }, { "SORT", "l", "BY", "w_*", "GET", "#", "STORE", "d" },
    { "SORT", "l", "LIMIT", "0", "1", "STORE", "d" }, { "SORT_RO", "l" },
    { "MIGRATE", "h", "1", "k", "0", "10" },
    { "MIGRATE", "h", "1", "", "0", "10", "AUTH", "pw", "KEYS", "a", "b" },
    { "MIGRATE", "h", "1", "", "0", "10", "AUTH2", "u", "p", "KEYS", "a" },
    { "OBJECT", "ENCODING", "k" }, { "OBJECT", "FREQ", "k" },
    { "MEMORY", "USAGE", "k" }, { "XINFO", "STREAM", "s" },
    { "XGROUP", "CREATE", "s", "g", "$" }, { "BITOP", "AND", "d", "a", "b" },
    { "PFMERGE", "d", "a", "b" }, { "PFCOUNT", "a", "b" },
    { "WATCH", "a", "b" }, { "LCS", "a", "b" }, { "HSET", "h", "f", "v" },
    { "SETRANGE", "k", "0", "v" }, { "OBJECT", "HELP" },
    { "PING" }, { "ECHO", "x" }, { "PUBLISH", "c", "m" }, { "KEYS", "*" },
    { "SCAN", "0" }, { "FLUSHALL" }, { "SELECT", "1" }, { "INFO" },
}

describe("m:keys() against COMMAND GETKEYS", function()
    local R

    setup(function()
        R = h.redis_server().port
    end)
    teardown(h.cleanup)

    it("finds the keys redis-server finds, for every command of the corpus",
       function()
        local diffs = {}
        for _, args in ipairs(CORPUS) do
            local cli = { "command", "getkeys" }
            for _, a in ipairs(args) do
                cli[#cli + 1] = a
            end
            local out = h.cli(R, unpack(cli))
            local want = {}
            if not out:find("^ERR") and not out:find("^Invalid")
               and not out:find("^The command has no key") then
                for k in (out .. "\n"):gmatch("([^\n]*)\n") do
                    want[#want + 1] = k
                end
            end
            local got = message.command(args):keys()
            table.sort(want)
            table.sort(got)
            local w, g = table.concat(want, " "), table.concat(got, " ")
            if w ~= g then
                diffs[#diffs + 1] = table.concat(args, " ") .. ": redis "
                                    .. w .. " / shotover " .. g
                                    .. " (" .. out .. ")"
            end
        end
        assert.are.same({}, diffs)
    end)
end)
