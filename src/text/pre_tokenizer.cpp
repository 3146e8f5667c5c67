#include "text/pre_tokenizer.hpp"

#include "text/byte_level.hpp"
#include "text/json_fields.hpp"
#include "text/onig_regex.hpp"
#include "text/unicode.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <vector>

namespace persona::text {
namespace {

using Ranges = std::vector<std::pair<std::size_t, std::size_t>>;
enum class Behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

Behavior parse_behavior(const std::string& name, std::string_view where) {
  if (name == "Removed") return Behavior::removed;
  if (name == "Isolated") return Behavior::isolated;
  if (name == "MergedWithPrevious") return Behavior::merged_with_previous;
  if (name == "MergedWithNext") return Behavior::merged_with_next;
  if (name == "Contiguous") return Behavior::contiguous;
  PERSONA_THROW_AT(kTokenizerLoad, corrupt_data,
                   "{}: behavior '{}' is not one of Removed, Isolated, MergedWithPrevious, "
                   "MergedWithNext, Contiguous",
                   where, name);
}

// The whole text as (range, is_match) runs from a piece's matches (NormalizedString::split).
std::vector<std::pair<std::pair<std::size_t, std::size_t>, bool>> runs(const Ranges& matches, std::size_t size) {
  std::vector<std::pair<std::pair<std::size_t, std::size_t>, bool>> out;
  std::size_t prev = 0;
  for (const auto& m : matches) {
    if (prev != m.first) out.push_back({{prev, m.first}, false});
    out.push_back({m, true});
    prev = m.second;
  }
  if (prev != size) out.push_back({{prev, size}, false});
  return out;
}

// Splits `piece` at `matches` the way `behavior` says, appending the non-empty parts to `out`.
void split_piece(const Piece& piece, const Ranges& matches, Behavior behavior, Pieces& out) {
  const auto all = runs(matches, piece.text.size());
  std::vector<std::pair<std::size_t, std::size_t>> parts;  // kept ranges
  bool previous_match = false;
  switch (behavior) {
    case Behavior::removed:
      for (const auto& [r, is_match] : all) {
        if (!is_match) parts.push_back(r);
      }
      break;
    case Behavior::isolated:
      for (const auto& [r, is_match] : all) parts.push_back(r);
      break;
    case Behavior::contiguous:
      for (const auto& [r, is_match] : all) {
        if (!parts.empty() && is_match == previous_match) {
          parts.back().second = r.second;
        } else {
          parts.push_back(r);
        }
        previous_match = is_match;
      }
      break;
    case Behavior::merged_with_previous:
      for (const auto& [r, is_match] : all) {
        if (is_match && !previous_match && !parts.empty()) {
          parts.back().second = r.second;
        } else {
          parts.push_back(r);
        }
        previous_match = is_match;
      }
      break;
    case Behavior::merged_with_next:
      for (auto it = all.rbegin(); it != all.rend(); ++it) {
        const auto& [r, is_match] = *it;
        if (is_match && !previous_match && !parts.empty()) {
          parts.back().first = r.first;
        } else {
          parts.push_back(r);
        }
        previous_match = is_match;
      }
      std::reverse(parts.begin(), parts.end());
      break;
  }
  for (const auto& [b, e] : parts) {
    if (b == e) continue;
    out.push_back(Piece{piece.text.substr(b, e - b), -1, piece.at_start && b == 0});
  }
}

// Applies `cut` (the matches of one piece) to every piece that is not an added token.
template <class Cut>
void split_all(Pieces& pieces, Behavior behavior, Cut cut) {
  Pieces out;
  out.reserve(pieces.size());
  thread_local Ranges matches;
  for (Piece& p : pieces) {
    if (p.token >= 0) {
      out.push_back(std::move(p));
      continue;
    }
    matches.clear();
    cut(p.text, matches);
    split_piece(p, matches, behavior, out);
  }
  pieces = std::move(out);
}

// The matches of single code points that `is` accepts.
Ranges& char_matches(std::string_view s, const std::function<bool(char32_t)>& is, Ranges& out) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t start = i;
    if (is(next_code_point(s, i))) out.emplace_back(start, i);
  }
  return out;
}

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
  void apply(Pieces& pieces) const override {
    for (const auto& p : parts_) p->apply(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(const std::string& pattern, Behavior behavior, bool invert, std::string_view where)
      : regex_(pattern, where), behavior_(behavior), invert_(invert) {}
  void apply(Pieces& pieces) const override {
    split_all(pieces, behavior_, [&](const std::string& s, Ranges& out) {
      regex_.find_all(s, out);
      if (invert_) {  // the gaps between matches are the matches
        Ranges gaps;
        std::size_t prev = 0;
        for (const auto& [b, e] : out) {
          if (prev != b) gaps.emplace_back(prev, b);
          prev = e;
        }
        if (prev != s.size()) gaps.emplace_back(prev, s.size());
        out = std::move(gaps);
      }
    });
  }

 private:
  OnigRegex regex_;
  Behavior behavior_;
  bool invert_;
};

constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex, std::string_view where)
      : add_prefix_space_(add_prefix_space),
        regex_(use_regex ? std::make_unique<OnigRegex>(kGpt2Pattern, where) : nullptr) {}
  void apply(Pieces& pieces) const override {
    if (add_prefix_space_) {
      for (Piece& p : pieces) {
        if (p.token < 0 && !p.text.empty() && p.text.front() != ' ') p.text.insert(0, 1, ' ');
      }
    }
    if (regex_)
      split_all(pieces, Behavior::isolated, [&](const std::string& s, Ranges& out) { regex_->find_all(s, out); });
    for (Piece& p : pieces) {
      if (p.token < 0) p.text = bytes_to_unicode(p.text);
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<OnigRegex> regex_;
};

enum class Prepend { always, first, never };

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, Prepend prepend, bool split)
      : replacement_(std::move(replacement)), prepend_(prepend), split_(split) {}
  void apply(Pieces& pieces) const override {
    for (Piece& p : pieces) {
      if (p.token >= 0) continue;
      std::string out;
      for (const char c : p.text) {
        if (c == ' ') {
          out.append(replacement_);
        } else {
          out.push_back(c);
        }
      }
      const bool starts = out.starts_with(replacement_);
      if ((prepend_ == Prepend::always && !starts) || (prepend_ == Prepend::first && !starts && p.at_start)) {
        out.insert(0, replacement_);
      }
      p.text = std::move(out);
    }
    if (!split_) return;
    split_all(pieces, Behavior::merged_with_next, [&](const std::string& s, Ranges& out) {
      for (std::size_t at = s.find(replacement_); at != std::string::npos;
           at = s.find(replacement_, at + replacement_.size())) {
        out.emplace_back(at, at + replacement_.size());
      }
    });
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
};

