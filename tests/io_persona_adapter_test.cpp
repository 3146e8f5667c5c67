// The persona adapter file's integrity: the checksum covers every byte (metadata included) and catches
// single flips, flips of two words' high bits and bursts; behind a recomputed checksum, every field the
// reader trusts is checked before use, and sizes before anything is allocated.
#include "test_support.hpp"

#include <persona/core/file_io.hpp>
#include <persona/io/persona_adapter.hpp>
#include <persona/io/safetensors.hpp>
#include <persona/quant/quantize.hpp>

#include <nlohmann/json.hpp>

#include <unistd.h>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <string_view>

using namespace persona;
using persona::test::random_tensor;
using persona::test::TempFolder;

namespace {

// Two modules: A int4 asymmetric (bf16 scales) and B f32 with alpha 16; A NF4 and B f32 rank-stabilized.
LoraAdapter sample_adapter() {
  LoraAdapter adapter("style", 7);
  adapter.add({0, "q_proj"}, LoraModule(LoraMatrix(quantize(random_tensor({8, 64}, 1), {4, 32, false, DType::bf16})),
                                        LoraMatrix(random_tensor({48, 8}, 2)), 16.0f));
  adapter.add({1, "v_proj"}, LoraModule(LoraMatrix(quantize(random_tensor({8, 64}, 3), QuantSpec::nf4(32))),
                                        LoraMatrix(random_tensor({48, 8}, 4)), 8.0f, LoraScaling::rank_stabilized));
  return adapter;
}

std::vector<std::byte> bytes_of(const std::filesystem::path& path) { return read_file(path); }

std::filesystem::path put(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return path;
}

// Recomputes the checksum as the writer does (docs/formats.md): its 16 digits count as '0'.
std::vector<std::byte> resealed(std::vector<std::byte> file) {
  const std::string_view field = "\"persona.checksum\":\"";
  const std::string_view text(reinterpret_cast<const char*>(file.data()), file.size());
  const std::size_t digits = text.find(field) + field.size();
  REQUIRE(digits > field.size());
  std::memset(file.data() + digits, '0', 16);
  const std::string sum = fmt::format("{:016x}", file_checksum(file));
  std::memcpy(file.data() + digits, sum.data(), 16);
  return file;
}

// The file again with its persona.adapter description edited (and, where asked, its tensors replaced),
// sealed with a valid checksum: damage that only the reader's own checks can catch.
std::vector<std::byte> rewritten(const std::vector<std::byte>& file, const std::function<void(nlohmann::json&)>& edit,
                                 const std::map<std::string, std::vector<std::byte>>& replace = {},
                                 const std::string& version = "3") {
  const SafetensorsReader reader = SafetensorsReader::parse(file);
  nlohmann::json description = nlohmann::json::parse(reader.metadata().at("persona.adapter"));
  edit(description);
  SafetensorsWriter w;
  for (const SafetensorsTensor& t : reader.tensors()) {
    if (const auto it = replace.find(t.name); it != replace.end()) {
      w.add(t.name, SafetensorsDType::U8, {it->second.size()}, it->second);
    } else {
      w.add(t.name, t.dtype, t.shape, t.data);
    }
  }
  w.set_metadata("persona.format", "persona-lora-adapter");
  w.set_metadata("persona.version", version);
  w.set_metadata("persona.adapter", description.dump());
  w.set_metadata("persona.checksum", "0000000000000000");
  return resealed(w.serialize());
}

nlohmann::json& module_of(nlohmann::json& description, const std::string& name) {
  for (auto& m : description["modules"]) {
    if (m["module"] == name) return m;
  }
  FAIL("no module " << name);
  return description;
}

}  // namespace

