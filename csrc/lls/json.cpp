#include "lls/json.h"

#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace edgeml::lls {

class JsonParser {
 public:
  explicit JsonParser(const std::string& s) : s_(s) {}

  Json document() {
    Json v = value(0);
    skip();
    if (pos_ != s_.size()) fail("trailing characters after the JSON value");
    return v;
  }

 private:
  const std::string& s_;
  size_t pos_ = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("pack header JSON: " + what + " at byte " + std::to_string(pos_));
  }
  void skip() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) ++pos_;
  }
  bool eat(char c) {
    skip();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("expected '") + c + "'");
  }
  bool literal(const char* word) {
    size_t n = std::char_traits<char>::length(word);
    if (s_.compare(pos_, n, word) == 0) {
      pos_ += n;
      return true;
    }
    return false;
  }

  Json value(int depth) {
    if (depth > 64) fail("nesting deeper than 64");
    skip();
    if (pos_ >= s_.size()) fail("unexpected end");
    Json v;
    char c = s_[pos_];
    if (c == '{') {
      ++pos_;
      v.kind_ = Json::Kind::Object;
      if (eat('}')) return v;
      do {
        skip();
        std::string key = string();
        expect(':');
        if (v.index_.count(key)) fail("duplicate key '" + key + "'");
        v.index_[key] = v.items_.size();
        v.keys_.push_back(key);
        v.items_.push_back(value(depth + 1));
      } while (eat(','));
      expect('}');
    } else if (c == '[') {
      ++pos_;
      v.kind_ = Json::Kind::Array;
      if (eat(']')) return v;
      do {
        v.items_.push_back(value(depth + 1));
      } while (eat(','));
      expect(']');
    } else if (c == '"') {
      v.kind_ = Json::Kind::String;
      v.str_ = string();
    } else if (literal("true")) {
      v.kind_ = Json::Kind::Bool;
      v.bool_ = true;
    } else if (literal("false")) {
      v.kind_ = Json::Kind::Bool;
    } else if (literal("null")) {
      v.kind_ = Json::Kind::Null;
    } else if (literal("NaN")) {
      v.kind_ = Json::Kind::Number;
      v.num_ = NAN;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind_ = Json::Kind::Number;
      const char* start = s_.c_str() + pos_;
      char* end = nullptr;
      v.num_ = std::strtod(start, &end);
      if (end == start) fail("bad number");
      pos_ += static_cast<size_t>(end - start);
    } else {
      fail(std::string("unexpected character '") + c + "'");
    }
    return v;
  }

  std::string string() {
    if (pos_ >= s_.size() || s_[pos_] != '"') fail("expected a string");
    ++pos_;
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      char c = s_[pos_++];
      if (c == '"') break;
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated escape");
      char e = s_[pos_++];
      switch (e) {
        case 'n': out.push_back('\n'); break;
        case 't': out.push_back('\t'); break;
        case 'r': out.push_back('\r'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'u': {
          if (pos_ + 4 > s_.size()) fail("bad \\u escape");
          unsigned code = static_cast<unsigned>(std::strtoul(s_.substr(pos_, 4).c_str(), nullptr, 16));
          pos_ += 4;
          // Header names are ASCII; anything else is kept as UTF-8 for the BMP.
          if (code < 0x80) {
            out.push_back(static_cast<char>(code));
          } else if (code < 0x800) {
            out.push_back(static_cast<char>(0xC0 | (code >> 6)));
            out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
          } else {
            out.push_back(static_cast<char>(0xE0 | (code >> 12)));
            out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
            out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
          }
          break;
        }
        default: out.push_back(e);
      }
    }
    return out;
  }
};

Json Json::parse(const std::string& text) { return JsonParser(text).document(); }

bool Json::has(const std::string& key) const { return kind_ == Kind::Object && index_.count(key) > 0; }

const Json& Json::operator[](const std::string& key) const {
  if (kind_ != Kind::Object) throw std::runtime_error("pack header: '" + key + "' looked up in a non-object");
  auto it = index_.find(key);
  if (it == index_.end()) throw std::runtime_error("pack header: missing field '" + key + "'");
  return items_[it->second];
}

const Json& Json::operator[](size_t i) const {
  if (kind_ != Kind::Array || i >= items_.size()) throw std::runtime_error("pack header: index out of range");
  return items_[i];
}

size_t Json::size() const { return items_.size(); }

double Json::num() const {
  if (kind_ != Kind::Number) throw std::runtime_error("pack header: expected a number");
  return num_;
}

long Json::integer() const {
  const double v = num();
  // Beyond 2^53 a double no longer holds every integer (and beyond 2^63 the cast is undefined).
  if (!std::isfinite(v) || v != std::floor(v) || std::fabs(v) > 9007199254740992.0)
    throw std::runtime_error("pack header: expected an integer of magnitude <= 2^53");
  return static_cast<long>(v);
}

bool Json::boolean() const {
  if (kind_ != Kind::Bool) throw std::runtime_error("pack header: expected true/false");
  return bool_;
}

const std::string& Json::str() const {
  if (kind_ != Kind::String) throw std::runtime_error("pack header: expected a string");
  return str_;
}

std::vector<long> Json::ints() const {
  std::vector<long> out;
  if (kind_ == Kind::Number) return {integer()};
  if (kind_ != Kind::Array) throw std::runtime_error("pack header: expected an array of integers");
  for (const Json& j : items_) out.push_back(j.integer());
  return out;
}

double Json::num_or(const std::string& key, double fallback) const {
  return has(key) && !(*this)[key].is_null() ? (*this)[key].num() : fallback;
}
long Json::int_or(const std::string& key, long fallback) const {
  return has(key) && !(*this)[key].is_null() ? (*this)[key].integer() : fallback;
}
std::string Json::str_or(const std::string& key, const std::string& fallback) const {
  return has(key) && !(*this)[key].is_null() ? (*this)[key].str() : fallback;
}

}  // namespace edgeml::lls
