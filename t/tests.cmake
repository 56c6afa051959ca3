# Every kind of test, under ctest.  Included from the root CMakeLists.txt.

find_program(BUSTED_BIN NAMES busted REQUIRED)

# t/run-busted sets LUA_PATH (semicolons do not survive a CMake list).
set(SH_TEST_ENV
    "SHOTOVER_SRC=${CMAKE_SOURCE_DIR}"
    "SHOTOVER_BUILD=${CMAKE_BINARY_DIR}"
    "SHOTOVER_BIN=$<TARGET_FILE:shotover>")
if(SH_SANITIZE)
    # busted runs inside the instrumented binary (shotover lua), so every
    # test kind below runs under ASan + UBSan.
    list(APPEND SH_TEST_ENV "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1"
         "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
endif()

# C unit tests for the RESP codec, fixtures as data.
add_executable(test-resp c/test/test-resp.c ${SH_CORE_SOURCES})
target_include_directories(test-resp PRIVATE c)
target_link_libraries(test-resp PRIVATE ${SH_LIBS})
add_test(NAME c-resp COMMAND test-resp ${CMAKE_SOURCE_DIR}/t/fixtures/resp)

# C unit tests for the CQL framing codec.
add_executable(test-cql c/test/test-cql.c ${SH_CORE_SOURCES})
target_include_directories(test-cql PRIVATE c)
target_link_libraries(test-cql PRIVATE ${SH_LIBS})
add_test(NAME c-cql COMMAND test-cql ${CMAKE_SOURCE_DIR}/t/fixtures/cql)

# C unit tests for the shared dict: GCRA with an injected clock, and threads
# that must not race past the limit.
add_executable(test-shdict c/test/test-shdict.c ${SH_CORE_SOURCES})
target_include_directories(test-shdict PRIVATE c)
target_link_libraries(test-shdict PRIVATE ${SH_LIBS})
add_test(NAME c-shdict COMMAND test-shdict)

# C tests of the HTTPS fetch (sh_fetch.c): a real loop and a TLS server
# thread with a certificate the test makes; callbacks counted, loop closed.
add_executable(test-fetch c/test/test-fetch.c ${SH_CORE_SOURCES})
target_include_directories(test-fetch PRIVATE c)
target_link_libraries(test-fetch PRIVATE ${SH_LIBS})
add_test(NAME c-fetch COMMAND test-fetch)

# libFuzzer needs clang: the script keeps its own clang build (build/fuzz)
# and runs each target briefly; `t/run-fuzz TARGET --minutes N` runs longer
# (docs/fuzzing.md).
foreach(t resp cql chain)
    add_test(NAME fuzz-${t} COMMAND ${CMAKE_SOURCE_DIR}/t/run-fuzz ${t} 20)
    set_tests_properties(fuzz-${t} PROPERTIES ENVIRONMENT "${SH_TEST_ENV}")
endforeach()

# Lua lint: luacheck with the root .luacheckrc over everything Lua; any
# warning fails (scripts/deps test installs lua-check).
find_program(LUACHECK_BIN NAMES luacheck REQUIRED)
add_test(NAME luacheck
         COMMAND ${LUACHECK_BIN} -q --no-color lua t examples docs
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})

# busted specs inside the shotover binary: the Lua runtime on the real core.
add_test(NAME lua-unit
         COMMAND ${CMAKE_SOURCE_DIR}/t/run-busted ${CMAKE_SOURCE_DIR}/t/unit)
set_tests_properties(lua-unit PROPERTIES ENVIRONMENT "${SH_TEST_ENV}")

# Integration: real redis-server, build/shotover, redis-cli, redis-benchmark
# (specs 0NN), and a real Cassandra 5.0 from Maven Central with the DataStax
# Python driver (specs 2NN-3NN; t/versions pins the version).
add_test(NAME integration-redis
         COMMAND ${CMAKE_SOURCE_DIR}/t/run-busted --pattern=^0.*_spec
                 ${CMAKE_SOURCE_DIR}/t/integration)
set_tests_properties(integration-redis PROPERTIES ENVIRONMENT "${SH_TEST_ENV}"
                     TIMEOUT 900)
# The admin endpoint and metrics (specs 4NN), with a real redis-server and
# promtool.
add_test(NAME integration-admin
         COMMAND ${CMAKE_SOURCE_DIR}/t/run-busted --pattern=^4.*_spec
                 ${CMAKE_SOURCE_DIR}/t/integration)
set_tests_properties(integration-admin PROPERTIES ENVIRONMENT "${SH_TEST_ENV}"
                     TIMEOUT 600)
add_test(NAME integration-cassandra
         COMMAND ${CMAKE_SOURCE_DIR}/t/run-busted --pattern=^[23].*_spec
                 ${CMAKE_SOURCE_DIR}/t/integration)
set_tests_properties(integration-cassandra PROPERTIES
                     ENVIRONMENT "${SH_TEST_ENV}" TIMEOUT 2400)
# Installing and running it (specs 5NN): cmake --install into a temporary
# prefix, the installed binary against a real redis-server; READY=1 for
# systemd; the Debian package built, installed with dpkg (root) and removed.
add_test(NAME integration-install
         COMMAND ${CMAKE_SOURCE_DIR}/t/run-busted --pattern=^5.*_spec
                 ${CMAKE_SOURCE_DIR}/t/integration)
set_tests_properties(integration-install PROPERTIES
                     ENVIRONMENT "${SH_TEST_ENV}" TIMEOUT 600)
# A real Kafka broker (specs 6NN): KRaft, broker and controller in one JVM,
# from the Maven Central jars (t/maven-fetch; t/versions pins the version),
# with kcat as the client.
add_test(NAME integration-kafka
         COMMAND ${CMAKE_SOURCE_DIR}/t/run-busted --pattern=^6.*_spec
                 ${CMAKE_SOURCE_DIR}/t/integration)
set_tests_properties(integration-kafka PROPERTIES
                     ENVIRONMENT "${SH_TEST_ENV}" TIMEOUT 900)
# A real Redis Cluster (specs 7NN): 3 masters and 3 replicas of the Debian
# redis-server on free loopback client and bus ports, joined by redis-cli
# --cluster create; failover, rejoin and resharding (t/lib/redis_cluster.lua);
# the scatter transform over several redis-servers and this cluster.
add_test(NAME integration-cluster
         COMMAND ${CMAKE_SOURCE_DIR}/t/run-busted --pattern=^7.*_spec
                 ${CMAKE_SOURCE_DIR}/t/integration)
set_tests_properties(integration-cluster PROPERTIES
                     ENVIRONMENT "${SH_TEST_ENV}" TIMEOUT 900)