TEST_CASE("The persona adapter checksum covers every byte and catches flips of every kind", "[io][persona]") {
  const TempFolder folder("adapter_file");
  const LoraAdapter adapter = sample_adapter();
  write_persona_adapter(adapter, folder.path / "a.persona");
  const std::vector<std::byte> good = bytes_of(folder.path / "a.persona");
  REQUIRE(read_persona_adapter(folder.path / "a.persona").find(0, "q_proj")->alpha() == 16.0f);
  const auto bad = folder.path / "bad.persona";
  auto refused = [&](const std::vector<std::byte>& damaged) {
    try {
      (void)read_persona_adapter(put(bad, damaged));
      return false;
    } catch (const Error& e) {
      // unsupported where the damage hit the version digit: the file then names another version.
      INFO(e.what());
      const bool clear = e.code() == ErrorCode::corrupt_data || e.code() == ErrorCode::unsupported;
      CHECK(clear);
      return clear;
    }
  };

  // The alpha of the first module, 16 -> 36, a one-bit flip ('1' is 0x31, '3' is 0x33) in the metadata.
  {
    const std::string_view text(reinterpret_cast<const char*>(good.data()), good.size());
    const std::size_t at = text.find("\\\"alpha\\\":16.0");
    REQUIRE(at != std::string_view::npos);
    auto flipped = good;
    flipped[at + 10] ^= std::byte{0x02};
    PERSONA_REQUIRE_ERROR(read_persona_adapter(put(bad, flipped)), corrupt_data, "checksum mismatch");
  }
  std::uint64_t header = 0;
  std::memcpy(&header, good.data(), 8);
  const std::size_t end_of_header = 8 + static_cast<std::size_t>(header);
  // Every byte of the length and the header (the metadata included), and a stride through the data,
  // each with one bit flipped.
  std::size_t missed = 0;
  for (std::size_t at = 0; at < good.size(); at += at < end_of_header ? 1 : 7) {
    auto flipped = good;
    flipped[at] ^= std::byte{static_cast<unsigned char>(1u << (at % 8))};
    missed += refused(flipped) ? 0 : 1;
  }
  CHECK(missed == 0);
  // Bit 63 of two 64-bit words (the FNV chain cancelled these), and bursts of random bytes.
  std::mt19937 rng(16);
  const std::size_t words = good.size() / 8;
  for (int trial = 0; trial < 300; ++trial) {
    auto flipped = good;
    const std::size_t i = rng() % words, j = (i + 1 + rng() % (words - 1)) % words;
    flipped[8 * i + 7] ^= std::byte{0x80};
    flipped[8 * j + 7] ^= std::byte{0x80};
    missed += refused(flipped) ? 0 : 1;
  }
  for (int trial = 0; trial < 300; ++trial) {
    auto burst = good;
    const std::size_t length = 1 + rng() % 64, at = rng() % (good.size() - length);
    bool changed = false;
    for (std::size_t k = 0; k < length; ++k) {
      const auto value = static_cast<std::byte>(rng());
      changed = changed || value != burst[at + k];
      burst[at + k] = value;
    }
    if (changed) missed += refused(burst) ? 0 : 1;
  }
  CHECK(missed == 0);
  // The test's own resealing reproduces the writer's checksum.
  const auto same = rewritten(good, [](nlohmann::json&) {});
  CHECK(same == good);
  // The checksum field must be there exactly once.
  {
    const SafetensorsReader reader = SafetensorsReader::parse(good);
    SafetensorsWriter w;
    for (const SafetensorsTensor& t : reader.tensors()) w.add(t.name, t.dtype, t.shape, t.data);
    for (const auto& [key, value] : reader.metadata()) w.set_metadata(key, value);
    // A key ending in an escaped quote puts the field's text in the header a second time.
    w.set_metadata("a\"persona.checksum", "0000000000000000");
    PERSONA_REQUIRE_ERROR(read_persona_adapter(put(bad, w.serialize())), corrupt_data,
                          "does not hold the field persona.checksum exactly once");
  }
}

