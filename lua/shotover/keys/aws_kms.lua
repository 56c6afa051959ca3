-- The aws_kms key manager: data keys from AWS KMS (GenerateDataKey, KeySpec
-- AES_256) and back (Decrypt), over HTTPS with SigV4 (shotover.keys.sigv4),
-- KMS's JSON 1.1 API (X-Amz-Target: TrentService.<Operation>).
--
--   key_manager = { "aws_kms", region = "eu-west-1",
--                   key_id = "alias/shotover" }
--
-- kek_id is the KeyId KMS answers (the key's ARN), wrapped its
-- CiphertextBlob; unwrap sends both back (KMS checks the blob is that
-- key's).  Credentials: access_key_id, secret_access_key and session_token
-- in the config, else AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
-- AWS_SESSION_TOKEN from the environment, read when the key manager is
-- made.
--
-- The HTTPS request is C's (c/sh_fetch.c): with a chain context it runs on
-- libuv's thread pool and the request's run waits (ctx:await) while the
-- worker serves others; without one (start-up, tools) it blocks.
--
-- Not supported: instance or container credentials (IMDS, ECS, web
-- identity), profiles in ~/.aws, HTTP proxies, encryption contexts, grant
-- tokens, retries (protect caches data keys; a failed call fails the
-- requests that needed it).
local ffi = require "ffi"
local base = require "shotover.ffi"
local message = require "shotover.message"
local password = require "shotover.password"
local sigv4 = require "shotover.keys.sigv4"

local C = base.C
local OK = base.OK
local fmt, byte, char, sub, find = string.format, string.byte, string.char,
                                   string.sub, string.find
local concat = table.concat
local ipairs, tonumber, tostring, type = ipairs, tonumber, tostring, type
local b64encode, b64decode = password.b64encode, password.b64decode

local _M = { _VERSION = "0.1.0" }

_M.DEK_LEN = 32

_M.schema = {
    region = { type = "string", required = true,
               doc = "AWS region of the key, e.g. \"eu-west-1\"" },
    key_id = { type = "string", required = true,
               doc = "the KMS key: key id, ARN, alias name "
                     .. "(\"alias/NAME\") or alias ARN" },
    endpoint = { type = "string",
                 doc = "KMS endpoint URL (default "
                       .. "https://kms.REGION.amazonaws.com)" },
    access_key_id = { type = "string",
                      doc = "access key id (default: $AWS_ACCESS_KEY_ID)" },
    secret_access_key = { type = "string", secret = true,
                          doc = "secret access key (default: "
                                .. "$AWS_SECRET_ACCESS_KEY); never logged" },
    session_token = { type = "string", secret = true,
                      doc = "session token of temporary credentials "
                            .. "(default: $AWS_SESSION_TOKEN)" },
    ca = { type = "string",
           doc = "PEM file of the CAs to trust for the endpoint (default: "
                 .. "the system's store)" },
    timeout_ms = { type = "integer", min = 1, default = 5000,
                   doc = "connect, and each read or write, timeout" },
}

-- JSON ------------------------------------------------------------------------
-- KMS's requests and answers are small flat objects: strings, numbers,
-- booleans; nested values are parsed and kept as Lua tables.

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n",
              ["\r"] = "\\r", ["\t"] = "\\t" }

local function json_string(s)
    return '"' .. s:gsub('[%c"\\]', function(c)
        return ESC[c] or fmt("\\u%04x", byte(c))
    end) .. '"'
end

-- an object of string values, keys in the order given
local function json_object(keys, t)
    local out = {}
    for i, k in ipairs(keys) do
        out[i] = json_string(k) .. ":" .. json_string(t[k])
    end
    return "{" .. concat(out, ",") .. "}"
end

local UNESC = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t",
                ['"'] = '"', ["\\"] = "\\", ["/"] = "/" }

