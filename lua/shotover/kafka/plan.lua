-- Change records of prepared writes from a template per statement.
--
-- Everything in the record of an EXECUTE of a prepared INSERT, UPDATE or
-- DELETE is the same for each EXECUTE but the bound values and the
-- consistency.  So the first one goes the general way (m:query_info() and
-- shotover.kafka.record), and its record is built once more with each
-- bound value and the consistency replaced by a placeholder: the JSON
-- text around the placeholders is the template.  Later EXECUTEs fill the
-- placeholders with the JSON of their bound values' bytes (typed by the
-- table's schema, as query_info() types them): the same text the general
-- way gives, without its tables.  What a template cannot cover (named or
-- null values, collection updates, BATCH) keeps going the general way.
local json = require "shotover.kafka.json"
local record = require "shotover.kafka.record"
local query_info = require "shotover.cql.query_info"
local schema = require "shotover.cql.schema"
local bound = require "shotover.cql.bound"

local type, tonumber = type, tonumber
local encode, raw = json.encode, json.raw

local _M = { _VERSION = "0.1.0" }

local CL_JSON = {}
for code, name in pairs(bound.CONSISTENCY) do
    CL_JSON[code] = encode(name)
end

local BIGINT, INT = { name = "bigint" }, { name = "int" }

-- A value slot's JSON from bound bytes b.
local function value_json(t, b)
    if t.name == "blob" then
        return json.bytes(b)
    end
    return encode(query_info.decode(t, b))
end

