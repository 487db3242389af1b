// One client connection of an agent: hello and authentication, then requests (upload, has, benchmark, ping) read
// as frames and answered in order. All of its handlers run on the connection's strand.
#pragma once

#include <deque>
#include <memory>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include "edgesweep/common/json.h"
#include "edgesweep/device_agents/frame.h"
#include "edgesweep/device_agents/shared_state.h"
#include "edgesweep/device_agents/stream.h"

namespace edgesweep {

class Session : public std::enable_shared_from_this<Session> {
 public:
  /// Takes an accepted socket whose executor is a strand.
  Session(boost::asio::ip::tcp::socket socket, std::shared_ptr<SharedState> state);
  ~Session();

  /// Sends hello and starts reading.
  void run();

 private:
  struct Upload;

  void start();
  /// After the preamble: the TLS handshake when the agent has TLS, then hello.
  void on_preamble(boost::system::error_code ec);
  void on_handshake(boost::system::error_code ec);
  void greet();
  void read_header();
  void on_header(boost::system::error_code ec);
  void on_payload(boost::system::error_code ec);
  void handle_frame(FrameType type, std::string& payload);
  void handle_control(const Json& message);
  void handle_auth(const Json& message);
  void handle_upload_begin(const Json& message);
  void handle_chunk(const std::string& bytes);
  void handle_upload_end(const Json& message);
  void handle_has(const Json& message);
  void handle_benchmark(const Json& message);
  void on_benchmark_done(const Json& request, const std::string& sha256, const BenchOutcome& outcome);
  void on_auth_timeout(boost::system::error_code ec);

  void send(const Json& message);
  /// Sends `message`, stops reading, and closes once everything queued is written.
  void send_and_close(const Json& message);
  void write_next();
  void on_write(boost::system::error_code ec);
  /// Ends the sending side, drops further input for a moment, then closes.
  void linger();
  void discard();
  void fail(boost::system::error_code ec, const char* step);
  void close();
  /// Gives back the place among connections waiting for authentication, once.
  void release_place();

  AgentStream stream_;
  std::shared_ptr<SharedState> state_;
  boost::asio::steady_timer auth_timer_;
  std::string peer_;
  std::string nonce_;
  bool authenticated_ = false;
  bool holds_place_ = false;
  bool closing_ = false;
  bool closed_ = false;
  bool lingering_ = false;
  bool reading_ = false;
  AgentPreamble preamble_{};
  FrameHeaderBytes header_{};
  FrameHeader frame_header_;
  std::string payload_;
  std::deque<std::string> outbox_;
  std::unique_ptr<Upload> upload_;
};

}  // namespace edgesweep
