#include "lls/pack.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace edgeml::lls {

namespace {

const char kMagic[8] = {'E', 'D', 'G', 'E', 'L', 'L', 'S', '\0'};

uint64_t align_up(uint64_t v) { return (v + kPackAlign - 1) / kPackAlign * kPackAlign; }

template <typename T>
T read_le(const uint8_t* p) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(p[i]) << (8 * i);
  return v;
}

template <typename T>
void put_le(std::vector<uint8_t>& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<uint8_t>((v >> (8 * i)) & 0xFF));
}

bool little_endian_host() {
  const uint16_t one = 1;
  uint8_t first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

size_t dtype_size(DType d) { return d == DType::F32 ? 4 : 1; }
const char* dtype_name(DType d) { return d == DType::F32 ? "f32" : "i8"; }

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

}  // namespace

long TensorInfo::numel() const {
  long n = 1;
  for (long d : shape) n *= d;  // read_pack bounds every dim and the product by the data section
  return n;
}

uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc) {
  static uint32_t table[256];
  static bool ready = false;
  if (!ready) {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    ready = true;
  }
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

const TensorInfo& Pack::tensor(const std::string& name) const {
  for (const TensorInfo& t : tensors)
    if (t.name == name) return t;
  throw PackError(path + ": the pack has no tensor '" + name + "' (rewrite it with edgeml.lls.pack.write_pack)");
}

bool Pack::has_tensor(const std::string& name) const {
  for (const TensorInfo& t : tensors)
    if (t.name == name) return true;
  return false;
}

Pack read_pack(const std::string& path) {
  if (!little_endian_host()) throw PackError(path + ": this engine needs a little-endian host");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw PackError(path + ": cannot open the pack (" + std::strerror(errno) + "); check the path");
  std::vector<uint8_t> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string fix = "; write it again with edgeml.lls.pack.write_pack";
  if (file.size() < kPreamble || std::memcmp(file.data(), kMagic, 8) != 0)
    throw PackError(path + ": not an edgeml LLS pack (bad magic or shorter than the 32-byte preamble)" + fix);
  const uint32_t version = read_le<uint32_t>(file.data() + 8);
  if (version > kPackVersion)
    throw PackError(path + ": pack format version " + std::to_string(version) + " is newer than this engine (" +
                    std::to_string(kPackVersion) + "); update edgeml / edgeml-finetune on this device");
  if (version == 0) throw PackError(path + ": pack format version 0 is invalid" + fix);
  const uint64_t header_len = read_le<uint64_t>(file.data() + 16);
  const uint64_t data_len = read_le<uint64_t>(file.data() + 24);
  if (header_len > (1ull << 32) || data_len > (1ull << 40))
    throw PackError(path + ": implausible header/data sizes in the preamble (corrupt pack)" + fix);
  const uint64_t data_off = align_up(kPreamble + header_len);
  const uint64_t expected = data_off + data_len + 4;
  if (file.size() < expected)
    throw PackError(path + ": truncated pack (" + std::to_string(file.size()) + " bytes, expected " +
                    std::to_string(expected) + ")" + fix);
  if (file.size() > expected)
    throw PackError(path + ": " + std::to_string(file.size() - expected) + " unexpected bytes after the pack" + fix);
  const uint32_t stored = read_le<uint32_t>(file.data() + data_off + data_len);
  const uint32_t actual = crc32(file.data(), data_off + data_len);
  if (stored != actual)
    throw PackError(path + ": checksum mismatch (the pack was modified or corrupted)" + fix);

  Pack pack;
  pack.path = path;
  pack.header_text.assign(reinterpret_cast<const char*>(file.data() + kPreamble), header_len);
  try {
    pack.header = Json::parse(pack.header_text);
    const Json& table = pack.header["tensors"];
    for (const std::string& name : table.keys()) try {
      const Json& e = table[name];
      TensorInfo t;
      t.name = name;
      const std::string dt = e["dtype"].str();
      if (dt == "f32") t.dtype = DType::F32;
      else if (dt == "i8") t.dtype = DType::I8;
      else throw PackError(path + ": tensor '" + name + "' has unsupported dtype '" + dt + "'");
      if (e["shape"].kind() != Json::Kind::Array)
        throw PackError(path + ": tensor '" + name + "' has no shape list" + fix);
      t.shape = e["shape"].ints();
      const long offset = e["offset"].integer(), nbytes = e["nbytes"].integer();
      // Every dim >= 1 and the element count bounded by the data section before anything multiplies them.
      uint64_t count = 1;
      bool ok = offset >= 0 && nbytes >= 0 && t.shape.size() <= 8;
      for (size_t k = 0; ok && k < t.shape.size(); ++k) {
        ok = t.shape[k] >= 1 && static_cast<uint64_t>(t.shape[k]) <= data_len / dtype_size(t.dtype) / count;
        if (ok) count *= static_cast<uint64_t>(t.shape[k]);
      }
      t.offset = static_cast<uint64_t>(offset);
      t.nbytes = static_cast<uint64_t>(nbytes);
      if (!ok || t.nbytes != count * dtype_size(t.dtype) || t.offset % kPackAlign != 0 || t.offset > data_len ||
          t.nbytes > data_len - t.offset)
        throw PackError(path + ": tensor '" + name + "' has an inconsistent shape/offset/size" + fix);
      pack.tensors.push_back(t);
    } catch (const PackError&) {
      throw;
    } catch (const std::exception& e) {
      throw PackError(path + ": tensor '" + name + "': " + e.what() + fix);
    }
  } catch (const PackError&) {
    throw;
  } catch (const std::exception& e) {
    throw PackError(path + ": " + e.what() + fix);
  }
  pack.data.assign(file.begin() + static_cast<long>(data_off), file.begin() + static_cast<long>(data_off + data_len));
  return pack;
}

void atomic_write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  std::string tmp = dir + "/." + base + ".XXXXXX";
  std::vector<char> name(tmp.begin(), tmp.end());
  name.push_back('\0');
  const int fd = mkstemp(name.data());
  if (fd < 0) throw PackError(path + ": cannot create a temporary file beside it (" + std::strerror(errno) + ")");
  tmp = name.data();
  size_t done = 0;
  bool ok = true;
  while (ok && done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    ok = w > 0;
    if (ok) done += static_cast<size_t>(w);
  }
  const int err = errno;
  ok = ok && ::fsync(fd) == 0;
  ok = (::close(fd) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw PackError(path + ": writing failed (" + std::strerror(err ? err : errno) + "); nothing was replaced");
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

namespace {

std::vector<uint8_t> assemble(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out(kMagic, kMagic + 8);
  put_le<uint32_t>(out, kPackVersion);
  put_le<uint32_t>(out, 0);
  put_le<uint64_t>(out, header.size());
  put_le<uint64_t>(out, data.size());
  out.insert(out.end(), header.begin(), header.end());
  out.resize(align_up(out.size()), 0);
  out.insert(out.end(), data.begin(), data.end());
  put_le<uint32_t>(out, crc32(out.data(), out.size()));
  return out;
}

}  // namespace

void write_pack(const std::string& path, const std::string& header_fields, const std::vector<TensorBlob>& tensors) {
  std::ostringstream table;
  std::vector<uint8_t> data;
  table << "\"tensors\": {";
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorBlob& t = tensors[i];
    long numel = 1;
    for (long d : t.shape) numel *= d;
    const size_t nbytes = static_cast<size_t>(numel) * dtype_size(t.dtype);
    const size_t offset = data.size();
    const auto* p = static_cast<const uint8_t*>(t.data);
    data.insert(data.end(), p, p + nbytes);
    data.resize(align_up(data.size()), 0);
    table << (i ? ", " : "") << "\"" << json_escape(t.name) << "\": {\"dtype\": \"" << dtype_name(t.dtype)
          << "\", \"shape\": [";
    for (size_t k = 0; k < t.shape.size(); ++k) table << (k ? ", " : "") << t.shape[k];
    table << "], \"offset\": " << offset << ", \"nbytes\": " << nbytes << "}";
  }
  table << "}";
  std::string fields = header_fields;
  const size_t close = fields.find_last_of('}');
  if (close == std::string::npos) throw PackError(path + ": header fields must be a JSON object");
  const bool empty = fields.find_first_not_of(" \n\t{", 0) == close;
  fields = fields.substr(0, close) + (empty ? "" : ", ") + table.str() + "}";
  atomic_write_file(path, assemble(fields, data));
}

void write_pack_data(const std::string& path, const Pack& pack, const std::vector<uint8_t>& data) {
  atomic_write_file(path, assemble(pack.header_text, data));
}

}  // namespace edgeml::lls
