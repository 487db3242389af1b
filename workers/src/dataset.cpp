// Dataset readers, splits and batching.
#include "edgesweep/workers/dataset.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>

#include <torch/torch.h>
#include <zlib.h>

#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/hash.h"

namespace edgesweep {
namespace fs = std::filesystem;
namespace {

/// Reads a whole file, transparently un-gzipping it (zlib's gzread reads plain files as they are).
std::string read_maybe_gzip(const fs::path& path) {
  check_input(fs::exists(path), "data file '{}' does not exist", path.string());
  gzFile file = gzopen(path.c_str(), "rb");
  check_input(file != nullptr, "cannot open data file '{}'", path.string());
  std::string data;
  char buffer[1 << 16];
  int n = 0;
  while ((n = gzread(file, buffer, sizeof buffer)) > 0) data.append(buffer, static_cast<size_t>(n));
  int err = 0;
  const char* message = gzerror(file, &err);
  const std::string reason = message ? message : "";
  gzclose(file);
  check_input(n == 0 && err == Z_OK, "data file '{}' is corrupt or truncated ({})", path.string(), reason);
  return data;
}

uint32_t big_endian_u32(const std::string& data, size_t offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data() + offset);
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

torch::Tensor bytes_to_tensor(const std::string& data, size_t offset, std::vector<int64_t> shape) {
  auto t = torch::empty(shape, torch::kUInt8);
  std::memcpy(t.data_ptr<uint8_t>(), data.data() + offset, static_cast<size_t>(t.numel()));
  return t;
}

std::vector<double> channel_stat(const torch::Tensor& images, bool want_std) {
  std::vector<double> out;
  const auto f = images.to(torch::kFloat32).div_(255.0);
  for (int64_t c = 0; c < images.size(1); ++c) {
    const auto channel = f.select(1, c);
    out.push_back(want_std ? channel.std().item<double>() : channel.mean().item<double>());
  }
  return out;
}

std::vector<std::string> default_class_names(const std::string& dataset) {
  if (dataset == "fashion-mnist") {
    return {"t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"};
  }
  return {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
}

/// A [data] classes list against the dataset's `class_count` classes: at least 2, each once, each in range.
void check_class_list(const std::vector<int64_t>& classes, int64_t class_count, const std::string& dataset) {
  const std::string listed = Json(classes).dump();
  check_input(classes.size() >= 2, "[data] 'classes' = {} keeps {} class(es); a classifier needs at least 2", listed,
              classes.size());
  for (size_t i = 0; i < classes.size(); ++i) {
    check_input(classes[i] >= 0 && classes[i] < class_count,
                "[data] 'classes' = {} holds {}, but {} has {} classes (0..{})", listed, classes[i], dataset,
                class_count, class_count - 1);
    for (size_t j = 0; j < i; ++j) {
      check_input(classes[j] != classes[i], "[data] 'classes' = {} names class {} twice", listed, classes[i]);
    }
  }
}

}  // namespace

Dataset Dataset::select(const torch::Tensor& indices) const {
  return Dataset{images.index_select(0, indices), labels.index_select(0, indices)};
}

Dataset transform_images(const Dataset& data, int64_t size, bool rgb) {
  Dataset out = data;
  if (rgb) {
    check_input(data.images.size(1) == 1 || data.images.size(1) == 3, "rgb: images have {} channels, not 1 or 3",
                data.images.size(1));
    if (data.images.size(1) == 1) out.images = data.images.expand({-1, 3, -1, -1}).contiguous();
  }
  if (size > 0 && (out.images.size(2) != size || out.images.size(3) != size) && out.images.size(0) > 0) {
    // In slices, so a large set never holds all of its float copies at once.
    std::vector<torch::Tensor> parts;
    for (int64_t start = 0; start < out.images.size(0); start += 1024) {
      const auto slice = out.images.narrow(0, start, std::min<int64_t>(1024, out.images.size(0) - start));
      const auto resized = at::_upsample_bilinear2d_aa(slice.to(torch::kFloat32), at::IntArrayRef{size, size},
                                                       /*align_corners=*/false);
      parts.push_back(resized.round().clamp(0, 255).to(torch::kUInt8));
    }
    out.images = torch::cat(parts, 0);
  }
  return out;
}

Dataset select_classes(const Dataset& data, const std::vector<int64_t>& classes) {
  if (data.size() == 0) return data;
  int64_t largest = data.labels.max().item<int64_t>();
  for (int64_t c : classes) largest = std::max(largest, c);
  // new_label[old label] = its position in `classes`, or -1 for a class that is left out.
  auto new_label = torch::full({largest + 1}, -1, torch::kInt64);
  for (size_t k = 0; k < classes.size(); ++k) new_label[classes[k]] = static_cast<int64_t>(k);
  const auto relabelled = new_label.index_select(0, data.labels);
  const auto kept = relabelled.ge(0).nonzero().flatten();
  return Dataset{data.images.index_select(0, kept), relabelled.index_select(0, kept)};
}

Dataset read_idx(const fs::path& images_path, const fs::path& labels_path) {
  const std::string images = read_maybe_gzip(images_path);
  const std::string labels = read_maybe_gzip(labels_path);
  check_input(images.size() >= 16, "'{}' is too short for an idx image file ({} bytes)", images_path.string(),
              images.size());
  check_input(labels.size() >= 8, "'{}' is too short for an idx label file ({} bytes)", labels_path.string(),
              labels.size());
  const uint32_t image_magic = big_endian_u32(images, 0);
  const uint32_t label_magic = big_endian_u32(labels, 0);
  check_input(image_magic == 2051, "'{}' has magic number {}, expected 2051 (idx3 images)", images_path.string(),
              image_magic);
  check_input(label_magic == 2049, "'{}' has magic number {}, expected 2049 (idx1 labels)", labels_path.string(),
              label_magic);
  const int64_t count = big_endian_u32(images, 4);
  const int64_t rows = big_endian_u32(images, 8);
  const int64_t cols = big_endian_u32(images, 12);
  const int64_t label_count = big_endian_u32(labels, 4);
  check_input(count == label_count, "'{}' holds {} images but '{}' holds {} labels", images_path.string(), count,
              labels_path.string(), label_count);
  check_input(rows > 0 && cols > 0 && rows <= 4096 && cols <= 4096, "'{}': bad image size {}x{}",
              images_path.string(), rows, cols);
  const size_t expected = 16 + static_cast<size_t>(count * rows * cols);
  check_input(images.size() >= expected, "'{}' is truncated: {} bytes, expected {} for {} images of {}x{}",
              images_path.string(), images.size(), expected, count, rows, cols);
  check_input(labels.size() >= 8 + static_cast<size_t>(count), "'{}' is truncated: {} bytes, expected {}",
              labels_path.string(), labels.size(), 8 + count);
  Dataset d;
  d.images = bytes_to_tensor(images, 16, {count, 1, rows, cols});
  d.labels = bytes_to_tensor(labels, 8, {count}).to(torch::kInt64);
  return d;
}

Dataset read_cifar10(const std::vector<fs::path>& files) {
  constexpr size_t kRecord = 1 + 3 * 32 * 32;
  std::vector<torch::Tensor> images, labels;
  for (const fs::path& path : files) {
    const std::string data = read_maybe_gzip(path);
    check_input(!data.empty() && data.size() % kRecord == 0,
                "'{}' is not a CIFAR-10 binary batch: {} bytes is not a multiple of {} (truncated?)", path.string(),
                data.size(), kRecord);
    const int64_t count = static_cast<int64_t>(data.size() / kRecord);
    auto records = bytes_to_tensor(data, 0, {count, static_cast<int64_t>(kRecord)});
    labels.push_back(records.select(1, 0).to(torch::kInt64));
    images.push_back(records.narrow(1, 1, 3 * 32 * 32).reshape({count, 3, 32, 32}).clone());
  }
  Dataset d{torch::cat(images), torch::cat(labels)};
  const int64_t max_label = d.labels.max().item<int64_t>();
  check_input(max_label < 10, "'{}' holds label {}: not a CIFAR-10 batch file", files.front().string(), max_label);
  return d;
}

Dataset read_image_folder(const fs::path& root, int64_t size, int64_t channels,
                          std::vector<std::string>& class_names) {
  check_input(fs::is_directory(root), "image folder '{}' does not exist or is not a folder", root.string());
  class_names.clear();
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.is_directory()) class_names.push_back(entry.path().filename().string());
  }
  std::sort(class_names.begin(), class_names.end());
  check_input(class_names.size() >= 2, "image folder '{}' needs one subfolder per class, at least 2, found {}",
              root.string(), class_names.size());
  std::vector<torch::Tensor> images;
  std::vector<int64_t> labels;
  for (size_t label = 0; label < class_names.size(); ++label) {
    const fs::path folder = root / class_names[label];
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(folder)) {
      std::string ext = entry.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
      if (entry.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp")) {
        files.push_back(entry.path());
      }
    }
    check_input(!files.empty(), "class folder '{}' holds no PNG/JPEG/BMP image", folder.string());
    std::sort(files.begin(), files.end());
    for (const fs::path& file : files) {
      int w = 0, h = 0, n = 0;
      unsigned char* pixels = stbi_load(file.c_str(), &w, &h, &n, static_cast<int>(channels));
      check_input(pixels != nullptr, "cannot decode image '{}': {}", file.string(), stbi_failure_reason());
      std::vector<unsigned char> resized(static_cast<size_t>(size * size * channels));
      const int ok = stbir_resize_uint8(pixels, w, h, 0, resized.data(), static_cast<int>(size),
                                        static_cast<int>(size), 0, static_cast<int>(channels));
      stbi_image_free(pixels);
      check(ok == 1, "cannot resize image '{}'", file.string());
      auto hwc = torch::from_blob(resized.data(), {size, size, channels}, torch::kUInt8);
      images.push_back(hwc.permute({2, 0, 1}).clone());
      labels.push_back(static_cast<int64_t>(label));
    }
  }
  return Dataset{torch::stack(images), torch::tensor(labels, torch::kInt64)};
}

