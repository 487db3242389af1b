// What a device agent's measurement costs and how repeatable it is: one model benchmarked `repeats` times through a
// loopback agent (upload once, then each benchmark in a fresh child process) and `repeats` times in this process
// with the same method and threads. Writes the FPS of every repeat, their coefficient of variation, the agent's
// overhead in FPS against the in-process figure, and the wall time of a request against the time spent measuring.
//
//   bench_agent_overhead EDGESWEEP_BINARY MODEL.pt OUTPUT.md [--repeats 5] [--threads 1] [--seconds 2]
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <torch/script.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/process.h"
#include "edgesweep/device_agents/client.h"
#include "edgesweep/workers/measure_latency.h"

#include "bench_report.h"

namespace fs = std::filesystem;
using namespace edgesweep;
using Clock = std::chrono::steady_clock;

namespace {

/// A free TCP port on 127.0.0.1 (asked from the kernel, then released for the agent to take).
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  check(fd >= 0, "cannot create a socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  close(fd);
  check(ok, "cannot find a free port on 127.0.0.1");
  return ntohs(address.sin_port);
}

/// The agent process, stopped (SIGTERM, then SIGKILL after 10 s) when this goes out of scope.
class AgentProcess {
 public:
  AgentProcess(const fs::path& binary, const std::string& address, const fs::path& data, int64_t threads)
      : process_(options(binary, address, data, threads)) {}
  ~AgentProcess() {
    process_.kill_group(SIGTERM);
    process_.wait_for(std::chrono::seconds(10));  // else the destructor of process_ kills it
  }
  AgentProcess(const AgentProcess&) = delete;
  AgentProcess& operator=(const AgentProcess&) = delete;

