-- The CQL half of the message API: methods on every message (sh_frame_t)
-- that read a CQL envelope's header and, on demand, its body.  Bodies are
-- read in place through the FFI; a v4 body compressed with LZ4 or Snappy is
-- decompressed first (once per call, into memory the batch owns).
local ffi = require "ffi"
local bit = require "bit"
local base = require "shotover.ffi"

local types = require "shotover.cql.types"

local C = base.C
local band, rshift = bit.band, bit.rshift
local ffi_string = ffi.string
local ffi_gc = ffi.gc
local error = error

local OPCODES = {
    [0] = "ERROR", "STARTUP", "READY", "AUTHENTICATE", nil, "OPTIONS",
    "SUPPORTED", "QUERY", "RESULT", "PREPARE", "EXECUTE", "REGISTER", "EVENT",
    "BATCH", "AUTH_CHALLENGE", "AUTH_RESPONSE", "AUTH_SUCCESS",
}

local CONSISTENCY = {
    [0] = "ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM",
    "EACH_QUORUM", "SERIAL", "LOCAL_SERIAL", "LOCAL_ONE",
}

local PROTO_CQL = C.SH_PROTO_CQL
local OP_ERROR, OP_QUERY, OP_RESULT = C.SH_CQL_ERROR, C.SH_CQL_QUERY,
                                      C.SH_CQL_RESULT
local OP_PREPARE, OP_EXECUTE = C.SH_CQL_PREPARE, C.SH_CQL_EXECUTE
local OP_EVENT, OP_BATCH = C.SH_CQL_EVENT, C.SH_CQL_BATCH
local FLAG_PAYLOAD = C.SH_CQL_FLAG_PAYLOAD

local holder_out = ffi.new("sh_frame_t *[1]")
local body_out = ffi.new("const uint8_t *[1]")
local len_out = ffi.new("size_t[1]")
local err_out = ffi.new("const char *[1]")

-- every read of a body is checked against its length (shotover.cql.types)
local be16 = types.be16
local u8, u16, s32, bytes_at = types.u8, types.u16, types.s32, types.bytes
local cql_string, past = types.cql_string, types.past

-- the body as (pointer, length), decompressed when needed
local function body_view(f)
    local rc = C.sh_ffi_cql_body(f, holder_out, body_out, len_out, err_out)
    if rc == base.ERROR then
        error("cql body: " .. ffi_string(err_out[0]), 3)
    end
    if rc == base.DECLINED then
        -- outside a worker: keep the buffer alive as long as this view
        ffi_gc(holder_out[0], C.sh_ffi_frame_unref)
    end
    return body_out[0], tonumber(len_out[0])
end

-- Offset of the message proper in a request body: after the custom payload
-- ([bytes map]) when flag 0x04 is set.
local function request_start(f, p, n)
    if band(f.data[1], FLAG_PAYLOAD) == 0 then
        return 0
    end
    local i, count = 2, u16(p, 0, n, "a custom payload")
    for _ = 1, count do
        i = i + 2 + u16(p, i, n, "a custom payload")  -- key [string]
        local vl = s32(p, i, n, "a custom payload")
        i = i + 4 + (vl > 0 and vl or 0)               -- value [bytes]
    end
    if i > n then
        error("cql body: custom payload runs past the body", 3)
    end
    return i
end

-- The offset after a QUERY's (or PREPARE's) query string, or after an
-- EXECUTE's ids, which start at i.
local function statement_end(f, p, n, i)
    if f.rtype == OP_EXECUTE then
        i = i + 2 + u16(p, i, n, "a prepared id")
        if band(f.data[0], 0x7f) >= 5 then
            i = i + 2 + u16(p, i, n, "a result metadata id")
        end
    else
        local ql = s32(p, i, n, "a query string")
        if ql < 0 then
            past("a query string")
        end
        i = i + 4 + ql
    end
    if i > n then
        past("a statement")
    end
    return i
end

-- The query flags of a QUERY or EXECUTE at i (an [int] from v5, a byte
-- before), and the offset after them.
local function query_flags(f, p, n, i)
    if band(f.data[0], 0x7f) >= 5 then
        return s32(p, i, n, "query flags"), i + 4
    end
    return u8(p, i, n, "query flags"), i + 1
