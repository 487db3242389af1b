// Collectives among the ranks that train one trial together (a worker group): sums across the group and copies from
// one rank to the others, on raw buffers so that one interface serves both backends: MPI (host memory) and NCCL
// (device memory, built with EDGESWEEP_WITH_NCCL). Every rank of the group makes the same calls in the same order.
// No LibTorch here; workers/gradient_sync.h packs tensors into these calls.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace edgesweep {

class Collective {
 public:
  virtual ~Collective() = default;
  /// This rank's place in the group (0: the group's leader) and the group's size.
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// "mpi" or "nccl".
  virtual std::string backend() const = 0;
  /// Sums `count` float32 values at `data` across the group, in place; every rank ends with the same sums.
  virtual void allreduce_sum(float* data, size_t count) = 0;
  /// Copies `bytes` bytes at `data` on group rank `root` to `data` on every other rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
};

/// The group the current task runs on: set by a worker rank around each task it runs with others (a data-parallel
/// trial), read by the training loop and the evaluations. None (nullptr) while a task runs on one rank.
namespace task_group {
Collective* current();
/// The collective for tensors of the current group: its NCCL communicator when the worker made one (device
/// buffers), else current() (host buffers). None (nullptr) while a task runs on one rank.
Collective* tensors();
/// Makes `group` current for its lifetime (nullptr or a group of one: none), with `tensors` (optional) as its
/// collective for device tensors, then restores the previous ones.
class Scope {
 public:
  explicit Scope(Collective* group, Collective* tensors = nullptr);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  Collective* previous_;
  Collective* previous_tensors_;
};
}  // namespace task_group

/// NCCL's communicator id, made by the group's leader and sent to the others over `bootstrap` (the group's MPI
/// collective); every rank returns the leader's id. Throws Error when this build has no NCCL.
std::vector<unsigned char> nccl_unique_id(Collective& bootstrap);

/// Whether this build has the NCCL backend.
bool nccl_available();

/// The NCCL backend for the group of `bootstrap` on CUDA device `device`: the leader's id (nccl_unique_id) and
/// ncclCommInitRank. Throws Error when this build has no NCCL or the device cannot be used (no GPU, no driver).
std::unique_ptr<Collective> nccl_collective(Collective& bootstrap, int device);

}  // namespace edgesweep
