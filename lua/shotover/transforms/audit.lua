-- audit: one JSON line per request (or per request of the configured query
-- classes) -- time, source, client, user, mTLS subject, the statement or
-- command with its values redacted, the decision, the outcome and the
-- latency -- to a file, syslog or Kafka.  Lines are built after the batch's
-- replies and handed to a bounded buffer per output, written at once (a
-- file: one append per batch; syslog: non-blocking datagrams; Kafka: the
-- CDC producer), never waiting on the request path.  With fail_closed a
-- request whose line cannot be written is refused instead of served.  See
-- docs/transforms/audit.md.
local ffi = require "ffi"
local buffer = require "string.buffer"
local base = require "shotover.ffi"
local metrics = require "shotover.metrics"
local log = require "shotover.log"
local runner = require "shotover.runner"
local protocols = require "shotover.protocols"
local pools = require "shotover.pools"
local redact = require "shotover.redact"
local quoted_end = redact.quoted_end
local json = require "shotover.kafka.json"
local message = require "shotover.message"

local C = base.C
local PROTO_REDIS = C.SH_PROTO_REDIS
local OP_QUERY, OP_PREPARE, OP_EXECUTE, OP_BATCH, OP_AUTH_RESPONSE =
    C.SH_CQL_QUERY, C.SH_CQL_PREPARE, C.SH_CQL_EXECUTE, C.SH_CQL_BATCH,
    C.SH_CQL_AUTH_RESPONSE
-- A JSON string: plain ASCII text as it is (one pattern test, no loop
-- over its bytes: the common case stays in the compiled trace), anything
-- else through json.string (escapes; bytes that are not UTF-8 as hex).
local json_string = json.string
local find_ = string.find
local function jstring(s)
    if not find_(s, '[%z\1-\31"\\\127-\255]') then
        return '"' .. s .. '"'
    end
    return json_string(s)
end
local jencode = json.encode
local now_ns = metrics.now_ns
local add = metrics.add
local fmt = string.format
local byte, sub, find, lower, gsub = string.byte, string.sub, string.find,
                                     string.lower, string.gsub
local floor = math.floor
local pairs, ipairs, type, tostring, pcall = pairs, ipairs, type, tostring,
                                             pcall
local os_date = os.date

