# Test helpers shared by every tests/ CMakeLists.txt.

if(KILN_BUILD_TESTS AND BUILD_TESTING)
  pkg_check_modules(CMOCKA REQUIRED IMPORTED_TARGET cmocka)
endif()

# kiln_add_test(NAME SOURCES src... LIBS lib... [LABELS l...] [TIMEOUT s] [ENV k=v...])
# One cmocka executable per test file, registered with ctest under NAME.
function(kiln_add_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS;ENV;ARGS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
  add_test(NAME ${name} COMMAND ${name} ${T_ARGS})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "unit;${T_LABELS}")
  set(env "KILN_BUILD_DIR=${CMAKE_BINARY_DIR}" "KILN_SOURCE_DIR=${CMAKE_SOURCE_DIR}"
          "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1" "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1"
          ${T_ENV})
  set_tests_properties(${name} PROPERTIES ENVIRONMENT "${env}")
endfunction()

# kiln_add_fuzz(NAME LIBS lib...)
# tests/fuzz/fuzz_NAME.c defines LLVMFuzzerTestOneInput. With KILN_FUZZ it is a libFuzzer binary;
# otherwise it links a replay driver. Either way ctest replays tests/fuzz/corpus/NAME on every build.
function(kiln_add_fuzz name)
  cmake_parse_arguments(F "" "" "LIBS" ${ARGN})
  set(src ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_${name}.c)
  set(corpus ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${name})
  if(KILN_FUZZ)
    add_executable(fuzz_${name} ${src})
    target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
    add_test(NAME fuzz_replay_${name} COMMAND fuzz_${name} -runs=0 ${corpus})
  else()
    add_executable(fuzz_${name} ${src} ${CMAKE_SOURCE_DIR}/tests/fuzz/replay_main.c)
    add_test(NAME fuzz_replay_${name} COMMAND fuzz_${name} ${corpus})
  endif()
  target_link_libraries(fuzz_${name} PRIVATE ${F_LIBS})
  set_tests_properties(fuzz_replay_${name} PROPERTIES LABELS "fuzz" TIMEOUT 600
    ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
endfunction()
