-- `shotover route-test -c CONF CASES.lua`: run each case's request through
-- its source's chain, built dry, and compare the path it took with the one
-- the case expects.  TAP on stdout; exit 0 when every case passes, 1 when
-- one does not, 2 for a usage, config or case-file error.  The case file
-- format is in docs/route-test.md.
local common = require "shotover.cli.common"
local trace = require "shotover.trace"
local redact = require "shotover.redact"

local concat = table.concat
local fmt = string.format
local type = type
local tostring = tostring

local _M = { _VERSION = "0.1.0" }

local USAGE = "usage: shotover route-test -c CONF CASES.lua [-v]\n"

-- the keys a case may have, and what an expectation is
local CASE_KEYS = {
    [1] = true, name = true, source = true, redis = true, cql = true,
    values = true, consistency = true,
    path = true, route = true, sink = true, answered_by = true,
    filtered = true, throttled = true, error = true, reply = true,
    sent = true,
}

local function show(v)
    if type(v) == "table" then
        local t = {}
        for i, x in ipairs(v) do
            t[i] = show(x)
        end
        return "{ " .. concat(t, ", ") .. " }"
    elseif type(v) == "string" then
        return fmt("%q", v)
    end
    return tostring(v)
end

-- chain name `got` is route `want` when equal, or when it ends in
-- "/" .. want ("route1" matches "redis/route1")
local function route_is(got, want)
    if got == nil then
        return false
    end
    return got == want or got:sub(-(#want + 1)) == "/" .. want
end

-- What the request did, in words, for "got" lines.
local function outcome(s, reply)
    if s.failed and not s.answered then
        return fmt('raised in %s[%d] %s: %s', s.failed.chain, s.failed.index,
                   s.failed.element, s.failed.error)
    end
    local a = s.answered
    if a == nil then
        return "no element answered"
    end
    local what
    if a.terminal then
        what = fmt('reached sink "%s"', a.element)
    elseif s.throttled then
        what = fmt('throttled by "%s"', a.element)
    elseif s.filtered then
        what = fmt('filtered by "%s"', a.element)
    else
        what = fmt('answered by "%s"', a.element)
    end
    return fmt("%s in chain %s, reply %s", what, a.chain, reply)
end

-- Compare; returns a list of "expected ..., got ..." lines (empty: pass).
local function check(case, s, reply_text, reply_err, protocol)
    local bad = {}
    local function mismatch(key, want, got)
        bad[#bad + 1] = fmt("%s: expected %s, got %s", key, show(want),
                            show(got))
    end
    if case.path ~= nil then
        local same = #case.path == #s.path
        for i = 1, #case.path do
            same = same and case.path[i] == s.path[i]
        end
        if not same then
            mismatch("path", case.path, s.path)
        end
    end
    if case.route ~= nil and not route_is(s.route, case.route) then
        mismatch("route", case.route, s.route or "(none)")
    end
    if case.sink ~= nil then
        local got = s.sink and s.sink.element or false
        if case.sink == false then
            if got then
                mismatch("sink", false, got)
            end
        elseif got ~= case.sink then
            mismatch("sink", case.sink, got or "no sink")
        end
    end
    if case.answered_by ~= nil then
        local got = s.answered and s.answered.element or "(none)"
        if got ~= case.answered_by then
            mismatch("answered_by", case.answered_by, got)
        end
    end
    if case.filtered ~= nil and case.filtered ~= s.filtered then
        mismatch("filtered", case.filtered, s.filtered)
    end
    if case.throttled ~= nil and case.throttled ~= s.throttled then
        mismatch("throttled", case.throttled, s.throttled)
    end
    if case.error ~= nil then
        if case.error == false then
            if reply_err then
                mismatch("error", false, reply_text)
            end
        elseif not reply_err then
            mismatch("error", case.error, "no error: " .. reply_text)
        elseif type(case.error) == "string"
               and not reply_text:find(case.error, 1, true)
        then
            mismatch("error", case.error, reply_text)
        end
    end
    if case.reply ~= nil and case.reply ~= reply_text then
        mismatch("reply", case.reply, reply_text)
    end
    if case.sent ~= nil then
        local got = s.sink and s.sink.requests[1] or "(no sink)"
        local want = case.sent
        if protocol == "redis" then
            local f = common.request("redis", case.sent)
            want = f and trace.show(f) or case.sent
        end
        if protocol == "cassandra" and type(want) == "string" then
            want = redact.statement(want)   -- as the trace shows it
        end
        local ok = got == want
        if protocol == "cassandra" and not ok and type(want) == "string" then
            local q = "QUERY " .. fmt("%q", want)
            ok = got == q or got:sub(1, #q + 2) == q .. " ["
        end
        if not ok then
            mismatch("sent", want, got)
        end
    end
    return bad
end

-- Validate the case file's table.  Returns list of errors.
local function validate(file, sources)
    local errs = {}
    if type(file) ~= "table" or type(file.cases) ~= "table" then
        return { "the case file must return { cases = { ... } }" }
    end
    for k in pairs(file) do
        if k ~= "cases" and k ~= "source" then
            errs[#errs + 1] = fmt("unknown key %s (cases, source)", show(k))
        end
    end
    if file.source ~= nil and not sources.by_name[file.source] then
        errs[#errs + 1] = fmt("source: no source named %s in the config",
                              show(file.source))
    end
    for i, c in ipairs(file.cases) do
        local p = fmt("cases[%d]", i)
        if type(c) ~= "table" then
            errs[#errs + 1] = p .. ": expected a table"
        else
            for k in pairs(c) do
                if not CASE_KEYS[k] then
                    errs[#errs + 1] = fmt("%s: unknown key %s", p, show(k))
                end
            end
            local n = (c[1] ~= nil and 1 or 0) + (c.redis ~= nil and 1 or 0)
                      + (c.cql ~= nil and 1 or 0)
            if n ~= 1 then
                errs[#errs + 1] = p .. ": give the request once: [1], redis "
                                  .. "= ... or cql = ..."
            end
            if c.source ~= nil and not sources.by_name[c.source] then
                errs[#errs + 1] = fmt("%s.source: no source named %s", p,
                                      show(c.source))
            end
            if c.path ~= nil and type(c.path) ~= "table" then
                errs[#errs + 1] = p .. ".path: expected a list of element "
                                  .. "names"
            end
        end
    end
    return errs
end

-- Run the cases of table `file` against the dry chains `sources`, writing
-- TAP to out (a function taking a line).  Returns the number of failures.
function _M.run_cases(file, sources, out, verbose)
    local cases = file.cases
    out("1.." .. #cases)
    local failed = 0
    for i, c in ipairs(cases) do
        local src = sources.by_name[c.source or file.source or ""]
                    or sources[1]
        local req = c[1] or c.redis or c.cql
        local protocol = c.redis and "redis" or c.cql and "cassandra"
                         or src.protocol
        local title = c.name or (type(req) == "table" and concat(req, " ")
                                 or tostring(req))
        local f, err
        if protocol ~= src.protocol then
            err = fmt("a %s request for %s source %q", protocol,
                      src.protocol, src.name)
        else
            f, err = common.request(protocol, req, c.values,
                                    { consistency = c.consistency })
        end
        if f and c.name == nil then
            -- a title made of the request shows no credential of it
            title = redact.scrub(title, f)
        end
        if not f then
            failed = failed + 1
            out(fmt("not ok %d - %s", i, title))
            out("# bad request: " .. tostring(err))
        else
            local reply, tr = common.run(src, f)
            local reply_text = trace.show(reply, f)
            local reply_err = common.is_error(reply)
            local s = trace.summary(tr, reply_err)
            local bad = check(c, s, reply_text, reply_err, protocol)
            if #bad == 0 then
                out(fmt("ok %d - %s", i, title))
            else
                failed = failed + 1
                out(fmt("not ok %d - %s", i, title))
                for _, line in ipairs(bad) do
                    out("# " .. line)
                end
                out("# " .. outcome(s, reply_text))
            end
            if #bad > 0 or verbose then
                for line in trace.format(tr):gmatch("[^\n]+") do
                    out("#   " .. line)
                end
            end
        end
    end
    if failed > 0 then
        out(fmt("# %d of %d cases failed", failed, #cases))
    end
    return failed
end

function _M.main(args)
    local conf_path, cases_path, verbose
    local i = 1
    while i <= #args do
        local a = args[i]
        if (a == "-c" or a == "--config") and args[i + 1] then
            conf_path = args[i + 1]
            i = i + 1
        elseif a == "-v" or a == "--verbose" then
            verbose = true
        elseif a == "-h" or a == "--help" then
            io.stdout:write(USAGE)
            return 0
        elseif cases_path == nil and a:sub(1, 1) ~= "-" then
            cases_path = a
        else
            io.stderr:write("shotover: unexpected argument \"" .. a .. "\"\n"
                            .. USAGE)
            return 2
        end
        i = i + 1
    end
    if conf_path == nil or cases_path == nil then
        io.stderr:write(USAGE)
        return 2
    end
    local conf, sources = common.load_dry(conf_path)
    if not conf then
        io.stderr:write(sources, "\n")
        return 2
    end
    local chunk, err = loadfile(cases_path)
    if not chunk then
        io.stderr:write("shotover: cannot load ", tostring(err), "\n")
        return 2
    end
    local ok, file = pcall(chunk)
    if not ok then
        io.stderr:write("shotover: ", cases_path, " raised an error: ",
                        tostring(file), "\n")
        return 2
    end
    local errs = validate(file, sources)
    if #errs > 0 then
        for _, e in ipairs(errs) do
            io.stderr:write(cases_path, ": ", e, "\n")
        end
        return 2
    end
    local failed = _M.run_cases(file, sources, function(line)
        io.stdout:write(line, "\n")
    end, verbose)
    io.stdout:flush()
    return failed > 0 and 1 or 0
end

return _M
