#include "text/added_vocabulary.hpp"

#include "text/json_fields.hpp"
#include "text/unicode.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace persona::text {
namespace {

char32_t last_code_point(std::string_view s) {
  std::size_t start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return next_code_point(s, start);
}

}  // namespace

AddedVocabulary::AddedVocabulary(const nlohmann::json& added_tokens, const Normalizer* normalizer,
                                 std::string_view source) {
  const std::string where = fmt::format("{}: added_tokens", source);
  if (added_tokens.is_null()) return;
  if (!added_tokens.is_array()) PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{} is not a list", where);
  for (const nlohmann::json& t : added_tokens) {
    AddedToken token;
    token.id = field<std::int32_t>(t, "id", where);
    token.content = valid_utf8(field<std::string>(t, "content", where));
    token.single_word = field_or<bool>(t, "single_word", false, where);
    token.lstrip = field_or<bool>(t, "lstrip", false, where);
    token.rstrip = field_or<bool>(t, "rstrip", false, where);
    token.normalized = field_or<bool>(t, "normalized", true, where);
    token.special = field_or<bool>(t, "special", false, where);
    if (token.id < 0 || token.content.empty()) {
      PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: token {} ('{}') needs an id >= 0 and content", where,
                       token.id, token.content);
    }
    if (!by_id_.emplace(token.id, tokens_.size()).second) {
      PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: id {} appears twice", where, token.id);
    }
    tokens_.push_back(std::move(token));
  }
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    const AddedToken& t = tokens_[i];
    std::string pattern = t.content;
    if (t.normalized && normalizer != nullptr) normalizer->apply(pattern);
    if (pattern.empty()) continue;
    Patterns& p = t.normalized ? normalized_ : raw_;
    p.by_first_byte[static_cast<unsigned char>(pattern[0])].emplace_back(std::move(pattern), i);
    p.empty = false;
  }
  for (Patterns* p : {&raw_, &normalized_}) {
    for (auto& list : p->by_first_byte) {
      std::stable_sort(list.begin(), list.end(),
                       [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
    }
  }
}

const AddedToken* AddedVocabulary::find(std::int32_t id) const noexcept {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocabulary::find(std::string_view content) const noexcept {
  for (const AddedToken& t : tokens_) {
    if (t.content == content) return &t;
  }
  return nullptr;
}

void AddedVocabulary::split(Pieces& pieces, bool normalized) const {
  const Patterns& patterns = normalized ? normalized_ : raw_;
  if (patterns.empty) return;
  Pieces out;
  out.reserve(pieces.size());
  for (Piece& p : pieces) {
    if (p.token >= 0) {
      out.push_back(std::move(p));
    } else {
      split_piece(p, patterns, out);
    }
  }
  pieces = std::move(out);
}

void AddedVocabulary::split_piece(const Piece& piece, const Patterns& patterns, Pieces& out) const {
  const std::string& s = piece.text;
  std::size_t start_offset = 0;
  const auto emit = [&](std::size_t b, std::size_t e, std::int32_t token) {
    if (b == e && token < 0) return;
    out.push_back(Piece{s.substr(b, e - b), token, piece.at_start && b == 0});
  };
  for (std::size_t i = 0; i < s.size();) {
    const auto& candidates = patterns.by_first_byte[static_cast<unsigned char>(s[i])];
    const std::pair<std::string, std::size_t>* match = nullptr;
    for (const auto& c : candidates) {
      if (s.compare(i, c.first.size(), c.first) == 0) {
        match = &c;
        break;  // longest first
      }
    }
    if (match == nullptr) {
      ++i;
      continue;
    }
    const AddedToken& token = tokens_[match->second];
    std::size_t start = i, stop = i + match->first.size();
    i = stop;
    if (token.single_word) {
      const bool word_before = start > 0 && is_word(last_code_point(std::string_view(s).substr(0, start)));
      std::size_t after = stop;
      const bool word_after = stop < s.size() && is_word(next_code_point(s, after));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) {
      std::size_t b = start;
      while (b > 0) {
        std::size_t k = b - 1;
        while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
        std::size_t at = k;
        if (!is_whitespace(next_code_point(s, at))) break;
        b = k;
      }
      start = std::max(b, start_offset);
    }
    if (token.rstrip) {
      while (stop < s.size()) {
        std::size_t next = stop;
        if (!is_whitespace(next_code_point(s, next))) break;
        stop = next;
      }
      i = std::max(i, stop);
    }
    if (start_offset < start) emit(start_offset, start, -1);
    emit(start, stop, token.id);
    start_offset = stop;
  }
  if (start_offset < s.size()) emit(start_offset, s.size(), -1);
}

}  // namespace persona::text
