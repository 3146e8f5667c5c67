#include "text/token_decoder.hpp"

#include "text/byte_level.hpp"
#include "text/json_fields.hpp"
#include "text/onig_regex.hpp"
#include "text/unicode.hpp"

#include <fmt/format.h>

namespace persona::text {
namespace {

class SequenceDecoder final : public TokenDecoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<TokenDecoder>> parts) : parts_(std::move(parts)) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts_) p->apply(tokens);
  }
  bool joins_bytes() const noexcept override {
    for (const auto& p : parts_) {
      if (p->joins_bytes()) return true;
    }
    return false;
  }

 private:
  std::vector<std::unique_ptr<TokenDecoder>> parts_;
};

// Each token's code points back to their bytes (a token with one outside the alphabet, such as an added
// token, is kept as it is), then the whole as UTF-8 with ill-formed parts replaced.
class ByteLevelDecoder final : public TokenDecoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& t : tokens) {
      const std::size_t mark = bytes.size();
      bool all = true;
      for (std::size_t i = 0; i < t.size() && all;) {
        const auto b = unicode_to_byte(next_code_point(t, i));
        if (b) {
          bytes.push_back(static_cast<char>(*b));
        } else {
          all = false;
        }
      }
      if (!all) {
        bytes.resize(mark);
        bytes.append(t);
      }
    }
    tokens.assign(1, valid_utf8(bytes));
  }
  bool joins_bytes() const noexcept override { return true; }
};

class MetaspaceDecoder final : public TokenDecoder {
 public:
  MetaspaceDecoder(std::string replacement, bool prepended)
      : replacement_(std::move(replacement)), prepended_(prepended) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      for (std::size_t at = 0; at < t.size();) {
        if (t.compare(at, replacement_.size(), replacement_) == 0) {
          if (!(i == 0 && prepended_)) out.push_back(' ');
          at += replacement_.size();
        } else {
          out.push_back(t[at++]);
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool prepended_;
};

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
  return s;
}

class WordPieceDecoder final : public TokenDecoder {
 public:
  WordPieceDecoder(std::string prefix, bool cleanup) : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      if (i != 0) t = t.starts_with(prefix_) ? t.substr(prefix_.size()) : " " + t;
      if (!cleanup_) continue;
      for (const auto& [from, to] :
           {std::pair{" .", "."}, std::pair{" ?", "?"}, std::pair{" !", "!"}, std::pair{" ,", ","},
            std::pair{" ' ", "'"}, std::pair{" n't", "n't"}, std::pair{" 'm", "'m"}, std::pair{" do not", " don't"},
            std::pair{" 's", "'s"}, std::pair{" 've", "'ve"}, std::pair{" 're", "'re"}}) {
        t = replace_all(std::move(t), from, to);
      }
    }
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

class ReplaceDecoder final : public TokenDecoder {
 public:
  ReplaceDecoder(const std::string& pattern, std::string content, std::string_view where)
      : regex_(pattern, where), content_(std::move(content)) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) regex_.replace_all(t, content_);
  }

 private:
  OnigRegex regex_;
  std::string content_;
};

