-- docs/md2man.lua -- turn docs/shotover.1.md into the man page shotover.1
-- (and docs/shotover.lua.5.md into shotover.lua.5), so the pages and the
-- docs are one text.  Run by CMake at build time:
--
--   luajit docs/md2man.lua IN.md OUT.N c/sh_core.h
--
-- (the version in the page's footer is the binary's: SH_VERSION there)
--
-- The Markdown it knows is what the page uses: a "# name(N) -- summary"
-- title, "## SECTION" headings, paragraphs, ``` blocks, items
-- "- `term` -- text" (a tagged paragraph; continuation lines indented),
-- and inline `code`, **strong** and *emphasis*.  Anything else is an error,
-- so the page cannot drift into Markdown the man page would show raw.
local input, output, header = arg[1], arg[2], arg[3]
assert(input and output and header,
       "usage: md2man.lua IN.md OUT.1 sh_core.h")
local version = assert(io.open(header, "rb")):read("*a")
    :match('#define SH_VERSION "([^"]+)"')
assert(version, header .. ": no SH_VERSION")

local out = {}
local function emit(s) out[#out + 1] = s end

-- troff text: backslashes, hyphens of options and names, leading dots
local function escape(s)
    s = s:gsub("\\", "\\e")
    return s
end

local function inline(s)
    s = escape(s)
    -- code spans first, kept aside: a `*` in one is no emphasis
    local codes = {}
    s = s:gsub("`([^`]+)`", function(c)
        codes[#codes + 1] = "\\fB" .. c:gsub("%-", "\\-") .. "\\fR"
        return "\1" .. #codes .. "\2"
    end)
    s = s:gsub("%*%*([^*]+)%*%*", "\\fB%1\\fR")
    s = s:gsub("%*([^*]+)%*", "\\fI%1\\fR")
    s = s:gsub(" %-%- ", " \\(em ")
    if s:find("[`*]") then
        error(input .. ": unsupported markup in: " .. s, 0)
    end
    return (s:gsub("\1(%d+)\2", function(n) return codes[tonumber(n)] end))
end

local function line_out(s)
    if s:find("^[.']") then s = "\\&" .. s end
    emit(s)
end

local text = assert(io.open(input, "rb")):read("*a")
text = text:gsub("<!%-%-.-%-%->\n*", "")        -- comments are for editors
local lines = {}
for l in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end

local i, para = 1, false
while i <= #lines do
    local l = lines[i]
    local name, sect, summary = l:match("^# (%S+)%((%d)%) %-%- (.+)$")
    if name then
        emit(string.format('.TH %s %s "" "shotover %s" "%s"',
                           name:upper(), sect, version,
                           sect == "5" and "File Formats" or "User Commands"))
        emit(".SH NAME")
        emit(name .. " \\- " .. inline(summary))
        i = i + 1
    elseif l:find("^## ") then
        emit(".SH " .. inline(l:sub(4)))
        para = false
        i = i + 1
    elseif l == "```" then
        emit(".PP")
        emit(".nf")
        i = i + 1
        while lines[i] ~= "```" do
            assert(lines[i], input .. ": unterminated ``` block")
            line_out(escape(lines[i]):gsub("%-", "\\-"))
            i = i + 1
        end
        emit(".fi")
        para = false
        i = i + 1
    elseif l:find("^%- ") then
        local item = { l:sub(3) }
        i = i + 1
        while lines[i] and lines[i]:find("^  %S") do
            item[#item + 1] = lines[i]:sub(3)
            i = i + 1
        end
        local body = table.concat(item, " ")
        local term, desc = body:match("^(.-) %-%- (.*)$")
        if not term then
            error(input .. ": an item needs \"TERM -- text\": " .. body, 0)
        end
        emit(".TP")
        line_out(inline(term))
        line_out(inline(desc))
        para = false
    elseif l == "" then
        para = false
        i = i + 1
    else
        if not para then
            emit(".PP")
            para = true
        end
        if l:find("^#") then
            error(input .. ": unsupported heading: " .. l, 0)
        end
        line_out(inline(l))
        i = i + 1
    end
end

local f = assert(io.open(output, "wb"))
f:write('.\\" generated from ' .. input:gsub("^.*/docs/", "docs/")
        .. ' by docs/md2man.lua\n')
f:write(table.concat(out, "\n"), "\n")
f:close()
