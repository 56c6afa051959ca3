-- The recorded CQL fixtures (t/fixtures/cql) still decode, and two
-- independent decoders agree on them: decode.py (Python: frames, v4 body
-- compression, v5 segments with CRCs) and the raw frame parser of
-- t/lib/cassandra.lua.  No Cassandra node needed.

local h = require("harness")
local cassandra = require("cassandra")

local dir = cassandra.src .. "/t/fixtures/cql"

-- frames.tsv rows grouped by file
local function tsv()
    local by = {}
    for line in (h.read_file(dir .. "/frames.tsv") or ""):gmatch("[^\n]+") do
        if not line:find("^#") then
            local f = {}
            for col in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = col end
            local file = f[1]
            by[file] = by[file] or {}
            by[file][#by[file] + 1] = { index = tonumber(f[2]), offset = tonumber(f[3]),
                segment = f[4], version = tonumber(f[5]), flags = tonumber(f[6]),
                stream = tonumber(f[7]), opcode = f[8], length = tonumber(f[9]) }
        end
    end
    return by
end

describe("cassandra fixtures", function()
    teardown(h.cleanup)

    it("decode.py decodes every recorded stream (CRCs, whole frames, streams)", function()
        local r = h.run({ cassandra.PYTHON, dir .. "/decode.py", dir }, { timeout = 60 })
        assert.equal(0, r.code, r.stderr .. r.stdout)
        assert.truthy(r.stderr:find("all frames decode", 1, true), r.stderr)
    end)

    it("has the sessions the README promises, under 2 MB in all", function()
        local total = 0
        for _, name in ipairs({ "v3", "v4", "v4-lz4", "v4-snappy", "v5", "v5-lz4", "v4-auth",
                                "v4-auth-unauthorized", "v5-auth" }) do
            for _, suffix in ipairs({ ".c2s", ".s2c", ".control.c2s", ".control.s2c" }) do
                local data = h.read_file(dir .. "/" .. name .. suffix)
                assert.truthy(data and #data > 0, name .. suffix)
                total = total + #data
            end
        end
        assert.truthy(h.read_file(dir .. "/v4-auth-badpass.control.s2c"))
        assert.truthy(total < 2 * 1024 * 1024, "fixtures total " .. total)
    end)

    it("the Lua frame parser agrees with frames.tsv on every plain v3/v4 stream", function()
        local by = tsv()
        local checked = 0
        for file, rows in pairs(by) do
            -- plain frames all the way: v3/v4 (compressed bodies are still
            -- whole frames with the 9-byte header)
            if rows[1].version <= 4 then
                local data = assert(h.read_file(dir .. "/" .. file), file)
                local pos, i = 1, 0
                while pos <= #data do
                    local f, used = cassandra.parse_frame(data:sub(pos))
                    assert.truthy(f, file .. ": incomplete frame at " .. pos)
                    i = i + 1
                    local want = rows[i]
                    assert.truthy(want, file .. ": more frames than frames.tsv")
                    assert.equal(want.offset, pos - 1, file .. " frame " .. i)
                    assert.equal(want.opcode, f.opname, file .. " frame " .. i)
                    assert.equal(want.stream, f.stream, file .. " frame " .. i)
                    assert.equal(want.length, f.length, file .. " frame " .. i)
                    assert.equal(want.flags, f.flags, file .. " frame " .. i)
                    pos = pos + used
                end
                assert.equal(#rows, i, file)
                checked = checked + 1
            end
        end
        assert.truthy(checked >= 20, "only " .. checked .. " files checked")
    end)

    it("uncompressed v4 responses decode with the Lua decoder", function()
        local data = assert(h.read_file(dir .. "/v4.s2c"))
        local pos, kinds = 1, {}
        while pos <= #data do
            local f, used = cassandra.parse_frame(data:sub(pos))
            local r = cassandra.decode(f)
            kinds[r.result or r.opname] = (kinds[r.result or r.opname] or 0) + 1
            if r.result == "rows" and r.metadata.columns[1] and r.metadata.columns[1].name == "k" then
                -- SELECT * FROM alltypes: the vector column is a custom type
                -- (Cassandra 5.0 writes " , 3", with the space)
                local types = {}
                for _, c in ipairs(r.metadata.columns) do types[c.name] = c.type end
                assert.equal("custom(org.apache.cassandra.db.marshal.VectorType(org.apache.cassandra.db.marshal.FloatType , 3))",
                    types.v)
                assert.equal("udt(fx_v4.addr)", types.a)
                assert.equal("tuple<int, varchar>", types.tup)
            end
            pos = pos + used
        end
        for _, k in ipairs({ "SUPPORTED", "READY", "rows", "void", "prepared", "schema_change",
                             "set_keyspace", "ERROR" }) do
            assert.truthy(kinds[k], "no " .. k .. " in v4.s2c")
        end
    end)
end)
