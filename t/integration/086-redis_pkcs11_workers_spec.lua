-- pkcs11 in a running shotover with four workers: each worker, a thread of
-- one process, makes its key manager while the config loads (all at once:
-- one C_Initialize for the process, a session and a login each) on a real
-- SoftHSM2 token; a data key wrapped on one worker unwraps on any other.
local h = require "harness"
local softhsm = require "softhsm"

local MODULE = softhsm.MODULE
local PIN = "2468"

-- WRAP: a data key, answered as "HEX_DEK HEX_WRAPPED KEK_ID worker";
-- UNWRAP HEX_WRAPPED KEK_ID: the data key in hex and the worker
local function config(port, admin)
    return string.format([[
local pkcs11 = require "shotover.keys.pkcs11"
local message = require "shotover.message"
local reply = require "shotover.redis.reply"
local km = assert(pkcs11.new({ "pkcs11", module = %q,
    token_label = "workers", pin = %q, key_label = "kek" }, "key_manager"))
local me = "session-" .. tostring(tonumber(km.session))
local function hex(s)
    return (s:gsub(".", function(c) return string.format("%%02x", c:byte()) end))
end
local function unhex(s)
    return (s:gsub("%%x%%x", function(x) return string.char(tonumber(x, 16)) end))
end
return {
  workers = 4,
  admin = { listen = "127.0.0.1:%d" },
  sources = {
    { name = "hsm", protocol = "redis", listen = "127.0.0.1:%d",
      chain = {
        function(batch, chain)
          local resp = message.new_batch(#batch)
          for i = 1, #batch do
            local m = batch[i]
            local cmd = m:command()
            if cmd == "WRAP" then
              local dek, wrapped, id = km:data_key(chain)
              resp:set(i, reply.bulk(table.concat({ hex(dek), hex(wrapped),
                                                    id, me }, " ")))
            elseif cmd == "UNWRAP" then
              local dek, err = km:unwrap(unhex(m:arg(2)), m:arg(3), chain)
              resp:set(i, dek and reply.bulk(hex(dek) .. " " .. me)
                              or reply.error("ERR " .. err))
            else
              resp:set(i, reply.simple("PONG"))
            end
          end
          return resp
        end,
      } },
  },
}
]], MODULE, PIN, admin, port)
end

describe("pkcs11 in a running proxy with several workers", function()
    local port
    setup(function()
        softhsm.token("workers", PIN, "kek")
        port = h.free_port()
        local admin = h.free_port()
        h.shotover({ config = config(port, admin), port = port })
        -- workers start one after the other, each logging in to the
        -- token: ready once every one serves
        h.wait_until(function()
            return h.http("GET", admin, "/ready") == 200
        end, 30, "every worker to serve")
    end)
    teardown(h.cleanup)

    it("wraps on one worker and unwraps on every other", function()
        local wrapped = {}
        local workers = {}
        -- connections land on workers as the kernel spreads them
        -- (SO_REUSEPORT); go on until at least two workers wrapped
        for _ = 1, 60 do
            local out = h.cli(port, "WRAP")
            local dek, w, id, me = out:match("^(%x+) (%x+) (%S+) (%S+)$")
            assert(dek, out)
            assert.are.equal("kek", id)
            wrapped[#wrapped + 1] = { dek = dek, w = w, by = me }
            workers[me] = true
            local n = 0
            for _ in pairs(workers) do n = n + 1 end
            if n >= 2 and #wrapped >= 8 then
                break
            end
        end
        local crossed = 0
        for _, x in ipairs(wrapped) do
            local out = h.cli(port, "UNWRAP", x.w, "kek")
            local dek, me = out:match("^(%x+) (%S+)$")
            assert.are.equal(x.dek, dek, out)
            if me ~= x.by then
                crossed = crossed + 1
            end
        end
        assert.is_true(crossed > 0, "no key unwrapped on another worker")
    end)
end)
