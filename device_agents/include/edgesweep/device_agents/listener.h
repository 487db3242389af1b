// Accepts connections of an agent and starts a session, on its own strand, for each.
#pragma once

#include <memory>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include "edgesweep/device_agents/shared_state.h"

namespace edgesweep {

class Listener : public std::enable_shared_from_this<Listener> {
 public:
  /// Opens, binds and listens on `endpoint`; throws Error naming the address when that fails.
  Listener(boost::asio::io_context& io, const boost::asio::ip::tcp::endpoint& endpoint,
           std::shared_ptr<SharedState> state);

  /// The address actually bound (the real port when 0 was asked for).
  boost::asio::ip::tcp::endpoint local_endpoint() const;

  /// Starts accepting.
  void run();
  /// Stops accepting; open sessions are not touched.
  void stop();

 private:
  void accept();
  void on_accept(boost::system::error_code ec, boost::asio::ip::tcp::socket socket);

  boost::asio::io_context& io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer retry_timer_;
  std::shared_ptr<SharedState> state_;
};

}  // namespace edgesweep
