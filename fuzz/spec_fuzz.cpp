// The experiment reader: any text is an experiment or an InputError naming the file, line and key; never a crash or
// a foreign exception.
#include <cstddef>
#include <cstdint>
#include <string>

#include "edgesweep/orchestrator/spec.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 16384) return 0;  // experiment files are small; longer inputs only slow the search
  const std::string text(reinterpret_cast<const char*>(data), size);
  edgesweep::fuzz::expect_clean([&] {
    const edgesweep::ExperimentSpec spec = edgesweep::parse_spec_string(text, "fuzz.toml");
    if (spec.name.empty()) std::abort();
  });
  return 0;
}
