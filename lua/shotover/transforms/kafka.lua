-- kafka: change data capture.  Passes every batch on, then for each
-- request the database acknowledged produces its change records (one per
-- written row or command, one per statement of a CQL BATCH; built from
-- m:query_info(), shotover.kafka.record) to Kafka.  With wait = true the
-- client's reply waits until Kafka acknowledged them (acks=all), and a
-- request whose records failed gets an error instead: the write was
-- applied but not recorded (at-least-once: the client may retry).  With
-- wait = false records go in the background through a bounded per-worker
-- buffer whose overflow is dropped and counted.  The producer is polled on
-- the worker's loop (shotover.kafka.producer).  See
-- docs/transforms/kafka.md.
local base = require "shotover.ffi"
local message = require "shotover.message"
local metrics = require "shotover.metrics"
local pools = require "shotover.pools"
local protocols = require "shotover.protocols"
local record = require "shotover.kafka.record"
local plan = require "shotover.kafka.plan"
local bound = require "shotover.cql.bound"
local log = require "shotover.log"
local tls = require "shotover.tls"
local command_ids = require "shotover.redis.command_ids"
local decode = require "shotover.redis.decode"

local C = base.C
local fmt = string.format
local add, observe, now_ns = metrics.add, metrics.observe, metrics.now_ns
local settle = C.sh_ffi_batch_settle

-- the table schemas m:query_info() needs to find a CQL request's key
local cql_schema = require "shotover.cql.schema"

local _M = {
    name = "kafka",
    version = "0.1.0",
    -- per-batch state lives on the stack and in the batch's waiters; the
    -- Redis transaction being queued is the connection's (no lanes there)
    capabilities = { lanes = true },
    schema = {
        brokers = { type = "string", required = true },
        topic = { type = "string" },
        topic_prefix = { type = "string", default = "shotover." },
        wait = { type = "boolean", default = true },
        buffer = { type = "integer", min = 1, default = 10000 },
        timeout_ms = { type = "integer", min = 1, default = 10000 },
        create_topics = { type = "table" },
        properties = { type = "table" },
        -- TLS to the brokers: librdkafka's ssl.* properties (shotover.tls)
        tls = { type = "table" },
    },
}

-- librdkafka's linger.ms when wait = false (librdkafka's own default, 5,
-- stays for wait = true: there the client waits for it)
_M.ASYNC_LINGER_MS = 50

local mt = { __index = {} }
local methods = mt.__index

-- properties the transform sets itself, and why a config may not
local OWN = {
    ["bootstrap.servers"] = "set by brokers",
    ["message.timeout.ms"] = "set by timeout_ms",
    ["delivery.timeout.ms"] = "set by timeout_ms",
    ["log.queue"] = "set by shotover: librdkafka's log goes to shotover's",
}
local FIXED = { acks = "all", ["enable.idempotence"] = "true",
                ["request.required.acks"] = "all" }

local function check_create(c, errs)
    for k, v in pairs(c) do
        if k ~= "partitions" and k ~= "replication" then
            errs[#errs + 1] = fmt("create_topics.%s: unknown key (give "
                                  .. "partitions and replication)",
                                  tostring(k))
        elseif type(v) ~= "number" or v % 1 ~= 0
               or (k == "partitions" and v < 1)
               or (k == "replication" and v < 1 and v ~= -1)
        then
            errs[#errs + 1] = fmt("create_topics.%s: a positive integer%s",
                                  k, k == "replication"
                                  and " (or -1: the broker's default)" or "")
        end
    end
end

