-- protect: field-level encryption of chosen Cassandra columns.  Values
-- of the configured blob columns (ks.table.column) are sealed with
-- AES-256-GCM on their way to the node -- literals and bound values of
-- INSERT and UPDATE, in QUERY, EXECUTE and BATCH -- and opened in the
-- RESULT Rows on their way back, so the application reads and writes
-- plaintext while the node holds envelopes (shotover.envelope): a data
-- key per worker, wrapped by the key manager's KEK, the value bound to
-- its keyspace, table, column and partition key.
--
-- What cannot work on ciphertext is refused with an INVALID error before
-- it reaches the node: a WHERE or IF on a protected column, a protected
-- column that is not a blob, a value that is neither a blob literal nor a
-- bind marker, a read that can find no partition key to open values
-- with.  A stored value that does not open fails its request with a
-- READ_FAILURE, logged; never plaintext garbage.
-- See docs/transforms/protect.md.
local bit = require "bit"
local keys = require "shotover.keys"
local envelope = require "shotover.envelope"
local log = require "shotover.log"
local parser = require "shotover.cql.parser"
local reply = require "shotover.cql.reply"
local rows = require "shotover.cql.rows"
local cql_schema = require "shotover.cql.schema"
local literal_bytes = require("shotover.cql.query_info").literal_bytes
local C = require("shotover.ffi").C

local band, rshift = bit.band, bit.rshift
local fmt = string.format
local char, byte, sub, lower, find = string.char, string.byte, string.sub,
                                     string.lower, string.find
local concat, sort = table.concat, table.sort
local type, pairs, ipairs, pcall, tostring = type, pairs, ipairs, pcall,
                                             tostring
local identity = envelope.identity
local ffi_string = require("ffi").string

local OP_QUERY, OP_PREPARE = C.SH_CQL_QUERY, C.SH_CQL_PREPARE
local OP_EXECUTE, OP_BATCH = C.SH_CQL_EXECUTE, C.SH_CQL_BATCH
local OP_RESULT = C.SH_CQL_RESULT
local FLAG_PAYLOAD = C.SH_CQL_FLAG_PAYLOAD

local _M = {
    name = "protect",
    version = "0.1.0",
    protocols = { "cassandra" },
    -- what a batch needs is worked out as it enters and kept per batch
    capabilities = { lanes = true },
    schema = {
        columns = { type = "table", required = true },
        key_manager = { type = "table", required = true },
        dek_ttl = { type = "integer", default = 3600, min = 1 },
        dek_max_uses = { type = "integer", default = 2^32, min = 1,
                         max = 2^32 },
    },
}

local mt = { __index = {} }
local methods = mt.__index

-- "ks.t.c" -> ks, t, c (each an identifier as the schema has it)
local function split_column(s)
    return s:match("^([^.]+)%.([^.]+)%.([^.]+)$")
end