-- A TTL's or timestamp's JSON, as query_info() reads a bound number: an
-- int when four bytes, a bigint else, a Lua number when exact.
local function number_json(b)
    local v = query_info.decode(#b == 4 and INT or BIGINT, b)
    if type(v) == "cdata" and v > -2^53 and v < 2^53 then
        v = tonumber(v)
    end
    return encode(v)
end

-- Text with placeholders "\1<slot>\2" as { text, slot, text, ... }.
local function split(s)
    local out, at = {}, 1
    while true do
        local a, b, k = s:find("\1(%d+)\2", at)
        if not a then
            out[#out + 1] = s:sub(at)
            return out
        end
        out[#out + 1] = s:sub(at, a - 1)
        out[#out + 1] = tonumber(k)
        at = b + 1
    end
end

-- The plan of prepared write `ast` (in keyspace ks, depending on the
-- session's keyspace when conn_ks), from the query_info `qi` of an
-- EXECUTE of it; false when a template cannot cover the statement, nil
-- when this EXECUTE cannot show it (a null key, the schema not loaded).
function _M.make(qi, ast, ks, conn_ks, opts)
    local kind = ast.kind
    if (kind ~= "insert" and kind ~= "update" and kind ~= "delete")
       or ast.json or qi.prepare then
        return false
    end
    local tab = schema.get(ks, ast.table)
    if not tab or not qi.complete then
        return nil
    end
    local slots, needs, nmarkers = {}, {}, 0
    local function slot(s)
        slots[#slots + 1] = s
        if s.marker then
            needs[s.marker] = true
            nmarkers = math.max(nmarkers, s.marker)
        end
        return raw("\1" .. #slots .. "\2")
    end
    -- the template's query_info: qi with each bound value a placeholder
    local t = {}
    for k, v in pairs(qi) do
        t[k] = v
    end
    t.key, t.clustering = {}, {}
    for k, v in pairs(qi.key or {}) do t.key[k] = v end
    for k, v in pairs(qi.clustering or {}) do t.clustering[k] = v end
    if qi.values then
        t.values = {}
        for k, v in pairs(qi.values) do t.values[k] = v end
    end
    local function put(col, node)
        if node == nil or not node.marker then
            return true                     -- a literal: as qi has it
        end
        if node.name or tab.types[col] == nil then
            return false
        end
        local ph = slot({ marker = node.marker, type = tab.types[col] })
        local k = tab.kinds[col]
        if k == "partition_key" then
            t.key[col] = ph
        elseif k == "clustering" then
            t.clustering[col] = ph
        else
            t.values[col] = ph
        end
        return true
    end
    for _, a in ipairs(kind == "update" and ast.assignments or {}) do
        if a.op ~= "=" or a.key ~= nil or a.field ~= nil then
            return false                    -- a change, not a new value
        end
        if not put(a.column, a.value) then
            return false
        end
    end
    -- INSERT's columns; the key of UPDATE's and DELETE's WHERE
    local ok = bound.each_keyed(ast, function(col, node)
        local k = tab.kinds[col]
        if kind ~= "insert" and k ~= "partition_key" and k ~= "clustering"
        then
            return true
        end
        return put(col, node)
    end)
    if not ok then
        return false
    end
    local u = ast.using or {}
    for _, f in ipairs({ "ttl", "timestamp" }) do
        local node = u[f]
        if node and node.marker then
            if node.name then
                return false
            end
            t[f] = slot({ marker = node.marker, number = true })
        end
    end
    t.consistency = slot({ consistency = true })
    local recs = record.build(t, opts)
    if #recs ~= 1 then
        return false
    end
    local key = split(recs[1].key)
    for _, x in ipairs(key) do
        if type(x) == "number" then
            slots[x].in_key = true
        end
    end
    return {
        gen = schema.generation, conn_ks = conn_ks, lwt = qi.lwt,
        slots = slots, needs = needs, nmarkers = nmarkers,
        topic = recs[1].topic, key = key, value = split(recs[1].value),
    }
end

-- The record's text is written into one reused buffer: bound blobs as
-- hex straight into it, the rest of the slots as their JSON.
local buffer = require "string.buffer"
local ffi = require "ffi"
local bit = require "bit"
local band, rshift = bit.band, bit.rshift
local u8p = ffi.typeof("const uint8_t *")
local HEX = ffi.new("const uint8_t[16]", { 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 97, 98, 99, 100, 101, 102 })

local function put_hex(buf, s)
    local n = #s
    local q = buf:reserve(2 * n + 4)
    local p = ffi.cast(u8p, s)
    q[0], q[1], q[2] = 34, 48, 120                      -- "0x
    for i = 0, n - 1 do
        local c = p[i]
        q[3 + 2 * i] = HEX[rshift(c, 4)]
        q[4 + 2 * i] = HEX[band(c, 15)]
    end
    q[3 + 2 * n] = 34
    buf:commit(2 * n + 4)
end

local kbuf, vbuf = buffer.new(64), buffer.new(1024)
local vals, jsons = {}, {}

local function fill(buf, pieces, slots)
    buf:reset()
    for i = 1, #pieces do
        local x = pieces[i]
        if type(x) == "number" then
            local j = jsons[x]
            if j then
                buf:put(j)
            else
                put_hex(buf, vals[slots[x].marker])
            end
        else
            buf:put(x)
        end
    end
end

-- The record of EXECUTE m by plan: its topic, key, and its value as a
-- pointer and length into a buffer good until the next call; nil when
-- this EXECUTE is not one the plan covers (then it goes the general way).
function _M.render(plan, m)
    local _, p, n = bound.statement(m)
    local cl, _, _, count = bound.read(m, p, n, plan.needs, vals)
    local ok = cl ~= nil and count >= plan.nmarkers and CL_JSON[cl] ~= nil
    local topic, key, vp, vn
    if ok then
        local slots = plan.slots
        for k = 1, #slots do
            local s = slots[k]
            if s.consistency then
                jsons[k] = CL_JSON[cl]
            elseif s.number then
                jsons[k] = number_json(vals[s.marker])
            elseif s.type.name == "blob" and not s.in_key then
                jsons[k] = false                -- hex into the buffer
            else
                jsons[k] = value_json(s.type, vals[s.marker])
            end
        end
        fill(kbuf, plan.key, slots)
        fill(vbuf, plan.value, slots)
        topic, key = plan.topic, kbuf:tostring()
        vp, vn = vbuf:ref()
    end
    for k = 1, plan.nmarkers do
        vals[k] = nil
    end
    return topic, key, vp, vn
end

return _M