end

return function(frame)
    function frame.opcode_name(f)
        return OPCODES[f.rtype] or ("0x" .. bit.tohex(f.rtype, 2))
    end

    function frame.stream(f)
        return f.argc
    end

    function frame.version(f)
        return band(f.data[0], 0x7f)
    end

    function frame.is_response(f)
        return band(f.data[0], 0x80) ~= 0
    end

    function frame.cql_flags(f)
        return f.data[1]
    end

    function frame.body_view(f)
        return body_view(f)
    end

    function frame.body(f)
        local p, n = body_view(f)
        return ffi_string(p, n)
    end

    -- The CQL text of a QUERY or PREPARE request, nil for other messages.
    function frame.query(f)
        if f.proto ~= PROTO_CQL
           or (f.rtype ~= OP_QUERY and f.rtype ~= OP_PREPARE)
           or band(f.data[0], 0x80) ~= 0
        then
            return nil
        end
        local p, n = body_view(f)
        local i = request_start(f, p, n)
        local ql = s32(p, i, n, "a query string")
        if ql < 0 or i + 4 + ql > n then
            error("cql body: query string runs past the body", 2)
        end
        return ffi_string(p + i + 4, ql)
    end

    -- The consistency level of a QUERY or EXECUTE request, as its name.
    function frame.consistency(f)
        if f.proto ~= PROTO_CQL or band(f.data[0], 0x80) ~= 0 then
            return nil
        end
        if f.rtype ~= OP_QUERY and f.rtype ~= OP_EXECUTE then
            return nil
        end
        local p, n = body_view(f)
        local i = statement_end(f, p, n, request_start(f, p, n))
        if i + 2 > n then
            error("cql body: no consistency", 2)
        end
        return CONSISTENCY[be16(p, i)]
    end

    -- The bound values of a QUERY or EXECUTE request, in order (and by name
    -- when the request names them).  An EXECUTE's values are decoded by the
    -- types its PREPARE returned, when this worker saw it; others are left
    -- as their bytes (all of them are with `raw`).  nil for a null, "unset"
    -- for an unset value.
    local RAW = { name = "blob" }
    function frame.values(f, raw)
        if f.proto ~= PROTO_CQL or band(f.data[0], 0x80) ~= 0
           or (f.rtype ~= OP_QUERY and f.rtype ~= OP_EXECUTE)
        then
            return nil
        end
        local p, n = body_view(f)
        local i = request_start(f, p, n)
        local cols
        if f.rtype == OP_EXECUTE and not raw then
            local id = bytes_at(p, i + 2, n, u16(p, i, n, "a prepared id"),
                                "a prepared id")
            local st = require("shotover.cql.session").prepared_by_id(id)
            cols = st and st.columns
        end
        i = statement_end(f, p, n, i) + 2        -- and the consistency
        local flags
        flags, i = query_flags(f, p, n, i)
        local out = {}
        if band(flags, 0x01) == 0 then
            return out
        end
        local count = u16(p, i, n, "values")
        i = i + 2
        for k = 1, count do
            local name
            if band(flags, 0x40) ~= 0 then
                name, i = cql_string(p, i, n)
            end
            local t = cols and cols[k] and cols[k].type or RAW
            local v
            v, i = types.value(t, p, i, n)
            out[k] = v
            if name then
                out[name] = v
            end
        end
        return out
    end

    -- The partition key values of an EXECUTE whose PREPARE this worker saw
    -- (in key order), or nil.
    function frame.partition_key(f)
        if f.rtype ~= OP_EXECUTE then
            return nil
        end
        local st = require("shotover.cql.session").prepared(f)
        if not st or not st.pk or #st.pk == 0 then
            return nil
        end
        local vals, key = frame.values(f), {}
        for k, idx in ipairs(st.pk) do
            key[k] = vals[idx]
        end
        return key
    end

    -- Paging of a QUERY or EXECUTE request: page size (nil when unset),
    -- paging state (bytes, nil when absent) and the keyspace a v5 request
    -- names for itself (flag 0x80).
    local function query_parameters(f)
        local p, n = body_view(f)
        local i = statement_end(f, p, n, request_start(f, p, n)) + 2
        local flags
        flags, i = query_flags(f, p, n, i)
        if band(flags, 0x01) ~= 0 then             -- skip the values
            local count = u16(p, i, n, "values")
            i = i + 2
            for _ = 1, count do
                if band(flags, 0x40) ~= 0 then
                    i = i + 2 + u16(p, i, n, "a value name")
                end
                local len = s32(p, i, n, "a value")
                i = i + 4 + (len > 0 and len or 0)
            end
        end
        local page_size, paging_state
        if band(flags, 0x04) ~= 0 then
            page_size, i = s32(p, i, n, "a page size"), i + 4
        end
        if band(flags, 0x08) ~= 0 then
            local len = s32(p, i, n, "a paging state")
            if len >= 0 then
                paging_state = bytes_at(p, i + 4, n, len,
                                        "a paging state")
            end
            i = i + 4 + (len > 0 and len or 0)
        end
        local keyspace
        if band(flags, 0x80) ~= 0 then
            -- serial consistency, default timestamp, then the keyspace
            i = i + (band(flags, 0x10) ~= 0 and 2 or 0)
                  + (band(flags, 0x20) ~= 0 and 8 or 0)
            keyspace = cql_string(p, i, n)
        end
        return page_size, paging_state, keyspace
    end

    -- The keyspace a v5 QUERY names in its parameters, or nil.
    local function own_keyspace(f)
        if band(f.data[0], 0x7f) < 5 or f.rtype ~= OP_QUERY then
            return nil
        end
        local ok, _, _, ks = pcall(query_parameters, f)
        return ok and ks or nil
    end

    function frame.page_size(f)
        if f.proto ~= PROTO_CQL or band(f.data[0], 0x80) ~= 0
           or (f.rtype ~= OP_QUERY and f.rtype ~= OP_EXECUTE)
        then
            return nil
        end
        return (query_parameters(f))
    end

    -- The paging state of a request, or of a RESULT Rows with more pages.
    function frame.paging_state(f)
        if f.proto ~= PROTO_CQL then
            return nil
        end
        if band(f.data[0], 0x80) == 0 then
            if f.rtype ~= OP_QUERY and f.rtype ~= OP_EXECUTE then
                return nil
            end
            local _, state = query_parameters(f)
            return state
        end
        local rows = frame.rows(f, nil, true)
        return rows and rows.paging_state
    end

    -- The rows of a RESULT Rows response: { columns = {...}, paging_state,
    -- [1] = { col = value, ... }, ... } decoded by the result's metadata, or
    -- when the driver asked the node to skip it (No_metadata), by the result
    -- metadata of `req`'s prepared statement; without either, cells are
    -- bytes by position.  nil for other messages.
    function frame.rows(f, req, meta_only)
        if f.proto ~= PROTO_CQL or f.rtype ~= OP_RESULT
           or band(f.data[0], 0x80) == 0 then
            return nil
        end
        local p, n = body_view(f)
        local i = require("shotover.cql.session").response_start(f, p, n)
        if s32(p, i, n, "a result kind") ~= 2 then
            return nil
        end
        local meta
        meta, i = types.read_rows_metadata(p, i + 4, n)
        local out = { columns = meta.columns, paging_state = meta.paging_state }
        if meta_only then
            return out
        end
        local cols = meta.columns
        if meta.no_metadata and req ~= nil then
            local st = require("shotover.cql.session").prepared(req)
            cols = st and st.result_columns and st.result_columns.columns
                   or cols
            out.columns = cols
        end
        local nrows = s32(p, i, n, "a row count")
        i = i + 4
        -- every cell takes at least its 4-byte length: a row count beyond
        -- that (or rows of no columns) is a lie, refused before any work
        if nrows > 0 and (meta.count < 1
                          or nrows > (n - i) / 4 / meta.count) then
            error("cql body: " .. nrows .. " rows of " .. meta.count
                  .. " columns in " .. (n - i) .. " bytes", 2)
        end
        local RAWT = { name = "blob" }
        for r = 1, nrows do
            local row = {}
            for c = 1, meta.count do
                local col = cols[c]
                local v
                v, i = types.value(col and col.type or RAWT, p, i, n)
                row[col and col.name or c] = v
            end
            out[r] = row
        end
        return out
    end

    -- The parsed statement of a QUERY or PREPARE, or of an EXECUTE whose
    -- PREPARE this worker saw, and the keyspace an unqualified table
    -- resolves to: the statement's own, else for an EXECUTE the session's
    -- keyspace when it was prepared, else `conn.keyspace` (pass chain.conn;
    -- the cassandra sink tracks USE there).  Statements are parsed once per
    -- distinct text and worker, and cached: nil, err when the text does not
    -- parse, or the body does not read.
    local parse_cached
    function frame.statement(f, conn)
        local text, ks
        if f.rtype == OP_EXECUTE then
            local st = require("shotover.cql.session").prepared(f)
            if not st then
                return nil, require("shotover.cql.session").UNKNOWN
            end
            text, ks = st.query, st.keyspace
        else
            -- a body that does not read is the node's to refuse: no
            -- statement, not an error for the transform (and its batch)
            local ok, q = pcall(frame.query, f)
            if not ok then
                return nil, (tostring(q):gsub("^[^:]*:%d+: ", ""))
            end
            text = q
            if not text then
                return nil, "not a statement"
            end
        end
        parse_cached = parse_cached
                       or require("shotover.cql.parser").cached
        local ast, err = parse_cached(text)
        if not ast then
            return nil, err
        end
        return ast, ast.keyspace or ks or own_keyspace(f)
                    or (conn and conn.keyspace)
    end

    -- An ERROR response: { code = n, message = text } (further fields of
    -- some codes stay in the body).
    function frame.error_info(f)
        if f.proto ~= PROTO_CQL or f.rtype ~= OP_ERROR then
            return nil
        end
        local p, n = body_view(f)
        local i = require("shotover.cql.session").response_start(f, p, n)
        local code = s32(p, i, n, "an error code") % 2^32
        local msg = cql_string(p, i + 4, n)
        return { code = code, message = msg }
    end

    -- What a SCHEMA_CHANGE carries, from an EVENT or a RESULT Schema_change:
    -- { change = "CREATED" | "UPDATED" | "DROPPED", target = "KEYSPACE" |
    -- "TABLE" | "TYPE" | "FUNCTION" | "AGGREGATE", keyspace, name }.
    local function schema_change(p, i, n)
        local sc = {}
        sc.change, i = cql_string(p, i, n)
        sc.target, i = cql_string(p, i, n)
        sc.keyspace, i = cql_string(p, i, n)
        if sc.target ~= "KEYSPACE" then
            sc.name = cql_string(p, i, n)
        end
        return sc
    end

    -- An EVENT: { type = "SCHEMA_CHANGE" | "STATUS_CHANGE" |
    -- "TOPOLOGY_CHANGE", ... }: schema changes as above, the others with
    -- change ("UP", "NEW_NODE", ...) and address ("ip:port").
    function frame.event(f)
        if f.proto ~= PROTO_CQL or f.rtype ~= OP_EVENT then
            return nil
        end
        local p, n = body_view(f)
        local i = require("shotover.cql.session").response_start(f, p, n)
        local kind
        kind, i = cql_string(p, i, n)
        if kind == "SCHEMA_CHANGE" then
            local ev = schema_change(p, i, n)
            ev.type = kind
            return ev
        end
        local ev = { type = kind }
        ev.change, i = cql_string(p, i, n)
        local alen = u8(p, i, n, "an address")      -- an [inet]
        local port = s32(p, i + 1 + alen, n, "an address")
        local parts = {}
        for k = 1, alen do
            parts[k] = p[i + k]
        end
        ev.address = (alen == 4 and table.concat(parts, ".")
                      or "ipv6:" .. #parts) .. ":" .. port
        return ev
    end

    -- The schema change a RESULT Schema_change reports, or nil.
    function frame.schema_change(f)
        if f.proto ~= PROTO_CQL or f.rtype ~= OP_RESULT
           or band(f.data[0], 0x80) == 0 then
            return nil
        end
        local p, n = body_view(f)
        local i = require("shotover.cql.session").response_start(f, p, n)
        if s32(p, i, n, "a result kind") ~= 5 then
            return nil
        end
        return schema_change(p, i + 4, n)
    end

    -- The statements of a BATCH request: { type = "logged" | "unlogged" |
    -- "counter", consistency = name, [k] = { query = text } or { id =
    -- prepared id, query = its text and keyspace = the session's keyspace
    -- at prepare time, when this worker saw the PREPARE }, each with
    -- `values` (typed like msg:values(), or all bytes with `raw`) }.
    local BATCH_TYPES = { [0] = "logged", "unlogged", "counter" }
    local RAWT = { name = "blob" }
    function frame.batch_children(f, raw)
        if f.proto ~= PROTO_CQL or f.rtype ~= OP_BATCH
           or band(f.data[0], 0x80) ~= 0 then
            return nil
        end
        local session = require("shotover.cql.session")
        local p, n = body_view(f)
        local i = request_start(f, p, n)
        local out = { type = BATCH_TYPES[u8(p, i, n, "a batch")]
                             or "unknown" }
        local count = u16(p, i + 1, n, "a batch")
        i = i + 3
        for k = 1, count do
            local child, cols = {}, nil
            local kind = u8(p, i, n, "a batch statement")
            i = i + 1
            if kind == 0 then
                local ql = s32(p, i, n, "a query string")
                child.query = bytes_at(p, i + 4, n, ql, "a query string")
                i = i + 4 + ql
            else
                local idl = u16(p, i, n, "a prepared id")
                child.id = bytes_at(p, i + 2, n, idl, "a prepared id")
                i = i + 2 + idl
                local st = session.prepared_by_id(child.id)
                if st then
                    child.query, child.keyspace = st.query, st.keyspace
                    cols = not raw and st.columns or nil
                end
            end
            child.values = {}
            local nv = u16(p, i, n, "values")
            i = i + 2
            for v = 1, nv do
                local t = cols and cols[v] and cols[v].type or RAWT
                child.values[v], i = types.value(t, p, i, n)
            end
            out[k] = child
        end
        if i + 2 <= n then
            out.consistency = CONSISTENCY[be16(p, i)]
        end
        return out
    end

    -- The number of statements in a BATCH request, read from its header
    -- alone (nothing is decoded or copied); nil for other messages.
    function frame.batch_size(f)
        if f.proto ~= PROTO_CQL or f.rtype ~= OP_BATCH
           or band(f.data[0], 0x80) ~= 0 then
            return nil
        end
        local p, n = body_view(f)
        local i = request_start(f, p, n)
        if i + 3 > n then
            error("cql body: batch header runs past the body", 2)
        end
        return be16(p, i + 1)
    end

    -- Setters: each rebuilds the body and rewrites the frame in place
    -- (recompressed when its v4 body was compressed), marking it modified.
    local function set_body(f, body)
        if C.sh_ffi_cql_set_body(f, body, #body, err_out) ~= 0 then
            error("cql set: " .. ffi_string(err_out[0]), 3)
        end
    end
    frame.set_body = function(f, body) set_body(f, body) end

    -- Offsets (0-based, in the body) of a QUERY/EXECUTE/PREPARE request's
    -- parts: the statement (query text or prepared ids), the consistency,
    -- the flags and each value.
    local function locate(f, p, n)
        local at = { start = request_start(f, p, n) }
        local i = statement_end(f, p, n, at.start)
        at.stmt_end = i
        if f.rtype == OP_PREPARE then
            return at
        end
        at.consistency = i
        if i + 2 > n then
            past("a consistency")
        end
        i = i + 2
        at.flags_at = i
        at.flags, i = query_flags(f, p, n, i)
        at.values = {}
        if band(at.flags, 0x01) ~= 0 then
            local count = u16(p, i, n, "values")
            i = i + 2
            for k = 1, count do
                if band(at.flags, 0x40) ~= 0 then
                    i = i + 2 + u16(p, i, n, "a value name")
                end
                local len = s32(p, i, n, "a value")
                local stop = i + 4 + (len > 0 and len or 0)
                if stop > n then
                    past("a value")
                end
                at.values[k] = { i, stop }
                i = stop
            end
        end
        return at
    end

    local function be32s(n)
        return string.char(band(rshift(n, 24), 255), band(rshift(n, 16), 255),
                           band(rshift(n, 8), 255), band(n, 255))
    end

    local function long_string(s)
        return be32s(#s) .. s
    end

    -- Give f the body it has (p, n) with its bytes from offset `from` up to
    -- `stop` (0-based, stop excluded) replaced by `bytes`.
    local function splice(f, p, n, from, stop, bytes)
        local body = ffi_string(p, n)
        set_body(f, body:sub(1, from) .. bytes .. body:sub(stop + 1))
    end

    -- Replace the text of a QUERY or PREPARE request.
    function frame.set_query(f, text)
        if f.rtype ~= OP_QUERY and f.rtype ~= OP_PREPARE then
            error("set_query: not a QUERY or PREPARE", 2)
        end
        local p, n = body_view(f)
        local at = locate(f, p, n)
        splice(f, p, n, at.start, at.stmt_end, long_string(text))
    end

    local CONSISTENCY_ID = {}
    for id, name in pairs(CONSISTENCY) do
        CONSISTENCY_ID[name] = id
    end

    -- Replace the consistency of a QUERY or EXECUTE request (by name).
    function frame.set_consistency(f, name)
        local id = CONSISTENCY_ID[name]
        if not id then
            error("set_consistency: unknown consistency " .. tostring(name), 2)
        end
        if f.rtype ~= OP_QUERY and f.rtype ~= OP_EXECUTE then
            error("set_consistency: not a QUERY or EXECUTE", 2)
        end
        local p, n = body_view(f)
        local at = locate(f, p, n)
        splice(f, p, n, at.consistency, at.consistency + 2,
               string.char(0, id))
    end

    -- The [query parameters] flags of a QUERY or EXECUTE (0x02
    -- Skip_metadata, 0x04 Page_size, 0x08 With_paging_state...), and a
    -- setter that rewrites them.
    function frame.query_flags(f)
        if f.proto ~= PROTO_CQL or band(f.data[0], 0x80) ~= 0
           or (f.rtype ~= OP_QUERY and f.rtype ~= OP_EXECUTE)
        then
            return nil
        end
        local p, n = body_view(f)
        return (query_flags(f, p, n, statement_end(f, p, n,
                                                   request_start(f, p, n))
                                     + 2))
    end

    function frame.set_query_flags(f, flags)
        if f.rtype ~= OP_QUERY and f.rtype ~= OP_EXECUTE then
            error("set_query_flags: not a QUERY or EXECUTE", 2)
        end
        local p, n = body_view(f)
        local at = locate(f, p, n)
        local enc = band(f.data[0], 0x7f) >= 5 and be32s(flags)
                    or string.char(band(flags, 255))
        splice(f, p, n, at.flags_at, at.flags_at + #enc, enc)
    end

    -- Replace bound value k of a QUERY or EXECUTE with `bytes` (already
    -- serialized for the column's type), or null when bytes is nil.
    function frame.set_value(f, k, bytes)
        if f.rtype ~= OP_QUERY and f.rtype ~= OP_EXECUTE then
            error("set_value: not a QUERY or EXECUTE", 2)
        end
        local p, n = body_view(f)
        local at = locate(f, p, n)
        local v = at.values[k]
        if not v then
            error("set_value: no bound value " .. tostring(k), 2)
        end
        splice(f, p, n, v[1], v[2], bytes and long_string(bytes)
                                      or "\255\255\255\255")
    end

    -- The prepared statement id of an EXECUTE request, as a string.
    function frame.prepared_id(f)
        if f.proto ~= PROTO_CQL or f.rtype ~= OP_EXECUTE
           or band(f.data[0], 0x80) ~= 0
        then
            return nil
        end
        local p, n = body_view(f)
        local i = request_start(f, p, n)
        return bytes_at(p, i + 2, n, u16(p, i, n, "a prepared id"),
                        "a prepared id")
    end
end
