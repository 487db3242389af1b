// Host probes: CPU model, cores, memory, OS and kernel from /proc, /etc and uname; on Jetson the board model from the
// device tree, the L4T release and the nvpmodel power mode.
#include "edgesweep/device_agents/probes.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

namespace edgesweep {
namespace fs = std::filesystem;
namespace {

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string trim(const std::string& text) {
  const size_t begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return "";
  const size_t end = text.find_last_not_of(" \t\r\n");
  return text.substr(begin, end - begin + 1);
}

/// "key : value" lines (cpuinfo, meminfo) -> the first value of each key.
std::map<std::string, std::string> colon_fields(const std::string& text) {
  std::map<std::string, std::string> fields;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    fields.emplace(trim(line.substr(0, colon)), trim(line.substr(colon + 1)));
  }
  return fields;
}

/// An ARM core's name from its implementer and part numbers, for kernels whose cpuinfo has no "model name".
std::string arm_core_name(const std::string& implementer, const std::string& part) {
  static const std::map<std::string, std::string> names = {
      {"0x41 0xd03", "ARM Cortex-A53"},  {"0x41 0xd07", "ARM Cortex-A57"}, {"0x41 0xd08", "ARM Cortex-A72"},
      {"0x41 0xd0b", "ARM Cortex-A76"},  {"0x41 0xd42", "ARM Cortex-A78AE"}, {"0x4e 0x004", "NVIDIA Carmel"}};
  const auto it = names.find(implementer + " " + part);
  if (it != names.end()) return it->second;
  return implementer.empty() ? "" : "ARM implementer " + implementer + " part " + part;
}

std::string os_name(const std::string& os_release) {
  std::istringstream lines(os_release);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("PRETTY_NAME=", 0) == 0) {
      std::string value = trim(line.substr(12));
      if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'')) {
        value = value.substr(1, value.size() - 2);
      }
      return value;
    }
  }
  return "";
}

/// The nvpmodel mode from `nvpmodel -q` when the tool is there (it prints the name and the id).
Json query_nvpmodel() {
  for (const char* tool : {"/usr/sbin/nvpmodel", "/usr/bin/nvpmodel"}) {
    if (access(tool, X_OK) != 0) continue;
    const std::string command = std::string(tool) + " -q 2>/dev/null";
    std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
    if (!pipe) return nullptr;
    std::string output;
    char buffer[256];
    while (fgets(buffer, sizeof(buffer), pipe.get()) != nullptr) output += buffer;
    return parse_nvpmodel_query(output);
  }
  return nullptr;
}

}  // namespace

std::string parse_device_tree_model(const std::string& text) {
  const size_t nul = text.find('\0');
  return trim(nul == std::string::npos ? text : text.substr(0, nul));
}

Json parse_nvpmodel_query(const std::string& text) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    const size_t at = line.find("NV Power Mode:");
    if (at == std::string::npos) continue;
    Json mode{{"name", trim(line.substr(at + 14))}, {"id", nullptr}};
    std::string next;
    if (std::getline(lines, next)) {
      next = trim(next);
      if (!next.empty() && next.find_first_not_of("0123456789") == std::string::npos) mode["id"] = std::stoi(next);
    }
    return mode;
  }
  return nullptr;
}

Json probe_hardware_files(const fs::path& root) {
  const auto cpu = colon_fields(read_text(root / "proc/cpuinfo"));
  std::string cpu_model;
  if (cpu.count("model name")) cpu_model = cpu.at("model name");
  if (cpu_model.empty() && cpu.count("CPU implementer")) {
    cpu_model = arm_core_name(cpu.at("CPU implementer"), cpu.count("CPU part") ? cpu.at("CPU part") : "");
  }
  if (cpu_model.empty() && cpu.count("Hardware")) cpu_model = cpu.at("Hardware");
  int64_t cores = 0;
  {
    std::istringstream lines(read_text(root / "proc/cpuinfo"));
    std::string line;
    while (std::getline(lines, line)) {
      if (line.rfind("processor", 0) == 0 && line.find(':') != std::string::npos) ++cores;
    }
  }
  const auto memory = colon_fields(read_text(root / "proc/meminfo"));
  int64_t memory_mb = 0;
  if (memory.count("MemTotal")) {
    try {
      memory_mb = std::stoll(memory.at("MemTotal")) / 1024;  // "24683584 kB"
    } catch (const std::exception&) {
    }
  }
  Json hardware{{"cpu_model", cpu_model},
                {"cores", cores},
                {"memory_mb", memory_mb},
                {"os", os_name(read_text(root / "etc/os-release"))},
                {"jetson", nullptr}};

  const std::string board = parse_device_tree_model(read_text(root / "proc/device-tree/model"));
  const std::string release = trim(read_text(root / "etc/nv_tegra_release"));
  if (board.find("Jetson") != std::string::npos || board.find("NVIDIA") != std::string::npos || !release.empty()) {
    Json jetson{{"board_model", board}, {"l4t_release", release.substr(0, release.find('\n'))}, {"nvpmodel", nullptr}};
    // The status file nvpmodel keeps ("pmode:0002 fmode:quiet"): the mode's id without running anything.
    const std::string status = read_text(root / "var/lib/nvpmodel/status");
    const size_t at = status.find("pmode:");
    if (at != std::string::npos) {
      try {
        jetson["nvpmodel"] = Json{{"name", nullptr}, {"id", std::stoi(status.substr(at + 6))}};
      } catch (const std::exception&) {
      }
    }
    hardware["jetson"] = jetson;
  }
  return hardware;
}

Json probe_hardware() {
  Json hardware = probe_hardware_files("/");
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  if (online > 0) hardware["cores"] = online;
  struct utsname names {};
  if (uname(&names) == 0) {
    hardware["kernel"] = names.release;
    hardware["architecture"] = names.machine;
    hardware["hostname"] = names.nodename;
  }
  if (hardware["jetson"].is_object()) {
    const Json mode = query_nvpmodel();
    if (!mode.is_null()) hardware["jetson"]["nvpmodel"] = mode;
  }
  return hardware;
}

}  // namespace edgesweep
