-- AWS Signature Version 4 (the "Signing AWS API requests" process of the
-- IAM user guide): the canonical request, the string to sign, the signing
-- key chain and the Authorization header, with SHA-256 and HMAC-SHA256 from
-- OpenSSL's libcrypto through the FFI (loaded like shotover.password's:
-- the binary does not link it).
--
-- Tested against AWS's published SigV4 test suite (t/fixtures/sigv4/,
-- t/unit/220-sigv4_spec.lua); the aws_kms key manager signs with it.
--
-- Not supported: path normalisation ("/./", "/../", "//" are signed as
-- given: every request we sign has the path "/"), S3's single-encoded
-- paths and UNSIGNED-PAYLOAD, query-string (presigned) signing, SigV4A.
local ffi = require "ffi"

local byte, char, fmt, gsub, lower = string.byte, string.char, string.format,
                                     string.gsub, string.lower
local concat, sort = table.concat, table.sort
local ipairs, pcall, type = ipairs, pcall, type

local _M = { _VERSION = "0.1.0" }

_M.ALGORITHM = "AWS4-HMAC-SHA256"

-- Each declaration on its own, so one another module made already (the
-- same libcrypto function) does not stop the others.
for _, decl in ipairs({
    "typedef struct evp_md_st EVP_MD;",
    "typedef struct engine_st ENGINE;",
    "const EVP_MD *EVP_sha256(void);",
    "int EVP_Digest(const void *data, size_t count, unsigned char *md, "
        .. "unsigned int *size, const EVP_MD *type, ENGINE *impl);",
    "unsigned char *HMAC(const EVP_MD *evp_md, const void *key, "
        .. "int key_len, const unsigned char *d, size_t n, "
        .. "unsigned char *md, unsigned int *md_len);",
}) do
    pcall(ffi.cdef, decl)
end

local lib = require "shotover.libcrypto"

local md = ffi.new("unsigned char[32]")
local mdlen = ffi.new("unsigned int[1]")

-- the 32-byte SHA-256 of s
function _M.sha256(s)
    local l = lib()
    if l.EVP_Digest(s, #s, md, mdlen, l.EVP_sha256(), nil) ~= 1 then
        error("EVP_Digest failed", 2)
    end
    return ffi.string(md, 32)
end

-- the 32-byte HMAC-SHA256 of s under key
function _M.hmac(key, s)
    local l = lib()
    if l.HMAC(l.EVP_sha256(), key, #key, s, #s, md, mdlen) == nil then
        error("HMAC failed", 2)
    end
    return ffi.string(md, 32)
end

function _M.hex(s)
    return (gsub(s, ".", function(c) return fmt("%02x", byte(c)) end))
end

-- RFC 3986 percent-encoding of everything but the unreserved characters
-- (A-Z a-z 0-9 - . _ ~), upper-case hex, as SigV4 wants it; keep_slash
-- leaves "/" alone (paths).
function _M.uri_encode(s, keep_slash)
    return (gsub(s, "[^%w%-%._~/]", function(c)
        return fmt("%%%02X", byte(c))
    end):gsub("/", keep_slash and "/" or "%%2F"))
end

local function uri_decode(s)
    return (gsub(s, "%%(%x%x)", function(h)
        return char(tonumber(h, 16))
    end))
end

-- The canonical query string of query (the raw text after "?", or nil):
-- each name and value decoded and encoded again, sorted by name then value.
function _M.canonical_query(query)
    if query == nil or query == "" then
        return ""
    end
    local pairs_ = {}
    for part in query:gmatch("[^&]+") do
        local k, v = part:match("^([^=]*)=?(.*)$")
        pairs_[#pairs_ + 1] = { _M.uri_encode(uri_decode(k)),
                                _M.uri_encode(uri_decode(v)) }
    end
    sort(pairs_, function(a, b)
        if a[1] ~= b[1] then
            return a[1] < b[1]
        end
        return a[2] < b[2]
    end)
    local out = {}
    for i, p in ipairs(pairs_) do
        out[i] = p[1] .. "=" .. p[2]
    end
    return concat(out, "&")
end

-- Canonical headers from headers, a list of { name, value }: names
-- lower-cased, values trimmed with inner runs of spaces made one, a name
-- given twice joined with ",", sorted by name.  Returns the canonical
-- header block (each line ending "\n") and the signed-headers list.
function _M.canonical_headers(headers)
    local by_name, names = {}, {}
    for _, h in ipairs(headers) do
        local name = lower(h[1])
        local value = gsub(gsub(h[2], "^%s+", ""), "%s+$", "")
        value = gsub(value, "%s+", " ")
        if by_name[name] == nil then
            names[#names + 1] = name
            by_name[name] = value
        else
            by_name[name] = by_name[name] .. "," .. value
        end
    end
    sort(names)
    local lines = {}
    for i, name in ipairs(names) do
        lines[i] = name .. ":" .. by_name[name] .. "\n"
    end
    return concat(lines), concat(names, ";")
end

-- The signing key of secret for date (YYYYMMDD), region and service.
function _M.signing_key(secret, date, region, service)
    local k = _M.hmac("AWS4" .. secret, date)
    k = _M.hmac(k, region)
    k = _M.hmac(k, service)
    return _M.hmac(k, "aws4_request")
end

-- Sign request r:
--   r.method, r.path ("/" when nil), r.query (raw, or nil), r.headers (a
--   list of { name, value }, the Host header among them), r.body (string,
--   "" when nil), r.region, r.service, r.access_key, r.secret_key,
--   r.session_token (optional), r.amz_date ("YYYYMMDDTHHMMSSZ", now when
--   nil).
-- X-Amz-Date (and X-Amz-Security-Token with a session token) are added to
-- the signed headers unless r.headers has them already.  Returns a table:
-- canonical_request, string_to_sign, signature (hex), signed_headers,
-- authorization (the header's value), and headers: r.headers plus the added
-- ones and Authorization, what to send.
function _M.sign(r)
    if type(r.headers) ~= "table" then
        error("sigv4.sign: headers must be a list of { name, value }", 2)
    end
    local amz_date = r.amz_date or os.date("!%Y%m%dT%H%M%SZ")
    local headers, have = {}, {}
    for i, h in ipairs(r.headers) do
        headers[i] = h
        have[lower(h[1])] = true
    end
    if not have["x-amz-date"] then
        headers[#headers + 1] = { "X-Amz-Date", amz_date }
    end
    if r.session_token and not have["x-amz-security-token"] then
        headers[#headers + 1] = { "X-Amz-Security-Token", r.session_token }
    end
    local canon_headers, signed = _M.canonical_headers(headers)
    local creq = concat({
        r.method,
        _M.uri_encode(r.path or "/", true),
        _M.canonical_query(r.query),
        canon_headers,
        signed,
        _M.hex(_M.sha256(r.body or "")),
    }, "\n")
    local date = amz_date:sub(1, 8)
    local scope = concat({ date, r.region, r.service, "aws4_request" }, "/")
    local sts = concat({ _M.ALGORITHM, amz_date, scope,
                         _M.hex(_M.sha256(creq)) }, "\n")
    local key = _M.signing_key(r.secret_key, date, r.region, r.service)
    local sig = _M.hex(_M.hmac(key, sts))
    local authz = fmt("%s Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                      _M.ALGORITHM, r.access_key, scope, signed, sig)
    headers[#headers + 1] = { "Authorization", authz }
    return {
        canonical_request = creq,
        string_to_sign = sts,
        signature = sig,
        signed_headers = signed,
        authorization = authz,
        headers = headers,
    }
end

return _M
