-- A Kafka producer on a worker's loop: one librdkafka handle whose main
-- queue takes every event (delivery reports, errors, CreateTopics results)
-- and writes a byte to a pipe the worker watches (shotover.watch) when it
-- gets one; poll() then reads them all with rd_kafka_queue_poll(q, 0).  No
-- callback into Lua from librdkafka's threads, ever.
--
-- Each record is produced with an integer id as its msg_opaque; its
-- delivery report finds the waiter by that id and calls
-- waiter:delivered(err) (err nil: acknowledged by every in-sync replica,
-- acks=all).  librdkafka reports every record within message.timeout.ms
-- (timeout_ms), success or failure; the producer also ticks once a second
-- and fails a record still unreported a second after its timeout itself,
-- so no waiter waits longer whatever librdkafka does (a late report of it
-- is ignored).
--
-- With create_topics, the first record for a topic asks the cluster to
-- create it (the admin API, CreateTopics) and waits for the answer with
-- the topic's other records: a produce first would have the broker
-- auto-create it with its default partition count.
local ffi = require "ffi"
local rdkafka = require "shotover.kafka.rdkafka"
local watch = require "shotover.watch"
local log = require "shotover.log"
local metrics = require "shotover.metrics"

local lib = rdkafka.lib
local cast = ffi.cast
local ffi_string = ffi.string
local tonumber = tonumber
local fmt = string.format
local now_ns = metrics.now_ns

local _M = { _VERSION = "0.1.0" }

local P = {}
local mt = { __index = P }

-- acks=all and idempotence are what "acknowledged" means here: every
-- in-sync replica has the record, once, in order
_M.FIXED = { acks = "all", ["enable.idempotence"] = "true" }

local errbuf = ffi.new("char[512]")
local cnt_out = ffi.new("size_t[1]")
local ERROR_LOG_NS = 10e9            -- librdkafka errors: one line per 10 s
local TICK_MS = 1000                 -- deadlines are checked this often
local GRACE_NS = 1e9                 -- librdkafka's own timeout goes first

local function err_text(code)
    return ffi_string(lib.rd_kafka_err2str(code))
end

-- Set every property of `props` (name -> string) on conf; nil, name and
-- librdkafka's message for the first it refuses.
local function set_all(conf, props)
    local names = {}
    for k in pairs(props) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do
        if lib.rd_kafka_conf_set(conf, k, tostring(props[k]), errbuf, 512)
           ~= rdkafka.CONF_OK
        then
            return nil, k, ffi_string(errbuf)
        end
    end
    return true
end

