// Child processes and temporary folders, one way for every place that starts a program (the agent's benchmark
// child, a spawned loopback agent, tegrastats, gnuplot): everything the child needs is prepared before fork, so the
// child runs only async-signal-safe calls until exec; it can get its own process group, a parent-death signal, a CPU
// affinity and redirected standard streams; and it is waited for without being reaped, so its group id stays
// reserved until the group is killed.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace edgesweep {

struct ProcessOptions {
  std::vector<std::string> argv;         ///< argv[0] is the program's path
  std::optional<std::vector<std::string>> environment;  ///< "NAME=value" entries; none: this process's own
  bool own_group = true;                 ///< a process group of its own, so killing it ends what it started too
  /// Sent to it when the thread that starts it ends (0: none). Armed in the child before exec: a thread that may
  /// end before the child has started cannot count on it.
  int parent_death_signal = 0;
  std::vector<int> cpus;                 ///< CPU affinity (empty: inherited)
  /// Standard output: a file (truncated, or appended to with append_output), or a descriptor (the write end of a
  /// pipe), or this process's own with keep_output, or /dev/null when none is given. Standard error goes with it
  /// unless error_file is given.
  bool keep_output = false;
  std::filesystem::path output_file;
  bool append_output = false;
  int output_fd = -1;
  std::filesystem::path error_file;
};

/// How a process ended.
struct ProcessExit {
  int exit_code = -1;  ///< its exit status, or -1 when a signal ended it
  int signal = 0;      ///< the signal that ended it, 0 when it exited
  struct rusage usage {};
  /// The exit status in the shell's convention: the exit code, or 128 + the signal.
  int status() const { return signal != 0 ? 128 + signal : exit_code; }
};

/// A started child. The destructor kills what is left (its group with SIGKILL) and reaps it.
class Process {
 public:
  /// Starts a child; throws Error naming the program when it cannot fork. A child that cannot set itself up or exec
  /// the program exits 127 with the reason on its standard error (or error file).
  explicit Process(const ProcessOptions& options);
  ~Process();
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) = delete;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  /// Whether it has ended. It is not reaped, so the group id is not reused before kill_group(). Throws Error when
  /// it cannot be waited for.
  bool ended() const;
  /// Sends `signal` to its process group (or to it alone without a group of its own); nothing once reaped.
  void kill_group(int signal) const;
  /// Waits for it to end, kills what is left of its group, and reaps it. Throws Error when it cannot be waited for.
  ProcessExit wait();
  /// Waits up to `timeout` for it to end by itself and reaps it; nullopt when it is still running.
  std::optional<ProcessExit> wait_for(std::chrono::duration<double> timeout);

 private:
  pid_t pid_ = -1;
  bool own_group_ = true;
};

/// A new empty folder under the system's temporary folder, named `prefix` and six random characters, removed with
/// everything in it when this goes away. Throws Error naming the pattern when it cannot be made.
class TemporaryFolder {
 public:
  explicit TemporaryFolder(const std::string& prefix);
  ~TemporaryFolder();
  TemporaryFolder(const TemporaryFolder&) = delete;
  TemporaryFolder& operator=(const TemporaryFolder&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace edgesweep
