# FerryInstall.cmake - libferry.a, install rules, ferry.pc and the CMake package.
#
# Included from the root CMakeLists.txt after lib/ (and the providers it pulls in) has
# been added, so the target `ferry` and its link libraries are complete here.
#
# The external dependencies of libferry are not listed by hand: they are collected
# from the link interface of `ferry` (and the object libraries it links), so a
# provider that adds its libraries through FERRY_PROVIDER_LIBS appears in ferry.pc and
# in the static target's link interface without touching this file.

include(CMakePackageConfigHelpers)

# ------------------------------------------------------------------ dependencies

# Walks the link libraries of `tgt` (property `prop`) and records, in global
# properties (no PARENT_SCOPE juggling through the recursion):
#   FERRY_DEP_MODULES  pkg-config modules (from PkgConfig::<X>_PC imported targets)
#   FERRY_DEP_PC_LIBS  library names those modules bring ("ibverbs", "zstd")
#   FERRY_DEP_LIBS     other library names, linked without pkg-config
#   FERRY_DEP_FLAGS    linker flags
#   FERRY_DEP_THREADS  ON when Threads::Threads is needed
function(_ferry_walk_deps tgt prop libs_prop)
  get_target_property(_items ${tgt} ${prop})
  if(NOT _items)
    return()
  endif()
  foreach(_it IN LISTS _items)
    # $<LINK_ONLY:x> wraps private deps of static libraries: x is still a link dep.
    if(_it MATCHES "^\\$<LINK_ONLY:(.*)>$")
      set(_it "${CMAKE_MATCH_1}")
    endif()
    if(_it MATCHES "^\\$<")
      continue() # other generator expressions: none expected
    endif()
    if(_it STREQUAL "Threads::Threads")
      set_property(GLOBAL PROPERTY FERRY_DEP_THREADS ON)
    elseif(_it MATCHES "^PkgConfig::(.+)$")
      set_property(GLOBAL APPEND PROPERTY FERRY_DEP_MODULES ${FERRY_PC_MODULES_${CMAKE_MATCH_1}})
      _ferry_walk_deps("${_it}" INTERFACE_LINK_LIBRARIES FERRY_DEP_PC_LIBS)
    elseif(TARGET "${_it}")
      get_property(_seen GLOBAL PROPERTY FERRY_DEP_SEEN)
      if(NOT _it IN_LIST _seen)
        set_property(GLOBAL APPEND PROPERTY FERRY_DEP_SEEN "${_it}")
        _ferry_walk_deps("${_it}" INTERFACE_LINK_LIBRARIES ${libs_prop})
      endif()
    elseif(_it MATCHES "^-")
      set_property(GLOBAL APPEND PROPERTY FERRY_DEP_FLAGS "${_it}")
    elseif(_it MATCHES "/lib([^/]+)\\.(so|a)(\\.[0-9.]+)?$")
      set_property(GLOBAL APPEND PROPERTY ${libs_prop} "${CMAKE_MATCH_1}")
    else()
      set_property(GLOBAL APPEND PROPERTY ${libs_prop} "${_it}")
    endif()
  endforeach()
endfunction()

set_property(GLOBAL PROPERTY FERRY_DEP_SEEN ferry)
set_property(GLOBAL PROPERTY FERRY_DEP_THREADS OFF)
_ferry_walk_deps(ferry LINK_LIBRARIES FERRY_DEP_LIBS)
foreach(_v FERRY_DEP_MODULES FERRY_DEP_PC_LIBS FERRY_DEP_LIBS FERRY_DEP_FLAGS FERRY_DEP_THREADS)
  get_property(${_v} GLOBAL PROPERTY ${_v})
  if(${_v})
    list(REMOVE_DUPLICATES ${_v})
  endif()
endforeach()

# ------------------------------------------------------------------ libferry.a