 private:
  static ProcessOptions options(const fs::path& binary, const std::string& address, const fs::path& data,
                                int64_t threads) {
    ProcessOptions o;
    o.argv = {binary.string(), "agent", "--listen", address, "--data", data.string(), "--threads",
              std::to_string(threads), "--profile", "bench"};
    o.keep_output = true;
    return o;
  }
  Process process_;
};

/// Connects to the agent at `address`, retrying while it starts (it probes its runtime first).
AgentClient connect_when_ready(const std::string& address, double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (true) {
    try {
      AgentClientOptions options;
      options.address = address;
      options.connect_timeout_seconds = 5;
      return AgentClient(options);
    } catch (const Error&) {
      if (Clock::now() > deadline) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
}

struct Summary {
  double mean = 0, cv_percent = 0;
};

Summary summarize(const std::vector<double>& values) {
  Summary s;
  for (double v : values) s.mean += v;
  s.mean /= static_cast<double>(values.size());
  double squares = 0;
  for (double v : values) squares += (v - s.mean) * (v - s.mean);
  const double std = values.size() > 1 ? std::sqrt(squares / static_cast<double>(values.size() - 1)) : 0.0;
  s.cv_percent = s.mean > 0 ? 100.0 * std / s.mean : 0.0;
  return s;
}

std::string join(const std::vector<double>& values, int decimals) {
  std::string text;
  for (double v : values) text += (text.empty() ? "" : ", ") + fmt::format("{:.{}f}", v, decimals);
  return text;
}

int run(int argc, char** argv) {
  check_input(argc >= 4, "usage: bench_agent_overhead EDGESWEEP_BINARY MODEL.pt OUTPUT.md [--repeats 5] "
                         "[--threads 1] [--seconds 2]");
  const fs::path binary = fs::absolute(argv[1]);
  const fs::path model = fs::absolute(argv[2]);
  const fs::path output = argv[3];
  int64_t repeats = 5, threads = 1;
  double seconds = 2;
  for (int i = 4; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--repeats") repeats = std::stoll(argv[i + 1]);
    else if (flag == "--threads") threads = std::stoll(argv[i + 1]);
    else if (flag == "--seconds") seconds = std::stod(argv[i + 1]);
    else throw InputError(fmt::format("unknown option '{}'", flag));
  }
  check_input(repeats >= 2, "--repeats must be at least 2, got {}", repeats);
  check_input(fs::is_regular_file(model), "no model file '{}'", model.string());
  const std::vector<int64_t> batches = {1, 32};
  const Json request{{"batch_sizes", batches},     {"warmup_runs", 5},   {"warmup_seconds", seconds / 4},
                     {"min_runs", 20},             {"min_seconds", seconds}, {"threads", threads}};

  // Through the agent: each benchmark is a fresh child process of the agent.
  std::map<int64_t, std::vector<double>> agent_fps, local_fps;
  std::vector<double> request_seconds, measured_seconds;
  std::string hardware;
  std::vector<int64_t> input_shape;  // C, H, W as the agent's child read it from the archive
  {
    std::string pattern = (fs::temp_directory_path() / "edgesweep-agent-overhead-XXXXXX").string();
    check(mkdtemp(pattern.data()) != nullptr, "cannot create a folder like '{}'", pattern);
    const fs::path data = pattern;
    const std::string address = fmt::format("127.0.0.1:{}", free_port());
    {
      AgentProcess agent(binary, address, data, threads);
      AgentClient client = connect_when_ready(address, 60);
      hardware = client.hardware().value("cpu_model", std::string("unknown CPU"));
      const std::string sha = client.upload(model);
      for (int64_t r = 0; r < repeats; ++r) {
        const auto start = Clock::now();
        const Json result = client.benchmark(sha, request);
        input_shape = result.at("model").at("input_shape").get<std::vector<int64_t>>();
        request_seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
        double measuring = 0;
        for (const Json& b : result.at("batches")) {
          agent_fps[b.at("batch_size").get<int64_t>()].push_back(b.at("fps").get<double>());
          measuring += b.at("warmup_seconds").get<double>() + b.at("timed_seconds").get<double>();
        }
        measured_seconds.push_back(measuring);
        fmt::print(stderr, "agent repeat {}: {:.2f} s\n", r + 1, request_seconds.back());
      }
    }
    std::error_code ignored;
    fs::remove_all(data, ignored);
  }

  // In this process, with the same method and threads.
  torch::jit::Module module = torch::jit::load(model.string());
  LatencyOptions options;
  options.warmup_runs = 5;
  options.warmup_seconds = seconds / 4;
  options.min_runs = 20;
  options.min_seconds = seconds;
  options.threads = threads;
  check(input_shape.size() == 3, "the agent's result gives no input shape (C, H, W) for '{}'", model.string());
  for (int64_t r = 0; r < repeats; ++r) {
    for (int64_t batch : batches) {
      const torch::Tensor input = torch::randn({batch, input_shape[0], input_shape[1], input_shape[2]});
      local_fps[batch].push_back(measure_latency(module, input, options).images_per_second);
    }
  }

  std::string text = fmt::format(
      "# Device agent: repeatability and overhead\n\n"
      "Made by `bench/run_agent_overhead` (`bench_agent_overhead edgesweep {} ...`) on {}: one model, {} repeats, "
      "{} thread(s), warm-up 5 runs and {:.2f} s, then at least 20 runs and {:.1f} s per batch size. \"Agent\": a "
      "loopback `edgesweep agent`, each benchmark in a fresh child process; \"in-process\": the same method in the "
      "benchmark's own process. CV: standard deviation / mean of the repeats' FPS. Overhead: how much lower the "
      "agent's mean FPS is than the in-process one.\n\n"
      "| batch | agent FPS per repeat | agent mean | agent CV % | in-process FPS per repeat | in-process mean | "
      "in-process CV % | overhead % |\n|---:|---|---:|---:|---|---:|---:|---:|\n",
      model.filename().string(), hardware, repeats, threads, seconds / 4, seconds);
  for (int64_t batch : batches) {
    const Summary agent = summarize(agent_fps[batch]);
    const Summary local = summarize(local_fps[batch]);
    text += fmt::format("| {} | {} | {:.1f} | {:.2f} | {} | {:.1f} | {:.2f} | {:.2f} |\n", batch,
                        join(agent_fps[batch], 1), agent.mean, agent.cv_percent, join(local_fps[batch], 1), local.mean,
                        local.cv_percent, 100.0 * (local.mean - agent.mean) / local.mean);
  }
  const Summary request_time = summarize(request_seconds);
  const Summary measuring_time = summarize(measured_seconds);
  text += fmt::format(
      "\nWall time of one benchmark request (child start, LibTorch load, model load, measuring, reply): mean {:.2f} s "
      "(requests: {}); of which measuring (warm-up and timed runs): mean {:.2f} s. The difference, {:.2f} s, is the "
      "agent's fixed cost per benchmark.\n",
      request_time.mean, join(request_seconds, 2), measuring_time.mean, request_time.mean - measuring_time.mean);
  bench::write_report(output, text);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return edgesweep::bench::main_of(run, argc, argv); }
