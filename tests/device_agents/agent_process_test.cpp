// The real `edgesweep agent` process on 127.0.0.1 (a port of its choosing, read from its first line): a real
// exported model uploaded and benchmarked in a child with sane figures, a child that crashes leaving the agent
// serving, bad peers refused, SIGTERM ending it cleanly, and the command's refusals of unsafe options.
// Every process started here is ended by its pid.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "../workers/expect_error.h"
#include "../workers/temp_folder.h"
#include "test_certificate.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/device_agents/auth.h"
#include "edgesweep/device_agents/client.h"
#include "edgesweep/device_agents/tls.h"

namespace edgesweep {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const fs::path kBinary = EDGESWEEP_BINARY;
const fs::path kModelMaker = EDGESWEEP_BENCH_MODEL_MAKER;

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

/// Waits up to `seconds` for `pid` to exit; its wait status, or -1 when it is still running.
int wait_for_exit(pid_t pid, double seconds) {
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  for (;;) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    if (Clock::now() > end) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

/// The pid of the benchmark child (`agent-bench` without --empty) whose parent is `parent`; -1 when there is none.
pid_t benchmark_child_of(pid_t parent) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = read_text(entry.path() / "stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    fields >> state >> ppid;
    if (ppid != parent) continue;
    std::string cmdline = read_text(entry.path() / "cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find("agent-bench") != std::string::npos && cmdline.find("--empty") == std::string::npos) {
      return static_cast<pid_t>(std::stol(name));
    }
  }
  return -1;
}

/// Whether process `pid` has ended (gone, or a zombie waiting for whoever adopted it).
bool process_ended(pid_t pid) {
  const std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  if (stat.empty()) return true;
  const size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && (stat[close + 2] == 'Z' || stat[close + 2] == 'X');
}

/// Waits up to `seconds` for `condition`.
template <typename Condition>
bool eventually(Condition condition, double seconds) {
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (!condition()) {
    if (Clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

/// Job folders of benchmark children under `folder`.
std::vector<std::string> job_folders(const fs::path& folder) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("edgesweep-bench-", 0) == 0) names.push_back(name);
  }
  return names;
}

/// `edgesweep agent ARGS...` with stdout and stderr in files; killed by pid when still running at the end.
class AgentProcess {
 public:
  AgentProcess(const fs::path& folder, const std::vector<std::string>& args)
      : out_(folder / "agent.out"), err_(folder / "agent.err") {
    pid_ = fork();
    if (pid_ == 0) {
      freopen(out_.c_str(), "w", stdout);
      freopen(err_.c_str(), "w", stderr);
      std::vector<char*> argv;
      std::vector<std::string> all = {kBinary.string(), "agent"};
      all.insert(all.end(), args.begin(), args.end());
      for (std::string& a : all) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~AgentProcess() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      wait_for_exit(pid_, 10);
    }
  }

  /// The address from "edgesweep agent listening on HOST:PORT"; empty if the process ended or took over 60 s.
  std::string wait_for_address() {
    const auto end = Clock::now() + std::chrono::seconds(60);
    const std::string marker = "listening on ";
    while (Clock::now() < end) {
      const std::string text = read_text(out_);
      const size_t at = text.find(marker);
      const size_t line_end = text.find('\n', at);
      if (at != std::string::npos && line_end != std::string::npos) {
        const std::string rest = text.substr(at + marker.size(), line_end - at - marker.size());
        return rest.substr(0, rest.find(' '));  // "HOST:PORT (TLS)"
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        status_ = status;
        return "";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return "";
  }

  /// Sends `signal` and waits up to `seconds`; the wait status, or -1.
  int stop(int signal, double seconds) {
    kill(pid_, signal);
    return wait_status(seconds);
  }
  /// Waits up to `seconds` for the process to end by itself.
  int wait_status(double seconds) {
    if (!exited_) {
      status_ = wait_for_exit(pid_, seconds);
      exited_ = status_ != -1;
    }
    return status_;
  }
  std::string error_text() const { return read_text(err_); }
  std::string output_text() const { return read_text(out_); }
  pid_t pid() const { return pid_; }

 private:
  fs::path out_, err_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = -1;
};

class AgentProcessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // The child honours the test-only request key "crash" only with this set; the agent passes it on.
    setenv("EDGESWEEP_TEST_FAULTS", "1", 1);
    shared_ = std::make_unique<TempFolder>("agent-process-model");
    const std::string command = "'" + kModelMaker.string() + "' '" + (*shared_ / "model.pt").string() + "'";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }
  static void TearDownTestSuite() { shared_.reset(); }

