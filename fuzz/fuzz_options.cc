// Fuzzes the decoding of the shim's options: the protobuf bytes containerd
// passes to `start` (an Any: runhcs Options, runc Options or
// runtimeoptions.v1 naming a config file) and the JSON runtime config file.
#include <cstdint>
#include <string_view>

#include "service/options.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)runhcs::service::DecodeOptionsBytes(in);
  (void)runhcs::service::OptionsFromJson(in);
  return 0;
}
