-- Dry sinks: what the redis and cassandra sinks answer when their chain was
-- built without a worker (env.worker == nil), as `shotover route-test` and
-- `shotover repl --dry` build them.  Nothing is sent anywhere; the request
-- the sink would have sent is in the trace (its entry's `requests`) and the
-- entry is marked dry.
--   Redis: every request gets the simple string +DRY (not a nil bulk, which a
--   real server also sends: a dry reply must never pass for data).
--   CQL: the handshake is accepted (SUPPORTED, READY), USE gets RESULT
--   Set_keyspace (so later unqualified statements resolve), every other
--   QUERY, EXECUTE and BATCH gets RESULT Void, PREPARE an error.
local message = require "shotover.message"
local trace = require "shotover.trace"

local _M = { _VERSION = "0.1.0" }

-- A reply frame of its own per batch, not one shared constant: a trace
-- tells which sink's reply the client got by the frame's identity (a tee's
-- copy answers +DRY too).
function _M.redis(batch, chain)
    trace.dry(chain)
    return message.constant_batch(batch.n,
        require("shotover.redis.reply").simple("DRY"))
end

function _M.cassandra(batch, chain)
    trace.dry(chain)
    local reply = require "shotover.cql.reply"
    local resp = message.new_batch(batch.n)
    for i = 1, batch.n do
        resp:set(i, reply.without_backend(batch[i], function(req)
            local ast = req.rtype == 0x07 and req:statement(chain.conn)
            if ast and ast.kind == "use" and ast.keyspace then
                return reply.set_keyspace(req, ast.keyspace)
            end
            return reply.void(req)
        end))
    end
    return resp
end

return _M
