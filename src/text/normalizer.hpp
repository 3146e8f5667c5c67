// tokenizer.json's "normalizer": Sequence, NFC/NFD/NFKC/NFKD, Lowercase, StripAccents, Strip, Replace,
// Prepend, BertNormalizer, ByteLevel. Internal to the library.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <string_view>

namespace persona::text {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void apply(std::string& text) const = 0;
};

// Null JSON: none. Error(unsupported) naming an unknown type, Error(corrupt_data) for a malformed one;
// `source` names the file.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& spec, std::string_view source);

}  // namespace persona::text
