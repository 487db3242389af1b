// The process's MPI session: initialisation, rank and size, and tagged string messages with polling receives
// (so waiting ranks sleep instead of spinning on a shared core). Without MPI it is a world of one.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "edgesweep/common/collective.h"

namespace edgesweep {

/// Message tags of the control plane.
enum class Tag : int {
  Ready = 1,   ///< worker -> rank 0: here I am (JSON host and pid); a group's leader: give me work
  Task = 2,    ///< rank 0 -> a group's leader, and the leader -> its members: a task (JSON)
  Result = 3,  ///< worker -> rank 0: a task result (JSON); the worker is ready again afterwards
  Done = 4,    ///< rank 0 -> worker (and a leader -> its members): no more work, exit
  Heartbeat = 5,  ///< worker -> rank 0: alive, and where its task is (JSON TaskProgress), every heartbeat_seconds
  Setup = 6,      ///< rank 0 -> worker, first: how the workers are grouped and where they compute
                  ///< (JSON {"ranks_per_trial": k, "device": "cpu" or "cuda"})
};

struct Message {
  int source = 0;
  Tag tag = Tag::Ready;
  std::string payload;
};

class MpiSession {
 public:
  /// Initialises MPI (when built with it, and when a launcher such as mpirun started the process), asking for
  /// MPI_THREAD_MULTIPLE; finalises on destruction. A process started alone is a world of one without MPI.
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  /// Whether this build has MPI at all.
  static bool available();
  /// The processor name (host) MPI reports, or the host name.
  std::string host() const;
  /// Whether send(), receive() and the groups' collectives may be called from several threads: the library
  /// granted MPI_THREAD_MULTIPLE, or at least MPI_THREAD_SERIALIZED, in which case the session serialises every
  /// call itself (a collective then holds back the heartbeat until it completes). Always true for a world of one.
  bool threads_allowed() const { return threads_allowed_; }

  /// Sends `payload` to `destination` without waiting for it to be received (the session keeps a copy until MPI is
  /// done with it, and waits for every send before it finalises). Messages from one rank to another arrive in the
  /// order they were sent.
  void send(int destination, Tag tag, const std::string& payload);
  /// Waits up to `timeout` for a message from any rank, sleeping between probes (20 µs at first, doubling up to
  /// `poll`, or only up to kHotPause while messages flow: one sent or received within kHotWindow). nullopt on timeout.
  std::optional<Message> receive(std::chrono::milliseconds timeout,
                                 std::chrono::milliseconds poll = std::chrono::milliseconds(2));
  /// Ends every rank at once (after an unrecoverable error on one).
  [[noreturn]] void abort(int code);

  /// Splits the world into groups: the ranks that give the same `color` form one, ordered by `key` (MPI_Comm_split;
  /// every rank calls it, in the same order relative to other collectives). Returns this rank's group as an MPI
  /// collective. A world of one returns a group of one.
  std::unique_ptr<Collective> split(int color, int key);

 private:
  static constexpr std::chrono::milliseconds kHotWindow{20};
  static constexpr std::chrono::microseconds kHotPause{50};
  struct Outbox;  ///< sends in flight (defined where MPI is)
  void mark_traffic();

  std::unique_ptr<Outbox> outbox_;
  std::atomic<int64_t> last_traffic_{0};  ///< steady_clock ticks of the last message sent or received
  int rank_ = 0;
  int size_ = 1;
  bool initialised_ = false;
  bool threads_allowed_ = true;
  bool serialise_ = false;  ///< the library granted less than MPI_THREAD_MULTIPLE: one MPI call at a time
  std::mutex mutex_;

 public:
  /// Holds the session's lock when MPI calls must be serialised; otherwise holds nothing. (For the groups.)
  std::unique_lock<std::mutex> guard();
};

}  // namespace edgesweep
