// The device agent: listens for the orchestrator, stores uploaded models by sha256 and benchmarks them, one at a
// time, each in a fresh child process. `edgesweep agent` is a thin main around serve_agent.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>

#include "edgesweep/common/json.h"
#include "edgesweep/device_agents/shared_state.h"

namespace edgesweep {

struct AgentOptions {
  std::string listen = "127.0.0.1:7070";     ///< HOST:PORT; port 0 picks a free one
  std::filesystem::path token_file;          ///< shared token; required unless HOST is loopback
  std::filesystem::path tls_cert_file;       ///< PEM certificate (chain) clients pin; with tls_key_file
  std::filesystem::path tls_key_file;        ///< PEM private key of tls_cert_file
  std::filesystem::path data_dir;            ///< holds models/<sha256>.pt
  AgentProfile profile;                      ///< threads, CPU affinity, memory cap, quantized engine
  FrameLimits limits;                        ///< frame size caps
  uint64_t max_upload_bytes = uint64_t{4} << 30;
  double auth_timeout_seconds = 30;
  size_t max_auth_bytes = 4096;     ///< largest frame read before authentication (an auth message)
  size_t max_unauthenticated = 32;  ///< connections waiting for authentication at once; more are refused
  size_t max_queued = 256;               ///< benchmarks waiting at once over all connections
  size_t max_queued_per_connection = 32;  ///< benchmarks one connection may have waiting
  std::filesystem::path bench_executable = "/proc/self/exe";  ///< run as `<exe> agent-bench ...` per benchmark
  BenchmarkFunction benchmark;  ///< empty: run_benchmark_child(bench_executable, job, profile)
  Json hardware;                ///< null: probe_hardware()
  bool handle_signals = true;   ///< stop on SIGINT and SIGTERM
};

/// Splits "HOST:PORT" (HOST may be "[v6]"); throws InputError naming the text.
std::pair<std::string, uint16_t> split_host_port(const std::string& text);

class Agent {
 public:
  /// Checks the options (token file, loopback without a token, certificate and key, data folder), binds the
  /// address. With a token or a certificate every connection speaks TLS 1.3 (see tls.h); without, plaintext, which
  /// only a loopback address may. Throws InputError for bad options and Error when the address cannot be bound.
  explicit Agent(AgentOptions options);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  /// The address bound, as HOST:PORT.
  std::string address() const;
  uint16_t port() const;
  /// The fingerprint of the TLS certificate ("sha256:..."), empty without one.
  const std::string& certificate_fingerprint() const { return fingerprint_; }

  /// Serves until stop() or, with handle_signals, SIGINT/SIGTERM.
  void run();
  /// Makes run() return; callable from any thread. New connections are refused, the running benchmark's child is
  /// killed, and every pending benchmark request is answered with an "agent stopping" error (written within half a
  /// second) before run() returns.
  void stop();

 private:
  struct Parts;
  AgentOptions options_;
  std::unique_ptr<boost::asio::io_context> io_;
  std::unique_ptr<Parts> parts_;
  std::string address_;  ///< as bound (the listener's socket is closed once stopping)
  uint16_t port_ = 0;
  std::string fingerprint_;
};

/// Runs an agent until SIGINT/SIGTERM, printing "edgesweep agent listening on HOST:PORT" on stdout once bound
/// (followed by " (TLS; certificate sha256:...)" or " (TLS)" when it speaks TLS).
void serve_agent(AgentOptions options);

}  // namespace edgesweep
