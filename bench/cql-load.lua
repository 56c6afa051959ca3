-- bench/cql-load.lua: a cheap CQL load client for bench/cassandra, run by
-- `shotover lua` (LuaJIT + FFI, plain non-blocking sockets and poll(2)).
--
--   shotover lua $PWD/bench/cql-load.lua PORT WORKLOAD OPS CONNS DEPTH
--                 POPULATION SEED HOT WRITE_RATIO LATFILE [IDX NPROCS]
--
-- (an absolute path: `shotover lua` does not look in the current directory;
-- bench/cassandra --client lua runs it.)
--
-- Opens CONNS connections to 127.0.0.1:PORT (STARTUP, native protocol v4,
-- no compression), PREPAREs the bench's INSERT and SELECT on each, prints
-- "ready", waits for a line "go" on stdin, then keeps DEPTH EXECUTE
-- requests in flight per connection until OPS replies have arrived.  Each
-- request is written straight into the connection's send buffer from a
-- pre-encoded template (the key's ten digits and, for a write, one of 64
-- pre-encoded value sets patched in), so a request costs a few memcpys and
-- no Lua allocation.  Workloads (the same mix as bench/cassandra's Python
-- workers): write (keys IDX, IDX+NPROCS, ... of the population), read
-- (uniform over the population), mixed (1:1 at random), cache (a hot set
-- of the first HOT keys, a write with probability WRITE_RATIO, else a read).
--
-- Every reply is checked: opcode RESULT (kind Void for a write, Rows for a
-- read) or it counts as an error (the first one is reported); a read that
-- finds no row counts as missing.  Per-request latency (seconds, from the
-- request's copy into the send buffer to its reply being parsed) of the
-- successful requests is written to LATFILE as native doubles; the last
-- line on stdout is
--   done OK_OPS ERRORS MISSING START END CPU
-- (START/END CLOCK_MONOTONIC seconds, CPU this process's CPU seconds during
-- the run), then "error <first error>" when ERRORS > 0.  Exits 1 with a
-- message on stderr if the setup fails or no reply arrives for 60 s.

local ffi = require("ffi")
local bit = require("bit")
local C = ffi.C
local band, bor, rshift = bit.band, bit.bor, bit.rshift

ffi.cdef [[
int socket(int domain, int type, int protocol);
int connect(int fd, const void *addr, uint32_t len);
int close(int fd);
int getsockopt(int fd, int level, int name, void *val, uint32_t *len);
int setsockopt(int fd, int level, int name, const void *val, uint32_t len);
struct bl_pollfd { int fd; short events; short revents; };
int poll(struct bl_pollfd *fds, unsigned long nfds, int timeout);
intptr_t send(int fd, const void *buf, size_t len, int flags);
intptr_t recv(int fd, void *buf, size_t len, int flags);
struct bl_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk, struct bl_timespec *ts);
char *strerror(int errnum);
void *memmove(void *dst, const void *src, size_t n);
struct bl_sockaddr_in { uint16_t family; uint8_t port[2]; uint8_t addr[4]; uint8_t zero[8]; };
]]

local AF_INET, SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC = 2, 1, 0x800, 0x80000
local SOL_SOCKET, SO_ERROR, IPPROTO_TCP, TCP_NODELAY = 1, 4, 6, 1
local POLLIN, POLLOUT, POLLERR, POLLHUP = 1, 4, 8, 16
local EINTR, EAGAIN, EINPROGRESS = 4, 11, 115
local MSG_NOSIGNAL = 0x4000
local CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID = 1, 2
local OP_ERROR, OP_STARTUP, OP_READY, OP_RESULT, OP_PREPARE, OP_EXECUTE = 0, 1, 2, 8, 9, 10
local LOCAL_ONE = 10
local VERSION = 4
local KEYSPACE, TABLE, NCOLS, COL_BYTES = "bench", "standard1", 5, 34
local PAGE_SIZE = 5000              -- the Python driver's default fetch size
local BUF = 4 * 1024 * 1024         -- per-connection send and receive buffers
local STALL = 60                    -- seconds without any reply: give up