DataSplits load_data(const DataConfig& config, uint64_t seed) {
  DataSplits splits;
  Dataset full_train;
  if (config.dataset == "fashion-mnist") {
    const fs::path root = config.path.empty() ? fs::path(kFashionMnistDefaultPath) : fs::path(config.path);
    check_input(fs::is_directory(root), "Fashion-MNIST folder '{}' does not exist{}", root.string(),
                config.path.empty() ? " (install the dataset-fashion-mnist package)" : "");
    const auto pick = [&](const std::string& stem) {
      const fs::path gz = root / (stem + ".gz");
      return fs::exists(gz) ? gz : root / stem;
    };
    full_train = read_idx(pick("train-images-idx3-ubyte"), pick("train-labels-idx1-ubyte"));
    splits.test = read_idx(pick("t10k-images-idx3-ubyte"), pick("t10k-labels-idx1-ubyte"));
    splits.class_names = default_class_names(config.dataset);
  } else if (config.dataset == "cifar10") {
    fs::path root = config.path;
    if (fs::is_directory(root / "cifar-10-batches-bin")) root /= "cifar-10-batches-bin";
    std::vector<fs::path> train_files;
    for (int i = 1; i <= 5; ++i) train_files.push_back(root / fmt::format("data_batch_{}.bin", i));
    full_train = read_cifar10(train_files);
    splits.test = read_cifar10({root / "test_batch.bin"});
    splits.class_names = default_class_names(config.dataset);
  } else if (config.dataset == "imagefolder") {
    Dataset all = read_image_folder(config.path, config.image_size, config.channels, splits.class_names);
    // A seeded, per-class test split.
    torch::Generator gen = at::detail::createCPUGenerator(seed ^ 0x7e57);
    std::vector<int64_t> train_idx, test_idx;
    for (int64_t c = 0; c < static_cast<int64_t>(splits.class_names.size()); ++c) {
      const auto members = (all.labels == c).nonzero().flatten();
      const auto order = members.index_select(0, torch::randperm(members.size(0), gen));
      const int64_t n_test = std::max<int64_t>(1, static_cast<int64_t>(config.test_fraction * order.size(0)));
      check_input(order.size(0) >= 2, "class '{}' of '{}' needs at least 2 images to split, has {}",
                  splits.class_names[c], config.path, order.size(0));
      for (int64_t i = 0; i < order.size(0); ++i) {
        (i < n_test ? test_idx : train_idx).push_back(order[i].item<int64_t>());
      }
    }
    full_train = all.select(torch::tensor(train_idx, torch::kInt64));
    splits.test = all.select(torch::tensor(test_idx, torch::kInt64));
  } else {
    throw InputError(fmt::format("unknown dataset '{}'", config.dataset));
  }

  const int64_t num_classes = static_cast<int64_t>(splits.class_names.size());
  check_input(full_train.labels.max().item<int64_t>() < num_classes && full_train.labels.min().item<int64_t>() >= 0,
              "dataset '{}' has labels outside 0..{}", config.dataset, num_classes - 1);
  if (!config.classes.empty()) {
    check_class_list(config.classes, num_classes, config.dataset);
    full_train = select_classes(full_train, config.classes);
    splits.test = select_classes(splits.test, config.classes);
    std::vector<std::string> kept_names;
    for (int64_t c : config.classes) kept_names.push_back(splits.class_names[static_cast<size_t>(c)]);
    splits.class_names = std::move(kept_names);
  }

  // Deterministic validation split and subsets.
  torch::Generator gen = at::detail::createCPUGenerator(seed);
  const auto order = torch::randperm(full_train.size(), gen);
  const int64_t n_val = static_cast<int64_t>(config.val_fraction * static_cast<double>(full_train.size()));
  int64_t n_train = full_train.size() - n_val;
  if (config.train_subset > 0) n_train = std::min(n_train, config.train_subset);
  check_input(n_train > 0, "dataset '{}' leaves no training images (val_fraction {}, train_subset {})",
              config.dataset, config.val_fraction, config.train_subset);
  splits.val = full_train.select(order.narrow(0, 0, n_val));
  splits.train = full_train.select(order.narrow(0, n_val, n_train));
  if (config.test_subset > 0 && config.test_subset < splits.test.size()) {
    const auto test_order = torch::randperm(splits.test.size(), gen);
    splits.test = splits.test.select(test_order.narrow(0, 0, config.test_subset));
  }
  if (config.resize > 0 || config.rgb) {
    splits.train = transform_images(splits.train, config.resize, config.rgb);
    splits.val = transform_images(splits.val, config.resize, config.rgb);
    splits.test = transform_images(splits.test, config.resize, config.rgb);
  }
  const auto& im = splits.train.images;
  splits.input_shape = Shape{im.size(1), im.size(2), im.size(3), false};
  if (!config.mean.empty()) {
    check_input(config.mean.size() == static_cast<size_t>(im.size(1)) && config.std.size() == config.mean.size(),
                "[data] mean {} and std {} need one value per channel: the images have {}",
                Json(config.mean).dump(), Json(config.std).dump(), im.size(1));
    splits.mean = config.mean;
    splits.std = config.std;
  } else {
    splits.mean = channel_stat(im, false);
    splits.std = channel_stat(im, true);
  }
  for (double& s : splits.std) s = std::max(s, 1e-3);
  const auto test_bytes = splits.test.images.contiguous();
  const std::string digest = sha256_hex(std::string_view(reinterpret_cast<const char*>(test_bytes.data_ptr<uint8_t>()),
                                                         static_cast<size_t>(test_bytes.numel())));
  splits.id = config.dataset + "@" + digest.substr(0, 12);
  return splits;
}

