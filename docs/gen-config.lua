-- docs/gen-config.lua -- write the config reference, shotover.lua(5), from
-- what the code checks a config against, so the two cannot drift:
--
--   build/shotover lua docs/gen-config.lua docs/shotover.lua.5.md
--
-- Keys, types, defaults and bounds come from the schemas
-- (lua/shotover/config.lua: top-level, admin and source keys, each with
-- its `doc`; each transform module's `schema`), and what a transform's key
-- means from the key table of its page in docs/transforms/.  CMake turns
-- the result into the man page with docs/md2man.lua, and
-- t/unit/185-config_reference_spec.lua fails when the checked-in page is
-- not what this script writes.
local config = require "shotover.config"

local out_path = assert(arg[1], "usage: gen-config.lua OUT.md")
local root = (arg[0]:match("^(.*)/docs/[^/]+$")) or "."

local out = {}
local function emit(s) out[#out + 1] = s or "" end

-- Markdown of the docs to the subset md2man knows: links become their
-- text, table pipes and HTML go
local function plain(s)
    s = s:gsub("%[([^%]]+)%]%([^)]+%)", "%1")
    s = s:gsub("\\|", "|"):gsub("<br>", " ")
    -- the page is ASCII (groff reads Latin-1 unless told otherwise)
    s = s:gsub("\226\128\166", "..."):gsub("\226\128\147", "-")
         :gsub("\226\128\148", "--"):gsub("\194\160", " ")
    return (s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""))
end

local function show(v)
    if type(v) == "string" then return string.format('`"%s"`', v) end
    if type(v) == "table" then return "a table" end
    if type(v) == "number" and v >= 2^31 and v == math.floor(v) then
        return string.format("`%.0f`", v)
    end
    return "`" .. tostring(v) .. "`"
end

-- "an integer from 1 to 64; default 1; required" for a schema entry
local function describe(spec)
    local t = spec.type
    local what = ({
        string = "a string", integer = "an integer", number = "a number",
        boolean = "`true` or `false`", table = "a table",
        ["function"] = "a function", hostport = '`"host:port"`',
        workers = 'an integer of at least 1, or `"auto"` (one per CPU)',
    })[t]
    if t == "enum" then
        local v = {}
        for i, x in ipairs(spec.values) do v[i] = show(x) end
        what = "one of " .. table.concat(v, ", ")
    end
    what = what or t
    if spec.min and spec.max then
        what = what .. " from " .. show(spec.min):gsub("`", "") .. " to "
               .. show(spec.max):gsub("`", "")
    elseif spec.min then
        what = what .. " of at least " .. show(spec.min):gsub("`", "")
    elseif spec.max then
        what = what .. " of at most " .. show(spec.max):gsub("`", "")
    end
    if spec.required then
        what = what .. "; required"
    elseif spec.default ~= nil then
        what = what .. "; default " .. show(spec.default)
    end
    if spec.secret then
        what = what .. "; a secret: never logged nor shown in errors"
    end
    return what
end

local function sorted_keys(t)
    local k = {}
    for name in pairs(t) do k[#k + 1] = name end
    table.sort(k)
    return k
end

local function section(title, sch)
    emit("## " .. title)
    emit()
    for _, k in ipairs(sorted_keys(sch)) do
        local spec = sch[k]
        local text = describe(spec) .. "."
        if spec.doc then text = text .. " " .. spec.doc end
        emit("- `" .. k .. "` -- " .. text)
    end
    emit()
end

-- A sentence from a table cell: capital first, full stop last.
local function sentence(t)
    if t == "" then return t end
    t = t:gsub("^%l", string.upper)
    if not t:find("[.!?)]$") then t = t .. "." end
    return t
end

-- key -> meaning, from the first table row naming it in a page: a row
-- whose first cell names keys (`a`, `b`) gives its last cell to each; a
-- row that shows a setting (`simple = "OK"` | `+OK`) is an example
local function meanings(page)
    local m = {}
    local f = io.open(page, "rb")
    if not f then return m end
    for line in f:lines() do
        if line:match("^| `") then
            local cells = {}
            for c in (line:gsub("\\|", "\1")):gmatch("|([^|]*)") do
                cells[#cells + 1] = c:gsub("\1", "|")
            end
            while #cells > 0 and cells[#cells]:match("^%s*$") do
                cells[#cells] = nil
            end
            local first, last = cells[1] or "", plain(cells[#cells] or "")
            local setting, value = first:match("^%s*`(([%w_]+) = [^`]*)`%s*$")
            if setting and m[value] == nil and #cells >= 2 then
                m[value] = "For example `" .. setting .. "` answers " .. last
                           .. "."
            elseif not setting then
                for key in first:gmatch("`([%w_]+)`") do
                    if m[key] == nil then m[key] = sentence(last) end
                end
            end
        end
    end
    f:close()
    return m
end

local function title_of(page, name)
    local f = io.open(page, "rb")
    local first = f and f:read("*l") or ""
    if f then f:close() end
    local t = first:match("^# `[^`]+` — (.+)$") or first:match("^# (.+)$")
    return plain(t or name)
end

local s = config.schemas()

emit("# shotover.lua(5) -- shotover's configuration file")
emit()
emit("<!-- Generated by docs/gen-config.lua from the schemas the code checks")
emit("     a config against and the key tables of docs/transforms/: do not")
emit("     edit; `build/shotover lua docs/gen-config.lua "
     .. "docs/shotover.lua.5.md`")
emit("     writes it again. -->")
emit()
emit("## DESCRIPTION")
emit()
emit("A config is a Lua file that returns a table. `shotover check -c FILE`")
emit("lists every problem of one with its path, and `shotover run -c FILE`")
emit("serves it; SIGHUP loads it again. This page lists every key the code")
emit("accepts, with its type, bounds and default: it is written from the")
emit("same schemas that check a config, so it says what shotover does.")
emit()
emit("```")
emit("return {")
emit("    workers = \"auto\",")
emit("    sources = {")
emit("        { name = \"redis\", protocol = \"redis\", "
     .. "listen = \"127.0.0.1:6379\",")
emit("          chain = { { \"redis\", remote = \"127.0.0.1:6380\" } } },")
emit("    },")
emit("}")
emit("```")
emit()
section("TOP-LEVEL KEYS", s.top)
section("ADMIN KEYS", s.admin)
section("SOURCE KEYS", s.source)
emit("## CHAIN ELEMENTS")
emit()
emit("A chain is a list of elements, the last a sink. An element is")
emit("`{ \"name\", key = value, ... }` (a transform module found as")
emit("`shotover.transforms.NAME` on the module path, so rocks add their own),")
emit("or a Lua function `function(batch, chain) ... end` (an inline")
emit("transform). Every element takes `name`, its name in logs and metrics.")
emit("The built-in transforms and their keys follow; each has a page in")
emit("docs/transforms/ with examples.")
emit()
local dir = root .. "/lua/shotover/transforms"
local names = {}
local ls = assert(io.popen("ls " .. dir))
for f in ls:lines() do
    local n = f:match("^([%w_]+)%.lua$")
    if n then names[#names + 1] = n end
end
ls:close()
table.sort(names)
for _, n in ipairs(names) do
    local mod = require("shotover.transforms." .. n)
    local page = root .. "/docs/transforms/" .. n .. ".md"
    local m = meanings(page)
    local kind = mod.capabilities and mod.capabilities.sink and "sink"
                 or "transform"
    emit("## " .. n:upper():gsub("_", " "))
    emit()
    emit("`" .. n .. "`, a " .. kind .. ": " .. title_of(page, n) .. ".")
    emit()
    local sch = mod.schema or {}
    local keys = sorted_keys(sch)
    if #keys == 0 then
        emit("It takes no keys but `name`.")
        emit()
    end
    for _, k in ipairs(keys) do
        local text = describe(sch[k]) .. "."
        if m[k] and m[k] ~= "" then text = text .. " " .. m[k] end
        emit("- `" .. k .. "` -- " .. text)
    end
    if #keys > 0 then emit() end
end
emit("## SEE ALSO")
emit()
emit("shotover(1); docs/transforms/ for each transform with examples;")
emit("docs/admin.md for the admin endpoint; docs/lua-api.md for writing")
emit("transforms.")

local f = assert(io.open(out_path, "wb"))
f:write(table.concat(out, "\n"), "\n")
f:close()
