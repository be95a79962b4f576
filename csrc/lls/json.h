// A small JSON reader for the pack header: objects, arrays, strings, numbers, true/false/null.
// The header is written by edgeml.lls.pack (Python) or by the C++ PackBuilder; nothing else parses it.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace edgeml::lls {

class Json {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };

  static Json parse(const std::string& text);  // throws std::runtime_error with the byte offset

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::Null; }
  bool has(const std::string& key) const;
  const Json& operator[](const std::string& key) const;  // throws when missing
  const Json& operator[](size_t i) const;
  size_t size() const;
  double num() const;
  long integer() const;
  bool boolean() const;
  const std::string& str() const;
  const std::vector<std::string>& keys() const { return keys_; }  // object keys in file order
  std::vector<long> ints() const;  // an array of integers
  // Helpers with defaults for optional fields.
  double num_or(const std::string& key, double fallback) const;
  long int_or(const std::string& key, long fallback) const;
  std::string str_or(const std::string& key, const std::string& fallback) const;

 private:
  Kind kind_ = Kind::Null;
  bool bool_ = false;
  double num_ = 0.0;
  std::string str_;
  std::vector<Json> items_;
  std::vector<std::string> keys_;
  std::map<std::string, size_t> index_;
  friend class JsonParser;
};

}  // namespace edgeml::lls
