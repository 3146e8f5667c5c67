// The tokenizer.json pipeline, as Hugging Face tokenizers' TokenizerImpl::encode runs it: added tokens
// out of the raw text, each remaining piece normalized, normalized added tokens out, pre-tokenized,
// each piece through the model; then truncation, the post-processor's special tokens, padding.
#include "text/added_vocabulary.hpp"
#include "text/byte_level.hpp"
#include "text/json_fields.hpp"
#include "text/normalizer.hpp"
#include "text/post_processor.hpp"
#include "text/pre_tokenizer.hpp"
#include "text/token_decoder.hpp"
#include "text/token_model.hpp"
#include "text/tokenizer_impl.hpp"
#include "text/unicode.hpp"

#include <fmt/format.h>

namespace persona::text {
namespace {

struct Truncation {
  std::size_t max_length = 0;
  bool left = false;
};

struct Padding {
  std::size_t fixed = 0;  // 0: the batch's longest
  std::size_t multiple_of = 0;
  bool left = false;
  std::int32_t pad_id = 0;
};

class JsonTokenizer final : public Tokenizer::Impl {
 public:
  JsonTokenizer(std::string_view text, std::string_view source) {
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: not a JSON object", source);
    }
    normalizer_ = make_normalizer(j.value("normalizer", nlohmann::json()), source);
    pre_tokenizer_ = make_pre_tokenizer(j.value("pre_tokenizer", nlohmann::json()), source);
    post_processor_ = make_post_processor(j.value("post_processor", nlohmann::json()), source);
    decoder_ = make_token_decoder(j.value("decoder", nlohmann::json()), source);
    if (!j.contains("model")) PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: no 'model'", source);
    model_ = make_token_model(j.at("model"), source);
    added_ = AddedVocabulary(j.value("added_tokens", nlohmann::json()), normalizer_.get(), source);
    read_truncation(j.value("truncation", nlohmann::json()), source);
    read_padding(j.value("padding", nlohmann::json()), source);
    std::size_t bound = model_->vocabulary().id_bound();
    for (const AddedToken& t : added_.tokens()) bound = std::max(bound, static_cast<std::size_t>(t.id) + 1);
    vocab_size_ = bound;
    byte_level_ = decoder_ && decoder_->joins_bytes();
  }

  void encode_text(std::string_view valid_text, std::vector<std::int32_t>& out) const override {
    Pieces pieces{Piece{std::string(valid_text), -1, true}};
    added_.split(pieces, false);
    if (normalizer_) {
      for (Piece& p : pieces) {
        if (p.token < 0) normalizer_->apply(p.text);
      }
    }
    added_.split(pieces, true);
    if (pre_tokenizer_) pre_tokenizer_->apply(pieces);
    for (const Piece& p : pieces) {
      if (p.token >= 0) {
        out.push_back(p.token);
      } else if (!p.text.empty()) {
        model_->tokenize(p.text, out);
      }
    }
  }

  void finish(std::vector<std::int32_t>& ids, const EncodeOptions& options) const override {
    const std::size_t added = options.add_special_tokens && post_processor_ ? post_processor_->added_tokens() : 0;
    if (options.truncate && truncation_.max_length > 0) {
      const std::size_t keep = truncation_.max_length > added ? truncation_.max_length - added : 0;
      if (ids.size() > keep) {
        if (truncation_.left) {
          ids.erase(ids.begin(), ids.end() - static_cast<std::ptrdiff_t>(keep));
        } else {
          ids.resize(keep);
        }
      }
    }
    if (options.add_special_tokens && post_processor_) post_processor_->process(ids);
    if (options.pad && padding_) pad(ids, padding_->fixed);
  }

  void pad_batch(std::vector<std::vector<std::int32_t>>& batch, const EncodeOptions& options) const override {
    if (!options.pad || !padding_ || padding_->fixed != 0) return;
    std::size_t longest = 0;
    for (const auto& ids : batch) longest = std::max(longest, ids.size());
    for (auto& ids : batch) pad(ids, longest);
  }