class CharPreTokenizer final : public PreTokenizer {
 public:
  using Steps = std::vector<std::pair<std::function<bool(char32_t)>, Behavior>>;
  explicit CharPreTokenizer(Steps steps) : steps_(std::move(steps)) {}
  void apply(Pieces& pieces) const override {
    for (const auto& step : steps_) {
      const auto& is = step.first;
      split_all(pieces, step.second, [&](const std::string& s, Ranges& out) { char_matches(s, is, out); });
    }
  }

 private:
  Steps steps_;
};

class RegexPreTokenizer final : public PreTokenizer {
 public:
  RegexPreTokenizer(const char* pattern, Behavior behavior, bool invert, std::string_view where)
      : inner_(pattern, behavior, invert, where) {}
  void apply(Pieces& pieces) const override { inner_.apply(pieces); }

 private:
  SplitPreTokenizer inner_;
};

bool is_bert_punctuation(char32_t c) { return is_ascii_punctuation(c) || is_punctuation(c); }

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& spec, std::string_view source) {
  if (spec.is_null()) return nullptr;
  const std::string where = fmt::format("{}: pre_tokenizer", source);
  const std::string type = type_of(spec, where);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (const nlohmann::json& part : field<nlohmann::json>(spec, "pretokenizers", where)) {
      if (auto p = make_pre_tokenizer(part, source)) parts.push_back(std::move(p));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  if (type == "Split") {
    return std::make_unique<SplitPreTokenizer>(pattern_regex(field<nlohmann::json>(spec, "pattern", where), where),
                                               parse_behavior(field<std::string>(spec, "behavior", where), where),
                                               field_or<bool>(spec, "invert", false, where), where);
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(field_or<bool>(spec, "add_prefix_space", true, where),
                                                   field_or<bool>(spec, "use_regex", true, where), where);
  }
  if (type == "Metaspace") {
    Prepend prepend = Prepend::always;
    if (spec.contains("prepend_scheme")) {
      const std::string scheme = field<std::string>(spec, "prepend_scheme", where);
      if (scheme == "first") {
        prepend = Prepend::first;
      } else if (scheme == "never") {
        prepend = Prepend::never;
      } else if (scheme != "always") {
        PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: prepend_scheme '{}' is not always, first or never", where,
                         scheme);
      }
    } else if (!field_or<bool>(spec, "add_prefix_space", true, where)) {
      prepend = Prepend::never;  // the format before prepend_scheme
    }
    return std::make_unique<MetaspacePreTokenizer>(field_or<std::string>(spec, "replacement", "\xE2\x96\x81", where),
                                                   prepend, field_or<bool>(spec, "split", true, where));
  }
  if (type == "BertPreTokenizer") {
    return std::make_unique<CharPreTokenizer>(
        CharPreTokenizer::Steps{{is_whitespace, Behavior::removed}, {is_bert_punctuation, Behavior::isolated}});
  }
  if (type == "WhitespaceSplit") {
    return std::make_unique<CharPreTokenizer>(CharPreTokenizer::Steps{{is_whitespace, Behavior::removed}});
  }
  if (type == "Whitespace") {
    return std::make_unique<RegexPreTokenizer>(R"(\w+|[^\w\s]+)", Behavior::removed, true, where);
  }
  if (type == "Punctuation") {
    return std::make_unique<CharPreTokenizer>(CharPreTokenizer::Steps{
        {is_bert_punctuation, parse_behavior(field_or<std::string>(spec, "behavior", "Isolated", where), where)}});
  }
  if (type == "Digits") {
    const bool individual = field_or<bool>(spec, "individual_digits", false, where);
    return std::make_unique<CharPreTokenizer>(
        CharPreTokenizer::Steps{{is_numeric_digit, individual ? Behavior::isolated : Behavior::contiguous}});
  }
  PERSONA_THROW_AT(kTokenizerLoad, unsupported,
                   "{}: pre_tokenizer type '{}' is not supported (persona reads Sequence, Split, ByteLevel, Metaspace, "
                   "BertPreTokenizer, Whitespace, WhitespaceSplit, Punctuation and Digits)",
                   source, type);
}

}  // namespace persona::text
