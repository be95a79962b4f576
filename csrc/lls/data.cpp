#include "lls/data.h"

#include <sys/stat.h>

#include <cstdint>
#include <fstream>
#include <iterator>

#include "lls/pack.h"

namespace edgeml::lls {

namespace {

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string images_path(const std::string& dir, const std::string& split) {
  for (const char* v : {"idx3", "idx4"}) {
    const std::string p = dir + "/" + split + "-images-" + v + "-ubyte";
    if (exists(p)) return p;
  }
  return dir + "/" + split + "-images-idx3-ubyte";
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw PackError(path + ": data file not found (the data folder needs uncompressed IDX files: "
                           "train-images-idx3-ubyte and train-labels-idx1-ubyte; gunzip .gz files first)");
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// Returns the dims; checks magic (0x00 0x00 0x08 ndim) and that the payload size matches.
std::vector<uint32_t> idx_dims(const std::string& path, const std::vector<uint8_t>& f) {
  if (f.size() < 4 || f[0] != 0 || f[1] != 0 || f[2] != 0x08 || f[3] < 1 || f[3] > 4)
    throw PackError(path + ": not an uint8 IDX file (bad magic)");
  const int nd = f[3];
  if (f.size() < 4u + 4u * nd) throw PackError(path + ": truncated IDX header");
  std::vector<uint32_t> dims;
  uint64_t count = 1;
  for (int i = 0; i < nd; ++i) {
    dims.push_back(be32(f.data() + 4 + 4 * i));
    // Checked before multiplying: a wrapped product could match the file size and index out of bounds.
    if (dims.back() < 1 || dims.back() > INT32_MAX || dims.back() > f.size() / count)
      throw PackError(path + ": IDX dimension " + std::to_string(i) + " is " + std::to_string(dims.back()) +
                      ", which the file size cannot hold (truncated or corrupt)");
    count *= dims.back();
  }
  if (f.size() != 4u + 4u * nd + count)
    throw PackError(path + ": IDX payload is " + std::to_string(f.size() - 4 - 4 * nd) + " bytes, the header says " +
                    std::to_string(count) + " (truncated or corrupt)");
  return dims;
}

}  // namespace

bool idx_split_exists(const std::string& dir, const std::string& split) {
  return exists(images_path(dir, split)) && exists(dir + "/" + split + "-labels-idx1-ubyte");
}

ImageSet read_idx_split(const std::string& dir, const std::string& split) {
  const std::string ip = images_path(dir, split), lp = dir + "/" + split + "-labels-idx1-ubyte";
  std::vector<uint8_t> fi = read_file(ip), fl = read_file(lp);
  const auto di = idx_dims(ip, fi), dl = idx_dims(lp, fl);
  if (di.size() != 3 && di.size() != 4) throw PackError(ip + ": images must be [N, H, W] or [N, H, W, C]");
  if (dl.size() != 1) throw PackError(lp + ": labels must be [N]");
  if (di[0] != dl[0])
    throw PackError(ip + ": " + std::to_string(di[0]) + " images but " + std::to_string(dl[0]) + " labels in " + lp);
  ImageSet s;
  s.n = static_cast<int>(di[0]), s.h = static_cast<int>(di[1]), s.w = static_cast<int>(di[2]);
  s.c = di.size() == 4 ? static_cast<int>(di[3]) : 1;
  const size_t off = 4 + 4 * di.size();
  s.pixels.assign(fi.begin() + static_cast<long>(off), fi.end());
  s.labels.reserve(dl[0]);
  for (size_t i = 0; i < dl[0]; ++i) s.labels.push_back(fl[8 + i]);
  return s;
}

}  // namespace edgeml::lls
