-- t/lib/harness.lua -- what the integration specs share: free ports, child
-- processes (redis-server, shotover, redis-cli, redis-benchmark) with bounded
-- waits, raw TCP connections and a RESP reader.
--
-- Everything outside Lua goes through LuaJIT's FFI to libc (fork/exec,
-- waitpid, sockets, poll, clock_gettime), so no Lua C module is needed and
-- every wait has a deadline.  Children get PR_SET_PDEATHSIG(SIGKILL): if the
-- busted process dies (ctest timeout), they die with it.
--
-- Typical use in a spec:
--
--   local h = require("harness")
--   describe("...", function()
--     local env
--     setup(function() env = h.start_pair({ workers = 1 }) end)
--     teardown(h.cleanup)
--     it("...", function() assert.equal("PONG", h.cli(env.proxy.port, "ping")) end)
--   end)
--
-- Environment: SHOTOVER_BIN (the binary under test), SHOTOVER_KEEP_TMP=1
-- keeps the temp dirs (logs, configs) and prints where they are.

local ffi = require("ffi")
local bit = require("bit")
local C = ffi.C

local h = {}

---------------------------------------------------------------------------
-- libc
---------------------------------------------------------------------------

local cdefs = {
    "int fork(void);",
    "int execvp(const char *file, char *const argv[]);",
    "void _exit(int status);",
    "int open(const char *pathname, int flags, int mode);",
    "int close(int fd);",
    "int dup2(int oldfd, int newfd);",
    "int waitpid(int pid, int *status, int options);",
    "int kill(int pid, int sig);",
    "int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5);",
    "int setpgid(int pid, int pgid);",
    "int getpid(void);",
    "int getppid(void);",
    "int unsetenv(const char *name);",
    "int socket(int domain, int type, int protocol);",
    "int connect(int fd, const void *addr, uint32_t len);",
    "int bind(int fd, const void *addr, uint32_t len);",
    "int listen(int fd, int backlog);",
    "int accept(int fd, void *addr, uint32_t *len);",
    "int getsockname(int fd, void *addr, uint32_t *len);",
    "int getsockopt(int fd, int level, int name, void *val, uint32_t *len);",
    "int setsockopt(int fd, int level, int name, const void *val, uint32_t len);",
    "int shutdown(int fd, int how);",
    "struct sh_t_pollfd { int fd; short events; short revents; };",
    "int poll(struct sh_t_pollfd *fds, unsigned long nfds, int timeout);",
    "intptr_t send(int fd, const void *buf, size_t len, int flags);",
    "intptr_t recv(int fd, void *buf, size_t len, int flags);",
    "struct sh_t_timespec { long tv_sec; long tv_nsec; };",
    "int clock_gettime(int clk, struct sh_t_timespec *ts);",
    "char *mkdtemp(char *template);",
    "char *strerror(int errnum);",
    "struct sh_t_sockaddr_in { uint16_t family; uint8_t port[2]; uint8_t addr[4]; uint8_t zero[8]; };",
}
-- Busted loads every spec file in one process and reloads this module for
-- each: a declaration seen before raises "attempt to redefine", which is fine.
for _, d in ipairs(cdefs) do pcall(ffi.cdef, d) end

-- Linux (x86_64 and aarch64 agree on all of these)
local AF_INET, SOCK_STREAM = 2, 1
local SOCK_NONBLOCK, SOCK_CLOEXEC = 0x800, 0x80000
local SOL_SOCKET, SO_ERROR, SO_LINGER = 1, 4, 13
local O_RDONLY, O_WRONLY, O_CREAT, O_TRUNC, O_APPEND = 0, 1, 0x40, 0x200, 0x400
local POLLIN, POLLOUT = 1, 4
local EINTR, EAGAIN, EINPROGRESS = 4, 11, 115
local MSG_NOSIGNAL = 0x4000
local WNOHANG = 1
local PR_SET_PDEATHSIG = 1
local CLOCK_MONOTONIC = 1
h.SIGKILL, h.SIGTERM, h.SIGSTOP, h.SIGCONT, h.SIGHUP, h.SIGINT = 9, 15, 19, 18, 1, 2
local SIGNAMES = { [1] = "SIGHUP", [2] = "SIGINT", [6] = "SIGABRT",
    [9] = "SIGKILL", [11] = "SIGSEGV", [13] = "SIGPIPE", [15] = "SIGTERM",
    [7] = "SIGBUS", [8] = "SIGFPE", [4] = "SIGILL" }

local function errstr(e)
    e = e or ffi.errno()
    return ffi.string(C.strerror(e)) .. " (errno " .. e .. ")"
end

local OWNER_PID = C.getpid()

---------------------------------------------------------------------------
-- time
---------------------------------------------------------------------------

local ts = ffi.new("struct sh_t_timespec")

-- monotonic seconds, float
function h.now()
    C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

-- short pause for poll loops only (never as a readiness substitute)
function h.sleep(s)
    C.poll(nil, 0, math.max(0, math.floor(s * 1000 + 0.5)))
end

-- Poll fn() every `interval` seconds until it returns a truthy value (which
-- is returned) or `timeout` seconds pass (then error with `what` and the
-- last value fn returned, which helps to see why).
function h.wait_until(fn, timeout, what, interval)
    timeout = timeout or 10
    interval = interval or 0.02
    local deadline = h.now() + timeout
    local last, last2
    while true do
        local v, v2 = fn()
        if v then return v, v2 end
        last, last2 = v, v2
        if h.now() >= deadline then
            error(string.format("timed out after %.1fs waiting for %s (last: %s %s)",
                timeout, what or "condition", tostring(last), tostring(last2)), 2)
        end
        h.sleep(interval)
    end
end

---------------------------------------------------------------------------
-- files and temp dirs
---------------------------------------------------------------------------

