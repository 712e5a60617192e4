# Writes OUTPUT, a header defining ECA_PLUGIN_SOURCES: the hash of the sources the TensorRT plugin is built from,
# as eca_deploy.plugin.info.plugin_source_hash computes it (the sha256 of "relative/path:sha256\n" over the files,
# sorted by path), so that `eca-deploy build` and `check` can tell a library built from other sources.
#   cmake -DSOURCE_DIR=plugins -DOUTPUT=eca_plugin_sources.h -P source_hash.cmake
file(GLOB files RELATIVE "${SOURCE_DIR}" "${SOURCE_DIR}/tensorrt/*.cpp" "${SOURCE_DIR}/tensorrt/*.h"
     "${SOURCE_DIR}/kernels/*.cu" "${SOURCE_DIR}/kernels/*.cuh" "${SOURCE_DIR}/kernels/*.h")
list(SORT files)
set(listing "")
foreach(file IN LISTS files)
  file(SHA256 "${SOURCE_DIR}/${file}" digest)
  string(APPEND listing "${file}:${digest}\n")
endforeach()
string(SHA256 hash "${listing}")
string(SUBSTRING "${hash}" 0 16 hash)
set(content "#pragma once\n#define ECA_PLUGIN_SOURCES \"${hash}\"\n")
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" old)
endif()
if(NOT "${old}" STREQUAL "${content}")
  file(WRITE "${OUTPUT}" "${content}")
endif()
