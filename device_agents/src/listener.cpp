// The accept loop of an agent.
#include "edgesweep/device_agents/listener.h"

#include <chrono>

#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <spdlog/spdlog.h>

#include "edgesweep/common/error.h"
#include "edgesweep/device_agents/session.h"

namespace edgesweep {

namespace net = boost::asio;
using net::ip::tcp;
using boost::system::error_code;

Listener::Listener(net::io_context& io, const tcp::endpoint& endpoint, std::shared_ptr<SharedState> state)
    : io_(io), acceptor_(net::make_strand(io)), retry_timer_(acceptor_.get_executor()), state_(std::move(state)) {
  const std::string where = fmt::format("{}:{}", endpoint.address().to_string(), endpoint.port());
  error_code ec;
  acceptor_.open(endpoint.protocol(), ec);
  check(!ec, "cannot open a socket for {}: {}", where, ec.message());
  acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  check(!ec, "cannot set SO_REUSEADDR on {}: {}", where, ec.message());
  acceptor_.bind(endpoint, ec);
  check(!ec, "cannot bind {}: {}", where, ec.message());
  acceptor_.listen(net::socket_base::max_listen_connections, ec);
  check(!ec, "cannot listen on {}: {}", where, ec.message());
}

tcp::endpoint Listener::local_endpoint() const { return acceptor_.local_endpoint(); }

void Listener::run() { accept(); }

void Listener::stop() {
  net::post(acceptor_.get_executor(), [self = shared_from_this()] {
    error_code ignored;
    self->retry_timer_.cancel();
    self->acceptor_.close(ignored);
  });
}

void Listener::accept() {
  acceptor_.async_accept(net::make_strand(io_), [self = shared_from_this()](error_code ec, tcp::socket socket) {
    self->on_accept(ec, std::move(socket));
  });
}

void Listener::on_accept(error_code ec, tcp::socket socket) {
  if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
  if (ec) {
    // Out of descriptors and the like: say so and try again a little later rather than spin.
    spdlog::warn("accept: {}", ec.message());
    retry_timer_.expires_after(std::chrono::milliseconds(100));
    retry_timer_.async_wait([self = shared_from_this()](error_code wait_ec) {
      if (!wait_ec && self->acceptor_.is_open()) self->accept();
    });
    return;
  }
  std::make_shared<Session>(std::move(socket), state_)->run();
  accept();
}

}  // namespace edgesweep
