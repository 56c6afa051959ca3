-- The `cassandra` sink in front of a ring (contact_points): token-aware
-- routing, failover to the next replica, prepared statements carried to
-- the node that runs them, and the system tables rewritten so drivers see
-- the shotover instances.  Added to the sink's module by
-- shotover.transforms.cassandra; docs/transforms/cassandra.md, "A ring".
--
-- Each client keeps a session per node (the client's handshake and USE
-- replayed there at first use, as the single-node sink does for sub-chains)
-- and a home node: its handshake, and requests that name no partition, go
-- there.  A request with a partition key (EXECUTE by its statement's
-- partition key indexes, QUERY by a literal key) goes to the first usable
-- replica of the key's token range.
--
-- Failure: a node whose connection is lost or never opens is skipped for
-- ring.DOWN_NS; requests it owed that are safe to send twice (reads, and
-- writes with no condition and no counter or collection increment: a
-- write's effect does not change when it is applied twice) go to the next
-- node of their range.  Others get the OVERLOADED error the connection's
-- loss gave them: drivers take it as "try another coordinator", and only
-- the driver knows whether its statement is idempotent.
local bit = require "bit"
local C = require("shotover.ffi").C
local message = require "shotover.message"
local session = require "shotover.cql.session"
local request = require "shotover.cql.request"
local bound = require "shotover.cql.bound"
local rows = require "shotover.cql.rows"
local types = require "shotover.cql.types"
local peers = require "shotover.cql.peers"
local ring_mod = require "shotover.cql.ring"
local cql_schema = require "shotover.cql.schema"
local pools = require "shotover.pools"
local class_of = require("shotover.cql.parser").class_of
local schema = require "shotover.schema"
local now_ns = require("shotover.metrics").now_ns

local band, rshift = bit.band, bit.rshift
local char = string.char
local fmt = string.format
local new_batch, constant_batch = message.new_batch, message.constant_batch
local ipairs, pairs, pcall, error, type = ipairs, pairs, pcall, error, type

local AGAIN = require("shotover.ffi").AGAIN
local OP_ERROR, OP_RESULT = C.SH_CQL_ERROR, C.SH_CQL_RESULT
local OP_QUERY, OP_EXECUTE = C.SH_CQL_QUERY, C.SH_CQL_EXECUTE
local OP_PREPARE, OP_OPTIONS = C.SH_CQL_PREPARE, C.SH_CQL_OPTIONS
local OP_REGISTER, OP_BATCH = C.SH_CQL_REGISTER, C.SH_CQL_BATCH
local OVERLOADED, UNPREPARED = C.SH_CQL_OVERLOADED, 0x2500
local IS_BOOTSTRAPPING = 0x1002

return function(sink, methods)
    local send, catch_up = sink.send, sink.catch_up
    local watch_handshake = sink.watch_handshake
    local learn = session.learn

    -- the ring is read at most this often (unknown, or stale: a node
    -- failed)
    local STALE_NS = 1e9

    function sink.new_ring(self, conf, env)
        local where = (env.path or "chain") .. ": cassandra sink"
        local list, listen = conf.shotover_nodes, env.listen
        if list == nil then
            -- drivers see this instance alone, where its source listens
            local host = listen and schema.parse_hostport(listen)
            if host == "0.0.0.0" or host == "::" then
                error(fmt("%s: shotover_nodes: required when the source "
                          .. "listens on %s (drivers must be told an "
                          .. "address to connect to)", where, listen), 0)
            end
            list = { { address = listen or "127.0.0.1:9042" } }
            if not peers.check(list) then
                error(fmt("%s: shotover_nodes: required when the source's "
                          .. "listen address (%s) is not an IP address",
                          where, listen), 0)
            end
        end
        -- (no listen address: a dry build, shotover.testing)
        local me = conf.local_node or peers.find_self(list, listen)
                   or (listen == nil and list[1].address or nil)
        if me == nil then
            error(fmt("%s: shotover_nodes: none of them is this instance "
                      .. "(its source listens on %s); set local_node", where,
                      tostring(listen)), 0)
        end
        self.view = peers.view(list, me)
        self.refresh_ns = conf.refresh_interval_ms * 1e6
        if env.worker ~= nil then
            local settings = {}
            for k, v in pairs(conf) do settings[k] = v end
            self.ring = pools.get("cassandra_ring", settings, function()
                return ring_mod.new(env.worker, settings, self.name)
            end, function(r) r:free() end)
        end
        return self
    end

    local function node_state(conn, node)
        local st = conn[node]
        if st == nil then
            st = {}
            conn[node] = st
        end
        return st
    end

    -- Open the client's session on node (its handshake and keyspace
    -- replayed): nil, or why it could not be.
    local function open_on(self, chain, node, batch)
        local conn = chain.conn
        local st = node_state(conn, node)
        st.token = self.token               -- the sink's own login, if any
        if C.sh_ffi_cql_session_live(node.pool, chain.c) == 0
           and not st.opening then
            st.started, st.keyspace = false, nil
        end
        if st.started and st.keyspace == conn.keyspace then
            return nil
        end
        while st.opening do
            chain:sleep()
        end
        if st.started and st.keyspace == conn.keyspace then
            return nil
        end
        st.opening = true
        local ok, err = pcall(catch_up, node.pool, self.name, chain, conn, st,
                              batch)
        st.opening = nil
        chain:notify()
        if not ok then
            error(err, 0)
        end
        return err
    end

    -- Why r says its node cannot serve now, or nil: the error a lost
    -- connection gave (c/sh_cql_pool.c), or the node's own OVERLOADED
    -- ("Server is shutting down", ...) or IS_BOOTSTRAPPING, which it
    -- gives a request it did not run.
    local function lost(r)
        if r == nil then
            return "no reply"
        end
        if r.rtype ~= OP_ERROR then
            return nil
        end
        local e = r:error_info()
        if e.code == OVERLOADED or e.code == IS_BOOTSTRAPPING then
            return e.message
        end
        return nil
    end

    -- The int a reply of opcode op starts with (an ERROR's code, a
    -- RESULT's kind), the body and the offset after it; nil for others.
    local function leading_int(r, op)
        if r == nil or r.rtype ~= op then
            return nil
        end
        local p, n = r:body_view()
        local i = session.response_start(r, p, n)
        return types.s32(p, i, n, "a reply's first field"), p, i + 4, n
    end

    -- The prepared id an UNPREPARED error names, or nil.
    local function unprepared_id(r)
        local code, p, i, n = leading_int(r, OP_ERROR)
        if code ~= UNPREPARED then
            return nil
        end
        local _, at = types.cql_string(p, i, n)
        local ok, id = pcall(types.cql_string, p, at, n)   -- [short bytes]
        return ok and id or nil
    end

    -- Whether m may be sent again after its connection was lost, maybe
    -- after the node applied it.
    local function retryable(m, conn)
        local op = m.rtype
        if op == OP_PREPARE or op == OP_OPTIONS then
            return true
        end
        if op ~= OP_QUERY and op ~= OP_EXECUTE then
            return false
        end
        local ast = m:statement(conn)
        if not ast then
            return false
        end
        local k = ast.kind
        if k == "select" or k == "use" then
            return true
        elseif k == "insert" then
            return not ast.if_not_exists
        elseif k == "delete" then
            return not (ast.if_exists or ast.if_conditions)
        elseif k == "update" then
            if ast.if_exists or ast.if_conditions then
                return false
            end
            for _, a in ipairs(ast.assignments or {}) do
                if a.op ~= "=" then
                    return false                -- counter, append, ...
                end
            end
            return true
        end
        return false
    end

    local routing_key = ring_mod.routing_key

    -- an EXECUTE's plan: its partition key indexes and which values to
    -- read (false: the statement has no partition key to route by)
    local function plan_of(rec)
        local plan = rec.ring_plan
        if plan == nil then
            plan = false
            if rec.pk and #rec.pk > 0 then
                plan = { pk = rec.pk, needs = {} }
                for _, k in ipairs(rec.pk) do
                    plan.needs[k] = true
                end
            end
            rec.ring_plan = plan
        end
        return plan
    end

    local vals, parts = {}, {}

    -- The nodes for request m, or nil (its client's home order).
    local function route(ring, chain, m)
        local op = m.rtype
        if op == OP_EXECUTE then
            local rec, p, n = bound.statement(m)
            local plan = rec and plan_of(rec)
            if not plan then
                return nil
            end
            local cl = bound.read(m, p, n, plan.needs, vals)
            local list
            if cl then
                local pk = plan.pk
                for k = 1, #pk do
                    parts[k] = vals[pk[k]]
                end
                list = ring:for_key(routing_key(parts, #pk))
            end
            for k in pairs(vals) do vals[k] = nil end
            for k in pairs(parts) do parts[k] = nil end
            return list
        elseif op == OP_BATCH then
            -- by its first statement's key, when that one is prepared (as
            -- drivers route a batch); a batch of one partition then goes
            -- to its replica
            local ok, children = pcall(m.batch_children, m, true)
            local first = ok and children and children[1]
            local rec = first and first.id and session.prepared_by_id(first.id)
            local plan = rec and plan_of(rec)
            if not plan then
                return nil
            end
            local pk = plan.pk
            for k = 1, #pk do
                parts[k] = first.values[pk[k]]
                if type(parts[k]) ~= "string" then
                    for j in pairs(parts) do parts[j] = nil end
                    return nil
                end
            end
            local list = ring:for_key(routing_key(parts, #pk))
            for k in pairs(parts) do parts[k] = nil end
            return list
        elseif op == OP_QUERY then
            -- schema changes, and the system tables drivers read to see
            -- that the nodes agree on the schema, all go to one node (the
            -- first usable): the agreement check then asks the node that
            -- made the change, which knows it first, whichever shotover
            -- instance and client connection each went through
            local ast, ks = m:statement(chain.conn)
            if ast and (class_of(ast.kind) == "schema_change"
                        or peers.system_table(ast, ks)) then
                return ring.everyone
            end
            local ok, qi = pcall(m.query_info, m, chain)
            if not ok or qi == nil or qi.key_parts == nil
               or qi.key_bytes == nil then
                return nil
            end
            local cols = qi.key_columns
            for k = 1, #cols do
                parts[k] = qi.key_parts[cols[k]]
            end
            local list = ring:for_key(routing_key(parts, #cols))
            for k in pairs(parts) do parts[k] = nil end
            return list
        end
        return nil
    end

    -- The client's nodes in order for requests of no partition: its home,
    -- then the others.
    local function home_order(ring, cs)
        if cs.order == nil or cs.order_of ~= ring.everyone then
            local order = { cs.home }
            for _, node in ipairs(ring.everyone) do
                if node ~= cs.home then
                    order[#order + 1] = node
                end
            end
            cs.order, cs.order_of = order, ring.everyone
        end
        return cs.order
    end

    -- Read the ring again, on the client's session with its home node (so
    -- the node's authentication applies), on the stream of the batch's
    -- first request (not in flight yet).
    local function refresh(self, ring, cs, chain, batch)
        ring.refreshing = true
        local node, now = cs.home, now_ns()
        if node.down_until > now then
            for _, n in ipairs(ring.everyone) do
                if n.down_until <= now then
                    node = n
                    break
                end
            end
        end
        local first = batch[1]
        local ok, err = pcall(function()
            if open_on(self, chain, node, batch) then
                return
            end
            local opts = { version = band(first.data[0], 0x7f),
                           stream = first.argc, consistency = "ONE" }
            local function ask(q)
                local r = send(node.pool, chain, constant_batch(1,
                               request.query(q, nil, opts)))[1]
                return rows.read(r)
            end
            local lt = ask(ring_mod.LOCAL_QUERY)
            if lt == nil or lt[1] == nil then
                return
            end
            local pt = ask(ring_mod.PEERS_V2_QUERY)
                       or ask(ring_mod.PEERS_QUERY)
            if pt == nil then
                return
            end
            if ring:learn(rows.decode(lt)[1], rows.decode(pt), node) then
                ring.local_raw, ring.local_at = rows.by_name(lt, 1), now_ns()
            end
        end)
        ring.refreshing = false
        ring.refreshed = now_ns()
        if not ok then
            -- the client's batch is served with the ring as it was known
            require("shotover.log").warn("%s: the ring could not be read "
                .. "from %s: %s", self.name, node.addr, tostring(err))
        end
    end

    -- The handshake (and what comes before it) goes to the client's home;
    -- a home that cannot be reached is left for another.
    local function handshake(self, ring, cs, chain, batch)
        local conn = chain.conn
        local resp
        for _ = 1, #ring.everyone do
            local node = cs.home
            local st = node_state(conn, node)
            local err = open_on(self, chain, node, batch)
            if err == nil then
                watch_handshake(conn, st, batch)
                resp = send(node.pool, chain, batch)
                if resp.n == 0 or not lost(resp[1]) then
                    learn(conn, batch, resp)
                    st.keyspace = conn.keyspace
                    watch_handshake(conn, st, batch, resp)
                    return resp
                end
                err = lost(resp[1])
            end
            ring:down(node, err)
            cs.home, cs.order = ring:pick_home(), nil
        end
        return resp or message.error_batch(batch,
            "shotover: no node of the ring could be reached", OVERLOADED)
    end

    -- Whether r is a RESULT Set_keyspace.
    local function sets_keyspace(r)
        return leading_int(r, OP_RESULT) == 3
    end

    -- Which system table request m reads ("local", "peers", "peers_v2"
    -- or false), and its statement.
    local function system_of(m, conn)
        local op = m.rtype
        if op ~= OP_QUERY and op ~= OP_EXECUTE then
            return false
        end
        local rec = op == OP_EXECUTE and session.prepared(m)
        if rec and rec.ring_system ~= nil then
            return rec.ring_system, rec.ring_ast
        end
        local ast, ks = m:statement(conn)
        local which = peers.system_table(ast, ks) or false
        if rec then
            rec.ring_system, rec.ring_ast = which, ast
        end
        return which, ast
    end

    -- After the replies: rewrite those of system.local and system.peers.
    -- The real system.local row is kept first: columns of peers that no
    -- real peer row gives (one node behind several shotover instances)
    -- come from it, schema_version included, so it must be fresh: a
    -- driver waiting for schema agreement compares them.
    local function rewrite_system(self, ring, chain, batch, resp, served)
        local conn = chain.conn
        local found
        for i = 1, batch.n do
            local which = system_of(batch[i], conn)
            if which then
                found = found or {}
                found[#found + 1] = i
                if which == "local" then
                    local ok, t = pcall(rows.read, resp[i], batch[i])
                    if ok and t and t[1] then
                        ring.local_raw = rows.by_name(t, 1)
                        ring.local_at = now_ns()
                    end
                end
            end
        end
        if found == nil then
            return
        end
        for _, i in ipairs(found) do
            local m = batch[i]
            local which, ast = system_of(m, conn)
            if which ~= "local" and served[i]
               and (ring.local_at or 0) < now_ns() - 1e8 then
                -- peers asked alone: system.local's row, as it is now
                pcall(function()
                    local q = request.query(ring_mod.LOCAL_QUERY, nil, {
                        version = band(m.data[0], 0x7f), stream = m.argc,
                        consistency = "ONE" })
                    local t = rows.read(send(served[i].pool, chain,
                                             constant_batch(1, q))[1])
                    if t and t[1] then
                        ring.local_raw = rows.by_name(t, 1)
                        ring.local_at = now_ns()
                    end
                end)
            end
            local ok, err = pcall(peers.rewrite, resp[i], m, which, ast,
                                  self.view, ring.local_raw)
            if not ok then
                require("shotover.log").warn("%s: system.%s reply not "
                    .. "rewritten: %s", self.name, which, tostring(err))
            end
        end
    end

    -- REGISTER bytes reg sent again to node, on the stream of request m:
    -- whether the node took it.
    local function register_on(node, chain, reg, m)
        local stream = char(band(rshift(m.argc, 8), 0xff), band(m.argc, 0xff))
        local f = assert(message.frame_from_cql(reg:sub(1, 2) .. stream
                                                .. reg:sub(5)))
        local r = send(node.pool, chain, constant_batch(1, f))[1]
        return r ~= nil and r.rtype ~= OP_ERROR
    end

    -- The client's home node is down: the next usable node becomes its
    -- home, and its REGISTER (events the client asked for came on the
    -- home's connection, now lost) is sent there again, on the stream of
    -- the batch's first request (not in flight yet).
    local function move_home(self, ring, cs, chain, batch)
        local now = now_ns()
        for _, node in ipairs(home_order(ring, cs)) do
            if node.down_until <= now and node ~= cs.home then
                local why = open_on(self, chain, node, batch)
                if why == nil and cs.register ~= nil
                   and not register_on(node, chain, cs.register, batch[1]) then
                    why = "REGISTER refused"
                end
                if why == nil then
                    cs.home, cs.order = node, nil
                    return
                end
                ring:down(node, why)
            end
        end
    end

    local function sender(pool, chain)
        return function(b)
            return send(pool, chain, b)
        end
    end

    function methods.ring_transform(self, batch, chain)
        local ring = self.ring
        local conn = chain.conn
        local cs = conn[ring]
        if cs == nil then
            cs = { home = ring:pick_home() }
            conn[ring] = cs
        end
        if not conn.cql_handshake_done then
            return handshake(self, ring, cs, chain, batch)
        end
        local now = now_ns()
        if not ring.refreshing and now - ring.refreshed > STALE_NS
           and (not ring.known or ring.stale or (self.refresh_ns > 0
                and now - ring.refreshed > self.refresh_ns)) then
            refresh(self, ring, cs, chain, batch)
        end
        if cs.home.down_until > now then
            move_home(self, ring, cs, chain, batch)
        end
        local n = batch.n
        -- tables a QUERY names are learnt first (its literal key's bytes
        -- depend on the column types), through the home node
        for i = 1, n do
            if batch[i].rtype == OP_QUERY then
                if open_on(self, chain, cs.home, batch) == nil then
                    cql_schema.prepare(chain, batch, nil,
                                       sender(cs.home.pool, chain))
                end
                break
            end
        end
        local resp = new_batch(n)
        local cands, pos, todo, served = {}, {}, {}, {}
        for i = 1, n do
            cands[i] = route(ring, chain, batch[i]) or home_order(ring, cs)
            pos[i] = 0
            todo[i] = i
        end
        local ks0 = conn.keyspace
        local reprepared
        while #todo > 0 do
            local groups, order = {}, {}
            now = now_ns()
            for _, i in ipairs(todo) do
                local list, k = cands[i], pos[i] + 1
                local pick = k
                while list[pick] ~= nil and list[pick].down_until > now do
                    pick = pick + 1
                end
                if list[pick] == nil then
                    pick = k                    -- all down: try anyway
                end
                local node = list[pick]
                if node == nil then
                    resp:set(i, resp[i] or message.error_reply(batch[i],
                        "shotover: no node of the ring could serve this "
                        .. "request", OVERLOADED))
                else
                    pos[i] = pick
                    local g = groups[node]
                    if g == nil then
                        g = { node = node, b = new_batch(0), idx = {} }
                        groups[node] = g
                        order[#order + 1] = g
                    end
                    g.b:push(batch[i])
                    g.idx[#g.idx + 1] = i
                end
            end
            todo = {}
            local waiting = false
            for _, g in ipairs(order) do
                local why = open_on(self, chain, g.node, batch)
                if why ~= nil then
                    ring:down(g.node, why)
                    for _, i in ipairs(g.idx) do
                        todo[#todo + 1] = i     -- nothing was sent
                    end
                else
                    g.resp = new_batch(g.b.n)
                    if C.sh_ffi_cql_send(g.node.pool, chain.c, g.b, g.resp)
                       == AGAIN then
                        waiting = true
                    end
                end
            end
            if waiting then
                chain:wait()
            end
            for _, g in ipairs(order) do
                if g.resp ~= nil then
                    for k, i in ipairs(g.idx) do
                        local r = g.resp[k]
                        local why = lost(r)
                        local id = why == nil and unprepared_id(r)
                        if why ~= nil then
                            ring:down(g.node, why)
                            if retryable(batch[i], conn)
                               and cands[i][pos[i] + 1] ~= nil then
                                todo[#todo + 1] = i
                            end
                        elseif id and not (reprepared and reprepared[i]) then
                            -- the node has not seen the statement: prepare
                            -- it there, then send the request again
                            local rec = session.prepared_by_id(id)
                            if rec then
                                reprepared = reprepared or {}
                                reprepared[i] = true
                                local m = batch[i]
                                send(g.node.pool, chain, constant_batch(1,
                                    request.prepare(rec.query, {
                                        version = band(m.data[0], 0x7f),
                                        stream = m.argc })))
                                pos[i] = pos[i] - 1
                                todo[#todo + 1] = i
                            end
                        end
                        resp:set(i, r)
                        served[i] = g.node
                    end
                end
            end
        end
        for i = 1, n do
            local m = batch[i]
            if m.rtype == OP_REGISTER and served[i] == cs.home then
                cs.register = m:raw()           -- for move_home
            end
        end
        rewrite_system(self, ring, chain, batch, resp, served)
        learn(conn, batch, resp)
        if conn.keyspace ~= ks0 then
            for i = 1, n do
                if served[i] and sets_keyspace(resp[i]) then
                    node_state(conn, served[i]).keyspace = conn.keyspace
                end
            end
        end
        return resp
    end
end
