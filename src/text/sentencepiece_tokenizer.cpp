// A folder with only tokenizer.model (older Llama 2 checkpoints): SentencePiece's own processor
// (Debian's libsentencepiece-dev) encodes and decodes, so persona reads the model exactly as
// SentencePiece does. BOS / EOS follow tokenizer_config.json's add_bos_token (default true) and
// add_eos_token (default false), as transformers' LlamaTokenizer; decoding drops control tokens, as
// SentencePiece does.
#include "persona/core/error.hpp"
#include "text/json_fields.hpp"
#include "text/tokenizer_impl.hpp"

#include <sentencepiece_processor.h>

namespace persona::text {
namespace {

class SentencePieceTokenizer final : public Tokenizer::Impl {
 public:
  SentencePieceTokenizer(const std::filesystem::path& model, const TokenizerConfig& c) {
    config = c;
    const auto status = processor_.Load(model.string());
    if (!status.ok()) {
      PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: SentencePiece cannot read it: {}", model.string(),
                       status.ToString());
    }
  }

  void encode_text(std::string_view valid_text, std::vector<std::int32_t>& out) const override {
    std::vector<int> ids;
    const auto status = processor_.Encode(std::string(valid_text), &ids);
    if (!status.ok()) PERSONA_THROW_AT("Tokenizer::encode", invalid_argument, "SentencePiece: {}", status.ToString());
    out.assign(ids.begin(), ids.end());
  }

  void finish(std::vector<std::int32_t>& ids, const EncodeOptions& options) const override {
    if (!options.add_special_tokens) return;
    if (config.add_bos_token && processor_.bos_id() >= 0) ids.insert(ids.begin(), processor_.bos_id());
    if (config.add_eos_token && processor_.eos_id() >= 0) ids.push_back(processor_.eos_id());
  }

  void pad_batch(std::vector<std::vector<std::int32_t>>&, const EncodeOptions&) const override {}

  std::string decode(std::span<const std::int32_t> ids, bool) const override {
    std::vector<int> checked;
    checked.reserve(ids.size());
    for (const std::int32_t id : ids) {
      if (id < 0 || id >= processor_.GetPieceSize()) {
        PERSONA_THROW_AT("Tokenizer::decode", out_of_range, "token id {} is not in the vocabulary (ids are 0..{})", id,
                         processor_.GetPieceSize() - 1);
      }
      checked.push_back(id);
    }
    std::string text;
    const auto status = processor_.Decode(checked, &text);
    if (!status.ok()) PERSONA_THROW_AT("Tokenizer::decode", invalid_argument, "SentencePiece: {}", status.ToString());
    return text;
  }

  bool open_end(std::span<const std::int32_t> ids, bool) const override {
    for (std::size_t i = ids.size(); i > 0; --i) {
      if (processor_.IsControl(ids[i - 1])) continue;
      return processor_.IsByte(ids[i - 1]);
    }
    return false;
  }

  std::size_t vocab_size() const noexcept override { return static_cast<std::size_t>(processor_.GetPieceSize()); }
  std::optional<std::int32_t> token_to_id(std::string_view token) const override {
    const int id = processor_.PieceToId(std::string(token));
    if (id == processor_.unk_id() && processor_.IdToPiece(id) != token) return std::nullopt;
    return id;
  }
  std::optional<std::string> id_to_token(std::int32_t id) const override {
    if (id < 0 || id >= processor_.GetPieceSize()) return std::nullopt;
    return processor_.IdToPiece(id);
  }
  bool is_special(std::int32_t id) const noexcept override {
    return id >= 0 && id < processor_.GetPieceSize() && processor_.IsControl(id);
  }

 private:
  sentencepiece::SentencePieceProcessor processor_;
};

}  // namespace

std::unique_ptr<Tokenizer::Impl> make_sentencepiece_tokenizer(const std::filesystem::path& model,
                                                              const TokenizerConfig& config) {
  return std::make_unique<SentencePieceTokenizer>(model, config);
}

}  // namespace persona::text
