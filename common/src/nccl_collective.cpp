// The NCCL backend of the group collectives: device buffers, one CUDA stream per group, the communicator's id made by
// the group's leader and sent to the others over the group's MPI collective. Without EDGESWEEP_WITH_NCCL every entry
// point says so.
#include <cstring>

#include "edgesweep/common/collective.h"
#include "edgesweep/common/error.h"

#if EDGESWEEP_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace edgesweep {

#if EDGESWEEP_WITH_NCCL

namespace {

void check_nccl(ncclResult_t result, const char* what) {
  if (result != ncclSuccess) throw Error(fmt::format("NCCL {} failed: {}", what, ncclGetErrorString(result)));
}

void check_cuda(cudaError_t result, const std::string& what) {
  if (result != cudaSuccess) throw Error(fmt::format("CUDA {} failed: {}", what, cudaGetErrorString(result)));
}

class NcclCollective : public Collective {
 public:
  NcclCollective(Collective& bootstrap, int device) : rank_(bootstrap.rank()), size_(bootstrap.size()) {
    int devices = 0;
    check_cuda(cudaGetDeviceCount(&devices), "count the devices");
    check(device >= 0 && device < devices, "CUDA device {} does not exist: {} device(s) visible", device, devices);
    check_cuda(cudaSetDevice(device), fmt::format("select device {}", device));
    const std::vector<unsigned char> id_bytes = nccl_unique_id(bootstrap);
    ncclUniqueId id{};
    std::memcpy(id.internal, id_bytes.data(), sizeof id.internal);
    check_nccl(ncclCommInitRank(&comm_, size_, id, rank_), "communicator init");
    // A blocking stream: its work waits for what was queued before on the legacy default stream (where LibTorch
    // queues the copies into the buffers unless a caller set another stream), and each call waits for its own end.
    check_cuda(cudaStreamCreate(&stream_), "create a stream");
  }
  ~NcclCollective() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    if (comm_ != nullptr) ncclCommDestroy(comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }
  void allreduce_sum(float* data, size_t count) override {
    check_nccl(ncclAllReduce(data, data, count, ncclFloat32, ncclSum, comm_, stream_), "all-reduce");
    check_cuda(cudaStreamSynchronize(stream_), "wait for the all-reduce");
  }
  void broadcast(void* data, size_t bytes, int root) override {
    check(root >= 0 && root < size_, "broadcast from group rank {}: the group has {} rank(s)", root, size_);
    check_nccl(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_), "broadcast");
    check_cuda(cudaStreamSynchronize(stream_), "wait for the broadcast");
  }

 private:
  int rank_ = 0;
  int size_ = 1;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

bool nccl_available() { return true; }

std::vector<unsigned char> nccl_unique_id(Collective& bootstrap) {
  ncclUniqueId id{};
  if (bootstrap.rank() == 0) check_nccl(ncclGetUniqueId(&id), "make the communicator id");
  bootstrap.broadcast(id.internal, sizeof id.internal, 0);
  return std::vector<unsigned char>(id.internal, id.internal + sizeof id.internal);
}

std::unique_ptr<Collective> nccl_collective(Collective& bootstrap, int device) {
  return std::make_unique<NcclCollective>(bootstrap, device);
}

#else

namespace {
[[noreturn]] void no_nccl() {
  throw Error("this build has no NCCL backend: configure with the CUDA toolkit and NCCL found (EDGESWEEP_WITH_NCCL)");
}
}  // namespace

bool nccl_available() { return false; }
std::vector<unsigned char> nccl_unique_id(Collective&) { no_nccl(); }
std::unique_ptr<Collective> nccl_collective(Collective&, int) { no_nccl(); }

#endif

}  // namespace edgesweep
