// An in-memory byte stream for Asio's synchronous read/write algorithms that fails at its Nth operation and moves
// at most a few bytes per operation (short reads and writes), for fault injection at every I/O step.
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>
#include <string>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/system/system_error.hpp>

namespace edgesweep {

class FaultStream {
 public:
  static constexpr size_t never = std::numeric_limits<size_t>::max();

  /// Reads come from `input`; operation number `fail_at` (0-based, reads and writes counted together) fails with
  /// connection_reset; each operation moves at most `bytes_per_operation` bytes.
  explicit FaultStream(std::string input = {}, size_t fail_at = never, size_t bytes_per_operation = 1 << 20)
      : input_(std::move(input)), fail_at_(fail_at), step_(bytes_per_operation) {}

  /// Operations so far.
  size_t operations() const { return operations_; }
  /// Bytes written so far.
  const std::string& written() const { return written_; }
  /// Bytes of the input consumed so far.
  size_t consumed() const { return position_; }

  template <typename Buffers>
  size_t read_some(const Buffers& buffers, boost::system::error_code& ec) {
    if (operations_++ == fail_at_) {
      ec = boost::asio::error::connection_reset;
      return 0;
    }
    if (boost::asio::buffer_size(buffers) == 0) {
      ec = {};
      return 0;
    }
    if (position_ == input_.size()) {
      ec = boost::asio::error::eof;
      return 0;
    }
    const size_t n = boost::asio::buffer_copy(
        buffers, boost::asio::buffer(input_.data() + position_, std::min(step_, input_.size() - position_)));
    position_ += n;
    ec = {};
    return n;
  }

  template <typename Buffers>
  size_t read_some(const Buffers& buffers) {
    boost::system::error_code ec;
    const size_t n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

  template <typename Buffers>
  size_t write_some(const Buffers& buffers, boost::system::error_code& ec) {
    if (operations_++ == fail_at_) {
      ec = boost::asio::error::connection_reset;
      return 0;
    }
    std::string bytes(std::min(step_, boost::asio::buffer_size(buffers)), '\0');
    const size_t n = boost::asio::buffer_copy(boost::asio::buffer(bytes), buffers);
    written_.append(bytes.data(), n);
    ec = {};
    return n;
  }

  template <typename Buffers>
  size_t write_some(const Buffers& buffers) {
    boost::system::error_code ec;
    const size_t n = write_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

 private:
  std::string input_;
  size_t fail_at_;
  size_t step_;
  size_t operations_ = 0;
  size_t position_ = 0;
  std::string written_;
};

}  // namespace edgesweep
