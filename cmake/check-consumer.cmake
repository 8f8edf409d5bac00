# check-consumer.cmake - the build.consumer test.
#
#   cmake -DBUILD_DIR=... -DWORK_DIR=... -DSOURCE_DIR=cmake/consumer -DLIBDIR=lib
#         -DC_COMPILER=cc -DSANITIZER=none -DSTATIC=ON -P this
#
# Installs the build tree into WORK_DIR/prefix and builds cmake/consumer/consumer.c
# against the installed files only: (1) cc + `pkg-config --cflags --libs ferry`,
# (2) find_package(ferry) + ferry::ferry, (3) when the static library is built,
# find_package(ferry) + ferry::ferry_static, and libferry.a linked by hand from what
# ferry.pc names (Requires.private, Libs.private). Each program
# is run. A sanitizer build passes the same -fsanitize flags to the consumer (the
# runtime must be linked into the executable).

cmake_minimum_required(VERSION 3.18) # script mode: new policies (IN_LIST, ...)
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}")
  endif()
  set(OUT "${out}" PARENT_SCOPE)
endfunction()

set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

message(STATUS "cmake --install ${BUILD_DIR} --prefix ${prefix}")
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
foreach(f include/ferry/ferry.h ${LIBDIR}/libferry.so ${LIBDIR}/pkgconfig/ferry.pc
    ${LIBDIR}/cmake/ferry/ferryConfig.cmake ${LIBDIR}/cmake/ferry/ferryConfigVersion.cmake)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "not installed: ${f}")
  endif()
endforeach()
if(STATIC AND NOT EXISTS ${prefix}/${LIBDIR}/libferry.a)
  message(FATAL_ERROR "FERRY_BUILD_STATIC=ON but ${LIBDIR}/libferry.a is not installed")
endif()

set(san_flags)
if(SANITIZER AND NOT SANITIZER STREQUAL "none")
  set(san_flags -fsanitize=${SANITIZER})
endif()

# (1) pkg-config
find_program(PKG_CONFIG NAMES pkg-config pkgconf)
if(NOT PKG_CONFIG)
  message(FATAL_ERROR "pkg-config not found")
endif()
set(ENV{PKG_CONFIG_PATH} ${prefix}/${LIBDIR}/pkgconfig)
run(${PKG_CONFIG} --cflags --libs ferry)
string(STRIP "${OUT}" pc_flags)
separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
message(STATUS "pkg-config --cflags --libs ferry: ${pc_flags}")
run(${C_COMPILER} ${san_flags} ${SOURCE_DIR}/consumer.c ${pc_flags}
  -Wl,-rpath,${prefix}/${LIBDIR} -o ${WORK_DIR}/consumer-pkgconfig)
run(${WORK_DIR}/consumer-pkgconfig)
message(STATUS "pkg-config consumer: ${OUT}")

# (2) find_package(ferry) + ferry::ferry, (3) ferry::ferry_static
set(targets ferry::ferry)
if(STATIC)
  list(APPEND targets ferry::ferry_static)
endif()
foreach(t IN LISTS targets)
  string(REPLACE "::" "_" tdir ${t})
  string(REPLACE ";" " " cflags "${san_flags}")
  run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/${tdir}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_C_COMPILER=${C_COMPILER}
    "-DCMAKE_C_FLAGS=${cflags}" "-DCMAKE_EXE_LINKER_FLAGS=${cflags}" -DFERRY_LINK=${t})
  run(${CMAKE_COMMAND} --build ${WORK_DIR}/${tdir})
  run(${WORK_DIR}/${tdir}/consumer)
  message(STATUS "find_package consumer with ${t}: ${OUT}")
endforeach()

if(STATIC)
  # libferry.a with the system's shared libraries: ferry.pc's Requires.private modules
  # (their plain --libs) plus its Libs.private must be all the archive needs. (Not
  # `pkg-config --static`: that recurses into the distribution's own .pc files, and
  # Debian 12's libfabric.pc names PSM libraries that are not installed.)
  run(${PKG_CONFIG} --print-requires-private ferry)
  string(REGEX REPLACE "[ \t\r\n]+" ";" req "${OUT}")
  list(FILTER req EXCLUDE REGEX "^$")
  set(req_flags)
  if(req)
    run(${PKG_CONFIG} --libs ${req})
    string(STRIP "${OUT}" req_flags)
    separate_arguments(req_flags UNIX_COMMAND "${req_flags}")
  endif()
  file(STRINGS ${prefix}/${LIBDIR}/pkgconfig/ferry.pc priv REGEX "^Libs.private:")
  string(REGEX REPLACE "^Libs.private:[ ]*" "" priv "${priv}")
  separate_arguments(priv UNIX_COMMAND "${priv}")
  run(${PKG_CONFIG} --cflags ferry)
  string(STRIP "${OUT}" cflags)
  separate_arguments(cflags UNIX_COMMAND "${cflags}")
  set(static_flags ${cflags} ${prefix}/${LIBDIR}/libferry.a ${req_flags} ${priv})
  message(STATUS "libferry.a + Requires.private (${req}) + Libs.private: ${static_flags}")
  run(${C_COMPILER} ${san_flags} ${SOURCE_DIR}/consumer.c ${static_flags}
    -o ${WORK_DIR}/consumer-static)
  run(${WORK_DIR}/consumer-static)
  message(STATUS "static consumer: ${OUT}")
endif()
