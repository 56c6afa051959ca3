-- Traces of a batch's path through a chain, for `shotover route-test` and
-- `shotover repl`.  A context with a `trace` table (ctx.trace = {}) makes
-- Ctx:next call _M.next, which records one entry per chain element entered,
-- in order:
--   { chain = "redis/route1", element = "cache", index = 1, kind = "redis",
--     terminal = true, depth = 1, seq = 3, parent = 2,
--     requests = { "[\"GET\", \"k\"]" },
--     result = "forwarded" | "answered" | "error", replies = { "+DRY" },
--     ids = { frame identities of the replies }, error = "message",
--     dry = true }
-- "forwarded": the element handed the batch on (next or a sub-chain);
-- "answered": it returned replies without doing so (a sink, a cache hit, a
-- filter refusing); "error": it raised.  seq is the entry's place in the
-- trace, parent the seq of the entry that handed it the batch.  After the
-- run, finish(tr, resp) adds the chain's replies.  Contexts without a
-- trace never come here: Ctx:next pays one nil check.  See
-- docs/route-test.md.
local ffi = require "ffi"
local redact = require "shotover.redact"

local cast = ffi.cast
local uintptr_t = ffi.typeof("uintptr_t")
local tonumber = tonumber
local ipairs = ipairs
local concat = table.concat
local fmt = string.format
local pcall = pcall
local tostring = tostring
local type = type
local error = error

local _M = { _VERSION = "0.1.0" }

-- A message as one line of text: Redis as RESP decoded, CQL as opcode and
-- statement or result, credentials hidden (shotover.redact); `req` is the
-- request reply f answers, when known.
function _M.show(f, req)
    return redact.message(f, req, "show")
end

-- the messages of batch b shown; replies with their requests `reqs`
local function show_batch(b, reqs)
    local t = {}
    if b ~= nil then
        for k = 1, b.n do
            t[k] = _M.show(b[k], reqs and reqs[k])
        end
    end
    return t
end

