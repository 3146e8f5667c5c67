// WordPiece as BERT and Hugging Face tokenizers' models/wordpiece do it: greedy longest match first, the
// pieces after the first prefixed with "##"; a word with no match, or longer than
// max_input_chars_per_word characters, is the unk token whole.
#include "text/json_fields.hpp"
#include "text/token_model.hpp"

namespace persona::text {
namespace {

class WordPieceModel final : public TokenModel {
 public:
  WordPieceModel(const nlohmann::json& spec, std::string_view where)
      : vocab_(field<nlohmann::json>(spec, "vocab", where), where),
        prefix_(field_or<std::string>(spec, "continuing_subword_prefix", "##", where)),
        max_chars_(field_or<std::size_t>(spec, "max_input_chars_per_word", 100, where)) {
    const std::string unk = field_or<std::string>(spec, "unk_token", "[UNK]", where);
    const auto id = vocab_.find(unk);
    if (!id) PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: unk_token '{}' is not in the vocabulary", where, unk);
    unk_ = *id;
  }

  const Vocabulary& vocabulary() const noexcept override { return vocab_; }

  void tokenize(std::string_view word, std::vector<std::int32_t>& out) const override {
    std::size_t chars = 0;
    for (const char c : word) chars += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
    if (chars > max_chars_) {
      out.push_back(unk_);
      return;
    }
    const std::size_t first = out.size();
    std::string candidate;
    for (std::size_t start = 0; start < word.size();) {
      std::size_t end = word.size();
      std::optional<std::int32_t> found;
      while (start < end) {
        candidate.assign(start > 0 ? prefix_ : std::string());
        candidate.append(word.substr(start, end - start));
        if ((found = vocab_.find(candidate))) break;
        --end;
        while (end > start && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80) --end;
      }
      if (!found) {
        out.resize(first);
        out.push_back(unk_);
        return;
      }
      out.push_back(*found);
      start = end;
    }
  }

 private:
  Vocabulary vocab_;
  std::string prefix_;
  std::size_t max_chars_;
  std::int32_t unk_ = 0;
};

}  // namespace

std::unique_ptr<TokenModel> make_wordpiece_model(const nlohmann::json& spec, std::string_view where) {
  return std::make_unique<WordPieceModel>(spec, where);
}

}  // namespace persona::text
