// Tests of the dataset readers (idx raw and gzip, CIFAR-10 binary, image folders) on tiny files written here,
// their errors, the Fashion-MNIST splits on the installed dataset, normalisation, augmentation and batching.
#include "edgesweep/workers/dataset.h"

#include <zlib.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <stb/stb_image_write.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "expect_error.h"
#include "fake_datasets.h"
#include "temp_folder.h"

namespace edgesweep {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------------------------
// Writing test files (idx files: fake_datasets.h)

struct GzCloser {
  void operator()(gzFile_s* file) const { gzclose(file); }
};

void write_gzip(const fs::path& path, const Bytes& bytes) {
  std::unique_ptr<gzFile_s, GzCloser> file(gzopen(path.c_str(), "wb"));
  ASSERT_TRUE(file) << path;
  ASSERT_EQ(gzwrite(file.get(), bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
}

Bytes read_raw(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// Three 4x5 images with distinct pixel values, and their labels.
const Bytes kPixels = [] {
  Bytes p;
  for (int i = 0; i < 3 * 4 * 5; ++i) p.push_back(static_cast<uint8_t>((i * 37 + 11) % 256));
  return p;
}();
const Bytes kLabels = {2, 0, 9};

torch::Tensor expected_images() {
  return torch::tensor(std::vector<int64_t>(kPixels.begin(), kPixels.end())).to(torch::kUInt8).view({3, 1, 4, 5});
}

class DataFiles : public ::testing::Test {
 protected:
  TempFolder folder_{"dataset-test"};
};

// ---------------------------------------------------------------------------------------------------------------
// idx

using IdxReader = DataFiles;

TEST_F(IdxReader, ReadsGzipAndRawFilesExactly) {
  write_gzip(folder_ / "images.gz", idx_file(2051, {3, 4, 5}, kPixels));
  write_gzip(folder_ / "labels.gz", idx_file(2049, {3}, kLabels));
  write_raw(folder_ / "images", idx_file(2051, {3, 4, 5}, kPixels));
  write_raw(folder_ / "labels", idx_file(2049, {3}, kLabels));
  ASSERT_NE(read_raw(folder_ / "images.gz"), read_raw(folder_ / "images"));  // the gzip file really is compressed

  for (const char* suffix : {".gz", ""}) {
    const Dataset d = read_idx(folder_ / (std::string("images") + suffix), folder_ / (std::string("labels") + suffix));
    ASSERT_EQ(d.size(), 3) << suffix;
    EXPECT_EQ(d.images.scalar_type(), torch::kUInt8);
    EXPECT_EQ(d.labels.scalar_type(), torch::kInt64);
    EXPECT_TRUE(torch::equal(d.images, expected_images())) << suffix;
    EXPECT_TRUE(torch::equal(d.labels, torch::tensor({2, 0, 9}, torch::kInt64))) << suffix;
    EXPECT_EQ(d.images[1][0][2][3].item<int>(), (((20 + 2 * 5 + 3) * 37) + 11) % 256);  // image 1, row 2, col 3
  }
  // Mixed: gzip images with raw labels.
  EXPECT_EQ(read_idx(folder_ / "images.gz", folder_ / "labels").size(), 3);
}

TEST_F(IdxReader, SelectPicksSamples) {
  write_raw(folder_ / "images", idx_file(2051, {3, 4, 5}, kPixels));
  write_raw(folder_ / "labels", idx_file(2049, {3}, kLabels));
  const Dataset d = read_idx(folder_ / "images", folder_ / "labels").select(torch::tensor({2, 0}, torch::kInt64));
  EXPECT_TRUE(torch::equal(d.labels, torch::tensor({9, 2}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(d.images[0], expected_images()[2]));
}

TEST_F(IdxReader, MissingFileIsNamed) {
  write_raw(folder_ / "labels", idx_file(2049, {3}, kLabels));
  const fs::path missing = folder_ / "no-such-images.gz";
  expect_error<InputError>([&] { read_idx(missing, folder_ / "labels"); }, {missing.string(), "does not exist"});
}

TEST_F(IdxReader, WrongMagicNamesFileAndNumber) {
  write_raw(folder_ / "images", idx_file(2051, {3, 4, 5}, kPixels));
  write_raw(folder_ / "labels", idx_file(2049, {3}, kLabels));
  write_gzip(folder_ / "swapped.gz", idx_file(2049, {3, 4, 5}, kPixels));
  expect_error<InputError>([&] { read_idx(folder_ / "swapped.gz", folder_ / "labels"); },
                           {(folder_ / "swapped.gz").string(), "magic number 2049", "2051"});
  write_raw(folder_ / "bad-labels", idx_file(0x01020304, {3}, kLabels));
  expect_error<InputError>([&] { read_idx(folder_ / "images", folder_ / "bad-labels"); },
                           {(folder_ / "bad-labels").string(), "magic number 16909060", "2049"});
}

TEST_F(IdxReader, TruncatedFilesAreNamed) {
  write_raw(folder_ / "labels", idx_file(2049, {3}, kLabels));
  // The header promises three images; the payload holds two and a half.
  const Bytes short_pixels(kPixels.begin(), kPixels.begin() + 50);
  write_gzip(folder_ / "short.gz", idx_file(2051, {3, 4, 5}, short_pixels));
  expect_error<InputError>([&] { read_idx(folder_ / "short.gz", folder_ / "labels"); },
                           {(folder_ / "short.gz").string(), "truncated", "66 bytes", "expected 76"});
  // Too short even for the header.
  write_raw(folder_ / "too_short", Bytes{0, 0, 8, 3});
  expect_error<InputError>([&] { read_idx(folder_ / "too_short", folder_ / "labels"); },
                           {(folder_ / "too_short").string(), "too short"});
  // Labels cut short.
  write_raw(folder_ / "images", idx_file(2051, {3, 4, 5}, kPixels));
  write_raw(folder_ / "short-labels", idx_file(2049, {3}, Bytes{2, 0}));
  expect_error<InputError>([&] { read_idx(folder_ / "images", folder_ / "short-labels"); },
                           {(folder_ / "short-labels").string(), "truncated"});
  // A gzip stream cut in the middle.
  write_gzip(folder_ / "whole.gz", idx_file(2051, {3, 4, 5}, kPixels));
  const Bytes whole = read_raw(folder_ / "whole.gz");
  write_raw(folder_ / "cut.gz", Bytes(whole.begin(), whole.begin() + static_cast<long>(whole.size() / 2)));
  expect_error<InputError>([&] { read_idx(folder_ / "cut.gz", folder_ / "labels"); },
                           {(folder_ / "cut.gz").string(), "corrupt or truncated"});
}

TEST_F(IdxReader, CountMismatchNamesBothFiles) {
  write_raw(folder_ / "images", idx_file(2051, {3, 4, 5}, kPixels));
  write_raw(folder_ / "two-labels", idx_file(2049, {2}, Bytes{1, 2}));
  expect_error<InputError>([&] { read_idx(folder_ / "images", folder_ / "two-labels"); },
                           {(folder_ / "images").string(), "3 images", (folder_ / "two-labels").string(), "2 labels"});
}

// ---------------------------------------------------------------------------------------------------------------
// CIFAR-10

/// Pixel value of record `record`, channel `c`, row `y`, column `x` in the test batches.
uint8_t cifar_pixel(int record, int c, int y, int x) {
  return static_cast<uint8_t>((record * 31 + c * 67 + y * 5 + x * 3) % 256);
}

/// CIFAR-10 records: the label byte, then the red, green and blue planes, each 32x32 row-major.
Bytes cifar_records(int first_record, const std::vector<uint8_t>& labels) {
  Bytes out;
  for (size_t k = 0; k < labels.size(); ++k) {
    out.push_back(labels[k]);
    for (int c = 0; c < 3; ++c) {
      for (int y = 0; y < 32; ++y) {
        for (int x = 0; x < 32; ++x) out.push_back(cifar_pixel(first_record + static_cast<int>(k), c, y, x));
      }
    }
  }
  return out;
}

using Cifar10Reader = DataFiles;

TEST_F(Cifar10Reader, ReadsRecordsAcrossBatchFiles) {
  write_raw(folder_ / "data_batch_1.bin", cifar_records(0, {3, 7}));
  write_raw(folder_ / "data_batch_2.bin", cifar_records(2, {9}));
  const Dataset d = read_cifar10({folder_ / "data_batch_1.bin", folder_ / "data_batch_2.bin"});
  ASSERT_EQ(d.size(), 3);
  EXPECT_EQ(d.images.sizes(), (std::vector<int64_t>{3, 3, 32, 32}));
  EXPECT_EQ(d.images.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(torch::equal(d.labels, torch::tensor({3, 7, 9}, torch::kInt64)));
  auto expected = torch::empty({3, 3, 32, 32}, torch::kUInt8);
  auto e = expected.accessor<uint8_t, 4>();
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) {
      for (int y = 0; y < 32; ++y) {
        for (int x = 0; x < 32; ++x) e[r][c][y][x] = cifar_pixel(r, c, y, x);
      }
    }
  }
  EXPECT_TRUE(torch::equal(d.images, expected));
}

TEST_F(Cifar10Reader, TruncatedFileAndBadLabelAreNamed) {
  Bytes records = cifar_records(0, {1, 2});
  records.resize(records.size() - 100);
  write_raw(folder_ / "cut.bin", records);
  expect_error<InputError>([&] { read_cifar10({folder_ / "cut.bin"}); },
                           {(folder_ / "cut.bin").string(), "6046 bytes", "3073", "truncated"});
  write_raw(folder_ / "labels.bin", cifar_records(0, {4, 12}));
  expect_error<InputError>([&] { read_cifar10({folder_ / "labels.bin"}); },
                           {(folder_ / "labels.bin").string(), "label 12"});
  const fs::path missing = folder_ / "test_batch.bin";
  expect_error<InputError>([&] { read_cifar10({missing}); }, {missing.string(), "does not exist"});
}

// ---------------------------------------------------------------------------------------------------------------
// Image folders

struct Colour {
  uint8_t r, g, b;
};

/// stb_image's conversion of RGB to one grey channel.
uint8_t grey_of(const Colour& c) { return static_cast<uint8_t>((c.r * 77 + c.g * 150 + c.b * 29) >> 8); }

/// Writes a `width` x `height` PNG of one colour with `channels` channels (1 grey, 3 RGB, 4 RGBA).
void write_png(const fs::path& path, int width, int height, int channels, const Colour& colour) {
  std::vector<uint8_t> pixels;
  for (int i = 0; i < width * height; ++i) {
    if (channels == 1) {
      pixels.push_back(colour.r);
    } else {
      pixels.insert(pixels.end(), {colour.r, colour.g, colour.b});
      if (channels == 4) pixels.push_back(255);
    }
  }
  fs::create_directories(path.parent_path());
  ASSERT_NE(stbi_write_png(path.c_str(), width, height, channels, pixels.data(), width * channels), 0) << path;
}

const Colour kOrange{200, 100, 50};
const Colour kGreen{10, 250, 120};
const Colour kGrey{77, 77, 77};

/// Two classes in sorted order: cat (orange 4x4 RGB, green 16x12 RGBA), dog (grey 8x8, and a note to skip).
void write_pets(const fs::path& root) {
  write_png(root / "cat" / "a.png", 4, 4, 3, kOrange);
  write_png(root / "cat" / "b.png", 16, 12, 4, kGreen);
  write_png(root / "dog" / "c.png", 8, 8, 1, kGrey);
  std::ofstream(root / "dog" / "notes.txt") << "not an image; the reader skips it";
}

/// Expects every pixel of every channel of `image` [C, H, W] to be within 1 of `values[c]` (resampling rounds).
void expect_constant(const torch::Tensor& image, const std::vector<int>& values) {
  ASSERT_EQ(image.size(0), static_cast<int64_t>(values.size()));
  for (size_t c = 0; c < values.size(); ++c) {
    const auto channel = image[static_cast<int64_t>(c)].to(torch::kInt32);
    EXPECT_LE((channel - values[c]).abs().max().item<int>(), 1) << "channel " << c << " expected " << values[c];
  }
}

using ImageFolderReader = DataFiles;

TEST_F(ImageFolderReader, ReadsAndResizesWithOneOrThreeChannels) {
  write_pets(folder_.path());
  std::vector<std::string> classes;
  const Dataset rgb = read_image_folder(folder_.path(), 8, 3, classes);
  EXPECT_EQ(classes, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(rgb.images.sizes(), (std::vector<int64_t>{3, 3, 8, 8}));
  EXPECT_EQ(rgb.images.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(torch::equal(rgb.labels, torch::tensor({0, 0, 1}, torch::kInt64)));
  expect_constant(rgb.images[0], {200, 100, 50});
  expect_constant(rgb.images[1], {10, 250, 120});
  expect_constant(rgb.images[2], {77, 77, 77});  // grey replicated into three channels

  const Dataset grey = read_image_folder(folder_.path(), 8, 1, classes);
  EXPECT_EQ(grey.images.sizes(), (std::vector<int64_t>{3, 1, 8, 8}));
  expect_constant(grey.images[0], {grey_of(kOrange)});
  expect_constant(grey.images[1], {grey_of(kGreen)});
  expect_constant(grey.images[2], {77});

  const Dataset small = read_image_folder(folder_.path(), 2, 3, classes);
  EXPECT_EQ(small.images.sizes(), (std::vector<int64_t>{3, 3, 2, 2}));
  expect_constant(small.images[1], {10, 250, 120});
}

TEST_F(ImageFolderReader, ResizeKeepsTheLayout) {
  // A 16x16 image whose left half is black and right half white, downscaled to 8x8, keeps its halves.
  std::vector<uint8_t> pixels(16 * 16);
  for (int y = 0; y < 16; ++y) {
    for (int x = 0; x < 16; ++x) pixels[static_cast<size_t>(y * 16 + x)] = x < 8 ? 0 : 255;
  }
  fs::create_directories(folder_ / "halves");
  ASSERT_NE(stbi_write_png((folder_ / "halves" / "h.png").c_str(), 16, 16, 1, pixels.data(), 16), 0);
  write_png(folder_ / "plain" / "p.png", 4, 4, 1, kGrey);
  std::vector<std::string> classes;
  const Dataset d = read_image_folder(folder_.path(), 8, 1, classes);
  const auto image = d.images[0][0].to(torch::kInt32);
  EXPECT_LE(image.narrow(1, 0, 3).max().item<int>(), 1);
  EXPECT_GE(image.narrow(1, 5, 3).min().item<int>(), 254);
}

TEST_F(ImageFolderReader, EmptyClassFolderIsNamed) {
  write_pets(folder_.path());
  fs::create_directories(folder_ / "emu");
  std::ofstream(folder_ / "emu" / "readme.md") << "no images here";
  std::vector<std::string> classes;
  expect_error<InputError>([&] { read_image_folder(folder_.path(), 8, 3, classes); },
                           {(folder_ / "emu").string(), "no PNG/JPEG/BMP image"});
}

TEST_F(ImageFolderReader, UndecodableImageIsNamed) {
  write_pets(folder_.path());
  std::ofstream(folder_ / "dog" / "broken.png") << "this is text, not a PNG";
  std::vector<std::string> classes;
  expect_error<InputError>([&] { read_image_folder(folder_.path(), 8, 3, classes); },
                           {(folder_ / "dog" / "broken.png").string(), "cannot decode"});
}

TEST_F(ImageFolderReader, FolderNeedsTwoClasses) {
  write_png(folder_ / "only" / "a.png", 4, 4, 3, kOrange);
  std::vector<std::string> classes;
  expect_error<InputError>([&] { read_image_folder(folder_.path(), 8, 3, classes); },
                           {folder_.path().string(), "at least 2", "found 1"});
  expect_error<InputError>([&] { read_image_folder(folder_ / "nowhere", 8, 3, classes); },
                           {(folder_ / "nowhere").string(), "does not exist"});
}

TEST_F(ImageFolderReader, LoadDataSplitsEveryClassBySeed) {
  for (int i = 0; i < 5; ++i) {
    write_png(folder_ / "cat" / ("c" + std::to_string(i) + ".png"), 6, 6, 3, Colour{uint8_t(40 * i), 0, 0});
    write_png(folder_ / "dog" / ("d" + std::to_string(i) + ".png"), 6, 6, 3, Colour{0, uint8_t(40 * i), 0});
  }
  DataConfig config;
  config.dataset = "imagefolder";
  config.path = folder_.path().string();
  config.image_size = 4;
  config.channels = 3;
  config.test_fraction = 0.4;
  config.val_fraction = 0.0;
  const DataSplits a = load_data(config, 5);
  EXPECT_EQ(a.class_names, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(a.input_shape, (Shape{3, 4, 4, false}));
  EXPECT_EQ(a.test.size(), 4);  // 2 of 5 per class
  EXPECT_EQ(a.train.size(), 6);
  EXPECT_EQ(a.val.size(), 0);
  EXPECT_EQ(a.test.labels.eq(0).sum().item<int64_t>(), 2);
  EXPECT_EQ(a.id.rfind("imagefolder@", 0), 0u) << a.id;
  const DataSplits b = load_data(config, 5);
  EXPECT_TRUE(torch::equal(a.test.images, b.test.images));
  EXPECT_TRUE(torch::equal(a.train.images, b.train.images));
  EXPECT_EQ(a.id, b.id);
}

// ---------------------------------------------------------------------------------------------------------------
// Class subsets ([data] classes)

TEST(SelectClasses, KeepsTheListedClassesInOrderAndRelabelsThem) {
  const Dataset all{torch::arange(6, torch::kInt64).to(torch::kUInt8).view({6, 1, 1, 1}),
                    torch::tensor({2, 0, 9, 5, 2, 7}, torch::kInt64)};
  const Dataset kept = select_classes(all, {2, 7});
  EXPECT_TRUE(torch::equal(kept.labels, torch::tensor({0, 0, 1}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(kept.images.flatten(), torch::tensor({0, 4, 5}, torch::kInt64).to(torch::kUInt8)));
  // The list's order gives the new labels: 7 -> 0, 2 -> 1.
  EXPECT_TRUE(torch::equal(select_classes(all, {7, 2}).labels, torch::tensor({1, 1, 0}, torch::kInt64)));
  // A listed class without samples keeps its label; an empty set stays empty.
  EXPECT_TRUE(torch::equal(select_classes(all, {3, 9}).labels, torch::tensor({1}, torch::kInt64)));
  EXPECT_EQ(select_classes(select_classes(all, {4, 6}), {0, 1}).size(), 0);
}

using ClassSubsets = DataFiles;

/// Training images per class c: c + 3; test images: c + 1 (Fashion-MNIST's class order, 10 classes).
const std::vector<int> kTrainPerClass = {3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
const std::vector<int> kTestPerClass = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

/// Every image of `d` shows (in its pixels, see labelled_pixel) the original class that its label stands for.
void expect_labels_match_pixels(const Dataset& d, const std::vector<int64_t>& classes) {
  for (int64_t i = 0; i < d.size(); ++i) {
    const int64_t label = d.labels[i].item<int64_t>();
    ASSERT_GE(label, 0);
    ASSERT_LT(label, static_cast<int64_t>(classes.size()));
    EXPECT_EQ(d.images[i][0][0][0].item<int>() / 25, classes[static_cast<size_t>(label)]) << "image " << i;
  }
}

DataConfig fake_fashion_mnist(const fs::path& root, std::vector<int64_t> classes) {
  write_fashion_mnist_folder(root, labels_with_counts(kTrainPerClass), labels_with_counts(kTestPerClass));
  DataConfig config;
  config.dataset = "fashion-mnist";
  config.path = root.string();
  config.val_fraction = 0.0;
  config.classes = std::move(classes);
  return config;
}

TEST_F(ClassSubsets, FashionMnistKeepsExactlyTheListedClassesRelabelled) {
  const std::vector<int64_t> classes = {5, 6, 7, 8, 9};
  const DataSplits d = load_data(fake_fashion_mnist(folder_ / "fmnist", classes), 3);
  EXPECT_EQ(d.class_names, (std::vector<std::string>{"sandal", "shirt", "sneaker", "bag", "ankle boot"}));
  ASSERT_EQ(d.train.size(), 8 + 9 + 10 + 11 + 12);
  ASSERT_EQ(d.test.size(), 6 + 7 + 8 + 9 + 10);
  EXPECT_EQ(d.val.size(), 0);
  for (size_t k = 0; k < classes.size(); ++k) {
    const auto c = static_cast<size_t>(classes[k]);
    EXPECT_EQ(d.train.labels.eq(static_cast<int64_t>(k)).sum().item<int64_t>(), kTrainPerClass[c]) << "class " << c;
    EXPECT_EQ(d.test.labels.eq(static_cast<int64_t>(k)).sum().item<int64_t>(), kTestPerClass[c]) << "class " << c;
  }
  expect_labels_match_pixels(d.train, classes);
  expect_labels_match_pixels(d.test, classes);

  // The whole dataset has another test split, hence another id.
  const DataSplits all = load_data(fake_fashion_mnist(folder_ / "fmnist", {}), 3);
  EXPECT_EQ(all.class_names.size(), 10u);
  EXPECT_EQ(all.test.size(), 55);
  EXPECT_NE(all.id, d.id);
}

TEST(TransformImages, ResizesAndReplicatesGreyToThreeChannels) {
  // A 4 x 4 grey image of a constant, and one with a left half dark and a right half light.
  auto images = torch::full({2, 1, 4, 4}, 100, torch::kUInt8);
  images[1].narrow(2, 2, 2).fill_(200);
  const Dataset data{images, torch::tensor({3, 7}, torch::kInt64)};
  const Dataset out = transform_images(data, 8, true);
  ASSERT_EQ(out.images.sizes(), (std::vector<int64_t>{2, 3, 8, 8}));
  EXPECT_EQ(out.images.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(torch::equal(out.labels, data.labels));
  EXPECT_TRUE(torch::equal(out.images[0], torch::full({3, 8, 8}, 100, torch::kUInt8))) << "a constant stays constant";
  EXPECT_TRUE(torch::equal(out.images[1][0], out.images[1][2])) << "the channels are copies";
  EXPECT_EQ(out.images[1][0][0][0].item<int>(), 100);
  EXPECT_EQ(out.images[1][0][0][7].item<int>(), 200);
  EXPECT_TRUE(torch::equal(transform_images(data, 0, false).images, images)) << "nothing asked, nothing done";
  EXPECT_EQ(transform_images(data, 2, false).images.sizes(), (std::vector<int64_t>{2, 1, 2, 2}));
}

TEST_F(ClassSubsets, ResizeRgbAndGivenNormalisationReachTheSplits) {
  DataConfig config = fake_fashion_mnist(folder_ / "fmnist", {});
  config.resize = 12;
  config.rgb = true;
  config.mean = {0.1, 0.2, 0.3};
  config.std = {0.5, 0.5, 0.5};
  const DataSplits d = load_data(config, 3);
  EXPECT_EQ(d.input_shape, (Shape{3, 12, 12, false}));
  for (const Dataset* split : {&d.train, &d.val, &d.test}) {
    if (split->size() > 0) {
      EXPECT_EQ(split->images.sizes().slice(1).vec(), (std::vector<int64_t>{3, 12, 12}));
    }
  }
  EXPECT_EQ(d.mean, config.mean);
  EXPECT_EQ(d.std, config.std);
  config.mean = {0.1};
  config.std = {0.5};
  expect_error<InputError>([&] { load_data(config, 3); }, {"[data] mean [0.1] and std [0.5]", "the images have 3"});
}

TEST_F(ClassSubsets, SplitsAndSubsetsTakeTheirShareOfTheKeptImages) {
  // Any order: 9 -> 0, 2 -> 1. 12 + 5 training images are kept, 10 + 3 test images.
  const std::vector<int64_t> classes = {9, 2};
  DataConfig config = fake_fashion_mnist(folder_ / "fmnist", classes);
  config.val_fraction = 0.2;
  config.train_subset = 10;
  config.test_subset = 7;
  const DataSplits d = load_data(config, 3);
  EXPECT_EQ(d.class_names, (std::vector<std::string>{"ankle boot", "pullover"}));
  EXPECT_EQ(d.val.size(), 3);     // 20% of the 17 kept, not of all 75
  EXPECT_EQ(d.train.size(), 10);  // train_subset of the 14 left
  EXPECT_EQ(d.test.size(), 7);    // test_subset of the 13 kept
  for (const Dataset* split : {&d.train, &d.val, &d.test}) expect_labels_match_pixels(*split, classes);
}

TEST_F(ClassSubsets, Cifar10KeepsTheListedClassesRelabelled) {
  // 15 training records over five batch files and 3 test records; record r's pixels are cifar_pixel(r, ...).
  const std::vector<std::vector<uint8_t>> batches = {{0, 1, 2}, {3, 4, 5}, {3, 1, 7}, {9, 3, 8}, {1, 2, 3}};
  std::vector<uint8_t> train_labels;
  for (size_t b = 0; b < batches.size(); ++b) {
    write_raw(folder_ / fmt::format("data_batch_{}.bin", b + 1),
              cifar_records(static_cast<int>(train_labels.size()), batches[b]));
    train_labels.insert(train_labels.end(), batches[b].begin(), batches[b].end());
  }
  write_raw(folder_ / "test_batch.bin", cifar_records(100, {3, 0, 1}));
  DataConfig config;
  config.dataset = "cifar10";
  config.path = folder_.path().string();
  config.val_fraction = 0.0;
  config.classes = {3, 1};
  const DataSplits d = load_data(config, 4);
  EXPECT_EQ(d.class_names, (std::vector<std::string>{"cat", "automobile"}));
  ASSERT_EQ(d.train.size(), 7);  // four 3s and three 1s
  EXPECT_EQ(d.train.labels.eq(0).sum().item<int64_t>(), 4);
  EXPECT_EQ(d.train.labels.eq(1).sum().item<int64_t>(), 3);
  for (int64_t i = 0; i < d.train.size(); ++i) {
    const int pixel = d.train.images[i][0][0][0].item<int>();
    int record = 0;  // the record whose first pixel this is (r * 31 % 256 differs for every r < 256)
    while (record < static_cast<int>(train_labels.size()) && cifar_pixel(record, 0, 0, 0) != pixel) ++record;
    ASSERT_LT(record, static_cast<int>(train_labels.size()));
    EXPECT_EQ(config.classes[static_cast<size_t>(d.train.labels[i].item<int64_t>())], train_labels[record]);
  }
  EXPECT_TRUE(torch::equal(d.test.labels, torch::tensor({0, 1}, torch::kInt64)));  // the test split keeps its order
  EXPECT_EQ(d.test.images[1][0][0][0].item<int>(), cifar_pixel(102, 0, 0, 0));
}

TEST_F(ClassSubsets, ImageFoldersKeepTheListedClassesRelabelled) {
  const std::vector<std::string> names = {"ant", "bee", "cow"};
  for (size_t c = 0; c < names.size(); ++c) {
    for (int i = 0; i < 3; ++i) {
      const auto value = static_cast<uint8_t>(60 * (c + 1));
      write_png(folder_ / names[c] / fmt::format("{}.png", i), 4, 4, 1, Colour{value, value, value});
    }
  }
  DataConfig config;
  config.dataset = "imagefolder";
  config.path = folder_.path().string();
  config.image_size = 4;
  config.channels = 1;
  config.test_fraction = 0.34;  // one image of each class
  config.val_fraction = 0.0;
  config.classes = {2, 0};
  const DataSplits d = load_data(config, 5);
  EXPECT_EQ(d.class_names, (std::vector<std::string>{"cow", "ant"}));
  ASSERT_EQ(d.train.size(), 4);
  ASSERT_EQ(d.test.size(), 2);
  for (const Dataset* split : {&d.train, &d.test}) {
    EXPECT_EQ(split->labels.eq(0).sum().item<int64_t>(), split->labels.eq(1).sum().item<int64_t>());
    for (int64_t i = 0; i < split->size(); ++i) {
      const int expected = split->labels[i].item<int64_t>() == 0 ? 180 : 60;  // cow, ant
      EXPECT_EQ(split->images[i][0][0][0].item<int>(), expected);
    }
  }
}

TEST_F(ClassSubsets, BadClassListsAreNamed) {
  DataConfig config = fake_fashion_mnist(folder_ / "fmnist", {5});
  expect_error<InputError>([&] { load_data(config, 1); }, {"[data] 'classes' = [5]", "at least 2"});
  config.classes = {5, 6, 5};
  expect_error<InputError>([&] { load_data(config, 1); }, {"[data] 'classes' = [5,6,5]", "class 5 twice"});
  config.classes = {3, 10};
  expect_error<InputError>([&] { load_data(config, 1); },
                           {"[data] 'classes' = [3,10]", "holds 10", "fashion-mnist has 10 classes (0..9)"});
  config.classes = {-1, 2};
  expect_error<InputError>([&] { load_data(config, 1); }, {"[data] 'classes' = [-1,2]", "holds -1"});

  for (const char* name : {"x", "y"}) {
    for (const char* image : {"a.png", "b.png"}) write_png(folder_ / "two" / name / image, 4, 4, 1, kGrey);
  }
  DataConfig two;
  two.dataset = "imagefolder";
  two.path = (folder_ / "two").string();
  two.classes = {0, 2};
  expect_error<InputError>([&] { load_data(two, 1); }, {"holds 2", "imagefolder has 2 classes (0..1)"});
}

// ---------------------------------------------------------------------------------------------------------------
// Fashion-MNIST (the installed dataset)

DataConfig fashion_subset() {
  DataConfig config;
  config.dataset = "fashion-mnist";
  config.train_subset = 1000;
  config.test_subset = 200;
  config.val_fraction = 0.1;
  return config;
}

TEST(FashionMnistData, SplitsAreSizedAndDeterministic) {
  const DataSplits a = load_data(fashion_subset(), 1);
  ASSERT_EQ(a.train.size(), 1000);
  EXPECT_EQ(a.val.size(), 6000);  // 10% of the 60,000 training images
  EXPECT_EQ(a.test.size(), 200);
  EXPECT_EQ(a.train.images.sizes(), (std::vector<int64_t>{1000, 1, 28, 28}));
  EXPECT_EQ(a.train.images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(a.input_shape, (Shape{1, 28, 28, false}));
  EXPECT_EQ(a.class_names.size(), 10u);
  EXPECT_EQ(a.train.labels.min().item<int64_t>(), 0);
  EXPECT_EQ(a.train.labels.max().item<int64_t>(), 9);
  // Fashion-MNIST is balanced: a random 1,000 holds about 100 of each class.
  const auto counts = torch::bincount(a.train.labels);
  EXPECT_GT(counts.min().item<int64_t>(), 60);
  EXPECT_LT(counts.max().item<int64_t>(), 140);
  // The dataset's well-known statistics are 0.286 and 0.353.
  ASSERT_EQ(a.mean.size(), 1u);
  EXPECT_NEAR(a.mean[0], 0.286, 0.02);
  EXPECT_NEAR(a.std[0], 0.353, 0.02);
  EXPECT_EQ(a.id.rfind("fashion-mnist@", 0), 0u) << a.id;
  EXPECT_EQ(a.id.size(), std::string("fashion-mnist@").size() + 12);

  const DataSplits same = load_data(fashion_subset(), 1);
  EXPECT_TRUE(torch::equal(a.train.images, same.train.images));
  EXPECT_TRUE(torch::equal(a.train.labels, same.train.labels));
  EXPECT_TRUE(torch::equal(a.val.images, same.val.images));
  EXPECT_TRUE(torch::equal(a.test.images, same.test.images));
  EXPECT_TRUE(torch::equal(a.test.labels, same.test.labels));
  EXPECT_EQ(a.mean, same.mean);
  EXPECT_EQ(a.std, same.std);
  EXPECT_EQ(a.id, same.id);

  const DataSplits other = load_data(fashion_subset(), 2);
  EXPECT_FALSE(torch::equal(a.train.images, other.train.images));
  EXPECT_FALSE(torch::equal(a.test.images, other.test.images));
  EXPECT_NE(a.id, other.id);  // the id hashes the test split
  EXPECT_NE(a.mean, other.mean);
}

TEST(FashionMnistData, FullTestSplitIdIsStable) {
  DataConfig config = fashion_subset();
  config.test_subset = 0;
  config.train_subset = 10;
  const DataSplits a = load_data(config, 1);
  const DataSplits b = load_data(config, 99);
  EXPECT_EQ(a.test.size(), 10000);
  EXPECT_EQ(a.id, b.id);  // the whole test split, whatever the seed
}

TEST(LoadData, UnknownDatasetAndMissingFolderAreNamed) {
  DataConfig config;
  config.dataset = "mnist";
  expect_error<InputError>([&] { load_data(config, 1); }, {"'mnist'"});
  config.dataset = "fashion-mnist";
  config.path = "/nonexistent/fashion";
  expect_error<InputError>([&] { load_data(config, 1); }, {"/nonexistent/fashion", "does not exist"});
}

// ---------------------------------------------------------------------------------------------------------------
// Normalisation, augmentation and batches

TEST(Normalize, ScalesThenStandardisesPerChannel) {
  const auto images = torch::tensor({0, 255, 51, 102}, torch::kUInt8).view({1, 2, 1, 2});
  const auto x = normalize_images(images, {0.5, 0.2}, {0.25, 0.1});
  EXPECT_EQ(x.scalar_type(), torch::kFloat32);
  // Channel 0: (0 - 0.5) / 0.25 = -2, (1 - 0.5) / 0.25 = 2; channel 1: (0.2 - 0.2) / 0.1 = 0, (0.4 - 0.2) / 0.1 = 2.
  EXPECT_TRUE(torch::allclose(x, torch::tensor({-2.0f, 2.0f, 0.0f, 2.0f}).view({1, 2, 1, 2}), 0, 1e-6));
}

/// True when `image` [C, H, W] is a crop of `padded` at some offset, possibly flipped left-right.
bool is_crop_of(const torch::Tensor& image, const torch::Tensor& padded, int64_t padding) {
  const int64_t h = image.size(1), w = image.size(2);
  for (int64_t dy = 0; dy <= 2 * padding; ++dy) {
    for (int64_t dx = 0; dx <= 2 * padding; ++dx) {
      const auto crop = padded.narrow(1, dy, h).narrow(2, dx, w);
      if (torch::equal(image, crop) || torch::equal(image, crop.flip({2}))) return true;
    }
  }
  return false;
}

TEST(Augment, KeepsShapeAndTypeAndIsDeterministicPerGenerator) {
  torch::manual_seed(1);
  const auto images = torch::randint(1, 256, {16, 2, 6, 6}, torch::kInt64).to(torch::kUInt8);
  torch::Generator g1 = at::detail::createCPUGenerator(42);
  torch::Generator g2 = at::detail::createCPUGenerator(42);
  torch::Generator g3 = at::detail::createCPUGenerator(43);
  const auto a = augment_images(images, 2, g1);
  const auto b = augment_images(images, 2, g2);
  const auto c = augment_images(images, 2, g3);
  EXPECT_EQ(a.sizes(), images.sizes());
  EXPECT_EQ(a.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, c));
  EXPECT_FALSE(torch::equal(a, augment_images(images, 2, g1)));  // the generator moves on
  const auto padded = torch::constant_pad_nd(images, {2, 2, 2, 2}, 0);
  int changed = 0;
  for (int64_t i = 0; i < images.size(0); ++i) {
    EXPECT_TRUE(is_crop_of(a[i], padded[i], 2)) << "sample " << i;
    changed += torch::equal(a[i], images[i]) ? 0 : 1;
  }
  EXPECT_GT(changed, 8);  // 50 equally likely crops and flips per sample: nearly all move
  // Without padding only the flip remains.
  const auto flipped = augment_images(images, 0, g3);
  for (int64_t i = 0; i < images.size(0); ++i) {
    EXPECT_TRUE(torch::equal(flipped[i], images[i]) || torch::equal(flipped[i], images[i].flip({2})));
  }
}

TEST(Batches, CoverEveryIndexExactlyOnce) {
  torch::Generator generator = at::detail::createCPUGenerator(9);
  for (bool shuffle : {false, true}) {
    const auto batches = make_batches(103, 25, shuffle, &generator);
    ASSERT_EQ(batches.size(), 5u);
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(batches[i].size(0), 25);
    EXPECT_EQ(batches[4].size(0), 3);
    const auto all = torch::cat(batches);
    EXPECT_EQ(all.scalar_type(), torch::kInt64);
    EXPECT_TRUE(torch::equal(std::get<0>(all.sort()), torch::arange(103, torch::kInt64))) << "shuffle " << shuffle;
    EXPECT_EQ(torch::equal(all, torch::arange(103, torch::kInt64)), !shuffle);
  }
  torch::Generator g1 = at::detail::createCPUGenerator(4);
  torch::Generator g2 = at::detail::createCPUGenerator(4);
  EXPECT_TRUE(torch::equal(torch::cat(make_batches(50, 8, true, &g1)), torch::cat(make_batches(50, 8, true, &g2))));
  EXPECT_EQ(make_batches(8, 8, false, nullptr).size(), 1u);
  EXPECT_TRUE(make_batches(0, 8, false, nullptr).empty());
}

}  // namespace
}  // namespace edgesweep