  void SetUp() override {
    std::ofstream(folder_ / "token") << token_ << "\n";
    chmod((folder_ / "token").c_str(), 0600);
  }

  /// Starts an agent with a one-thread profile (and `extra` arguments) and returns its address.
  std::string start_agent(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args{"--listen", "127.0.0.1:0", "--token-file", (folder_ / "token").string(),
                                  "--data", (folder_ / "data").string(), "--profile", "one-thread",
                                  "--threads", "1", "--cpus", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    agent_ = std::make_unique<AgentProcess>(folder_.path(), args);
    const std::string address = agent_->wait_for_address();
    EXPECT_FALSE(address.empty()) << agent_->error_text();
    return address;
  }

  AgentClient client(const std::string& address) {
    AgentClientOptions options;
    options.address = address;
    options.token = token_;
    options.io_timeout_seconds = 30;
    options.benchmark_timeout_seconds = 180;
    return AgentClient(options);
  }

  static Json quick_request() {
    return Json{{"batch_sizes", {1, 8}}, {"warmup_runs", 2}, {"warmup_seconds", 0.02}, {"min_runs", 5},
                {"min_seconds", 0.1}};
  }

  static std::unique_ptr<TempFolder> shared_;
  TempFolder folder_{"agent-process"};
  std::string token_ = "a token for the process test";
  std::unique_ptr<AgentProcess> agent_;
};

std::unique_ptr<TempFolder> AgentProcessTest::shared_;

TEST_F(AgentProcessTest, UploadsAndBenchmarksARealModel) {
  const std::string address = start_agent();
  ASSERT_FALSE(address.empty());
  AgentClient c = client(address);
  EXPECT_GT(c.hardware().at("cores").get<int64_t>(), 0);
  EXPECT_EQ(c.profile().at("name"), "one-thread");
  EXPECT_TRUE(c.hardware().contains("runtime")) << c.hardware().dump();  // LibTorch version from an empty child

  const fs::path model = *shared_ / "model.pt";
  const std::string sha = c.upload(model);
  EXPECT_EQ(sha, sha256_file(model));
  EXPECT_TRUE(c.has(sha));
  EXPECT_EQ(sha256_file(folder_ / "data" / "models" / (sha + ".pt")), sha);

  const Json result = c.benchmark(sha, quick_request(), 120);
  ASSERT_EQ(result.at("batches").size(), 2u) << result.dump();
  for (const Json& b : result.at("batches")) {
    SCOPED_TRACE(b.dump());
    EXPECT_LE(b.at("min_ms").get<double>(), b.at("p50_ms").get<double>());
    EXPECT_LE(b.at("p50_ms").get<double>(), b.at("p90_ms").get<double>());
    EXPECT_LE(b.at("p90_ms").get<double>(), b.at("p99_ms").get<double>());
    const double fps = 1000.0 * b.at("batch_size").get<double>() / b.at("mean_ms").get<double>();
    EXPECT_NEAR(b.at("fps").get<double>(), fps, 1e-6 * fps);
  }
  EXPECT_EQ(result.at("profile").at("name"), "one-thread");
  EXPECT_GT(result.at("memory").at("peak_rss_mb").get<double>(), 0.0);

  EXPECT_EQ(agent_->stop(SIGTERM, 30), 0) << "agent did not exit cleanly on SIGTERM: " << agent_->error_text();
}

TEST_F(AgentProcessTest, AnAgentWithACertificateSaysItsFingerprintAndIsPinnedByIt) {
  const Certificate certificate = make_certificate(folder_, "agent");
  const std::string address =
      start_agent({"--tls-cert", certificate.cert.string(), "--tls-key", certificate.key.string()});
  ASSERT_FALSE(address.empty());
  const std::string fingerprint = certificate_fingerprint(certificate.cert);
  EXPECT_NE(agent_->output_text().find("(TLS; certificate " + fingerprint + ")"), std::string::npos)
      << agent_->output_text();
  AgentClientOptions options;
  options.address = address;
  options.token = token_;
  options.tls_fingerprint = fingerprint;
  options.benchmark_timeout_seconds = 180;
  AgentClient c(options);
  EXPECT_TRUE(c.encrypted());
  const std::string sha = c.upload(*shared_ / "model.pt");
  EXPECT_EQ(c.benchmark(sha, quick_request(), 120).at("batches").size(), 2u);
  EXPECT_EQ(agent_->stop(SIGTERM, 30), 0) << agent_->error_text();
}

TEST_F(AgentProcessTest, ACrashingChildLeavesTheAgentServing) {
  const std::string address = start_agent();
  ASSERT_FALSE(address.empty());
  AgentClient c = client(address);
  const std::string sha = c.upload(*shared_ / "model.pt");
  Json crash = quick_request();
  crash["crash"] = "segv";
  expect_error<AgentRefused>([&] { c.benchmark(sha, crash, 60); }, {address, "killed by signal SIGSEGV"});
  // A file that is not a model: stored (its sha256 is right), refused by the child, agent fine.
  const std::string notes = c.upload_bytes("not a model at all\n");
  expect_error<AgentRefused>([&] { c.benchmark(notes, quick_request(), 60); }, {"benchmark of"});
  EXPECT_EQ(c.ping().at("type"), "pong");
  const Json result = c.benchmark(sha, quick_request(), 120);
  EXPECT_EQ(result.at("batches").size(), 2u);
  EXPECT_EQ(agent_->stop(SIGINT, 30), 0) << agent_->error_text();
}

TEST_F(AgentProcessTest, BadPeersAreRefusedAndTheAgentStaysUp) {
  const std::string address = start_agent();
  ASSERT_FALSE(address.empty());
  AgentClientOptions wrong;
  wrong.address = address;
  wrong.token = "not the token";
  expect_error<AgentRefused>([&] { AgentClient c(wrong); }, {address, "TLS handshake failed"});
  AgentClientOptions none;
  none.address = address;
  expect_error<InputError>([&] { AgentClient c(none); }, {address, "requires a token"});
  AgentClient c = client(address);
  expect_error<AgentRefused>([&] { c.has("../../etc/passwd"); }, {"not 64 lower-case hex digits"});
  expect_error<AgentRefused>([&] { c.request(Json{{"type", "shutdown"}}); }, {"unknown message type"});
  EXPECT_EQ(c.ping().at("type"), "pong");
  EXPECT_EQ(client(address).ping().at("type"), "pong");
  EXPECT_EQ(agent_->stop(SIGTERM, 30), 0) << agent_->error_text();
}

/// A benchmark that would run for minutes, sent without waiting for its reply.
void send_long_benchmark(AgentClient& c, const std::string& sha) {
  c.send_frame(FrameType::Control, Json{{"type", "benchmark"},
                                        {"id", 7},
                                        {"sha256", sha},
                                        {"timeout_seconds", 600},
                                        {"request", {{"batch_sizes", {1}}, {"min_runs", 100000000},
                                                     {"min_seconds", 300}}}}
                                       .dump());
}

TEST_F(AgentProcessTest, StoppingDuringABenchmarkKillsItsChildAndAnswersAtOnce) {
  // The agent's benchmark folders go to this test's folder, to see what is left behind.
  const fs::path temp = folder_ / "tmp";
  fs::create_directories(temp);
  setenv("TMPDIR", temp.c_str(), 1);
  const std::string address = start_agent();
  unsetenv("TMPDIR");
  ASSERT_FALSE(address.empty());
  AgentClient c = client(address);
  const std::string sha = c.upload(*shared_ / "model.pt");
  send_long_benchmark(c, sha);
  pid_t child = -1;
  ASSERT_TRUE(eventually([&] { return (child = benchmark_child_of(agent_->pid())) > 0; }, 60)) << agent_->error_text();
  EXPECT_EQ(job_folders(temp).size(), 1u);

  const auto asked = Clock::now();
  kill(agent_->pid(), SIGTERM);
  const Json reply = c.read_message(30);
  EXPECT_EQ(reply.at("type"), "error") << reply.dump();
  EXPECT_NE(reply.value("message", "").find("agent stopping: the benchmark was stopped"), std::string::npos)
      << reply.dump();
  EXPECT_EQ(agent_->wait_status(30), 0) << agent_->error_text();
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - asked).count(), 10.0);
  EXPECT_TRUE(process_ended(child));
  EXPECT_TRUE(job_folders(temp).empty());
}