TEST_CASE("Behind a recomputed checksum, persona adapter fields are checked before they are used", "[io][persona]") {
  const TempFolder folder("adapter_file");
  write_persona_adapter(sample_adapter(), folder.path / "a.persona");
  const std::vector<std::byte> good = bytes_of(folder.path / "a.persona");
  const auto bad = folder.path / "bad.persona";
  const auto load = [&](const std::vector<std::byte>& file) { return read_persona_adapter(put(bad, file)); };

  // Unknown enum values are corrupt_data, not silently rank-stabilized or linear.
  PERSONA_REQUIRE_ERROR(load(rewritten(good, [](auto& d) { module_of(d, "q_proj")["scaling"] = "rslora"; })),
                        corrupt_data, "scaling is 'rslora'; expected one of standard, rank_stabilized");
  PERSONA_REQUIRE_ERROR(load(rewritten(good, [](auto& d) { module_of(d, "v_proj")["a"]["codebook"] = "nf5"; })),
                        corrupt_data, "codebook is 'nf5'; expected one of linear, nf4");
  PERSONA_REQUIRE_ERROR(load(rewritten(good, [](auto& d) { module_of(d, "q_proj")["b"]["format"] = "f64"; })),
                        corrupt_data, "format is 'f64'; expected one of f32, f16, bf16, quantized");
  PERSONA_REQUIRE_ERROR(load(rewritten(good, [](auto& d) { module_of(d, "q_proj")["a"]["scale_type"] = "i8"; })),
                        corrupt_data, "bad.persona");
  PERSONA_REQUIRE_ERROR(load(rewritten(good, [](auto& d) { module_of(d, "q_proj")["dora"] = "yes"; })), corrupt_data,
                        "persona.adapter is malformed");
  PERSONA_REQUIRE_ERROR(load(rewritten(good, [](auto& d) { module_of(d, "q_proj")["a"]["bits"] = 5; })), corrupt_data,
                        "bad.persona");
  // A small file claiming a [2^20, 2^16] int4 matrix (32 GiB of codes) is refused before anything is
  // allocated.
  PERSONA_REQUIRE_ERROR(load(rewritten(good,
                                       [](auto& d) {
                                         module_of(d, "q_proj")["a"]["rows"] = std::size_t{1} << 20;
                                         module_of(d, "q_proj")["a"]["cols"] = std::size_t{1} << 16;
                                       })),
                        corrupt_data, "needs 34359738368 bytes of U8");
  // Rank 2^63 wrapped both planes to 0 bytes; with empty planes in the file it loaded a matrix with no
  // storage. Now the sizes overflow visibly.
  PERSONA_REQUIRE_ERROR(
      load(rewritten(good, [](auto& d) { module_of(d, "q_proj")["a"]["rows"] = std::size_t{1} << 63; },
                     {{"layers.0.q_proj.lora_A.codes", {}},
                      {"layers.0.q_proj.lora_A.scales", {}},
                      {"layers.0.q_proj.lora_A.minima", {}}})),
      corrupt_data, "needs more bytes than size_t holds");
  // A float matrix whose metadata disagrees with its tensor.
  PERSONA_REQUIRE_ERROR(load(rewritten(good, [](auto& d) { module_of(d, "q_proj")["b"]["rows"] = 4096; })),
                        corrupt_data, "has shape [48, 8] but the metadata says [4096, 8]");
  // Versions: the older ones (their checksum left the metadata unchecked) and newer ones are refused,
  // naming both.
  PERSONA_REQUIRE_ERROR(load(rewritten(
                            good, [](auto&) {}, {}, "2")),
                        unsupported,
                        "format version 2 is no longer read (its checksum leaves the metadata unchecked); this "
                        "persona reads version 3");
  PERSONA_REQUIRE_ERROR(load(rewritten(
                            good, [](auto&) {}, {}, "4")),
                        unsupported, "format version 4 is newer than this persona reads (version 3)");
  PERSONA_REQUIRE_ERROR(load(rewritten(
                            good, [](auto&) {}, {}, "3x")),
                        corrupt_data, "persona.version '3x' is not a version number");

  // Random damage to the header behind a recomputed checksum: each file loads or is corrupt_data.
  std::uint64_t header = 0;
  std::memcpy(&header, good.data(), 8);
  std::mt19937 rng(17);
  for (int trial = 0; trial < 400; ++trial) {
    auto damaged = good;
    damaged[8 + rng() % header] = static_cast<std::byte>(rng());
    const std::string_view text(reinterpret_cast<const char*>(damaged.data()), damaged.size());
    if (text.find("\"persona.checksum\":\"") != std::string_view::npos) damaged = resealed(std::move(damaged));
    try {
      (void)load(damaged);
    } catch (const Error& e) {
      INFO(e.what());
      CHECK((e.code() == ErrorCode::corrupt_data || e.code() == ErrorCode::unsupported));
    }
  }
}
