-- An example third-party transform as its own rock.  Its module is
-- shotover.transforms.key_prefix, so a config names it { "key_prefix", ... }
-- once the rock is installed where shotover looks (docs/install.md):
--
--   luarocks --lua-version=5.1 make --local      # ~/.luarocks: found as is
--   luarocks --lua-version=5.1 --tree DIR make   # SHOTOVER_LUA_PATH=...
--
-- It does not depend on the shotover rock: shotover's own modules come with
-- the binary that runs the transform.  Its specs run inside that binary
-- (`luarocks test` runs `shotover lua busted`).
rockspec_format = "3.0"
package = "shotover-transform-key_prefix"
version = "0.1.0-1"
source = {
    url = "git+https://example.invalid/shotover.git",
    tag = "v0.1.0",
    dir = "shotover/examples/transform",
}
description = {
    summary = "shotover transform: put a prefix in front of each Redis key",
    detailed = [[
An example third-party transform for the shotover proxy: puts `prefix` in
front of the first key of every Redis request, then passes the batch on.
]],
    license = "Apache-2.0",
}
dependencies = {
    "lua == 5.1",
}
build = {
    type = "builtin",
    modules = {
        ["shotover.transforms.key_prefix"] =
            "lua/shotover/transforms/key_prefix.lua",
    },
}
test = {
    type = "command",
    command = "shotover lua busted",
}
