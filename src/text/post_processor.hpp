// tokenizer.json's "post_processor": the special tokens around an encoded sequence. TemplateProcessing,
// BertProcessing, RobertaProcessing, ByteLevel (offsets only: nothing for ids) and Sequence; single
// sequences. Internal to the library.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

namespace persona::text {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // How many tokens process adds to a single sequence.
  virtual std::size_t added_tokens() const noexcept = 0;
  virtual void process(std::vector<std::int32_t>& ids) const = 0;
};

// Null JSON: none.
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& spec, std::string_view source);

}  // namespace persona::text
