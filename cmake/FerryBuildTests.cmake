# FerryBuildTests.cmake - checks on the build and install themselves (label `build`,
# and `install` for the consumer test). Included from the root CMakeLists.txt.
#
#   build.symbols     libferry.so exports ferry_* only, and every FERRY_API function
#                     declared in include/ferry/*.h; it refers to no libfabric symbol
#   build.header_c    each public header compiles on its own as C99 (-pedantic)
#   build.header_cxx  ... and as C++11
#   build.consumer    cmake --install into a temporary prefix, then a tiny program
#                     built with pkg-config, with find_package(ferry) + ferry::ferry
#                     (and ferry::ferry_static when built), and run

set(_fbt ${PROJECT_SOURCE_DIR}/cmake)

add_test(NAME build.symbols
  COMMAND ${CMAKE_COMMAND}
    -DNM=${CMAKE_NM}
    -DLIB=$<TARGET_FILE:ferry>
    -DINCLUDE_DIR=${PROJECT_SOURCE_DIR}/include
    -P ${_fbt}/check-symbols.cmake)
set_tests_properties(build.symbols PROPERTIES LABELS build TIMEOUT 60)

add_test(NAME build.header_c
  COMMAND ${CMAKE_COMMAND}
    -DCOMPILER=${CMAKE_C_COMPILER}
    -DLANG=c
    -DINCLUDE_DIR=${PROJECT_SOURCE_DIR}/include
    -P ${_fbt}/check-headers.cmake)

# The project itself is C only; C++ is needed for this check alone, so look for a
# compiler instead of enabling the language (a machine without g++ can still build).
find_program(FERRY_CXX_COMPILER NAMES g++ c++ clang++)
add_test(NAME build.header_cxx
  COMMAND ${CMAKE_COMMAND}
    -DCOMPILER=${FERRY_CXX_COMPILER}
    -DLANG=c++
    -DINCLUDE_DIR=${PROJECT_SOURCE_DIR}/include
    -P ${_fbt}/check-headers.cmake)
set_tests_properties(build.header_c build.header_cxx PROPERTIES
  LABELS build TIMEOUT 60 SKIP_REGULAR_EXPRESSION "FERRY-SKIP:")

add_test(NAME build.consumer
  COMMAND ${CMAKE_COMMAND}
    -DBUILD_DIR=${PROJECT_BINARY_DIR}
    -DWORK_DIR=${PROJECT_BINARY_DIR}/consumer-test
    -DSOURCE_DIR=${_fbt}/consumer
    -DLIBDIR=${CMAKE_INSTALL_LIBDIR}
    -DC_COMPILER=${CMAKE_C_COMPILER}
    -DSANITIZER=${FERRY_SANITIZER}
    -DSTATIC=${FERRY_BUILD_STATIC}
    -P ${_fbt}/check-consumer.cmake)
set_tests_properties(build.consumer PROPERTIES LABELS install TIMEOUT 600
  SKIP_REGULAR_EXPRESSION "FERRY-SKIP:")
