-- A small schema checker for config tables.  A schema maps each key to
-- { type = ..., required = bool, default = v, min = n, max = n,
--   values = { ... } (enum), check = function(v) -> ok, msg,
--   secret = bool (a password or token: its errors never show it) }.
-- Types: string, integer, number, boolean, table, function, enum,
-- hostport ("host:port"), workers (integer >= 1 or "auto").
local type = type
local pairs = pairs
local tostring = tostring
local concat = table.concat
local sort = table.sort
local fmt = string.format
local floor = math.floor

local _M = { _VERSION = "0.1.0" }

-- How a value reads in an error message.
function _M.show(v)
    local t = type(v)
    if t == "string" then
        return fmt("%q", v)
    elseif t == "number" or t == "boolean" or t == "nil" then
        return tostring(v)
    end
    return "a " .. t
end
local show = _M.show

-- v in an error about a key of spec `spec`: a secret shows only its type
local function shown(spec, v)
    if spec.secret then
        return "a " .. type(v)
    end
    return show(v)
end

-- "host:port" -> host, port ; "[::1]:6379" too.
function _M.parse_hostport(s)
    if type(s) ~= "string" then
        return nil
    end
    local host, port = s:match("^%[([%x:%.]+)%]:(%d+)$")
    if not host then
        host, port = s:match("^([%w%.%-_]+):(%d+)$")
    end
    port = tonumber(port)
    if not host or not port or port < 1 or port > 65535 then
        return nil
    end
    return host, port
end

local checkers = {
    string = function(v)
        return type(v) == "string", "expected a string"
    end,
    number = function(v)
        return type(v) == "number", "expected a number"
    end,
    integer = function(v)
        return type(v) == "number" and v == floor(v), "expected an integer"
    end,
    boolean = function(v)
        return type(v) == "boolean", "expected true or false"
    end,
    table = function(v)
        return type(v) == "table", "expected a table"
    end,
    ["function"] = function(v)
        return type(v) == "function", "expected a function"
    end,
    hostport = function(v)
        return _M.parse_hostport(v) ~= nil, 'expected "host:port"'
    end,
    workers = function(v)
        return v == "auto" or (type(v) == "number" and v == floor(v)
                               and v >= 1 and v <= 1024),
               'expected a number of workers (1-1024) or "auto"'
    end,
}

-- Check tbl against sch, appending "path.key: message" to errs and filling
-- in defaults.  Unknown keys are errors too: a typo must not pass silently.
function _M.check(tbl, sch, path, errs)
    local prefix = path == "" and "" or path .. "."
    local keys = {}
    for k in pairs(sch) do
        keys[#keys + 1] = k
    end
    sort(keys)
    for _, k in pairs(keys) do
        local spec = sch[k]
        local v = tbl[k]
        if v == nil then
            if spec.required then
                errs[#errs + 1] = fmt("%s%s: required", prefix, k)
            elseif spec.default ~= nil then
                tbl[k] = spec.default
            end
        elseif spec.type == "enum" then
            local ok = false
            for _, allowed in pairs(spec.values) do
                ok = ok or v == allowed
            end
            if not ok then
                local names = {}
                for i, allowed in pairs(spec.values) do
                    names[i] = fmt("%q", allowed)
                end
                errs[#errs + 1] = fmt("%s%s: expected one of %s, got %s",
                                      prefix, k, concat(names, ", "),
                                      shown(spec, v))
            end
        else
            local ok, msg = checkers[spec.type](v)
            if not ok then
                errs[#errs + 1] = fmt("%s%s: %s, got %s", prefix, k, msg,
                                      shown(spec, v))
            elseif spec.min and v < spec.min then
                errs[#errs + 1] = fmt("%s%s: must be at least %s, got %s",
                                      prefix, k, tostring(spec.min),
                                      shown(spec, v))
            elseif spec.max and v > spec.max then
                errs[#errs + 1] = fmt("%s%s: must be at most %s, got %s",
                                      prefix, k, fmt("%.0f", spec.max),
                                      shown(spec, v))
            elseif spec.check then
                local ok2, msg2 = spec.check(v)
                if not ok2 then
                    errs[#errs + 1] = fmt("%s%s: %s", prefix, k, msg2)
                end
            end
        end
    end
    local unknown = {}
    for k in pairs(tbl) do
        if sch[k] == nil then
            unknown[#unknown + 1] = tostring(k)
        end
    end
    sort(unknown)
    for _, k in pairs(unknown) do
        errs[#errs + 1] = fmt("%s%s: unknown key", prefix, k)
    end
end

return _M
