// fork and exec with the child's setup prepared beforehand, waitid without reaping, group kills, temporary folders.
#include "edgesweep/common/process.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include <fmt/format.h>

#include "edgesweep/common/error.h"

extern char** environ;

namespace edgesweep {
namespace {

/// Writes `text` to standard error in the forked child (async-signal-safe).
void child_say(const char* text) {
  const ssize_t ignored = write(STDERR_FILENO, text, strlen(text));
  (void)ignored;
}

/// Says why the child cannot go on and ends it with 127. `error` is the errno saved right after the failing call;
/// strerrordesc_np reads a fixed table (no locale, no lock), unlike strerror.
[[noreturn]] void child_fail(const char* step, const char* what, int error) {
  child_say("cannot start ");
  child_say(what);
  child_say(": ");
  child_say(step);
  child_say(" failed: ");
  const char* description = strerrordesc_np(error);
  child_say(description != nullptr ? description : "unknown error");
  child_say("\n");
  _exit(127);
}

}  // namespace

Process::Process(const ProcessOptions& options) : own_group_(options.own_group) {
  check(!options.argv.empty() && !options.argv.front().empty(), "cannot start a process without a program");
  // Everything the child needs, made before fork.
  std::vector<char*> argv;
  for (const std::string& arg : options.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  if (!options.environment) {
    for (char** entry = environ; *entry != nullptr; ++entry) envp.push_back(*entry);
  } else {
    for (const std::string& entry : *options.environment) envp.push_back(const_cast<char*>(entry.c_str()));
  }
  envp.push_back(nullptr);
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  for (int cpu : options.cpus) {
    check_input(cpu >= 0 && cpu < CPU_SETSIZE, "CPU {} is out of range", cpu);
    CPU_SET(cpu, &cpus);
  }
  const bool pin = !options.cpus.empty();
  const std::string output = options.output_file.string();
  const std::string error = options.error_file.string();
  const int output_flags = O_WRONLY | O_CREAT | O_CLOEXEC | (options.append_output ? O_APPEND : O_TRUNC);
  const int output_fd = options.output_fd;
  const bool keep_output = options.keep_output;
  const int death_signal = options.parent_death_signal;
  const bool own_group = options.own_group;
  const char* program = argv[0];

  const pid_t parent = getpid();
  const pid_t pid = fork();
  check(pid >= 0, "cannot start '{}': fork failed: {}", options.argv.front(), strerror(errno));
  if (pid == 0) {
    if (own_group) setpgid(0, 0);
    // The signal comes when the forking thread ends; the check covers a parent that was gone before it was set.
    if (death_signal != 0 && (prctl(PR_SET_PDEATHSIG, death_signal) != 0 || getppid() != parent)) _exit(125);
    const int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0 || dup2(null, STDIN_FILENO) < 0) child_fail("opening /dev/null", program, errno);
    int out = null;
    if (keep_output) {
      out = STDOUT_FILENO;
    } else if (output_fd >= 0) {
      out = output_fd;
    } else if (!output.empty()) {
      out = open(output.c_str(), output_flags, 0600);
      if (out < 0) child_fail("opening its output file", program, errno);
    }
    int err = keep_output ? STDERR_FILENO : out;
    if (!error.empty()) {
      err = open(error.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (err < 0) child_fail("opening its error file", program, errno);
    }
    if (dup2(out, STDOUT_FILENO) < 0 || dup2(err, STDERR_FILENO) < 0) {
      child_fail("redirecting output", program, errno);
    }
    // No descriptor of this process (sockets, listeners, the store) reaches the child.
    syscall(SYS_close_range, 3U, ~0U, 0U);
    if (pin && sched_setaffinity(0, sizeof(cpus), &cpus) != 0) {
      child_fail("setting the CPU affinity", program, errno);
    }
    execve(program, argv.data(), envp.data());
    child_fail("exec", program, errno);
  }
  if (own_group) setpgid(pid, pid);  // from this side too, so the group exists before any kill
  pid_ = pid;
}

Process::Process(Process&& other) noexcept : pid_(other.pid_), own_group_(other.own_group_) { other.pid_ = -1; }

Process::~Process() {
  if (pid_ <= 0) return;
  kill_group(SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

bool Process::ended() const {
  if (pid_ <= 0) return true;
  for (;;) {
    siginfo_t info{};
    if (waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0) return info.si_pid == pid_;
    if (errno != EINTR) throw Error(fmt::format("waiting for process {}: waitid failed: {}", pid_, strerror(errno)));
  }
}

void Process::kill_group(int signal) const {
  if (pid_ <= 0) return;
  if (own_group_) ::kill(-pid_, signal);
  ::kill(pid_, signal);
}

ProcessExit Process::wait() {
  ProcessExit exit;
  if (pid_ <= 0) return exit;
  const pid_t pid = pid_;
  // Its end first, without reaping: the group id is still ours, so killing the group reaches only what the child
  // left behind; then the reaping.
  siginfo_t info{};
  while (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT) != 0) {
    if (errno != EINTR) {
      pid_ = -1;
      throw Error(fmt::format("waiting for process {}: waitid failed: {}", pid, strerror(errno)));
    }
  }
  if (own_group_) ::kill(-pid, SIGKILL);
  int status = 0;
  pid_ = -1;
  while (wait4(pid, &status, 0, &exit.usage) < 0) {
    if (errno != EINTR) throw Error(fmt::format("reaping process {}: wait4 failed: {}", pid, strerror(errno)));
  }
  if (WIFSIGNALED(status)) {
    exit.signal = WTERMSIG(status);
  } else if (WIFEXITED(status)) {
    exit.exit_code = WEXITSTATUS(status);
  }
  return exit;
}

std::optional<ProcessExit> Process::wait_for(std::chrono::duration<double> timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(2);
  while (!ended()) {
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
  return wait();
}

TemporaryFolder::TemporaryFolder(const std::string& prefix) {
  std::error_code ec;
  std::string pattern = (std::filesystem::temp_directory_path(ec) / (prefix + "XXXXXX")).string();
  check(mkdtemp(pattern.data()) != nullptr, "cannot create a temporary folder like '{}': {}", pattern,
        strerror(errno));
  path_ = pattern;
}

TemporaryFolder::~TemporaryFolder() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace edgesweep
