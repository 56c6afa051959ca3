-- The C core is layered: a file may include headers of its own layer and
-- of the layers below it, never of a layer above (docs/architecture.md
-- draws the same table).  Every C file must be in the table, so a new file
-- takes a place in the layering when it is written.
local src = assert(os.getenv("SHOTOVER_SRC"), "SHOTOVER_SRC not set")

-- module (file name without .c/.h) -> layer; lower numbers are lower
local LAYERS = {
    -- 0: shared types, memory, logging, metrics, shared state
    sh_ffi = 0, sh_core = 0, sh_log = 0, sh_buf = 0, sh_metrics = 0,
    sh_shdict = 0, sh_switch = 0, sh_ffi_sizes = 0, sh_config = 0,
    -- 1: the codecs
    sh_resp = 1, sh_cql = 1,
    -- 2: one table of functions per protocol
    sh_proto = 2,
    -- 3: a worker's loop and Lua state
    sh_worker = 3, sh_lua = 3, sh_tls = 3, sh_uring = 3,
    -- 4: one connection to a backend
    sh_upstream = 4,
    -- 5: client connections and their runs
    sh_conn = 5, sh_run = 5,
    -- 6: sinks' pools, and what else Lua waits on (watches, awaits)
    sh_redis_pool = 6, sh_cql_pool = 6, sh_watch = 6, sh_fetch = 6,
    -- 7: the process: threads, listeners, signals, admin endpoint, CLI
    sh_server = 7, sh_admin = 7, sh_notify = 7, main = 7,
}

local function read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

-- Every violation in files { name = text }: "a.c includes b.h (layer 5
-- above 3)", and files missing from the table.
local function violations(files, layers)
    local out = {}
    local names = {}
    for name in pairs(files) do
        names[#names + 1] = name
    end
    table.sort(names)
    for _, name in ipairs(names) do
        local mod = name:gsub("%.[ch]$", "")
        local mine = layers[mod]
        if mine == nil then
            out[#out + 1] = name .. " has no layer"
        else
            for inc in files[name]:gmatch('#include%s+"([%w_]+)%.h"') do
                local theirs = layers[inc]
                if theirs == nil then
                    out[#out + 1] = name .. " includes " .. inc
                                    .. ".h, which has no layer"
                elseif theirs > mine then
                    out[#out + 1] = string.format(
                        "%s includes %s.h (layer %d above %d)", name, inc,
                        theirs, mine)
                end
            end
        end
    end
    return out
end

local function core_files()
    local files = {}
    local p = assert(io.popen("ls " .. src .. "/c"))
    for name in p:lines() do
        if name:match("%.[ch]$") then
            files[name] = read(src .. "/c/" .. name)
        end
    end
    p:close()
    return files
end

describe("the layers of the C core", function()
    it("are kept: no file includes a header of a layer above its own",
       function()
        assert.are.same({}, violations(core_files(), LAYERS))
    end)

    it("are checked: an upward include and an unknown file are found",
       function()
        local files = {
            ["sh_upstream.c"] = '#include "sh_conn.h"\n',
            ["sh_new.c"] = '#include "sh_core.h"\n',
        }
        assert.are.same({
            "sh_new.c has no layer",
            "sh_upstream.c includes sh_conn.h (layer 5 above 4)",
        }, violations(files, LAYERS))
    end)

    it("do not let a codec reach the event loop", function()
        local files = { ["sh_resp.c"] = '#include "sh_worker.h"\n' }
        assert.are.same({ "sh_resp.c includes sh_worker.h (layer 3 above 1)" },
                        violations(files, LAYERS))
    end)
end)
