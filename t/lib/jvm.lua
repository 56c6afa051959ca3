-- What the harnesses of the Java servers the tests run (t/lib/cassandra.lua,
-- t/lib/kafka.lua) share: the source tree, the pinned versions
-- (t/versions), the jars fetched from Maven Central (t/maven-fetch), the
-- class path and the java binary.
local h = require("harness")

local M = {}

local src = os.getenv("SHOTOVER_SRC")
if not src or src == "" then
    -- t/lib/jvm.lua -> repo root
    local me = debug.getinfo(1, "S").source:gsub("^@", "")
    src = me:match("^(.*)/t/lib/[^/]*$") or "."
end
M.src = src

-- t/versions as a table NAME -> value
function M.versions()
    local t = {}
    local text = h.read_file(src .. "/t/versions") or error("no " .. src .. "/t/versions")
    for line in text:gmatch("[^\n]+") do
        local k, v = line:match("^%s*([%w_]+)=([^%s#]*)")
        if k then t[k] = v end
    end
    return t
end

-- the version of `kind` (cassandra, kafka): $KIND_VERSION, else t/versions
function M.version(kind)
    local var = kind:upper() .. "_VERSION"
    local v = os.getenv(var)
    if v and v ~= "" then return v end
    return M.versions()[var]
end

local lib_cache = {}

-- the dir holding `kind`'s jars at `version` (fetched on first use)
function M.lib_dir(kind, version)
    version = version or M.version(kind)
    local key = kind .. "-" .. version
    if lib_cache[key] then return lib_cache[key] end
    local r = h.run({ src .. "/t/maven-fetch", kind, version }, { timeout = 900 })
    if r.code ~= 0 or r.timed_out then
        error("t/maven-fetch " .. kind .. " " .. version .. " failed ("
            .. tostring(r.code) .. "):\n" .. r.stderr .. r.stdout, 2)
    end
    local dir = h.chomp(r.stdout):match("([^\n]+)$")
    lib_cache[key] = dir
    return dir
end

local machine

-- the jars of dir, sorted; native libraries for other systems are left
-- out (they only slow the class path scan)
function M.jars(dir)
    if not machine then
        machine = h.chomp(h.run({ "uname", "-m" }, { timeout = 10 }).stdout)
        machine = machine == "aarch64" and "aarch_64" or machine
    end
    local r = h.run({ "sh", "-c", 'ls -1 "$1"/*.jar', "sh", dir }, { timeout = 10 })
    local jars = {}
    for l in r.stdout:gmatch("[^\n]+") do
        local arch = l:match("%-linux%-([%w_]+)%.jar$")
        if not (l:find("%-osx%-") or l:find("%-windows%-") or (arch and arch ~= machine)) then
            jars[#jars + 1] = l
        end
    end
    table.sort(jars)
    assert(#jars > 0, "no jars in " .. dir)
    return jars
end

-- the class path of dir's jars
function M.class_path(dir)
    return table.concat(M.jars(dir), ":")
end

-- $JAVA, else $JAVA_HOME/bin/java, else java on PATH
function M.java()
    local j = os.getenv("JAVA")
    if j and j ~= "" then return j end
    local home = os.getenv("JAVA_HOME")
    if home and home ~= "" then return home .. "/bin/java" end
    return "java"
end

return M
