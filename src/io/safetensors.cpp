// The safetensors reader treats every file as hostile: each number from the header is checked before it
// is used, so a corrupt or malicious file is an Error, never a read out of bounds.
#include "persona/io/safetensors.hpp"

#include "persona/core/dtype.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <numeric>

namespace persona {
namespace {

constexpr std::uint64_t kMaxHeaderBytes = 100ull << 20;  // as the reference implementation
constexpr std::size_t kDataAlignment = 64;

struct DTypeInfo {
  SafetensorsDType dtype;
  std::string_view name;
  std::size_t size;
};
constexpr std::array<DTypeInfo, 13> kDTypes = {{{SafetensorsDType::F64, "F64", 8},
                                                {SafetensorsDType::F32, "F32", 4},
                                                {SafetensorsDType::F16, "F16", 2},
                                                {SafetensorsDType::BF16, "BF16", 2},
                                                {SafetensorsDType::I64, "I64", 8},
                                                {SafetensorsDType::I32, "I32", 4},
                                                {SafetensorsDType::I16, "I16", 2},
                                                {SafetensorsDType::I8, "I8", 1},
                                                {SafetensorsDType::U64, "U64", 8},
                                                {SafetensorsDType::U32, "U32", 4},
                                                {SafetensorsDType::U16, "U16", 2},
                                                {SafetensorsDType::U8, "U8", 1},
                                                {SafetensorsDType::BOOL, "BOOL", 1}}};

[[noreturn]] void corrupt(const std::string& source, const std::string& what) {
  PERSONA_THROW_AT("SafetensorsReader", corrupt_data, "{}: {}", source, what);
}

// Byte count of a tensor; nullopt-like false if it overflows.
bool byte_count(SafetensorsDType dtype, const std::vector<std::size_t>& shape, std::size_t& bytes) {
  bytes = size_of(dtype);
  for (std::size_t d : shape) {
    if (__builtin_mul_overflow(bytes, d, &bytes)) return false;
  }
  return true;
}

// 16-bit floats from (possibly unaligned) file bytes to f32, through the vectorized conversion in
// L1-sized chunks.
template <class Half>
void widen(std::span<const std::byte> bytes, std::span<float> out) {
  constexpr std::size_t kChunk = 2048;
  std::array<Half, kChunk> chunk;
  for (std::size_t i = 0; i < out.size(); i += kChunk) {
    const std::size_t n = std::min(kChunk, out.size() - i);
    std::memcpy(chunk.data(), bytes.data() + i * sizeof(Half), n * sizeof(Half));
    convert(std::span<const Half>(chunk.data(), n), out.subspan(i, n));
  }
}

}  // namespace

std::string_view to_string(SafetensorsDType dtype) noexcept { return kDTypes[static_cast<std::size_t>(dtype)].name; }
std::size_t size_of(SafetensorsDType dtype) noexcept { return kDTypes[static_cast<std::size_t>(dtype)].size; }

std::size_t SafetensorsTensor::numel() const noexcept {
  return std::accumulate(shape.begin(), shape.end(), std::size_t{1}, std::multiplies<>());
}

// ------------------------------------------------------------------------------------------- reader

SafetensorsReader SafetensorsReader::open(const std::filesystem::path& path) {
  std::shared_ptr<MappedFile> file = MappedFile::open(path);
  SafetensorsReader reader = parse(file->bytes(), path.string());
  reader.mapping_ = std::move(file);
  return reader;
}

SafetensorsReader SafetensorsReader::parse(std::span<const std::byte> bytes, std::string source) {
  SafetensorsReader reader;
  reader.source_ = std::move(source);
  const std::string& src = reader.source_;
  if (bytes.size() < 8) corrupt(src, fmt::format("{} bytes is too short for the 8-byte header length", bytes.size()));
  std::uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i)
    header_size = (header_size << 8) | std::to_integer<std::uint64_t>(bytes[static_cast<std::size_t>(i)]);
  if (header_size > kMaxHeaderBytes)
    corrupt(src, fmt::format("header length {} exceeds the limit of {} bytes", header_size, kMaxHeaderBytes));
  if (header_size > bytes.size() - 8) {
    corrupt(src, fmt::format("header length {} runs past the end of the {}-byte file", header_size, bytes.size()));
  }
  const auto* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
  const std::string_view header(header_begin, static_cast<std::size_t>(header_size));
  if (header.empty() || header.front() != '{') corrupt(src, "the header is not a JSON object (first byte is not '{')");
  const nlohmann::json json = nlohmann::json::parse(header.begin(), header.end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) corrupt(src, "the header is not valid JSON");