  std::string decode(std::span<const std::int32_t> ids, bool skip_special) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (const std::int32_t id : ids) {
      if (const AddedToken* a = added_.find(id)) {
        if (!(skip_special && a->special)) tokens.push_back(a->content);
      } else if (const std::string* t = model_->vocabulary().token(id)) {
        tokens.push_back(*t);
      } else {
        PERSONA_THROW_AT("Tokenizer::decode", out_of_range, "token id {} is not in the vocabulary (ids are 0..{})", id,
                         vocab_size_ - 1);
      }
    }
    if (!decoder_) {
      std::string out;
      for (std::size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
      return out;
    }
    decoder_->apply(tokens);
    std::string out;
    for (const std::string& t : tokens) out += t;
    return out;
  }

  bool open_end(std::span<const std::int32_t> ids, bool skip_special) const override {
    if (!byte_level_) return false;
    // The bytes of the last few tokens that are not skipped: an open byte-fallback run, or an unfinished
    // character.
    std::string bytes;
    for (std::size_t i = ids.size(); i > 0 && bytes.size() < 4; --i) {
      const std::int32_t id = ids[i - 1];
      const AddedToken* a = added_.find(id);
      if (a != nullptr && skip_special && a->special) continue;
      const std::string* t = a != nullptr ? &a->content : model_->vocabulary().token(id);
      if (t == nullptr) return false;
      if (t->size() == 6 && t->starts_with("<0x") && t->back() == '>' && a == nullptr) return true;
      std::string own;
      bool all = true;
      for (std::size_t k = 0; k < t->size() && all;) {
        const auto b = unicode_to_byte(next_code_point(*t, k));
        if (b) own.push_back(static_cast<char>(*b));
        all = all && b.has_value();
      }
      bytes.insert(0, all ? own : *t);
    }
    return incomplete_utf8_tail(bytes) > 0;
  }

  std::size_t vocab_size() const noexcept override { return vocab_size_; }
  std::optional<std::int32_t> token_to_id(std::string_view token) const override {
    if (const AddedToken* a = added_.find(token)) return a->id;
    return model_->vocabulary().find(token);
  }
  std::optional<std::string> id_to_token(std::int32_t id) const override {
    if (const AddedToken* a = added_.find(id)) return a->content;
    if (const std::string* t = model_->vocabulary().token(id)) return *t;
    return std::nullopt;
  }
  bool is_special(std::int32_t id) const noexcept override {
    const AddedToken* a = added_.find(id);
    return a != nullptr && a->special;
  }

 private:
  void read_truncation(const nlohmann::json& t, std::string_view source) {
    if (t.is_null()) return;
    const std::string where = fmt::format("{}: truncation", source);
    truncation_.max_length = field<std::size_t>(t, "max_length", where);
    truncation_.left = field_or<std::string>(t, "direction", "Right", where) == "Left";
  }

  void read_padding(const nlohmann::json& p, std::string_view source) {
    if (p.is_null()) return;
    const std::string where = fmt::format("{}: padding", source);
    Padding padding;
    const nlohmann::json strategy = field<nlohmann::json>(p, "strategy", where);
    if (strategy.is_object() && strategy.contains("Fixed")) {
      padding.fixed = field<std::size_t>(strategy, "Fixed", where);
    } else if (strategy != "BatchLongest") {
      PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: strategy {} is neither BatchLongest nor {{\"Fixed\": n}}",
                       where, strategy.dump());
    }
    padding.multiple_of = field_or<std::size_t>(p, "pad_to_multiple_of", 0, where);
    padding.left = field_or<std::string>(p, "direction", "Right", where) == "Left";
    padding.pad_id = field_or<std::int32_t>(p, "pad_id", 0, where);
    padding_ = padding;
  }

  void pad(std::vector<std::int32_t>& ids, std::size_t target) const {
    if (target == 0) target = ids.size();
    if (padding_->multiple_of > 0 && target % padding_->multiple_of != 0) {
      target += padding_->multiple_of - target % padding_->multiple_of;
    }
    if (ids.size() >= target) return;
    ids.insert(padding_->left ? ids.begin() : ids.end(), target - ids.size(), padding_->pad_id);
  }

  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<TokenDecoder> decoder_;
  std::unique_ptr<TokenModel> model_;
  AddedVocabulary added_;
  Truncation truncation_;
  std::optional<Padding> padding_;
  std::size_t vocab_size_ = 0;
  bool byte_level_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer::Impl> make_json_tokenizer(std::string_view tokenizer_json, std::string_view source) {
  return std::make_unique<JsonTokenizer>(tokenizer_json, source);
}

}  // namespace persona::text
