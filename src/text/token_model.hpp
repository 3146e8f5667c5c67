// tokenizer.json's "model": what turns one pre-tokenized piece into ids. BPE (byte-level as GPT-2, Llama 3
// and Qwen use it; with byte fallback as SentencePiece's Llama 2 and Mistral) and WordPiece (BERT).
// Internal to the library.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace persona::text {

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using TokenIds = std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>>;

// A model's vocabulary both ways.
class Vocabulary {
 public:
  // From {"token": id, ...}; Error(corrupt_data) for a negative or repeated id.
  Vocabulary(const nlohmann::json& vocab, std::string_view where);
  std::optional<std::int32_t> find(std::string_view token) const {
    const auto it = ids_.find(token);
    return it == ids_.end() ? std::nullopt : std::optional(it->second);
  }
  const std::string* token(std::int32_t id) const noexcept {
    return id >= 0 && static_cast<std::size_t>(id) < tokens_.size() && present_[static_cast<std::size_t>(id)]
               ? &tokens_[static_cast<std::size_t>(id)]
               : nullptr;
  }
  std::size_t size() const noexcept { return ids_.size(); }
  std::size_t id_bound() const noexcept { return tokens_.size(); }  // one past the largest id

 private:
  TokenIds ids_;
  std::vector<std::string> tokens_;
  std::vector<bool> present_;
};

class TokenModel {
 public:
  virtual ~TokenModel() = default;
  // Appends the ids of one piece.
  virtual void tokenize(std::string_view piece, std::vector<std::int32_t>& out) const = 0;
  virtual const Vocabulary& vocabulary() const noexcept = 0;
};

// Error(unsupported) naming another model type (Unigram, WordLevel) or BPE dropout; corrupt_data for a
// malformed model (a merge of tokens not in the vocabulary, an unk_token missing from it).
std::unique_ptr<TokenModel> make_token_model(const nlohmann::json& spec, std::string_view source);
std::unique_ptr<TokenModel> make_bpe_model(const nlohmann::json& spec, std::string_view where);
std::unique_ptr<TokenModel> make_wordpiece_model(const nlohmann::json& spec, std::string_view where);

}  // namespace persona::text
