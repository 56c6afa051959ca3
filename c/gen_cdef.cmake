# Turn c/sh_ffi.h into the text LuaJIT's ffi.cdef is given: preprocessor
# lines are dropped, nothing else changes.  Written twice: as a Lua module
# (OUT, for specs under plain LuaJIT) and as a C string (OUT_C, compiled into
# the binary, which preloads it as "shotover.cdef").
file(STRINGS ${IN} lines)
set(body "")
set(cbody "")
foreach(line IN LISTS lines)
    if(NOT line MATCHES "^#")
        string(APPEND body "${line}\n")
        string(REPLACE "\\" "\\\\" cline "${line}")
        string(REPLACE "\"" "\\\"" cline "${cline}")
        string(APPEND cbody "    \"${cline}\\n\"\n")
    endif()
endforeach()
file(WRITE ${OUT} "-- generated from c/sh_ffi.h by c/gen_cdef.cmake: do not edit\nreturn [==[\n${body}]==]\n")
file(WRITE ${OUT_C} "/* generated from c/sh_ffi.h by c/gen_cdef.cmake: do not edit */\nconst char sh_cdef_text[] =\n${cbody};\n")