-- Does librdkafka take these properties?  nil, name and message for each
-- one it refuses (for check_config: no handle is made).
function _M.check_properties(props)
    local bad = {}
    for k, v in pairs(props) do
        local conf = lib.rd_kafka_conf_new()
        local ok, name, msg = set_all(conf, { [k] = v })
        lib.rd_kafka_conf_destroy(conf)
        if not ok then
            bad[#bad + 1] = { name = name, message = msg }
        end
    end
    table.sort(bad, function(a, b) return a.name < b.name end)
    return bad
end

-- A producer for worker w.  s: brokers, timeout_ms, properties,
-- create_topics ({ partitions, replication } or nil), name (for logs).
function _M.new(w, s)
    local conf = lib.rd_kafka_conf_new()
    local props = {}
    for k, v in pairs(s.properties or {}) do props[k] = v end
    props["bootstrap.servers"] = s.brokers
    props["message.timeout.ms"] = tostring(s.timeout_ms)
    -- its log lines come as events too, for shotover's log (not stderr)
    props["log.queue"] = "true"
    for k, v in pairs(_M.FIXED) do props[k] = v end
    local ok, name, msg = set_all(conf, props)
    if not ok then
        lib.rd_kafka_conf_destroy(conf)
        error(fmt("kafka: property %s: %s", name, msg), 0)
    end
    lib.rd_kafka_conf_set_events(conf, rdkafka.EVENT_DR + rdkafka.EVENT_ERROR
                                 + rdkafka.EVENT_LOG
                                 + rdkafka.EVENT_CREATETOPICS_RESULT)
    local rk = lib.rd_kafka_new(rdkafka.PRODUCER, conf, errbuf, 512)
    if rk == nil then
        lib.rd_kafka_conf_destroy(conf)     -- (not taken on failure)
        error("kafka: " .. ffi_string(errbuf), 0)
    end
    local q = lib.rd_kafka_queue_get_main(rk)
    lib.rd_kafka_set_log_queue(rk, q)
    local self = setmetatable({
        rk = rk, q = q, w = w,
        name = s.name or "kafka", timeout_ms = s.timeout_ms,
        create = s.create_topics, topics = {}, state = {}, pending = {},
        waiters = {}, born = {}, last_id = 0, oldest = 1, closing = false,
        error_logged = 0, errors_held = 0,
    }, mt)
    self.token, self.wfd = watch.pipe(w, function() self:poll() end,
                                      function() self:shutdown() end)
    lib.rd_kafka_queue_io_event_enable(self.q, self.wfd, "1", 1)
    watch.tick(w, self.token, TICK_MS)
    return self
end

-- The topic handle for name (kept for the producer's life).
function P.topic(self, name)
    local t = self.topics[name]
    if t == nil then
        t = lib.rd_kafka_topic_new(self.rk, name, nil)
        if t == nil then
            return nil
        end
        self.topics[name] = t
    end
    return t
end

-- Hand one record to librdkafka; nil and a message when it refuses it
-- (queue full, unknown partition...): no report will come then.
function P.send(self, topic, key, value, id, len)
    local t = self:topic(topic)
    if t == nil then
        return nil, err_text(lib.rd_kafka_last_error())
    end
    if lib.rd_kafka_produce(t, rdkafka.PARTITION_UA, rdkafka.MSG_F_COPY,
                            value, len or #value, key, key and #key or 0,
                            cast("void *", id)) ~= 0
    then
        return nil, err_text(lib.rd_kafka_last_error())
    end
    return true
end

-- Record id is done: its waiter (if still owed) hears err.
function P.report(self, id, err)
    local waiter = self.waiters[id]
    if waiter ~= nil then
        self.waiters[id], self.born[id] = nil, nil
        waiter:delivered(err)
    end
end

-- Ask the cluster for topic name (async: the result comes as an event).
function P.create_topic(self, name)
    local nt = lib.rd_kafka_NewTopic_new(name, self.create.partitions,
                                         self.create.replication, errbuf, 512)
    if nt == nil then
        return nil, ffi_string(errbuf)
    end
    local opts = lib.rd_kafka_AdminOptions_new(self.rk,
                                               rdkafka.ADMIN_OP_CREATETOPICS)
    -- bounded like a record: the records waiting for it fail in time
    lib.rd_kafka_AdminOptions_set_request_timeout(opts, self.timeout_ms,
                                                  errbuf, 512)
    local arr = ffi.new("rd_kafka_NewTopic_t *[1]", nt)
    lib.rd_kafka_CreateTopics(self.rk, arr, 1, opts, self.q)
    lib.rd_kafka_AdminOptions_destroy(opts)
    lib.rd_kafka_NewTopic_destroy(nt)
    self.state[name] = "creating"
    return true
end

-- Produce one record; waiter:delivered(err) is called once, later (from
-- the worker's loop), unless this returns nil and a message.
-- (value: a string, or a pointer to len bytes, copied before this returns)
function P.produce(self, topic, key, value, waiter, len)
    local id = self.last_id + 1
    self.last_id = id
    if self.create and self.state[topic] ~= "ready" then
        if self.state[topic] == nil then
            local ok, err = self:create_topic(topic)
            if not ok then
                return nil, err
            end
        end
        local p = self.pending[topic] or {}
        self.pending[topic] = p
        p[#p + 1] = { key, len and ffi.string(value, len) or value, id }
    else
        local ok, err = self:send(topic, key, value, id, len)
        if not ok then
            return nil, err
        end
    end
    self.waiters[id], self.born[id] = waiter, now_ns()
    return true
end

-- Records unreported a second past their timeout fail here (librdkafka
-- reports them first, normally).  Ids grow with time: the scan stops at
-- the first record still in time.
function P.expire(self)
    local limit = now_ns() - self.timeout_ms * 1e6 - GRACE_NS
    local born = self.born
    local id = self.oldest
    while id <= self.last_id do
        local t = born[id]
        if t ~= nil then
            if t > limit then
                break
            end
            self:report(id, "Kafka did not acknowledge it within "
                            .. self.timeout_ms .. " ms")
        end
        id = id + 1
    end
    self.oldest = id
end

-- A CreateTopics result: the topic exists (made now or before), so its
-- waiting records go; or it could not be made, so they fail (the next
-- record asks again).
function P.created(self, ev)
    local res = lib.rd_kafka_event_CreateTopics_result(ev)
    local topics = lib.rd_kafka_CreateTopics_result_topics(res, cnt_out)
    for i = 0, tonumber(cnt_out[0]) - 1 do
        local tr = topics[i]
        local name = ffi_string(lib.rd_kafka_topic_result_name(tr))
        local code = lib.rd_kafka_topic_result_error(tr)
        local err
        if code ~= 0 and code ~= rdkafka.ERR_TOPIC_ALREADY_EXISTS then
            local s = lib.rd_kafka_topic_result_error_string(tr)
            err = "creating topic " .. name .. ": "
                  .. (s ~= nil and ffi_string(s) or err_text(code))
            log.warn("kafka \"%s\": %s", self.name, err)
            self.state[name] = nil
        else
            self.state[name] = "ready"
        end
        local p = self.pending[name] or {}
        self.pending[name] = nil
        for _, r in ipairs(p) do
            local ok, perr = false, err
            if err == nil then
                ok, perr = self:send(name, r[1], r[2], r[3])
            end
            if not ok then
                self:report(r[3], perr)
            end
        end
    end
end

function P.delivered(self, ev)
    while true do
        local m = lib.rd_kafka_event_message_next(ev)
        if m == nil then
            return
        end
        self:report(tonumber(cast("intptr_t", m._private)),
                    m.err ~= 0 and err_text(m.err) or nil)
    end
end

-- librdkafka's errors (a broker down, all brokers down...) and its log
-- lines of level warning or worse: it retries on its own, so they are
-- news for the log only, at most one line per 10 s.  Its other log lines
-- are shotover's debug lines.
function P.warn(self, text)
    local now = now_ns()
    if now - self.error_logged < ERROR_LOG_NS then
        self.errors_held = self.errors_held + 1
        return
    end
    local held = self.errors_held
    self.error_logged, self.errors_held = now, 0
    log.warn("kafka \"%s\": %s%s", self.name, text,
             held > 0 and fmt(" (and %d more messages)", held) or "")
end

local fac_out = ffi.new("const char *[1]")
local str_out = ffi.new("const char *[1]")
local level_out = ffi.new("int[1]")
local SYSLOG_WARNING = 4

function P.log_event(self, ev)
    if lib.rd_kafka_event_log(ev, fac_out, str_out, level_out) ~= 0 then
        return
    end
    local level = level_out[0]
    if level <= SYSLOG_WARNING then
        self:warn(ffi_string(str_out[0]))
    elseif log.enabled(log.DEBUG) then
        log.debug("kafka \"%s\": %s: %s", self.name,
                  ffi_string(fac_out[0]), ffi_string(str_out[0]))
    end
end

-- The pipe said the queue has events: read them all (the pipe is written
-- again only once the queue was empty).
function P.poll(self)
    if self.rk == nil then
        return
    end
    local q = self.q
    while true do
        local ev = lib.rd_kafka_queue_poll(q, 0)
        if ev == nil then
            break
        end
        local t = lib.rd_kafka_event_type(ev)
        if t == rdkafka.EVENT_DR then
            self:delivered(ev)
        elseif t == rdkafka.EVENT_ERROR then
            self:warn(ffi_string(lib.rd_kafka_event_error_string(ev)))
        elseif t == rdkafka.EVENT_LOG then
            self:log_event(ev)
        elseif t == rdkafka.EVENT_CREATETOPICS_RESULT then
            self:created(ev)
        end
        lib.rd_kafka_event_destroy(ev)
    end
    self:expire()
    if self.closing and lib.rd_kafka_outq_len(self.rk) == 0 then
        self:destroy("the producer closed")
    end
end

-- Free the handle; waiters still owed a report fail with `why`.
function P.destroy(self, why)
    if self.rk == nil then
        return
    end
    for _, t in pairs(self.topics) do
        lib.rd_kafka_topic_destroy(t)
    end
    self.topics = {}
    lib.rd_kafka_queue_destroy(self.q)
    lib.rd_kafka_destroy(self.rk)
    self.rk, self.q = nil, nil
    watch.close(self.w, self.token)
    log.info("kafka \"%s\": producer closed", self.name)
    local left = self.waiters
    self.waiters, self.born, self.pending = {}, {}, {}
    for _, waiter in pairs(left) do
        waiter:delivered(why)
    end
end

-- No configuration uses it any more (shotover.pools): go once what is in
-- flight was reported, without blocking the worker.
function P.close(self)
    self.closing = true
    self:poll()
end

-- The worker stops: wait (blocking, bounded) for what is in flight, read
-- the reports, and go.
_M.STOP_FLUSH_MS = 5000
function P.shutdown(self)
    if self.rk == nil then
        return
    end
    local ms = math.min(self.timeout_ms, _M.STOP_FLUSH_MS)
    if lib.rd_kafka_outq_len(self.rk) > 0 then
        if lib.rd_kafka_flush(self.rk, ms) ~= 0 then
            log.warn("kafka \"%s\": %d records not acknowledged after %d ms "
                     .. "at stop: lost", self.name,
                     lib.rd_kafka_outq_len(self.rk), ms)
        end
    end
    self.closing = false
    self:poll()
    self:destroy("shotover stopped before Kafka acknowledged the record")
end

return _M
