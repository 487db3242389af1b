// Option checks, address binding and the run loop of an agent.
#include "edgesweep/device_agents/agent.h"

#include <cstdio>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <spdlog/spdlog.h>

#include "edgesweep/common/error.h"
#include "edgesweep/device_agents/auth.h"
#include "edgesweep/device_agents/listener.h"
#include "edgesweep/device_agents/probes.h"
#include "edgesweep/device_agents/tls.h"

namespace edgesweep {

namespace net = boost::asio;
using net::ip::tcp;

/// How long a stopping agent keeps writing the "agent stopping" replies of its pending requests.
constexpr auto kStopGrace = std::chrono::milliseconds(500);

struct Agent::Parts {
  std::shared_ptr<SharedState> state;
  std::shared_ptr<Listener> listener;
  std::unique_ptr<net::signal_set> signals;
  std::unique_ptr<net::steady_timer> grace;
  bool stopping = false;
};

std::pair<std::string, uint16_t> split_host_port(const std::string& text) {
  const size_t colon = text.rfind(':');
  check_input(colon != std::string::npos && colon > 0 && colon + 1 < text.size(),
              "listen address '{}' is not HOST:PORT", text);
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string port_text = text.substr(colon + 1);
  check_input(port_text.find_first_not_of("0123456789") == std::string::npos && port_text.size() <= 5,
              "port '{}' in address '{}' is not a number", port_text, text);
  const long port = std::stol(port_text);
  check_input(port <= 65535, "port {} in address '{}' is over 65535", port, text);
  return {host, static_cast<uint16_t>(port)};
}

Agent::Agent(AgentOptions options) : options_(std::move(options)), io_(std::make_unique<net::io_context>(1)) {
  const auto [host, port] = split_host_port(options_.listen);
  tcp::resolver resolver(*io_);
  boost::system::error_code ec;
  const auto results = resolver.resolve(host, std::to_string(port), tcp::resolver::numeric_service, ec);
  check_input(!ec && !results.empty(), "cannot resolve listen address '{}': {}", options_.listen, ec.message());
  const tcp::endpoint endpoint = results.begin()->endpoint();

  AgentSettings settings;
  if (!options_.token_file.empty()) settings.token = read_token_file(options_.token_file);
  if (!settings.token.empty() && settings.token.size() < 32) {
    // The TLS key is derived from the token, and a handshake recorded on the path lets a short one be guessed.
    spdlog::warn("the token in '{}' has only {} characters: anyone who records a connection can try to guess it "
                 "offline; use at least 32 random ones (e.g. `openssl rand -hex 32`)",
                 options_.token_file.string(), settings.token.size());
  }
  check_input(!settings.token.empty() || endpoint.address().is_loopback(),
              "refusing to listen on '{}' ({}) without a token: only loopback addresses may run without one; "
              "hint: pass --token-file",
              options_.listen, endpoint.address().to_string());
  if (!settings.token.empty() || !options_.tls_cert_file.empty() || !options_.tls_key_file.empty()) {
    settings.tls = make_agent_tls_context(settings.token, options_.tls_cert_file, options_.tls_key_file);
    fingerprint_ = settings.tls->certificate_fingerprint();  // of the certificate loaded, not the file read again
  }
  check_input(!options_.data_dir.empty(), "the agent needs a data folder (--data)");
  check_input(options_.limits.max_control_bytes >= 1024, "control frame cap {} is below 1024 bytes",
              options_.limits.max_control_bytes);
  check_input(options_.limits.max_chunk_bytes >= 1024, "chunk frame cap {} is below 1024 bytes",
              options_.limits.max_chunk_bytes);
  settings.data_dir = options_.data_dir;
  settings.limits = options_.limits;
  settings.max_upload_bytes = options_.max_upload_bytes;
  settings.auth_timeout_seconds = options_.auth_timeout_seconds;
  settings.max_auth_bytes = options_.max_auth_bytes;
  settings.max_unauthenticated = options_.max_unauthenticated;
  settings.max_queued = options_.max_queued;
  settings.max_queued_per_connection = options_.max_queued_per_connection;
  check_input(options_.max_queued >= 1 && options_.max_queued_per_connection >= 1,
              "the benchmark queue bounds must be at least 1 (got {} in all, {} per connection)", options_.max_queued,
              options_.max_queued_per_connection);
  check_input(options_.max_unauthenticated >= 1, "the number of connections waiting for authentication must be at "
                                                 "least 1");
  settings.profile = options_.profile;
  settings.hardware = options_.hardware;
  if (settings.hardware.is_null()) {
    settings.hardware = probe_hardware();
    if (!options_.benchmark) {
      // The LibTorch version and quantized engines are what a child reports; hello carries them too.
      const BenchOutcome empty = run_empty_child(options_.bench_executable, options_.profile);
      if (empty.ok) {
        settings.hardware["runtime"] = empty.result.value("runtime", Json());
      } else {
        spdlog::warn("cannot start a benchmark child to read its runtime: {}", empty.error);
      }
    }
  }
  settings.benchmark = options_.benchmark;
  if (!settings.benchmark) {
    settings.benchmark = [executable = options_.bench_executable, profile = options_.profile](const BenchJob& job) {
      return run_benchmark_child(executable, job, profile);
    };
  }

  if (!options_.benchmark) {
    // Folders of benchmark children whose agent was killed (SIGKILL leaves no chance to remove them).
    std::error_code ec;
    const size_t stale = remove_stale_job_folders(std::filesystem::temp_directory_path(ec));
    if (stale > 0) spdlog::info("removed {} benchmark folder(s) left by agents that were killed", stale);
  }

  parts_ = std::make_unique<Parts>();
  parts_->state = std::make_shared<SharedState>(std::move(settings));
  parts_->listener = std::make_shared<Listener>(*io_, endpoint, parts_->state);
  const tcp::endpoint bound = parts_->listener->local_endpoint();
  const std::string bound_host = bound.address().to_string();
  port_ = bound.port();
  address_ = bound.address().is_v6() ? fmt::format("[{}]:{}", bound_host, port_)
                                     : fmt::format("{}:{}", bound_host, port_);
}

Agent::~Agent() {
  if (parts_) parts_->state->stop();
  parts_.reset();
  io_.reset();  // destroys the sessions still waiting on their sockets
}

std::string Agent::address() const { return address_; }

uint16_t Agent::port() const { return port_; }

void Agent::run() {
  if (options_.handle_signals) {
    parts_->signals = std::make_unique<net::signal_set>(*io_, SIGINT, SIGTERM);
    parts_->signals->async_wait([this](const boost::system::error_code& ec, int signal) {
      if (ec) return;
      spdlog::info("signal {}: stopping", signal);
      stop();
    });
  }
  parts_->listener->run();
  io_->run();
  parts_->state->stop();
  spdlog::info("agent on {} stopped", address());
}

void Agent::stop() {
  net::post(*io_, [this] {
    if (parts_->stopping) return;
    parts_->stopping = true;
    parts_->listener->stop();
    if (parts_->signals) {
      boost::system::error_code ignored;
      parts_->signals->cancel(ignored);
    }
    // The running benchmark's child is killed and every pending request answered "agent stopping"; the replies are
    // posted to their connections, which get a moment to write them before the loop ends.
    parts_->state->stop();
    parts_->grace = std::make_unique<net::steady_timer>(*io_, kStopGrace);
    parts_->grace->async_wait([this](const boost::system::error_code&) { io_->stop(); });
  });
}

void serve_agent(AgentOptions options) {
  const bool tls = !options.token_file.empty() || !options.tls_cert_file.empty();
  Agent agent(std::move(options));
  const std::string transport = !agent.certificate_fingerprint().empty()
                                    ? fmt::format(" (TLS; certificate {})", agent.certificate_fingerprint())
                                : tls ? std::string(" (TLS)")
                                      : std::string(" (plaintext, loopback only)");
  std::printf("edgesweep agent listening on %s%s\n", agent.address().c_str(), transport.c_str());
  std::fflush(stdout);
  agent.run();
}

}  // namespace edgesweep
