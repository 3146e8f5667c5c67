// Tests of the io component: safetensors round trips, atomic writes, and the strict reader's answer to
// every kind of corrupt file (each prefix of a valid file, bad offsets, overlaps, gaps, overflowing
// shapes, random byte flips): always a persona::Error, never a crash or an out-of-bounds read (the
// sanitizer run checks the latter); FIFOs, devices and oversized files in a PEFT folder.
#include "test_support.hpp"

#include <persona/io/peft_adapter.hpp>
#include <persona/io/safetensors.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

using namespace persona;
using persona::test::random_tensor;
using persona::test::TempFolder;

namespace {

std::vector<std::byte> as_bytes(const std::string& s) {
  std::vector<std::byte> out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

// A file with the given header text and `data_bytes` zero bytes of data.
std::vector<std::byte> file_with_header(const std::string& header, std::size_t data_bytes) {
  std::vector<std::byte> out(8);
  for (std::size_t i = 0; i < 8; ++i) out[i] = static_cast<std::byte>((header.size() >> (8 * i)) & 0xff);
  const auto h = as_bytes(header);
  out.insert(out.end(), h.begin(), h.end());
  out.resize(out.size() + data_bytes);
  return out;
}

SafetensorsWriter sample_writer() {
  SafetensorsWriter w;
  w.add("a.weight", random_tensor({3, 5}, 40));
  const std::vector<std::uint16_t> halves = {to_f16(1.5f).bits, to_f16(-2.0f).bits, to_f16(0.25f).bits};
  w.add("b.half", SafetensorsDType::F16, {3}, std::as_bytes(std::span(halves)));
  const std::vector<std::uint16_t> brains = {to_bf16(3.0f).bits, to_bf16(-0.5f).bits};
  w.add("c.bf16", SafetensorsDType::BF16, {1, 2}, std::as_bytes(std::span(brains)));
  const std::vector<std::uint8_t> codes = {1, 2, 3, 4, 5, 6, 7};
  w.add("d.codes", SafetensorsDType::U8, {7}, std::as_bytes(std::span(codes)));
  w.add("e.empty", SafetensorsDType::I64, {0, 4}, {});
  w.set_metadata("format", "pt");
  w.set_metadata("persona.note", "{\"json\": inside}");
  return w;
}

}  // namespace

TEST_CASE("safetensors round trip in memory", "[io]") {
  const auto bytes = sample_writer().serialize();
  std::uint64_t header = 0;
  std::memcpy(&header, bytes.data(), 8);
  CHECK((8 + header) % 64 == 0);  // the data section starts 64-byte aligned

  const SafetensorsReader r = SafetensorsReader::parse(bytes, "sample");
  CHECK(r.metadata().at("format") == "pt");
  CHECK(r.metadata().at("persona.note") == "{\"json\": inside}");
  REQUIRE(r.tensors().size() == 5);
  CHECK(r.tensors()[0].name == "a.weight");  // file order
  const Tensor<float> a = r.read_f32("a.weight");
  const Tensor<float> expected = random_tensor({3, 5}, 40);
  CHECK(std::memcmp(a.data(), expected.data(), 15 * sizeof(float)) == 0);
  const Tensor<float> b = r.read_f32("b.half");
  CHECK(b(0) == 1.5f);
  CHECK(b(1) == -2.0f);
  CHECK(r.read_f32("c.bf16")(0, 1) == -0.5f);
  const SafetensorsTensor& d = r.tensor("d.codes");
  CHECK(d.dtype == SafetensorsDType::U8);
  CHECK(std::to_integer<int>(d.data[6]) == 7);
  CHECK(r.tensor("e.empty").numel() == 0);
  CHECK(r.contains("e.empty"));
  CHECK(!r.contains("nope"));
  PERSONA_REQUIRE_ERROR(r.tensor("nope"), not_found, "sample: no tensor 'nope'");
  PERSONA_REQUIRE_ERROR(r.read_f32("d.codes"), unsupported, "is U8, not F32, F16 or BF16");
}

TEST_CASE("safetensors files are written atomically and mapped back", "[io]") {
  const TempFolder dir("io");
  const auto path = dir.path / "adapter.safetensors";
  sample_writer().write(path);
  SafetensorsWriter second;
  second.add("only", random_tensor({2}, 41));
  second.write(path);  // replaces the first file whole
  const SafetensorsReader r = SafetensorsReader::open(path);
  CHECK(r.tensors().size() == 1);
  CHECK(r.source() == path.string());
  std::size_t files = 0;  // no temporary file is left behind
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir.path)) ++files;
  CHECK(files == 1);
  PERSONA_REQUIRE_ERROR(SafetensorsReader::open(dir.path / "missing.safetensors"), io_error, "missing.safetensors");
  PERSONA_REQUIRE_ERROR(second.write(dir.path / "no" / "such" / "folder.safetensors"), io_error, "folder.safetensors");
}

TEST_CASE("safetensors writer rejects bad tensors", "[io]") {
  SafetensorsWriter w;
  const std::vector<std::byte> six(6);
  PERSONA_REQUIRE_ERROR(w.add("x", SafetensorsDType::F32, {2}, six), shape_mismatch, "needs 8 bytes but 6");
  w.add("x", SafetensorsDType::U8, {6}, six);
  PERSONA_REQUIRE_ERROR(w.add("x", SafetensorsDType::U8, {6}, six), invalid_argument, "already added");
  PERSONA_REQUIRE_ERROR(w.add("__metadata__", SafetensorsDType::U8, {6}, six), invalid_argument, "reserved");
  PERSONA_REQUIRE_ERROR(w.add("y", SafetensorsDType::U8, {SIZE_MAX, 4}, six), shape_mismatch, "y");
}

