-- Traces of a batch's path through a chain, for `shotover route-test` and
-- `shotover repl`.  A context with a `trace` table (ctx.trace = {}) makes
-- Ctx:next call _M.next, which records one entry per chain element entered,
-- in order:
--   { chain = "redis/route1", element = "cache", index = 1, kind = "redis",
--     terminal = true, depth = 1, requests = { "[\"GET\", \"k\"]" },
--     result = "forwarded" | "answered" | "error", replies = { "+DRY" },
--     error = "message", dry = true }
-- "forwarded": the element handed the batch on (next or a sub-chain);
-- "answered": it returned replies without doing so (a sink, a cache hit, a
-- filter refusing); "error": it raised.  Contexts without a trace never come
-- here: Ctx:next pays one nil check.  See docs/route-test.md.
local protocols = require "shotover.protocols"

local concat = table.concat
local fmt = string.format
local pcall = pcall
local tostring = tostring
local type = type
local error = error

local _M = { _VERSION = "0.1.0" }

-- A message as one line of text: Redis as RESP decoded, CQL as opcode and
-- statement or result.
function _M.show(f)
    if f == nil then
        return "(none)"
    end
    if f:is_noreply() then
        return f:describe()
    end
    return protocols.by_id(f.proto).show(f)
end

local function show_batch(b)
    local t = {}
    if b ~= nil then
        for k = 1, b.n do
            t[k] = _M.show(b[k])
        end
    end
    return t
end

-- Ctx:next with a trace: run element `el` (number i of ctx's chain) over
-- batch, recording what it got, what it did and what it returned.
function _M.next(ctx, el, i, batch)
    local tr = ctx.trace
    local stack = tr.stack
    if stack == nil then
        stack = {}
        tr.stack = stack
    end
    local parent = stack[#stack]
    if parent then
        parent.forwarded = true
    end
    local rec = { chain = ctx.chain.name or "chain", element = el.name,
                  index = i, kind = el.kind or "inline",
                  terminal = el.terminal or false, depth = #stack,
                  requests = show_batch(batch) }
    tr[#tr + 1] = rec
    stack[#stack + 1] = rec
    ctx.i = i
    local ok, resp
    if el.inline then
        ok, resp = pcall(el.inline, batch, ctx)
    else
        ok, resp = pcall(el.inst.transform, el.inst, batch, ctx)
    end
    stack[#stack] = nil
    if not ok then
        rec.result, rec.error = "error", tostring(resp)
        error(resp, 0)                -- ctx.i stays on the failing element
    end
    ctx.i = i - 1
    rec.result = rec.forwarded and "forwarded" or "answered"
    rec.forwarded = nil
    rec.replies = show_batch(resp)
    return resp
end

-- Mark the element running now as a dry sink (it answered without a
-- backend).  No-op without a trace.
function _M.dry(ctx)
    local tr = ctx.trace
    if tr and tr.stack and tr.stack[#tr.stack] then
        tr.stack[#tr.stack].dry = true
    end
end

-- What a trace of one request amounts to: { path = { element names },
-- answered = the entry that produced the reply, sink = that entry when it
-- is a sink, route = the chain it ended in, failed = the entry that raised,
-- filtered / throttled = booleans }.
function _M.summary(tr, reply_is_error)
    local s = { path = {} }
    for _, rec in ipairs(tr) do
        s.path[#s.path + 1] = rec.element
        if rec.result == "answered" and s.answered == nil then
            s.answered = rec
        elseif rec.result == "error" then
            s.failed = s.failed or rec
        end
    end
    -- the innermost raising element is the last one recorded
    for k = #tr, 1, -1 do
        if tr[k].result == "error" then
            s.failed = tr[k]
            break
        end
    end
    local a = s.answered
    if a then
        s.route = a.chain
        if a.terminal then
            s.sink = a
        else
            local throttle = tostring(a.kind):find("throttl") ~= nil
            s.throttled = throttle and reply_is_error or false
            s.filtered = (not throttle) and reply_is_error or false
        end
    elseif s.failed then
        s.route = s.failed.chain
    end
    s.filtered = s.filtered or false
    s.throttled = s.throttled or false
    return s
end

-- One line per entry, indented by sub-chain depth:
--   redis[1] query_type_filter (query_type_filter): forwarded
--     redis/route1[1] cache (redis, dry): answered +DRY
function _M.format(tr, indent)
    local out, last = {}, nil
    indent = indent or ""
    for _, rec in ipairs(tr) do
        local what = rec.element
        if rec.kind ~= rec.element then
            what = what .. " (" .. tostring(rec.kind)
                   .. (rec.dry and ", dry" or "") .. ")"
        elseif rec.dry then
            what = what .. " (dry)"
        end
        local line = fmt("%s%s%s[%d] %s: %s", indent,
                         string.rep("  ", rec.depth), rec.chain, rec.index,
                         what, rec.result)
        if rec.result == "error" then
            line = line .. " " .. rec.error
        elseif rec.result == "answered" then
            line = line .. " " .. concat(rec.replies or {}, " | ")
        end
        local req = concat(rec.requests or {}, " | ")
        -- the request where it enters, and wherever a transform changed it
        if req ~= last then
            line = line .. "\n" .. indent .. string.rep("  ", rec.depth)
                   .. "    got " .. req
        end
        last = req
        out[#out + 1] = line
    end
    return concat(out, "\n")
end

-- One line of Lua source for a trace (it crosses from a worker's Lua state
-- to the repl's as text), and back.
local function ser(v, out)
    local t = type(v)
    if t == "table" then
        out[#out + 1] = "{"
        for k, x in pairs(v) do
            if k ~= "stack" then
                out[#out + 1] = "["
                ser(k, out)
                out[#out + 1] = "]="
                ser(x, out)
                out[#out + 1] = ","
            end
        end
        out[#out + 1] = "}"
    elseif t == "string" then
        out[#out + 1] = (fmt("%q", v):gsub("\n", "n"))
    elseif t == "number" or t == "boolean" then
        out[#out + 1] = tostring(v)
    else
        out[#out + 1] = "nil"
    end
end

function _M.serialize(tr)
    local out = {}
    ser(tr, out)
    return concat(out)
end

function _M.deserialize(s)
    local fn, err = loadstring("return " .. s, "=trace")
    if not fn then
        return nil, err
    end
    setfenv(fn, {})
    local ok, tr = pcall(fn)
    if not ok then
        return nil, tr
    end
    return tr
end

return _M
