# Every kind of test, under ctest.  Included from the root CMakeLists.txt.

find_program(LUAJIT_BIN NAMES luajit REQUIRED)
find_program(BUSTED_BIN NAMES busted REQUIRED)

set(SH_TEST_ENV
    "SHOTOVER_SRC=${CMAKE_SOURCE_DIR}"
    "SHOTOVER_BIN=$<TARGET_FILE:shotover>"
    "SHOTOVER_CORE_LIB=$<TARGET_FILE:shotover_core>"
    "LUA_PATH=${CMAKE_SOURCE_DIR}/lua/?.lua;${CMAKE_SOURCE_DIR}/lua/?/init.lua;${CMAKE_BINARY_DIR}/lua/?.lua;${CMAKE_SOURCE_DIR}/t/lib/?.lua;;")
if(SH_SANITIZE)
    # luajit itself is not instrumented: preload the runtimes for the
    # specs that load libshotover_core.so.
    execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=libasan.so
                    OUTPUT_VARIABLE ASAN_LIB OUTPUT_STRIP_TRAILING_WHITESPACE)
    execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=libubsan.so
                    OUTPUT_VARIABLE UBSAN_LIB OUTPUT_STRIP_TRAILING_WHITESPACE)
    list(APPEND SH_TEST_ENV "LD_PRELOAD=${ASAN_LIB}:${UBSAN_LIB}"
         "ASAN_OPTIONS=detect_leaks=0:abort_on_error=1"
         "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
endif()

# C unit tests for the RESP codec, fixtures as data.
if(EXISTS ${CMAKE_SOURCE_DIR}/c/test/test-resp.c) # TODO(lead): unconditional
add_executable(test-resp c/test/test-resp.c ${SH_CORE_SOURCES})
target_include_directories(test-resp PRIVATE c)
target_link_libraries(test-resp PRIVATE PkgConfig::LUAJIT PkgConfig::LIBUV
                      Threads::Threads m)
add_test(NAME c-resp COMMAND test-resp ${CMAKE_SOURCE_DIR}/t/fixtures/resp)
endif()

# libFuzzer needs clang: the script builds its own small clang build.
add_test(NAME fuzz-resp
         COMMAND ${CMAKE_SOURCE_DIR}/t/run-fuzz resp 20)
set_tests_properties(fuzz-resp PROPERTIES ENVIRONMENT "${SH_TEST_ENV}")

# busted specs under LuaJIT: the Lua runtime against the real C core.
add_test(NAME lua-unit
         COMMAND ${LUAJIT_BIN} ${BUSTED_BIN} -o TAP
                 ${CMAKE_SOURCE_DIR}/t/unit)
set_tests_properties(lua-unit PROPERTIES ENVIRONMENT "${SH_TEST_ENV}")

# Integration: real redis-server, build/shotover, redis-cli, redis-benchmark.
add_test(NAME integration-redis
         COMMAND ${LUAJIT_BIN} ${BUSTED_BIN} -o TAP
                 ${CMAKE_SOURCE_DIR}/t/integration)
set_tests_properties(integration-redis PROPERTIES ENVIRONMENT "${SH_TEST_ENV}"
                     TIMEOUT 900)
