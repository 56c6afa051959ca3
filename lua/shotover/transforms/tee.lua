-- tee: sends every request down the chain and, as well, through a sub-chain
-- (a shadow cluster, a new version of a backend), comparing the two replies
-- when asked to.  With wait = true both are sent at once and the client's
-- reply waits for both; with wait = false the sub-chain runs on a shadow
-- connection after the client has its reply, through a bounded queue whose
-- overflow is dropped and counted.  Which side's reply the client gets is a
-- switch the admin endpoint can flip.  See docs/transforms/tee.md.
local ffi = require "ffi"
local base = require "shotover.ffi"
local message = require "shotover.message"
local metrics = require "shotover.metrics"
local log = require "shotover.log"
local runner = require "shotover.runner"
local protocols = require "shotover.protocols"
local redact = require "shotover.redact"

local C = base.C
local pcall = pcall
local fmt = string.format
local new_batch = message.new_batch
local error_reply = message.error_reply
local add = metrics.add
local same = C.sh_ffi_frame_same
local show = redact.message             -- credentials hidden


local _M = {
    name = "tee",
    version = "0.1.0",
    -- not lanes: its shadows and comparisons follow one batch after another
    capabilities = { subchains = true },
    schema = {
        chain = { type = "table", required = true },
        behavior = { type = "enum", default = "ignore",
                     values = { "ignore", "log_mismatch", "fail_on_mismatch",
                                "subchain_on_mismatch" } },
        mismatch_chain = { type = "table" },
        wait = { type = "boolean", default = true },
        buffer_size = { type = "integer", min = 1, default = 1024 },
        result_source = { type = "enum", default = "main",
                          values = { "main", "tee" } },
    },
}

local mt = { __index = {} }
local methods = mt.__index

function _M.subchains(conf)
    local out = { { chain = conf.chain, path = ".chain" } }
    if conf.mismatch_chain then
        out[2] = { chain = conf.mismatch_chain, path = ".mismatch_chain" }
    end
    return out
end

