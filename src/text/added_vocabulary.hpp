// tokenizer.json's "added_tokens": matched in the text before the model runs, leftmost-longest, as
// Hugging Face tokenizers' AddedVocabulary does: first the tokens marked normalized: false in the raw
// text, then (once each remaining piece is normalized) the others in the normalized text; single_word,
// lstrip and rstrip as there. Internal to the library.
#pragma once

#include "text/normalizer.hpp"
#include "text/piece.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace persona::text {

struct AddedToken {
  std::int32_t id = 0;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;
  // `normalizer` (may be null) gives the normalized tokens' patterns.
  AddedVocabulary(const nlohmann::json& added_tokens, const Normalizer* normalizer, std::string_view source);

  // Splits every piece that is not a token yet at the matches of the raw (normalized: false) or the
  // normalized tokens.
  void split(Pieces& pieces, bool normalized) const;

  const AddedToken* find(std::int32_t id) const noexcept;
  const AddedToken* find(std::string_view content) const noexcept;
  const std::vector<AddedToken>& tokens() const noexcept { return tokens_; }

 private:
  struct Patterns {
    // For each first byte, the (pattern, token index) pairs, longest first.
    std::array<std::vector<std::pair<std::string, std::size_t>>, 256> by_first_byte;
    bool empty = true;
  };
  void split_piece(const Piece& piece, const Patterns& patterns, Pieces& out) const;

  std::vector<AddedToken> tokens_;
  std::unordered_map<std::int32_t, std::size_t> by_id_;
  Patterns raw_, normalized_;
};

}  // namespace persona::text
