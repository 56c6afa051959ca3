-- aws_kms inside a running shotover: a request whose chain needs a data key
-- waits for KMS (the KMS stand-in, t/lib/kms_standin.py, answering after a
-- delay) on libuv's thread pool (c/sh_fetch.c) while the same worker, one
-- thread, goes on answering other clients; the waiting request then gets
-- its key, wrapped and unwrapped through the same path.  A KMS that is
-- not there fails only the request that needed it.
local h = require "harness"
local kms = require "kms"

local DELAY_MS = 1500

-- an inline element: KMS makes a data key and unwraps it again (two
-- waits), anything else is answered at once
local function config(port, standin, bad_port)
    return string.format([[
local keys = require "shotover.keys.aws_kms"
local message = require "shotover.message"
local reply = require "shotover.redis.reply"
local function km(endpoint)
    return assert(keys.new({ "aws_kms", region = %q, key_id = "alias/shotover",
        endpoint = endpoint, ca = %q, access_key_id = %q,
        secret_access_key = %q, timeout_ms = 5000 }, "key_manager"))
end
local good, bad
return {
  workers = 1,
  sources = {
    { name = "kms", protocol = "redis", listen = "127.0.0.1:%d",
      chain = {
        function(batch, chain)
          good = good or km(%q)
          bad = bad or km("https://127.0.0.1:%d")
          local resp = message.new_batch(#batch)
          for i = 1, #batch do
            local cmd = batch[i]:command()
            if cmd == "KMS" or cmd == "KMSBAD" then
              local k = cmd == "KMS" and good or bad
              local dek, wrapped, id = k:data_key(chain)
              if dek then
                local back, err = k:unwrap(wrapped, id, chain)
                resp:set(i, back == dek and reply.bulk(id)
                            or reply.error("ERR " .. tostring(err)))
              else
                resp:set(i, reply.error("ERR " .. wrapped))
              end
            else
              resp:set(i, reply.simple("PONG"))
            end
          end
          return resp
        end,
      } },
  },
}
]], kms.REGION, standin.ca, kms.ACCESS_KEY, kms.SECRET, port,
        standin.endpoint, bad_port)
end

describe("aws_kms in a running proxy", function()
    local proxy, standin, port
    setup(function()
        standin = kms.start({ delay_ms = DELAY_MS })
        port = h.free_port()
        proxy = h.shotover({ config = config(port, standin, h.free_port()),
                             port = port })
    end)
    teardown(h.cleanup)

    it("serves other clients while a request waits for KMS", function()
        local out = h.tmpfile("kms-client.out")
        local t0 = h.now()
        local waiting = h.spawn({ "redis-cli", "-p", tostring(port), "KMS" },
                                { stdout = out, stderr = "stdout" })
        h.wait_until(function()
            return (h.read_file(standin.log) or "")
                :find("received TrentService.GenerateDataKey", 1, true)
        end, 10, "the stand-in to get GenerateDataKey")
        -- the worker's only thread is free: PING comes back at once
        local t1 = h.now()
        assert.are.equal("PONG", h.chomp(h.cli(port, "PING")))
        assert.is_true(h.now() - t1 < DELAY_MS / 2000,
                       "PING waited for KMS")
        assert.is_true(waiting:alive(), "KMS answered before PING")
        local st = waiting:wait(15)
        assert.is_table(st)
        assert.are.equal(0, st.code)
        -- GenerateDataKey then Decrypt, each after the stand-in's delay
        assert.are.equal(kms.KEY1, h.chomp(h.read_file(out)))
        assert.is_true(h.now() - t0 >= 2 * DELAY_MS / 1000)
        assert.matches("received TrentService.Decrypt",
                       h.read_file(standin.log), 1, true)
    end)

    it("fails only the request whose KMS is not there", function()
        local r = h.cli(port, "KMSBAD")
        assert.matches("ECONNREFUSED: connecting to 127.0.0.1", r, 1, true)
        assert.matches("key_manager: KMS GenerateDataKey", r, 1, true)
        assert.are.equal("PONG", h.chomp(h.cli(port, "PING")))
        assert.is_true(proxy:alive())
    end)
end)
