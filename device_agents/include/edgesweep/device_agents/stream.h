// The byte stream of one agent connection: a TCP socket, used in the clear until a TLS handshake on it has
// succeeded, then through TLS. Either way it is an Asio AsyncReadStream and AsyncWriteStream, so the session reads
// and writes frames the same way whichever transport is in use.
#pragma once

#include <memory>
#include <utility>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/system/error_code.hpp>

#include "edgesweep/device_agents/tls.h"

namespace edgesweep {

class AgentStream {
 public:
  using Socket = boost::asio::ip::tcp::socket;
  using executor_type = Socket::executor_type;

  explicit AgentStream(Socket socket) : socket_(std::move(socket)) {}

  executor_type get_executor() { return socket_.get_executor(); }
  Socket& socket() { return socket_; }
  /// True once a TLS handshake has succeeded: reads and writes are encrypted from then on.
  bool secured() const { return secured_; }

  /// Runs the agent's side of a TLS handshake; `handler(error_code)` runs on the socket's executor. The stream and
  /// the context must outlive the handshake (the session's handler keeps the session alive).
  template <typename Handler>
  void async_server_handshake(std::shared_ptr<TlsContext> context, Handler&& handler) {
    context_ = std::move(context);
    tls_ = std::make_unique<boost::asio::ssl::stream<Socket&>>(socket_, context_->context());
    tls_->async_handshake(boost::asio::ssl::stream_base::server,
                          [this, handler = std::forward<Handler>(handler)](boost::system::error_code ec) mutable {
                            if (!ec) secured_ = true;
                            handler(ec);
                          });
  }

  template <typename MutableBuffers, typename Handler>
  void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    if (secured_) {
      tls_->async_read_some(buffers, std::forward<Handler>(handler));
    } else {
      socket_.async_read_some(buffers, std::forward<Handler>(handler));
    }
  }

  template <typename ConstBuffers, typename Handler>
  void async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    if (secured_) {
      tls_->async_write_some(buffers, std::forward<Handler>(handler));
    } else {
      socket_.async_write_some(buffers, std::forward<Handler>(handler));
    }
  }

 private:
  Socket socket_;
  std::shared_ptr<TlsContext> context_;
  std::unique_ptr<boost::asio::ssl::stream<Socket&>> tls_;
  bool secured_ = false;
};

}  // namespace edgesweep
