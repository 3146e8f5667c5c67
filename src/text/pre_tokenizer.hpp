// tokenizer.json's "pre_tokenizer": Sequence, Split, ByteLevel, Metaspace, BertPreTokenizer, Whitespace,
// WhitespaceSplit, Digits, Punctuation. Each cuts the pieces that are not added tokens further, as Hugging
// Face tokenizers' pre_tokenizers/*.rs do; empty pieces are dropped. Internal to the library.
#pragma once

#include "text/piece.hpp"

#include <nlohmann/json.hpp>

#include <memory>
#include <string_view>

namespace persona::text {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void apply(Pieces& pieces) const = 0;
};

// Null JSON: none. Error(unsupported) naming an unknown type, Error(corrupt_data) for a malformed one.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& spec, std::string_view source);

}  // namespace persona::text
