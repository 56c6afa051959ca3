-- A small blocking loopback client for `shotover repl` in live mode: it
-- talks to the in-process worker like any Redis or CQL client would.  Not
-- for workers (it blocks).
local ffi = require "ffi"
local bit = require "bit"

local C = ffi.C
local tonumber = tonumber

for _, d in ipairs({
    "int socket(int domain, int type, int protocol);",
    "int connect(int fd, const void *addr, uint32_t len);",
    "int bind(int fd, const void *addr, uint32_t len);",
    "int getsockname(int fd, void *addr, uint32_t *len);",
    "int close(int fd);",
    "struct sh_cli_pollfd { int fd; short events; short revents; };",
    "int poll(struct sh_cli_pollfd *fds, unsigned long nfds, int timeout);",
    "intptr_t send(int fd, const void *buf, size_t len, int flags);",
    "intptr_t recv(int fd, void *buf, size_t len, int flags);",
    "struct sh_cli_sockaddr_in { uint16_t family; uint8_t port[2]; "
        .. "uint8_t addr[4]; uint8_t zero[8]; };",
    "int setenv(const char *name, const char *value, int overwrite);",
}) do
    pcall(ffi.cdef, d)
end

local AF_INET, SOCK_STREAM, SOCK_CLOEXEC = 2, 1, 0x80000
local POLLIN = 1
local MSG_NOSIGNAL = 0x4000

local _M = { _VERSION = "0.1.0" }

local function sockaddr(port)
    local sa = ffi.new("struct sh_cli_sockaddr_in")
    sa.family = AF_INET
    sa.port[0] = bit.rshift(port, 8)
    sa.port[1] = bit.band(port, 0xff)
    sa.addr[0], sa.addr[3] = 127, 1
    return sa
end

function _M.setenv(k, v)
    C.setenv(k, v, 1)
end

-- a loopback port nobody listens on (the kernel picks it)
function _M.free_port()
    local fd = C.socket(AF_INET, bit.bor(SOCK_STREAM, SOCK_CLOEXEC), 0)
    local sa = sockaddr(0)
    assert(fd >= 0 and C.bind(fd, sa, ffi.sizeof(sa)) == 0, "cannot bind")
    local len = ffi.new("uint32_t[1]", ffi.sizeof(sa))
    C.getsockname(fd, sa, len)
    C.close(fd)
    return sa.port[0] * 256 + sa.port[1]
end

local Conn = {}
Conn.__index = Conn

function _M.connect(port)
    local fd = C.socket(AF_INET, bit.bor(SOCK_STREAM, SOCK_CLOEXEC), 0)
    local sa = sockaddr(port)
    if fd < 0 or C.connect(fd, sa, ffi.sizeof(sa)) ~= 0 then
        if fd >= 0 then
            C.close(fd)
        end
        return nil, "cannot connect to 127.0.0.1:" .. port
    end
    return setmetatable({ fd = fd, buf = "" }, Conn)
end

function Conn:close()
    if self.fd then
        C.close(self.fd)
        self.fd = nil
    end
end

function Conn:send(s)
    local p, n = ffi.cast("const char *", s), #s
    while n > 0 do
        local k = tonumber(C.send(self.fd, p, n, MSG_NOSIGNAL))
        if k <= 0 then
            return nil, "connection closed"
        end
        p, n = p + k, n - k
    end
    return true
end

local rbuf = ffi.new("char[65536]")
local pfd = ffi.new("struct sh_cli_pollfd[1]")

-- read more bytes into self.buf; nil, message on timeout or close
function Conn:fill(timeout_ms)
    pfd[0].fd, pfd[0].events = self.fd, POLLIN
    if C.poll(pfd, 1, timeout_ms) <= 0 then
        return nil, "no reply within " .. timeout_ms / 1000 .. " s"
    end
    local k = tonumber(C.recv(self.fd, rbuf, 65536, 0))
    if k <= 0 then
        return nil, "connection closed"
    end
    self.buf = self.buf .. ffi.string(rbuf, k)
    return true
end

-- the index just past the RESP value starting at i, nil when incomplete
local function resp_end(s, i)
    local e = s:find("\r\n", i, true)
    if not e then
        return nil
    end
    local t, n, nxt = s:sub(i, i), tonumber(s:sub(i + 1, e - 1)), e + 2
    if t == "$" or t == "!" or t == "=" then
        if n < 0 then
            return nxt
        end
        return #s >= nxt + n + 1 and nxt + n + 2 or nil
    elseif t == "*" or t == "~" or t == ">" or t == "%" then
        if n < 0 then
            return nxt
        end
        for _ = 1, t == "%" and 2 * n or n do
            nxt = resp_end(s, nxt)
            if not nxt then
                return nil
            end
        end
    end
    return nxt
end

-- Where the first complete reply in buf ends (the index after it), nil
-- while it is incomplete, by protocol.
local REPLY_END = {
    redis = function(b)
        return #b > 0 and resp_end(b, 1) or nil
    end,
    cassandra = function(b)             -- a v3-v5 envelope: 9-byte header
        if #b < 9 then
            return nil
        end
        local len = ((b:byte(6) * 256 + b:byte(7)) * 256 + b:byte(8))
                    * 256 + b:byte(9)
        return #b >= 9 + len and 10 + len or nil
    end,
}

-- one complete frame's bytes from what has been read, or nil (no waiting)
function Conn:take(proto)
    local reply_end = REPLY_END[proto]
    if reply_end == nil then
        error("cannot read " .. tostring(proto) .. " replies", 2)
    end
    local stop = reply_end(self.buf)
    if not stop then
        return nil
    end
    local r = self.buf:sub(1, stop - 1)
    self.buf = self.buf:sub(stop)
    return r
end

-- put bytes taken with take back in front of what has been read
function Conn:untake(r)
    self.buf = r .. self.buf
end

-- every complete frame that has arrived by now, in order (no waiting)
function Conn:drain(proto)
    while self.fd do
        pfd[0].fd, pfd[0].events = self.fd, POLLIN
        if C.poll(pfd, 1, 0) <= 0 or not self:fill(0) then
            break
        end
    end
    local out = {}
    while true do
        local r = self:take(proto)
        if not r then
            return out
        end
        out[#out + 1] = r
    end
end

-- take one complete frame's bytes, waiting up to timeout_ms for them
function Conn:reply(proto, timeout_ms)
    local reply_end = REPLY_END[proto]
    if reply_end == nil then
        return nil, "cannot read " .. tostring(proto) .. " replies"
    end
    while true do
        local r = self:take(proto)
        if r then
            return r
        end
        local ok, err = self:fill(timeout_ms)
        if not ok then
            return nil, err
        end
    end
end

return _M
