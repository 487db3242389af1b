// Device selection for tasks, and moving a stage's modules and state to the device and back.
#include "edgesweep/workers/device.h"

#include <dlfcn.h>
#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include <ATen/Context.h>
#include <torch/cuda.h>

#include <spdlog/spdlog.h>

#include "edgesweep/common/error.h"

namespace edgesweep {

std::string cuda_unavailable_reason() {
  if (!at::hasCUDA()) {
    return "this edgesweep is built against a LibTorch without CUDA (Debian's libtorch is CPU-only); build it against "
           "a CUDA LibTorch (README: Building for GPUs)";
  }
  if (torch::cuda::device_count() == 0) {
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    return fmt::format("LibTorch has CUDA, but no GPU is visible to this process (CUDA_VISIBLE_DEVICES={})",
                       visible != nullptr ? fmt::format("'{}'", visible) : std::string("unset"));
  }
  return "";
}

void check_device_usable(const std::string& setting, const std::string& where) {
  check_input(setting == "cpu" || setting == "cuda", "{} = \"{}\": expected \"cpu\" or \"cuda\"", where, setting);
  if (setting == "cpu") return;
  const std::string reason = cuda_unavailable_reason();
  check_input(reason.empty(), "{} = \"cuda\", but {}; or set device = \"cpu\"", where, reason);
}

int64_t launcher_local_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "LOCAL_RANK"}) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') continue;
    char* end = nullptr;
    errno = 0;
    const long long parsed = std::strtoll(value, &end, 10);
    check_input(errno == 0 && *end == '\0' && parsed >= 0,
                "environment variable {}='{}' is not a local rank (a non-negative integer)", name, value);
    return static_cast<int64_t>(parsed);
  }
  return 0;
}

int64_t gpu_for_local_rank(int64_t local_rank, int64_t device_count) {
  check(local_rank >= 0 && device_count > 0, "GPU of local rank {} among {} GPU(s)", local_rank, device_count);
  return local_rank % device_count;
}

torch::Device resolve_device(const std::string& setting) {
  check_device_usable(setting, "[run] device");
  if (setting == "cpu") return torch::kCPU;
  const auto count = static_cast<int64_t>(torch::cuda::device_count());
  return {torch::kCUDA, static_cast<c10::DeviceIndex>(gpu_for_local_rank(launcher_local_rank(), count))};
}

std::string device_name(const torch::Device& device) {
  if (device.is_cpu()) return "cpu";
  return device.str();
}

namespace task_device {
namespace {
thread_local torch::Device current_device = torch::kCPU;
thread_local std::string current_format = "auto";
}  // namespace

torch::Device current() { return current_device; }

std::string memory_format() { return current_format; }

Scope::Scope(torch::Device device, std::string memory_format)
    : previous_(current_device), previous_format_(current_format) {
  check_input(memory_format == "auto" || memory_format == "contiguous" || memory_format == "channels-last",
              "[run] memory_format = \"{}\": expected auto, contiguous or channels-last", memory_format);
  current_device = device;
  current_format = std::move(memory_format);
}

Scope::~Scope() {
  current_device = previous_;
  current_format = previous_format_;
}
}  // namespace task_device

int64_t allowed_cpus() {
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  if (sched_getaffinity(0, sizeof cpus, &cpus) != 0) return 0;
  return CPU_COUNT(&cpus);
}

ThreadSettings set_task_threads(int64_t threads) {
  ThreadSettings settings;
  settings.requested = std::max<int64_t>(1, threads);
  settings.allowed_cpus = allowed_cpus();
  settings.intra_op = settings.requested;
  if (settings.allowed_cpus > 0 && settings.allowed_cpus < settings.requested) {
    settings.intra_op = settings.allowed_cpus;
    settings.limited_by_affinity = true;
    // Once per process: every task of a bound rank meets the same mask.
    static bool warned = false;
    if (!warned) {
      warned = true;
      spdlog::warn("this process may run on {} CPU(s) (its affinity) but its tasks ask for {} threads; it computes "
                   "with {}. Under mpirun, Open MPI binds each of two ranks to one core by default: start with "
                   "`mpirun --bind-to none` (or give [run] threads) to use the cores",
                   settings.allowed_cpus, settings.requested, settings.intra_op);
    }
  }
  // LibTorch's own pool is OpenMP here: this sets both.
  torch::set_num_threads(static_cast<int>(settings.intra_op));
  settings.openmp = torch::get_num_threads();
  // OpenBLAS keeps its own count (its pthread build ignores OpenMP's); found at run time, as the BLAS is whatever
  // libblas.so.3 the system's alternatives point to.
  using SetThreads = void (*)(int);
  using GetThreads = int (*)();
  if (const auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set(static_cast<int>(settings.intra_op));
  }
  if (const auto get = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"))) {
    settings.blas = get();
  }
  return settings;
}

namespace {
/// Whether every parameter and buffer of `module` is on `device` already.
bool all_on(torch::nn::Module& module, torch::Device device) {
  for (const torch::Tensor& t : module.parameters()) {
    if (t.device() != device) return false;
  }
  for (const torch::Tensor& t : module.buffers()) {
    if (t.device() != device) return false;
  }
  return true;
}
}  // namespace

// Only what is not on the device yet is moved, and only that goes back: an evaluation inside the training loop finds
// the model on the device and leaves it there.
DevicePlacement::DevicePlacement(torch::Device device, std::vector<torch::nn::Module*> modules,
                                 std::vector<torch::Tensor> tensors)
    : device_(device) {
  if (device_.is_cpu()) return;
  torch::NoGradGuard no_grad;
  for (torch::nn::Module* module : modules) {
    if (module == nullptr || all_on(*module, device_)) continue;
    module->to(device_);
    modules_.push_back(module);
  }
  for (torch::Tensor& t : tensors) {
    if (!t.defined() || t.device() == device_) continue;
    t.set_data(t.to(device_));
    tensors_.push_back(t);
  }
}

DevicePlacement::~DevicePlacement() {
  if (device_.is_cpu()) return;
  try {
    torch::NoGradGuard no_grad;
    for (torch::nn::Module* module : modules_) module->to(torch::kCPU);
    for (torch::Tensor& t : tensors_) t.set_data(t.to(torch::kCPU));
  } catch (const std::exception&) {
    // A device that fails now (a lost GPU) has failed the task already; the CPU copies are not used again.
  }
}

}  // namespace edgesweep
