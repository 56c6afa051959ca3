-- luacheck settings: `luacheck -q lua t examples` from here (ctest's
-- `luacheck` test runs exactly that; any warning fails it).
std = "luajit"              -- LuaJIT 2.1 (OpenResty's): jit, bit, table.new
max_line_length = 80        -- as the code is written (STYLE.md)
codes = true
-- A transform keeps the one signature (new(conf, env), check_config(conf,
-- ctx), transform(self, batch, chain)) whether it uses every argument or
-- not, as APISIX's plugins do.
unused_args = false

-- No ngx-style globals: shotover modules reach everything through require.

files["t"] = {
    std = "+busted",
    -- specs keep their test data, expected errors and sentence titles on
    -- one line each; the code under test is held to 80 columns
    max_line_length = false,
}
files["examples/transform/spec"] = { std = "+busted" }
