#include "text/token_model.hpp"

#include "text/json_fields.hpp"

#include <fmt/format.h>

namespace persona::text {

Vocabulary::Vocabulary(const nlohmann::json& vocab, std::string_view where) {
  if (!vocab.is_object()) PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: 'vocab' is not an object", where);
  ids_.reserve(vocab.size());
  for (const auto& [token, id_json] : vocab.items()) {
    if (!id_json.is_number_integer() || id_json.get<std::int64_t>() < 0 || id_json.get<std::int64_t>() >= (1ll << 31)) {
      PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: token '{}' has id {}; expected 0..2^31-1", where, token,
                       id_json.dump().substr(0, 40));
    }
    const auto id = static_cast<std::int32_t>(id_json.get<std::int64_t>());
    if (static_cast<std::size_t>(id) >= tokens_.size()) {
      tokens_.resize(static_cast<std::size_t>(id) + 1);
      present_.resize(static_cast<std::size_t>(id) + 1, false);
    }
    if (present_[static_cast<std::size_t>(id)]) {
      PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: id {} is given to both '{}' and '{}'", where, id,
                       tokens_[static_cast<std::size_t>(id)], token);
    }
    tokens_[static_cast<std::size_t>(id)] = token;
    present_[static_cast<std::size_t>(id)] = true;
    ids_.emplace(token, id);
  }
}

std::unique_ptr<TokenModel> make_token_model(const nlohmann::json& spec, std::string_view source) {
  const std::string where = fmt::format("{}: model", source);
  const std::string type = type_of(spec, where);
  if (type == "BPE") return make_bpe_model(spec, where);
  if (type == "WordPiece") return make_wordpiece_model(spec, where);
  PERSONA_THROW_AT(kTokenizerLoad, unsupported,
                   "{}: model type '{}' is not supported (persona reads BPE and WordPiece; a SentencePiece "
                   "tokenizer.model is read through the SentencePiece library)",
                   source, type);
}

}  // namespace persona::text
