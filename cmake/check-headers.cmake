# check-headers.cmake - cmake -DCOMPILER=cc -DLANG=c|c++ -DINCLUDE_DIR=include -P this
#
# Compiles every public header on its own (-fsyntax-only): as C99 for LANG=c, as
# C++11 for LANG=c++, with -pedantic and warnings as errors. Prints FERRY-SKIP when
# there is no compiler for the language (the test is then reported skipped).
cmake_minimum_required(VERSION 3.18) # script mode: new policies (IN_LIST, ...)
if(NOT COMPILER OR COMPILER MATCHES "NOTFOUND$")
  message("FERRY-SKIP: no ${LANG} compiler found (install g++)")
  return()
endif()
if(LANG STREQUAL "c")
  set(flags -x c -std=c99)
else()
  set(flags -x c++ -std=c++11)
endif()
file(GLOB headers RELATIVE ${INCLUDE_DIR} ${INCLUDE_DIR}/ferry/*.h)
if(NOT headers)
  message(FATAL_ERROR "no headers in ${INCLUDE_DIR}/ferry")
endif()
set(fail OFF)
foreach(h IN LISTS headers)
  execute_process(COMMAND ${COMPILER} ${flags} -fsyntax-only -pedantic -Wall -Wextra
      -Werror -I${INCLUDE_DIR} ${INCLUDE_DIR}/${h}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(rc EQUAL 0)
    message(STATUS "${h}: compiles as ${LANG} on its own")
  else()
    message("${h}: does not compile as ${LANG}:\n${out}")
    set(fail ON)
  endif()
endforeach()
if(fail)
  message(FATAL_ERROR "public headers do not all compile as ${LANG}")
endif()
