-- parallel_map: spreads the requests of each batch over N copies of a
-- sub-chain, which run at the same time, and puts the replies back together
-- in request order (or, for Cassandra, in the order the copies finished).
-- See docs/transforms/parallel_map.md.
local message = require "shotover.message"
local protocols = require "shotover.protocols"

local by_id = protocols.by_id
local ceil = math.ceil
local min = math.min
local new_batch = message.new_batch

local _M = {
    name = "parallel_map",
    version = "0.1.0",
    -- a sink: its copies end in sinks
    capabilities = { sink = true, lanes = true, subchains = true },
    schema = {
        chain = { type = "table", required = true },
        parallelism = { type = "integer", min = 1, max = 64, default = 4 },
        ordered = { type = "boolean", default = true },
    },
}

local mt = { __index = {} }
local methods = mt.__index

function _M.subchains(conf)
    return { { chain = conf.chain, path = ".chain" } }
end

function _M.check_config(conf, ctx)
    -- out of order only where replies carry their request's id (the
    -- protocols whose connections run batches at once: CQL)
    local proto = ctx and ctx.protocol and protocols.find(ctx.protocol)
    if not conf.ordered and proto and not proto.lanes then
        return nil, "ordered = false needs a cassandra source: Redis clients "
                    .. "match replies to requests by their order"
    end
    return true
end

function _M.new(conf, env)
    local self = setmetatable({ n = conf.parallelism, ordered = conf.ordered,
                                copies = {},
                                proto = protocols.of_env(env) }, mt)
    for k = 1, conf.parallelism do
        self.copies[k] = env.build_chain(conf.chain, "copy" .. k)
    end
    return self
end

local function run_copy(copy, ctx, batch)
    return copy:run(ctx, batch)
end

-- the replies r of chunk k into resp: at their requests' places, or
-- (unordered) after those already there
local function put_back(k, r, resp, state)
    local size, ordered = state.size, state.ordered
    for j = 1, r.n do
        if ordered then
            resp:set((k - 1) * size + j, r[j])
        else
            state.at = state.at + 1
            resp:set(state.at, r[j])
        end
    end
end

function methods.transform(self, batch, chain)
    local n, copies, conn = batch.n, self.copies, chain.conn
    -- a Redis client that pinned a backend connection (MULTI, SELECT, AUTH)
    -- stays on copy 1, where its state is
    if conn.pm_pinned == nil and n > 0 then
        local pins = (self.proto or by_id(batch[1].proto)).pins
        for i = 1, n do
            if pins(batch[i]) then
                conn.pm_pinned = true
                break
            end
        end
    end
    if conn.pm_pinned then
        return run_copy(copies[1], chain:sub_context(copies[1]), batch)
    end
    -- chunks of consecutive requests, the first going to the next copy in
    -- turn for this connection, so single-request batches spread too
    local chunks = min(self.n, n)
    local size = ceil(n / chunks)
    chunks = ceil(n / size)
    local first = conn.pm_next or 1
    conn.pm_next = first % self.n + 1
    if chunks == 1 then
        return run_copy(copies[first], chain:sub_context(copies[first]), batch)
    end
    local tasks = {}
    for k = 1, chunks do
        local sub = new_batch(0)
        for i = (k - 1) * size + 1, min(k * size, n) do
            sub:push(batch[i])
        end
        local copy = copies[(first + k - 2) % self.n + 1]
        tasks[k] = chain:spawn(run_copy, copy, chain:sub_context(copy), sub)
    end
    local resp = new_batch(n)
    -- per coroutine (chain context): another connection's batch, or another
    -- batch of this one (lanes), runs while this one waits
    local state = chain[self]
    if state == nil then
        state = {}
        chain[self] = state
    end
    state.at, state.size, state.ordered = 0, size, self.ordered
    chain:join_each(tasks, put_back, resp, state)
    return resp
end

return _M
