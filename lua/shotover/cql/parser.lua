-- CQL statement parser: CQL text -> a small AST with what the transforms
-- need (routing, filtering, caching, CDC, encryption), not full CQL
-- semantics.  The grammar follows Cassandra 5.0's Parser.g/Lexer.g as an
-- LPeg grammar compiled once when this module loads: a parse is one
-- lpeg.match plus the tables of the AST.
--
--   local ast, err, offset = parser.parse("SELECT * FROM ks.t WHERE k = ?")
--   ast.kind == "select", ast.class == "read", ast.keyspace == "ks",
--   ast.where[1] == { column = "k", op = "=", value = { marker = 1 } }
--
-- Errors: nil, "syntax error at offset N (line L, column C): expected ..,
-- found ..", N (a 0-based byte offset).  parse() never raises on input.
--
-- Every statement: kind, class ("read" select/describe; "write" insert/
-- update/delete/batch/truncate; "use"; "schema_change" create/alter/drop
-- of keyspace/table/index/type/function/aggregate/view/trigger; "dcl"
-- roles/users/grants/lists/identities; "other"), keyspace (nil when
-- unqualified), table or name.  Unquoted identifiers are lower-cased,
-- "quoted" ones keep case ("" is a ").  Text starting with a word that
-- begins no known statement, and that lexes, is { kind = "other",
-- keywords = { up to 3 leading words, upper-cased } }.
--
-- Values: literals { type = "string"|"integer"|"float"|"boolean"|"null"|
--   "uuid"|"blob"|"duration", value = <Lua value: integers only when
--   exact, blobs as bytes, uuids lower-cased>, text = <source>, at =
--   <its 1-based offset in the statement's text> };
--   { type = "list"|"set"|"tuple", items }, { type = "map", entries =
--   { { key, value } } }, { type = "udt", fields = { { name, value } } }
--   ({} is an empty set); { type = "function", keyspace, name, args };
--   { type = "cast"|"type_hint", value, cast_type }; { type = "operation",
--   op, left, right }; { type = "negation", value }; all with text.
--   Bind markers: { marker = N } or { marker = N, name = "x" }, N
--   counting the markers of the whole statement (a BATCH included) in
--   order of appearance from 1.
-- Relations (where, if_conditions): { column, op, value } or, for IN
--   lists and BETWEEN, values = { ... } (IN ? gives value = marker); op
--   = < <= > >= != IN, NOT IN, CONTAINS [KEY], NOT CONTAINS [KEY], LIKE,
--   IS NOT, BETWEEN, EXPR; m['k'] adds key, u.f adds field; (a, b) gives
--   columns = { "a", "b" }; token(a) adds token = true and columns;
--   expr(idx, '..') gives op = "EXPR", index, keyspace.
-- select: columns (names, or the selector text; { "*" }), selectors
--   ({ text, column, func, alias }), distinct, json, where, group_by,
--   order_by ({ column, order, ann }), per_partition_limit, limit,
--   allow_filtering.  insert: columns, values, if_not_exists, using
--   ({ ttl, timestamp }), json, json_value, json_default.  update:
--   using, assignments ({ column, op = "="|"+"|"-"|"prepend", value,
--   key, field, text }), where, if_exists, if_conditions.  delete:
--   columns, targets ({ column, key, field }), using, where, if_exists,
--   if_conditions.  batch: batch_type ("logged"|"unlogged"|"counter"),
--   using, statements.  DDL/DCL: see the grammar's field names below.
--
-- Terms nest up to about 30 levels (LPeg's capture nesting); deeper
-- input is an error.
local lpeg = require "lpeg"

local type = type
local tonumber = tonumber
local tostring = tostring
local ipairs = ipairs
local pcall = pcall
local next = next
local concat = table.concat
local sort = table.sort
local lower = string.lower
local upper = string.upper
local sub = string.sub
local find = string.find
local byte = string.byte
local char = string.char
local gsub = string.gsub
local fmt = string.format
local huge = math.huge

local P, R, S, V = lpeg.P, lpeg.R, lpeg.S, lpeg.V
local C, Cc, Cg, Ct, Cp, Cs = lpeg.C, lpeg.Cc, lpeg.Cg, lpeg.Ct, lpeg.Cp,
                              lpeg.Cs
local Carg, Cmt, Cf = lpeg.Carg, lpeg.Cmt, lpeg.Cf
local match = lpeg.match

local _M = { _VERSION = "0.1.0" }

-- Cassandra's reserved keywords (Lexer.g tokens that are not in Parser.g's
-- unreserved_keyword), plus the BOOLEAN literals: never identifiers
-- unless double-quoted.
local RESERVED_WORDS = {
    "add", "allow", "alter", "and", "apply", "asc", "authorize", "batch",
    "begin", "by", "columnfamily", "create", "delete", "desc", "describe",
    "drop", "entries", "execute", "from", "full", "grant", "if", "in",
    "index", "infinity", "insert", "into", "is", "keyspace", "limit",
    "materialized", "modify", "nan", "norecursive", "not", "null", "of",
    "on", "or", "order", "primary", "rename", "revoke", "schema", "select",
    "set", "table", "to", "token", "truncate", "unlogged", "update", "use",
    "using", "view", "where", "with", "true", "false",
}

-- the first keywords of the statements this grammar knows: text starting
-- with one of them is parsed or rejected, never returned as "other"
local STATEMENT_WORDS = {
    select = true, insert = true, update = true, delete = true,
    begin = true, use = true, truncate = true, create = true, alter = true,
    drop = true, grant = true, revoke = true, list = true, describe = true,
    desc = true, add = true,
}

local SCHEMA, DCL = "schema_change", "dcl"
local CLASS = {
    select = "read", describe = "read",
    insert = "write", update = "write", delete = "write", batch = "write",
    truncate = "write",
    use = "use",
    create_keyspace = SCHEMA, create_table = SCHEMA, create_index = SCHEMA,
    create_type = SCHEMA, create_function = SCHEMA,
    create_aggregate = SCHEMA, create_materialized_view = SCHEMA,
    create_trigger = SCHEMA,
    alter_keyspace = SCHEMA, alter_table = SCHEMA, alter_type = SCHEMA,
    alter_materialized_view = SCHEMA,
    drop_keyspace = SCHEMA, drop_table = SCHEMA, drop_index = SCHEMA,
    drop_type = SCHEMA, drop_function = SCHEMA, drop_aggregate = SCHEMA,
    drop_materialized_view = SCHEMA, drop_trigger = SCHEMA,
    create_role = DCL, create_user = DCL, alter_role = DCL,
    alter_user = DCL, drop_role = DCL, drop_user = DCL, grant = DCL,
    revoke = DCL, grant_role = DCL, revoke_role = DCL,
    list_permissions = DCL, list_roles = DCL, list_users = DCL,
    list_superusers = DCL, add_identity = DCL, drop_identity = DCL,
    other = "other",
}

---------------------------------------------------------------- lexemes

local letter = R("az", "AZ")
local digit = R"09"
local hex = R("09", "af", "AF")
local idchar = letter + digit + P"_"
local word = letter * idchar^0
local eol = S"\r\n"

-- whitespace and comments, skipped before every token
local SKIP = (S" \t\r\n"^1
              + (P"--" + P"//") * (1 - eol)^0
              + P"/*" * (1 - P"*/")^0 * P"*/")^0

-- a case-insensitive literal
local function ci(w)
    local p = P(true)
    for i = 1, #w do
        local c = sub(w, i, i)
        local l, u = lower(c), upper(c)
        p = p * (l == u and P(c) or S(l .. u))
    end
    return p
end

local function ci_word(w)
    return ci(w) * -idchar
end

local function rep(p, n)
    local r = P(true)
    for _ = 1, n do
        r = r * p
    end
    return r
end

-- the reserved words as a case-insensitive trie: one character test per
-- level instead of one alternative per word
local function trie(words, i)
    local groups, order, ends = {}, {}, false
    for _, w in ipairs(words) do
        if #w < i then
            ends = true
        else
            local c = sub(w, i, i)
            if not groups[c] then
                groups[c] = {}
                order[#order + 1] = c
            end
            groups[c][#groups[c] + 1] = w
        end
    end
    sort(order)
    local p = P(false)
    for _, c in ipairs(order) do
        p = p + S(lower(c) .. upper(c)) * trie(groups[c], i + 1)
    end
    if ends then
        p = p + -idchar
    end
    return p
end

local reserved = trie(RESERVED_WORDS, 1)

local sq_string = P"'" * (P"''" + (1 - P"'"))^0 * P"'"
local dollar_string = P"$$" * (1 - P"$$")^0 * P"$$"
local quoted_name_raw = P'"' * (P'""' + (1 - P'"'))^1 * P'"'
local any_quoted_raw = P'"' * (P'""' + (1 - P'"'))^0 * P'"'
local quoted_name = P'"' * Cs((P'""' / '"' + (1 - P'"'))^1) * P'"'
-- unquoted identifiers fold to lower case (already lower: no call)
local unquoted = -reserved * (C(R"az" * (R"az" + digit + P"_")^0) * -idchar
                              + C(word) / lower)
local bare_word = C(-reserved * word)            -- case kept (user names)

local digits = digit^1
local int_raw = P"-"^-1 * digits
local integer = int_raw * -idchar * -(P"." * -P".")   -- "1." is a float
local exponent = S"eE" * S"+-"^-1 * digits
local float = int_raw * (P"." * -P"." * digit^0 * exponent^-1 + exponent)
              * -idchar
local special = P"-"^-1 * (ci"nan" + ci"infinity") * -idchar
local boolean = (ci"true" + ci"false") * -idchar
local uuid = rep(hex, 8) * "-" * rep(hex, 4) * "-" * rep(hex, 4) * "-"
             * rep(hex, 4) * "-" * rep(hex, 12) * -idchar
local hexnum = P"0" * S"xX" * hex^0 * -idchar
local unit = ci"mo" + ci"ms" + ci"us" + P"\194\181" * S"sS" + ci"ns"
             + S"yYwWdDhHmMsS"
local iso_period = P"P" * (digits * "Y" * (digits * "M")^-1
                           * (digits * "D")^-1
                           + digits * "M" * (digits * "D")^-1
                           + digits * "D")
local iso_time = P"T" * (digits * "H" * (digits * "M")^-1 * (digits * "S")^-1
                         + digits * "M" * (digits * "S")^-1
                         + digits * "S")
local iso_alt = P"P" * rep(digit, 4) * "-" * rep(digit, 2) * "-"
                * rep(digit, 2) * "T" * rep(digit, 2) * ":" * rep(digit, 2)
                * ":" * rep(digit, 2)
local duration = P"-"^-1 * (iso_alt + P"P" * digits * "W" + P"P" * iso_time
                            + iso_period * iso_time^-1
                            + (digits * unit)^1) * -idchar

------------------------------------------------------- AST constructors

local function hex_byte(h)
    return char(tonumber(h, 16))
end

local function lit_string(t)
    local v = sub(t, 2, -2)
    if find(v, "''", 1, true) then
        v = (gsub(v, "''", "'"))
    end
    return { type = "string", value = v, text = t }
end

local function lit_dollar(t)
    return { type = "string", value = sub(t, 3, -3), text = t }
end

local function lit_integer(t)
    local n = tonumber(t)
    if n and (n >= 2^53 or n <= -2^53) then
        n = nil                        -- not exact as a double: text only
    end
    return { type = "integer", value = n, text = t }
end

local function lit_float(t)
    return { type = "float", value = tonumber(t), text = t }
end

local function lit_special(t)
    local l = lower(t)
    local v
    if l == "infinity" then
        v = huge
    elseif l == "-infinity" then
        v = -huge
    else
        v = 0 / 0
    end
    return { type = "float", value = v, text = t }
end

local function lit_boolean(t)
    return { type = "boolean", value = lower(t) == "true", text = t }
end

local function lit_uuid(t)
    return { type = "uuid", value = lower(t), text = t }
end

local function lit_blob(t)
    local h = sub(t, 3)
    local v
    if #h % 2 == 0 then
        v = (gsub(h, "%x%x", hex_byte))
    end
    return { type = "blob", value = v, text = t }
end

local function lit_duration(t)
    return { type = "duration", value = t, text = t }
end

local function lit_null(t)
    return { type = "null", text = t }
end

-- a constant's 1-based offset in the text (`at`): a transform that
-- rewrites one literal (protect) splices the text there
local function located_at(pos, node)
    node.at = pos
    return node
end

local function node_value(n)
    return n.value
end

local function to_bool(t)
    return lower(t) == "true"
end

-- Bind markers are registered in the per-parse state (lpeg.Carg(1)) and
-- numbered by position once the match succeeded.
local function new_marker(pos, st)
    local m = { pos = pos }
    st[#st + 1] = m
    return m
end

local function new_named_marker(pos, name, st)
    local m = { pos = pos, name = name }
    st[#st + 1] = m
    return m
end

local function text_of(n)
    if n.text then
        return n.text
    end
    if n.marker then
        return n.name and ":" .. n.name or "?"
    end
    return n.name or ""
end

local function mk_list(text, items)
    return { type = "list", items = items, text = text }
end

local function mk_set(text, items)
    return { type = "set", items = items, text = text }
end

local function mk_tuple(text, items)
    return { type = "tuple", items = items, text = text }
end

local function mk_map(text, pairs_)
    local entries = {}
    for i = 1, #pairs_ do
        entries[i] = { key = pairs_[i][1], value = pairs_[i][2] }
    end
    return { type = "map", entries = entries, text = text }
end

local function mk_udt(text, pairs_)
    local fields = {}
    for i = 1, #pairs_ do
        fields[i] = { name = pairs_[i][1], value = pairs_[i][2] }
    end
    return { type = "udt", fields = fields, text = text }
end

local function mk_function(text, ks, name, args)
    return { type = "function", keyspace = ks or nil, name = name,
             args = args, text = text }
end

local function mk_count_star(text)
    return { type = "function", name = "count",
             args = { { type = "star", text = "*" } }, text = text }
end

local function mk_cast(text, value, ty)
    return { type = "cast", value = value, cast_type = ty, text = text }
end

local function mk_hint(text, ty, value)
    return { type = "type_hint", value = value, cast_type = ty, text = text }
end

local function mk_negation(text, value)
    return { type = "negation", value = value, text = text }
end

local function mk_column(name)
    return { type = "column", name = name }
end

-- folds (lpeg.Cf: called only when an operator or modifier is there);
-- their text is rebuilt from the operands'
local function fold_op(left, op, right)
    return { type = "operation", op = op, left = left, right = right,
             text = text_of(left) .. " " .. op .. " " .. text_of(right) }
end

-- selector modifiers: .field, [key], [from..to]
local function fold_mod(node, m)
    m.value = node
    local t = text_of(node)
    if m.type == "field" then
        m.text = t .. "." .. m.field
    elseif m.type == "element" then
        m.text = t .. "[" .. text_of(m.key) .. "]"
    else
        m.text = t .. "[" .. (m.from and text_of(m.from) or "") .. ".."
                 .. (m.to and text_of(m.to) or "") .. "]"
    end
    return m
end

local function mk_selector(text, node, alias)
    local s = { text = text, alias = alias }
    if node.type == "column" then
        s.column = node.name
    elseif node.type == "function" then
        s.func = node.name
    end
    return s
end

local function mk_column_selector(text, name, alias)
    return { text = text, column = name, alias = alias }
end

local function group_item(text, node)
    return node.type == "column" and node.name or text
end

local function mk_type(name, args)
    if args then
        return name .. "<" .. concat(args, ", ") .. ">"
    end
    return name
end

local function join_dot(a, b)
    return a .. "." .. b
end

local function quoted_type(raw)
    return raw
end

-- a property value as a plain Lua value: the decoded literal, else text
local function plain(n)
    if type(n) ~= "table" then
        return n
    end
    if n.value ~= nil then
        return n.value
    end
    return text_of(n)
end

local function map_to_table(pairs_)
    local t = {}
    for i = 1, #pairs_ do
        t[plain(pairs_[i][1])] = plain(pairs_[i][2])
    end
    return t
end

local function pairs_to_map(pairs_)
    local t = {}
    for i = 1, #pairs_ do
        t[pairs_[i][1]] = pairs_[i][2]
    end
    return t
end

local function fail_at(st, pos, msg)
    if not st.err_pos or pos < st.err_pos then
        st.err_pos, st.err = pos, msg
    end
end

local function finish_selectors(node)
    local sels = node.selectors
    if sels then
        local cols = {}
        for i = 1, #sels do
            cols[i] = sels[i].column or sels[i].text
        end
        node.columns = cols
    end
    return node
end

local function finish_insert(node, st)
    local pos = node._vpos
    node._vpos = nil
    if node.columns and #node.columns ~= #node.values then
        fail_at(st, pos, fmt("INSERT has %d column(s) but %d value(s)",
                             #node.columns, #node.values))
    end
    return node
end

local function mk_assignment(pos, text, column, a, st)
    a.column = column
    a.text = text
    if a._other then
        if a._other ~= column then
            fail_at(st, pos, a.op == "prepend"
                and fmt("only expressions of the form %s = <value> + %s "
                        .. "are supported", column, column)
                or fmt("only expressions of the form %s = %s %s <value> "
                       .. "are supported", column, column, a.op))
        end
        a._other = nil
    end
    return a
end

local function finish_delete(node)
    local targets = node.targets
    if targets then
        local cols = {}
        for i = 1, #targets do
            cols[i] = targets[i].column
        end
        node.columns = cols
    end
    return node
end

-- table items/properties of CREATE TABLE and CREATE MATERIALIZED VIEW
local function apply_props(node)
    local props = node._props
    node._props = nil
    if not props then
        return
    end
    for _, p in ipairs(props) do
        if p.compact_storage then
            node.compact_storage = true
        elseif p.clustering_order then
            node.clustering_order = p.clustering_order
        elseif p.indexes then
            node.with_indexes = true
        else
            node.options = node.options or {}
            node.options[p.property[1]] = p.property[2]
        end
    end
end

local function finish_create_table(node)
    local items = node._items
    node._items = nil
    if items then
        local cols, defs = {}, {}
        for _, it in ipairs(items) do
            if it.primary_key then
                node.partition_key = it.partition
                node.clustering_key = it.clustering
            else
                cols[#cols + 1] = it.name
                defs[#defs + 1] = it
                if it.primary then
                    it.primary = nil
                    node.partition_key = { it.name }
                    node.clustering_key = {}
                end
            end
        end
        node.columns, node.definitions = cols, defs
    end
    apply_props(node)
    return node
end

local function finish_view(node)
    finish_selectors(node)
    apply_props(node)
    return node
end

local function finish_user(node)
    local opts = {}
    if node._pw then
        opts[node._pw[1]] = node._pw[2]
        node._pw = nil
    end
    if node._su ~= nil then
        opts.superuser = node._su
        node._su = nil
    end
    if next(opts) then
        node.options = opts
    end
    return node
end

local function finish_alter_table(node)
    local defs = node._defs
    if defs then
        node._defs = nil
        node.definitions = defs
        local cols = {}
        for i = 1, #defs do
            cols[i] = defs[i].name
        end
        node.columns = cols
    end
    return node
end

-- grants/revokes/lists name the resource's keyspace and table up front
local function finish_resource(node)
    local res = node.resource
    if res then
        node.keyspace = res.keyspace
        node.table = res.table
    end
    return node
end

---------------------------------------------------------------- grammar

-- Farthest-failure tracking for error messages: only the diagnostic
-- grammar (track = true) records which tokens it tried where.
local function expect(st, i, what)
    local far = st.far
    if i > far then
        st.far, st.n = i, 1
        st.expected[1] = what
    elseif i == far then
        local e = st.expected
        for k = 1, st.n do
            if e[k] == what then
                return true
            end
        end
        st.n = st.n + 1
        e[st.n] = what
    end
    return true
end

local function build(track)
    local mark
    if track then
        mark = function(what)
            return Cmt(Carg(2), function(_, i, st)
                return expect(st, i, what)
            end)
        end
    else
        local empty = P(true)
        mark = function()
            return empty
        end
    end

    local kws, syms = {}, {}
    local function K(w)
        local p = kws[w]
        if not p then
            p = SKIP * mark(upper(w)) * ci_word(w)
            kws[w] = p
        end
        return p
    end
    local function sym(s)
        local p = syms[s]
        if not p then
            p = SKIP * mark("'" .. s .. "'") * P(s)
            syms[s] = p
        end
        return p
    end
    local function F(name, p)
        return Cg(p, name)
    end
    local function flag(name, p)
        return Cg(p * Cc(true), name)
    end
    local function kind(k)
        return Cg(Cc(k), "kind")
    end
    local function list(p)
        return Ct(p * (sym"," * p)^0)
    end
    local function opt_list(p)
        return Ct((p * (sym"," * p)^0)^-1)
    end
    -- the source text of p (from its first token) and p's captures
    local function raw(p)
        return SKIP * C(p)
    end

    local ident, cident, term = V"ident", V"cident", V"term"
    local fname, type_ = V"fname", V"type"
    local where, conditions = V"where", V"conditions"
    local properties, marker = V"properties", V"marker"
    local string_val = V"string_lit" / node_value
    local bool_val = SKIP * mark("boolean") * (C(boolean) / to_bool)
    local if_not_exists = flag("if_not_exists", K"if" * K"not" * K"exists")
    local if_exists = flag("if_exists", K"if" * K"exists")
    local TABLE = K"table" + K"columnfamily"
    local KEYSPACE = K"keyspace" + K"schema"
    local addsub = SKIP * mark("operator") * C(S"+-")
    local muldiv = SKIP * mark("operator") * C(S"*/%")
    local relop = SKIP * mark("operator")
                  * C(P"<=" + P">=" + P"!=" + P"=" + P"<" + P">")
    local asc_desc = K"asc" * Cc"asc" + K"desc" * Cc"desc"

    local function qualified(field, part)
        part = part or ident
        return F("keyspace", ident) * sym"." * F(field, part)
               + F(field, part)
    end
    local table_name = qualified("table")

    local G = { "statement" }

    ------------------------------------------------------ names, literals
    G.ident = SKIP * mark("identifier") * (quoted_name + unquoted)
    G.cident = SKIP * mark("identifier")
               * (quoted_name + P'""' * Cc"" + unquoted)
    G.fname = SKIP * mark("function name")
              * (quoted_name + ci_word"token" * Cc"token" + unquoted)
    G.role_name = string_val + ident
    G.user_name = string_val + SKIP * mark("user name") * bare_word

    G.string_lit = SKIP * mark("string")
                   * (C(sq_string) / lit_string
                      + C(dollar_string) / lit_dollar)
    G.constant = SKIP * mark("literal") * ((Cp() * (
          C(sq_string) / lit_string
        + C(dollar_string) / lit_dollar
        + C(uuid) / lit_uuid
        + C(hexnum) / lit_blob
        + C(duration) / lit_duration
        + C(float) / lit_float
        + C(integer) / lit_integer
        + C(special) / lit_special
        + C(boolean) / lit_boolean)) / located_at)
    G.null = SKIP * mark("NULL") * (C(ci_word"null") / lit_null)
    G.marker = SKIP * mark("bind marker") * (
          (Cp() * P"?" * Carg(1)) / new_marker
        + (Cp() * P":" * ident * Carg(1)) / new_named_marker)
    G.int_value = SKIP * mark("integer") * (C(integer) / lit_integer)
                  + marker

    ---------------------------------------------------------------- terms
    G.term = Cf(V"term_mul" * Cg(addsub * V"term_mul")^0, fold_op)
    G.term_mul = Cf(V"term_group" * Cg(muldiv * V"term_group")^0, fold_op)
    G.term_group = V"simple_term"
                   + raw(sym"-" * V"simple_term") / mk_negation
    G.simple_term = V"value"
        + V"func_call"
        + raw(sym"(" * type_ * sym")" * V"simple_term") / mk_hint
        + raw(K"cast" * sym"(" * V"simple_term" * K"as" * type_ * sym")")
          / mk_cast
    G.value = marker + V"constant" + V"null" + V"collection" + V"tuple"
    G.collection =
          raw(sym"[" * opt_list(term) * sym"]") / mk_list
        + raw(sym"{" * list(Ct(term * sym":" * term)) * sym"}") / mk_map
        + raw(sym"{" * opt_list(term) * sym"}") / mk_set
        + raw(sym"{" * list(Ct(ident * sym":" * term)) * sym"}") / mk_udt
    G.tuple = raw(sym"(" * list(term) * sym")") / mk_tuple
    G.fn_name = ident * sym"." * fname + Cc(false) * fname
    G.func_call = raw(V"fn_name" * sym"(" * opt_list(term) * sym")")
                  / mk_function

    ---------------------------------------------------------------- types
    G.type = SKIP * mark("type") * C(sq_string)
        + (V"type_name"
           * (sym"<" * list(type_ + SKIP * mark("integer") * C(digits))
              * sym">")^-1) / mk_type
    G.type_part = SKIP * mark("type")
                  * (C(quoted_name_raw) / quoted_type + unquoted)
    G.type_name = (V"type_part" * sym"." * V"type_part") / join_dot
                  + V"type_part"

    ------------------------------------------------------------ selectors
    G.selectors = sym"*" * F("columns", Ct(Cc"*"))
                  + F("selectors", list(V"selector"))
    G.selector = (raw(ident) * -(SKIP * S"(.[+-*/%") * (K"as" * ident)^-1)
                 / mk_column_selector
                 + (raw(V"sel") * (K"as" * ident)^-1) / mk_selector
    G.sel = Cf(V"sel_mul" * Cg(addsub * V"sel_mul")^0, fold_op)
    G.sel_mul = Cf(V"sel_group" * Cg(muldiv * V"sel_group")^0, fold_op)
    G.sel_group = Cf(V"sel_atom" * V"sel_mod"^0, fold_mod)
                  + raw(sym"-" * V"sel_group") / mk_negation
    G.sel_mod = sym"." * Ct(Cg(Cc"field", "type") * F("field", ident))
        + sym"[" * Ct(Cg(Cc"slice", "type") * F("from", term)^-1 * sym".."
                      * F("to", term)^-1) * sym"]"
        + sym"[" * Ct(Cg(Cc"element", "type") * F("key", term)) * sym"]"
    G.sel_atom =
          (ident * -(SKIP * S"(.")) / mk_column
        + raw(K"count" * sym"(" * sym"*" * sym")") / mk_count_star
        + raw(K"cast" * sym"(" * V"sel" * K"as" * type_ * sym")") / mk_cast
        + raw(V"fn_name" * sym"(" * opt_list(V"sel") * sym")")
          / mk_function
        + V"constant" + V"null" + marker
        + ident / mk_column
        + raw(sym"(" * type_ * sym")" * V"sel_atom") / mk_hint
        + raw(sym"(" * list(V"sel") * sym")") / mk_tuple
        + raw(sym"[" * opt_list(V"sel") * sym"]") / mk_list
        + raw(sym"{" * list(Ct(V"sel" * sym":" * V"sel")) * sym"}")
          / mk_map
        + raw(sym"{" * opt_list(V"sel") * sym"}") / mk_set

    ------------------------------------------------------------ relations
    local in_op = K"not" * K"in" * Cc"NOT IN" + K"in" * Cc"IN"
    local contains_op = K"not" * K"contains"
                        * (K"key" * Cc"NOT CONTAINS KEY" + Cc"NOT CONTAINS")
                        + K"contains"
                        * (K"key" * Cc"CONTAINS KEY" + Cc"CONTAINS")
    local in_values = F("values", Ct(sym"(" * (term * (sym"," * term)^0)^-1
                                     * sym")"))
                      + F("value", marker)
    local between = K"between" * F("op", Cc"BETWEEN")
                    * F("values", Ct(term * K"and" * term))
    local ident_tuple = sym"(" * list(cident) * sym")"

    G.where = Ct(V"relation" * (K"and" * V"relation")^0)
    G.relation =
          Ct(SKIP * mark("'expr('") * P"expr(" * F("op", Cc"EXPR")
             * qualified("index") * sym"," * F("value", term) * sym")")
        + Ct(F("column", cident) * (
                F("op", relop) * F("value", term)
              + between
              + K"like" * F("op", Cc"LIKE") * F("value", term)
              + K"is" * K"not" * F("op", Cc"IS NOT") * F("value", V"null")
              + F("op", in_op) * in_values
              + F("op", contains_op) * F("value", term)
              + sym"[" * F("key", term) * sym"]" * F("op", relop)
                * F("value", term)))
        + Ct(K"token" * F("token", Cc(true)) * F("columns", ident_tuple)
             * (F("op", relop) * F("value", term) + between))
        + Ct(F("columns", ident_tuple)
             * (F("op", in_op) * in_values
                + F("op", relop) * F("value", term)
                + between))
        + sym"(" * V"relation" * sym")"

    -- LWT conditions
    local cond_tail = F("op", relop) * F("value", term)
                      + F("op", K"in" * Cc"IN") * in_values
    G.conditions = Ct(V"condition" * (K"and" * V"condition")^0)
    G.condition = Ct(F("column", cident) * (
          cond_tail
        + F("op", contains_op) * F("value", term)
        + sym"[" * F("key", term) * sym"]" * cond_tail
        + sym"." * F("field", ident) * cond_tail))
    local lwt = (K"if" * (F("if_conditions", conditions)
                          + flag("if_exists", K"exists")))^-1

    local using_obj = K"ttl" * F("ttl", V"int_value")
                      + K"timestamp" * F("timestamp", V"int_value")
    local using = (K"using" * F("using", Ct(using_obj
                                             * (K"and" * using_obj)^0)))^-1

    ------------------------------------------------------------------ DML
    G.select = Ct(kind"select" * K"select"
        * (flag("json", K"json") * V"select_clause" * K"from"
           + V"select_clause" * K"from")
        * table_name
        * (K"where" * F("where", where))^-1
        * (K"group" * K"by" * F("group_by",
                                list(raw(V"sel") / group_item)))^-1
        * (K"order" * K"by" * F("order_by", list(Ct(
              F("column", cident)
              * (K"ann" * K"of" * F("ann", term))^-1
              * F("order", asc_desc + Cc"asc")))))^-1
        * (K"per" * K"partition" * K"limit"
           * F("per_partition_limit", V"int_value"))^-1
        * (K"limit" * F("limit", V"int_value"))^-1
        * flag("allow_filtering", K"allow" * K"filtering")^-1)
        / finish_selectors
    G.select_clause = flag("distinct", K"distinct") * V"selectors"
                      * #K"from"
                      + V"selectors"

    G.insert = (Ct(kind"insert" * K"insert" * K"into" * table_name * (
          sym"(" * F("columns", list(cident)) * sym")"
          * K"values" * F("_vpos", SKIP * Cp())
          * sym"(" * F("values", list(term)) * sym")"
        + K"json" * F("json", Cc(true))
          * F("json_value", V"string_lit" + marker)
          * (K"default" * F("json_default", K"null" * Cc"null"
                                            + K"unset" * Cc"unset"))^-1)
        * if_not_exists^-1 * using) * Carg(1)) / finish_insert

    local assign_tail =
          sym"=" * (Ct(F("_other", cident) * F("op", addsub)
                       * F("value", term))
                    + Ct(F("value", term)
                         * (sym"+" * F("_other", cident)
                            * F("op", Cc"prepend")
                            + F("op", Cc"="))))
        + Ct(F("op", SKIP * mark("operator")
                     * (P"+=" * Cc"+" + P"-=" * Cc"-"))
             * F("value", term))
        + sym"[" * Ct(F("key", term) * sym"]" * sym"=" * F("op", Cc"=")
                      * F("value", term))
        + sym"." * Ct(F("field", ident) * sym"=" * F("op", Cc"=")
                      * F("value", term))
    G.assignment = (SKIP * Cp() * C(cident * assign_tail) * Carg(1))
                   / mk_assignment
    G.update = Ct(kind"update" * K"update" * table_name * using
        * K"set" * F("assignments", list(V"assignment"))
        * K"where" * F("where", where) * lwt)

    G.delete = Ct(kind"delete" * K"delete"
        * F("targets", list(Ct(F("column", cident)
              * (sym"[" * F("key", term) * sym"]"
                 + sym"." * F("field", ident))^-1)))^-1
        * K"from" * table_name
        * (K"using" * F("using", Ct(K"timestamp"
                                    * F("timestamp", V"int_value"))))^-1
        * K"where" * F("where", where) * lwt) / finish_delete

    G.batch = Ct(kind"batch" * K"begin"
        * F("batch_type", K"unlogged" * Cc"unlogged"
                          + K"counter" * Cc"counter" + Cc"logged")
        * K"batch" * using
        * F("statements", Ct(((V"insert" + V"update" + V"delete")
                              * sym";"^-1)^0))
        * K"apply" * K"batch")

    G.use = Ct(kind"use" * K"use" * F("keyspace", ident))
    G.truncate = Ct(kind"truncate" * K"truncate" * TABLE^-1 * table_name)

    ------------------------------------------------------------------ DDL
    G.properties = Ct(V"property" * (K"and" * V"property")^0)
                   / pairs_to_map
    G.property = Ct(ident * sym"=" * (V"constant" / plain + V"full_map"
                                       + SKIP * mark("value") * unquoted))
    G.full_map = (sym"{" * Ct((Ct(term * sym":" * term)
                               * (sym"," * Ct(term * sym":" * term))^0)^-1)
                  * sym"}") / map_to_table

    local column_mask = K"masked" * K"with"
        * (K"default" * Cc"default"
           + raw(V"fn_name" * sym"(" * opt_list(term) * sym")") / 1)
    local column_def = Ct(F("name", ident) * F("type", type_)
                          * flag("static", K"static")^-1
                          * F("mask", column_mask)^-1)
    local partition_key = sym"(" * list(ident) * sym")" + Ct(ident)
    local primary_key = F("partition_key", partition_key)
                        * F("clustering_key", Ct((sym"," * ident)^0))
    local table_prop =
          Ct(F("compact_storage", K"compact" * K"storage" * Cc(true)))
        + Ct(F("clustering_order", K"clustering" * K"order" * K"by"
               * sym"(" * list(Ct(F("column", ident)
                                  * F("order", asc_desc))) * sym")"))
        + Ct(F("property", V"property"))
    local table_props = (K"with" * F("_props", Ct(table_prop
                                     * (K"and" * table_prop)^0)))^-1
    local table_item =
          Ct(K"primary" * K"key" * F("primary_key", Cc(true)) * sym"("
             * F("partition", partition_key)
             * F("clustering", Ct((sym"," * ident)^0)) * sym")")
        + Ct(F("name", ident) * F("type", type_)
             * flag("static", K"static")^-1
             * F("mask", column_mask)^-1
             * flag("primary", K"primary" * K"key")^-1)
    local like_prop = Ct(F("indexes", K"indexes" * Cc(true)))
                      + Ct(F("property", V"property"))
    local arg_types = Ct((type_ * (sym"," * type_)^0)^-1)
    local fn_qualified = qualified("name", fname)

    G.create = K"create" * (V"create_table" + V"create_keyspace"
        + V"create_index" + V"create_type" + V"create_function"
        + V"create_aggregate" + V"create_view" + V"create_trigger"
        + V"create_role" + V"create_user")
    G.create_keyspace = Ct(kind"create_keyspace" * KEYSPACE
        * if_not_exists^-1 * F("keyspace", ident)
        * K"with" * F("options", properties))
    G.create_table = Ct(kind"create_table" * TABLE * if_not_exists^-1
        * table_name * (
              K"like" * F("like", Ct(table_name))
              * (K"with" * F("_props", Ct(like_prop
                                          * (K"and" * like_prop)^0)))^-1
            + sym"(" * F("_items", Ct(table_item
                                      * (sym"," * table_item^-1)^0))
              * sym")" * table_props)) / finish_create_table
    G.create_index = Ct(kind"create_index"
        * flag("custom", K"custom")^-1 * K"index" * if_not_exists^-1
        * F("name", ident)^-1 * K"on" * table_name
        * sym"(" * F("targets", opt_list(Ct(
              F("type", K"values" * Cc"values" + K"keys" * Cc"keys"
                        + K"entries" * Cc"entries" + K"full" * Cc"full")
              * sym"(" * F("column", cident) * sym")"
            + F("column", cident)))) * sym")"
        * (K"using" * F("using_class", string_val))^-1
        * (K"with" * F("options", properties))^-1)
    G.create_type = Ct(kind"create_type" * K"type" * if_not_exists^-1
        * qualified("name") * sym"("
        * F("fields", Ct(Ct(F("name", ident) * F("type", type_))
                         * (sym"," * Ct(F("name", ident)
                                        * F("type", type_))^-1)^0))
        * sym")")
    G.create_function = Ct(kind"create_function"
        * flag("or_replace", K"or" * K"replace")^-1 * K"function"
        * if_not_exists^-1 * fn_qualified
        * sym"(" * F("arguments", opt_list(Ct(F("name", ident)
                                             * F("type", type_))))
        * sym")"
        * F("called_on_null_input", K"returns" * K"null" * Cc(false)
                                    + K"called" * Cc(true))
        * K"on" * K"null" * K"input"
        * K"returns" * F("returns", type_)
        * K"language" * F("language", ident)
        * K"as" * F("body", string_val))
    G.create_aggregate = Ct(kind"create_aggregate"
        * flag("or_replace", K"or" * K"replace")^-1 * K"aggregate"
        * if_not_exists^-1 * fn_qualified
        * sym"(" * F("arg_types", arg_types) * sym")"
        * K"sfunc" * F("sfunc", fname)
        * K"stype" * F("stype", type_)
        * (K"finalfunc" * F("finalfunc", fname))^-1
        * (K"initcond" * F("initcond", term))^-1)
    G.create_view = Ct(kind"create_materialized_view"
        * K"materialized" * K"view" * if_not_exists^-1 * table_name
        * K"as" * K"select" * V"selectors" * K"from"
        * F("base", Ct(table_name))
        * (K"where" * F("where", where))^-1
        * K"primary" * K"key" * sym"(" * primary_key * sym")"
        * table_props) / finish_view
    G.create_trigger = Ct(kind"create_trigger" * K"trigger"
        * if_not_exists^-1 * F("name", ident) * K"on" * table_name
        * K"using" * F("using_class", string_val))
    G.create_role = Ct(kind"create_role" * K"role" * if_not_exists^-1
        * F("name", V"role_name")
        * (K"with" * F("options", V"role_options"))^-1)
    local user_opts = (K"with" * F("_pw", V"user_password"))^-1
        * F("_su", K"superuser" * Cc(true) + K"nosuperuser" * Cc(false))^-1
    G.create_user = Ct(kind"create_user" * K"user" * if_not_exists^-1
        * F("name", V"user_name") * user_opts) / finish_user

    G.role_options = Ct(V"role_option" * (K"and" * V"role_option")^0)
                     / pairs_to_map
    G.role_option = Ct(
          K"password" * sym"=" * Cc"password" * string_val
        + K"generated" * K"password" * Cc"generated_password" * Cc(true)
        + K"hashed" * K"password" * sym"=" * Cc"hashed_password"
          * string_val
        + K"options" * sym"=" * Cc"options" * V"full_map"
        + K"superuser" * sym"=" * Cc"superuser" * bool_val
        + K"login" * sym"=" * Cc"login" * bool_val
        + K"access" * K"to" * K"all" * K"datacenters"
          * Cc"access_to_datacenters" * Cc"all"
        + K"access" * K"to" * K"datacenters" * Cc"access_to_datacenters"
          * sym"{" * list(string_val) * sym"}"
        + K"access" * K"from" * K"all" * K"cidrs"
          * Cc"access_from_cidrs" * Cc"all"
        + K"access" * K"from" * K"cidrs" * Cc"access_from_cidrs"
          * sym"{" * list(string_val) * sym"}")
    G.user_password = Ct(K"password" * Cc"password" * string_val
        + K"hashed" * K"password" * Cc"hashed_password" * string_val
        + K"generated" * K"password" * Cc"generated_password" * Cc(true))

    local rename_pairs = Ct(Ct(F("from", ident) * K"to" * F("to", ident))
                      * (K"and" * Ct(F("from", ident) * K"to"
                                     * F("to", ident)))^0)
    local col_exists = flag("if_column_exists", K"if" * K"exists")
    G.alter = K"alter" * (V"alter_table" + V"alter_keyspace"
        + V"alter_type" + V"alter_view" + V"alter_role" + V"alter_user")
    G.alter_keyspace = Ct(kind"alter_keyspace" * KEYSPACE * if_exists^-1
        * F("keyspace", ident) * K"with" * F("options", properties))
    G.alter_table = Ct(kind"alter_table" * TABLE * if_exists^-1
        * table_name * (
              K"alter" * F("action", Cc"alter") * F("column", cident)
              * K"type" * F("type", type_)
            + K"alter" * F("action", Cc"alter") * col_exists^-1
              * F("column", cident)
              * (F("mask", column_mask)
                 + K"drop" * K"masked" * F("mask", Cc(false)))
            + K"add" * F("action", Cc"add")
              * flag("if_column_not_exists",
                     K"if" * K"not" * K"exists")^-1
              * F("_defs", sym"(" * list(column_def) * sym")"
                           + Ct(column_def))
            + K"drop" * K"compact" * K"storage"
              * F("action", Cc"drop_compact_storage")
            + K"drop" * F("action", Cc"drop") * col_exists^-1
              * F("columns", sym"(" * list(ident) * sym")" + Ct(ident))
              * (K"using" * K"timestamp" * F("timestamp", V"int_value"))^-1
            + K"rename" * F("action", Cc"rename") * col_exists^-1
              * F("renames", rename_pairs)
            + K"with" * F("action", Cc"with") * F("options", properties)))
        / finish_alter_table
    G.alter_type = Ct(kind"alter_type" * K"type" * if_exists^-1
        * qualified("name") * (
              K"alter" * F("action", Cc"alter") * F("field", ident)
              * K"type" * F("type", type_)
            + K"add" * F("action", Cc"add")
              * flag("if_field_not_exists", K"if" * K"not" * K"exists")^-1
              * F("field", ident) * F("type", type_)
            + K"rename" * F("action", Cc"rename")
              * flag("if_field_exists", K"if" * K"exists")^-1
              * F("renames", rename_pairs)))
    G.alter_view = Ct(kind"alter_materialized_view" * K"materialized"
        * K"view" * if_exists^-1 * table_name
        * K"with" * F("options", properties))
    G.alter_role = Ct(kind"alter_role" * K"role" * if_exists^-1
        * F("name", V"role_name")
        * (K"with" * F("options", V"role_options"))^-1)
    G.alter_user = Ct(kind"alter_user" * K"user" * if_exists^-1
        * F("name", V"user_name") * user_opts) / finish_user

    G.drop = K"drop" * (
          Ct(kind"drop_table" * TABLE * if_exists^-1 * table_name)
        + Ct(kind"drop_keyspace" * KEYSPACE * if_exists^-1
             * F("keyspace", ident))
        + Ct(kind"drop_index" * K"index" * if_exists^-1
             * qualified("name"))
        + Ct(kind"drop_type" * K"type" * if_exists^-1 * qualified("name"))
        + Ct(kind"drop_function" * K"function" * if_exists^-1
             * fn_qualified
             * (sym"(" * F("arg_types", arg_types) * sym")")^-1)
        + Ct(kind"drop_aggregate" * K"aggregate" * if_exists^-1
             * fn_qualified
             * (sym"(" * F("arg_types", arg_types) * sym")")^-1)
        + Ct(kind"drop_materialized_view" * K"materialized" * K"view"
             * if_exists^-1 * table_name)
        + Ct(kind"drop_trigger" * K"trigger" * if_exists^-1
             * F("name", ident) * K"on" * table_name)
        + Ct(kind"drop_role" * K"role" * if_exists^-1
             * F("name", V"role_name"))
        + Ct(kind"drop_user" * K"user" * if_exists^-1
             * F("name", V"user_name"))
        + Ct(kind"drop_identity" * K"identity" * if_exists^-1
             * F("identity", V"user_name")))

    ------------------------------------------------------------------ DCL
    local permission = SKIP * mark("permission")
        * ((C(ci_word"create" + ci_word"alter" + ci_word"drop"
              + ci_word"select_masked" + ci_word"select" + ci_word"modify"
              + ci_word"authorize" + ci_word"describe" + ci_word"execute"
              + ci_word"unmask")) / upper)
        * K"permission"^-1
    local permissions = K"all" * K"permissions"^-1 * Ct(Cc"ALL")
                        + list(permission)
    G.resource = Ct(
          K"all" * K"keyspaces" * F("type", Cc"all_keyspaces")
        + K"all" * K"tables" * K"in" * KEYSPACE * F("type", Cc"all_tables")
          * F("keyspace", ident)
        + K"all" * K"roles" * F("type", Cc"all_roles")
        + K"all" * K"functions" * K"in" * KEYSPACE
          * F("type", Cc"all_functions") * F("keyspace", ident)
        + K"all" * K"functions" * F("type", Cc"all_functions")
        + K"all" * K"mbeans" * F("type", Cc"all_mbeans")
        + KEYSPACE * F("type", Cc"keyspace") * F("keyspace", ident)
        + K"role" * F("type", Cc"role") * F("name", V"role_name")
        + K"function" * F("type", Cc"function") * fn_qualified
          * sym"(" * F("arg_types", arg_types) * sym")"
        + K"mbean" * F("type", Cc"mbean") * F("name", string_val)
        + K"mbeans" * F("type", Cc"mbeans") * F("name", string_val)
        + TABLE^-1 * F("type", Cc"table") * table_name)
    G.grant = K"grant" * (
          Ct(kind"grant" * F("permissions", permissions) * K"on"
             * F("resource", V"resource") * K"to"
             * F("grantee", V"role_name")) / finish_resource
        + Ct(kind"grant_role" * F("role", V"role_name") * K"to"
             * F("grantee", V"role_name")))
    G.revoke = K"revoke" * (
          Ct(kind"revoke" * F("permissions", permissions) * K"on"
             * F("resource", V"resource") * K"from"
             * F("grantee", V"role_name")) / finish_resource
        + Ct(kind"revoke_role" * F("role", V"role_name") * K"from"
             * F("grantee", V"role_name")))
    local of_role = (K"of" * F("of", V"role_name"))^-1
                    * flag("norecursive", K"norecursive")^-1
    G.list = K"list" * (
          Ct(kind"list_roles" * K"roles" * of_role)
        + Ct(kind"list_users" * K"users")
        + Ct(kind"list_superusers" * K"superusers")
        + Ct(kind"list_permissions" * F("permissions", permissions)
             * (K"on" * F("resource", V"resource"))^-1 * of_role)
          / finish_resource)
    G.add = K"add" * Ct(kind"add_identity" * K"identity" * if_not_exists^-1
        * F("identity", V"user_name") * K"to" * K"role"
        * F("role", V"user_name"))

    G.describe = (K"describe" + K"desc") * Ct(kind"describe" * (
          K"cluster" * F("target", Cc"cluster")
        + flag("full", K"full")^-1 * K"schema" * F("target", Cc"schema")
        + K"keyspaces" * F("target", Cc"keyspaces")
        + flag("only", K"only")^-1 * K"keyspace"
          * F("target", Cc"keyspace") * F("keyspace", ident)^-1
        + (K"tables" + K"columnfamilies") * F("target", Cc"tables")
        + TABLE * F("target", Cc"table") * table_name
        + K"index" * F("target", Cc"index") * qualified("name")
        + K"materialized" * K"view" * F("target", Cc"materialized_view")
          * table_name
        + K"types" * F("target", Cc"types")
        + K"type" * F("target", Cc"type") * qualified("name")
        + K"functions" * F("target", Cc"functions")
        + K"function" * F("target", Cc"function") * fn_qualified
        + K"aggregates" * F("target", Cc"aggregates")
        + K"aggregate" * F("target", Cc"aggregate") * fn_qualified
        + F("target", Cc"name") * qualified("name"))
        * flag("with_internals", K"with" * K"internals")^-1)

    G.statement = SKIP * (V"select" + V"insert" + V"update" + V"delete"
        + V"batch" + V"use" + V"truncate" + V"create" + V"alter"
        + V"drop" + V"grant" + V"revoke" + V"list" + V"describe"
        + V"add")
        * SKIP * (mark("';'") * P";" * SKIP)^-1
        * mark("end of input") * P(-1)

    return P(G)
end

local GRAMMAR = build(false)
local TRACK = build(true)

-- Statements this grammar does not know: they must at least lex (strings,
-- quoted names and brackets closed) and start with a word.
local fallback = P{ "seq",
    seq = (SKIP * V"tok")^0 * SKIP,
    tok = sq_string + dollar_string + quoted_name_raw
          + (idchar + R"\128\255")^1 + S".,:?=<>!+-*/%"
          + P"(" * V"seq" * P")" + P"[" * V"seq" * P"]"
          + P"{" * V"seq" * P"}",
}
local OTHER = SKIP * Ct((C(word) * SKIP)^1) * fallback
              * (P";" * SKIP)^-1 * Cp()
local FIRST_WORD = SKIP * C(word)
local LEADING = SKIP * Cp()
local TOKEN = C(word + P"-"^-1 * digit * (idchar + P".")^0 + sq_string
                + dollar_string
                + any_quoted_raw + 1)

----------------------------------------------------------------- errors

local function located(text, pos, what)
    local line, line_start = 1, 1
    local i = find(text, "\n", 1, true)
    while i and i < pos do
        line, line_start = line + 1, i + 1
        i = find(text, "\n", i + 1, true)
    end
    return fmt("syntax error at offset %d (line %d, column %d): %s",
               pos - 1, line, pos - line_start + 1, what), pos - 1
end

local function found_at(text, pos)
    if pos > #text then
        return "end of input"
    end
    local t = match(TOKEN, text, pos) or sub(text, pos, pos)
    if #t > 24 then
        t = sub(t, 1, 24) .. "..."
    end
    return "'" .. t .. "'"
end

local function unterminated(text, pos)
    local c = byte(text, pos)
    if c == 39 and not match(sq_string, text, pos) then        -- '
        return "unterminated string literal"
    elseif c == 34 and not match(any_quoted_raw, text, pos) then  -- "
        return "unterminated quoted identifier"
    elseif sub(text, pos, pos + 1) == "$$"
           and not match(dollar_string, text, pos) then
        return "unterminated $$ string literal"
    elseif sub(text, pos, pos + 1) == "/*"
           and not find(text, "*/", pos + 2, true) then
        return "unterminated comment"
    end
end

local function diagnose(text)
    local st = { far = 0, n = 0, expected = {} }
    pcall(match, TRACK, text, 1, {}, st)
    local pos = st.far > 0 and st.far or 1
    local bad = unterminated(text, pos)
    if bad then
        return located(text, pos, bad)
    end
    local first = match(LEADING, text)
    if pos <= first then
        if pos > #text then
            return located(text, pos, "empty statement")
        end
        return located(text, pos, "expected a CQL statement, found "
                                  .. found_at(text, pos))
    end
    local e, n = st.expected, st.n
    local list
    if n == 1 then
        list = e[1]
    elseif n <= 8 then
        list = concat(e, ", ", 1, n - 1) .. " or " .. e[n]
    else
        list = concat(e, ", ", 1, 8) .. " or ..."
    end
    return located(text, pos, "expected " .. list .. ", found "
                              .. found_at(text, pos))
end

-- text that is not one of the statements above: "other" when it lexes
local function other(text)
    local first = match(FIRST_WORD, text)
    if not first or STATEMENT_WORDS[lower(first)] then
        return nil
    end
    local ok, words, pos = pcall(match, OTHER, text)
    if not ok then
        return nil, located(text, 1, "statement nested too deeply")
    end
    if not words then
        return nil
    end
    if pos <= #text then
        local bad = unterminated(text, pos)
        if not bad then
            local c = sub(text, pos, pos)
            if c == "(" or c == "[" or c == "{" then
                bad = "unclosed '" .. c .. "'"
            elseif c == ")" or c == "]" or c == "}" then
                bad = "unbalanced '" .. c .. "'"
            else
                bad = "unexpected " .. found_at(text, pos)
            end
        end
        return nil, located(text, pos, bad)
    end
    local kw = {}
    for i = 1, #words < 3 and #words or 3 do
        kw[i] = upper(words[i])
    end
    return { kind = "other", class = "other", keywords = kw }
end

------------------------------------------------------------------- API

local function by_pos(a, b)
    return a.pos < b.pos
end

local function number_markers(st)
    local n = #st
    for i = 2, n do
        if st[i].pos < st[i - 1].pos then
            sort(st, by_pos)
            break
        end
    end
    for i = 1, n do
        local m = st[i]
        m.marker, m.pos = i, nil
    end
end

-- Parse one CQL statement (an optional trailing ';').  Returns the AST,
-- or nil, a message naming the position, and that 0-based offset.
function _M.parse(text)
    if type(text) ~= "string" then
        return nil, "cql parser: expected a string, got " .. type(text)
    end
    local st = {}
    local ok, ast = pcall(match, GRAMMAR, text, 1, st)
    if not ok then
        return nil, located(text, 1, "statement nested too deeply ("
                                     .. tostring(ast) .. ")")
    end
    if not ast then
        local res, err, off = other(text)
        if res then
            return res
        end
        if err then
            return nil, err, off
        end
        return nil, diagnose(text)
    end
    if st.err then
        return nil, located(text, st.err_pos, st.err)
    end
    number_markers(st)
    ast.class = CLASS[ast.kind]
    local children = ast.statements
    if children then
        for i = 1, #children do
            children[i].class = CLASS[children[i].kind]
        end
    end
    return ast
end

-- every statement kind and its class (read only: config checks list them)
_M.CLASS = CLASS

-- the class of a statement kind ("read", "write", "schema_change", ...)
function _M.class_of(kind)
    return CLASS[kind]
end

-- parse(text), once per distinct text per worker: the same AST (shared:
-- never modify it) for the same text, or nil and the error.  Bounded: the
-- cache starts over past MAX_CACHED texts.
_M.MAX_CACHED = 10000
local cached, ncached = {}, 0
function _M.cached(text)
    local ast = cached[text]
    if ast == nil then
        local err
        ast, err = _M.parse(text)
        if ncached >= _M.MAX_CACHED then
            cached, ncached = {}, 0
        end
        cached[text] = ast or err
        ncached = ncached + 1
        return ast, err
    elseif type(ast) == "string" then
        return nil, ast
    end
    return ast
end

return _M
