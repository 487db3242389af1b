// Process spawning with a deadline, temporary folders and experiment files for the end-to-end tests.
#include "app_harness.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

extern char** environ;

namespace edgesweep::apps_test {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::chrono::seconds process_timeout(300);
constexpr std::chrono::seconds kill_grace(10);

std::string read_whole_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// The last `limit` characters of `text`, marked when cut.
std::string tail(const std::string& text, size_t limit) {
  if (text.size() <= limit) return text;
  return "[... " + std::to_string(text.size() - limit) + " characters before]\n" + text.substr(text.size() - limit);
}

/// Waits until `pid` has ended or `deadline` passed; true when it ended. The child is left unreaped (a zombie), so
/// its process group id cannot be reused before the caller is done signalling the group.
bool wait_until(pid_t pid, Clock::time_point deadline) {
  while (true) {
    siginfo_t info;
    info.si_pid = 0;
    const int result = waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
    if (result == 0 && info.si_pid == pid) return true;
    if (result < 0 && errno != EINTR) throw std::runtime_error(fmt::format("waitid({}): {}", pid, strerror(errno)));
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

/// This process's environment with `extra_env` set (replacing any entry of the same name), as NAME=value texts.
std::vector<std::string> environment_with(const std::map<std::string, std::string>& extra_env) {
  std::vector<std::string> env_text;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    if (!extra_env.count(entry.substr(0, entry.find('=')))) env_text.push_back(entry);
  }
  for (const auto& [key, value] : extra_env) env_text.push_back(key + "=" + value);
  return env_text;
}

}  // namespace

std::string describe(const ProcessResult& result) {
  return fmt::format("command: {}\nexit code: {}{}, {:.1f} s\n--- stdout ---\n{}\n--- stderr ---\n{}\n", result.command,
                     result.exit_code, result.timed_out ? " (killed: timed out)" : "", result.seconds,
                     tail(result.out, 6000), tail(result.err, 6000));
}

ProcessResult run_process(const std::vector<std::string>& argv, const fs::path& log_dir,
                          std::chrono::seconds timeout, const std::map<std::string, std::string>& extra_env) {
  static std::atomic<int> counter{0};
  const int number = ++counter;
  ProcessResult result;
  for (const std::string& a : argv) result.command += (result.command.empty() ? "" : " ") + a;
  const fs::path out_path = log_dir / fmt::format("process-{}.out", number);
  const fs::path err_path = log_dir / fmt::format("process-{}.err", number);

  std::vector<std::string> env_text = environment_with(extra_env);
  std::vector<char*> env_pointers;
  for (std::string& e : env_text) env_pointers.push_back(e.data());
  env_pointers.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> arg_pointers;
  for (std::string& a : args) arg_pointers.push_back(a.data());
  arg_pointers.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attributes, 0);  // its own group: a timeout kills it and everything it started

  const auto start = Clock::now();
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, args[0].c_str(), &actions, &attributes, arg_pointers.data(),
                                  env_pointers.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (spawned != 0) {
    result.err = fmt::format("cannot start '{}': {}", args[0], strerror(spawned));
    return result;
  }

  if (!wait_until(pid, start + timeout)) {
    result.timed_out = true;
    kill(-pid, SIGTERM);
    if (!wait_until(pid, Clock::now() + kill_grace)) kill(-pid, SIGKILL);
  }
  kill(-pid, SIGKILL);  // what the group may have left running; the leader is not reaped yet, so the id is ours
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = read_whole_file(out_path);
  result.err = read_whole_file(err_path);
  return result;
}

std::string mpiexec_path() { return EDGESWEEP_MPIEXEC; }

std::string tiny_experiment(const std::string& name, const fs::path& results_dir, const std::string& model_extra,
                            const std::string& pipeline, const std::string& baseline) {
  return fmt::format(R"toml([experiment]
name = "{}"
seed = 11

[data]
dataset = "fashion-mnist"
train_subset = 1000
test_subset = 500
val_fraction = 0.1

[model]
width = 0.5
{}

[baseline]
{}
{}
[run]
results_dir = '{}'
)toml",
                     name, model_extra, baseline, pipeline, results_dir.string());
}

