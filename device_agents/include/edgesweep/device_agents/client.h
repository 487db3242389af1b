// A synchronous client of a device agent, for the orchestrator's device farm and for tests: connect with a timeout,
// mutual authentication, then one request at a time. Every error names the agent's address.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "edgesweep/common/error.h"
#include "edgesweep/common/json.h"
#include "edgesweep/device_agents/frame.h"

namespace edgesweep {

/// The agent answered a request with an error message (a refused upload, a failed benchmark...). The connection
/// is still usable unless the agent closed it; other failures (connect, I/O, timeout, protocol) throw Error.
class AgentRefused : public Error {
 public:
  using Error::Error;
};

struct AgentClientOptions {
  std::string address;                  ///< HOST:PORT of the agent
  std::string token;                    ///< shared token; empty only for an agent that runs without one
  std::string tls_fingerprint;          ///< the agent's certificate, pinned ("sha256:..."); empty: TLS on the token
  double connect_timeout_seconds = 10;  ///< connect and handshake
  double io_timeout_seconds = 60;       ///< each request other than a benchmark
  double benchmark_timeout_seconds = 900;  ///< waiting for a benchmark's result (queue time included)
  size_t chunk_bytes = size_t{1} << 20; ///< upload chunk size, at most limits.max_chunk_bytes
  FrameLimits limits;
};

class AgentClient {
 public:
  /// Connects, reads the agent's preamble, runs TLS when a token or a fingerprint is given (see tls.h), reads hello
  /// and authenticates both ways. Throws Error naming the address on failure (AgentRefused when the agent refuses
  /// the token or the connection; InputError when a token is missing for an agent that wants one).
  explicit AgentClient(AgentClientOptions options);
  ~AgentClient();
  AgentClient(AgentClient&&) noexcept;
  AgentClient& operator=(AgentClient&&) noexcept;

  /// HOST:PORT as given.
  const std::string& address() const;
  /// The agent's hello: protocol, hardware, profile.
  const Json& hello() const;
  /// The hardware the agent reported (hello's "hardware").
  const Json& hardware() const;
  /// The agent's profile (hello's "profile": name, threads, cpus, memory_mb, engine).
  const Json& profile() const;

  /// Whether the agent holds a model with this sha256.
  bool has(const std::string& sha256);
  /// Uploads a file (unless the agent has it already) and returns its sha256.
  std::string upload(const std::filesystem::path& file);
  /// Uploads bytes already in memory under their sha256 (which the agent checks); returns the sha256.
  std::string upload_bytes(const std::string& bytes);
  /// Benchmarks a stored model; returns the runner's result JSON. `timeout_seconds` <= 0 keeps the agent's default.
  /// Throws AgentRefused when the benchmark fails (crash, timeout, bad request) and the agent says so.
  Json benchmark(const std::string& sha256, const Json& request, double timeout_seconds = 0);
  /// A round trip; returns the agent's pong (with "queued": benchmarks waiting or running).
  Json ping();

  /// Sends one control message and returns the reply (error replies throw AgentRefused); for tests and tools.
  Json request(Json message, double timeout_seconds = 0);
  /// Sends a raw frame without waiting for a reply; for tests.
  void send_frame(FrameType type, const std::string& payload);
  /// Sends bytes as they are (inside TLS when the connection has it); for tests.
  void send_raw(const std::string& bytes);
  /// Whether the connection speaks TLS.
  bool encrypted() const;
  /// Reads one control message (error replies included, not thrown); for tests.
  Json read_message(double timeout_seconds = 0);

  /// Closes the connection.
  void close();

  /// Connects and reads hello without authenticating; for tests of the agent's authentication.
  static AgentClient connect_unauthenticated(AgentClientOptions options);

 private:
  struct Connection;
  AgentClient(AgentClientOptions options, bool authenticate);
  void authenticate();
  /// Reads the preamble and, for an agent that speaks TLS, runs the handshake.
  void secure();
  std::string upload_stream(std::istream& in, const std::string& sha256, uint64_t size);

  AgentClientOptions options_;
  std::unique_ptr<Connection> connection_;
  Json hello_;
  int64_t next_id_ = 1;
};

}  // namespace edgesweep