TEST_CASE("Every truncation of a valid file is a corrupt_data Error", "[io]") {
  const auto bytes = sample_writer().serialize();
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    try {
      SafetensorsReader::parse(std::span(bytes).first(n), "truncated");
      FAIL("a file cut to " << n << " of " << bytes.size() << " bytes was accepted");
    } catch (const Error& e) {
      REQUIRE(e.code() == ErrorCode::corrupt_data);
    }
  }
}

TEST_CASE("Corrupt headers are Errors naming the file and the tensor", "[io]") {
  auto parse = [](const std::vector<std::byte>& b) { return SafetensorsReader::parse(b, "bad.safetensors"); };
  PERSONA_REQUIRE_ERROR(parse(file_with_header("[1, 2]", 0)), corrupt_data, "not a JSON object");
  PERSONA_REQUIRE_ERROR(parse(file_with_header("{\"a\": ", 0)), corrupt_data, "not valid JSON");
  PERSONA_REQUIRE_ERROR(parse(file_with_header(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4)),
                        corrupt_data,
                        "bad.safetensors: tensor 'w': data_offsets [0, 8] fall outside the 4-byte data section");
  PERSONA_REQUIRE_ERROR(parse(file_with_header(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8)),
                        corrupt_data, "tensor 'w': shape [3] of F32 needs 12 bytes but data_offsets give 8");
  PERSONA_REQUIRE_ERROR(
      parse(
          file_with_header(R"({"w": {"dtype": "F32", "shape": [4611686018427387904, 8], "data_offsets": [0, 8]}})", 8)),
      corrupt_data, "overflows");
  PERSONA_REQUIRE_ERROR(parse(file_with_header(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                                   "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}})",
                                               6)),
                        corrupt_data, "tensor 'b' starts at 2 but the previous one ends at 4 (overlap)");
  PERSONA_REQUIRE_ERROR(parse(file_with_header(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                                   "b": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}})",
                                               10)),
                        corrupt_data, "cover 8 bytes but the data section holds 10");
  PERSONA_REQUIRE_ERROR(parse(file_with_header(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}})", 6)),
                        corrupt_data, "gap");
  PERSONA_REQUIRE_ERROR(
      parse(file_with_header(R"({"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}})", 1)), unsupported,
      "tensor 'a' has dtype 'F8_E4M3'");
  PERSONA_REQUIRE_ERROR(parse(file_with_header(R"({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}})", 1)),
                        corrupt_data, "shape holds something");
  PERSONA_REQUIRE_ERROR(parse(file_with_header(R"({"a": {"dtype": "U8", "shape": [1]}})", 1)), corrupt_data,
                        "lacks dtype, shape or data_offsets");
  PERSONA_REQUIRE_ERROR(parse(file_with_header(R"({"__metadata__": {"k": 1}})", 0)), corrupt_data,
                        "__metadata__ value of 'k' is not a string");
  auto huge_length = file_with_header("{}", 0);
  huge_length[7] = std::byte{0x7f};
  PERSONA_REQUIRE_ERROR(parse(huge_length), corrupt_data, "exceeds the limit");
  auto past_end = file_with_header("{}", 0);
  past_end[0] = std::byte{200};
  PERSONA_REQUIRE_ERROR(parse(past_end), corrupt_data, "runs past the end");
}

TEST_CASE("Random byte flips never crash the reader", "[io]") {
  const auto valid = sample_writer().serialize();
  std::mt19937 rng(42);
  std::size_t accepted = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    auto bytes = valid;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      // Mostly the header, where the numbers are.
      const std::size_t at = rng() % 4 != 0 ? rng() % std::min<std::size_t>(bytes.size(), 400) : rng() % bytes.size();
      bytes[at] = static_cast<std::byte>(rng());
    }
    try {
      const SafetensorsReader r = SafetensorsReader::parse(bytes, "fuzzed");
      for (const SafetensorsTensor& t : r.tensors()) {
        // What is accepted is consistent: each tensor's bytes lie inside the buffer and match its shape.
        REQUIRE(t.data.data() >= bytes.data());
        REQUIRE(t.data.data() + t.data.size() <= bytes.data() + bytes.size());
        REQUIRE(t.data.size() == t.numel() * size_of(t.dtype));
      }
      ++accepted;
    } catch (const Error& e) {
      REQUIRE((e.code() == ErrorCode::corrupt_data || e.code() == ErrorCode::unsupported));
    }
  }
  CHECK(accepted > 0);  // flips inside tensor data leave a valid file
}

TEST_CASE("A PEFT folder with a FIFO or /dev/zero in a file's place is an Error, not a hang or a memory blow-up",
          "[io]") {
  const TempFolder folder("hostile");
  const std::filesystem::path& dir = folder.path;
  std::filesystem::create_symlink("/dev/zero", dir / "adapter_config.json");
  PERSONA_REQUIRE_ERROR(read_peft_adapter(dir, kPublicTenant), io_error, "adapter_config.json: not a regular file");
  std::filesystem::remove(dir / "adapter_config.json");
  std::ofstream(dir / "adapter_config.json") << R"({"peft_type": "LORA", "r": 2, "lora_alpha": 4})";
  const auto weights = dir / "adapter_model.safetensors";
  REQUIRE(::mkfifo(weights.c_str(), 0600) == 0);
  PERSONA_REQUIRE_ERROR(read_peft_adapter(dir, kPublicTenant), io_error, "not a regular file (a FIFO)");
  // An oversized config (more than 16 MiB) is refused before it is read.
  std::filesystem::remove(weights);
  std::filesystem::resize_file(dir / "adapter_config.json", (16u << 20) + 1);
  PERSONA_REQUIRE_ERROR(read_peft_adapter(dir, kPublicTenant), io_error, "bytes allowed here");
}
