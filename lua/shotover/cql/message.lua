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

local be16, be32 = types.be16, types.be32

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
    local i, count = 2, be16(p, 0)
    for _ = 1, count do
        i = i + 2 + be16(p, i)                    -- key [string]
        local vl = be32(p, i)
        i = i + 4 + (vl > 0x7fffffff and 0 or vl) -- value [bytes]
    end
    if i > n then
        error("cql body: custom payload runs past the body", 3)
    end
    return i
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
        local ql = be32(p, i)
        if i + 4 + ql > n then
            error("cql body: query string runs past the body", 2)
        end
        return ffi_string(p + i + 4, ql)
    end

    -- The consistency level of a QUERY or EXECUTE request, as its name.
    function frame.consistency(f)
        if f.proto ~= PROTO_CQL or band(f.data[0], 0x80) ~= 0 then
            return nil
        end
        local p, n = body_view(f)
        local i = request_start(f, p, n)
        if f.rtype == OP_QUERY then
            i = i + 4 + be32(p, i)
        elseif f.rtype == OP_EXECUTE then
            i = i + 2 + be16(p, i)                -- prepared id
            if band(f.data[0], 0x7f) >= 5 then
                i = i + 2 + be16(p, i)            -- result metadata id
            end
        else
            return nil
        end
        if i + 2 > n then
            error("cql body: no consistency", 2)
        end
        return CONSISTENCY[be16(p, i)]
    end

    -- The bound values of a QUERY or EXECUTE request, in order (and by name
    -- when the request names them).  An EXECUTE's values are decoded by the
    -- types its PREPARE returned, when this worker saw it; others are left
    -- as their bytes.  nil for a null, "unset" for an unset value.
    local RAW = { name = "blob" }
    function frame.values(f)
        if f.proto ~= PROTO_CQL or band(f.data[0], 0x80) ~= 0
           or (f.rtype ~= OP_QUERY and f.rtype ~= OP_EXECUTE)
        then
            return nil
        end
        local version = band(f.data[0], 0x7f)
        local p, n = body_view(f)
        local i = request_start(f, p, n)
        local cols
        if f.rtype == OP_QUERY then
            i = i + 4 + be32(p, i)
        else
            local id = ffi_string(p + i + 2, be16(p, i))
            i = i + 2 + be16(p, i)
            if version >= 5 then
                i = i + 2 + be16(p, i)
            end
            local st = require("shotover.cql.session").prepared_by_id(id)
            cols = st and st.columns
        end
        i = i + 2                                -- consistency
        local flags
        if version >= 5 then
            flags, i = be32(p, i), i + 4
        else
            flags, i = p[i], i + 1
        end
        local out = {}
        if band(flags, 0x01) == 0 then
            return out
        end
        local count = be16(p, i)
        i = i + 2
        for k = 1, count do
            local name
            if band(flags, 0x40) ~= 0 then
                name, i = types.cql_string(p, i)
            end
            local t = cols and cols[k] and cols[k].type or RAW
            local v
            v, i = types.value(t, p, i)
            if i > n then
                error("cql body: values run past the body", 2)
            end
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

    -- Paging of a QUERY or EXECUTE request: page size (nil when unset) and
    -- paging state (bytes, nil when absent).
    local function query_parameters(f)
        local version = band(f.data[0], 0x7f)
        local p, n = body_view(f)
        local i = request_start(f, p, n)
        if f.rtype == OP_QUERY then
            i = i + 4 + be32(p, i)
        else
            i = i + 2 + be16(p, i)
            if version >= 5 then
                i = i + 2 + be16(p, i)
            end
        end
        i = i + 2
        local flags
        if version >= 5 then
            flags, i = be32(p, i), i + 4
        else
            flags, i = p[i], i + 1
        end
        if band(flags, 0x01) ~= 0 then             -- skip the values
            local count = be16(p, i)
            i = i + 2
            for _ = 1, count do
                if band(flags, 0x40) ~= 0 then
                    i = i + 2 + be16(p, i)
                end
                local len = be32(p, i)
                i = i + 4 + (len > 0 and len or 0)
            end
        end
        local page_size, paging_state
        if band(flags, 0x04) ~= 0 then
            page_size, i = be32(p, i), i + 4
        end
        if band(flags, 0x08) ~= 0 then
            local len = be32(p, i)
            if len >= 0 then
                paging_state = ffi_string(p + i + 4, len)
            end
        end
        return page_size, paging_state
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
        local i = require("shotover.cql.session").response_start(f, p)
        if be32(p, i) ~= 2 then
            return nil
        end
        local meta
        meta, i = types.read_rows_metadata(p, i + 4)
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
        local nrows = be32(p, i)
        i = i + 4
        local RAWT = { name = "blob" }
        for r = 1, nrows do
            local row = {}
            for c = 1, meta.count do
                local col = cols[c]
                local v
                v, i = types.value(col and col.type or RAWT, p, i)
                row[col and col.name or c] = v
            end
            out[r] = row
        end
        if i > n then
            error("cql body: rows run past the body", 2)
        end
        return out
    end

    -- The parsed statement of a QUERY or PREPARE, or of an EXECUTE whose
    -- PREPARE this worker saw, and the keyspace an unqualified table
    -- resolves to: the statement's own, else for an EXECUTE the session's
    -- keyspace when it was prepared, else `conn.keyspace` (pass chain.conn;
    -- the cassandra sink tracks USE there).  Statements are parsed once per
    -- distinct text and worker, and cached: nil, err when the text does not
    -- parse.
    local cache, ncache, MAX_CACHE = {}, 0, 10000
    local parse
    function frame.statement(f, conn)
        local text, ks
        if f.rtype == OP_EXECUTE then
            local st = require("shotover.cql.session").prepared(f)
            if not st then
                return nil, "prepared statement not seen by this worker"
            end
            text, ks = st.query, st.keyspace
        else
            text = frame.query(f)
            if not text then
                return nil, "not a statement"
            end
        end
        local ast = cache[text]
        if ast == nil then
            parse = parse or require("shotover.cql.parser").parse
            local err
            ast, err = parse(text)
            if ncache >= MAX_CACHE then
                cache, ncache = {}, 0
            end
            cache[text] = ast or false
            ncache = ncache + 1
            if not ast then
                return nil, err
            end
        elseif ast == false then
            return nil, "statement does not parse"
        end
        return ast, ast.keyspace or ks or (conn and conn.keyspace)
    end

    -- An ERROR response: { code = n, message = text } (further fields of
    -- some codes stay in the body).
    function frame.error_info(f)
        if f.proto ~= PROTO_CQL or f.rtype ~= OP_ERROR then
            return nil
        end
        local p = body_view(f)
        local i = require("shotover.cql.session").response_start(f, p)
        local code = be32(p, i) % 2^32
        local msg = types.cql_string(p, i + 4)
        return { code = code, message = msg }
    end

    -- What a SCHEMA_CHANGE carries, from an EVENT or a RESULT Schema_change:
    -- { change = "CREATED" | "UPDATED" | "DROPPED", target = "KEYSPACE" |
    -- "TABLE" | "TYPE" | "FUNCTION" | "AGGREGATE", keyspace, name }.
    local function schema_change(p, i)
        local sc = {}
        sc.change, i = types.cql_string(p, i)
        sc.target, i = types.cql_string(p, i)
        sc.keyspace, i = types.cql_string(p, i)
        if sc.target ~= "KEYSPACE" then
            sc.name = types.cql_string(p, i)
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
        local p = body_view(f)
        local i = require("shotover.cql.session").response_start(f, p)
        local kind
        kind, i = types.cql_string(p, i)
        if kind == "SCHEMA_CHANGE" then
            local ev = schema_change(p, i)
            ev.type = kind
            return ev
        end
        local ev = { type = kind }
        ev.change, i = types.cql_string(p, i)
        local n = p[i]
        local parts = {}
        for k = 1, n do
            parts[k] = p[i + k]
        end
        local port = be32(p, i + 1 + n)
        ev.address = (n == 4 and table.concat(parts, ".")
                      or "ipv6:" .. #parts) .. ":" .. port
        return ev
    end

    -- The schema change a RESULT Schema_change reports, or nil.
    function frame.schema_change(f)
        if f.proto ~= PROTO_CQL or f.rtype ~= OP_RESULT
           or band(f.data[0], 0x80) == 0 then
            return nil
        end
        local p = body_view(f)
        local i = require("shotover.cql.session").response_start(f, p)
        if be32(p, i) ~= 5 then
            return nil
        end
        return schema_change(p, i + 4)
    end

    -- The statements of a BATCH request: { type = "logged" | "unlogged" |
    -- "counter", [k] = { query = text } or { id = prepared id, query = its
    -- text when this worker saw the PREPARE }, each with `values` (typed
    -- like msg:values()) }.
    local BATCH_TYPES = { [0] = "logged", "unlogged", "counter" }
    local RAWT = { name = "blob" }
    function frame.batch_children(f)
        if f.proto ~= PROTO_CQL or f.rtype ~= OP_BATCH
           or band(f.data[0], 0x80) ~= 0 then
            return nil
        end
        local session = require("shotover.cql.session")
        local p, n = body_view(f)
        local i = request_start(f, p, n)
        local out = { type = BATCH_TYPES[p[i]] or "unknown" }
        local count = be16(p, i + 1)
        i = i + 3
        for k = 1, count do
            local child, cols = {}, nil
            local kind = p[i]
            i = i + 1
            if kind == 0 then
                local ql = be32(p, i)
                child.query = ffi_string(p + i + 4, ql)
                i = i + 4 + ql
            else
                child.id = ffi_string(p + i + 2, be16(p, i))
                i = i + 2 + be16(p, i)
                local st = session.prepared_by_id(child.id)
                if st then
                    child.query, cols = st.query, st.columns
                end
            end
            child.values = {}
            local nv = be16(p, i)
            i = i + 2
            for v = 1, nv do
                local t = cols and cols[v] and cols[v].type or RAWT
                child.values[v], i = types.value(t, p, i)
            end
            if i > n then
                error("cql body: batch runs past the body", 2)
            end
            out[k] = child
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
        local version = band(f.data[0], 0x7f)
        local at = { start = request_start(f, p, n) }
        local i = at.start
        if f.rtype == OP_QUERY or f.rtype == OP_PREPARE then
            at.query_len = be32(p, i)
            i = i + 4 + at.query_len
        else
            i = i + 2 + be16(p, i)
            if version >= 5 then
                i = i + 2 + be16(p, i)
            end
        end
        at.stmt_end = i
        if f.rtype == OP_PREPARE then
            return at
        end
        at.consistency = i
        i = i + 2
        at.flags_at = i
        if version >= 5 then
            at.flags, i = be32(p, i), i + 4
        else
            at.flags, i = p[i], i + 1
        end
        at.values = {}
        if band(at.flags, 0x01) ~= 0 then
            local count = be16(p, i)
            i = i + 2
            for k = 1, count do
                if band(at.flags, 0x40) ~= 0 then
                    i = i + 2 + be16(p, i)
                end
                local len = be32(p, i)
                at.values[k] = { i, i + 4 + (len > 0 and len or 0) }
                i = at.values[k][2]
            end
        end
        return at
    end

    local function long_string(s)
        local n = #s
        return string.char(band(rshift(n, 24), 255), band(rshift(n, 16), 255),
                           band(rshift(n, 8), 255), band(n, 255)) .. s
    end

    -- Replace the text of a QUERY or PREPARE request.
    function frame.set_query(f, text)
        if f.rtype ~= OP_QUERY and f.rtype ~= OP_PREPARE then
            error("set_query: not a QUERY or PREPARE", 2)
        end
        local p, n = body_view(f)
        local at = locate(f, p, n)
        local body = ffi_string(p, n)
        set_body(f, body:sub(1, at.start) .. long_string(text)
                    .. body:sub(at.stmt_end + 1))
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
        local body = ffi_string(p, n)
        set_body(f, body:sub(1, at.consistency) .. string.char(0, id)
                    .. body:sub(at.consistency + 3))
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
        local body = ffi_string(p, n)
        local enc = bytes and (long_string(bytes)) or "\255\255\255\255"
        set_body(f, body:sub(1, v[1]) .. enc .. body:sub(v[2] + 1))
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
        return ffi_string(p + i + 2, be16(p, i))
    end
end