  const std::span<const std::byte> data = bytes.subspan(8 + static_cast<std::size_t>(header_size));
  struct Range {
    std::uint64_t begin, end;
    std::size_t index;
  };
  std::vector<Range> ranges;
  for (const auto& [name, entry] : json.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) corrupt(src, "__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) corrupt(src, fmt::format("__metadata__ value of '{}' is not a string", key));
        reader.metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets")) {
      corrupt(src, fmt::format("tensor '{}' lacks dtype, shape or data_offsets", name));
    }
    const auto& dtype_json = entry["dtype"];
    if (!dtype_json.is_string()) corrupt(src, fmt::format("tensor '{}': dtype is not a string", name));
    const auto dtype_name = dtype_json.get<std::string>();
    const auto known =
        std::find_if(kDTypes.begin(), kDTypes.end(), [&](const DTypeInfo& d) { return d.name == dtype_name; });
    if (known == kDTypes.end()) {
      PERSONA_THROW_AT("SafetensorsReader", unsupported, "{}: tensor '{}' has dtype '{}', which persona does not read",
                       src, name, dtype_name);
    }
    SafetensorsTensor tensor{name, known->dtype, {}, {}};
    const auto& shape = entry["shape"];
    if (!shape.is_array()) corrupt(src, fmt::format("tensor '{}': shape is not an array", name));
    for (const auto& d : shape) {
      if (!d.is_number_unsigned())
        corrupt(src, fmt::format("tensor '{}': shape holds something not a non-negative integer", name));
      tensor.shape.push_back(d.get<std::size_t>());
    }
    const auto& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      corrupt(src, fmt::format("tensor '{}': data_offsets is not two non-negative integers", name));
    }
    const auto begin = offsets[0].get<std::uint64_t>(), end = offsets[1].get<std::uint64_t>();
    if (begin > end || end > data.size()) {
      corrupt(src, fmt::format("tensor '{}': data_offsets [{}, {}] fall outside the {}-byte data section", name, begin,
                               end, data.size()));
    }
    std::size_t expected = 0;
    if (!byte_count(tensor.dtype, tensor.shape, expected)) {
      corrupt(src,
              fmt::format("tensor '{}': shape [{}] of {} overflows", name, fmt::join(tensor.shape, ", "), dtype_name));
    }
    if (expected != end - begin) {
      corrupt(src, fmt::format("tensor '{}': shape [{}] of {} needs {} bytes but data_offsets give {}", name,
                               fmt::join(tensor.shape, ", "), dtype_name, expected, end - begin));
    }
    tensor.data = data.subspan(static_cast<std::size_t>(begin), static_cast<std::size_t>(end - begin));
    ranges.push_back({begin, end, reader.tensors_.size()});
    reader.tensors_.push_back(std::move(tensor));
  }
  // The ranges must tile the data section: this also rules out two names aliasing the same bytes.
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  std::uint64_t expected_begin = 0;
  std::vector<SafetensorsTensor> ordered;
  for (const Range& r : ranges) {
    if (r.begin != expected_begin) {
      corrupt(src, fmt::format("tensor '{}' starts at {} but the previous one ends at {} ({})",
                               reader.tensors_[r.index].name, r.begin, expected_begin,
                               r.begin < expected_begin ? "overlap" : "gap"));
    }
    expected_begin = r.end;
    ordered.push_back(std::move(reader.tensors_[r.index]));
  }
  if (expected_begin != data.size()) {
    corrupt(src, fmt::format("the tensors cover {} bytes but the data section holds {}", expected_begin, data.size()));
  }
  reader.tensors_ = std::move(ordered);
  return reader;
}

bool SafetensorsReader::contains(std::string_view name) const noexcept {
  return std::any_of(tensors_.begin(), tensors_.end(), [&](const SafetensorsTensor& t) { return t.name == name; });
}