std::string read_log(const fs::path& file) {
  std::ifstream in(file);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string conv_linear_model(int channels) {
  return fmt::format(R"toml(arch = "custom"

[[model.layers]]
op = "conv"
out = {}

[[model.layers]]
op = "relu"

[[model.layers]]
op = "maxpool"

[[model.layers]]
op = "flatten"

[[model.layers]]
op = "linear"
out = 10
)toml",
                     channels);
}

const char* const kFiveFinetunes = R"toml([[pipeline]]
stage = "finetune"
epochs = 2
lr = [0.001, 0.002, 0.005, 0.01, 0.02]
optimizer = "adam"
batch_size = 32
)toml";

void AppTest::SetUp() {
  const char* tmp = std::getenv("TMPDIR");
  const fs::path base = tmp != nullptr && *tmp != '\0' ? fs::path(tmp) : fs::path("/tmp");
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string pattern = (base / fmt::format("edgesweep-{}-{}-XXXXXX", info->test_suite_name(), info->name())).string();
  ASSERT_NE(mkdtemp(pattern.data()), nullptr) << "mkdtemp " << pattern << ": " << strerror(errno);
  folder_ = pattern;
  results_dir_ = folder_ / "results";
}

void AppTest::TearDown() {
  if (folder_.empty()) return;
  if (HasFailure()) {
    std::fprintf(stderr, "kept the test folder for inspection: %s\n", folder_.c_str());
    return;
  }
  std::error_code ignored;
  fs::remove_all(folder_, ignored);
}

fs::path AppTest::write_file(const std::string& name, const std::string& text) const {
  const fs::path path = folder_ / name;
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  EXPECT_TRUE(out) << "cannot write " << path;
  return path;
}

ProcessResult AppTest::edgesweep(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {EDGESWEEP_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv, folder_, process_timeout);
}

std::map<std::string, std::string> mpi_environment() {
  // Root is allowed (containers run tests as root); shared memory between ranks, and mpirun's own wiring on loopback.
  return {{"OMPI_ALLOW_RUN_AS_ROOT", "1"},
          {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"},
          {"OMPI_MCA_btl", "self,vader"},
          {"OMPI_MCA_oob_tcp_if_include", "lo"}};
}

ProcessResult AppTest::edgesweep_mpi(int ranks, const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {mpiexec_path(), "-np", std::to_string(ranks), "--oversubscribe", "--bind-to",
                                   "none", EDGESWEEP_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv, folder_, process_timeout, mpi_environment());
}

Child::Child(const std::vector<std::string>& argv, const fs::path& log,
             const std::map<std::string, std::string>& extra_env) {
  std::vector<std::string> args = argv;
  std::vector<char*> pointers;
  for (std::string& a : args) pointers.push_back(a.data());
  pointers.push_back(nullptr);
  std::vector<std::string> env_text = environment_with(extra_env);
  std::vector<char*> env_pointers;
  for (std::string& e : env_text) env_pointers.push_back(e.data());
  env_pointers.push_back(nullptr);
  const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  pid_ = ::fork();
  if (pid_ == 0) {
    ::setpgid(0, 0);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(out, STDERR_FILENO);
    ::execve(pointers[0], pointers.data(), env_pointers.data());
    ::_exit(127);
  }
  ::setpgid(pid_, pid_);  // also from this side, so a kill of the group right away reaches it
  ::close(out);
}

bool Child::ended() {
  if (pid_ <= 0) return true;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) != pid_) return false;
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  pid_ = -1;
  return true;
}

bool Child::wait(std::chrono::seconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!ended()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

void Child::stop(int signal) {
  if (pid_ <= 0) return;
  if (::kill(-pid_, signal) != 0) ::kill(pid_, signal);
  if (!wait(std::chrono::seconds(15))) {
    ::kill(-pid_, SIGKILL);
    wait(std::chrono::seconds(15));
  }
}

std::vector<TrialRow> trials_of(const Store& store, const std::string& name) {
  const auto experiment = store.find_experiment(name);
  if (!experiment) throw std::runtime_error("the store holds no experiment '" + name + "'");
  return store.trials(experiment->id);
}

std::map<std::string, double> final_metrics(const Store& store, int64_t trial_id) {
  std::map<std::string, double> metrics;
  for (const MetricRow& m : store.metrics(trial_id)) {
    if (m.step == -1) metrics[m.name] = m.value;
  }
  return metrics;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace edgesweep::apps_test
