// Hardware probes of a device agent: CPU, cores, memory, OS and kernel of any Linux host, and on NVIDIA Jetson
// boards the board model (device tree), the nvpmodel power mode, and RAM, load and power rails from tegrastats.
// LibTorch-free (the LibTorch version and quantized engines are reported by the benchmark child).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "edgesweep/common/json.h"
#include "edgesweep/common/process.h"

namespace edgesweep {

/// This host: {"cpu_model", "architecture", "cores", "memory_mb", "os", "kernel", "hostname"}, plus "jetson":
/// {"board_model", "l4t_release", "nvpmodel": {"name", "id"}} on a Jetson (null elsewhere). Never throws: what
/// cannot be read is left empty.
Json probe_hardware();

/// The file-based part of probe_hardware with every path under `root` (proc/cpuinfo, proc/meminfo, etc/os-release,
/// proc/device-tree/model, etc/nv_tegra_release, var/lib/nvpmodel/status), so a recorded board can be probed.
Json probe_hardware_files(const std::filesystem::path& root);

/// The board model of a device-tree `model` file's text: NUL terminators and surrounding blanks removed.
std::string parse_device_tree_model(const std::string& text);

/// The power mode in the output of `nvpmodel -q` ("NV Power Mode: MAXN" then the id on its own line):
/// {"name", "id"}; null when the text holds none.
Json parse_nvpmodel_query(const std::string& text);

/// One power rail of tegrastats: instant and running-average power in milliwatts.
struct PowerRail {
  std::string name;
  double current_mw = 0;
  double average_mw = 0;
};

/// One parsed tegrastats line.
struct TegrastatsSample {
  double time_seconds = 0;       ///< when it was read (steady clock); set by the reader, not the parser
  double ram_used_mb = 0;
  double ram_total_mb = 0;
  double swap_used_mb = 0;
  double swap_total_mb = 0;
  std::vector<double> cpu_load_percent;  ///< per core; an "off" core is -1
  double cpu_load_mean_percent = 0;      ///< over the cores that are on
  double gpu_load_percent = -1;          ///< GR3D_FREQ; -1 when the line has none
  std::vector<PowerRail> rails;          ///< in the order of the line
  std::vector<std::pair<std::string, double>> temperatures_c;
};

/// Parses one line of tegrastats in any of its formats (Jetson Nano / TX and Xavier with L4T 32: "NAME cur/avg" in
/// mW without unit; L4T 35 and later: "NAME curmW/avgmW"; an optional leading date and time). Throws InputError
/// quoting the line when it has no "RAM used/totalMB" field or a field is malformed.
TegrastatsSample parse_tegrastats_line(const std::string& line);

/// The board's total input power of a sample and where it comes from. A named total rail when the line has one:
/// POM_5V_IN (Nano, TX1: its sub-rails POM_5V_GPU and POM_5V_CPU are parts of it and are not added), VDD_IN (Xavier
/// NX, TX2, Orin NX and Orin Nano), VIN_SYS_5V0 (AGX Orin: the 5 V system input; VDD_GPU_SOC and VDD_CPU_CV are
/// not added to it). Otherwise (e.g. AGX Xavier's GPU, CPU, SOC, CV, VDDRQ, SYS5V) the sum of all rails, with
/// `source` "sum". `mw` is the instant value; 0 with source "none" when the line has no rails.
struct TotalPower {
  double mw = 0;
  std::string source;
};
TotalPower total_power(const TegrastatsSample& sample);

/// Mean total power (and RAM, load) over the samples read within [start_seconds, end_seconds] (steady clock).
struct WindowSummary {
  int64_t samples = 0;
  double mean_power_mw = 0;
  std::string power_source;
  double max_ram_used_mb = 0;
  double mean_cpu_load_percent = 0;
  double mean_gpu_load_percent = -1;
};
WindowSummary summarize_window(const std::vector<TegrastatsSample>& samples, double start_seconds,
                               double end_seconds);

/// The tegrastats program to sample during benchmarks: EDGESWEEP_TEGRASTATS when set (tests point it at a recorded
/// stream), else /usr/bin/tegrastats when present; empty elsewhere.
std::filesystem::path tegrastats_program();

/// Runs a tegrastats program in the background (`--interval` ms, in its own process group) and keeps its parsed
/// lines, each stamped with the steady clock when read; lines that do not parse are skipped.
class TegrastatsSampler {
 public:
  /// Starts `program`; an empty path starts nothing (no Jetson) and stop() then returns no samples.
  TegrastatsSampler(const std::filesystem::path& program, int interval_ms);
  ~TegrastatsSampler();
  TegrastatsSampler(const TegrastatsSampler&) = delete;
  TegrastatsSampler& operator=(const TegrastatsSampler&) = delete;

  /// Stops the program (its process group) and returns the samples read.
  std::vector<TegrastatsSample> stop();

 private:
  void read_lines();
  std::unique_ptr<Process> process_;
  int fd_ = -1;
  std::thread reader_;
  std::mutex mutex_;
  std::vector<TegrastatsSample> samples_;
};

/// A sample as JSON (RAM, loads, rails with current and average mW, temperatures, total power and its source).
Json sample_json(const TegrastatsSample& sample);

}  // namespace edgesweep
