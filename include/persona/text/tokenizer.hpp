// Tokenizer: text to token ids and back, as Hugging Face tokenizers does it, read from a model or
// tokenizer folder: tokenizer.json (BPE byte-level as GPT-2 / Llama 3 / Qwen, BPE with byte fallback and
// Metaspace as Llama 2 / Mistral, WordPiece as BERT; the normalizers, pre-tokenizers, post-processors and
// decoders these use; added and special tokens matched first) with tokenizer_config.json, or a
// SentencePiece tokenizer.model alone (through the SentencePiece library). Which components are read, and
// what is refused: docs/models.md. Regexes run on Oniguruma, Unicode classes and normalization forms come
// from utf8proc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace persona {

struct EncodeOptions {
  bool add_special_tokens = true;  // the post-processor's (BOS, [CLS] ... [SEP])
  // tokenizer.json's "truncation" and "padding", applied as Hugging Face tokenizers' encode applies them;
  // off: the ids of the whole text, unpadded.
  bool truncate = true;
  bool pad = true;
};

// What tokenizer_config.json says around the tokenizer.
struct TokenizerConfig {
  std::optional<std::string> bos_token, eos_token, pad_token, unk_token;
  std::string chat_template;                          // the default template; empty: none
  std::map<std::string, std::string> chat_templates;  // every named template (the default one as "default")
  std::size_t model_max_length = 0;                   // 0: not given
  // For a SentencePiece tokenizer.model alone (a tokenizer.json's post-processor says it itself).
  bool add_bos_token = true, add_eos_token = false;
};

class Tokenizer {
 public:
  // `folder` holds tokenizer.json (and optionally tokenizer_config.json), or only a SentencePiece
  // tokenizer.model. Error(not_found) when it holds neither; Error(corrupt_data) for malformed JSON or a
  // component missing its fields; Error(unsupported) naming a component type or option persona does not
  // implement (a Unigram model, BPE dropout, the Precompiled normalizer, ...).
  static Tokenizer load(const std::filesystem::path& folder);
  // The same from the files' text; `source` names them in errors.
  static Tokenizer from_json(std::string_view tokenizer_json, std::string_view tokenizer_config_json = {},
                             std::string_view source = "<memory>");

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Text is UTF-8; ill-formed sequences are read as U+FFFD (one per maximal subpart), as Python's
  // errors="replace" would read them.
  std::vector<std::int32_t> encode(std::string_view text, const EncodeOptions& options = {}) const;
  // Each text as encode does, on num_threads() threads; "BatchLongest" padding pads to the batch's longest.
  std::vector<std::vector<std::int32_t>> encode_batch(std::span<const std::string> texts,
                                                      const EncodeOptions& options = {}) const;
  // Error(out_of_range) naming an id that is neither in the vocabulary nor an added token.
  std::string decode(std::span<const std::int32_t> ids, bool skip_special_tokens = false) const;

  std::size_t vocab_size() const noexcept;  // one past the largest id, added tokens included
  std::optional<std::int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(std::int32_t id) const;
  bool is_special(std::int32_t id) const noexcept;
  const TokenizerConfig& config() const noexcept;

  struct Impl;  // src/text

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  friend class StreamDecoder;
};

// Incremental detokenization for streaming: feed the ids as they are generated; each step returns the
// text that became final (possibly empty). It never emits part of a UTF-8 character or text that later
// ids would change (an open run of byte-fallback tokens, bytes that end mid-character), and everything it
// emits, finish() included, is exactly decode() of all the ids. Keeps the tokenizer by reference.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false);
  std::string step(std::int32_t id);  // Error(out_of_range) as decode
  std::string finish();               // what was held back
  const std::string& text() const noexcept { return emitted_; }

 private:
  // The window to decode from: the latest boundary before stable_ whose token is kept (so that both
  // texts begin with the same real, already emitted token), else the start.
  std::size_t window_start() const;

  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<std::int32_t> ids_;        // every id so far
  std::vector<std::size_t> boundaries_;  // positions where the text so far is final (0 first)
  std::size_t stable_ = 0;               // the last boundary emitted up to
  std::string emitted_;
};

}  // namespace persona
