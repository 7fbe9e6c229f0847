# All third-party dependencies, each from a Debian package (see scripts/setup.sh).
find_package(Threads REQUIRED)
# Protobuf before Torch: a CUDA libtorch's Caffe2 config defines an empty protobuf::libprotobuf
# of its own when none exists yet, and FindProtobuf then keeps that one (nothing is linked).
find_package(Protobuf REQUIRED)
find_package(Torch REQUIRED)
find_package(Boost 1.74 REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(SODIUM REQUIRED IMPORTED_TARGET libsodium)
# SHA-256 only (core/digest.cc): libcrypto uses the CPU's SHA extensions, libsodium does not.
find_package(OpenSSL 3.0 REQUIRED COMPONENTS Crypto)
find_package(tomlplusplus REQUIRED)
find_package(CLI11 REQUIRED)
find_package(spdlog REQUIRED)

# libtorch's flags (ABI define) only for targets that use torch.
add_library(tributary_torch INTERFACE)
target_link_libraries(tributary_torch INTERFACE ${TORCH_LIBRARIES})
target_compile_options(tributary_torch INTERFACE ${TORCH_CXX_FLAGS})
target_compile_definitions(tributary_torch INTERFACE $<$<CONFIG:Release>:NDEBUG>)

# One precompiled <torch/torch.h>, reused by every torch-heavy library: parsing torch's headers
# is most of the cost of each such translation unit (~25 s on 2 cores).
function(tributary_use_torch_pch target)
  target_link_libraries(${target} PUBLIC tributary_torch)
  if(TARGET tributary_torch_pch AND NOT target STREQUAL "tributary_torch_pch")
    target_precompile_headers(${target} REUSE_FROM tributary_torch_pch)
  endif()
endfunction()

add_library(tributary_torch_pch STATIC ${CMAKE_CURRENT_LIST_DIR}/torch_pch.cc)
target_link_libraries(tributary_torch_pch PUBLIC tributary_torch)
target_precompile_headers(tributary_torch_pch PRIVATE <torch/torch.h>)
