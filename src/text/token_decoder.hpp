// tokenizer.json's "decoder": tokens back to text. Sequence, ByteLevel, Metaspace, WordPiece, Replace,
// ByteFallback, Fuse, Strip, BPEDecoder, as Hugging Face tokenizers' decoders/*.rs do it. Internal.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace persona::text {

class TokenDecoder {
 public:
  virtual ~TokenDecoder() = default;
  // One step of the chain: tokens in, tokens out (joined at the end).
  virtual void apply(std::vector<std::string>& tokens) const = 0;
  // Whether text decoded so far may still change when more tokens follow, beyond what a token adds:
  // byte-fallback tokens (<0xXX>) whose group is still open, bytes that end mid-character.
  virtual bool joins_bytes() const noexcept { return false; }
};

// Null JSON: none (tokens joined with spaces). Error(unsupported) naming an unknown type.
std::unique_ptr<TokenDecoder> make_token_decoder(const nlohmann::json& spec, std::string_view source);

}  // namespace persona::text
