// Where a task computes: [run] device = "cpu" or "cuda". With cuda, each worker rank takes the GPU
// `local rank % GPUs of its node`, the local rank read from the launcher's environment (Open MPI, Slurm, MPICH).
// Models live on the CPU between stages (surgery, export, int8 kernels and the in-process latency are CPU work); the
// training loop, the evaluations and calibration move them to the task's device for their duration.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace edgesweep {

/// Why this process cannot compute on CUDA: this LibTorch has no CUDA, or no GPU is visible. Empty when it can.
std::string cuda_unavailable_reason();

/// Throws InputError naming `where` (e.g. "experiments/x.toml: [run] device") when `setting` is "cuda" and
/// cuda_unavailable_reason() is not empty, or when `setting` is neither "cpu" nor "cuda".
void check_device_usable(const std::string& setting, const std::string& where);

/// This process's rank among the launcher's processes on its node: the first of OMPI_COMM_WORLD_LOCAL_RANK,
/// SLURM_LOCALID, MPI_LOCALRANKID and LOCAL_RANK that is set (0 when none is). Throws InputError naming the variable
/// when its value is not a non-negative integer.
int64_t launcher_local_rank();

/// The GPU of a process with `local_rank` on a node with `device_count` GPUs: local_rank % device_count.
int64_t gpu_for_local_rank(int64_t local_rank, int64_t device_count);

/// The device a [run] device setting names for this process: the CPU, or its GPU. Throws InputError when the
/// setting is unknown or CUDA is not usable here (with the reason).
torch::Device resolve_device(const std::string& setting);

/// "cpu" or "cuda:N", as recorded in artifacts' metadata.
std::string device_name(const torch::Device& device);

/// The device of the task that runs in this process (the CPU unless a Scope says otherwise), and the layout its
/// trainings use ([run] memory_format: "auto", "contiguous" or "channels-last"; "auto" unless a Scope says otherwise).
namespace task_device {
torch::Device current();
std::string memory_format();
class Scope {
 public:
  explicit Scope(torch::Device device, std::string memory_format = "auto");
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  torch::Device previous_;
  std::string previous_format_;
};
}  // namespace task_device

/// The thread counts a task computes with, set once per task: LibTorch's intra-op threads (which are OpenMP's) and
/// OpenBLAS's (set through openblas_set_num_threads when the BLAS in use is OpenBLAS; -1 when it is another). A
/// process may run on fewer CPUs than the task asks threads (its affinity: Open MPI binds each of two ranks to one
/// core unless told --bind-to none, Slurm binds tasks to their cores): the threads are then as many as its CPUs, as
/// more would take turns on them, and `limited_by_affinity` says so.
struct ThreadSettings {
  int64_t intra_op = 1;
  int64_t openmp = 1;
  int64_t blas = -1;
  int64_t requested = 1;     ///< what the task asked
  int64_t allowed_cpus = 0;  ///< CPUs this process may run on (0: unknown)
  bool limited_by_affinity = false;
};
ThreadSettings set_task_threads(int64_t threads);

/// How many CPUs this process may run on (its affinity mask); 0 when it cannot be read.
int64_t allowed_cpus();

/// Moves modules and tensors to `device` for its lifetime and back to the CPU after (when it ends by an exception
/// too). Tensors move in place (their data is swapped, as Module::to does), so closures that hold them see the move.
/// Nothing happens when `device` is the CPU.
class DevicePlacement {
 public:
  DevicePlacement(torch::Device device, std::vector<torch::nn::Module*> modules,
                  std::vector<torch::Tensor> tensors = {});
  ~DevicePlacement();
  DevicePlacement(const DevicePlacement&) = delete;
  DevicePlacement& operator=(const DevicePlacement&) = delete;

 private:
  torch::Device device_;
  std::vector<torch::nn::Module*> modules_;
  std::vector<torch::Tensor> tensors_;
};

}  // namespace edgesweep
