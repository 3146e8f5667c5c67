// The Tokenizer's two implementations behind one face: the tokenizer.json pipeline, and SentencePiece's
// own processor for a folder that has only tokenizer.model. Internal to the library.
#pragma once

#include "persona/text/tokenizer.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace persona {

struct Tokenizer::Impl {
  virtual ~Impl() = default;
  // The ids of one text, before truncation, post-processing and padding.
  virtual void encode_text(std::string_view valid_text, std::vector<std::int32_t>& out) const = 0;
  virtual void finish(std::vector<std::int32_t>& ids, const EncodeOptions& options) const = 0;
  // After the whole batch: pad to the longest where the padding asks for it.
  virtual void pad_batch(std::vector<std::vector<std::int32_t>>& batch, const EncodeOptions& options) const = 0;
  virtual std::string decode(std::span<const std::int32_t> ids, bool skip_special) const = 0;
  // Whether the text of ids so far may still change with the next id (StreamDecoder).
  virtual bool open_end(std::span<const std::int32_t> ids, bool skip_special) const = 0;
  virtual std::size_t vocab_size() const noexcept = 0;
  virtual std::optional<std::int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::optional<std::string> id_to_token(std::int32_t id) const = 0;
  virtual bool is_special(std::int32_t id) const noexcept = 0;

  TokenizerConfig config;
};

namespace text {
std::unique_ptr<Tokenizer::Impl> make_json_tokenizer(std::string_view tokenizer_json, std::string_view source);
std::unique_ptr<Tokenizer::Impl> make_sentencepiece_tokenizer(const std::filesystem::path& model,
                                                              const TokenizerConfig& config);
TokenizerConfig parse_tokenizer_config(std::string_view json, std::string_view source);
}  // namespace text

}  // namespace persona