-- A frame's identity within one traced batch: its address.  Which element
-- produced the client's reply is the one whose response holds that very
-- frame (a tee's copy may answer with the same text).
local function id_of(f)
    if f == nil then
        return false
    end
    return tonumber(cast(uintptr_t, f))
end

local function ids_of(b)
    local t = {}
    if b ~= nil then
        for k = 1, b.n do
            t[k] = id_of(b[k])
        end
    end
    return t
end

-- Ctx:next with a trace: run element `el` (number i of ctx's chain) over
-- batch, recording what it got, what it did and what it returned.
--
-- Its parent (the element that handed it the batch) is element i - 1 of
-- the same context, or, for the first element of a sub-chain, the element
-- running in the context that started the sub-chain (ctx.up, see
-- Ctx:sub_context).  Each context keeps the record of the element it runs
-- (ctx.trace_at[i]) rather than the trace keeping one stack: the tasks of
-- chain:spawn interleave (a tee's copy waits for its backend while the
-- main chain runs), each in a context of its own, and one shared stack
-- would give the records of one the parents of the other.
function _M.next(ctx, el, i, batch)
    local tr = ctx.trace
    local at = ctx.trace_at
    if at == nil then
        at = {}
        ctx.trace_at = at
    end
    local parent
    if i > 1 then
        parent = at[i - 1]
    else
        local up = ctx.up
        parent = up and up.trace_at and up.trace_at[up.i]
    end
    if parent then
        parent.forwarded = true
    end
    local rec = { chain = ctx.chain.name or "chain", element = el.name,
                  index = i, kind = el.kind or "inline",
                  terminal = el.terminal or false,
                  depth = parent and parent.depth + 1 or 0,
                  parent = parent and parent.seq or nil, seq = #tr + 1,
                  requests = show_batch(batch) }
    tr[rec.seq] = rec
    at[i] = rec
    ctx.i = i
    local ok, resp
    if el.inline then
        ok, resp = pcall(el.inline, batch, ctx)
    else
        ok, resp = pcall(el.inst.transform, el.inst, batch, ctx)
    end
    at[i] = nil
    if not ok then
        rec.result, rec.error = "error", redact.scrub(resp, batch)
        error(resp, 0)                -- ctx.i stays on the failing element
    end
    ctx.i = i - 1
    rec.result = rec.forwarded and "forwarded" or "answered"
    rec.forwarded = nil
    rec.replies = show_batch(resp, batch)
    rec.ids = ids_of(resp)
    -- the frames stay alive (their addresses unique) while the trace is
    local keep = tr.keep
    if keep == nil then
        keep = {}
        tr.keep = keep
    end
    keep[#keep + 1] = resp
    return resp
end

-- A note about what the element running in ctx decided ("allowed by
-- rules[2]"), shown after its result; nothing without a trace.
function _M.note(ctx, text)
    local rec = ctx.trace ~= nil and ctx.trace_at and ctx.trace_at[ctx.i]
    if rec then
        local notes = rec.notes
        if notes == nil then
            notes = {}
            rec.notes = notes
        end
        notes[#notes + 1] = text
    end
end

-- After the chain ran a traced batch: the responses it returned to the
-- requests of `batch`, shown (tr.replies), as identities (tr.reply_ids,
-- for summary) and whether each writes nothing because the backend's own
-- frames are relayed to the client (tr.relayed: a subscriber's replies),
-- so that the trace can be read elsewhere (the repl's live mode).
function _M.finish(tr, resp, batch)
    tr.replies = show_batch(resp, batch)
    tr.reply_ids = ids_of(resp)
    local relayed = {}
    if resp ~= nil then
        for k = 1, resp.n do
            local f = resp[k]
            relayed[k] = f == nil or f:is_noreply()
        end
    end
    tr.relayed = relayed
    tr.keep = nil
    return tr
end

-- Mark the element running now as a dry sink (it answered without a
-- backend).  No-op without a trace.
function _M.dry(ctx)
    local at = ctx.trace ~= nil and ctx.trace_at
    local rec = at and at[ctx.i]
    if rec then
        rec.dry = true
    end
end

local function has(list, id)
    if list ~= nil and id then
        for k = 1, #list do
            if list[k] == id then
                return true
            end
        end
    end
    return false
end

-- Does rec go on its parent's chain (chain:next) rather than start a
-- sub-chain?
local function continues(tr, rec)
    local p = rec.parent and tr[rec.parent]
    return p ~= nil and p.chain == rec.chain
end

-- The entry whose reply the client got for request 1, or nil (an element
-- raised).  That is the deepest entry whose responses hold the very frame
-- the chain returned (tr.reply_ids from finish): a tee's copy, a mirror,
-- may have answered too, and first.  From there, or from the first entry
-- when the frame is not known (or an element made a new reply out of its
-- sub-chain's), the path goes on along each chain (chain:next) down to
-- the element that answered.
local function answerer(tr)
    local want = tr.reply_ids and tr.reply_ids[1]
    local best
    if want then
        for _, rec in ipairs(tr) do
            if rec.result ~= "error" and has(rec.ids, want)
               and (best == nil or rec.depth > best.depth
                    or (rec.depth == best.depth and continues(tr, rec)))
            then
                best = rec
            end
        end
    end
    best = best or tr[1]
    while best ~= nil and best.result == "forwarded" do
        local child
        for k = best.seq + 1, #tr do
            local rec = tr[k]
            if rec.parent == best.seq then
                if rec.chain == best.chain then
                    child = rec
                    break
                end
                child = child or rec
            end
        end
        best = child
    end
    if best ~= nil and best.result == "answered" then
        return best
    end
    return nil
end

-- What a trace of one request amounts to: { path = { element names },
-- answered = the entry that produced the reply, sink = that entry when it
-- is a sink, route = the chain it ended in, failed = the entry that raised,
-- filtered / throttled = booleans }.
function _M.summary(tr, reply_is_error)
    local s = { path = {} }
    for _, rec in ipairs(tr) do
        s.path[#s.path + 1] = rec.element
    end
    -- the innermost raising element is the last one recorded
    for k = #tr, 1, -1 do
        if tr[k].result == "error" then
            s.failed = tr[k]
            break
        end
    end
    s.answered = answerer(tr)
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

local function shares(a, b)
    for k = 1, #a do
        if has(b, a[k]) then
            return true
        end
    end
    return false
end

-- One line per entry, indented by sub-chain depth:
--   redis[1] query_type_filter (query_type_filter): forwarded
--     redis/route1[1] cache (redis, dry): answered +DRY
function _M.format(tr, indent)
    local out, last = {}, nil
    indent = indent or ""
    local replied = tr.reply_ids
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
            -- another answered, whose reply the client got (a tee's copy)
            if replied ~= nil and rec.ids ~= nil
               and not shares(rec.ids, replied)
            then
                line = line .. " (not the client's reply)"
            end
        end
        if rec.notes then
            line = line .. " (" .. concat(rec.notes, "; ") .. ")"
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
            if k ~= "keep" then
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
