// The machine's measured arithmetic peak, the denominator of the training benchmark's "share of peak": every core
// runs a loop of independent AVX-512 instructions that the out-of-order core can issue back to back (16 accumulators,
// more than an FMA's latency times its throughput), for about a second, all cores at once:
//   fp32: vfmadd231ps zmm, 16 lanes x 2 FLOP = 32 FLOP per instruction;
//   bf16: vdpbf16ps zmm, 16 fp32 lanes each += two bf16 products = 64 FLOP per instruction.
// The clock comes from a chain of dependent integer adds (one cycle each) run on every core at once, so the peak's
// derivation is stated, not assumed: FLOP per cycle per core = GFLOP/s / (cores x clock). Prints one JSON line.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "edgesweep/common/json.h"

namespace {

using Clock = std::chrono::steady_clock;

__attribute__((target("avx512f"))) double lane_sum(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  double sum = 0;
  for (float lane : lanes) sum += lane;
  return sum;
}

/// Eight dependent one-cycle integer adds per iteration: about 8 cycles per iteration whatever else the core does
/// (the loop's own counter and branch run beside the chain), so iterations per second give the clock.
double add_chain(int64_t iterations) {
  uint64_t x = 0;
  for (int64_t i = 0; i < iterations; ++i) {
    asm volatile(
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
        : "+r"(x));
  }
  return static_cast<double>(x);
}

__attribute__((target("avx512f"))) double fp32_loop(int64_t iterations) {
  __m512 acc[16];
  for (int k = 0; k < 16; ++k) acc[k] = _mm512_set1_ps(0.0f);
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) acc[k] = _mm512_fmadd_ps(acc[k], a, b);
  }
  __m512 sum = acc[0];
  for (int k = 1; k < 16; ++k) sum = _mm512_add_ps(sum, acc[k]);
  return lane_sum(sum);  // keeps the loop alive
}

__attribute__((target("avx512f,avx512bf16"))) double bf16_loop(int64_t iterations) {
  __m512 acc[16];
  for (int k = 0; k < 16; ++k) acc[k] = _mm512_set1_ps(0.0f);
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
  const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) acc[k] = _mm512_dpbf16_ps(acc[k], a, b);
  }
  __m512 sum = acc[0];
  for (int k = 1; k < 16; ++k) sum = _mm512_add_ps(sum, acc[k]);
  return lane_sum(sum);
}

/// GFLOP/s of `loop` on `threads` threads at once, `flop_per_iteration` each, the best of three rounds.
template <typename Loop>
double measure(Loop loop, int threads, double flop_per_iteration) {
  const int64_t iterations = 200'000'000;  // a few tenths of a second per round at 3 GHz
  double best = 0;
  for (int round = 0; round < 3; ++round) {
    std::vector<std::thread> workers;
    std::vector<double> sink(threads);
    const auto start = Clock::now();
    for (int t = 0; t < threads; ++t) workers.emplace_back([&, t] { sink[t] = loop(iterations); });
    for (std::thread& w : workers) w.join();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    best = std::max(best, flop_per_iteration * static_cast<double>(iterations) * threads / seconds / 1e9);
    if (sink[0] == 12345.0) std::cerr << "";  // the results are used
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  if (argc > 2 && std::string(argv[1]) == "--threads") threads = std::stoi(argv[2]);
  __builtin_cpu_init();
  edgesweep::Json out{{"impl", "peak"}, {"threads", threads}};
  if (!__builtin_cpu_supports("avx512f")) {
    out["error"] = "no AVX-512 on this CPU";
    std::cout << out.dump() << std::endl;
    return 1;
  }
  // 8 adds per iteration counted as "FLOP" gives giga-adds per second: the clock in GHz times the cores.
  const double clock = measure(add_chain, threads, 8.0) / threads;
  const double fp32 = measure(fp32_loop, threads, 16 * 32.0);
  out["clock_ghz"] = clock;
  out["fp32_gflops"] = fp32;
  out["fp32_flop_per_cycle_per_core"] = fp32 / threads / clock;
  if (__builtin_cpu_supports("avx512bf16")) {
    const double bf16 = measure(bf16_loop, threads, 16 * 64.0);
    out["bf16_gflops"] = bf16;
    out["bf16_flop_per_cycle_per_core"] = bf16 / threads / clock;
  }
  std::cout << out.dump() << std::endl;
  return 0;
}