// Runs of <0xXX> tokens become their bytes' text if it is valid UTF-8, else one U+FFFD per byte.
class ByteFallbackDecoder final : public TokenDecoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    std::size_t count = 0;
    const auto flush = [&] {
      if (count == 0) return;
      if (valid_utf8(bytes) == bytes) {
        out.push_back(bytes);
      } else {
        for (std::size_t i = 0; i < count; ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      count = 0;
    };
    for (std::string& t : tokens) {
      if (const auto b = byte_of(t)) {
        bytes.push_back(static_cast<char>(*b));
        ++count;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
  bool joins_bytes() const noexcept override { return true; }

  static std::optional<unsigned> byte_of(std::string_view t) {
    if (t.size() != 6 || !t.starts_with("<0x") || t.back() != '>') return std::nullopt;
    unsigned v = 0;
    for (const char c : t.substr(3, 2)) {
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= static_cast<unsigned>(c - '0');
      } else if (c >= 'A' && c <= 'F') {
        v |= static_cast<unsigned>(c - 'A' + 10);
      } else if (c >= 'a' && c <= 'f') {
        v |= static_cast<unsigned>(c - 'a' + 10);
      } else {
        return std::nullopt;
      }
    }
    return v;
  }
};

class FuseDecoder final : public TokenDecoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Up to `start` leading and `stop` trailing `content` characters off each token.
class StripDecoder final : public TokenDecoder {
 public:
  StripDecoder(char32_t content, std::size_t start, std::size_t stop) : content_(content), start_(start), stop_(stop) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      std::vector<std::pair<std::size_t, char32_t>> chars;  // byte offset, code point
      for (std::size_t i = 0; i < t.size();) {
        const std::size_t at = i;
        chars.emplace_back(at, next_code_point(t, i));
      }
      std::size_t cut_start = 0, cut_stop = chars.size();
      for (std::size_t i = 0; i < std::min(start_, chars.size()) && chars[i].second == content_; ++i) cut_start = i + 1;
      for (std::size_t i = 0; i < stop_ && i < chars.size(); ++i) {
        const std::size_t index = chars.size() - i - 1;
        if (chars[index].second != content_) break;
        cut_stop = index;
      }
      if (cut_stop < cut_start) cut_stop = cut_start;
      const std::size_t b = cut_start < chars.size() ? chars[cut_start].first : t.size();
      const std::size_t e = cut_stop < chars.size() ? chars[cut_stop].first : t.size();
      t = t.substr(b, e - b);
    }
  }

 private:
  char32_t content_;
  std::size_t start_, stop_;
};

class BpeSuffixDecoder final : public TokenDecoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = replace_all(std::move(tokens[i]), suffix_, i + 1 == tokens.size() ? "" : " ");
    }
  }

 private:
  std::string suffix_;
};

}  // namespace

std::unique_ptr<TokenDecoder> make_token_decoder(const nlohmann::json& spec, std::string_view source) {
  if (spec.is_null()) return nullptr;
  const std::string where = fmt::format("{}: decoder", source);
  const std::string type = type_of(spec, where);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<TokenDecoder>> parts;
    for (const nlohmann::json& part : field<nlohmann::json>(spec, "decoders", where)) {
      if (auto d = make_token_decoder(part, source)) parts.push_back(std::move(d));
    }
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    bool prepended = true;
    if (spec.contains("prepend_scheme")) {
      prepended = field<std::string>(spec, "prepend_scheme", where) != "never";
    } else {
      prepended = field_or<bool>(spec, "add_prefix_space", true, where);
    }
    return std::make_unique<MetaspaceDecoder>(field_or<std::string>(spec, "replacement", "\xE2\x96\x81", where),
                                              prepended);
  }
  if (type == "WordPiece") {
    return std::make_unique<WordPieceDecoder>(field_or<std::string>(spec, "prefix", "##", where),
                                              field_or<bool>(spec, "cleanup", true, where));
  }
  if (type == "Replace") {
    return std::make_unique<ReplaceDecoder>(pattern_regex(field<nlohmann::json>(spec, "pattern", where), where),
                                            field<std::string>(spec, "content", where), where);
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    const std::string content = field<std::string>(spec, "content", where);
    std::size_t i = 0;
    const char32_t c = content.empty() ? U' ' : next_code_point(content, i);
    if (content.empty() || i != content.size()) {
      PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: Strip content '{}' is not one character", where, content);
    }
    return std::make_unique<StripDecoder>(c, field_or<std::size_t>(spec, "start", 0, where),
                                          field_or<std::size_t>(spec, "stop", 0, where));
  }
  if (type == "BPEDecoder")
    return std::make_unique<BpeSuffixDecoder>(field_or<std::string>(spec, "suffix", "</w>", where));
  PERSONA_THROW_AT(kTokenizerLoad, unsupported,
                   "{}: decoder type '{}' is not supported (persona reads Sequence, ByteLevel, Metaspace, WordPiece, "
                   "Replace, ByteFallback, Fuse, Strip and BPEDecoder)",
                   source, type);
}

}  // namespace persona::text
