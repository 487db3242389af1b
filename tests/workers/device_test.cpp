// Tests of where tasks compute ([run] device): the GPU each launcher's local rank takes, the refusal of "cuda" where
// this LibTorch or this machine has none (this machine: Debian's CPU-only LibTorch), placement that moves modules
// and tensors in place and back, and tasks that record the device they trained on. The tests that need a GPU skip
// with the reason when there is none; on a CUDA build with a GPU they run the training loop on it.
#include "edgesweep/workers/device.h"

#include <sched.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/task.h"
#include "edgesweep/workers/run_task.h"
#include "edgesweep/workers/torchscript.h"
#include "edgesweep/workers/trainer.h"
#include "edgesweep/workers/zoo.h"
#include "expect_error.h"
#include "fake_datasets.h"
#include "temp_folder.h"
#include "synthetic_data.h"
#include "tiny_tasks.h"

namespace edgesweep {
namespace {

namespace fs = std::filesystem;

/// Sets (or, with nullopt, unsets) an environment variable for the test's scope, then restores it.
class EnvironmentVariable {
 public:
  EnvironmentVariable(std::string name, std::optional<std::string> value) : name_(std::move(name)) {
    if (const char* old = std::getenv(name_.c_str())) old_ = old;
    if (value) {
      setenv(name_.c_str(), value->c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }
  ~EnvironmentVariable() {
    if (old_) {
      setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

TEST(Device, EachLocalRankTakesTheGpuOfItsRankModuloTheNodesGpus) {
  EXPECT_EQ(gpu_for_local_rank(0, 4), 0);
  EXPECT_EQ(gpu_for_local_rank(3, 4), 3);
  EXPECT_EQ(gpu_for_local_rank(5, 4), 1);  // more ranks than GPUs on the node: they share
  EXPECT_EQ(gpu_for_local_rank(7, 1), 0);
  expect_error<Error>([] { gpu_for_local_rank(0, 0); }, {"0 GPU"});
  expect_error<Error>([] { gpu_for_local_rank(-1, 2); }, {"local rank -1"});
}

TEST(Device, TheLocalRankComesFromTheLaunchersEnvironmentOpenMpiFirst) {
  EnvironmentVariable ompi("OMPI_COMM_WORLD_LOCAL_RANK", std::nullopt);
  EnvironmentVariable slurm("SLURM_LOCALID", std::nullopt);
  EnvironmentVariable mpich("MPI_LOCALRANKID", std::nullopt);
  EnvironmentVariable plain("LOCAL_RANK", std::nullopt);
  EXPECT_EQ(launcher_local_rank(), 0);  // no launcher: the only process of its node
  {
    EnvironmentVariable set("LOCAL_RANK", "4");
    EXPECT_EQ(launcher_local_rank(), 4);
    EnvironmentVariable mpich_set("MPI_LOCALRANKID", "3");
    EXPECT_EQ(launcher_local_rank(), 3);
    EnvironmentVariable slurm_set("SLURM_LOCALID", "2");
    EXPECT_EQ(launcher_local_rank(), 2);  // srun --mpi=pmix sets both; Open MPI's own comes first
    EnvironmentVariable ompi_set("OMPI_COMM_WORLD_LOCAL_RANK", "1");
    EXPECT_EQ(launcher_local_rank(), 1);
  }
  {
    EnvironmentVariable bad("SLURM_LOCALID", "two");
    expect_error<InputError>([] { launcher_local_rank(); }, {"SLURM_LOCALID='two'", "not a local rank"});
    EnvironmentVariable negative("SLURM_LOCALID", "-1");
    expect_error<InputError>([] { launcher_local_rank(); }, {"SLURM_LOCALID='-1'"});
  }
}

TEST(Device, CudaIsRefusedWithTheReasonWhereItCannotRun) {
  EXPECT_NO_THROW(check_device_usable("cpu", "x.toml: [run] device"));
  EXPECT_EQ(resolve_device("cpu"), torch::Device(torch::kCPU));
  expect_error<InputError>([] { check_device_usable("tpu", "x.toml: [run] device"); },
                           {"x.toml: [run] device = \"tpu\"", "expected \"cpu\" or \"cuda\""});
  const std::string reason = cuda_unavailable_reason();
  if (reason.empty()) GTEST_SKIP() << "this process can use a GPU; the refusal is for builds and nodes without one";
  if (!at::hasCUDA()) {
    EXPECT_NE(reason.find("LibTorch without CUDA"), std::string::npos) << reason;
  }
  expect_error<InputError>([] { check_device_usable("cuda", "x.toml: [run] device"); },
                           {"x.toml: [run] device = \"cuda\", but ", reason, "device = \"cpu\""});
  expect_error<InputError>([] { resolve_device("cuda"); }, {"[run] device = \"cuda\"", reason});
}

TEST(Device, TheTasksDeviceIsTheCpuUnlessAScopeSaysOtherwise) {
  EXPECT_TRUE(task_device::current().is_cpu());
  {
    const task_device::Scope outer(torch::Device(torch::kCUDA, 1));  // only recorded, nothing runs there
    EXPECT_EQ(task_device::current(), torch::Device(torch::kCUDA, 1));
    {
      const task_device::Scope inner(torch::kCPU);
      EXPECT_TRUE(task_device::current().is_cpu());
    }
    EXPECT_EQ(task_device::current(), torch::Device(torch::kCUDA, 1));
    EXPECT_EQ(device_name(task_device::current()), "cuda:1");
  }
  EXPECT_TRUE(task_device::current().is_cpu());
  EXPECT_EQ(device_name(torch::kCPU), "cpu");
}

TEST(Device, APlacementOnTheCpuLeavesEverythingAsItWas) {
  torch::nn::Linear layer(3, 2);
  torch::Tensor mask = torch::ones({2, 3});
  const void* weight_data = layer->weight.data_ptr();
  const void* mask_data = mask.data_ptr();
  {
    const DevicePlacement placement(torch::kCPU, {layer.get()}, {mask});
    EXPECT_EQ(layer->weight.data_ptr(), weight_data);
    EXPECT_EQ(mask.data_ptr(), mask_data);
  }
  EXPECT_EQ(layer->weight.data_ptr(), weight_data);
  EXPECT_EQ(mask.data_ptr(), mask_data);
}

/// The reason to skip a test that needs a GPU, or empty.
std::string no_gpu() {
  const std::string reason = cuda_unavailable_reason();
  return reason.empty() ? "" : "needs a GPU: " + reason;
}

TEST(TaskThreads, LibTorchAndBlasGetTheTasksThreadsAndReportThem) {
  const int before = torch::get_num_threads();
  const ThreadSettings settings = set_task_threads(1);
  EXPECT_EQ(settings.requested, 1);
  EXPECT_EQ(settings.intra_op, 1);
  EXPECT_EQ(settings.openmp, 1);
  EXPECT_EQ(torch::get_num_threads(), 1);
  if (settings.blas >= 0) {
    EXPECT_EQ(settings.blas, 1);  // OpenBLAS is the BLAS in use
  }
  EXPECT_FALSE(settings.limited_by_affinity);
  EXPECT_EQ(settings.allowed_cpus, allowed_cpus());
  torch::set_num_threads(before);
}

TEST(TaskThreads, AProcessBoundToFewerCpusThanItsThreadsComputesWithOneThreadPerCpu) {
  // As a rank that mpirun bound to one core: this thread's mask is what the process would have.
  cpu_set_t saved;
  ASSERT_EQ(sched_getaffinity(0, sizeof saved, &saved), 0);
  if (CPU_COUNT(&saved) < 2) GTEST_SKIP() << "needs two CPUs; this process may run on " << CPU_COUNT(&saved);
  cpu_set_t one;
  CPU_ZERO(&one);
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &saved)) {
      CPU_SET(cpu, &one);
      break;
    }
  }
  const int before = torch::get_num_threads();
  ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
  const ThreadSettings bound = set_task_threads(2);
  ASSERT_EQ(sched_setaffinity(0, sizeof saved, &saved), 0);
  EXPECT_EQ(bound.allowed_cpus, 1);
  EXPECT_EQ(bound.requested, 2);
  EXPECT_EQ(bound.intra_op, 1);
  EXPECT_TRUE(bound.limited_by_affinity);
  const ThreadSettings free = set_task_threads(2);
  EXPECT_EQ(free.intra_op, 2);
  EXPECT_FALSE(free.limited_by_affinity);
  torch::set_num_threads(before);
}

TEST(DeviceOnGpu, APlacementMovesModulesAndTensorsInPlaceAndBack) {
  if (const std::string why = no_gpu(); !why.empty()) GTEST_SKIP() << why;
  const torch::Device gpu(torch::kCUDA, 0);
  torch::nn::Linear layer(3, 2);
  torch::Tensor mask = torch::ones({2, 3});
  const torch::Tensor same_handle = mask;  // a closure's copy of the handle sees the move
  {
    const DevicePlacement placement(gpu, {layer.get()}, {mask});
    EXPECT_EQ(layer->weight.device(), gpu);
    EXPECT_EQ(same_handle.device(), gpu);
    {
      const DevicePlacement nested(gpu, {layer.get()}, {mask});  // already there: nothing moves, nothing comes back
    }
    EXPECT_EQ(layer->weight.device(), gpu);
  }
  EXPECT_TRUE(layer->weight.device().is_cpu());
  EXPECT_TRUE(same_handle.device().is_cpu());
}

GraphModule tiny_cnn() {
  torch::manual_seed(3);
  return GraphModule(graph_from_layers(Json::parse(R"([
    {"op": "conv", "out": 4}, {"op": "batchnorm"}, {"op": "relu"}, {"op": "adaptive_avgpool"},
    {"op": "flatten"}, {"op": "linear", "out": 2}
  ])"),
                                       Shape{1, 8, 8, false}, 2));
}

TEST(DeviceOnGpu, TheTrainingLoopGivesOnTheGpuWhatItGivesOnTheCpuAndLeavesTheModelOnTheCpu) {
  if (const std::string why = no_gpu(); !why.empty()) GTEST_SKIP() << why;
  const DataSplits data = brightness_task(5);
  TrainConfig config;
  config.epochs = 2;
  config.lr = 0.05;
  config.batch_size = 16;
  GraphModule on_cpu = tiny_cnn();
  const auto cpu_records = train_model(on_cpu, data, config, false, 7);
  GraphModule on_gpu = tiny_cnn();
  GraphModule teacher = tiny_cnn();
  torch::Tensor mask = torch::ones_like(on_gpu->weight(1));
  std::vector<torch::Device> seen;
  TrainHooks hooks;
  hooks.modules.push_back(teacher.get());
  hooks.device_state.push_back(mask);
  hooks.after_step = [&] {
    seen = {on_gpu->weight(1).device(), teacher->weight(1).device(), mask.device()};
    torch::NoGradGuard no_grad;
    on_gpu->weight(1).mul_(mask);
  };
  std::vector<EpochRecord> gpu_records;
  {
    const task_device::Scope scope(torch::Device(torch::kCUDA, 0));
    gpu_records = train_model(on_gpu, data, config, false, 7, {}, hooks);
  }
  ASSERT_EQ(seen.size(), 3u);
  for (const torch::Device& device : seen) EXPECT_TRUE(device.is_cuda()) << device;
  for (const torch::Tensor& t : on_gpu->parameters()) EXPECT_TRUE(t.device().is_cpu());
  EXPECT_TRUE(teacher->weight(1).device().is_cpu());
  EXPECT_TRUE(mask.device().is_cpu());
  ASSERT_EQ(gpu_records.size(), cpu_records.size());
  for (size_t i = 0; i < gpu_records.size(); ++i) {
    EXPECT_NEAR(gpu_records[i].train_loss, cpu_records[i].train_loss, 1e-3 * (1 + cpu_records[i].train_loss));
  }
}

TEST(DeviceTask, ATaskRecordsTheDeviceItTrainedOnAndFailsClearlyOnAGpuItCannotUse) {
  const TempFolder folder{"device-task"};
  write_fashion_mnist_folder(folder / "data", labels_with_counts(std::vector<int>(10, 6)),
                             labels_with_counts(std::vector<int>(10, 2)));
  Task task = baseline_task(folder / "data", folder / "results", {0, 1, 2}, 1);
  task.threads = 2;
  const TaskResult result = run_task(task);
  ASSERT_TRUE(result.ok) << result.error;
  const Json& metadata = result.artifacts.at(0).metadata;
  EXPECT_EQ(metadata.at("trained_on"), "cpu");
  EXPECT_EQ(metadata.at("latency_measured_on"), "cpu (2 thread(s))");
  // The archive says it too.
  const LoadedModel loaded = load_graph_module(folder / "results" / result.artifacts.at(0).path);
  EXPECT_EQ(loaded.metadata.at("trained_on"), "cpu");

  const std::string reason = cuda_unavailable_reason();
  if (!reason.empty()) {
    task.device = "cuda";
    task.trial_id = 2;
    const TaskResult refused = run_task(task);
    EXPECT_FALSE(refused.ok);
    EXPECT_NE(refused.error.find("[run] device = \"cuda\", but " + reason), std::string::npos) << refused.error;
    EXPECT_TRUE(refused.artifacts.empty());
    return;
  }
  task.device = "cuda";
  task.trial_id = 2;
  const TaskResult on_gpu = run_task(task);
  ASSERT_TRUE(on_gpu.ok) << on_gpu.error;
  EXPECT_EQ(on_gpu.artifacts.at(0).metadata.at("trained_on").get<std::string>().rfind("cuda:", 0), 0u);
}

}  // namespace
}  // namespace edgesweep
