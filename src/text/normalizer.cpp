// Each normalizer as Hugging Face tokenizers' normalizers/*.rs does it, on the whole piece.
#include "text/normalizer.hpp"

#include "text/byte_level.hpp"
#include "text/json_fields.hpp"
#include "text/onig_regex.hpp"
#include "text/unicode.hpp"

#include <fmt/format.h>

#include <vector>

namespace persona::text {
namespace {

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  void apply(std::string& text) const override {
    for (const auto& p : parts_) p->apply(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  void apply(std::string& text) const override { text = normalize(text, form_); }

 private:
  NormalForm form_;
};

// Keeps the code points `keep` accepts, mapped by `map`.
template <class Keep, class Map>
void rewrite(std::string& text, Keep keep, Map map) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const char32_t c = next_code_point(text, i);
    if (keep(c)) map(out, c);
  }
  text = std::move(out);
}

class LowercaseNormalizer final : public Normalizer {
 public:
  void apply(std::string& text) const override {
    rewrite(
        text, [](char32_t) { return true; }, [](std::string& out, char32_t c) { append_lowercase(out, c); });
  }
};

class StripAccentsNormalizer final : public Normalizer {
 public:
  void apply(std::string& text) const override {
    rewrite(
        text, [](char32_t c) { return !is_nonspacing_mark(c); }, append_utf8);
  }
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void apply(std::string& text) const override {
    std::size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        std::size_t next = begin;
        if (!is_whitespace(next_code_point(text, next))) break;
        begin = next;
      }
    }
    if (right_) {
      while (end > begin) {
        std::size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        std::size_t at = start;
        if (!is_whitespace(next_code_point(text, at))) break;
        end = start;
      }
    }
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(const std::string& pattern, std::string content, std::string_view where)
      : regex_(pattern, where), content_(std::move(content)) {}
  void apply(std::string& text) const override { regex_.replace_all(text, content_); }

 private:
  OnigRegex regex_;
  std::string content_;
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void apply(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class ByteLevelNormalizer final : public Normalizer {
 public:
  void apply(std::string& text) const override { text = bytes_to_unicode(text); }
};

bool is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// BERT's: control characters out and whitespace to spaces, CJK ideographs spaced, accents stripped
// (NFD, then no nonspacing marks), lowercase; strip_accents null follows lowercase.
class BertNormalizer final : public Normalizer {
 public:
  BertNormalizer(bool clean_text, bool chinese, bool strip_accents, bool lowercase)
      : clean_text_(clean_text), chinese_(chinese), strip_accents_(strip_accents), lowercase_(lowercase) {}
  void apply(std::string& text) const override {
    if (clean_text_) {
      rewrite(
          text,
          [](char32_t c) {
            const bool control = c != U'\t' && c != U'\n' && c != U'\r' && is_other(c);
            return !(c == 0 || c == 0xFFFD || control);
          },
          [](std::string& out, char32_t c) { append_utf8(out, is_whitespace(c) ? U' ' : c); });
    }
    if (chinese_) {
      rewrite(
          text, [](char32_t) { return true; },
          [](std::string& out, char32_t c) {
            if (!is_chinese_char(c)) return append_utf8(out, c);
            out.push_back(' ');
            append_utf8(out, c);
            out.push_back(' ');
          });
    }
    if (strip_accents_) {
      text = normalize(text, NormalForm::nfd);
      rewrite(
          text, [](char32_t c) { return !is_nonspacing_mark(c); }, append_utf8);
    }
    if (lowercase_) LowercaseNormalizer().apply(text);
  }

 private:
  bool clean_text_, chinese_, strip_accents_, lowercase_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& spec, std::string_view source) {
  if (spec.is_null()) return nullptr;
  const std::string where = fmt::format("{}: normalizer", source);
  const std::string type = type_of(spec, where);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (const nlohmann::json& part : field<nlohmann::json>(spec, "normalizers", where)) {
      if (auto n = make_normalizer(part, source)) parts.push_back(std::move(n));
    }
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::nfc);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::nfd);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::nfkc);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::nfkd);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(field_or<bool>(spec, "strip_left", true, where),
                                             field_or<bool>(spec, "strip_right", true, where));
  }
  if (type == "Replace") {
    return std::make_unique<ReplaceNormalizer>(pattern_regex(field<nlohmann::json>(spec, "pattern", where), where),
                                               field<std::string>(spec, "content", where), where);
  }
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(field<std::string>(spec, "prepend", where));
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  if (type == "BertNormalizer") {
    const bool lowercase = field_or<bool>(spec, "lowercase", true, where);
    return std::make_unique<BertNormalizer>(field_or<bool>(spec, "clean_text", true, where),
                                            field_or<bool>(spec, "handle_chinese_chars", true, where),
                                            field_or<bool>(spec, "strip_accents", lowercase, where), lowercase);
  }
  PERSONA_THROW_AT(kTokenizerLoad, unsupported,
                   "{}: normalizer type '{}' is not supported (persona reads Sequence, NFC, NFD, NFKC, NFKD, "
                   "Lowercase, StripAccents, Strip, Replace, Prepend, ByteLevel and BertNormalizer)",
                   source, type);
}

}  // namespace persona::text