-- libc, under names of our own (ffi's asm names) so another module's
-- cdef of the real prototypes cannot clash
pcall(ffi.cdef, [[
struct sh_audit_timeval { long tv_sec; long tv_usec; };
struct sh_audit_sockaddr_un { unsigned short sun_family; char sun_path[108]; };
int sh_audit_gettimeofday(struct sh_audit_timeval *tv, void *tz)
    __asm__("gettimeofday");
int sh_audit_open(const char *path, int flags, int mode) __asm__("open");
long sh_audit_write(int fd, const void *p, size_t n) __asm__("write");
int sh_audit_fdatasync(int fd) __asm__("fdatasync");
int sh_audit_close(int fd) __asm__("close");
int sh_audit_socket(int domain, int type, int protocol) __asm__("socket");
int sh_audit_connect(int fd, const struct sh_audit_sockaddr_un *a,
                     unsigned int len) __asm__("connect");
long sh_audit_send(int fd, const void *p, size_t n, int flags)
    __asm__("send");
const char *sh_audit_strerror(int errnum) __asm__("strerror");
]])

-- Linux (asm-generic) values
local O_WRONLY, O_CREAT, O_APPEND, O_CLOEXEC = 1, 64, 1024, 524288
local AF_UNIX, SOCK_DGRAM, SOCK_NONBLOCK, SOCK_CLOEXEC = 1, 2, 2048, 524288
local MSG_DONTWAIT, MSG_NOSIGNAL = 64, 16384
local EINTR, EAGAIN = 4, 11

local CLASSES = { "read", "write", "read_write", "pubsub", "schema_change",
                  "use", "dcl", "connection", "admin", "other",
                  "handshake" }
local FACILITIES = {
    kern = 0, user = 1, mail = 2, daemon = 3, auth = 4, syslog = 5,
    lpr = 6, news = 7, uucp = 8, cron = 9, authpriv = 10, ftp = 11,
    local0 = 16, local1 = 17, local2 = 18, local3 = 19, local4 = 20,
    local5 = 21, local6 = 22, local7 = 23,
}

local _M = {
    name = "audit",
    version = "0.1.0",
    -- chain.decisions lives on the chain context, one per batch in flight
    capabilities = { lanes = true },
    schema = {
        file = { type = "string" },
        syslog = { type = "table" },
        kafka = { type = "table" },
        classes = { type = "table" },
        show_values = { type = "table" },
        fsync = { type = "enum", default = "never",
                  values = { "never", "interval", "always" } },
        fsync_interval_ms = { type = "integer", min = 1, default = 1000 },
        buffer_size = { type = "integer", min = 1024, default = 1048576 },
        max_statement = { type = "integer", min = 16, default = 4096 },
        fail_closed = { type = "boolean", default = false },
    },
}

local mt = { __index = {} }
local methods = mt.__index

-- Config -------------------------------------------------------------------

local function strings(v, path, errs, allowed)
    if type(v) ~= "table" then
        return
    end
    for i, s in ipairs(v) do
        if type(s) ~= "string" or s == "" then
            errs[#errs + 1] = fmt("%s[%d]: expected a non-empty string, "
                                  .. "got %s", path, i, type(s))
        elseif allowed and not allowed[s] then
            errs[#errs + 1] = fmt("%s[%d]: unknown class \"%s\" (one of %s)",
                                  path, i, s, table.concat(CLASSES, ", "))
        end
    end
    for k in pairs(v) do
        if type(k) ~= "number" then
            errs[#errs + 1] = fmt("%s: a list of strings, not a key \"%s\"",
                                  path, tostring(k))
        end
    end
end

local SYSLOG_KEYS = { path = "string", facility = "string", tag = "string" }
local KAFKA_KEYS = { brokers = "string", topic = "string",
                     timeout_ms = "number", properties = "table",
                     max_in_flight = "number" }

local function keys_of(v, path, known, errs)
    for k, want in pairs(known) do
        if v[k] ~= nil and type(v[k]) ~= want then
            errs[#errs + 1] = fmt("%s.%s: expected %s, got %s", path, k,
                                  want, type(v[k]))
        end
    end
    for k in pairs(v) do
        if known[k] == nil then
            errs[#errs + 1] = fmt("%s.%s: unknown key", path, tostring(k))
        end
    end
end

local CLASS_SET = {}
for _, c in ipairs(CLASSES) do CLASS_SET[c] = true end

-- every problem at once: true, or nil and the list
function _M.check_config(conf)
    local errs = {}
    local n = (conf.file and 1 or 0) + (conf.syslog and 1 or 0)
              + (conf.kafka and 1 or 0)
    if n ~= 1 then
        errs[#errs + 1] = "file: give exactly one output: file, syslog or "
                          .. "kafka"
    end
    if conf.file == "" then
        errs[#errs + 1] = "file: give a path"
    end
    if conf.syslog then
        keys_of(conf.syslog, "syslog", SYSLOG_KEYS, errs)
        local f = conf.syslog.facility
        if type(f) == "string" and FACILITIES[f] == nil then
            errs[#errs + 1] = fmt("syslog.facility: unknown facility \"%s\"",
                                  f)
        end
    end
    if conf.kafka then
        keys_of(conf.kafka, "kafka", KAFKA_KEYS, errs)
        for _, k in ipairs({ "brokers", "topic" }) do
            if conf.kafka[k] == nil then
                errs[#errs + 1] = "kafka." .. k .. ": required"
            end
        end
    end
    if conf.fsync ~= "never" and not conf.file then
        errs[#errs + 1] = "fsync: only for a file output"
    end
    strings(conf.classes, "classes", errs, CLASS_SET)
    strings(conf.show_values, "show_values", errs)
    if #errs > 0 then
        return nil, errs
    end
    return true
end

-- Time ---------------------------------------------------------------------

local tv = ffi.new("struct sh_audit_timeval")
local last_sec, last_text = -1, ""

-- RFC 3339, UTC, milliseconds: 2026-12-03T10:41:44.123Z
local function timestamp()
    C.sh_audit_gettimeofday(tv, nil)
    local s = tonumber(tv.tv_sec)
    if s ~= last_sec then
        last_sec, last_text = s, os_date("!%Y-%m-%dT%H:%M:%S", s)
    end
    return fmt("%s.%03dZ", last_text, floor(tonumber(tv.tv_usec) / 1000))
end
_M.timestamp = timestamp

local function errno_text(e)
    return ffi.string(C.sh_audit_strerror(e))
end

-- Patterns -----------------------------------------------------------------

-- a glob (* any run, ? one character) as an anchored Lua pattern
local function glob(p)
    local out = gsub(p, "[%^%$%(%)%%%.%[%]%+%-]", "%%%0")
    out = gsub(out, "%*", ".*")
    out = gsub(out, "%?", ".")
    return "^" .. out .. "$"
end

local function matches(pats, s)
    for i = 1, #pats do
        if find(s, pats[i]) then
            return true
        end
    end
    return false
end

-- Redaction ----------------------------------------------------------------

local positions = {}

-- an argument as it is written in the line: quoted when it has blanks or
-- quotes or is empty (the line's JSON escaping comes on top)
local function arg_text(b, a)
    if a == "" or find(a, '[%s"\\]') then
        b:put('"', (gsub(a, '[\\"]', "\\%0")), '"')
    else
        b:put(a)
    end
end

-- Redis request m as "NAME key ? ...": the command name and its keys (by
-- Redis' key specs) kept, every other argument "?" -- unless every key
-- matches a show_values pattern (then values are shown, but never an
-- argument the request carries as a credential).  A command without keys
-- (AUTH, HELLO, CONFIG SET...) shows none of its arguments.
-- every argument after the name: keys as they are, the rest "?"; keys
-- come from m:key_positions in argument order, walked with a cursor (no
-- inner loop: the batch's trace goes straight through)
local function redacted_args(m, b, n, nk, limit)
    local k = 1
    local key = nk > 0 and positions[1] or -1
    for i = 2, n do
        if #b > limit then
            break                   -- cut later: no need to build it all
        end
        if i == key then
            b:put(" ")
            arg_text(b, m:arg(i))
            k = k + 1
            key = k <= nk and positions[k] or -1
        else
            b:put(" ?")
        end
    end
end

-- every argument as it is, but those the request carries as credentials
local function shown_args(m, b, n, limit)
    local secret = {}
    for _, v in ipairs(redact.secrets(m)) do
        secret[v] = true
    end
    for i = 2, n do
        if #b > limit then
            break
        end
        local a = m:arg(i)
        b:put(" ")
        if secret[a] then
            b:put("?")
        else
            arg_text(b, a)
        end
    end
end

function _M.redis_text(m, show, b, limit)
    local n = m:nargs()
    local nk = m:key_positions(positions)
    local shown = false
    if show and #show > 0 and nk > 0 then
        shown = true
        for k = 1, nk do
            if not matches(show, m:arg(positions[k])) then
                shown = false
                break
            end
        end
    end
    b:put(m:command())
    if shown then
        shown_args(m, b, n, limit or 1e9)
    else
        redacted_args(m, b, n, nk, limit or 1e9)
    end
    return b
end

local UUID = "^" .. ("%x"):rep(8) .. "%-" .. ("%x"):rep(4) .. "%-"
             .. ("%x"):rep(4) .. "%-" .. ("%x"):rep(4) .. "%-"
             .. ("%x"):rep(12)
local LITERAL_WORDS = { ["true"] = true, ["false"] = true, nan = true,
                        infinity = true }

-- CQL text with every literal replaced by ?: strings ('...', $$...$$),
-- numbers, durations, blobs (0x...), uuids, true/false; comments dropped
-- (they could hold anything); identifiers ("...") and bind markers kept.
-- Only the first `limit` bytes are read (the rest ends as "..."): a
-- literal cut there still reads as one, to the end, so it is a ?.
function _M.cql_text(q, b, limit)
    local cut = limit ~= nil and #q > limit
    if cut then
        q = sub(q, 1, limit)
    end
    local i, n = 1, #q
    while i <= n do
        local c = byte(q, i)
        local c2 = byte(q, i + 1)
        if c == 39 then                                 -- '
            b:put("?")
            i = quoted_end(q, i, "'") + 1
        elseif c == 36 and c2 == 36 then                -- $$
            local _, e = find(q, "$$", i + 2, true)
            b:put("?")
            i = (e or n) + 1
        elseif c == 34 then                             -- "
            local j = quoted_end(q, i, '"')
            b:put(sub(q, i, j))
            i = j + 1
        elseif (c == 45 and c2 == 45) or (c == 47 and c2 == 47) then
            i = (find(q, "\n", i, true) or n) + 1
            b:put(" ")
        elseif c == 47 and c2 == 42 then                -- /*
            local _, e = find(q, "*/", i + 2, true)
            i = (e or n) + 1
            b:put(" ")
        elseif find(q, UUID, i) then
            b:put("?")
            i = i + 36
        elseif find(q, "^%-?%.?%d", i) then
            -- a number, a duration (1h30m), a blob (0xcafe), an exponent
            local _, e = find(q, "^%-?[%w%.]*", i)
            if find(sub(q, e, e), "[eE]") and find(q, "^[%-%+]%d", e + 1)
            then
                _, e = find(q, "^[%-%+]%d*", e + 1)
            end
            b:put("?")
            i = e + 1
        elseif find(q, "^[%a_]", i) then
            local _, e = find(q, "^[%w_]+", i)
            local w = sub(q, i, e)
            b:put(LITERAL_WORDS[lower(w)] and "?" or w)
            i = e + 1
        else
            b:put(sub(q, i, i))
            i = i + 1
        end
    end
    if cut then
        b:put("...")
    end
    return b
end

local function prepared_text(m)
    local ok, st = pcall(require("shotover.cql.session").prepared, m)
    return ok and st and st.query or nil
end

-- CQL request m as redacted text: QUERY and PREPARE their statement, an
-- EXECUTE its prepared statement's (when known here), a BATCH each
-- child's; other opcodes their name.  Bound values are never written;
-- AUTH_RESPONSE is its name alone.
function _M.cql_request_text(m, b, limit)
    local o = m.rtype
    if o == OP_QUERY or o == OP_PREPARE then
        local ok, q = pcall(m.query, m)
        if o == OP_PREPARE then
            b:put("PREPARE ")
        end
        return ok and _M.cql_text(q, b, limit) or b:put("?")
    elseif o == OP_EXECUTE then
        local q = prepared_text(m)
        if q then
            return _M.cql_text(q, b, limit)
        end
        return b:put("EXECUTE (a statement not known here)")
    elseif o == OP_BATCH then
        local ok, bt = pcall(m.batch_children, m, true)
        b:put("BATCH")
        if ok and bt then
            for k, st in ipairs(bt.statements or bt) do
                b:put(k == 1 and " " or "; ")
                local q = st.query
                if #b > (limit or 1e9) then
                    break
                elseif q then
                    _M.cql_text(q, b, limit)
                else
                    b:put("EXECUTE ?")
                end
            end
        end
        return b
    elseif o == OP_AUTH_RESPONSE then
        return b:put("AUTH_RESPONSE")
    end
    return b:put(m:opcode_name())
end

-- The values of columns matching show_values (patterns over
-- "keyspace.table.column") in m's statement (m:statement): the columns an
-- INSERT writes, an UPDATE's assignments and a WHERE's restrictions; a
-- literal as written, a bind marker by its bound value.  nil when none;
-- never for a dcl statement (roles and their passwords).
function _M.cql_values(m, chain, show)
    if show == nil or #show == 0 then
        return nil
    end
    local ok, st, ks = pcall(m.statement, m, chain.conn)
    if not ok or type(st) ~= "table" or st.class == "dcl"
       or st.table == nil
    then
        return nil
    end
    local prefix = (st.keyspace or ks or "") .. "." .. st.table .. "."
    local out, bound
    local function put(col, v)
        if type(col) ~= "string" or type(v) ~= "table"
           or not matches(show, prefix .. col)
        then
            return
        end
        local x
        if v.marker then
            if bound == nil then
                local vok, vals = pcall(m.values, m)
                bound = vok and vals or false
            end
            x = bound and bound[v.marker]
        else
            x = v.value
        end
        if x ~= nil then
            out = out or {}
            out[col] = x
        end
    end
    if type(st.columns) == "table" and type(st.values) == "table" then
        for k, col in ipairs(st.columns) do
            put(col, st.values[k])
        end
    end
    for _, a in ipairs(st.assignments or {}) do
        put(a.column, a.value)
    end
    for _, r in ipairs(st.where or {}) do
        put(r.column, r.value)
    end
    return out
end

-- Outputs ------------------------------------------------------------------

-- Each output: ready() (can it take lines now: for fail_closed), add(b)
-- (the line in string.buffer b: true, or false when its buffer is full),
-- flush() (write what it holds without waiting; returns the lines lost
-- to a write error), err (the last error, nil when the last write went).

local FileOut = {}
FileOut.__index = FileOut

local function file_out(s)
    return setmetatable({ path = s.path, fd = -1, buf = buffer.new(),
                          max = s.buffer_size, fsync = s.fsync,
                          interval = s.fsync_interval_ms * 1e6,
                          synced = now_ns(), reopen = false }, FileOut)
end

function FileOut.open(self)
    if self.reopen then
        self.reopen = false
        if self.fd >= 0 then
            C.sh_audit_close(self.fd)
            self.fd = -1
        end
    end
    if self.fd < 0 then
        local fd = C.sh_audit_open(self.path, O_WRONLY + O_CREAT + O_APPEND
                                   + O_CLOEXEC, 416)            -- 0640
        if fd < 0 then
            self.err = fmt("%s: %s", self.path, errno_text(ffi.errno()))
            return false
        end
        self.fd = fd
    end
    return true
end

function FileOut.ready(self)
    return self:open() and #self.buf < self.max
end

function FileOut.add(self, b)
    if #self.buf + #b > self.max then
        return false
    end
    self.buf:put(b)
    return true
end

-- One append of every whole line held (a regular file's write does not
-- wait for the disk; with fsync = "always" the fdatasync does, and that
-- is the price asked for).
function FileOut.flush(self)
    local buf = self.buf
    if #buf == 0 and not self.reopen then
        return 0
    end
    if not self:open() then
        return 0
    end
    while #buf > 0 do
        local p, len = buf:ref()
        local w = C.sh_audit_write(self.fd, p, len)
        if w < 0 then
            local e = ffi.errno()
            if e ~= EINTR then
                self.err = fmt("%s: %s", self.path, errno_text(e))
                C.sh_audit_close(self.fd)
                self.fd = -1
                return 0
            end
        else
            buf:skip(tonumber(w))
        end
    end
    self.err = nil
    if self.fsync == "always" then
        C.sh_audit_fdatasync(self.fd)
    elseif self.fsync == "interval" then
        local now = now_ns()
        if now - self.synced >= self.interval then
            self.synced = now
            C.sh_audit_fdatasync(self.fd)
        end
    end
    return 0
end

function FileOut.close(self)
    self:flush()
    if self.fd >= 0 then
        C.sh_audit_close(self.fd)
        self.fd = -1
    end
end

-- Syslog: RFC 3164 datagrams on the local socket (default /dev/log), sent
-- with MSG_DONTWAIT; what the socket does not take now waits in the
-- buffer for the next batch.
local SyslogOut = {}
SyslogOut.__index = SyslogOut

local function syslog_out(s)
    local sl = s.syslog
    return setmetatable({
        path = sl.path or "/dev/log", fd = -1, queue = {}, first = 1,
        last = 0, bytes = 0, max = s.buffer_size,
        prefix = fmt("<%d>%s: ", (FACILITIES[sl.facility or "local0"]) * 8
                     + 6, sl.tag or "shotover-audit"),
    }, SyslogOut)
end

function SyslogOut.open(self)
    if self.fd >= 0 then
        return true
    end
    local fd = C.sh_audit_socket(AF_UNIX, SOCK_DGRAM + SOCK_NONBLOCK
                                 + SOCK_CLOEXEC, 0)
    if fd < 0 then
        self.err = "socket: " .. errno_text(ffi.errno())
        return false
    end
    local a = ffi.new("struct sh_audit_sockaddr_un")
    a.sun_family = AF_UNIX
    ffi.copy(a.sun_path, self.path, math.min(#self.path, 107))
    if C.sh_audit_connect(fd, a, ffi.sizeof(a)) ~= 0 then
        self.err = fmt("%s: %s", self.path, errno_text(ffi.errno()))
        C.sh_audit_close(fd)
        return false
    end
    self.fd = fd
    return true
end

function SyslogOut.ready(self)
    return self:open() and self.bytes < self.max
end

function SyslogOut.add(self, b)
    if self.bytes + #b > self.max then
        return false
    end
    local line = self.prefix .. sub(b:tostring(), 1, -2)   -- no newline
    self.last = self.last + 1
    self.queue[self.last] = line
    self.bytes = self.bytes + #line
    return true
end

function SyslogOut.flush(self)
    if self.first > self.last or not self:open() then
        return 0
    end
    local q = self.queue
    while self.first <= self.last do
        local line = q[self.first]
        local w = C.sh_audit_send(self.fd, line, #line,
                                  MSG_DONTWAIT + MSG_NOSIGNAL)
        if w < 0 then
            local e = ffi.errno()
            if e == EAGAIN then
                return 0                    -- the next batch tries again
            elseif e ~= EINTR then
                self.err = fmt("%s: %s", self.path, errno_text(e))
                C.sh_audit_close(self.fd)
                self.fd = -1
                return 0
            end
        else
            q[self.first] = nil
            self.first = self.first + 1
            self.bytes = self.bytes - #line
        end
    end
    self.err = nil
    return 0
end

-- flush what waits, then close the socket, as a file is closed
SyslogOut.close = FileOut.close

-- Kafka: each line a record (no key) through the CDC producer, shared
-- with kafka transforms of the same settings.  Records in flight are
-- bounded; a failed delivery is counted lost and makes the output not
-- ready until a later record is delivered.
local KafkaOut = {}
KafkaOut.__index = KafkaOut

local Waiter = {}
Waiter.__index = Waiter
function Waiter.delivered(self, err)
    local o = self.out
    o.in_flight = o.in_flight - 1
    if err then
        o.err = "kafka: " .. tostring(err)
        o.lost = o.lost + 1
    else
        o.err = nil
    end
end

local function kafka_out(s, env)
    local k = s.kafka
    local self = setmetatable({ topic = k.topic, in_flight = 0, lost = 0,
                                max = k.max_in_flight or 100000,
                                pending = {} }, KafkaOut)
    self.waiter = setmetatable({ out = self }, Waiter)
    if env.worker ~= nil then
        local settings = { brokers = k.brokers,
                           timeout_ms = k.timeout_ms or 30000,
                           properties = k.properties,
                           name = s.name }
        self.producer = pools.get("kafka", settings, function()
            local producer = require "shotover.kafka.producer"
            return producer.new(env.worker, settings)
        end, function(p) p:close() end)
    else
        self.err = "kafka: no producer outside a worker"
    end
    return self
end

function KafkaOut.ready(self)
    return self.producer ~= nil and self.err == nil
           and self.in_flight < self.max
end

function KafkaOut.add(self, b)
    if self.producer == nil or self.in_flight + #self.pending >= self.max
    then
        return false
    end
    self.pending[#self.pending + 1] = sub(b:tostring(), 1, -2)
    return true
end

function KafkaOut.flush(self)
    local lost = 0
    local p = self.pending
    for i = 1, #p do
        local ok, err = self.producer:produce(self.topic, nil, p[i],
                                              self.waiter)
        if ok then
            self.in_flight = self.in_flight + 1
        else
            self.err = "kafka: " .. tostring(err)
            lost = lost + 1
        end
        p[i] = nil
    end
    local l = self.lost
    self.lost = 0
    return lost + l
end

function KafkaOut.close() end

-- File outputs are shared per worker by path (two chains auditing to one
-- file append through one descriptor) and kept across a reload, which
-- reopens them: rename the file, then SIGHUP (or POST /reload), and the
-- next lines go to a new file at the path.  Syslog outputs are shared by
-- their settings (a reload makes no new socket).
local files = {}
local syslogs = {}

local function output(conf, env)
    local s = { path = conf.file, buffer_size = conf.buffer_size,
                fsync = conf.fsync, fsync_interval_ms = conf.fsync_interval_ms,
                syslog = conf.syslog, kafka = conf.kafka,
                name = conf.name or "audit" }
    if conf.file then
        local o = files[conf.file]
        if o == nil then
            o = file_out(s)
            files[conf.file] = o
        else
            o.max, o.fsync = s.buffer_size, s.fsync
            o.interval = s.fsync_interval_ms * 1e6
            o.reopen = true     -- a reload: rotation
        end
        return o
    elseif conf.syslog then
        local sl = conf.syslog
        local key = (sl.path or "") .. "\0" .. (sl.facility or "") .. "\0"
                    .. (sl.tag or "")
        local o = syslogs[key]
        if o == nil then
            o = syslog_out(s)
            syslogs[key] = o
        end
        o.max = s.buffer_size
        return o
    end
    return kafka_out(s, env)
end

-- The transform --------------------------------------------------------------

function _M.new(conf, env)
    local show = {}
    for i, p in ipairs(conf.show_values or {}) do
        show[i] = glob(p)
    end
    local want
    if conf.classes then
        want = {}
        for _, c in ipairs(conf.classes) do
            want[c] = true
        end
    end
    local name = conf.name or "audit"
    local labels = { name = name }
    local self = setmetatable({
        name = name, source = env.source or env.name or "chain",
        fail_closed = conf.fail_closed, show = show, want = want,
        max_statement = conf.max_statement,
        proto = protocols.of_env(env),
        out = output(conf, env), line = buffer.new(),
        stmt = buffer.new(),
        m_records = metrics.counter("shotover_audit_records_total",
            "audit lines handed to the output", labels),
        m_dropped = metrics.counter("shotover_audit_dropped_total",
            "audit lines dropped because the output's buffer was full",
            labels),
        m_lost = metrics.counter("shotover_audit_lost_total",
            "audit lines lost to an output error (write, delivery)", labels),
        m_refused = metrics.counter("shotover_audit_refused_total",
            "requests refused by fail_closed: the trail could not be "
            .. "written", labels),
        m_errors = metrics.counter("shotover_audit_write_errors_total",
            "batches whose audit lines could not be written at once",
            labels),
    }, mt)
    return self
end

-- the class a request is audited as
local function class_of(p, m, chain)
    local ok, c = pcall(p.query_class, m, chain)
    if not ok or c == nil then
        return "handshake"
    elseif c == false then
        return "other"
    end
    return c
end

function methods.audited(self, p, m, chain)
    local want = self.want
    if want == nil then
        return true
    end
    local c = class_of(p, m, chain)
    if want[c] or (c == "read_write" and (want.write or want.read)) then
        return true
    end
    if p.query_classes then
        local ok, cs = pcall(p.query_classes, m, chain)
        if ok and cs then
            for k = 2, #cs do
                if want[cs[k]] then
                    return true
                end
            end
        end
    end
    return false
end

-- the outcome of reply r: "ok", the error's code (Redis: the error text's
-- first word; CQL: the error code's name), or "none"
local CQL_CODE_NAMES = {}
for k, v in pairs(require("shotover.cql.reply").CODE) do
    CQL_CODE_NAMES[v] = k
end

local function outcome(p, r)
    if r == nil or r:is_noreply() then
        return "none"
    end
    if not p.is_error_reply(r) then
        return "ok"
    end
    if r.proto == PROTO_REDIS then
        local ok, line = pcall(r.line, r)
        local w = ok and line and line:match("^(%S+)")
        return w or "ERR"
    end
    local ok, info = pcall(r.error_info, r)
    if ok and info then
        return CQL_CODE_NAMES[info.code] or fmt("0x%04x", info.code)
    end
    return "error"
end

-- Line for request m (i in the batch) into self.line.
function methods.build(self, p, m, i, r, chain, t0, us, peer, decision,
                       failed)
    local b = self.line
    b:reset()
    local conn = chain.conn
    b:put('{"time":"', t0, '","source":', jstring(self.source),
          ',"client":', peer and jstring(peer) or "null",
          ',"user":', conn.user and jstring(tostring(conn.user)) or "null",
          ',"tls_subject":', conn.tls_subject
              and jstring(tostring(conn.tls_subject)) or "null",
          ',"class":"', class_of(p, m, chain), '","statement":')
    local s = self.stmt
    s:reset()
    -- no pcall here (a trace cannot return into a pcall frame: NYI):
    -- Redis' accessors do not raise, and every CQL accessor that may is
    -- called under a pcall of its own
    if m.proto == PROTO_REDIS then
        _M.redis_text(m, self.show, s, self.max_statement)
    else
        _M.cql_request_text(m, s, self.max_statement)
    end
    local text = s:tostring()
    if #text > self.max_statement then
        text = sub(text, 1, self.max_statement) .. "..."
    end
    b:put(jstring(text))
    if m.proto ~= PROTO_REDIS then
        local vals = _M.cql_values(m, chain, self.show)
        if vals then
            b:put(',"values":', jencode(vals))
        end
    end
    b:put(',"decision":', jstring(tostring(decision or "allowed")),
          ',"outcome":', jstring(failed or outcome(p, r)),
          ',"latency_us":', us, "}\n")
    return b
end

local fields = ffi.new("sh_log_fields_t")
local client_buf = ffi.new("char[80]")

-- the client's "ip:port", asked of the C core once per connection (the
-- fields of its log lines); nil in dry runs
local function client_of(chain)
    local conn = chain.conn
    local v = conn.audit_client
    if v == nil then
        v = false
        -- (1: the run has its client connection)
        if chain.c ~= nil and runner.log_fields(chain.c, fields, client_buf,
                                                80) == 1
           and fields.client ~= nil
        then
            v = ffi.string(fields.client)
        end
        conn.audit_client = v
    end
    return v or nil
end

-- hand each audited request's line to the output, then write
function methods.record(self, batch, resp, chain, t0, us, refused, failed)
    local p = self.proto or protocols.by_id(batch[1].proto)
    local peer = client_of(chain)
    local decisions = chain.decisions
    local conn_decision = chain.conn.decision
    local n, dropped = 0, 0
    local out = self.out
    for i = 1, batch.n do
        local m = batch[i]
        if self:audited(p, m, chain) then
            local d = refused and "refused: audit trail unavailable"
                      or (decisions and decisions[i]) or conn_decision
            local b = self:build(p, m, i, resp and resp[i], chain, t0, us,
                                 peer, d, failed)
            if out:add(b) then
                n = n + 1
            else
                dropped = dropped + 1
            end
        end
    end
    if n > 0 then
        add(self.m_records, n)
    end
    if dropped > 0 then
        add(self.m_dropped, dropped)
    end
    local lost = out:flush()
    if lost > 0 then
        add(self.m_lost, lost)
    end
    if out.err then
        add(self.m_errors, 1)
        self:warn(out.err)
    end
end

-- a warning at most once per 10 s
function methods.warn(self, text)
    local now = now_ns()
    if self.warned and now - self.warned < 10e9 then
        return
    end
    self.warned = now
    log.warn("audit \"%s\": the audit trail cannot be written: %s%s",
             self.name, text, self.fail_closed
             and " (fail_closed: requests are refused)" or "")
end

function methods.transform(self, batch, chain)
    local out = self.out
    local p = self.proto or protocols.by_id(batch[1].proto)
    if self.fail_closed and not out:ready() then
        -- refuse what would be audited; serve the rest
        local pass, idx = message.new_batch(0), {}
        local nref = 0
        for i = 1, batch.n do
            if not self:audited(p, batch[i], chain) then
                pass:push(batch[i])
                idx[#idx + 1] = i
            else
                nref = nref + 1
            end
        end
        if nref > 0 then
            local resp = message.new_batch(batch.n)
            local why = out.err or "the audit buffer is full"
            for i = 1, batch.n do
                resp:set(i, p.error_reply(batch[i],
                    "shotover: audit: the audit trail cannot be written ("
                    .. why .. "): request refused", "server"))
            end
            if pass.n > 0 then
                local r = chain:next(pass)
                for k, i in ipairs(idx) do
                    resp:set(i, r[k])
                end
            end
            add(self.m_refused, nref)
            self:warn(why)
            -- the refusals too, should the output take them now
            self:record(batch, resp, chain, timestamp(), 0, true)
            return resp
        end
    end
    local t0 = timestamp()
    local start = now_ns()
    chain.decisions = nil
    local ok, resp = pcall(chain.next, chain, batch)
    local us = floor((now_ns() - start) / 1000)
    -- an element after this one that raised fails the batch (the chain
    -- answers each request with an error): its lines say "error"
    self:record(batch, ok and resp or nil, chain, t0, us, false,
                not ok and "error" or nil)
    chain.decisions = nil
    if not ok then
        error(resp, 0)
    end
    return resp
end

return _M
