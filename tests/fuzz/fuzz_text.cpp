// libFuzzer target for the tokenizers. The input is read as a tokenizer.json (anything but a valid one must
// be a persona::Error) and as text for each fixture tokenizer of tests/data/text: encoding never throws,
// decoding gives valid UTF-8 that encodes to the same ids again (byte-level BPE: lossless), and streaming
// the ids gives exactly the decoded text.
#include "../utf8_check.hpp"
#include "fuzz_check.hpp"

#include <persona/core/error.hpp>
#include <persona/text/tokenizer.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace {

const std::vector<persona::Tokenizer>& tokenizers() {
  static const std::vector<persona::Tokenizer> all = [] {
    std::vector<persona::Tokenizer> t;
    for (const char* name : {"llama3_bpe", "spm_llama", "minilm", "metaspace_bpe"}) {
      t.push_back(persona::Tokenizer::load(std::string(PERSONA_TEST_DATA_DIR "/text/") + name));
    }
    return t;
  }();
  return all;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  try {
    (void)persona::Tokenizer::from_json(input, {}, "fuzz");
  } catch (const persona::Error&) {
  }
  const persona::EncodeOptions plain{.add_special_tokens = false, .truncate = false, .pad = false};
  for (std::size_t k = 0; k < tokenizers().size(); ++k) {
    const persona::Tokenizer& t = tokenizers()[k];
    const std::vector<std::int32_t> ids = t.encode(input, plain);
    const std::string text = t.decode(ids);
    PERSONA_FUZZ_CHECK(persona::test::valid_utf8(text));
    if (k == 0) PERSONA_FUZZ_CHECK(t.encode(text, plain) == ids);  // byte-level BPE loses nothing
    persona::StreamDecoder stream(t);
    std::string streamed;
    for (const std::int32_t id : ids) {
      const std::string piece = stream.step(id);
      PERSONA_FUZZ_CHECK(persona::test::valid_utf8(piece));
      streamed += piece;
    }
    streamed += stream.finish();
    PERSONA_FUZZ_CHECK(streamed == text);
    (void)t.encode(input);  // with the file's truncation, padding and special tokens
  }
  return 0;
}
