// StreamDecoder: at each boundary (the text so far can no longer change) the new text is
// decode(window + new ids) minus decode(window), the window starting at an earlier boundary with a real
// token, so that decoders that treat the first token apart (Metaspace, Strip, WordPiece) treat it the
// same in both; the cost per step does not grow with the sequence.
#include "persona/core/error.hpp"
#include "persona/text/tokenizer.hpp"
#include "text/tokenizer_impl.hpp"

namespace persona {

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens), boundaries_{0} {}

std::size_t StreamDecoder::window_start() const {
  // Strictly before stable_: the window must hold an emitted token, or the first new one would be
  // decoded as the sequence's first.
  for (auto it = boundaries_.rbegin(); it != boundaries_.rend(); ++it) {
    if (*it >= stable_) continue;
    if (!(skip_special_ && tokenizer_.is_special(ids_[*it]))) return *it;
  }
  return 0;
}

std::string StreamDecoder::step(std::int32_t id) {
  const Tokenizer::Impl& impl = *tokenizer_.impl_;
  (void)impl.decode(std::span(&id, 1), false);  // Error(out_of_range) for an id it does not know
  ids_.push_back(id);
  if (impl.open_end(ids_, skip_special_)) return {};
  const std::size_t base = window_start();
  const std::span<const std::int32_t> all(ids_);
  const std::string before = impl.decode(all.subspan(base, stable_ - base), skip_special_);
  std::string now = impl.decode(all.subspan(base), skip_special_);
  std::string fresh;
  if (now.starts_with(before)) {
    fresh = now.substr(before.size());
  } else {
    // A decoder that is not local after all: the whole text, which must still extend what was emitted.
    now = impl.decode(all, skip_special_);
    if (!now.starts_with(emitted_)) {
      PERSONA_THROW_AT("StreamDecoder::step", unsupported,
                       "this tokenizer's decoder changes text already emitted (after {} ids): it cannot stream",
                       ids_.size());
    }
    fresh = now.substr(emitted_.size());
  }
  stable_ = ids_.size();
  boundaries_.push_back(stable_);
  emitted_ += fresh;
  return fresh;
}

std::string StreamDecoder::finish() {
  const std::string all = tokenizer_.impl_->decode(ids_, skip_special_);
  if (!all.starts_with(emitted_)) {
    PERSONA_THROW_AT("StreamDecoder::finish", unsupported,
                     "this tokenizer's decoder changed text already emitted: it cannot stream");
  }
  std::string rest = all.substr(emitted_.size());
  emitted_ = all;
  stable_ = ids_.size();
  boundaries_.push_back(stable_);
  return rest;
}

}  // namespace persona
