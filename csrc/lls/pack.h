// The LLS weight pack: one file, a JSON header and 64-byte-aligned little-endian tensors, CRC32-checked.
//
//   offset 0   magic "EDGELLS\0" (8 bytes)
//          8   u32 format version (kPackVersion)      12  u32 reserved (0)
//         16   u64 header_len                        24  u64 data_len
//         32   header JSON (UTF-8), zero-padded to a multiple of 64 -> data_off
//   data_off   tensor data; each tensor at header.tensors[name].offset (relative to data_off, 64-aligned)
//   data_off + data_len   u32 CRC-32 (zlib polynomial) of every byte before it
//
// Written by edgeml.lls.pack.write_pack (Python) and by write_pack below; read by both.
#pragma once
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "lls/json.h"

namespace edgeml::lls {

constexpr uint32_t kPackVersion = 1;
constexpr size_t kPackAlign = 64;
constexpr size_t kPreamble = 32;

// Every problem with a pack or data file: the message names the file, the problem and the fix.
struct PackError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class DType { F32, I8 };

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<long> shape;
  uint64_t offset = 0;  // relative to the data section
  uint64_t nbytes = 0;
  long numel() const;
};

struct Pack {
  std::string path;
  std::string header_text;
  Json header;
  std::vector<TensorInfo> tensors;  // in file order
  std::vector<uint8_t> data;        // the data section
  const TensorInfo& tensor(const std::string& name) const;  // throws PackError when missing
  bool has_tensor(const std::string& name) const;
  const void* bytes(const TensorInfo& t) const { return data.data() + t.offset; }
};

uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc = 0);

// Reads and validates a pack: magic, version (newer -> error saying to update), size (truncation),
// checksum (tampering), header JSON, tensor table bounds. Never writes to `path`.
Pack read_pack(const std::string& path);

// One tensor to write: raw little-endian bytes.
struct TensorBlob {
  std::string name;
  DType dtype = DType::F32;
  std::vector<long> shape;
  const void* data = nullptr;
};

// Builds a pack: `header_fields` is the JSON text of an object WITHOUT the "tensors" table (it is added here,
// with offsets); the file is written to a temp sibling, fsynced and renamed over `path`.
void write_pack(const std::string& path, const std::string& header_fields, const std::vector<TensorBlob>& tensors);

// Writes `pack` (its header text unchanged) with a new data section, atomically.
void write_pack_data(const std::string& path, const Pack& pack, const std::vector<uint8_t>& data);

// Atomic file write: temp sibling + fsync + rename; the temp file is removed on failure.
void atomic_write_file(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace edgeml::lls
