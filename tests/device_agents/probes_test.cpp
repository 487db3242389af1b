// Tests of the hardware probes: tegrastats lines of Jetson Nano, Xavier NX, AGX Xavier and AGX Orin (RAM, per-core
// and GPU load, rails, the total-power rule), power over a window, malformed lines, the device-tree model, nvpmodel's
// output, and the file probes on a recorded Jetson root folder and on this host.
//
// No Jetson is at hand: the lines below were composed for these tests following the tegrastats field layout NVIDIA
// documents in the Jetson Linux Developer Guide ("RAM used/totalMB (lfb ...)", "CPU [load%@MHz,...,off]",
// "GR3D_FREQ load%@MHz", "NAME@temperatureC", rails "NAME current/average" in mW, with a "mW" unit and a leading
// date and time from L4T 35 on); the rail names are the ones each module's INA3221 monitors carry.
#include "edgesweep/device_agents/probes.h"

#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "../workers/temp_folder.h"
#include "edgesweep/common/error.h"

namespace edgesweep {
namespace {

namespace fs = std::filesystem;

const std::string kNano =
    "RAM 1627/3964MB (lfb 377x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
    "CPU [21%@1479,14%@1479,18%@1479,25%@1479] EMC_FREQ 7%@1600 GR3D_FREQ 34%@921 APE 25 PLL@31C CPU@34.5C "
    "PMIC@100C GPU@32C AO@40C thermal@33.25C POM_5V_IN 4231/3950 POM_5V_GPU 980/854 POM_5V_CPU 1102/1020";

const std::string kXavierNx =
    "RAM 3523/7772MB (lfb 7x4MB) SWAP 0/3886MB (cached 0MB) CPU [38%@1420,41%@1420,35%@1420,37%@1420,off,off] "
    "EMC_FREQ 11%@1600 GR3D_FREQ 62%@1109 APE 150 MTS fg 0% bg 3% AO@38.5C GPU@40C PMIC@100C AUX@38C CPU@40.5C "
    "thermal@39.35C VDD_IN 7356/6921 VDD_CPU_GPU_CV 2860/2608 VDD_SOC 1346/1300";

const std::string kAgxXavier =
    "RAM 2710/15692MB (lfb 2861x4MB) SWAP 0/7846MB (cached 0MB) CPU [12%@1190,9%@1190,off,off,off,off,off,off] "
    "EMC_FREQ 2%@2133 GR3D_FREQ 0%@318 APE 150 MTS fg 0% bg 0% AO@33C GPU@34C Tdiode@35.75C PMIC@100C AUX@32.5C "
    "CPU@35C thermal@33.9C Tboard@33C GPU 0/0 CPU 311/311 SOC 1243/1243 CV 0/0 VDDRQ 155/155 SYS5V 1626/1626";

const std::string kAgxOrin =
    "12-01-2026 10:15:42 RAM 6421/30623MB (lfb 5713x4MB) SWAP 0/15311MB (cached 0MB) "
    "CPU [45%@2201,38%@2201,41%@2201,39%@2201,12%@2201,8%@2201,10%@2201,9%@2201,off,off,off,off] "
    "EMC_FREQ 14%@3199 GR3D_FREQ 71%@[1300,1300] VIC_FREQ 729 APE 174 CV0@-256C CPU@52.4C Tboard@38C SOC2@47.9C "
    "Tdiode@40.25C SOC0@48.4C CV1@-256C GPU@49.1C tj@52.4C SOC1@46.8C CV2@-256C VDD_GPU_SOC 9412mW/8810mW "
    "VDD_CPU_CV 3521mW/3305mW VIN_SYS_5V0 5623mW/5502mW VDDQ_VDD2_1V8AO 1502mW/1480mW";

const PowerRail* rail(const TegrastatsSample& s, const std::string& name) {
  for (const PowerRail& r : s.rails) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

TEST(Tegrastats, NanoTotalIsPom5vInNotTheSumWithItsSubRails) {
  const TegrastatsSample s = parse_tegrastats_line(kNano);
  EXPECT_DOUBLE_EQ(s.ram_used_mb, 1627);
  EXPECT_DOUBLE_EQ(s.ram_total_mb, 3964);
  EXPECT_DOUBLE_EQ(s.swap_total_mb, 1982);
  EXPECT_EQ(s.cpu_load_percent, (std::vector<double>{21, 14, 18, 25}));
  EXPECT_DOUBLE_EQ(s.cpu_load_mean_percent, 19.5);
  EXPECT_DOUBLE_EQ(s.gpu_load_percent, 34);
  ASSERT_EQ(s.rails.size(), 3u);
  EXPECT_DOUBLE_EQ(rail(s, "POM_5V_GPU")->current_mw, 980);
  EXPECT_DOUBLE_EQ(rail(s, "POM_5V_GPU")->average_mw, 854);
  const TotalPower total = total_power(s);
  EXPECT_DOUBLE_EQ(total.mw, 4231);  // not 4231 + 980 + 1102
  EXPECT_EQ(total.source, "POM_5V_IN");
  EXPECT_EQ(s.temperatures_c.size(), 6u);
  EXPECT_EQ(s.temperatures_c[1].first, "CPU");
  EXPECT_DOUBLE_EQ(s.temperatures_c[1].second, 34.5);
}

TEST(Tegrastats, XavierNxTotalIsVddInAndOffCoresAreLeftOutOfTheMean) {
  const TegrastatsSample s = parse_tegrastats_line(kXavierNx);
  EXPECT_DOUBLE_EQ(s.ram_used_mb, 3523);
  EXPECT_EQ(s.cpu_load_percent, (std::vector<double>{38, 41, 35, 37, -1, -1}));
  EXPECT_DOUBLE_EQ(s.cpu_load_mean_percent, (38.0 + 41 + 35 + 37) / 4);
  EXPECT_DOUBLE_EQ(s.gpu_load_percent, 62);
  ASSERT_EQ(s.rails.size(), 3u);
  EXPECT_EQ(total_power(s).source, "VDD_IN");
  EXPECT_DOUBLE_EQ(total_power(s).mw, 7356);
}

TEST(Tegrastats, AgxOrinTotalIsVinSys5v0WithMilliwattUnitsAndATimestamp) {
  const TegrastatsSample s = parse_tegrastats_line(kAgxOrin);
  EXPECT_DOUBLE_EQ(s.ram_used_mb, 6421);
  EXPECT_DOUBLE_EQ(s.ram_total_mb, 30623);
  ASSERT_EQ(s.cpu_load_percent.size(), 12u);
  EXPECT_DOUBLE_EQ(s.cpu_load_mean_percent, (45.0 + 38 + 41 + 39 + 12 + 8 + 10 + 9) / 8);
  EXPECT_DOUBLE_EQ(s.gpu_load_percent, 71);
  ASSERT_EQ(s.rails.size(), 4u);
  EXPECT_DOUBLE_EQ(rail(s, "VDD_GPU_SOC")->current_mw, 9412);
  EXPECT_DOUBLE_EQ(rail(s, "VDDQ_VDD2_1V8AO")->average_mw, 1480);
  EXPECT_EQ(total_power(s).source, "VIN_SYS_5V0");
  EXPECT_DOUBLE_EQ(total_power(s).mw, 5623);
  EXPECT_EQ(s.temperatures_c.size(), 8u);  // the three CV sensors at -256C are off
}

TEST(Tegrastats, WithoutANamedTotalTheRailsAreSummed) {
  const TegrastatsSample s = parse_tegrastats_line(kAgxXavier);
  EXPECT_EQ(s.cpu_load_percent.size(), 8u);
  EXPECT_DOUBLE_EQ(s.cpu_load_mean_percent, 10.5);
  ASSERT_EQ(s.rails.size(), 6u);  // "CPU 311/311" is a rail, "CPU [...]" the load
  EXPECT_EQ(total_power(s).source, "sum");
  EXPECT_DOUBLE_EQ(total_power(s).mw, 0 + 311 + 1243 + 0 + 155 + 1626);
  const TegrastatsSample no_rails = parse_tegrastats_line("RAM 100/200MB CPU [5%@100]");
  EXPECT_EQ(total_power(no_rails).source, "none");
  EXPECT_DOUBLE_EQ(no_rails.gpu_load_percent, -1);
}

TEST(Tegrastats, PowerIsTheMeanOverTheWindowsSamples) {
  std::vector<TegrastatsSample> samples;
  const double watts[] = {3000, 6000, 7000, 8000, 2000};
  for (int i = 0; i < 5; ++i) {
    TegrastatsSample s = parse_tegrastats_line(kXavierNx);
    s.rails[0].current_mw = watts[i];
    s.ram_used_mb = 3000 + 100 * i;
    s.time_seconds = 100.0 + i;
    samples.push_back(s);
  }
  const WindowSummary window = summarize_window(samples, 101.0, 103.0);
  EXPECT_EQ(window.samples, 3);
  EXPECT_DOUBLE_EQ(window.mean_power_mw, 7000);
  EXPECT_EQ(window.power_source, "VDD_IN");
  EXPECT_DOUBLE_EQ(window.max_ram_used_mb, 3300);
  EXPECT_DOUBLE_EQ(window.mean_gpu_load_percent, 62);
  EXPECT_EQ(summarize_window(samples, 200, 300).samples, 0);
  const Json json = sample_json(samples[0]);
  EXPECT_EQ(json.at("total_power_source"), "VDD_IN");
  EXPECT_DOUBLE_EQ(json.at("rails").at("VDD_SOC").at("current_mw").get<double>(), 1346);
}

TEST(Tegrastats, MalformedLinesAreInputErrorsQuotingTheLine) {
  for (const std::string line : {"", "hello world", "RAM lots/3964MB", "RAM 1/2MB CPU [12%@1479,busy]",
                                 "RAM 1/2MB CPU [12%", "RAM 1/2MB GR3D_FREQ fast"}) {
    SCOPED_TRACE(line);
    try {
      parse_tegrastats_line(line);
      ADD_FAILURE() << "accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("tegrastats line"), std::string::npos);
      EXPECT_NE(std::string(e.what()).find(line), std::string::npos);
    }
  }
}

TEST(JetsonProbes, DeviceTreeModelAndNvpmodelOutput) {
  EXPECT_EQ(parse_device_tree_model(std::string("NVIDIA Jetson Nano Developer Kit\0", 33)),
            "NVIDIA Jetson Nano Developer Kit");
  EXPECT_EQ(parse_device_tree_model("Jetson AGX Orin\n"), "Jetson AGX Orin");
  const Json maxn = parse_nvpmodel_query("NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n");
  EXPECT_EQ(maxn.at("name"), "MAXN");
  EXPECT_EQ(maxn.at("id"), 0);
  const Json orin = parse_nvpmodel_query("NV Power Mode: MODE_30W\n2\n");
  EXPECT_EQ(orin.at("name"), "MODE_30W");
  EXPECT_EQ(orin.at("id"), 2);
  EXPECT_TRUE(parse_nvpmodel_query("nvpmodel: command not found\n").is_null());
}

void write(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
}

TEST(JetsonProbes, ARecordedNanoRootFolder) {
  TempFolder root("jetson-root");
  std::string cpuinfo;
  for (int i = 0; i < 4; ++i) {
    cpuinfo += "processor\t: " + std::to_string(i) +
               "\nBogoMIPS\t: 38.40\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: 0xd07\n\n";
  }
  write(root / "proc/cpuinfo", cpuinfo);
  write(root / "proc/meminfo", "MemTotal:        4059356 kB\nMemFree:          2411540 kB\n");
  write(root / "etc/os-release", "NAME=\"Ubuntu\"\nPRETTY_NAME=\"Ubuntu 18.04.6 LTS\"\n");
  write(root / "proc/device-tree/model", std::string("NVIDIA Jetson Nano Developer Kit\0", 33));
  write(root / "etc/nv_tegra_release", "# R32 (release), REVISION: 7.1, BOARD: t210ref, EABI: aarch64\n");
  write(root / "var/lib/nvpmodel/status", "pmode:0001 fmode:quiet\n");
  const Json hardware = probe_hardware_files(root.path());
  EXPECT_EQ(hardware.at("cpu_model"), "ARM Cortex-A57");
  EXPECT_EQ(hardware.at("cores"), 4);
  EXPECT_EQ(hardware.at("memory_mb"), 4059356 / 1024);
  EXPECT_EQ(hardware.at("os"), "Ubuntu 18.04.6 LTS");
  const Json& jetson = hardware.at("jetson");
  EXPECT_EQ(jetson.at("board_model"), "NVIDIA Jetson Nano Developer Kit");
  EXPECT_EQ(jetson.at("l4t_release").get<std::string>().rfind("# R32 (release), REVISION: 7.1", 0), 0u);
  EXPECT_EQ(jetson.at("nvpmodel").at("id"), 1);
}

TEST(HostProbes, ThisHost) {
  const Json hardware = probe_hardware();
  EXPECT_GT(hardware.at("cores").get<int64_t>(), 0);
  EXPECT_GT(hardware.at("memory_mb").get<int64_t>(), 0);
  EXPECT_FALSE(hardware.at("kernel").get<std::string>().empty());
  EXPECT_FALSE(hardware.at("architecture").get<std::string>().empty());
  EXPECT_FALSE(hardware.at("cpu_model").get<std::string>().empty());
  TempFolder empty("empty-root");
  const Json nothing = probe_hardware_files(empty.path());  // nothing readable: empty fields, no exception
  EXPECT_EQ(nothing.at("cores"), 0);
  EXPECT_TRUE(nothing.at("jetson").is_null());
}

}  // namespace
}  // namespace edgesweep
