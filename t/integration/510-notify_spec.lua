-- Under systemd (Type=notify) shotover says READY=1 on $NOTIFY_SOCKET once
-- every listener is up, and not before: here a unix datagram socket plays
-- systemd's part, as an abstract name ("@...") and as a path.
local ffi = require("ffi")
local h = require("harness")
local C = ffi.C

pcall(ffi.cdef, [[
struct sh_t_sockaddr_un { uint16_t family; char path[108]; };
]])
local AF_UNIX, SOCK_DGRAM, SOCK_CLOEXEC = 1, 2, 0x80000
local MSG_DONTWAIT = 0x40

-- a datagram socket bound to `name` (a path, or "@abstract"): its fd
local function notify_socket(name)
    local fd = C.socket(AF_UNIX, bit.bor(SOCK_DGRAM, SOCK_CLOEXEC), 0)
    assert(fd >= 0, "socket failed")
    h.defer(function() C.close(fd) end)
    local sa = ffi.new("struct sh_t_sockaddr_un")
    sa.family = AF_UNIX
    ffi.copy(sa.path, name, #name)
    local len = 2 + #name + 1
    if name:sub(1, 1) == "@" then
        sa.path[0] = 0
        len = 2 + #name
    end
    assert(C.bind(fd, sa, len) == 0, "bind " .. name .. " failed: errno " .. ffi.errno())
    return fd
end

-- the next datagram, or nil when none is waiting
local buf = ffi.new("char[4096]")
local function try_recv(fd)
    local n = C.recv(fd, buf, 4096, MSG_DONTWAIT)
    if n < 0 then return nil end
    return ffi.string(buf, n)
end

-- listening sockets on `port` (state 0A in /proc/net/tcp)
local function listeners(port)
    local n = 0
    for line in (h.read_file("/proc/net/tcp") or ""):gmatch("[^\n]+") do
        local lport, st = line:match("^%s*%d+: %x+:(%x+) %x+:%x+ (%x+)")
        if lport and tonumber(lport, 16) == port and st == "0A" then
            n = n + 1
        end
    end
    return n
end

describe("shotover's readiness notification", function()
    teardown(h.cleanup)

    -- start shotover (4 workers, an admin endpoint) with NOTIFY_SOCKET =
    -- name, and watch fd from the moment it starts: the datagram comes
    -- only once all 4 listeners and the admin endpoint answer
    local function ready_after_listeners(name)
        local fd = notify_socket(name)
        local redis = h.redis_server()
        local port, admin = h.free_port(), h.free_port()
        local p = h.shotover({
            config = h.config({ listen = port, remote = redis.port, workers = 4,
                extra = string.format('admin = { listen = "127.0.0.1:%d" },', admin) }),
            wrap = { "env", "NOTIFY_SOCKET=" .. name } })
        local msg
        h.wait_until(function()
            assert(p:alive(), "shotover exited: " .. p:log())
            msg = try_recv(fd)
            if msg == nil then
                return false
            end
            -- at this moment everything must be up already
            assert.equal(4, listeners(port), "READY=1 before every listener")
            local c = h.connect(port, 2)
            assert.same({ status = "PONG" }, c:cmd("PING"))
            c:close()
            assert.equal(200, (h.http("GET", admin, "/ready")))
            return true
        end, 15, "READY=1 on " .. name)
        assert.equal("READY=1", msg)
        assert.truthy(p:log():find("running with 4 workers", 1, true))
        -- one notification, not one per worker
        h.sleep(0.2)
        assert.is_nil(try_recv(fd))
        return p
    end

    it("sends READY=1 to an abstract socket once every listener is up", function()
        ready_after_listeners("@shotover-notify-test-" .. C.getpid())
    end)

    it("sends READY=1 to a socket path once every listener is up", function()
        ready_after_listeners(h.tmpdir("notify") .. "/notify.sock")
    end)

    it("runs on, with a warning, when NOTIFY_SOCKET names no socket", function()
        local redis = h.redis_server()
        local port = h.free_port()
        local p = h.shotover({ config = h.config({ listen = port, remote = redis.port }),
            port = port, wrap = { "env", "NOTIFY_SOCKET=/nonexistent/notify.sock" } })
        p:wait_log('NOTIFY_SOCKET "/nonexistent/notify.sock": sending "READY=1"')
        assert.equal("PONG", h.cli(port, "ping"))
    end)
end)