TEST_F(AgentProcessTest, ABenchmarkChildDiesWithItsKilledAgentAndItsFolderGoesAtTheNextStart) {
  const fs::path temp = folder_ / "tmp";
  fs::create_directories(temp);
  setenv("TMPDIR", temp.c_str(), 1);
  std::string address = start_agent();
  ASSERT_FALSE(address.empty());
  {
    AgentClient c = client(address);
    const std::string sha = c.upload(*shared_ / "model.pt");
    send_long_benchmark(c, sha);
    pid_t child = -1;
    ASSERT_TRUE(eventually([&] { return (child = benchmark_child_of(agent_->pid())) > 0; }, 60))
        << agent_->error_text();
    EXPECT_NE(agent_->stop(SIGKILL, 30), -1);
    // The parent-death signal ends the child with its agent, though nothing could clean up.
    EXPECT_TRUE(eventually([&] { return process_ended(child); }, 10)) << "benchmark child " << child << " outlived its agent";
    EXPECT_EQ(job_folders(temp).size(), 1u);
  }
  fs::remove(folder_ / "agent.out");
  address = start_agent();  // a new agent removes what the killed one left
  unsetenv("TMPDIR");
  ASSERT_FALSE(address.empty());
  EXPECT_TRUE(job_folders(temp).empty());
  EXPECT_NE(read_text(folder_ / "agent.err").find("removed 1 benchmark folder"), std::string::npos)
      << agent_->error_text();
  EXPECT_EQ(client(address).ping().at("type"), "pong");
}