local function utf8(cp)
    if cp < 0x80 then
        return char(cp)
    elseif cp < 0x800 then
        return char(0xc0 + math.floor(cp / 64), 0x80 + cp % 64)
    end
    return char(0xe0 + math.floor(cp / 4096),
                0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end

local decode_value

local function skip(s, i)
    return (find(s, "[^ \t\r\n]", i)) or #s + 1
end

local function decode_string(s, i)            -- s[i] == '"'
    local out, j = {}, i + 1
    while true do
        local k = find(s, '["\\]', j)
        if k == nil then
            return nil
        end
        out[#out + 1] = sub(s, j, k - 1)
        if sub(s, k, k) == '"' then
            return concat(out), k + 1
        end
        local e = sub(s, k + 1, k + 1)
        if e == "u" then
            local cp = tonumber(sub(s, k + 2, k + 5), 16)
            if cp == nil then
                return nil
            end
            out[#out + 1] = utf8(cp)
            j = k + 6
        elseif UNESC[e] then
            out[#out + 1] = UNESC[e]
            j = k + 2
        else
            return nil
        end
    end
end

function decode_value(s, i)
    i = skip(s, i)
    local c = sub(s, i, i)
    if c == '"' then
        return decode_string(s, i)
    elseif c == "{" or c == "[" then
        local t, obj = {}, c == "{"
        i = skip(s, i + 1)
        if sub(s, i, i) == (obj and "}" or "]") then
            return t, i + 1
        end
        while true do
            local k, v
            if obj then
                i = skip(s, i)
                if sub(s, i, i) ~= '"' then
                    return nil
                end
                k, i = decode_string(s, i)
                if k == nil then
                    return nil
                end
                i = skip(s, i)
                if sub(s, i, i) ~= ":" then
                    return nil
                end
                i = i + 1
            else
                k = #t + 1
            end
            v, i = decode_value(s, i)
            if i == nil then
                return nil
            end
            t[k] = v
            i = skip(s, i)
            local d = sub(s, i, i)
            if d == "," then
                i = i + 1
            elseif d == (obj and "}" or "]") then
                return t, i + 1
            else
                return nil
            end
        end
    end
    local lit = s:match("^[%w%.%+%-]+", i)
    if lit == "true" then
        return true, i + 4
    elseif lit == "false" then
        return false, i + 5
    elseif lit == "null" then
        return ffi.NULL, i + 4
    elseif lit and tonumber(lit) then
        return tonumber(lit), i + #lit
    end
    return nil
end

-- the value JSON text s holds, or nil
function _M.json_decode(s)
    local v, i = decode_value(s, 1)
    if v == nil or skip(s, i) <= #s then
        return nil
    end
    return v
end

-- Config ---------------------------------------------------------------------

-- "https://host[:port][/]" -> host, port
local function parse_endpoint(url)
    if type(url) ~= "string" then
        return nil
    end
    local rest = url:match("^https://(.-)/?$")
    if rest == nil then
        return nil
    end
    local host, port = rest:match("^%[([%x:%.]+)%]:?(%d*)$")
    if not host then
        host, port = rest:match("^([%w%.%-]+):?(%d*)$")
    end
    port = port == "" and 443 or tonumber(port)
    if not host or not port or port < 1 or port > 65535 then
        return nil
    end
    return host, port
end
_M.parse_endpoint = parse_endpoint

local function default_endpoint(conf)
    return "https://kms." .. tostring(conf.region) .. ".amazonaws.com"
end

local function env(name)
    local v = os.getenv(name)
    if v == "" then
        return nil
    end
    return v
end

-- the credentials: key id, secret, token (or nil), or nil and what is
-- missing
local function credentials(conf, path)
    if conf.access_key_id ~= nil or conf.secret_access_key ~= nil then
        if conf.access_key_id == nil or conf.secret_access_key == nil then
            return nil, path .. ": give both access_key_id and "
                        .. "secret_access_key, or neither (the environment's)"
        end
        return conf.access_key_id, conf.secret_access_key, conf.session_token
    end
    local id, secret = env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")
    if id == nil or secret == nil then
        return nil, path .. ": no credentials: give access_key_id and "
                    .. "secret_access_key, or set AWS_ACCESS_KEY_ID and "
                    .. "AWS_SECRET_ACCESS_KEY"
    end
    return id, secret, conf.session_token or env("AWS_SESSION_TOKEN")
end

-- Checks beyond the schema's: the endpoint's form, credentials somewhere,
-- a readable CA file.  Returns a list of errors, each starting with path or
-- the path of the bad key.
function _M.check(conf, path)
    local errs = {}
    if type(conf.region) == "string"
        and not conf.region:match("^[a-z0-9%-]+$")
    then
        errs[#errs + 1] = path .. ".region: expected a region name like "
                          .. "\"eu-west-1\""
    end
    if conf.endpoint ~= nil and not parse_endpoint(conf.endpoint) then
        errs[#errs + 1] = path .. ".endpoint: expected "
                          .. "\"https://HOST[:PORT]\", got "
                          .. fmt("%q", tostring(conf.endpoint))
    end
    local id, err = credentials(conf, path)
    if id == nil then
        errs[#errs + 1] = err
    end
    if type(conf.ca) == "string" then
        local f, e = io.open(conf.ca, "rb")
        if f == nil then
            errs[#errs + 1] = path .. ".ca: " .. e
        else
            f:close()
        end
    end
    return errs
end

-- Key manager -------------------------------------------------------------

local KM = {}
KM.__index = KM

-- A key manager for conf (it passed check; path is the key_manager table's
-- config path), or nil and an error starting with path.
function _M.new(conf, path)
    local endpoint = conf.endpoint or default_endpoint(conf)
    local host, port = parse_endpoint(endpoint)
    if not host then
        return nil, path .. ".endpoint: expected \"https://HOST[:PORT]\""
    end
    local id, secret, token = credentials(conf, path)
    if id == nil then
        return nil, secret
    end
    local host_header = find(host, ":", 1, true) and "[" .. host .. "]"
                        or host
    if port ~= 443 then
        host_header = host_header .. ":" .. port
    end
    return setmetatable({
        path = path, region = conf.region, key_id = conf.key_id,
        host = host, port = port, host_header = host_header,
        access_key = id, secret_key = secret, session_token = token,
        ca = conf.ca, timeout_ms = conf.timeout_ms or 5000,
    }, KM)
end

local fconf = ffi.new("sh_fetch_conf_t")
local fetch_out = ffi.new("sh_fetch_t *[1]")
local errp = ffi.new("const char *[1]")
local resp_p = ffi.new("const uint8_t *[1]")
local resp_len = ffi.new("size_t[1]")

-- The HTTP response text of request req: on the thread pool while ctx's
-- run waits, or here and now without a run.  Returns the text, or nil
-- and the error ("ECONNREFUSED: ...", "TLS: ...").
function KM:fetch(req, ctx)
    fconf.host = self.host
    fconf.port = self.port
    fconf.ca_file = self.ca
    fconf.request = req
    fconf.request_len = #req
    fconf.timeout_ms = self.timeout_ms
    fconf.max_response = 65536
    if C.sh_ffi_fetch_new(fconf, fetch_out, errp) ~= OK then
        return nil, ffi.string(errp[0])
    end
    local f = ffi.gc(fetch_out[0], C.sh_ffi_fetch_free)
    local run = ctx and ctx.c
    if run ~= nil then
        local b = message.new_batch(0)
        if C.sh_ffi_fetch_queue(f, run, b, errp) ~= OK then
            return nil, ffi.string(errp[0])
        end
        ctx:await(b, 1)
    else
        C.sh_ffi_fetch_run(f)
    end
    local rc = C.sh_ffi_fetch_result(f, resp_p, resp_len, errp)
    local text, err
    if rc == OK then
        text = ffi.string(resp_p[0], resp_len[0])
    else
        err = ffi.string(errp[0])
    end
    C.sh_ffi_fetch_free(ffi.gc(f, nil))
    return text, err
end

-- status, headers (lower-case names), body of HTTP response text
local function parse_response(text)
    local head_end = find(text, "\r\n\r\n", 1, true)
    if head_end == nil then
        return nil
    end
    local head = sub(text, 1, head_end - 1)
    local status = tonumber(head:match("^HTTP/1%.[01] (%d%d%d)"))
    if status == nil then
        return nil
    end
    local headers = {}
    for name, value in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
        headers[name:lower()] = value
    end
    local body = sub(text, head_end + 4)
    local clen = tonumber(headers["content-length"])
    if clen then
        body = sub(body, 1, clen)
    end
    return status, headers, body
end

-- Call KMS operation op (e.g. "GenerateDataKey") with the JSON object
-- body; the decoded answer, or nil and an error naming the operation and,
-- for KMS's own errors, its error type ("InvalidSignatureException").
function KM:call(op, body, ctx)
    local signed = sigv4.sign({
        method = "POST", path = "/", region = self.region, service = "kms",
        access_key = self.access_key, secret_key = self.secret_key,
        session_token = self.session_token,
        headers = {
            { "Host", self.host_header },
            { "Content-Type", "application/x-amz-json-1.1" },
            { "X-Amz-Target", "TrentService." .. op },
        },
        body = body,
    })
    local lines = { "POST / HTTP/1.1" }
    for _, h in ipairs(signed.headers) do
        lines[#lines + 1] = h[1] .. ": " .. h[2]
    end
    lines[#lines + 1] = "Content-Length: " .. #body
    lines[#lines + 1] = "Connection: close"
    lines[#lines + 1] = ""
    lines[#lines + 1] = body
    local text, err = self:fetch(concat(lines, "\r\n"), ctx)
    if text == nil then
        return nil, fmt("%s: KMS %s at %s:%d: %s", self.path, op, self.host,
                        self.port, err)
    end
    local status, _, rbody = parse_response(text)
    if status == nil then
        return nil, fmt("%s: KMS %s: not an HTTP response", self.path, op)
    end
    local answer = _M.json_decode(rbody)
    if status ~= 200 then
        local kind, msg = "HTTP " .. status, ""
        if type(answer) == "table" then
            kind = tostring(answer.__type or kind):gsub("^.*#", "")
            msg = answer.message or answer.Message or ""
            msg = type(msg) == "string" and msg or ""
        end
        return nil, fmt("%s: KMS %s: %s%s", self.path, op, kind,
                        msg ~= "" and ": " .. msg or ""), kind
    end
    if type(answer) ~= "table" then
        return nil, fmt("%s: KMS %s: the answer is not a JSON object",
                        self.path, op)
    end
    return answer
end

local function b64field(answer, name)
    local v = answer[name]
    return type(v) == "string" and b64decode(v) or nil
end

-- A fresh data key from KMS: dek (32 bytes), wrapped (the CiphertextBlob),
-- kek_id (the key's ARN as KMS answers it); or nil and an error.
function KM:data_key(ctx)
    local answer, err, kind = self:call("GenerateDataKey", json_object(
        { "KeyId", "KeySpec" }, { KeyId = self.key_id, KeySpec = "AES_256" }),
        ctx)
    if answer == nil then
        return nil, err, kind
    end
    local dek, wrapped = b64field(answer, "Plaintext"),
                         b64field(answer, "CiphertextBlob")
    local kek_id = answer.KeyId
    if dek == nil or #dek ~= _M.DEK_LEN or wrapped == nil
        or type(kek_id) ~= "string" or #kek_id == 0 or #kek_id > 255
    then
        return nil, fmt("%s: KMS GenerateDataKey: an answer without a "
                        .. "32-byte Plaintext, a CiphertextBlob and a KeyId",
                        self.path)
    end
    return dek, wrapped, kek_id
end

-- The data key of wrapped (a CiphertextBlob from data_key, under the key
-- kek_id), or nil and an error.
function KM:unwrap(wrapped, kek_id, ctx)
    local answer, err, kind = self:call("Decrypt", json_object(
        { "CiphertextBlob", "KeyId" },
        { CiphertextBlob = b64encode(wrapped), KeyId = kek_id }), ctx)
    if answer == nil then
        return nil, err, kind
    end
    local dek = b64field(answer, "Plaintext")
    if dek == nil or #dek ~= _M.DEK_LEN then
        return nil, fmt("%s: KMS Decrypt: an answer without a 32-byte "
                        .. "Plaintext", self.path)
    end
    return dek
end

_M.parse_response = parse_response     -- for the spec

return _M