local function check_properties(p, errs)
    local rest, any = {}, false
    for k, v in pairs(p) do
        local tv = type(v)
        if type(k) ~= "string" or (tv ~= "string" and tv ~= "number"
                                   and tv ~= "boolean") then
            errs[#errs + 1] = fmt("properties.%s: give a librdkafka "
                                  .. "property name and a string value",
                                  tostring(k))
        elseif OWN[k] then
            errs[#errs + 1] = fmt("properties.%s: %s", k, OWN[k])
        elseif FIXED[k] and tostring(v) ~= FIXED[k]
               and not (k ~= "enable.idempotence" and tostring(v) == "-1")
        then
            errs[#errs + 1] = fmt("properties.%s: always %s: acks=all and "
                                  .. "enable.idempotence=true are always on "
                                  .. "(a record counts as written once every "
                                  .. "in-sync replica has it, once)", k,
                                  FIXED[k])
        else
            rest[k], any = v, true
        end
    end
    if not any then
        return
    end
    -- the rest as librdkafka itself sees them
    local ok, producer = pcall(require, "shotover.kafka.producer")
    if not ok then
        errs[#errs + 1] = "properties: librdkafka cannot be loaded to check "
                          .. "them: " .. tostring(producer)
        return
    end
    for _, bad in ipairs(producer.check_properties(rest)) do
        errs[#errs + 1] = fmt("properties.%s: %s", bad.name, bad.message)
    end
end

-- every problem at once: true, or nil and the list
function _M.check_config(conf)
    local errs = {}
    if conf.brokers == "" then
        errs[#errs + 1] = "brokers: give host:port[,host:port...]"
    end
    if conf.topic == "" then
        errs[#errs + 1] = "topic: give a topic name, or leave it out for "
                          .. "one topic per table or database"
    end
    if conf.create_topics then
        check_create(conf.create_topics, errs)
    end
    if conf.properties then
        check_properties(conf.properties, errs)
    end
    if conf.tls ~= nil then
        for _, e in ipairs(tls.check_kafka(conf.tls, "tls")) do
            errs[#errs + 1] = e
        end
    end
    if #errs > 0 then
        return nil, errs
    end
    return true
end

-- A request's records in flight (wait = true): the batch its run waits
-- on, and the first error of its records.
local Waiter = {}
Waiter.__index = Waiter

function Waiter.delivered(w, err)
    local t = w.t
    if err then
        w.err = w.err or err
        add(t.m_errors, 1)
    else
        add(t.m_records, 1)
        observe(t.m_latency, now_ns() - w.t0, 1)
    end
    settle(w.batch)
end

-- Records in the background (wait = false): one waiter for all, which
-- counts them down from the buffer.
local Async = {}
Async.__index = Async

function Async.delivered(a, err)
    local t = a.t
    t.in_flight = t.in_flight - 1
    if err then
        add(t.m_errors, 1)
        t:warn("a record was not delivered: %s", err)
    else
        add(t.m_records, 1)
        observe(t.m_latency, now_ns() - a.t0, 1)
    end
end

function _M.new(conf, env)
    local self = setmetatable({
        name = conf.name or "kafka", wait = conf.wait, buffer = conf.buffer,
        opts = { topic = conf.topic, topic_prefix = conf.topic_prefix },
        in_flight = 0, logged = 0, held = 0,
        -- per prepared write (the session's record of it): its template
        plans = setmetatable({}, { __mode = "k" }),
    }, mt)
    local labels = { name = self.name }
    self.m_records = metrics.counter("shotover_kafka_records_total",
        "change records Kafka acknowledged", labels)
    self.m_errors = metrics.counter("shotover_kafka_errors_total",
        "change records Kafka did not acknowledge (timed out, refused)",
        labels)
    self.m_dropped = metrics.counter("shotover_kafka_dropped_total",
        "change records dropped because an asynchronous kafka transform's "
        .. "buffer was full", labels)
    self.m_latency = metrics.histogram("shotover_kafka_delivery_seconds",
        "time from producing a change record to Kafka's acknowledgement",
        labels)
    if env.worker ~= nil then
        -- a reload with the same settings keeps the producer (and what it
        -- has in flight)
        -- wait = false: nobody waits for a record, so librdkafka may
        -- gather them longer (fewer, bigger produce requests: the broker's
        -- CPU per record fell 2-6x here), unless properties say otherwise
        local props = conf.properties
        if conf.tls ~= nil or not conf.wait and not (props
           and (props["linger.ms"] or props["queue.buffering.max.ms"]))
        then
            props = {}
            for k, v in pairs(conf.properties or {}) do
                props[k] = v
            end
            if not conf.wait and not (props["linger.ms"]
                                      or props["queue.buffering.max.ms"])
            then
                props["linger.ms"] = tostring(_M.ASYNC_LINGER_MS)
            end
            tls.kafka_properties(conf.tls, props)
        end
        local settings = {
            brokers = conf.brokers, timeout_ms = conf.timeout_ms,
            properties = props, name = self.name,
            create_topics = conf.create_topics and {
                partitions = conf.create_topics.partitions or 1,
                replication = conf.create_topics.replication or 1,
            },
        }
        self.producer = pools.get("kafka", settings, function()
            local ok, producer = pcall(require, "shotover.kafka.producer")
            if not ok then
                error(fmt("%s: kafka: librdkafka cannot be loaded (Debian: "
                          .. "install librdkafka1): %s", env.path or "chain",
                          tostring(producer)), 0)
            end
            local made, p = pcall(producer.new, env.worker, settings)
            if not made then
                error((env.path or "chain") .. ": " .. tostring(p), 0)
            end
            return p
        end, function(p) p:close() end)
    end
    return self
end

-- a warning at most once per 10 s (the ones held back are counted)
function methods.warn(self, f, ...)
    local now = now_ns()
    if now - self.logged < 10e9 then
        self.held = self.held + 1
        return
    end
    local held = self.held
    self.logged, self.held = now, 0
    log.warn("kafka \"%s\": %s%s", self.name, fmt(f, ...),
             held > 0 and fmt(" (%d more like it held back)", held) or "")
end

-- Redis: the writes to record for each request of the batch, { [i] =
-- { query_info, ... } }.  A transaction's writes are recorded when EXEC
-- answers with its results, each unless its own result is an error; a
-- DISCARD or an aborted EXEC (nil, EXECABORT) records nothing.  What is
-- queued is the connection's (chain.conn[self]): { n = commands queued,
-- { slot, query_info }... }.
local MULTI = command_ids.id("MULTI")
local EXEC = command_ids.id("EXEC")
local DISCARD = command_ids.id("DISCARD")

local function exec_writes(tx, reply)
    if reply:type() ~= "array" or reply.argc < 0 then
        return nil
    end
    local results = reply:decode()
    local out = {}
    for _, e in ipairs(tx) do
        local v = results and results[e[1]]
        if v ~= nil and not decode.is_error(v) then
            out[#out + 1] = e[2]
        end
    end
    return out
end

local function redis_todo(self, chain, batch, resp, infos)
    local conn = chain.conn
    local todo = {}
    for i = 1, batch.n do
        local m, r = batch[i], resp[i]
        local tx = conn[self]
        local id = m.cmd_id
        if r == nil then                                -- luacheck: ignore
        elseif tx then
            if id == EXEC then
                conn[self] = nil
                todo[i] = exec_writes(tx, r)
            elseif id == DISCARD then
                conn[self] = nil
            elseif not r:is_error() then                -- +QUEUED
                tx.n = tx.n + 1
                if infos[i] then
                    tx[#tx + 1] = { tx.n, infos[i] }
                end
            end
        elseif id == MULTI then
            if not r:is_error() then
                conn[self] = { n = 0 }
            end
        elseif infos[i] and not r:is_error() then
            todo[i] = { infos[i] }
        end
    end
    return todo
end

-- CQL: did the database apply request m (its reply r)?  A RESULT, and
-- for a conditional statement one whose [applied] is true.
local function cql_applied(proto, m, r, qi)
    if r == nil or proto.is_error_reply(r) or r:opcode_name() ~= "RESULT"
    then
        return false
    end
    if qi.lwt then
        local ok, rows = pcall(r.rows, r, m)
        return ok and rows and rows[1] and rows[1]["[applied]"] == true
    end
    return true
end

local function cql_todo(proto, batch, resp, infos)
    local todo = {}
    for i, qi in pairs(infos) do
        if cql_applied(proto, batch[i], resp[i], qi) then
            todo[i] = { qi }
        end
    end
    return todo
end

-- The query_info of each request that may write (the others: nil), and
-- whether any went the general way.  An EXECUTE of a prepared write whose
-- template is known is { plan =, m =, lwt = } instead: its record is the
-- template filled from its bound values (shotover.kafka.plan).
local OP_EXECUTE = C.SH_CQL_EXECUTE
local function planned(self, m, chain)
    local st = bound.statement(m)
    local pl = st and self.plans[st]
    if pl == "read" then
        return false                            -- writes nothing
    end
    if pl and pl.gen == cql_schema.generation
       and (not pl.conn_ks or pl.conn_ks == chain.conn.keyspace) then
        return { plan = pl, m = m, lwt = pl.lwt, chain = chain }
    end
    return nil
end

-- Learn the template of EXECUTE m's statement from its query_info.
local function learn(self, m, qi, conn)
    local st = require("shotover.cql.session").prepared(m)
    local cur = st and self.plans[st]
    if st == nil or cur == false
       or (cur and cur.gen == cql_schema.generation) then
        return                  -- none possible, or a current one
    end
    local ast, ks = m:statement(conn)
    if ast then
        local conn_ks = not (ast.keyspace or st.keyspace) and ks or nil
        self.plans[st] = plan.make(qi, ast, ks, conn_ks, self.opts)
    end
end

local function infos_of(self, batch, chain, proto, cql)
    local infos, slow
    local conn = chain.conn
    for i = 1, batch.n do
        local m = batch[i]
        local info
        if cql and m.rtype == OP_EXECUTE then
            info = planned(self, m, chain)
        end
        if info then
            infos = infos or {}
            infos[i] = info
        elseif info == nil then
            slow = slow or {}
            slow[#slow + 1] = i
        end
    end
    if slow and cql then
        cql_schema.prepare(chain, batch, slow)
    end
    for _, i in ipairs(slow or {}) do
        local m = batch[i]
        local class = proto.query_class(m, chain)
        if class ~= "read" and class ~= nil and class ~= "pubsub"
           and class ~= "connection"
        then
            local qi = m:query_info(chain)
            if qi and qi.kind == "read" and cql and m.rtype == OP_EXECUTE
               and qi.complete then
                local st = require("shotover.cql.session").prepared(m)
                if st then
                    self.plans[st] = "read"
                end
            elseif qi and qi.kind ~= "read" then
                infos = infos or {}
                infos[i] = qi
                if cql and m.rtype == OP_EXECUTE then
                    learn(self, m, qi, conn)
                end
            end
        end
    end
    return infos, slow
end

-- Produce the records of `infos` (a list of query_info); returns how many
-- went out, and the first error of those refused at once.
function methods.produce(self, infos, waiter)
    local n, first = 0, nil
    local p = self.producer
    for _, qi in ipairs(infos) do
        local recs, one
        if qi.plan then
            local topic, key, vp, vn = plan.render(qi.plan, qi.m)
            if topic then
                one = { topic = topic, key = key, value = vp, len = vn }
            else
                recs = record.build(qi.m:query_info(qi.chain), self.opts)
            end
        else
            recs = record.build(qi, self.opts)
        end
        for k = 1, one and 1 or #recs do
            local r = one or recs[k]
            local ok, err
            if waiter.batch == nil then             -- wait = false
                if self.in_flight >= self.buffer then
                    add(self.m_dropped, 1)
                    self:warn("buffer full (%d records): record dropped",
                              self.buffer)
                    ok, err = true, nil
                else
                    ok, err = p:produce(r.topic, r.key, r.value, waiter, r.len)
                    if ok then self.in_flight = self.in_flight + 1 end
                end
            else
                ok, err = p:produce(r.topic, r.key, r.value, waiter, r.len)
                if ok then n = n + 1 end
            end
            if not ok then
                add(self.m_errors, 1)
                first = first or err
                self:warn("a record was refused: %s", err)
            end
        end
    end
    return n, first
end

function methods.transform(self, batch, chain)
    if self.producer == nil or chain.c == nil then
        return chain:next(batch)        -- dry: Kafka is never touched
    end
    local proto = protocols.by_id(batch[1].proto)
    local redis = proto.name == "redis"
    local infos, slow = infos_of(self, batch, chain, proto, not redis)
    local resp = chain:next(batch)
    if slow and not redis then
        cql_schema.observe(resp, slow)  -- ALTER, DROP: read it again
    end
    -- (a transaction being queued counts every command, reads too)
    if infos == nil and not (redis and chain.conn[self]) then
        return resp
    end
    infos = infos or {}
    local todo = redis and redis_todo(self, chain, batch, resp, infos)
                 or cql_todo(proto, batch, resp, infos)
    local t0 = now_ns()
    local token = self.wait and message.new_batch(0)
    local async = not token and setmetatable({ t = self, t0 = t0 }, Async)
    local waiters, owed = {}, 0
    for i, list in pairs(todo) do
        local waiter = async
        if token then
            waiter = setmetatable({ t = self, t0 = t0, batch = token },
                                  Waiter)
        end
        local n, err = self:produce(list, waiter)
        if token then
            waiter.err = err
            waiters[i] = waiter
            owed = owed + n
        end
    end
    chain:await(token, owed)
    for i, w in pairs(waiters) do
        if w.err then
            resp:set(i, message.error_reply(batch[i], fmt(
                "shotover: kafka \"%s\": the write was applied by the "
                .. "database but not recorded in Kafka (%s); the client "
                .. "may retry it (at-least-once)", self.name, w.err)))
        end
    end
    return resp
end

return _M