# The same objects as libferry.so (compiled PIC, hidden visibility), archived.
if(FERRY_BUILD_STATIC)
  get_target_property(_ferry_objs ferry SOURCES)
  add_library(ferry_static STATIC ${_ferry_objs})
  set_target_properties(ferry_static PROPERTIES OUTPUT_NAME ferry EXPORT_NAME ferry_static
    LINKER_LANGUAGE C)
  target_include_directories(ferry_static PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  if(FERRY_DEP_THREADS)
    target_link_libraries(ferry_static INTERFACE Threads::Threads)
  endif()
  # Plain names (-libverbs), not pkg-config's imported targets: the exported target
  # then needs nothing but Threads from the consumer's side.
  target_link_libraries(ferry_static INTERFACE
    ${FERRY_DEP_PC_LIBS} ${FERRY_DEP_LIBS} ${FERRY_DEP_FLAGS})
  add_library(ferry::ferry_static ALIAS ferry_static)
  set(_ferry_install_targets ferry ferry_static)
else()
  set(_ferry_install_targets ferry)
endif()

set_target_properties(ferry PROPERTIES EXPORT_NAME ferry)

# ------------------------------------------------------------------ install

install(TARGETS ${_ferry_install_targets} EXPORT ferryTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/ferry
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h")

# CMake package: find_package(ferry) gives ferry::ferry (and ferry::ferry_static).
set(FERRY_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/ferry)
install(EXPORT ferryTargets NAMESPACE ferry:: DESTINATION ${FERRY_CMAKE_DIR})

set(FERRY_BUILT_PROVIDERS tcp)
if(TARGET ferry_verbs)
  list(APPEND FERRY_BUILT_PROVIDERS verbs)
endif()
if(TARGET ferry_ofi) # built in, though libfabric is opened at run time (ofi_lib.c)
  list(APPEND FERRY_BUILT_PROVIDERS ofi)
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/ferryConfig.cmake.in
  ${PROJECT_BINARY_DIR}/ferryConfig.cmake
  INSTALL_DESTINATION ${FERRY_CMAKE_DIR})
# 0.x: a minor release may change the API, so only the same minor is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/ferryConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/ferryConfig.cmake
  ${PROJECT_BINARY_DIR}/ferryConfigVersion.cmake
  DESTINATION ${FERRY_CMAKE_DIR})

# ferry.pc. The prefix is the one given at install time (cmake --install --prefix
# P), not the one configured: the file is generated by the install step itself and
# then installed like any other file (so DESTDIR and the manifest work).
string(REPLACE ";" " " FERRY_PC_REQUIRES_PRIVATE "${FERRY_DEP_MODULES}")
set(FERRY_PC_LIBS_PRIVATE)
if(FERRY_DEP_THREADS)
  set(FERRY_PC_LIBS_PRIVATE "-pthread")
endif()
foreach(_l IN LISTS FERRY_DEP_FLAGS)
  string(APPEND FERRY_PC_LIBS_PRIVATE " ${_l}")
endforeach()
# Libraries that came with a Requires.private module are pkg-config's to list.
foreach(_l IN LISTS FERRY_DEP_LIBS)
  string(APPEND FERRY_PC_LIBS_PRIVATE " -l${_l}")
endforeach()
string(STRIP "${FERRY_PC_LIBS_PRIVATE}" FERRY_PC_LIBS_PRIVATE)
foreach(_d LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${_d}}")
    set(FERRY_PC_${_d} "${CMAKE_INSTALL_${_d}}")
  else()
    set(FERRY_PC_${_d} "\${prefix}/${CMAKE_INSTALL_${_d}}")
  endif()
endforeach()
set(FERRY_PC_PREFIX "@FERRY_PC_PREFIX@") # kept for the install-time pass
configure_file(${PROJECT_SOURCE_DIR}/cmake/ferry.pc.in ${PROJECT_BINARY_DIR}/ferry.pc.tmpl @ONLY)
install(CODE "
  set(FERRY_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  configure_file(\"${PROJECT_BINARY_DIR}/ferry.pc.tmpl\" \"${PROJECT_BINARY_DIR}/pc-install/ferry.pc\" @ONLY)
")
install(FILES ${PROJECT_BINARY_DIR}/pc-install/ferry.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
# Also a build-tree copy for the configured prefix, for people who read it.
set(FERRY_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
configure_file(${PROJECT_BINARY_DIR}/ferry.pc.tmpl ${PROJECT_BINARY_DIR}/ferry.pc @ONLY)

string(REPLACE ";" " " _ferry_prov_str "${FERRY_BUILT_PROVIDERS}")
message(STATUS "ferry: install: providers built in: ${_ferry_prov_str}; "
  "Requires.private: ${FERRY_PC_REQUIRES_PRIVATE}; static: ${FERRY_BUILD_STATIC}")
