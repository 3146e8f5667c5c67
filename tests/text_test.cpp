// Tokenizers against Hugging Face tokenizers itself: tests/data/text (tools/make_tokenizer_fixtures.py)
// holds ~2,000 real lines of this machine's text and, for a byte-level BPE (Llama 3's pre-tokenizer), a
// Metaspace BPE, a SentencePiece BPE with byte fallback converted by transformers, MiniLM's WordPiece and
// the SentencePiece model itself, the ids and decoded text tokenizers (or sentencepiece) gives for each.
#include "test_support.hpp"
#include "utf8_check.hpp"

#include <persona/core/error.hpp>
#include <persona/core/threading.hpp>
#include <persona/text/tokenizer.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using namespace persona;

namespace {

const std::filesystem::path kText = PERSONA_TEST_DATA_DIR "/text";
const std::vector<std::string> kTokenizers{"llama3_bpe", "metaspace_bpe", "spm_llama", "minilm", "spm_model", "tiny96"};

nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  REQUIRE(in);
  return nlohmann::json::parse(in);
}

std::vector<std::string> corpus() { return read_json(kText / "corpus.json").get<std::vector<std::string>>(); }

std::vector<std::vector<std::int32_t>> expected_ids(const std::string& name) {
  std::ifstream in(kText / name / "ids.txt");
  REQUIRE(in);
  std::vector<std::vector<std::int32_t>> all;
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::vector<std::int32_t> ids;
    for (std::int32_t id = 0; words >> id;) ids.push_back(id);
    all.push_back(std::move(ids));
  }
  return all;
}

// MiniLM's tokenizer.json pads every encoding to 128; the fixture's ids are without.
EncodeOptions options_for(const std::string& name) { return {.pad = name != "minilm"}; }

}  // namespace

TEST_CASE("Every tokenizer gives tokenizers' ids and decoded text on every corpus line", "[text]") {
  const std::vector<std::string> lines = corpus();
  REQUIRE(lines.size() > 1500);
  for (const std::string& name : kTokenizers) {
    DYNAMIC_SECTION(name) {
      const Tokenizer tokenizer = Tokenizer::load(kText / name);
      const auto ids = expected_ids(name);
      REQUIRE(ids.size() == lines.size());
      const nlohmann::json decoded = read_json(kText / name / "decoded.json");
      std::size_t id_mismatches = 0, text_mismatches = 0;
      for (std::size_t i = 0; i < lines.size(); ++i) {
        const std::vector<std::int32_t> got = tokenizer.encode(lines[i], options_for(name));
        if (got != ids[i] && id_mismatches++ < 3) {
          INFO("line " << i << ": '" << lines[i] << "'");
          CHECK(got == ids[i]);
        }
        for (const auto& [key, skip] : {std::pair{"decoded", false}, std::pair{"decoded_skip", true}}) {
          const std::string want = decoded[key].value(std::to_string(i), lines[i]);
          const std::string text = tokenizer.decode(ids[i], skip);
          if (text != want && text_mismatches++ < 3) {
            INFO("line " << i << " (" << key << "): '" << lines[i] << "'");
            CHECK(text == want);
          }
        }
      }
      CHECK(id_mismatches == 0);
      CHECK(text_mismatches == 0);
    }
  }
}

TEST_CASE("Batch encoding equals encoding one by one on any thread count", "[text]") {
  const std::vector<std::string> lines = corpus();
  for (const std::string& name : {std::string("llama3_bpe"), std::string("minilm")}) {
    const Tokenizer tokenizer = Tokenizer::load(kText / name);
    for (const int threads : {1, 2}) {
      ScopedNumThreads limit(threads);
      const auto batch = tokenizer.encode_batch(lines, options_for(name));
      REQUIRE(batch.size() == lines.size());
      for (std::size_t i = 0; i < lines.size(); ++i) REQUIRE(batch[i] == tokenizer.encode(lines[i], options_for(name)));
    }
  }
  // MiniLM's file pads to 128 with [PAD] (id 0) and truncates to 128, as tokenizers' encode does.
  const Tokenizer minilm = Tokenizer::load(kText / "minilm");
  const std::vector<std::int32_t> padded = minilm.encode("hello world");
  REQUIRE(padded.size() == 128);
  CHECK(padded[0] == 101);
  CHECK(padded[3] == 102);
  CHECK(padded[4] == 0);
  CHECK(padded.back() == 0);
  std::string long_text;
  for (int i = 0; i < 300; ++i) long_text += "word ";
  const std::vector<std::int32_t> truncated = minilm.encode(long_text, {.pad = false});
  CHECK(truncated.size() == 128);
  CHECK(truncated.back() == 102);
  CHECK(minilm.encode(long_text, {.truncate = false, .pad = false}).size() == 302);
  CHECK(minilm.encode("hello", {.add_special_tokens = false, .pad = false}).size() == 1);
}

