# Turn c/sh_ffi.h into a Lua module returning the text for ffi.cdef:
# preprocessor lines are dropped, nothing else changes.
file(STRINGS ${IN} lines)
set(body "")
foreach(line IN LISTS lines)
    if(NOT line MATCHES "^#")
        string(APPEND body "${line}\n")
    endif()
endforeach()
file(WRITE ${OUT} "-- generated from c/sh_ffi.h by c/gen_cdef.cmake: do not edit\nreturn [==[\n${body}]==]\n")
