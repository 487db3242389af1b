// Datasets held in memory as uint8 image tensors: Fashion-MNIST (idx, gzip or raw), CIFAR-10 (binary),
// an image folder (one subfolder per class). Deterministic splits and subsets by seed, normalisation,
// augmentation and batching.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/types.h>

#include "edgesweep/common/trial_config.h"
#include "edgesweep/workers/graph.h"

namespace edgesweep {

/// Images [N, C, H, W] as uint8 and labels [N] as int64.
struct Dataset {
  torch::Tensor images;
  torch::Tensor labels;
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
  /// The samples at `indices` (a 1-D int64 tensor).
  Dataset select(const torch::Tensor& indices) const;
};

/// The splits a trial works on, with what describes them.
struct DataSplits {
  Dataset train;
  Dataset val;
  Dataset test;
  std::vector<std::string> class_names;
  Shape input_shape;          ///< one sample's [C, H, W]
  std::vector<double> mean;   ///< per channel, of the training split, in [0, 1] units
  std::vector<double> std;
  std::string id;             ///< dataset name and a hash of its test split, e.g. "fashion-mnist@1a2b3c4d"
};

/// Where the Debian package puts Fashion-MNIST.
inline constexpr const char* kFashionMnistDefaultPath = "/usr/share/datasets/fashion-mnist";

/// Reads an idx image file (magic 2051) and its label file (magic 2049), gzip-compressed or raw.
/// Throws InputError naming the file for a missing file, a wrong magic number, a truncated file or a count mismatch.
Dataset read_idx(const std::filesystem::path& images, const std::filesystem::path& labels);

/// Reads CIFAR-10 binary batch files (records of 1 label byte and 3x32x32 pixels).
Dataset read_cifar10(const std::vector<std::filesystem::path>& files);

/// Reads an image folder: one subfolder per class (sorted names), PNG/JPEG/BMP images resized to `size` x `size`
/// with `channels` channels. Fills `class_names`.
Dataset read_image_folder(const std::filesystem::path& root, int64_t size, int64_t channels,
                          std::vector<std::string>& class_names);

/// The samples whose label is one of `classes`, in their original order, relabelled by their position in `classes`
/// (classes[k] becomes label k).
Dataset select_classes(const Dataset& data, const std::vector<int64_t>& classes);

/// The images resized to `size` x `size` (bilinear, antialiased when shrinking; 0 keeps the size) and, with `rgb`,
/// grey images replicated to three channels; still uint8. Labels are shared.
Dataset transform_images(const Dataset& data, int64_t size, bool rgb);

/// Loads the dataset of `config` and makes the train/val/test splits and subsets, deterministic in `seed`. In this
/// order: `classes` (when given) keeps only those classes in the training and test images, relabelled, with their
/// names; then `val_fraction` of the kept training images is held out, `train_subset` caps the rest and
/// `test_subset` the kept test images. Throws InputError naming `[data] classes` for a bad class list.
DataSplits load_data(const DataConfig& config, uint64_t seed);

/// uint8 images -> float, scaled to [0, 1] and normalised per channel.
torch::Tensor normalize_images(const torch::Tensor& images, const std::vector<double>& mean,
                               const std::vector<double>& std);

/// Random crop (after zero padding of `padding` pixels) and random horizontal flip, per sample, on uint8 images.
torch::Tensor augment_images(const torch::Tensor& images, int64_t padding, torch::Generator& generator);

/// Batches of indices over `size` samples: shuffled with `generator` when `shuffle`, the last one possibly smaller.
std::vector<torch::Tensor> make_batches(int64_t size, int64_t batch_size, bool shuffle, torch::Generator* generator);

}  // namespace edgesweep
