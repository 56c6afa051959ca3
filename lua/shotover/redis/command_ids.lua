-- Redis command ids: the RESP codec numbers each request's command as it
-- parses it (sh_frame_t.cmd_id: 1.. in the order of
-- shotover.redis.commands, 0 when Redis has no such command), so
-- transforms that go by command index tables by a small integer instead of
-- making an upper-cased Lua string of the name per request.
local ffi = require "ffi"
local base = require "shotover.ffi"

local C = base.C
local ffi_string = ffi.string

local _M = { _VERSION = "0.1.0" }

-- The command id of Redis request m (0: not a Redis command).
function _M.of(m)
    return m.cmd_id
end

-- The id of command `name` (any case), or nil when Redis has no such
-- command.
function _M.id(name)
    local id = C.sh_ffi_resp_command_id(name, #name)
    return id ~= 0 and id or nil
end

-- How many commands have ids (ids are 1..count).
local count = 0
while C.sh_ffi_resp_command_name(count + 1) ~= nil do
    count = count + 1
end
_M.count = count

-- The upper-case name of id, or nil.
local names = {}
function _M.name(id)
    local n = names[id]
    if n == nil then
        local p = C.sh_ffi_resp_command_name(id)
        if p == nil then
            return nil
        end
        n = ffi_string(p)
        names[id] = n
    end
    return n
end

return _M
