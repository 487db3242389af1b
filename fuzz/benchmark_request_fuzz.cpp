// The benchmark request a device's child reads: any JSON is read into the typed request or refused with an
// InputError naming the key; what is accepted is within the documented ranges.
#include <cstddef>
#include <cstdint>
#include <string>

#include "edgesweep/common/benchmark_request.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const edgesweep::Json json = edgesweep::Json::parse(data, data + size, nullptr, false);
  if (json.is_discarded()) return 0;
  edgesweep::fuzz::expect_clean([&] {
    const edgesweep::BenchmarkRequest request = edgesweep::parse_benchmark_request(json);
    if (request.threads < 1 || request.batch_sizes.empty() || request.min_runs < 1) std::abort();
    for (int64_t b : request.batch_sizes) {
      if (b < 1 || b > 65536) std::abort();
    }
    if (!(request.min_seconds >= 0) || !(request.warmup_seconds >= 0)) std::abort();
  });
  return 0;
}
