// Tokenizer's face: loading a folder, the encode options, batches on oneTBB.
#include "persona/text/tokenizer.hpp"

#include "persona/core/error.hpp"
#include "persona/core/file_io.hpp"
#include "persona/core/threading.hpp"
#include "text/json_fields.hpp"
#include "text/tokenizer_impl.hpp"
#include "text/unicode.hpp"

#include <nlohmann/json.hpp>

#include <fmt/format.h>

namespace persona {
namespace text {
namespace {

// A token as tokenizer_config.json writes it: "content", or {"content": ...} (an AddedToken).
std::optional<std::string> token_field(const nlohmann::json& j, const char* name) {
  const auto it = j.find(name);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && it->at("content").is_string()) {
    return it->at("content").get<std::string>();
  }
  return std::nullopt;
}

std::string read_text(const std::filesystem::path& path) {
  const std::vector<std::byte> bytes = read_file(path, std::size_t{256} << 20);
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

}  // namespace

TokenizerConfig parse_tokenizer_config(std::string_view json, std::string_view source) {
  TokenizerConfig c;
  if (json.empty()) return c;
  const nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: tokenizer_config.json is not a JSON object", source);
  }
  c.bos_token = token_field(j, "bos_token");
  c.eos_token = token_field(j, "eos_token");
  c.pad_token = token_field(j, "pad_token");
  c.unk_token = token_field(j, "unk_token");
  if (const auto it = j.find("chat_template"); it != j.end() && !it->is_null()) {
    if (it->is_string()) {
      c.chat_template = it->get<std::string>();
      c.chat_templates["default"] = c.chat_template;
    } else if (it->is_array()) {
      for (const nlohmann::json& t : *it) {
        const std::string where = fmt::format("{}: chat_template", source);
        c.chat_templates[field<std::string>(t, "name", where)] = field<std::string>(t, "template", where);
      }
      if (const auto d = c.chat_templates.find("default"); d != c.chat_templates.end()) c.chat_template = d->second;
    } else {
      PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: chat_template is neither text nor a list of named templates",
                       source);
    }
  }
  if (const auto it = j.find("add_bos_token"); it != j.end() && it->is_boolean()) c.add_bos_token = it->get<bool>();
  if (const auto it = j.find("add_eos_token"); it != j.end() && it->is_boolean()) c.add_eos_token = it->get<bool>();
  if (const auto it = j.find("model_max_length"); it != j.end() && it->is_number()) {
    const double n = it->get<double>();
    c.model_max_length = n > 0 && n < 1e15 ? static_cast<std::size_t>(n) : 0;  // transformers writes 1e30 for none
  }
  return c;
}

}  // namespace text

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json, std::string_view tokenizer_config_json,
                               std::string_view source) {
  auto impl = text::make_json_tokenizer(tokenizer_json, source);
  impl->config = text::parse_tokenizer_config(tokenizer_config_json, source);
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::load(const std::filesystem::path& folder) {
  std::error_code ec;
  const std::filesystem::path json = folder / "tokenizer.json", config = folder / "tokenizer_config.json";
  const std::string config_text = std::filesystem::exists(config, ec) ? text::read_text(config) : std::string();
  if (std::filesystem::exists(json, ec)) {
    return from_json(text::read_text(json), config_text, json.string());
  }
  const std::filesystem::path model = folder / "tokenizer.model";
  if (std::filesystem::exists(model, ec)) {
    return Tokenizer(
        text::make_sentencepiece_tokenizer(model, text::parse_tokenizer_config(config_text, config.string())));
  }
  PERSONA_THROW_AT(text::kTokenizerLoad, not_found, "{}: no tokenizer.json and no tokenizer.model", folder.string());
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  std::vector<std::int32_t> ids;
  impl_->encode_text(text::valid_utf8(text), ids);
  impl_->finish(ids, options);
  return ids;
}

std::vector<std::vector<std::int32_t>> Tokenizer::encode_batch(std::span<const std::string> texts,
                                                               const EncodeOptions& options) const {
  std::vector<std::vector<std::int32_t>> out(texts.size());
  parallel_for(texts.size(), 1, [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) {
      impl_->encode_text(text::valid_utf8(texts[i]), out[i]);
      impl_->finish(out[i], options);
    }
  });
  impl_->pad_batch(out, options);
  return out;
}

std::string Tokenizer::decode(std::span<const std::int32_t> ids, bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens);
}

std::size_t Tokenizer::vocab_size() const noexcept { return impl_->vocab_size(); }
std::optional<std::int32_t> Tokenizer::token_to_id(std::string_view token) const { return impl_->token_to_id(token); }
std::optional<std::string> Tokenizer::id_to_token(std::int32_t id) const { return impl_->id_to_token(id); }
bool Tokenizer::is_special(std::int32_t id) const noexcept { return impl_->is_special(id); }
const TokenizerConfig& Tokenizer::config() const noexcept { return impl_->config; }

}  // namespace persona