const SafetensorsTensor& SafetensorsReader::tensor(std::string_view name) const {
  const auto it =
      std::find_if(tensors_.begin(), tensors_.end(), [&](const SafetensorsTensor& t) { return t.name == name; });
  PERSONA_CHECK_CODE(not_found, it != tensors_.end(), "{}: no tensor '{}'", source_, name);
  return *it;
}

void SafetensorsReader::release_pages(std::string_view name) const {
  if (mapping_) mapping_->release(tensor(name).data);
}

Tensor<float> SafetensorsReader::read_f32(std::string_view name) const {
  const SafetensorsTensor& t = tensor(name);
  PERSONA_CHECK_CODE(unsupported, t.shape.size() <= kMaxRank, "{}: tensor '{}' has rank {}, more than {}", source_,
                     name, t.shape.size(), kMaxRank);
  Shape shape = Shape::of_rank(t.shape.size());
  for (std::size_t i = 0; i < t.shape.size(); ++i) shape[i] = t.shape[i];
  Tensor<float> out(shape);
  const std::size_t n = t.numel();
  switch (t.dtype) {
    case SafetensorsDType::F32: std::memcpy(out.data(), t.data.data(), n * 4); break;
    case SafetensorsDType::F16: widen<f16>(t.data, {out.data(), n}); break;
    case SafetensorsDType::BF16: widen<bf16>(t.data, {out.data(), n}); break;
    default:
      PERSONA_THROW(unsupported, "{}: tensor '{}' is {}, not F32, F16 or BF16", source_, name, to_string(t.dtype));
  }
  return out;
}

// ------------------------------------------------------------------------------------------- writer

void SafetensorsWriter::add(std::string name, SafetensorsDType dtype, std::vector<std::size_t> shape,
                            std::span<const std::byte> data) {
  PERSONA_CHECK(name != "__metadata__", "'__metadata__' is reserved and cannot name a tensor");
  PERSONA_CHECK(std::none_of(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.name == name; }),
                "a tensor named '{}' was already added", name);
  std::size_t expected = 0;
  PERSONA_CHECK_CODE(shape_mismatch, byte_count(dtype, shape, expected) && expected == data.size(),
                     "tensor '{}': shape [{}] of {} needs {} bytes but {} were given", name, fmt::join(shape, ", "),
                     to_string(dtype), expected, data.size());
  entries_.push_back({std::move(name), dtype, std::move(shape), std::vector<std::byte>(data.begin(), data.end())});
}

void SafetensorsWriter::add(std::string name, TensorView<const float> tensor) {
  PERSONA_CHECK(tensor.empty() || tensor.is_contiguous(), "tensor '{}' must be contiguous", name);
  const std::vector<std::size_t> shape(tensor.shape().dims().begin(), tensor.shape().dims().end());
  add(std::move(name), SafetensorsDType::F32, shape,
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(tensor.data()), tensor.numel() * sizeof(float)));
}

void SafetensorsWriter::set_metadata(std::string key, std::string value) {
  metadata_[std::move(key)] = std::move(value);
}

std::vector<std::byte> SafetensorsWriter::serialize() const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  std::uint64_t offset = 0;
  for (const Entry& e : entries_) {
    header[e.name] = {
        {"dtype", to_string(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + e.data.size()}}};
    offset += e.data.size();
  }
  std::string text = header.dump();
  text.append((kDataAlignment - (8 + text.size()) % kDataAlignment) % kDataAlignment, ' ');
  std::vector<std::byte> out(8 + text.size() + offset);
  for (std::size_t i = 0; i < 8; ++i) out[i] = static_cast<std::byte>((text.size() >> (8 * i)) & 0xff);
  std::memcpy(out.data() + 8, text.data(), text.size());
  std::size_t position = 8 + text.size();
  for (const Entry& e : entries_) {
    if (!e.data.empty()) std::memcpy(out.data() + position, e.data.data(), e.data.size());
    position += e.data.size();
  }
  return out;
}

void SafetensorsWriter::write(const std::filesystem::path& path) const { write_file_atomically(path, serialize()); }

}  // namespace persona