TEST_F(AgentProcessTest, AnAgentKilledMidUploadKeepsNothingOfItAndTheUploadIsRedone) {
  const std::string bytes = read_text(*shared_ / "model.pt");
  ASSERT_GT(bytes.size(), 4u * 4096);
  const std::string sha = sha256_hex(bytes);
  std::string address = start_agent();
  ASSERT_FALSE(address.empty());
  const fs::path models = folder_ / "data" / "models";
  const auto partial_uploads = [&] {
    std::vector<fs::path> found;
    for (const auto& entry : fs::directory_iterator(models)) {
      if (entry.path().extension() == ".part") found.push_back(entry.path());
    }
    return found;
  };
  {
    // Half of the model sent, by hand, and then nothing more: the agent is killed with the upload open.
    AgentClient c = client(address);
    ASSERT_EQ(c.request(Json{{"type", "upload_begin"}, {"sha256", sha}, {"size", bytes.size()}}).at("type"), "ready");
    const size_t half = bytes.size() / 2;
    for (size_t at = 0; at < half; at += 4096) {
      c.send_frame(FrameType::Chunk, bytes.substr(at, std::min<size_t>(4096, half - at)));
    }
    ASSERT_TRUE(eventually([&] {
      const auto parts = partial_uploads();
      std::error_code ec;
      return parts.size() == 1 && fs::file_size(parts.front(), ec) == half;
    }, 30)) << "the agent did not write the first half";
    ASSERT_NE(agent_->stop(SIGKILL, 30), -1);
    expect_error<Error>([&] { c.read_message(10); }, {address, "closed the connection"});
  }
  EXPECT_EQ(partial_uploads().size(), 1u);  // a killed agent cannot clean up
  EXPECT_FALSE(fs::exists(models / (sha + ".pt")));
  fs::remove(folder_ / "agent.out");
  address = start_agent();  // the next agent removes it, and the upload is done again from the start
  ASSERT_FALSE(address.empty());
  EXPECT_TRUE(partial_uploads().empty());
  EXPECT_NE(read_text(folder_ / "agent.err").find("removed 1 unfinished upload"), std::string::npos)
      << agent_->error_text();
  AgentClient c = client(address);
  EXPECT_FALSE(c.has(sha));
  EXPECT_EQ(c.upload_bytes(bytes), sha);
  EXPECT_EQ(sha256_file(models / (sha + ".pt")), sha);
}

TEST_F(AgentProcessTest, UnsafeOptionsRefused) {
  {
    AgentProcess open(folder_.path(), {"--listen", "0.0.0.0:0", "--data", (folder_ / "data").string()});
    EXPECT_EQ(open.wait_status(60), 2 << 8);
    EXPECT_NE(open.error_text().find("without a token"), std::string::npos) << open.error_text();
  }
  {
    std::ofstream(folder_ / "empty-token") << "";
    chmod((folder_ / "empty-token").c_str(), 0600);
    AgentProcess empty(folder_.path(), {"--listen", "127.0.0.1:0", "--token-file",
                                        (folder_ / "empty-token").string(), "--data", (folder_ / "data").string()});
    EXPECT_EQ(empty.wait_status(60), 2 << 8);
    EXPECT_NE(empty.error_text().find("empty-token' is empty"), std::string::npos) << empty.error_text();
  }
  {
    AgentProcess engine(folder_.path(), {"--data", (folder_ / "data").string(), "--engine", "fbgemm"});
    EXPECT_EQ(engine.wait_status(60), 2 << 8);
  }
}

}  // namespace
}  // namespace edgesweep
