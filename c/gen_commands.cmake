# Turn lua/shotover/redis/commands.lua (the Redis command classes, one
# `["NAME" ] = "class",` line per command) into the C table of command
# names the RESP codec numbers requests by: sh_resp_command_names[id - 1]
# is the name of command id `id`, in the file's (sorted) order.
file(STRINGS ${IN} lines REGEX "^ *\\[\"[A-Z0-9_|.-]+\" *\\] *= *\"")
set(body "")
set(n 0)
foreach(line IN LISTS lines)
    string(REGEX REPLACE "^ *\\[\"([A-Z0-9_|.-]+)\".*$" "\\1" name "${line}")
    string(APPEND body "    \"${name}\",\n")
    math(EXPR n "${n} + 1")
endforeach()
if(n LESS 100)
    message(FATAL_ERROR "gen_commands: only ${n} commands found in ${IN}")
endif()
file(WRITE ${OUT} "/* generated from lua/shotover/redis/commands.lua by c/gen_commands.cmake: do not edit */
#include <stddef.h>

const char *const sh_resp_command_names[] = {
${body}};
const size_t sh_resp_ncommands = ${n};
")
