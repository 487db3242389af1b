// Dataset files written by tests: idx files (Fashion-MNIST's format) and a whole tiny Fashion-MNIST folder whose
// pixels tell each image's label, so a test can check where every image went.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <vector>

#include <gtest/gtest.h>

namespace edgesweep {

using Bytes = std::vector<uint8_t>;

inline void append_big_endian(Bytes& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(value >> shift));
}

/// An idx file: magic, the dimensions (big-endian u32 each), then the payload.
inline Bytes idx_file(uint32_t magic, const std::vector<uint32_t>& dims, const Bytes& payload) {
  Bytes out;
  append_big_endian(out, magic);
  for (uint32_t d : dims) append_big_endian(out, d);
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

inline void write_raw(const std::filesystem::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

/// The pixel value of every pixel of an image with `label` at position `index` of its file: label * 25 plus a
/// little of the index, so that pixel / 25 gives the label back.
inline uint8_t labelled_pixel(uint8_t label, size_t index) { return static_cast<uint8_t>(label * 25 + index % 5); }

/// A Fashion-MNIST folder (raw idx files under their usual names) of `size` x `size` images with these labels.
inline void write_fashion_mnist_folder(const std::filesystem::path& root, const Bytes& train_labels,
                                       const Bytes& test_labels, uint32_t size = 8) {
  std::filesystem::create_directories(root);
  const auto write = [&](const char* images, const char* labels, const Bytes& label_bytes) {
    Bytes pixels;
    for (size_t i = 0; i < label_bytes.size(); ++i) {
      pixels.insert(pixels.end(), size * size, labelled_pixel(label_bytes[i], i));
    }
    const auto count = static_cast<uint32_t>(label_bytes.size());
    write_raw(root / images, idx_file(2051, {count, size, size}, pixels));
    write_raw(root / labels, idx_file(2049, {count}, label_bytes));
  };
  write("train-images-idx3-ubyte", "train-labels-idx1-ubyte", train_labels);
  write("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", test_labels);
}

/// Labels of `per_class[c]` images of each class c, interleaved (0, 1, ..., 9, 0, 1, ...) until each has its count.
inline Bytes labels_with_counts(const std::vector<int>& per_class) {
  Bytes labels;
  std::vector<int> left = per_class;
  for (bool any = true; any;) {
    any = false;
    for (size_t c = 0; c < left.size(); ++c) {
      if (left[c] == 0) continue;
      labels.push_back(static_cast<uint8_t>(c));
      --left[c];
      any = true;
    }
  }
  return labels;
}

}  // namespace edgesweep
