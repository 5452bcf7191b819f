# Writes OUT (a header with RUNHCS_GEN_VERSION and RUNHCS_GEN_COMMIT) when its
# text changes, so that a new commit rebuilds one file. Run at every build:
#   cmake -DSRC=... -DOUT=... -DVERSION=... [-DCOMMIT=...] -P version.cmake
if(NOT COMMIT)
  execute_process(COMMAND git -C "${SRC}" rev-parse --short=12 HEAD
                  OUTPUT_VARIABLE COMMIT OUTPUT_STRIP_TRAILING_WHITESPACE
                  RESULT_VARIABLE rc ERROR_QUIET)
  if(NOT rc EQUAL 0 OR COMMIT STREQUAL "")
    set(COMMIT "unknown")
  else()
    execute_process(COMMAND git -C "${SRC}" diff --quiet HEAD RESULT_VARIABLE dirty ERROR_QUIET)
    if(dirty EQUAL 1)
      string(APPEND COMMIT "-dirty")
    endif()
  endif()
endif()
set(text "#pragma once\n#define RUNHCS_GEN_VERSION \"${VERSION}\"\n#define RUNHCS_GEN_COMMIT \"${COMMIT}\"\n")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()
