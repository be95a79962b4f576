// Device data for the standalone fine-tuner: uncompressed IDX files (the MNIST / Fashion-MNIST layout).
// Images: idx3 uint8 [N, H, W] (one channel) or idx4 uint8 [N, H, W, C]; labels: idx1 uint8 [N].
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace edgeml::lls {

struct ImageSet {
  std::vector<uint8_t> pixels;  // [n, h, w, c]
  std::vector<int32_t> labels;  // [n]
  int n = 0, h = 0, w = 0, c = 1;
};

// Reads `<dir>/<split>-images-idx?-ubyte` and `<dir>/<split>-labels-idx1-ubyte` (split: "train" | "t10k").
// Throws PackError naming the file for a missing file, a bad header, a size mismatch or mismatched counts.
ImageSet read_idx_split(const std::string& dir, const std::string& split);
bool idx_split_exists(const std::string& dir, const std::string& split);

}  // namespace edgeml::lls