local function die(msg)
    io.stderr:write("cql-load: ", msg, "\n")
    os.exit(1)
end

local function errstr(e)
    e = e or ffi.errno()
    return ffi.string(C.strerror(e)) .. " (errno " .. e .. ")"
end

local ts = ffi.new("struct bl_timespec")
local function now()
    C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
local function cpu_now()
    C.clock_gettime(CLOCK_PROCESS_CPUTIME_ID, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

-- arguments
local a = arg
local port = tonumber(a[1])
local workload = a[2]
local nops = tonumber(a[3])
local nconns = tonumber(a[4])
local depth = tonumber(a[5])
local population = tonumber(a[6])
local seed = tonumber(a[7])
local hot = tonumber(a[8])
local write_ratio = tonumber(a[9])
local latfile = a[10]
local idx = tonumber(a[11]) or 0
local nprocs = tonumber(a[12]) or 1
if not (port and nops and nconns and depth and population and seed and hot and write_ratio
        and latfile) then
    die("usage: PORT WORKLOAD OPS CONNS DEPTH POPULATION SEED HOT WRITE_RATIO LATFILE "
        .. "[IDX NPROCS]")
end
if workload ~= "write" and workload ~= "read" and workload ~= "mixed"
   and workload ~= "cache" then
    die("unknown workload " .. tostring(workload))
end
if depth < 1 or depth > 32768 then die("DEPTH must be 1..32768") end
math.randomseed(seed)

---------------------------------------------------------------------------
-- encoding helpers (Lua strings: setup only)
---------------------------------------------------------------------------

local function be16(n) return string.char(band(rshift(n, 8), 0xff), band(n, 0xff)) end
local function be32(n)
    return string.char(band(rshift(n, 24), 0xff), band(rshift(n, 16), 0xff),
        band(rshift(n, 8), 0xff), band(n, 0xff))
end
local function frame(stream, opcode, body)
    return string.char(VERSION, 0) .. be16(stream) .. string.char(opcode) .. be32(#body) .. body
end
local function rd16(s, p) return s:byte(p) * 256 + s:byte(p + 1) end
local function rd32(s, p)
    return ((s:byte(p) * 256 + s:byte(p + 1)) * 256 + s:byte(p + 2)) * 256 + s:byte(p + 3)
end

---------------------------------------------------------------------------
-- connections: setup is blocking-by-poll, the run is event-driven
---------------------------------------------------------------------------

local pfds = ffi.new("struct bl_pollfd[?]", nconns)
local one = ffi.new("struct bl_pollfd[1]")

local function wait_fd(fd, events, timeout_ms)
    one[0].fd, one[0].events, one[0].revents = fd, events, 0
    while true do
        local r = C.poll(one, 1, timeout_ms)
        if r >= 0 then return r > 0 end
        if ffi.errno() ~= EINTR then die("poll: " .. errstr()) end
    end
end

local function connect(p)
    local fd = C.socket(AF_INET, bor(SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC), 0)
    if fd < 0 then die("socket: " .. errstr()) end
    local sa = ffi.new("struct bl_sockaddr_in")
    sa.family = AF_INET
    sa.port[0], sa.port[1] = band(rshift(p, 8), 0xff), band(p, 0xff)
    sa.addr[0], sa.addr[3] = 127, 1
    if C.connect(fd, sa, ffi.sizeof(sa)) ~= 0 then
        local e = ffi.errno()
        if e ~= EINPROGRESS then die("connect 127.0.0.1:" .. p .. ": " .. errstr(e)) end
        if not wait_fd(fd, POLLOUT, 10000) then die("connect 127.0.0.1:" .. p .. ": timed out") end
        local v, len = ffi.new("int[1]"), ffi.new("uint32_t[1]", 4)
        C.getsockopt(fd, SOL_SOCKET, SO_ERROR, v, len)
        if v[0] ~= 0 then die("connect 127.0.0.1:" .. p .. ": " .. errstr(v[0])) end
    end
    local on = ffi.new("int[1]", 1)
    C.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, on, 4)  -- like the driver
    return fd
end

local function send_all(fd, s)
    local p, off, n = ffi.cast("const uint8_t *", s), 0, #s
    local deadline = now() + 10
    while off < n do
        local r = tonumber(C.send(fd, p + off, n - off, MSG_NOSIGNAL))
        if r > 0 then off = off + r
        else
            local e = ffi.errno()
            if e == EAGAIN then
                if now() > deadline then die("send: timed out") end
                wait_fd(fd, POLLOUT, 1000)
            elseif e ~= EINTR then die("send: " .. errstr(e)) end
        end
    end
end

local setup_buf = ffi.new("uint8_t[?]", 65536)
-- one request/response at a time during setup: the frame with `stream`
local function request(fd, stream, opcode, body, what)
    send_all(fd, frame(stream, opcode, body))
    local got = ""
    local deadline = now() + 30
    while true do
        if #got >= 9 then
            local len = rd32(got, 6)
            if #got >= 9 + len then
                local op, body_ = got:byte(5), got:sub(10, 9 + len)
                local flags = got:byte(2)
                if rd16(got, 3) == stream then
                    -- skip a tracing id, warnings, custom payload
                    local p = 1
                    if band(flags, 0x02) ~= 0 then p = p + 16 end
                    if band(flags, 0x08) ~= 0 then
                        local nw = rd16(body_, p); p = p + 2
                        for _ = 1, nw do p = p + 2 + rd16(body_, p) end
                    end
                    if band(flags, 0x04) ~= 0 then
                        local nc = rd16(body_, p); p = p + 2
                        for _ = 1, nc do
                            p = p + 2 + rd16(body_, p)
                            local bl = rd32(body_, p); p = p + 4
                            if bl < 0x80000000 then p = p + bl end
                        end
                    end
                    if op == OP_ERROR then
                        local code = rd32(body_, p)
                        local msg = body_:sub(p + 6, p + 5 + rd16(body_, p + 4))
                        die(string.format("%s: CQL error 0x%04x: %s", what, code, msg))
                    end
                    return op, body_:sub(p)
                end
                got = got:sub(10 + len)      -- an event or a stray reply
            end
        end
        if now() > deadline then die(what .. ": no reply within 30 s") end
        if wait_fd(fd, POLLIN, 1000) then
            local r = tonumber(C.recv(fd, setup_buf, 65536, 0))
            if r == 0 then die(what .. ": connection closed") end
            if r > 0 then got = got .. ffi.string(setup_buf, r)
            elseif ffi.errno() ~= EAGAIN and ffi.errno() ~= EINTR then
                die(what .. ": recv: " .. errstr())
            end
        end
    end
end

local INSERT = string.format("INSERT INTO %s.%s (key, c0, c1, c2, c3, c4) VALUES (?, ?, ?, ?, ?, ?)",
    KEYSPACE, TABLE)
local SELECT = string.format("SELECT key, c0, c1, c2, c3, c4 FROM %s.%s WHERE key = ?",
    KEYSPACE, TABLE)

local fds, ins_id, sel_id = {}, nil, nil
for c = 1, nconns do
    local fd = connect(port)
    fds[c] = fd
    local op = request(fd, 0, OP_STARTUP, be16(1) .. be16(11) .. "CQL_VERSION" .. be16(5) .. "3.0.0",
        "STARTUP")
    if op ~= OP_READY then die("STARTUP: unexpected opcode " .. op) end
    for _, q in ipairs({ INSERT, SELECT }) do
        local op2, body = request(fd, 1, OP_PREPARE, be32(#q) .. q, "PREPARE")
        if op2 ~= OP_RESULT or rd32(body, 1) ~= 4 then die("PREPARE: not a Prepared result") end
        local id = body:sub(7, 6 + rd16(body, 5))
        if q == INSERT then
            if ins_id and ins_id ~= id then die("PREPARE: ids differ across connections") end
            ins_id = id
        else
            if sel_id and sel_id ~= id then die("PREPARE: ids differ across connections") end
            sel_id = id
        end
    end
end

---------------------------------------------------------------------------
-- request templates: header | id, consistency, flags, values (key first) |
-- key digits | rest (values, page size); the stream id is patched in
---------------------------------------------------------------------------

local KEYLEN = 10
-- flags: values, skip_metadata (reads; the driver sets it where the
-- statement has result metadata), page size
local function template(id, flags, nvalues, rest)
    local head_body = be16(#id) .. id .. be16(LOCAL_ONE) .. string.char(flags) .. be16(nvalues)
        .. be32(KEYLEN)
    local bodylen = #head_body + KEYLEN + #rest
    local head = string.char(VERSION, 0, 0, 0, OP_EXECUTE) .. be32(bodylen) .. head_body
    return head, #head
end

local sel_head, sel_hlen = template(sel_id, 0x01 + 0x02 + 0x04, 1, be32(PAGE_SIZE))
local sel_rest = be32(PAGE_SIZE)
local sel_total = sel_hlen + KEYLEN + #sel_rest
local ins_rests = {}
do
    local f = io.open("/dev/urandom", "rb")
    for v = 0, 63 do
        local parts = {}
        for i = 1, NCOLS do parts[i] = be32(COL_BYTES) .. f:read(COL_BYTES) end
        ins_rests[v] = table.concat(parts) .. be32(PAGE_SIZE)
    end
    f:close()
end
local ins_head, ins_hlen = template(ins_id, 0x01 + 0x04, 1 + NCOLS, ins_rests[0])
local ins_rlen = #ins_rests[0]
local ins_total = ins_hlen + KEYLEN + ins_rlen

---------------------------------------------------------------------------
-- per-connection state
---------------------------------------------------------------------------

local conns = {}
for c = 1, nconns do
    conns[c] = {
        fd = fds[c],
        out = ffi.new("uint8_t[?]", BUF), outlen = 0, outoff = 0,
        inb = ffi.new("uint8_t[?]", BUF), inlen = 0,
        free = ffi.new("int32_t[?]", depth), nfree = depth,
        t0 = ffi.new("double[?]", depth),
        isread = ffi.new("uint8_t[?]", depth),
        inflight = 0,
    }
    local st = conns[c]
    for s = 0, depth - 1 do st.free[s] = depth - 1 - s end
end

local lat = ffi.new("double[?]", nops > 0 and nops or 1)
local issued, done_ok, errors, missing = 0, 0, 0, 0
local first_error = nil
local wi = 0                    -- write workload: this process's next write

-- next request: key number and whether it is a read
local function pick()
    if workload == "cache" then
        local k = math.random(hot) - 1
        return k, math.random() >= write_ratio
    elseif workload == "read" then
        return math.random(population) - 1, true
    elseif workload == "mixed" then
        return math.random(population) - 1, math.random() >= 0.5
    else
        local k = (idx + wi * nprocs) % population
        wi = wi + 1
        return k, false
    end
end

local function put_key(buf, off, k)
    for i = KEYLEN - 1, 0, -1 do
        buf[off + i] = 48 + k % 10
        k = math.floor(k / 10)
    end
end

-- append one request to st's send buffer
local function issue(st)
    local s = st.free[st.nfree - 1]
    st.nfree = st.nfree - 1
    local k, isread = pick()
    local buf, off = st.out, st.outlen
    if isread then
        ffi.copy(buf + off, sel_head, sel_hlen)
        put_key(buf, off + sel_hlen, k)
        ffi.copy(buf + off + sel_hlen + KEYLEN, sel_rest, 4)
        st.outlen = off + sel_total
        st.isread[s] = 1
    else
        ffi.copy(buf + off, ins_head, ins_hlen)
        put_key(buf, off + ins_hlen, k)
        ffi.copy(buf + off + ins_hlen + KEYLEN, ins_rests[(k + issued) % 64], ins_rlen)
        st.outlen = off + ins_total
        st.isread[s] = 0
    end
    buf[off + 2] = rshift(s, 8)
    buf[off + 3] = band(s, 0xff)
    st.t0[s] = now()
    st.inflight = st.inflight + 1
    issued = issued + 1
end

local function fill(st)
    while st.nfree > 0 and issued < nops and st.outlen + ins_total <= BUF do
        issue(st)
    end
end

-- write what can be written now
local function flush(st)
    while st.outoff < st.outlen do
        local r = tonumber(C.send(st.fd, st.out + st.outoff, st.outlen - st.outoff, MSG_NOSIGNAL))
        if r > 0 then
            st.outoff = st.outoff + r
        else
            local e = ffi.errno()
            if e == EAGAIN then break end
            if e ~= EINTR then die("send: " .. errstr(e)) end
        end
    end
    if st.outoff == st.outlen then
        st.outoff, st.outlen = 0, 0
    elseif st.outoff > BUF / 2 then
        C.memmove(st.out, st.out + st.outoff, st.outlen - st.outoff)
        st.outlen = st.outlen - st.outoff
        st.outoff = 0
    end
end

local function u16(b, p) return b[p] * 256 + b[p + 1] end
local function u32(b, p) return ((b[p] * 256 + b[p + 1]) * 256 + b[p + 2]) * 256 + b[p + 3] end

-- the first error's text: code and message of an ERROR body at p
local function error_text(b, p, len)
    local ok, s = pcall(function()
        local code = u32(b, p)
        local ml = u16(b, p + 4)
        return string.format("CQL error 0x%04x: %s", code, ffi.string(b + p + 6, ml))
    end)
    return ok and s or ("unparsable ERROR frame of " .. len .. " bytes")
end

-- rows in a Rows result whose body (past the frame header) starts at p;
-- nil if the metadata cannot be walked
local function rows_count(b, p)
    local mflags = u32(b, p)
    local ncols = u32(b, p + 4)
    p = p + 8
    if band(mflags, 0x02) ~= 0 then            -- paging state
        local l = u32(b, p); p = p + 4
        if l < 0x80000000 then p = p + l end
    end
    if band(mflags, 0x04) == 0 then            -- metadata present: walk it
        if band(mflags, 0x01) ~= 0 then
            p = p + 2 + u16(b, p); p = p + 2 + u16(b, p)
        end
        for _ = 1, ncols do
            if band(mflags, 0x01) == 0 then
                p = p + 2 + u16(b, p); p = p + 2 + u16(b, p)
            end
            p = p + 2 + u16(b, p)              -- name
            local t = u16(b, p); p = p + 2
            if t == 0 then p = p + 2 + u16(b, p)
            elseif t >= 0x20 then return nil end   -- no collections in this table
        end
    end
    return u32(b, p)
end

-- parse complete frames in st's receive buffer
local function consume(st, tnow)
    local b, len, p = st.inb, st.inlen, 0
    while len - p >= 9 do
        local blen = u32(b, p + 5)
        if len - p < 9 + blen then
            if 9 + blen > BUF then die("reply frame of " .. blen .. " bytes") end
            break
        end
        local flags, op = b[p + 1], b[p + 4]
        local s = u16(b, p + 2)
        if s >= 0x8000 then s = s - 0x10000 end
        if s >= 0 and s < depth then
            local body = p + 9
            if flags ~= 0 then
                if band(flags, 0x02) ~= 0 then body = body + 16 end
                if band(flags, 0x08) ~= 0 then
                    local nw = u16(b, body); body = body + 2
                    for _ = 1, nw do body = body + 2 + u16(b, body) end
                end
                if band(flags, 0x04) ~= 0 then
                    local nc = u16(b, body); body = body + 2
                    for _ = 1, nc do
                        body = body + 2 + u16(b, body)
                        local bl = u32(b, body); body = body + 4
                        if bl < 0x80000000 then body = body + bl end
                    end
                end
            end
            local ok = false
            if op == OP_RESULT then
                local kind = u32(b, body)
                if st.isread[s] == 1 then
                    if kind == 2 then
                        ok = true
                        local n = rows_count(b, body + 4)
                        if n == 0 then missing = missing + 1 end
                    end
                else
                    ok = kind == 1
                end
                if not ok and not first_error then
                    first_error = "unexpected RESULT kind " .. kind .. " for a "
                        .. (st.isread[s] == 1 and "read" or "write")
                end
            elseif not first_error then
                first_error = op == OP_ERROR and error_text(b, body, blen)
                    or ("unexpected opcode " .. op)
            end
            if ok then
                lat[done_ok] = tnow - st.t0[s]
                done_ok = done_ok + 1
            else
                errors = errors + 1
            end
            st.free[st.nfree] = s
            st.nfree = st.nfree + 1
            st.inflight = st.inflight - 1
        end                                    -- else: an event (stream -1); ignored
        p = p + 9 + blen
    end
    if p > 0 then
        if p < len then C.memmove(b, b + p, len - p) end
        st.inlen = len - p
    end
end

---------------------------------------------------------------------------
-- the run
---------------------------------------------------------------------------

io.stdout:write("ready\n")
io.stdout:flush()
local line = io.stdin:read("*l")
if line ~= "go" then os.exit(0) end

local cpu0, t0 = cpu_now(), now()
for c = 1, nconns do
    fill(conns[c])
    flush(conns[c])
end
local last_progress = now()
while done_ok + errors < nops do
    for c = 1, nconns do
        local st = conns[c]
        pfds[c - 1].fd = st.fd
        pfds[c - 1].events = st.outlen > st.outoff and bor(POLLIN, POLLOUT) or POLLIN
        pfds[c - 1].revents = 0
    end
    local r = C.poll(pfds, nconns, 1000)
    if r < 0 and ffi.errno() ~= EINTR then die("poll: " .. errstr()) end
    local before = done_ok + errors
    if r > 0 then
        for c = 1, nconns do
            local st = conns[c]
            local ev = pfds[c - 1].revents
            if band(ev, bor(POLLIN, POLLERR, POLLHUP)) ~= 0 then
                local n = tonumber(C.recv(st.fd, st.inb + st.inlen, BUF - st.inlen, 0))
                if n > 0 then
                    st.inlen = st.inlen + n
                    consume(st, now())
                elseif n == 0 then
                    die(string.format("connection %d closed by the server with %d requests "
                        .. "in flight (%d answered, %d errors%s)", c, st.inflight, done_ok,
                        errors, first_error and ("; first: " .. first_error) or ""))
                else
                    local e = ffi.errno()
                    if e ~= EAGAIN and e ~= EINTR then die("recv: " .. errstr(e)) end
                end
            end
            fill(st)
            if st.outlen > st.outoff then flush(st) end
        end
    end
    local tn = now()
    if done_ok + errors > before then
        last_progress = tn
    elseif tn - last_progress > STALL then
        die(string.format("no reply for %d s (%d/%d answered, %d errors)", STALL,
            done_ok + errors, nops, errors))
    end
end
local t1, cpu1 = now(), cpu_now()

local f = io.open(latfile, "wb")
if not f then die("cannot write " .. latfile) end
f:write(ffi.string(lat, done_ok * 8))
f:close()
for c = 1, nconns do C.close(conns[c].fd) end
io.stdout:write(string.format("done %d %d %d %.6f %.6f %.6f\n", done_ok, errors, missing,
    t0, t1, cpu1 - cpu0))
if first_error then io.stdout:write("error ", (first_error:gsub("\n", " ")), "\n") end
io.stdout:flush()
os.exit(0)