torch::Tensor normalize_images(const torch::Tensor& images, const std::vector<double>& mean,
                               const std::vector<double>& std) {
  const int64_t c = images.size(1);
  auto m = torch::tensor(mean, torch::kFloat32).view({1, c, 1, 1});
  auto s = torch::tensor(std, torch::kFloat32).view({1, c, 1, 1});
  return images.to(torch::kFloat32).div_(255.0).sub_(m).div_(s);
}

torch::Tensor augment_images(const torch::Tensor& images, int64_t padding, torch::Generator& generator) {
  const int64_t n = images.size(0), h = images.size(2), w = images.size(3);
  const auto padded = torch::constant_pad_nd(images, {padding, padding, padding, padding}, 0);
  const auto offsets = torch::randint(0, 2 * padding + 1, {n, 2}, generator, torch::kInt64);
  const auto flips = torch::randint(0, 2, {n}, generator, torch::kInt64);
  auto out = torch::empty_like(images);
  const auto off = offsets.accessor<int64_t, 2>();
  const auto flip = flips.accessor<int64_t, 1>();
  for (int64_t i = 0; i < n; ++i) {
    auto crop = padded[i].narrow(1, off[i][0], h).narrow(2, off[i][1], w);
    out[i].copy_(flip[i] ? crop.flip({2}) : crop);
  }
  return out;
}

std::vector<torch::Tensor> make_batches(int64_t size, int64_t batch_size, bool shuffle, torch::Generator* generator) {
  const auto order = shuffle ? torch::randperm(size, *generator) : torch::arange(size, torch::kInt64);
  std::vector<torch::Tensor> batches;
  for (int64_t start = 0; start < size; start += batch_size) {
    batches.push_back(order.narrow(0, start, std::min(batch_size, size - start)));
  }
  return batches;
}

}  // namespace edgesweep