-- every problem at once: true, or nil and the list
function _M.check_config(conf)
    local errs = {}
    if conf.behavior == "subchain_on_mismatch" then
        if conf.mismatch_chain == nil then
            errs[#errs + 1] = "mismatch_chain: required by behavior = "
                              .. "\"subchain_on_mismatch\""
        end
    elseif conf.mismatch_chain ~= nil then
        errs[#errs + 1] = "mismatch_chain: only used by behavior = "
                          .. "\"subchain_on_mismatch\""
    end
    if conf.behavior == "fail_on_mismatch" and not conf.wait then
        errs[#errs + 1] = "behavior = \"fail_on_mismatch\" needs wait = "
                          .. "true: an asynchronous tee compares after the "
                          .. "client has its reply"
    end
    if #errs > 0 then
        return nil, errs
    end
    return true
end

local switch_out = ffi.new("int32_t *[1]")
local err_out = ffi.new("const char *[1]")

-- The requests to copy: the batch itself when all are, else a new batch
-- and the index in `batch` of each of its requests.  The tee does not copy
-- requests whose replies are not one per request or would reach the client
-- twice (SUBSCRIBE, MONITOR, CQL REGISTER): its protocol's `streams`.
local function copy_of(batch, skipped)
    local n = batch.n
    for i = 1, n do
        if skipped(batch[i]) then
            local sub, idx = new_batch(0), {}
            for k = 1, n do
                if not skipped(batch[k]) then
                    sub:push(batch[k])
                    idx[#idx + 1] = k
                end
            end
            return sub, idx
        end
    end
    return batch, nil
end

-- Compare replies: main[idx[i] or i] against tee[i], for i in 1..tee.n.
-- Acts on each mismatch as configured; returns the mismatching requests
-- (a batch) when a mismatch chain wants them.  `fail`, when given, gets an
-- error reply for each mismatching position of the client's batch.
function methods.compare(self, reqs, main, tee, idx, fail)
    local bad, n = nil, 0
    for i = 1, tee.n do
        local k = idx and idx[i] or i
        local a, b = main[k], tee[i]
        if a ~= nil and b ~= nil and same(a, b) == 0 then
            n = n + 1
            local req = reqs[i]
            if self.behavior == "log_mismatch" then
                log.warn("tee \"%s\": replies differ for %s: main %s, tee %s",
                         self.name, show(req, nil, "log"),
                         show(a, req, "log"), show(b, req, "log"))
            elseif self.behavior == "subchain_on_mismatch" then
                bad = bad or new_batch(0)
                bad:push(req)
            elseif fail then
                fail[k] = error_reply(req, fmt(
                    "shotover: tee \"%s\": the replies differ (main %s, "
                    .. "tee %s)", self.name, show(a, req, "log"),
                    show(b, req, "log")))
            end
        end
    end
    if n > 0 then
        add(self.m_mismatch, n)
    end
    return bad
end

-- A shadow run's batches (shotover.runner runs its loop): what the
-- client's tee pushed, each request paired with the client's reply; run
-- the tee chain over them and compare.
local function shadow_batch(self, ctx, batch)
    local resp = self.sub:run(ctx, batch)
    if self.behavior ~= "ignore" then
        local bad = self:compare(batch, runner.paired(ctx.c), resp, nil)
        if bad then
            self.mismatch:run(ctx[self], bad)
        end
    end
    return resp
end

-- A shadow starts: its context, its session seeded from the client's
-- (see push), and the mismatch chain's context in ctx[self].
local function shadow_open(self)
    return function(c)
        local ctx = self.sub:context(c)
        local key = runner.key(c)
        local seed = self.seeds[key]
        if seed then
            self.seeds[key] = nil
            for k, v in pairs(seed) do
                ctx.conn[k] = v
            end
        end
        ctx[self] = self.mismatch and self.mismatch:context(c)
        return shadow_batch, self, ctx
    end
end

function _M.new(conf, env)
    local self = setmetatable({
        name = conf.name or "tee", behavior = conf.behavior,
        wait = conf.wait, buffer = conf.buffer_size, seeds = {},
        sub = env.build_chain(conf.chain, "tee"),
        proto = protocols.of_env(env) or protocols.get("redis"),
    }, mt)
    if conf.mismatch_chain then
        self.mismatch = env.build_chain(conf.mismatch_chain, "mismatch")
    end
    local labels = { name = self.name }
    self.m_mismatch = metrics.counter("shotover_tee_mismatches_total",
        "requests whose main and tee replies differed", labels)
    self.m_dropped = metrics.counter("shotover_tee_dropped_total",
        "requests an asynchronous tee dropped because its buffer was full",
        labels)
    -- which side answers the client: flipped at run time with
    -- PUT /switches/<name>.result_source
    if C.sh_ffi_switch_register(self.name .. ".result_source", "main|tee",
                                conf.result_source == "tee" and 1 or 0,
                                switch_out, err_out) ~= 0
    then
        error(fmt("%s: tee: switch %s.result_source: %s", env.path or "chain",
                  self.name, ffi.string(err_out[0])), 0)
    end
    self.switch = switch_out[0]
    if env.worker ~= nil then
        self.handler = runner.add_handler(shadow_open(self))
    end
    return self
end

-- Asynchronous: queue the copies on this client's shadow run,
-- dropping (and counting) what does not fit in the buffer.  Handshake
-- frames are never dropped: without them the shadow's session is useless.
function methods.push(self, chain, batch, resp)
    local any = false
    for i = 1, batch.n do
        any = any or not self.proto.streams(batch[i])
    end
    if not any then
        return
    end
    local shadow, new = runner.shadow(chain.c, self.handler)
    if shadow == nil then
        add(self.m_dropped, batch.n)
        return
    end
    if new then
        -- a new shadow (the first, or one after its backend failed): its
        -- CQL sinks replay the client's handshake and USE from this seed
        local conn = chain.conn
        self.seeds[runner.key(shadow)] = {
            cql_startup = conn.cql_startup, cql_auth = conn.cql_auth,
            keyspace = conn.keyspace,
        }
    end
    local room = self.buffer - runner.queued(shadow)
    local keep = self.behavior ~= "ignore"
    local dropped = 0
    for i = 1, batch.n do
        local m = batch[i]
        if self.proto.streams(m) then    -- luacheck: ignore
        elseif room > 0 or self.proto.passthrough(m) then
            -- (a handshake is never dropped: without it the shadow's
            -- session is useless)
            runner.push(shadow, m, keep and resp[i] or nil)
            room = room - 1
        else
            dropped = dropped + 1
        end
    end
    if dropped > 0 then
        add(self.m_dropped, dropped)
    end
end

function methods.transform(self, batch, chain)
    local tee_answers = self.switch[0] == 1
    if not self.wait and not tee_answers and chain.c ~= nil then
        local resp = chain:next(batch)
        self:push(chain, batch, resp)
        return resp
    end
    -- both sides at once: the copy runs until it waits for its backends,
    -- the main chain runs meanwhile, and one wait serves both
    local reqs, idx = copy_of(batch, self.proto.streams)
    local task = chain:spawn(chain.run_sub, chain, self.sub, reqs)
    local ok, main = pcall(chain.next, chain, batch)
    local tok, tee = pcall(chain.join, chain, task)
    if not ok then
        error(main, 0)
    end
    if not tok then
        -- the copy failed: the client still has its main replies
        log.with(log.ERROR, { run = chain.c, element = self.name },
                 "tee \"%s\": the tee chain failed: %s", self.name,
                 redact.scrub(tee, reqs))
        if not tee_answers then
            return main
        end
        error(tee, 0)
    end
    local fail, bad
    if self.behavior ~= "ignore" then
        fail = self.behavior == "fail_on_mismatch" and {} or nil
        bad = self:compare(reqs, main, tee, idx, fail)
    end
    local out = main
    if tee_answers then
        -- the copies' replies, and the main ones for requests not copied
        if idx then
            for i, k in ipairs(idx) do
                out:set(k, tee[i])
            end
        else
            out = tee
        end
    end
    if fail then
        for k, f in pairs(fail) do
            out:set(k, f)
        end
    end
    if bad then
        chain:run_sub(self.mismatch, bad)
    end
    return out
end

return _M