function _M.check_config(conf)
    local errs = {}
    local cols = conf.columns
    if #cols == 0 then
        errs[#errs + 1] = "columns: give at least one \"keyspace.table."
                          .. "column\""
    end
    local seen = {}
    for i, c in ipairs(cols) do
        if type(c) ~= "string" or not split_column(c) then
            errs[#errs + 1] = fmt("columns[%d]: expected \"keyspace.table."
                                  .. "column\", got %s", i,
                                  require("shotover.schema").show(c))
        elseif seen[c] then
            errs[#errs + 1] = fmt("columns[%d]: %s is listed twice", i, c)
        end
        seen[c] = true
    end
    for k in pairs(cols) do
        if type(k) ~= "number" then
            errs[#errs + 1] = "columns: expected a list of \"keyspace.table."
                              .. "column\""
            break
        end
    end
    for _, e in ipairs(keys.check(conf.key_manager, "key_manager")) do
        errs[#errs + 1] = e
    end
    if #errs > 0 then
        return nil, errs
    end
    return true
end

function _M.new(conf, env)
    local tables = {}                       -- "ks.t" -> { col = true }
    local by_keyspace = {}                  -- ks -> t -> the same
    local names = {}                        -- table name -> true
    for _, c in ipairs(conf.columns) do
        local ks, t, col = split_column(c)
        local key = ks .. "." .. t
        tables[key] = tables[key] or {}
        tables[key][col] = true
        by_keyspace[ks] = by_keyspace[ks] or {}
        by_keyspace[ks][t] = tables[key]
        names[lower(t)] = true
    end
    -- (checked already: a path for what can only fail between the check
    -- and now, a key file gone)
    local path = fmt("%s%s.key_manager", env and env.name
                     and "chain " .. env.name .. ": " or "",
                     conf.name or "protect")
    local km = keys.new(conf.key_manager, path)
    return setmetatable({
        name = conf.name or "protect",
        -- AST -> keyspace -> what it needs (see analysed)
        analyses = setmetatable({}, { __mode = "k" }),
        tables = tables, by_keyspace = by_keyspace, table_names = names,
        ring = envelope.keyring(km, conf.dek_ttl, conf.dek_max_uses),
    }, mt)
end

-- hex of bytes, for a blob literal
local HEX = {}
for i = 0, 255 do
    HEX[char(i)] = fmt("%02x", i)
end
local function hex(s)
    return (s:gsub(".", HEX))
end

local function be32(n)
    return char(band(rshift(n, 24), 255), band(rshift(n, 16), 255),
                band(rshift(n, 8), 255), band(n, 255))
end

local function u16(s, i)
    return byte(s, i) * 256 + byte(s, i + 1)
end

local function s32(s, i)
    local v = ((byte(s, i) * 256 + byte(s, i + 1)) * 256 + byte(s, i + 2))
              * 256 + byte(s, i + 3)
    return v >= 2^31 and v - 2^32 or v
end

-- A refusal: an error that names the transform.
local function refusal(self, msg, ...)
    return { refuse = fmt("shotover: %s: " .. msg, self.name, ...) }
end

-- The first protected column among the columns a relation names.
local function names_protected(prot, rel)
    if rel.columns then
        for _, c in ipairs(rel.columns) do
            if prot[c] then
                return c
            end
        end
        return nil
    end
    return rel.column and prot[rel.column] and rel.column or nil
end

-- Refusals common to every statement on a protected table: a WHERE or IF
-- on a protected column, a protected column that is not a blob.
local function common_checks(self, ast, ks, prot, tab)
    for _, rel in ipairs(ast.where or {}) do
        local c = names_protected(prot, rel)
        if c then
            return refusal(self, "%s.%s.%s is encrypted: a WHERE restriction "
                           .. "on it cannot match the stored ciphertext "
                           .. "(restrict the key columns instead)", ks,
                           ast.table, c)
        end
    end
    for _, rel in ipairs(ast.if_conditions or {}) do
        local c = names_protected(prot, rel)
        if c then
            return refusal(self, "%s.%s.%s is encrypted: an IF condition on "
                           .. "it cannot be checked against ciphertext", ks,
                           ast.table, c)
        end
    end
    if tab then
        local list = {}
        for c in pairs(prot) do
            list[#list + 1] = c
        end
        sort(list)
        for _, c in ipairs(list) do
            local t = tab.types[c]
            if t and (t.opaque or t.name ~= "blob") then
                return refusal(self, "%s.%s.%s is configured as protected but "
                               .. "its type is %s; a protected column must "
                               .. "be a blob", ks, ast.table, c,
                               t.opaque and "a collection, tuple or UDT"
                               or (t.name == "varchar" and "text" or t.name))
            end
        end
    end
    return nil
end

-- What to seal in one write statement: { [k] = column } for bind markers
-- (by marker number), and a list of { at, len, value, column } for blob
-- literals; or a refusal.
local function write_values(self, ast, ks, prot)
    local bound, lits = {}, {}
    local function take(col, node)
        if node == nil then
            return nil
        end
        if node.marker then
            if node.name then
                bound[node.name] = col
            end
            bound[node.marker] = col
            return nil
        elseif node.type == "blob" then
            lits[#lits + 1] = { at = node.at, len = #node.text,
                                value = node.value, column = col }
            return nil
        elseif node.type == "null" then
            return nil
        end
        -- (what it is, never its text: it may be the very secret)
        local what = node.type == "function"
                     and "a call of " .. tostring(node.name)
                     or node.type and node.type ~= "operation"
                        and node.type ~= "cast" and node.type ~= "type_hint"
                        and node.type ~= "negation"
                        and "a " .. node.type .. " literal"
                     or "an expression"
        return refusal(self, "the value for %s.%s.%s must be a blob literal "
                       .. "(0x...) or a bind marker, not %s: the column is "
                       .. "encrypted", ks, ast.table, col, what)
    end
    if ast.kind == "insert" then
        if ast.json then
            return refusal(self, "INSERT JSON into %s.%s: the table has "
                           .. "encrypted columns; give the columns and "
                           .. "values", ks, ast.table)
        end
        for i, col in ipairs(ast.columns or {}) do
            if prot[col] then
                local r = take(col, ast.values[i])
                if r then
                    return r
                end
            end
        end
    elseif ast.kind == "update" then
        for _, a in ipairs(ast.assignments or {}) do
            if prot[a.column] then
                if a.op ~= "=" or a.key ~= nil or a.field ~= nil then
                    return refusal(self, "%s.%s.%s is encrypted: only "
                                   .. "\"%s = value\" can set it", ks,
                                   ast.table, a.column, a.column)
                end
                local r = take(a.column, a.value)
                if r then
                    return r
                end
            end
        end
    end
    -- the markers in order, as a list (walked with ipairs on every
    -- request: pairs and next do not compile)
    local list = {}
    for k, col in pairs(bound) do
        if type(k) == "number" then
            list[#list + 1] = { k, col }
        end
    end
    sort(list, function(a, b) return a[1] < b[1] end)
    if #list == 0 and #lits == 0 then
        return nil
    end
    return { bound = list, lits = lits }
end

local function selected_functions_ok(func)
    func = func and lower(func)
    return func == "writetime" or func == "ttl" or func == "maxwritetime"
end

-- The read plan of a SELECT: { names = { result column name -> table
-- column }, pk = partition key columns, all_pk = whether the row has
-- them all }, nil when it selects no protected column, or a refusal.
local function read_plan(self, ast, ks, prot, tab)
    if ast.json then
        return refusal(self, "SELECT JSON from %s.%s: the table has "
                       .. "encrypted columns; select the columns", ks,
                       ast.table)
    end
    local names, any = {}, false
    if ast.columns and ast.columns[1] == "*" then
        for c in pairs(tab.types) do
            names[c] = c
        end
        any = true
    else
        for _, s in ipairs(ast.selectors or {}) do
            if s.column and not s.func then
                names[s.alias or s.column] = s.column
                any = any or prot[s.column] == true
            elseif not selected_functions_ok(s.func) then
                local text = lower(s.text or "")
                for c in pairs(prot) do
                    if find(text, "%f[%w_]" .. c .. "%f[^%w_]") then
                        return refusal(self, "%s.%s.%s is encrypted: select "
                                       .. "it as a column (a function or "
                                       .. "operator on it would see "
                                       .. "ciphertext)", ks, ast.table, c)
                    end
                end
            end
        end
    end
    if not any then
        return nil
    end
    local selected = {}
    for _, c in pairs(names) do
        selected[c] = true
    end
    local all_pk = true
    for _, c in ipairs(tab.partition) do
        all_pk = all_pk and selected[c] == true
    end
    return { names = names, pk = tab.partition, all_pk = all_pk }
end

-- The terms giving each partition key column by equality (INSERT: its
-- value; others: WHERE col = term), false for a column not given so.
local function key_nodes_of(ast, tab)
    local by = {}
    if ast.kind == "insert" then
        for i, col in ipairs(ast.columns or {}) do
            by[col] = ast.values[i]
        end
    else
        for _, rel in ipairs(ast.where or {}) do
            if rel.op == "=" and rel.column and not rel.values
               and not rel.token and not rel.columns and not rel.key
               and not rel.field then
                by[rel.column] = rel.value
            end
        end
    end
    local nodes, types = {}, {}
    for j, c in ipairs(tab.partition) do
        nodes[j] = by[c] or false
        types[j] = tab.types[c]
    end
    return nodes, types
end

-- What a statement (ast in keyspace ks) needs, worked out once per AST,
-- keyspace and schema generation: nil (nothing), a refusal, or { ks,
-- table, prot, tab, write = { bound, lits }, read = read_plan,
-- key_nodes }.  prepare: a PREPARE (no values yet).
local function analyse(self, ast, ks, prepare)
    local k = ast.kind
    local prot = self.tables[ks .. "." .. ast.table]
    if prot == nil then
        return nil
    end
    local tab = cql_schema.get(ks, ast.table)
    if tab == false then
        return nil                      -- no such table: the node says so
    end
    local r = common_checks(self, ast, ks, prot, tab)
    if r then
        return r
    end
    local plan = { ks = ks, table = ast.table, prot = prot }
    if k == "insert" or k == "update" then
        local w = write_values(self, ast, ks, prot)
        if w and w.refuse then
            return w
        end
        if w and not prepare and tab == nil then
            return refusal(self, "the schema of %s.%s could not be read: its "
                           .. "encrypted columns cannot be written now", ks,
                           ast.table)
        end
        if w then
            -- spliced from the end, so earlier offsets stay right
            sort(w.lits, function(a, b) return a.at > b.at end)
        end
        plan.write = w
        if k == "insert" and ast.if_not_exists and tab and not prepare then
            -- a row that exists already comes back whole, [applied] false
            local names = {}
            for c in pairs(tab.types) do
                names[c] = c
            end
            plan.read = { names = names, pk = tab.partition, all_pk = true }
        end
    elseif k == "select" and not prepare then
        if tab == nil then
            return refusal(self, "the schema of %s.%s could not be read: its "
                           .. "encrypted columns cannot be read now", ks,
                           ast.table)
        end
        local rp = read_plan(self, ast, ks, prot, tab)
        if rp and rp.refuse then
            return rp
        end
        plan.read = rp
    end
    if plan.write == nil and plan.read == nil then
        return nil
    end
    if tab then
        plan.key_nodes, plan.key_types = key_nodes_of(ast, tab)
        plan.partition = tab.partition
    end
    return plan
end

local NONE = {}                           -- cached: nothing to do

local function analysed(self, ast, ks, prepare)
    local per = self.analyses[ast]
    if per == nil then
        per = {}
        self.analyses[ast] = per
    end
    local key = prepare and ks .. "\0prepare" or ks
    local e = per[key]
    local gen = cql_schema.generation
    if e == nil or e.gen ~= gen then
        e = { gen = gen, plan = analyse(self, ast, ks, prepare) or NONE }
        per[key] = e
    end
    return e.plan ~= NONE and e.plan or nil
end

-- The partition key's bytes (as query_info's key_bytes) for plan sp,
-- from the bound values raw (bytes by position and name) and literals
-- serialized for their column's type.  nil when not every column is
-- known.
local function key_bytes_of(sp, raw)
    local nodes = sp.key_nodes
    if nodes == nil then
        return nil
    end
    local parts = {}
    for j = 1, #nodes do
        local node = nodes[j]
        if not node then
            return nil
        elseif node.marker then
            local b = raw and (node.name and raw[node.name]
                               or raw[node.marker])
            if b == nil or b == "unset" then
                return nil
            end
            parts[j] = be32(#b) .. b
        else
            local b = literal_bytes(sp.key_types[j], node)
            if b == nil then
                return nil
            end
            parts[j] = be32(#b) .. b
        end
    end
    return concat(parts)
end

-- The plan of one statement for one request: nil (nothing to do), a
-- refusal, or { ks, table, prot, write, read, key_bytes }.  raw: its
-- bound values as bytes.
local function statement_plan(self, ast, ks, prepare, raw)
    local k = ast.kind
    if ks == nil or ast.table == nil or (k ~= "select" and k ~= "insert"
            and k ~= "update" and k ~= "delete") then
        return nil
    end
    local sp = analysed(self, ast, ks, prepare)
    if sp == nil or sp.refuse or prepare then
        return sp
    end
    local kb = key_bytes_of(sp, raw)
    if sp.write and kb == nil then
        return refusal(self, "writing the encrypted columns of %s.%s needs "
                       .. "its whole partition key by equality (%s)", ks,
                       ast.table, concat(sp.partition or {}, ", "))
    end
    if sp.read and not sp.read.all_pk and kb == nil then
        return refusal(self, "reading the encrypted columns of %s.%s needs "
                       .. "the partition key: select its column(s) (%s) or "
                       .. "restrict them by equality in WHERE", ks,
                       ast.table, concat(sp.read.pk, ", "))
    end
    return { ks = sp.ks, table = sp.table, prot = sp.prot, write = sp.write,
             read = sp.read, key_bytes = kb }
end

-- Does text (a statement shotover could not parse) name a table with
-- protected columns?  Then it is refused rather than risk a plaintext
-- write.
local function mentions_protected(self, text)
    text = lower(text or "")
    for t in pairs(self.table_names) do
        if find(text, t, 1, true) then
            return true
        end
    end
    return false
end

-- Seal value v of column col under plan p.  When the key manager fails,
-- raises { fail = message }: the request gets a SERVER_ERROR.
local function seal(self, p, col, v, chain)
    local env, err = self.ring:seal(v, identity(p.ks, p.table, col,
                                                p.key_bytes), chain)
    if not env then
        error({ fail = fmt("shotover: %s: cannot encrypt %s.%s.%s: %s",
                           self.name, p.ks, p.table, col, tostring(err)) })
    end
    return env
end

-- Splice sealed literals into text: the new text, or nil, err.
local function seal_literals(self, p, text, chain)
    local lits = p.write.lits
    if #lits == 0 then
        return text
    end
    for _, l in ipairs(lits) do
        local env, err = seal(self, p, l.column, l.value, chain)
        if not env then
            return nil, err
        end
        text = sub(text, 1, l.at - 1) .. "0x" .. hex(env)
               .. sub(text, l.at + l.len)
    end
    return text
end

-- Seal the bound values of p.write in vals (bytes by position and name):
-- { [k] = envelope }, or nil, err (a refusal's message).
local function seal_bound(self, p, vals, chain)
    local out = {}
    local list = p.write.bound
    for i = 1, #list do
        local k, col = list[i][1], list[i][2]
        local v = vals and vals[k]
        if v ~= nil and v ~= "unset" then
            local env, err = seal(self, p, col, v, chain)
            if not env then
                return nil, err
            end
            out[#out + 1] = k
            out[#out + 1] = env
        end
    end
    return out
end

local function uses_names(m)
    local ok, flags = pcall(m.query_flags, m)
    return ok and flags and band(flags, 0x40) ~= 0
end

local function pu16(p, i)
    return p[i] * 256 + p[i + 1]
end

local function ps32(p, i)
    return bit.tobit(bit.bor(bit.lshift(p[i], 24), bit.lshift(p[i + 1], 16),
                             bit.lshift(p[i + 2], 8), p[i + 3]))
end

-- One pass over a QUERY's or EXECUTE's body (no custom payload, values
-- by position): vals[k] = the bytes of bound value k (nil for null,
-- "unset"), at[k] = the 0-based offset of value k's length (at[count +
-- 1]: the end of the values), and the body (p, n).  nil when the plain
-- case does not apply, and "names" when the values are named.
local function value_offsets(m)
    if band(m.data[1], FLAG_PAYLOAD) ~= 0 then
        return nil
    end
    local p, n = m:body_view()
    local v5 = band(m.data[0], 0x7f) >= 5
    local i
    if m.rtype == OP_EXECUTE then
        if n < 2 then
            return nil
        end
        i = 2 + pu16(p, 0)
        if v5 then
            if i + 2 > n then
                return nil
            end
            i = i + 2 + pu16(p, i)              -- result metadata id
        end
    else
        if n < 4 then
            return nil
        end
        local ql = ps32(p, 0)
        if ql < 0 then
            return nil
        end
        i = 4 + ql
    end
    i = i + 2                                   -- consistency
    local flags
    if v5 then
        if i + 4 > n then
            return nil
        end
        flags, i = ps32(p, i), i + 4
    else
        if i + 1 > n then
            return nil
        end
        flags, i = p[i], i + 1
    end
    if band(flags, 0x40) ~= 0 then
        return nil, "names"
    end
    local vals, at = {}, {}
    if band(flags, 0x01) == 0 then
        at[1] = i
        return vals, at, p, n
    end
    if i + 2 > n then
        return nil
    end
    local count = pu16(p, i)
    i = i + 2
    for k = 1, count do
        if i + 4 > n then
            return nil
        end
        local len = ps32(p, i)
        at[k] = i
        i = i + 4
        if len >= 0 then
            if i + len > n then
                return nil
            end
            vals[k] = ffi_string(p + i, len)
            i = i + len
        elseif len == -2 then
            vals[k] = "unset"
        end
    end
    at[count + 1] = i
    return vals, at, p, n
end

-- The bound values of m as bytes by position (and by name), or nil.
local function bound_values(m)
    local ok, vals = pcall(value_offsets, m)
    if ok and vals then
        return vals
    end
    ok, vals = pcall(m.values, m, true)
    return ok and vals or nil
end

-- Rewrite a QUERY or EXECUTE for plan p (vals: its bound values as
-- bytes): nil, or an error message.
local function rewrite_single(self, m, p, vals, chain)
    if m.rtype == OP_QUERY and #p.write.lits > 0 then
        local text, err = seal_literals(self, p, m:query(), chain)
        if not text then
            return err
        end
        m:set_query(text)
    end
    if #p.write.bound > 0 then
        -- (again: the text may have changed above)
        local ok, cur, at, bp, bn = pcall(value_offsets, m)
        if not ok then
            cur = nil
        end
        if at == "names" or (cur == nil and uses_names(m)) then
            return fmt("shotover: %s: named bound values are not supported "
                       .. "for encrypted columns", self.name)
        end
        vals = cur or vals
        if vals == nil then
            return fmt("shotover: %s: the bound values do not read",
                       self.name)
        end
        local sealed, err = seal_bound(self, p, vals, chain)
        if not sealed then
            return err
        end
        if cur == nil then
            -- a custom payload: value by value
            for i = 1, #sealed, 2 do
                m:set_value(sealed[i], sealed[i + 1])
            end
            return nil
        end
        -- the body rebuilt once, the sealed values in place (in order)
        local parts, pos = {}, 0
        for i = 1, #sealed, 2 do
            local k, env = sealed[i], sealed[i + 1]
            parts[#parts + 1] = ffi_string(bp + pos, at[k] - pos)
            parts[#parts + 1] = be32(#env)
            parts[#parts + 1] = env
            pos = at[k + 1]
        end
        parts[#parts + 1] = ffi_string(bp + pos, bn - pos)
        m:set_body(concat(parts))
    end
    return nil
end

-- A BATCH's body rebuilt with children's new query texts (texts[j]) and
-- bound values (vals[j][k]).  Raises when the body does not read.
local function rebuild_batch(body, texts, vals)
    local out = { sub(body, 1, 3) }
    local count = u16(body, 2)
    local i = 4                                   -- 1-based
    for j = 1, count do
        local kind = byte(body, i)
        local from = i
        i = i + 1
        if kind == 0 then
            local ql = s32(body, i)
            if texts[j] then
                out[#out + 1] = "\0" .. be32(#texts[j]) .. texts[j]
            else
                out[#out + 1] = sub(body, from, i + 3 + ql)
            end
            i = i + 4 + ql
        else
            local idl = u16(body, i)
            out[#out + 1] = sub(body, from, i + 1 + idl)
            i = i + 2 + idl
        end
        local nv = u16(body, i)
        out[#out + 1] = sub(body, i, i + 1)
        i = i + 2
        local vj = vals[j]
        for k = 1, nv do
            local len = s32(body, i)
            local stop = i + 4 + (len > 0 and len or 0)
            if vj and vj[k] then
                out[#out + 1] = be32(#vj[k]) .. vj[k]
            else
                out[#out + 1] = sub(body, i, stop - 1)
            end
            i = stop
        end
    end
    if i - 1 > #body then
        error("batch body cut short", 0)
    end
    out[#out + 1] = sub(body, i)
    return concat(out)
end

-- Plan and rewrite a BATCH: nil, or an error message (a refusal's).
local function batch_request(self, m, chain)
    local ok, children = pcall(m.batch_children, m, true)
    if not ok or not children then
        return nil
    end
    local conn = chain.conn
    local texts, vals, changed = {}, {}, false
    for j, ch in ipairs(children) do
        local ast = ch.query and parser.cached(ch.query)
        if ch.query == nil then
            -- the driver prepares it again through shotover and retries
            return fmt("shotover: %s: a BATCH child not prepared here "
                       .. "(prepare it through shotover)", self.name), ch.id
        elseif ast == nil then
            if mentions_protected(self, ch.query) then
                return fmt("shotover: %s: a BATCH child that shotover cannot "
                           .. "parse names a table with encrypted columns",
                           self.name)
            end
        else
            local ks = ast.keyspace or (ch.id and ch.keyspace)
                       or conn.keyspace
            local p = statement_plan(self, ast, ks, false, ch.values)
            if p and p.refuse then
                return p.refuse
            end
            if p and p.write then
                if ch.id == nil and #p.write.lits > 0 then
                    local text, err = seal_literals(self, p, ch.query, chain)
                    if not text then
                        return err
                    end
                    texts[j] = text
                    changed = true
                end
                if #p.write.bound > 0 then
                    local sealed, err = seal_bound(self, p, ch.values, chain)
                    if not sealed then
                        return err
                    end
                    local by = {}
                    for i = 1, #sealed, 2 do
                        by[sealed[i]] = sealed[i + 1]
                    end
                    vals[j] = by
                    changed = true
                end
            end
        end
    end
    if changed then
        if band(m.data[1], FLAG_PAYLOAD) ~= 0 then
            return fmt("shotover: %s: a BATCH with a custom payload cannot "
                       .. "carry encrypted values", self.name)
        end
        local built, body = pcall(rebuild_batch, m:body(), texts, vals)
        if not built then
            return fmt("shotover: %s: the BATCH does not read: %s",
                       self.name, tostring(body))
        end
        m:set_body(body)
    end
    return nil
end

-- Plan request m: nil, a refusal ({ refuse = msg }, or { unprepared =
-- msg }), or a read plan to apply to its reply.  Writes are sealed here.
function methods.request(self, m, chain, ast, ks)
    local op = m.rtype
    if op == OP_BATCH then
        local err, id = batch_request(self, m, chain)
        if id then
            return { unprepared = err, id = id }
        end
        return err and { refuse = err } or nil
    end
    if op ~= OP_QUERY and op ~= OP_EXECUTE and op ~= OP_PREPARE then
        return nil
    end
    if ast == nil then
        ast, ks = m:statement(chain.conn)
    end
    if ast == nil then
        if op == OP_EXECUTE then
            -- its statement is unknown: it may write a protected column
            return { unprepared = fmt("shotover: %s: prepare this statement "
                                      .. "through shotover", self.name) }
        end
        local ok, text = pcall(m.query, m)
        if ok and mentions_protected(self, text) then
            return refusal(self, "a statement shotover cannot parse names "
                           .. "a table with encrypted columns (%s)",
                           tostring(ks))
        end
        return nil
    end
    local per_ks = ks and self.by_keyspace[ks]
    if per_ks == nil or ast.table == nil or per_ks[ast.table] == nil then
        return nil
    end
    local prepare = op == OP_PREPARE
    local vals = not prepare and bound_values(m) or nil
    local p = statement_plan(self, ast, ks, prepare, vals)
    if p == nil or p.refuse or prepare then
        return p
    end
    if p.write then
        local err = rewrite_single(self, m, p, vals, chain)
        if err then
            return { refuse = err }
        end
    end
    return p.read and p or nil
end

-- The request's indexes whose statements name a table with protected
-- columns (their schemas are loaded first), and the statement and
-- keyspace of each (by index) when it has one.
local function touching(self, batch, chain)
    local only, asts, kss
    local conn = chain.conn
    local by_keyspace = self.by_keyspace
    for i = 1, batch.n do
        local m = batch[i]
        local op = m.rtype
        local hit = op == OP_BATCH
        -- (PREPAREs are checked too: a driver learns of a refusal early)
        if op == OP_QUERY or op == OP_EXECUTE or op == OP_PREPARE then
            local ast, ks = m:statement(conn)
            if ast == nil then
                -- an EXECUTE of a statement not known here (it may write a
                -- protected column), or text shotover cannot parse
                local ok, text = pcall(m.query, m)
                hit = op == OP_EXECUTE
                      or (ok and mentions_protected(self, text))
            else
                local per_ks = ks and by_keyspace[ks]
                hit = per_ks ~= nil and ast.table ~= nil
                      and per_ks[ast.table] ~= nil
                if hit then
                    asts, kss = asts or {}, kss or {}
                    asts[i], kss[i] = ast, ks
                end
            end
        end
        if hit then
            only = only or {}
            only[#only + 1] = i
        end
    end
    return only, asts, kss
end

-- Open the protected cells of reply r (a RESULT Rows answering req under
-- read plan p): nil, or an error message.
local function open_rows(self, p, req, r, chain)
    local ok, t = pcall(rows.read, r, req)
    if not ok then
        return "the result does not read: " .. tostring(t)
    end
    if t == nil then
        return nil                      -- not rows (an error, say)
    end
    local rp = p.read
    local dec, pkidx = {}, {}
    local where = {}
    for c, col in ipairs(t.columns) do
        if col.keyspace == p.ks and col.table == p.table then
            local src = rp.names[col.name]
            if src and p.prot[src] then
                dec[#dec + 1] = c
                where[c] = src
            end
            for j, pk in ipairs(rp.pk) do
                if src == pk then
                    pkidx[j] = c
                end
            end
        end
    end
    if #dec == 0 then
        return nil
    end
    local from_row = true                 -- every key column in the row?
    for j = 1, #rp.pk do
        from_row = from_row and pkidx[j] ~= nil
    end
    if not from_row and p.key_bytes == nil then
        return fmt("the rows of %s.%s do not carry the partition key (%s)",
                   p.ks, p.table, concat(rp.pk, ", "))
    end
    local parts = {}
    for r_i = 1, #t do
        local row = t[r_i]
        local key = p.key_bytes
        if from_row then
            for j = 1, #rp.pk do
                local b = row[pkidx[j]] or ""
                parts[j] = be32(#b) .. b
            end
            key = concat(parts, "", 1, #rp.pk)
        end
        for _, c in ipairs(dec) do
            local cell = row[c]
            if cell ~= nil then
                local pt, err = self.ring:open(cell, identity(p.ks, p.table,
                                                              where[c], key),
                                               chain)
                if pt == nil then
                    return fmt("a value of %s.%s.%s: %s", p.ks, p.table,
                               where[c], err)
                end
                row[c] = pt
            end
        end
    end
    rows.write(r, t, t)
    return nil
end

local CONSISTENCY_ID = {}
for id, name in pairs(require("shotover.cql.bound").CONSISTENCY) do
    CONSISTENCY_ID[name] = id
end

-- A READ_FAILURE answering req: the read failed for a reason retrying on
-- another node would not change (drivers raise it, where they retry a
-- SERVER_ERROR on every host).  Its fields: consistency, 0 received of 1
-- required, no failing replicas (v4: a count, v5: an empty reason map,
-- both an [int] 0), data present.
local function read_failure(self, req, err)
    local ok, cl = pcall(req.consistency, req)
    cl = ok and CONSISTENCY_ID[cl] or 1
    return reply.error(req, "READ_FAILURE", fmt("shotover: %s: %s",
                       self.name, err),
                       reply.be16(cl) .. be32(0) .. be32(1) .. be32(0)
                       .. "\1")
end

function methods.transform(self, batch, chain)
    local n = batch.n
    if n == 0 then
        return chain:next(batch)
    end
    local only, asts, kss = touching(self, batch, chain)
    if only == nil then
        return chain:next(batch)
    end
    if chain.c ~= nil then
        cql_schema.prepare(chain, batch, only)
    end
    local refused, plans
    for _, i in ipairs(only) do
        local m = batch[i]
        local ok, p = pcall(self.request, self, m, chain, asts and asts[i],
                            kss and kss[i])
        if not ok then
            -- the key manager failed, or shotover did: not the client's
            -- doing, and nothing went to the node
            local msg = type(p) == "table" and p.fail
                        or fmt("shotover: %s: %s", self.name, tostring(p))
            log.warn("%s", msg)
            refused = refused or {}
            refused[i] = reply.error(m, "SERVER_ERROR", msg)
            p = nil
        end
        if p and p.refuse then
            refused = refused or {}
            refused[i] = reply.error(m, "INVALID", p.refuse)
        elseif p and p.unprepared then
            refused = refused or {}
            refused[i] = p.id and reply.error(m, "UNPREPARED", p.unprepared,
                                              reply.be16(#p.id) .. p.id)
                         or reply.unprepared(m, p.unprepared)
        elseif p and m.rtype ~= OP_PREPARE then
            plans = plans or {}
            plans[i] = p
        end
    end
    local resp
    if refused then
        resp = chain:next_except(batch, refused)
    else
        resp = chain:next(batch)
    end
    cql_schema.observe(resp, only)
    if plans == nil then
        return resp
    end
    for i, p in pairs(plans) do
        local r = resp[i]
        if r ~= nil and r.rtype == OP_RESULT then
            local err = open_rows(self, p, batch[i], r, chain)
            if err then
                log.warn("%s: %s", self.name, err)
                resp:set(i, read_failure(self, batch[i], err))
            end
        end
    end
    return resp
end

return _M
