# run_fuzz.cmake - one bounded libFuzzer run for CTest, that never writes into the
# source tree: the seed corpus is copied to WORK/corpus (where new inputs go), the
# regression inputs are read from where they are, crash artifacts land in WORK/.
#
#   cmake -DFUZZER=bin -DCORPUS=dir -DREGRESSIONS=dir -DWORK=dir -DSECONDS=n -P run_fuzz.cmake
# SECONDS=0 replays every corpus and regression file once instead of fuzzing.
# FERRY_FUZZ_ARGS in the environment adds libFuzzer flags (e.g. "-jobs=2 -workers=2").

foreach(_v FUZZER CORPUS REGRESSIONS WORK SECONDS)
  if(NOT DEFINED ${_v})
    message(FATAL_ERROR "run_fuzz.cmake: -D${_v}=... missing")
  endif()
endforeach()

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/corpus)

set(_seeds)
if(EXISTS ${CORPUS})
  file(GLOB _seeds LIST_DIRECTORIES false ${CORPUS}/*)
endif()
set(_regs)
if(EXISTS ${REGRESSIONS})
  file(GLOB _regs LIST_DIRECTORIES false ${REGRESSIONS}/*)
endif()

set(_extra)
if(DEFINED ENV{FERRY_FUZZ_ARGS})
  separate_arguments(_extra UNIX_COMMAND "$ENV{FERRY_FUZZ_ARGS}")
endif()

if(SECONDS EQUAL 0)
  set(_files ${_seeds} ${_regs})
  list(LENGTH _files _n)
  if(_n EQUAL 0)
    message(STATUS "no inputs to replay")
    return()
  endif()
  execute_process(COMMAND ${FUZZER} -rss_limit_mb=2048 -artifact_prefix=${WORK}/
                          ${_extra} ${_files}
                  WORKING_DIRECTORY ${WORK} RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "replay of ${_n} inputs failed (${_rc}): see the output above")
  endif()
  message(STATUS "replayed ${_n} inputs")
  return()
endif()

foreach(_f IN LISTS _seeds)
  file(COPY ${_f} DESTINATION ${WORK}/corpus)
endforeach()
set(_dirs ${WORK}/corpus)
if(_regs)
  list(APPEND _dirs ${REGRESSIONS})
endif()
execute_process(COMMAND ${FUZZER} -max_total_time=${SECONDS} -rss_limit_mb=2048
                        -timeout=10 -print_final_stats=1 -artifact_prefix=${WORK}/
                        ${_extra} ${_dirs}
                WORKING_DIRECTORY ${WORK} RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "fuzzing failed (${_rc}): the crashing input is in ${WORK}/; "
                      "copy it to ${REGRESSIONS}/ once the bug is understood")
endif()