TEST_CASE("Streaming detokenization emits whole characters and ends with decode's text", "[text]") {
  const std::vector<std::string> lines = corpus();
  for (const std::string& name : kTokenizers) {
    DYNAMIC_SECTION(name) {
      const Tokenizer tokenizer = Tokenizer::load(kText / name);
      const auto ids = expected_ids(name);
      std::mt19937 rng(5);
      const auto check = [&](const std::vector<std::int32_t>& sequence, bool skip) {
        StreamDecoder stream(tokenizer, skip);
        std::string joined;
        for (const std::int32_t id : sequence) {
          const std::string piece = stream.step(id);
          REQUIRE(test::valid_utf8(piece));
          joined += piece;
          REQUIRE(joined == stream.text());
        }
        joined += stream.finish();
        REQUIRE(joined == tokenizer.decode(sequence, skip));
      };
      for (std::size_t i = 0; i < lines.size(); i += 3) check(ids[i], i % 2 == 0);
      // Random ids: byte tokens that split characters, special tokens anywhere.
      std::uniform_int_distribution<std::int32_t> any(0, static_cast<std::int32_t>(tokenizer.vocab_size()) - 1);
      for (int round = 0; round < 200; ++round) {
        std::vector<std::int32_t> sequence(static_cast<std::size_t>(1 + round % 40));
        for (std::int32_t& id : sequence) {
          do id = any(rng);
          while (!tokenizer.id_to_token(id));
        }
        check(sequence, round % 2 == 1);
      }
    }
  }
  // A character cut across byte-fallback tokens waits for its last byte.
  const Tokenizer spm = Tokenizer::load(kText / "spm_llama");
  StreamDecoder stream(spm);
  // U+1F9A9 (a flamingo), not in the vocabulary: "▁" then its four bytes.
  const auto flamingo = spm.encode("\xF0\x9F\xA6\xA9", {.add_special_tokens = false});
  REQUIRE(flamingo.size() >= 4);
  std::string out;
  for (std::size_t i = 0; i + 1 < flamingo.size(); ++i) out += stream.step(flamingo[i]);
  CHECK(out.find("\xF0") == std::string::npos);
  out += stream.step(flamingo.back());
  out += stream.finish();
  CHECK(out == spm.decode(flamingo));
}

TEST_CASE("Tokenizer bad input: ill-formed UTF-8, unknown components, unknown ids", "[text]") {
  const Tokenizer llama = Tokenizer::load(kText / "llama3_bpe");
  // Ill-formed UTF-8 reads as U+FFFD, one per maximal subpart.
  CHECK(llama.encode("a\xC3(b\xF0\x9F\x99") == llama.encode("a\xEF\xBF\xBD(b\xEF\xBF\xBD"));
  CHECK(llama.encode("\xED\xA0\x80") == llama.encode("\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"));
  PERSONA_REQUIRE_ERROR(llama.decode(std::vector<std::int32_t>{5, 1 << 20}), out_of_range, "token id 1048576");
  PERSONA_REQUIRE_ERROR(llama.decode(std::vector<std::int32_t>{-1}), out_of_range, "token id -1");
  StreamDecoder stream(llama);
  PERSONA_REQUIRE_ERROR(stream.step(1 << 20), out_of_range, "token id 1048576");

  std::ifstream in(kText / "llama3_bpe" / "tokenizer.json");
  nlohmann::json j = nlohmann::json::parse(in);
  nlohmann::json c = j;
  c["model"]["type"] = "Unigram";
  PERSONA_REQUIRE_ERROR(Tokenizer::from_json(c.dump()), unsupported, "model type 'Unigram'");
  c = j;
  c["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", ""}};
  PERSONA_REQUIRE_ERROR(Tokenizer::from_json(c.dump()), unsupported, "normalizer type 'Precompiled'");
  c = j;
  c["pre_tokenizer"]["pretokenizers"][1]["type"] = "UnicodeScripts";
  PERSONA_REQUIRE_ERROR(Tokenizer::from_json(c.dump()), unsupported, "pre_tokenizer type 'UnicodeScripts'");
  c = j;
  c["decoder"] = {{"type", "CTC"}};
  PERSONA_REQUIRE_ERROR(Tokenizer::from_json(c.dump()), unsupported, "decoder type 'CTC'");
  c = j;
  c["model"]["dropout"] = 0.1;
  PERSONA_REQUIRE_ERROR(Tokenizer::from_json(c.dump()), unsupported, "dropout");
  c = j;
  c["model"]["merges"][0] = nlohmann::json::array({"no-such-token", "x"});
  PERSONA_REQUIRE_ERROR(Tokenizer::from_json(c.dump()), corrupt_data, "merge 0");
  c = j;
  c["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  PERSONA_REQUIRE_ERROR(Tokenizer::from_json(c.dump()), invalid_argument, "not a valid regex");
  c = j;
  c.erase("model");
  PERSONA_REQUIRE_ERROR(Tokenizer::from_json(c.dump()), corrupt_data, "no 'model'");
  PERSONA_REQUIRE_ERROR(Tokenizer::from_json("[1, 2"), corrupt_data, "not a JSON object");
  PERSONA_REQUIRE_ERROR(Tokenizer::load(kText), not_found, "no tokenizer.json and no tokenizer.model");
}

TEST_CASE("Tokenizer facts: specials, config, lookups", "[text]") {
  const Tokenizer llama = Tokenizer::load(kText / "llama3_bpe");
  const auto bos = llama.token_to_id("<|begin_of_text|>");
  REQUIRE(bos);
  CHECK(llama.is_special(*bos));
  CHECK(llama.encode("hi").front() == *bos);
  CHECK(llama.encode("hi", {.add_special_tokens = false}).front() != *bos);
  CHECK(llama.id_to_token(*bos) == "<|begin_of_text|>");
  CHECK(llama.config().bos_token == "<|begin_of_text|>");
  CHECK(llama.config().eos_token == "<|eot_id|>");
  CHECK(llama.config().model_max_length == 8192);
  CHECK(llama.vocab_size() == 4096);
  // An added token in the text is one id, and skipped when asked.
  const auto ids = llama.encode("a<|eot_id|>b", {.add_special_tokens = false});
  CHECK(std::count(ids.begin(), ids.end(), *llama.token_to_id("<|eot_id|>")) == 1);
  CHECK(llama.decode(ids, true) == "ab");
  const Tokenizer minilm = Tokenizer::load(kText / "minilm");
  CHECK(minilm.config().model_max_length == 512);
  CHECK(minilm.decode(minilm.encode("Hello, World!", {.pad = false}), true) == "hello, world!");
}