function h.read_file(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local s = f:read("*a")
    f:close()
    return s
end

function h.write_file(path, data)
    local f = assert(io.open(path, "wb"))
    assert(f:write(data))
    f:close()
    return path
end

local tmp_dirs = {}   -- every dir this module instance made
local root_dir

local function mkdtemp(prefix)
    local tmpl = ffi.new("char[?]", #prefix + 8)
    ffi.copy(tmpl, prefix .. "XXXXXX")
    assert(C.mkdtemp(tmpl) ~= nil, "mkdtemp: " .. errstr())
    return ffi.string(tmpl)
end

-- the spec file's own temp dir, made on first use
function h.root()
    if not root_dir then
        local base = os.getenv("TMPDIR") or "/tmp"
        root_dir = mkdtemp(base .. "/shotover-it-")
        tmp_dirs[#tmp_dirs + 1] = root_dir
    end
    return root_dir
end

-- a new dir under the root, named after `name`
function h.tmpdir(name)
    return mkdtemp(h.root() .. "/" .. (name or "d"):gsub("[^%w_.-]", "_") .. "-")
end

local seq = 0
function h.tmpfile(name)
    seq = seq + 1
    return string.format("%s/%s-%d", h.root(), (name or "f"):gsub("[^%w_.-]", "_"), seq)
end

---------------------------------------------------------------------------
-- processes
---------------------------------------------------------------------------

local procs = {}          -- live children, for cleanup
local shotovers = {}                 -- every shotover started, for cleanup
local Proc = {}
Proc.__index = Proc

local function decode_status(st)
    local sig = bit.band(st, 0x7f)
    if sig == 0 then
        return { code = bit.band(bit.rshift(st, 8), 0xff) }
    end
    return { signal = sig, signame = SIGNAMES[sig] or ("signal " .. sig) }
end

local function status_string(s)
    if not s then return "running" end
    if s.code then return "exit " .. s.code end
    return "killed by " .. s.signame
end
h.status_string = status_string

-- spawn(argv, opts): start argv[1] (looked up in PATH) with argv.
-- opts.stdin / opts.stdout / opts.stderr: file paths (stdin default
-- /dev/null, stdout/stderr default /dev/null); opts.append: open outputs for
-- appending; opts.stderr == "stdout" sends stderr to the stdout file;
-- LD_PRELOAD is dropped unless opts.keep_preload.
-- Returns a Proc.
function h.spawn(argv, opts)
    opts = opts or {}
    assert(type(argv) == "table" and #argv >= 1, "spawn: argv list expected")
    -- everything the child touches is made before fork
    local keep = {}
    local cargv = ffi.new("char *[?]", #argv + 1)
    for i, a in ipairs(argv) do
        a = tostring(a)
        local s = ffi.new("char[?]", #a + 1)
        ffi.copy(s, a)
        keep[#keep + 1] = s
        cargv[i - 1] = s
    end
    cargv[#argv] = nil
    local function cstr(s)
        local c = ffi.new("char[?]", #s + 1)
        ffi.copy(c, s)
        keep[#keep + 1] = c
        return c
    end
    local outflags = bit.bor(O_WRONLY, O_CREAT, opts.append and O_APPEND or O_TRUNC)
    local in_path = cstr(opts.stdin or "/dev/null")
    local out_path = cstr(opts.stdout or "/dev/null")
    local err_same = opts.stderr == "stdout"
    local err_path = cstr(err_same and "/dev/null" or (opts.stderr or "/dev/null"))
    local parent = C.getpid()
    local keep_preload = opts.keep_preload

    local pid = C.fork()
    if pid < 0 then error("fork: " .. errstr()) end
    if pid == 0 then
        -- child: no Lua GC (finalizers belong to the parent), then exec
        collectgarbage("stop")
        C.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
        if C.getppid() ~= parent then C._exit(126) end
        C.setpgid(0, 0)
        -- a sanitizer runtime preloaded into luajit (SH_SANITIZE builds) is
        -- not for redis-server or redis-cli; shotover links its own
        if not keep_preload then C.unsetenv("LD_PRELOAD") end
        local fd = C.open(in_path, O_RDONLY, 0)
        if fd < 0 then C._exit(125) end
        C.dup2(fd, 0)
        local ofd = C.open(out_path, outflags, 420)
        if ofd < 0 then C._exit(125) end
        C.dup2(ofd, 1)
        if err_same then
            C.dup2(ofd, 2)
        else
            local efd = C.open(err_path, outflags, 420)
            if efd < 0 then C._exit(125) end
            C.dup2(efd, 2)
        end
        C.execvp(cargv[0], cargv)
        C._exit(127)
    end
    local p = setmetatable({ pid = pid, argv = argv, started = h.now(),
        stdout_path = opts.stdout, stderr_path = (not err_same) and opts.stderr or nil },
        Proc)
    procs[p] = true
    return p
end

-- nil while running; afterwards { code = n } or { signal = n, signame = s }
function Proc:poll()
    if self.status then return self.status end
    local st = ffi.new("int[1]")
    local r = C.waitpid(self.pid, st, WNOHANG)
    if r == self.pid then
        self.status = decode_status(st[0])
        self.ended = h.now()
        procs[self] = nil
        return self.status
    elseif r < 0 then
        -- not our child any more (should not happen): treat as gone
        self.status = { code = -1, lost = true }
        procs[self] = nil
        return self.status
    end
    return nil
end

function Proc:alive() return self:poll() == nil end

-- wait up to `timeout` seconds; the status, or nil if still running
function Proc:wait(timeout)
    local deadline = h.now() + (timeout or 10)
    while true do
        local s = self:poll()
        if s then return s end
        if h.now() >= deadline then return nil end
        h.sleep(0.01)
    end
end

function Proc:kill(sig)
    if self:poll() then return false end
    return C.kill(self.pid, sig or h.SIGTERM) == 0
end

-- SIGTERM, wait up to `grace` seconds, then SIGKILL.  Returns the status and
-- whether SIGKILL was needed.
function Proc:stop(grace)
    if self:poll() then return self.status, false end
    self:kill(h.SIGTERM)
    local s = self:wait(grace or 5)
    if s then return s, false end
    self:kill(h.SIGKILL)
    s = self:wait(10)
    return s, true
end

function Proc:describe()
    return table.concat(self.argv, " ") .. " [pid " .. self.pid .. ", "
        .. status_string(self:poll()) .. "]"
end

-- run(argv, opts): run to completion with a deadline (opts.timeout seconds,
-- default 30; the child is killed after it).  opts.stdin is a string fed on
-- standard input.  Returns { code, signal, stdout, stderr, timed_out,
-- elapsed }.
function h.run(argv, opts)
    opts = opts or {}
    local base = h.tmpfile("run")
    local in_path
    if opts.stdin then in_path = h.write_file(base .. ".in", opts.stdin) end
    local out_path, err_path = base .. ".out", base .. ".err"
    local t0 = h.now()
    local p = h.spawn(argv, { stdin = in_path, stdout = out_path, stderr = err_path })
    local s = p:wait(opts.timeout or 30)
    local timed_out = false
    if not s then
        timed_out = true
        s = p:stop(1)
    end
    local res = {
        code = s.code, signal = s.signal, timed_out = timed_out,
        elapsed = h.now() - t0,
        stdout = h.read_file(out_path) or "",
        stderr = h.read_file(err_path) or "",
    }
    os.remove(out_path); os.remove(err_path)
    if in_path then os.remove(in_path) end
    return res
end

-- strip one trailing "\n" (redis-cli ends its output with one)
function h.chomp(s)
    return (s:gsub("\n$", ""))
end

-- tls_args(tls): the TLS options of redis-cli and redis-benchmark for
-- tls = { ca = path, cert = path, key = path, sni = name, insecure = true }
-- (every key optional; an empty table is --tls with the system's CAs)
function h.tls_args(tls)
    local out = {}
    if not tls then return out end
    out[1] = "--tls"
    local function add(flag, v)
        if v then out[#out + 1] = flag; out[#out + 1] = tostring(v) end
    end
    add("--cacert", tls.ca)
    add("--cert", tls.cert)
    add("--key", tls.key)
    add("--sni", tls.sni)
    if tls.insecure then out[#out + 1] = "--insecure" end
    return out
end

-- cli(port, arg, arg, ..., [opts]): redis-cli -p port args...; returns
-- stdout without its last newline, the exit code and stderr.  opts.stdin
-- (string, for -x), opts.timeout (seconds, default 20), opts.pre (list of
-- redis-cli options put before the command, e.g. {"-3", "--no-raw"}),
-- opts.tls (redis-cli --tls with the options of h.tls_args), opts.host.
-- A redis-cli that outlives the timeout is killed and this raises.
function h.cli(port, ...)
    local args = { ... }
    local opts = {}
    if type(args[#args]) == "table" then opts = table.remove(args) end
    local argv = { "redis-cli", "-p", tostring(port) }
    if opts.host then argv[#argv + 1] = "-h"; argv[#argv + 1] = opts.host end
    for _, a in ipairs(h.tls_args(opts.tls)) do argv[#argv + 1] = a end
    for _, a in ipairs(opts.pre or {}) do argv[#argv + 1] = a end
    for _, a in ipairs(args) do argv[#argv + 1] = tostring(a) end
    local r = h.run(argv, { stdin = opts.stdin, timeout = opts.timeout or 20 })
    if r.timed_out then
        error(string.format("redis-cli %s timed out after %ss (stdout %q)",
            table.concat(argv, " ", 2), opts.timeout or 20, r.stdout), 2)
    end
    return h.chomp(r.stdout), r.code, r.stderr
end

---------------------------------------------------------------------------
-- sockets
---------------------------------------------------------------------------

local Conn, wait_fd           -- below: connections, and poll on one fd

-- a Conn on connected socket fd, closed at cleanup
local function new_conn(fd, port)
    local c = setmetatable({ fd = fd, port = port, chunks = {}, nbuf = 0,
        eof = false }, Conn)
    h.defer(function() c:close() end)
    return c
end

local function sockaddr(port, addr)
    local sa = ffi.new("struct sh_t_sockaddr_in")
    sa.family = AF_INET
    sa.port[0] = bit.band(bit.rshift(port, 8), 0xff)
    sa.port[1] = bit.band(port, 0xff)
    local a, b, c, d = (addr or "127.0.0.1"):match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    assert(a, "IPv4 address expected")
    sa.addr[0], sa.addr[1], sa.addr[2], sa.addr[3] = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
    return sa
end

local function sockaddr_port(sa)
    return sa.port[0] * 256 + sa.port[1]
end

local given_ports = {}

-- whether a TCP socket can bind host:port now
local function can_bind(host, port)
    local fd = C.socket(AF_INET, bit.bor(SOCK_STREAM, SOCK_CLOEXEC), 0)
    assert(fd >= 0, "socket: " .. errstr())
    local sa = sockaddr(port, host)
    local ok = C.bind(fd, sa, ffi.sizeof(sa)) == 0
    C.close(fd)
    return ok
end

-- A loopback TCP port nobody listens on: the kernel picks it (bind to port
-- 0), we close the socket and never hand out the same port twice.
-- free_port{ "127.0.0.2", "127.0.0.3" }: a port free on 127.0.0.1 and on
-- each of those loopback addresses too (the same port for several nodes).
function h.free_port(hosts)
    for _ = 1, 50 do
        local fd = C.socket(AF_INET, bit.bor(SOCK_STREAM, SOCK_CLOEXEC), 0)
        assert(fd >= 0, "socket: " .. errstr())
        local sa = sockaddr(0)
        if C.bind(fd, sa, ffi.sizeof(sa)) ~= 0 then
            local e = errstr(); C.close(fd); error("bind: " .. e)
        end
        local len = ffi.new("uint32_t[1]", ffi.sizeof(sa))
        assert(C.getsockname(fd, sa, len) == 0, "getsockname: " .. errstr())
        C.close(fd)
        local port = sockaddr_port(sa)
        local ok = not given_ports[port]
        for _, host in ipairs(hosts or {}) do
            ok = ok and can_bind(host, port)
        end
        if ok then
            given_ports[port] = true
            return port
        end
    end
    error("free_port: no fresh port after 50 tries")
end

-- blackhole(): a listening socket that never accepts: connections complete
-- in the kernel's backlog and are never answered (a hung backend).
-- blackhole{ unconnectable = true }: the accept queue is kept full, so the
-- kernel drops further SYNs and connect() itself hangs (a host that does not
-- answer), on loopback and without firewall rules.
function h.blackhole(opts)
    opts = opts or {}
    local fd = C.socket(AF_INET, bit.bor(SOCK_STREAM, SOCK_CLOEXEC), 0)
    assert(fd >= 0, "socket: " .. errstr())
    local sa = sockaddr(0)
    assert(C.bind(fd, sa, ffi.sizeof(sa)) == 0, "bind: " .. errstr())
    assert(C.listen(fd, opts.unconnectable and 0 or 64) == 0, "listen: " .. errstr())
    local len = ffi.new("uint32_t[1]", ffi.sizeof(sa))
    assert(C.getsockname(fd, sa, len) == 0)
    local bh = { fd = fd, port = sockaddr_port(sa), fillers = {} }
    -- bh:accept(timeout): take the next connection, as a Conn (a backend
    -- that reads what it is sent and never answers)
    function bh.accept(_, timeout)
        local ready = wait_fd(bh.fd, POLLIN, math.floor((timeout or 5) * 1000))
        if not ready then error("blackhole: no connection within " .. (timeout or 5) .. "s", 2) end
        local cfd = C.accept(bh.fd, nil, nil)
        assert(cfd >= 0, "accept: " .. errstr())
        return new_conn(cfd, bh.port)
    end
    function bh.close()
        for _, c in ipairs(bh.fillers) do c:close() end
        if bh.fd then C.close(bh.fd); bh.fd = nil end
    end
    h.defer(bh.close)
    if opts.unconnectable then
        -- fill the queue until a connect no longer completes
        for _ = 1, 16 do
            local c = h.try_connect(bh.port, 0.2)
            if not c then return bh end
            bh.fillers[#bh.fillers + 1] = c
        end
        error("blackhole: connects still complete after 16 fillers")
    end
    return bh
end

-- listen on a given port (to show a command does not bind it)
function h.occupy(port)
    local fd = C.socket(AF_INET, bit.bor(SOCK_STREAM, SOCK_CLOEXEC), 0)
    assert(fd >= 0, "socket: " .. errstr())
    local sa = sockaddr(port)
    assert(C.bind(fd, sa, ffi.sizeof(sa)) == 0, "bind " .. port .. ": " .. errstr())
    assert(C.listen(fd, 16) == 0, "listen: " .. errstr())
    local o = { fd = fd, port = port }
    function o.close()
        if o.fd then C.close(o.fd); o.fd = nil end
    end
    h.defer(o.close)
    return o
end

Conn = {}
Conn.__index = Conn
local rbuf_size = 256 * 1024
local rbuf = ffi.new("uint8_t[?]", rbuf_size)
local pfd = ffi.new("struct sh_t_pollfd[1]")

function wait_fd(fd, events, timeout_ms)
    pfd[0].fd = fd
    pfd[0].events = events
    pfd[0].revents = 0
    while true do
        local r = C.poll(pfd, 1, timeout_ms)
        if r >= 0 then return r > 0, pfd[0].revents end
        if ffi.errno() ~= EINTR then error("poll: " .. errstr()) end
    end
end

-- connect(port, timeout, host): a non-blocking TCP connection to
-- host:port (default 127.0.0.1).  Returns a Conn, or nil and a reason.
function h.try_connect(port, timeout, host)
    local fd = C.socket(AF_INET, bit.bor(SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC), 0)
    assert(fd >= 0, "socket: " .. errstr())
    local sa = sockaddr(port, host)
    if C.connect(fd, sa, ffi.sizeof(sa)) ~= 0 then
        local e = ffi.errno()
        if e ~= EINPROGRESS then
            C.close(fd)
            return nil, "connect: " .. errstr(e)
        end
        local ready = wait_fd(fd, POLLOUT, math.floor((timeout or 5) * 1000))
        if not ready then
            C.close(fd)
            return nil, "connect: timed out"
        end
        local v = ffi.new("int[1]")
        local len = ffi.new("uint32_t[1]", 4)
        C.getsockopt(fd, SOL_SOCKET, SO_ERROR, v, len)
        if v[0] ~= 0 then
            C.close(fd)
            return nil, "connect: " .. errstr(v[0])
        end
    end
    return new_conn(fd, port)
end

-- Wait until something accepts connections on port (a TCP connect
-- succeeds), within timeout seconds (default 15); what names it in the
-- error.
function h.wait_listening(port, what, timeout)
    h.wait_until(function()
        local c = h.try_connect(port, 1)
        if c then c:close() end
        return c ~= nil
    end, timeout or 15, (what or "something") .. " to listen on " .. port)
end

function h.connect(port, timeout, host)
    local c, err = h.try_connect(port, timeout, host)
    if not c then error(err .. " (" .. (host and (host .. ":") or "port ") .. port .. ")", 2) end
    return c
end

function Conn:close()
    if self.fd then C.close(self.fd); self.fd = nil end
end

-- close with a reset (SO_LINGER 0): the peer's next write fails
function Conn:reset()
    local l = ffi.new("int[2]", 1, 0)
    assert(C.setsockopt(self.fd, SOL_SOCKET, SO_LINGER, l, 8) == 0, "SO_LINGER: " .. errstr())
    self:close()
end

-- half-close: no more requests from us, replies still come
function Conn:shutdown_write()
    assert(C.shutdown(self.fd, 1) == 0, "shutdown: " .. errstr())     -- SHUT_WR
end

-- send all of data within timeout seconds (default 30); false, reason on a
-- reset/closed peer
function Conn:send(data, timeout)
    assert(self.fd, "send on a closed connection")
    local deadline = h.now() + (timeout or 30)
    local p = ffi.cast("const uint8_t *", data)
    local off, n = 0, #data
    while off < n do
        local r = C.send(self.fd, p + off, n - off, MSG_NOSIGNAL)
        if r > 0 then
            off = off + tonumber(r)
        else
            local e = ffi.errno()
            if e == EAGAIN then
                local left = deadline - h.now()
                if left <= 0 then return false, "send: timed out after " .. off .. " bytes" end
                wait_fd(self.fd, POLLOUT, math.max(1, math.floor(left * 1000)))
            elseif e ~= EINTR then
                return false, "send: " .. errstr(e)
            end
        end
    end
    return true
end

-- read whatever arrives within timeout seconds into the buffer.  Returns
-- the byte count read; 0 with self.eof set at end of stream (or reset);
-- nil on timeout.
function Conn:fill(timeout)
    if self.eof then return 0 end
    local ready = wait_fd(self.fd, POLLIN, math.max(0, math.floor((timeout or 0) * 1000)))
    if not ready then return nil end
    while true do
        local r = C.recv(self.fd, rbuf, rbuf_size, 0)
        if r > 0 then
            self.chunks[#self.chunks + 1] = ffi.string(rbuf, r)
            self.nbuf = self.nbuf + tonumber(r)
            return tonumber(r)
        elseif r == 0 then
            self.eof = true
            return 0
        else
            local e = ffi.errno()
            if e == EAGAIN then return nil end
            if e ~= EINTR then
                self.eof = true
                self.reset = errstr(e)
                return 0
            end
        end
    end
end

function Conn:buffer()
    if #self.chunks > 1 then self.chunks = { table.concat(self.chunks) } end
    return self.chunks[1] or ""
end

function Conn:consume(n)
    local b = self:buffer()
    local head = b:sub(1, n)
    local rest = b:sub(n + 1)
    self.chunks = (#rest > 0) and { rest } or {}
    self.nbuf = #rest
    return head
end

-- all bytes buffered or arriving within `quiet` seconds of silence (bounded
-- by `timeout`): for "nothing more was sent" checks
function Conn:drain(quiet, timeout)
    local deadline = h.now() + (timeout or 5)
    while h.now() < deadline do
        local r = self:fill(quiet or 0.2)
        if not r or r == 0 then break end
    end
    return self:consume(self.nbuf)
end

-- read the next complete RESP value; returns value, raw bytes.  Raises on
-- timeout (default 10 s) or when the peer closes first.
function Conn:read_reply(timeout)
    local deadline = h.now() + (timeout or 10)
    local need = 1
    while true do
        if self.nbuf >= need then
            local b = self:buffer()
            local v, pos = h.resp_parse(b, 1)
            if v ~= nil then
                return v, self:consume(pos - 1)
            end
            need = math.max(pos or (self.nbuf + 1), self.nbuf + 1)
        end
        if self.eof then
            error(string.format("connection closed%s before a complete reply (buffered %q)",
                self.reset and (" (" .. self.reset .. ")") or "", self:buffer():sub(1, 200)), 2)
        end
        local left = deadline - h.now()
        if left <= 0 then
            error(string.format("no complete reply within %.1fs (buffered %q)",
                timeout or 10, self:buffer():sub(1, 200)), 2)
        end
        self:fill(left)
    end
end

-- like read_reply but returns nil, reason instead of raising
function Conn:try_read_reply(timeout)
    local ok, v, raw = pcall(self.read_reply, self, timeout)
    if ok then return v, raw end
    return nil, v
end

function Conn:read_replies(n, timeout)
    local deadline = h.now() + (timeout or 30)
    local out = {}
    for i = 1, n do
        local left = deadline - h.now()
        local v, raw = self:try_read_reply(math.max(0.001, left))
        if v == nil then
            error(string.format("reply %d of %d: %s", i, n, raw), 2)
        end
        out[i] = v
    end
    return out
end

-- wait until the peer closes the connection; true, bytes received before
-- the close; or false, bytes after timeout
function Conn:wait_closed(timeout)
    local deadline = h.now() + (timeout or 5)
    while not self.eof do
        local left = deadline - h.now()
        if left <= 0 then return false, self:buffer() end
        self:fill(left)
    end
    return true, self:buffer()
end

-- no bytes arrive for `quiet` seconds and the connection stays open
function Conn:silent(quiet)
    local r = self:fill(quiet or 0.2)
    return r == nil and self.nbuf == 0 and not self.eof
end

-- send one command (args as strings) and read its reply
function Conn:cmd(...)
    local ok, err = self:send(h.resp_command(...))
    if not ok then error(err, 2) end
    return self:read_reply()
end

-- send bytes, read one reply
function Conn:raw(bytes, timeout)
    local ok, err = self:send(bytes)
    if not ok then error(err, 2) end
    return self:read_reply(timeout)
end

-- one-shot: connect, send bytes, collect until the peer closes or `quiet`
-- seconds pass without data (bounded by timeout).  Returns data, closed.
function h.raw(port, bytes, opts)
    opts = opts or {}
    local c = h.connect(port)
    c:send(bytes)
    local deadline = h.now() + (opts.timeout or 5)
    while not c.eof and h.now() < deadline do
        local r = c:fill(opts.quiet or 0.3)
        if not r then break end
    end
    local data, closed = c:buffer(), c.eof
    c:close()
    return data, closed
end

-- tls_tunnel{ port = target port, host = "127.0.0.1", ca = path,
-- cert = path, key = path, sni = name }: t/tools/tls-tunnel, a TLS client
-- tunnel: every plain connection to tunnel.port gets its own TLS connection
-- to host:port (server verified against ca, named sni or host; the client
-- certificate when given), so a spec drives a TLS server with h.connect
-- and the whole Conn API.  tunnel:connections() lists one entry per
-- connection made so far: { serial = "AB12..." } (the served certificate)
-- or { failed = "reason" }; tunnel:wait_connections(n) waits for n.
function h.tls_tunnel(o)
    local script = (os.getenv("SHOTOVER_SRC") or ".") .. "/t/tools/tls-tunnel"
    local port = h.free_port()
    local argv = { "/usr/bin/python3", "-u", script, tostring(port),
                   (o.host or "127.0.0.1") .. ":" .. o.port, o.ca }
    if o.cert then argv[#argv + 1] = o.cert; argv[#argv + 1] = o.key end
    if o.sni then argv[#argv + 1] = "--sni"; argv[#argv + 1] = o.sni end
    local out = h.tmpfile("tls-tunnel") .. ".out"
    local t = { port = port, out_path = out }
    t.proc = h.spawn(argv, { stdout = out, stderr = "stdout" })
    h.wait_until(function()
        if not t.proc:alive() then
            error("tls-tunnel exited: " .. (h.read_file(out) or ""), 0)
        end
        return (h.read_file(out) or ""):find("listening", 1, true) ~= nil
    end, 10, "tls-tunnel to listen")
    function t.connections()
        local list = {}
        for l in (h.read_file(out) or ""):gmatch("[^\n]+") do
            local serial = l:match("^connected (%x+)")
            local why = l:match("^failed (.*)")
            if serial then list[#list + 1] = { serial = serial:upper() }
            elseif why then list[#list + 1] = { failed = why } end
        end
        return list
    end
    function t.wait_connections(n)
        return h.wait_until(function()
            local l = t.connections()
            return #l >= n and l
        end, 10, n .. " tls-tunnel connections")
    end
    -- a plain connection through the tunnel, once its TLS side is up (or
    -- raises with the tunnel's reason)
    function t.connect()
        local n = #t.connections()
        local c = h.connect(port)
        local l = t.wait_connections(n + 1)
        if l[n + 1].failed then
            error("TLS connection failed: " .. l[n + 1].failed, 2)
        end
        c.tls_serial = l[n + 1].serial
        return c
    end
    return t
end

---------------------------------------------------------------------------
-- RESP
---------------------------------------------------------------------------

-- A null (RESP2 $-1 / *-1, RESP3 _) is h.NULL; simple strings are
-- { status = "OK" }, errors { err = "ERR ..." }, integers Lua numbers, bulk
-- strings Lua strings, arrays Lua lists.  RESP3: maps { map = { k, v, ... } },
-- sets { set = {...} }, pushes { push = {...} }, doubles { double = "1.5" },
-- booleans true/false, big numbers { big = "..." }, verbatim
-- { verbatim = "txt:..." }; attributes are skipped.
h.NULL = setmetatable({ ["<null>"] = true }, { __tostring = function() return "NULL" end })

-- An HTTP request to the admin endpoint: status code, body.
function h.http(method, port, path, body)
    local argv = { "curl", "-s", "-X", method, "-w", "\n%{http_code}",
                   "http://127.0.0.1:" .. port .. path }
    if body then
        table.insert(argv, 2, "--data")
        table.insert(argv, 3, body)
    end
    local r = h.run(argv, { timeout = 10 })
    local text, code = r.stdout:match("^(.*)\n(%d+)$")
    return tonumber(code), text
end

-- The value of one series (name with its labels, as /metrics writes it)
-- in the metrics text, or of the admin endpoint on `port` when given one.
function h.metric(text_or_port, name)
    local text = text_or_port
    if type(text) == "number" then
        local _
        _, text = h.http("GET", text_or_port, "/metrics")
    end
    local v = ("\n" .. (text or "")):match("\n" .. name:gsub("[%-%.%[%]%(%)%+%*%?%^%$]",
                                                      "%%%0") .. " (%S+)")
    return tonumber(v)
end

-- A source's chain series from the admin endpoint on port, read at once
-- (0 for a series not there): batches on the C path (direct), requests,
-- the chain's latency count and its only sink's (transform sink, in the
-- chain named as the source), and the whole text.
function h.chain_metrics(port, source, sink)
    local _, text = h.http("GET", port, "/metrics")
    local function m(name) return h.metric(text, name) or 0 end
    local src = string.format('source="%s"', source)
    return {
        direct = m("shotover_direct_batches_total{" .. src .. "}"),
        requests = m("shotover_requests_total{" .. src .. "}"),
        latency = m("shotover_request_duration_seconds_count{" .. src .. "}"),
        sink_latency = m(string.format('shotover_transform_duration_seconds_count'
            .. '{chain="%s",%s,transform="%s"}', source, src, sink)),
        text = text,
    }
end

function h.status(s) return { status = s } end
function h.err(s) return { err = s } end

function h.resp_command(...)
    local args = { ... }
    if type(args[1]) == "table" then args = args[1] end
    local out = { "*" .. #args .. "\r\n" }
    for _, a in ipairs(args) do
        a = tostring(a)
        out[#out + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
    end
    return table.concat(out)
end

-- parse one value from s at pos.  Returns value, next position; or nil and
-- the least total length of s needed before another try makes sense.
-- Raises on bytes that are not RESP.
local function parse(s, pos)
    local nl = s:find("\r\n", pos, true)
    if not nl then return nil, #s + 1 end
    local t = s:sub(pos, pos)
    local line = s:sub(pos + 1, nl - 1)
    local nxt = nl + 2
    if t == "+" then return { status = line }, nxt
    elseif t == "-" then return { err = line }, nxt
    elseif t == ":" then return assert(tonumber(line), "bad integer " .. line), nxt
    elseif t == "_" then return h.NULL, nxt
    elseif t == "#" then return line == "t", nxt
    elseif t == "," then return { double = line }, nxt
    elseif t == "(" then return { big = line }, nxt
    elseif t == "$" or t == "=" or t == "!" then
        local n = assert(tonumber(line), "bad bulk length " .. line)
        if n < 0 then return h.NULL, nxt end
        if #s < nxt + n + 1 then return nil, nxt + n + 1 end
        local v = s:sub(nxt, nxt + n - 1)
        if t == "=" then v = { verbatim = v } elseif t == "!" then v = { err = v } end
        return v, nxt + n + 2
    elseif t == "*" or t == "%" or t == "~" or t == ">" or t == "|" then
        local n = assert(tonumber(line), "bad aggregate length " .. line)
        if n < 0 then return h.NULL, nxt end
        if t == "%" or t == "|" then n = n * 2 end
        local list = {}
        local p = nxt
        for i = 1, n do
            local v, np = parse(s, p)
            if v == nil then return nil, np end
            list[i] = v
            p = np
        end
        if t == "*" then return list, p end
        if t == "%" then return { map = list }, p end
        if t == "~" then return { set = list }, p end
        if t == ">" then return { push = list }, p end
        -- attribute: the value follows
        return parse(s, p)
    end
    error(string.format("not RESP at byte %d: %q", pos, s:sub(pos, pos + 40)))
end

function h.resp_parse(s, pos) return parse(s, pos or 1) end

-- all values in s (which must hold complete values only)
function h.resp_parse_all(s)
    local out, pos = {}, 1
    while pos <= #s do
        local v, np = parse(s, pos)
        if v == nil then error("incomplete RESP at byte " .. pos) end
        out[#out + 1] = v
        pos = np
    end
    return out
end

---------------------------------------------------------------------------
-- cleanup
---------------------------------------------------------------------------

local deferred = {}

-- run fn at cleanup (last registered first)
function h.defer(fn) deferred[#deferred + 1] = fn end

-- Stop every process this module started (SIGTERM, then SIGKILL after a
-- deadline), close sockets, remove temp dirs (kept with SHOTOVER_KEEP_TMP=1).
-- Safe to call more than once; use as the teardown of every spec.
function h.cleanup()
    for i = #deferred, 1, -1 do
        pcall(deferred[i])
        deferred[i] = nil
    end
    -- every shotover still running must stop cleanly on SIGTERM, and no
    -- shotover may have logged a sanitizer report (the sanitizer build's
    -- leak check runs at exit): otherwise the spec's teardown fails
    local problems = {}
    for p in pairs(procs) do
        local s = p.is_shotover
        local ok, st, killed
        if s then
            -- SIGTERM drains: a client the spec left blocked (BLPOP) holds
            -- it up to drain_timeout; a second SIGTERM stops at once, and
            -- either way the exit must be clean
            p:kill(h.SIGTERM)
            p:wait(3)
            ok, st, killed = pcall(p.stop, p, 10)
        else
            ok, st, killed = pcall(p.stop, p, 10)
        end
        if s and ok and (killed or not st or st.code ~= 0) then
            problems[#problems + 1] = string.format(
                "shotover (%s) did not exit cleanly on SIGTERM: %s%s",
                s.log_path, st and status_string(st) or "?",
                killed and " (killed)" or "")
        end
    end
    for _, s in ipairs(shotovers) do
        -- (a spec that makes malloc fail on purpose, allocator_may_return_null,
        -- gets ASan's warning for each refusal: that one is no report)
        local log = s:log():gsub("==%d+==WARNING: AddressSanitizer failed to "
                                 .. "allocate 0x%x+ bytes\n", "")
        if log:find("Sanitizer", 1, true) or log:find("runtime error: ", 1, true)
        then
            problems[#problems + 1] = "sanitizer report in " .. s.log_path
                                      .. ":\n" .. s:log_tail(40)
        end
    end
    shotovers = {}
    procs = {}
    local keep = os.getenv("SHOTOVER_KEEP_TMP")
    for i = #tmp_dirs, 1, -1 do
        local d = tmp_dirs[i]
        if keep and keep ~= "" and keep ~= "0" then
            io.stderr:write("harness: kept " .. d .. "\n")
        elseif d:match("^/.+/shotover%-it%-[%w]+$") then
            h.run({ "rm", "-rf", d }, { timeout = 30 })
        end
        tmp_dirs[i] = nil
    end
    root_dir = nil
    if #problems > 0 then
        error(table.concat(problems, "\n"), 0)
    end
end

-- If the Lua state is closed without cleanup, still kill the children.
local sentinel = newproxy(true)
getmetatable(sentinel).__gc = function()
    if C.getpid() ~= OWNER_PID then return end
    for p in pairs(procs) do pcall(C.kill, p.pid, 9) end
end
h._sentinel = sentinel

---------------------------------------------------------------------------
-- redis-server
---------------------------------------------------------------------------

local Redis = {}
Redis.__index = Redis

-- redis_server{ port = n, args = { ... }, tls = { ... } }: a fresh
-- redis-server on 127.0.0.1, its own dir, no persistence; returns once it
-- answers PING.
-- tls = { cert = path, key = path, ca = path, auth_clients = "no" | "yes" |
-- "optional" (default "no"), client = { cert = path, key = path } }: the
-- server speaks only TLS, on `port` (--port 0 --tls-port port); `ca` is
-- what it checks client certificates against (and what the readiness
-- check trusts), `client` the certificate the readiness check presents
-- when auth_clients is "yes", insecure = true: the readiness check and
-- r:cli do not verify the server's certificate (a server with an expired
-- one, for the specs of what a client then does).  r.tls holds the redis-cli options that
-- reach it (h.cli(r.port, ..., { tls = r.tls }); r:cli does that).
function h.redis_server(opts)
    opts = opts or {}
    local r = setmetatable({ port = opts.port or h.free_port(),
        dir = h.tmpdir("redis"), extra = opts.args or {},
        tls_server = opts.tls }, Redis)
    if opts.tls then
        local t = opts.tls
        assert(t.cert and t.key and t.ca, "redis_server: tls needs cert, key and ca")
        r.tls = { ca = t.ca, cert = t.client and t.client.cert,
                  key = t.client and t.client.key, insecure = t.insecure }
    end
    r:start()
    return r
end

function Redis:start(timeout)
    assert(not (self.proc and self.proc:alive()), "redis-server already running")
    self.log_path = self.dir .. "/redis.log"
    local argv = { "redis-server", "--port", tostring(self.port),
        "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", self.dir, "--daemonize", "no", "--protected-mode", "no" }
    local t = self.tls_server
    if t then
        argv[3] = "0"
        for _, a in ipairs({ "--tls-port", tostring(self.port),
                "--tls-cert-file", t.cert, "--tls-key-file", t.key,
                "--tls-ca-cert-file", t.ca,
                "--tls-auth-clients", t.auth_clients or "no" }) do
            argv[#argv + 1] = a
        end
    end
    for _, a in ipairs(self.extra) do argv[#argv + 1] = a end
    self.proc = h.spawn(argv, { stdout = self.log_path, stderr = "stdout", append = true })
    local proc = self.proc
    h.wait_until(function()
        if not proc:alive() then
            error("redis-server exited (" .. status_string(proc:poll()) .. "): "
                .. (h.read_file(self.log_path) or ""))
        end
        local out, code = h.cli(self.port, "ping", { timeout = 2, tls = self.tls })
        -- a server started with requirepass or ACLs answers NOAUTH
        return code == 0 and (out == "PONG" or out:find("^NOAUTH") ~= nil), out
    end, timeout or 10, "redis-server on port " .. self.port .. " to answer PONG")
    return self
end

-- SIGKILL (crash) or SIGTERM (default); waits until it is gone
function Redis:stop(sig)
    if not self.proc then return end
    if sig == h.SIGKILL then
        self.proc:kill(h.SIGKILL)
        assert(self.proc:wait(10), "redis-server did not die")
    else
        self.proc:stop(5)
    end
end

-- redis-cli to this server (with its TLS options when it speaks TLS)
function Redis:cli(...)
    if not self.tls then return h.cli(self.port, ...) end
    local args = { ... }
    local opts = {}
    if type(args[#args]) == "table" then opts = table.remove(args) end
    local o = { tls = self.tls }
    for k, v in pairs(opts) do o[k] = v end
    args[#args + 1] = o
    return h.cli(self.port, unpack(args))
end

-- CLIENT LIST of the redis on `port` as a list of { field = value }, without
-- the redis-cli connection that asked
function h.client_list(port, ...)
    local out = h.cli(port, "client", "list", ...)
    local list = {}
    for line in out:gmatch("[^\n]+") do
        local e = {}
        for k, v in line:gmatch("(%S+)=(%S*)") do e[k] = v end
        if e.cmd ~= "client|list" then list[#list + 1] = e end
    end
    return list
end

-- how many clients of the redis on `port` last ran command `cmd` (lower case)
function h.clients_by_last_cmd(port, cmd, ...)
    local n = 0
    for _, e in ipairs(h.client_list(port, ...)) do
        if e.cmd == cmd then n = n + 1 end
    end
    return n
end

---------------------------------------------------------------------------
-- shotover
---------------------------------------------------------------------------

function h.shotover_bin()
    local bin = os.getenv("SHOTOVER_BIN")
    assert(bin and bin ~= "", "SHOTOVER_BIN is not set")
    local f = io.open(bin, "rb")
    assert(f, "SHOTOVER_BIN " .. bin .. " does not exist (build it first)")
    f:close()
    return bin
end

-- h.config{ listen = port, remote = port, workers = 1, name = "redis",
--           source = "max_bulk_len = 64,", sink = "connect_timeout_ms = 300,",
--           chain = "{ 'null' }", extra_sources = "{ ... },", extra = "..." }
-- The text of a config with one Redis source.  `chain` (Lua source of the
-- chain's elements) defaults to one redis sink to `remote`; inside it
-- %REMOTE% stands for "127.0.0.1:<remote>".
function h.config(o)
    local remote = o.remote and ("127.0.0.1:" .. o.remote) or nil
    local chain = o.chain
    if not chain then
        assert(remote, "config: remote or chain needed")
        chain = string.format('{ "redis", remote = %q, %s }', remote, o.sink or "")
    end
    if remote then chain = chain:gsub("%%REMOTE%%", remote) end
    local workers = o.workers or 1
    if type(workers) == "string" then workers = string.format("%q", workers) end
    return string.format([[
return {
  workers = %s,
  %s
  sources = {
    { name = %q, protocol = "redis", listen = "127.0.0.1:%d", %s
      chain = { %s } },
    %s
  },
}
]], tostring(workers), o.extra or "", o.name or "redis", o.listen, o.source or "",
        chain, o.extra_sources or "")
end

local Shotover = {}
Shotover.__index = Shotover

-- Is something on port answering RESP?  redis-cli ping exits 0 once it got
-- any reply (PONG, an error or a null, depending on the chain).  tls: the
-- options of h.tls_args, for a TLS source.
local function cli_ready(port, tls)
    local argv = { "redis-cli", "-p", tostring(port) }
    for _, a in ipairs(h.tls_args(tls)) do argv[#argv + 1] = a end
    argv[#argv + 1] = "ping"
    local r = h.run(argv, { timeout = 3 })
    -- redis-cli exits 0 when the TLS handshake failed too, saying so
    local out = r.stdout .. r.stderr
    return r.code == 0 and not r.timed_out
           and not out:find("Could not connect", 1, true), out
end

-- shotover{ config = text, port = listen port to wait for (nil: don't
-- wait), args = extra CLI args, ready_timeout = s, wrap = argv prefix,
-- tls = redis-cli TLS options (h.tls_args) for the readiness check of a
-- TLS source }
-- `wrap` runs shotover under a program that execs it, so the process is
-- still shotover's: { "prlimit", "--nofile=64:64", "--" } starts it with
-- those limits.
function h.shotover(o)
    local bin = h.shotover_bin()
    local dir = h.tmpdir("shotover")
    local s = setmetatable({ port = o.port, dir = dir,
        config_path = h.write_file(dir .. "/config.lua", o.config),
        log_path = dir .. "/shotover.log" }, Shotover)
    local argv = {}
    for _, a in ipairs(o.wrap or {}) do argv[#argv + 1] = a end
    for _, a in ipairs({ bin, "run", "-c", s.config_path }) do
        argv[#argv + 1] = a
    end
    for _, a in ipairs(o.args or {}) do argv[#argv + 1] = a end
    s.proc = h.spawn(argv, { stdout = s.log_path, stderr = "stdout" })
    s.proc.is_shotover = s
    shotovers[#shotovers + 1] = s
    s.tls = o.tls
    if o.port then s:wait_ready(o.port, o.ready_timeout) end
    return s
end

-- wait until port answers redis-cli ping; tls: the redis-cli TLS options
-- for that port (default those the shotover was started with; false: plain)
function Shotover:wait_ready(port, timeout, tls)
    if tls == nil then tls = self.tls end
    local proc = self.proc
    h.wait_until(function()
        if not proc:alive() then
            error("shotover exited (" .. status_string(proc:poll()) .. ") before listening on "
                .. port .. "; log:\n" .. self:log(), 0)
        end
        return cli_ready(port, tls or nil)
    end, timeout or 15, "shotover to answer on port " .. port)
end

function Shotover:log() return h.read_file(self.log_path) or "" end

function Shotover:log_tail(n)
    local lines = {}
    for l in self:log():gmatch("[^\n]*\n?") do
        if l ~= "" then lines[#lines + 1] = l end
    end
    local from = math.max(1, #lines - (n or 40) + 1)
    return table.concat(lines, "", from)
end

-- the log contains `needle` (plain) within timeout seconds
function Shotover:wait_log(needle, timeout)
    return h.wait_until(function()
        return self:log():find(needle, 1, true) ~= nil
    end, timeout or 5, "shotover log to mention " .. needle)
end

function Shotover:alive() return self.proc:alive() end

-- a field of /proc/PID/status in kB (VmSize, VmRSS, ...)
function Shotover:status_kb(field)
    local text = h.read_file("/proc/" .. self.proc.pid .. "/status") or ""
    return tonumber(text:match(field .. ":%s*(%d+) kB"))
end

-- bytes received by shotover's sockets on `port` that it has not read yet
-- (the receive queues in /proc/net/tcp): 0 once it has read all it was sent
function h.unread_on(port)
    local total = 0
    for line in (h.read_file("/proc/net/tcp") or ""):gmatch("[^\n]+") do
        local lport, st, rxq = line:match("^%s*%d+: %x+:(%x+) %x+:%x+ (%x+) %x+:(%x+)")
        if lport and tonumber(lport, 16) == port and st == "01" then
            total = total + tonumber(rxq, 16)
        end
    end
    return total
end

function Shotover:stop(grace) return self.proc:stop(grace or 5) end

-- The requests per second of `test` ("SET") in redis-benchmark -q output
-- ("SET: 123456.78 requests per second, ..."; progress lines end in \r
-- and are skipped), or nil.
function h.benchmark_rps(out, test)
    local best
    for line in out:gmatch("[^\r\n]+") do
        local v = line:match("^%s*" .. test .. ": ([%d%.]+) requests per second")
        if v then best = tonumber(v) end
    end
    return best
end

-- How many times the redis on port ran cmd (INFO commandstats), 0 if never.
function h.cmdstat_calls(port, cmd)
    local info = h.cli(port, "info", "commandstats")
    return tonumber(info:match("cmdstat_" .. cmd .. ":calls=(%d+)")) or 0
end

-- start_pair{ workers, source, sink, chain, extra_sources, wrap }: a
-- redis-server and a shotover in front of it (`wrap` as for h.shotover).
-- Returns { redis = Redis, proxy = Shotover }.
function h.start_pair(o)
    o = o or {}
    local r = h.redis_server()
    local port = h.free_port()
    local cfg = {}
    for k, v in pairs(o) do cfg[k] = v end
    cfg.listen, cfg.remote = port, r.port
    local p = h.shotover({ config = h.config(cfg), port = port, wrap = o.wrap })
    return { redis = r, proxy = p, port = port }
end

-- run `shotover ARGS...` to completion: { code, stdout, stderr, ... }
function h.shotover_cmd(args, opts)
    local argv = { h.shotover_bin() }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    return h.run(argv, opts or { timeout = 20 })
end

---------------------------------------------------------------------------
-- failure context: when a test fails, print the tail of each live shotover
-- log to stderr (TAP goes to stdout)
---------------------------------------------------------------------------

do
    local ok, busted = pcall(require, "busted")
    if ok and type(busted) == "table" and busted.subscribe then
        pcall(busted.subscribe, { "test", "end" }, function(element, parent, status)
            if status == "failure" or status == "error" then
                for p in pairs(procs) do
                    local s = p.is_shotover
                    if s then
                        io.stderr:write(string.format(
                            "---- %s: shotover log tail (%s) ----\n%s\n----\n",
                            element and element.name or "?", s.log_path, s:log_tail(30)))
                    end
                end
            end
            return nil, true
        end)
    end
end

return h
