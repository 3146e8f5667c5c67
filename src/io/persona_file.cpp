#include "io/persona_file.hpp"

#include "persona/core/file_io.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

namespace persona::detail {
namespace {

// The checksum field as the writer serializes it; its 16 hex digits count as '0' in the checksum, which
// covers every other byte of the file (docs/formats.md).
constexpr std::string_view kChecksumField = "\"persona.checksum\":\"";
constexpr std::size_t kChecksumDigits = 16;
constexpr std::string_view kChecksumPlaceholder = "0000000000000000";

// The checksum of `file` with the digits at `digits` counted as '0'.
std::uint64_t checksum_of(std::span<const std::byte> file, std::size_t digits) {
  const auto zeros = std::as_bytes(std::span(kChecksumPlaceholder));
  const std::span<const std::byte> pieces[] = {file.first(digits), zeros, file.subspan(digits + kChecksumDigits)};
  return file_checksum(pieces);
}

// Where the checksum's digits are in the header of `file`: the field must appear exactly once.
std::size_t find_checksum_digits(std::span<const std::byte> file, std::string_view source, const char* function) {
  std::uint64_t header = 0;
  if (file.size() >= 8) std::memcpy(&header, file.data(), 8);
  const std::string_view text(reinterpret_cast<const char*>(file.data()) + 8,
                              file.size() >= 8 ? std::min<std::uint64_t>(header, file.size() - 8) : 0);
  const std::size_t at = text.find(kChecksumField);
  const bool once = at != std::string_view::npos && text.find(kChecksumField, at + 1) == std::string_view::npos;
  const std::size_t digits = at + kChecksumField.size();
  if (!once || digits + kChecksumDigits + 1 > text.size() || text[digits + kChecksumDigits] != '"') {
    PERSONA_THROW_AT(function, corrupt_data,
                     "{}: the header does not hold the field persona.checksum exactly once as 16 hex digits", source);
  }
  return 8 + digits;
}

template <class Half>
std::vector<std::byte> narrow(const Tensor<float>& w, const std::string& key, const char* function) {
  // f16 tops out at 65504: a larger value would be stored as infinity behind a valid checksum.
  const float limit = std::is_same_v<Half, f16> ? 65504.0f : std::numeric_limits<float>::max();
  for (std::size_t i = 0; i < w.numel(); ++i) {
    PERSONA_CHECK_AT(function, invalid_argument, std::isfinite(w.data()[i]) && std::fabs(w.data()[i]) <= limit,
                     "'{}' element {} is {}, which {} cannot hold", key, i, w.data()[i],
                     std::is_same_v<Half, f16> ? "f16" : "bf16");
  }
  std::vector<Half> halves(w.numel());
  convert(std::span<const float>(w.data(), w.numel()), std::span<Half>(halves));
  const auto bytes = std::as_bytes(std::span<const Half>(halves));
  return {bytes.begin(), bytes.end()};
}

}  // namespace

std::vector<std::byte> seal_persona_file(SafetensorsWriter& tensors, std::string_view source) {
  // Serialize with the digits as '0', hash the whole file, then write the digits in their place.
  tensors.set_metadata("persona.checksum", std::string(kChecksumPlaceholder));
  std::vector<std::byte> file = tensors.serialize();
  const std::size_t digits = find_checksum_digits(file, source, "seal_persona_file");
  const std::string sum = fmt::format("{:016x}", checksum_of(file, digits));
  std::memcpy(file.data() + digits, sum.data(), kChecksumDigits);
  return file;
}

void verify_persona_file(std::span<const std::byte> file, const std::string& recorded, std::string_view source,
                         const char* function) {
  const std::size_t digits = find_checksum_digits(file, source, function);
  const std::string actual = fmt::format("{:016x}", checksum_of(file, digits));
  if (recorded != actual || std::memcmp(file.data() + digits, actual.data(), kChecksumDigits) != 0) {
    PERSONA_THROW_AT(function, corrupt_data, "{}: checksum mismatch: the file says {} but its bytes hash to {}", source,
                     recorded, actual);
  }
}

nlohmann::json describe_matrix(const WeightMatrix& m, DType float_storage) {
  nlohmann::json d = {{"rows", m.rows()}, {"cols", m.cols()}};
  if (const QuantizedMatrix* q = m.quantized_matrix()) {
    const QuantSpec& s = q->spec();
    d["format"] = "quantized";
    d["bits"] = s.bits;
    d["group_size"] = s.group_size;
    d["symmetric"] = s.symmetric;
    d["scale_type"] = name_of(s.scale_type);
    d["codebook"] = s.codebook == QuantCodebook::nf4 ? "nf4" : "linear";
  } else {
    d["format"] = m.bf16() != nullptr ? "bf16" : name_of(float_storage);
  }
  return d;
}

void add_matrix(SafetensorsWriter& w, const std::string& key, const WeightMatrix& m, DType float_storage,
                const char* function) {
  if (const QuantizedMatrix* q = m.quantized_matrix()) {
    w.add(key + ".codes", SafetensorsDType::U8, {q->codes().size()}, std::as_bytes(q->codes()));
    w.add(key + ".scales", SafetensorsDType::U8, {q->scales().size()}, std::as_bytes(q->scales()));
    if (!q->spec().symmetric) {
      w.add(key + ".minima", SafetensorsDType::U8, {q->minima().size()}, std::as_bytes(q->minima()));
    }
  } else if (const Bf16Matrix* b = m.bf16()) {
    w.add(key + ".weight", SafetensorsDType::BF16, {b->rows(), b->cols()},
          std::as_bytes(std::span(b->data(), b->rows() * b->cols())));
  } else if (float_storage == DType::f32) {
    w.add(key + ".weight", m.to_f32());
  } else {
    const bool half = float_storage == DType::f16;
    const Tensor<float> values = m.to_f32();
    w.add(key + ".weight", half ? SafetensorsDType::F16 : SafetensorsDType::BF16, {m.rows(), m.cols()},
          half ? narrow<f16>(values, key, function) : narrow<bf16>(values, key, function));
  }
}

WeightMatrix read_matrix(const SafetensorsReader& file, const std::string& key, const nlohmann::json& d,
                         const char* function, std::shared_ptr<const void> owner) {
  const auto rows = d.at("rows").get<std::size_t>(), cols = d.at("cols").get<std::size_t>();
  const std::string format = d.at("format").get<std::string>();
  if (pick<4>(d.at("format"), {"f32", "f16", "bf16", "quantized"}, "format", function) != 3) {
    const SafetensorsDType want = format == "f32"   ? SafetensorsDType::F32
                                  : format == "f16" ? SafetensorsDType::F16
                                                    : SafetensorsDType::BF16;
    const SafetensorsTensor& t = file.tensor(key + ".weight");
    if (t.dtype != want) {
      PERSONA_THROW_AT(function, corrupt_data, "{}: '{}.weight' is {} but the metadata says {}", file.source(), key,
                       to_string(t.dtype), format);
    }
    if (t.shape != std::vector<std::size_t>{rows, cols}) {
      PERSONA_THROW_AT(function, corrupt_data, "{}: '{}.weight' has shape [{}] but the metadata says [{}, {}]",
                       file.source(), key, fmt::join(t.shape, ", "), rows, cols);
    }
    if (want == SafetensorsDType::BF16 && owner != nullptr) {
      return WeightMatrix(Bf16Matrix(t.data, rows, cols, std::move(owner)));
    }
    return WeightMatrix(file.read_f32(key + ".weight"));
  }
  QuantSpec spec;
  spec.bits = d.at("bits").get<int>();
  spec.group_size = d.at("group_size").get<std::size_t>();
  spec.symmetric = d.at("symmetric").get<bool>();
  spec.scale_type = parse_dtype(d.at("scale_type").get<std::string>());
  spec.codebook = pick<2>(d.at("codebook"), {"linear", "nf4"}, "codebook", function) == 1 ? QuantCodebook::nf4
                                                                                          : QuantCodebook::linear;
  // The planes in the file must have the sizes the metadata implies before anything is allocated.
  const QuantizedPlaneSizes sizes = QuantizedMatrix::plane_sizes(rows, cols, spec);
  auto check_plane = [&](const std::string& name, std::size_t bytes) {
    const SafetensorsTensor& t = file.tensor(name);
    if (t.dtype != SafetensorsDType::U8 || t.data.size() != bytes) {
      PERSONA_THROW_AT(function, corrupt_data,
                       "{}: '{}' holds {} bytes of {} but a {} matrix [{}, {}] needs {} bytes of U8", file.source(),
                       name, t.data.size(), to_string(t.dtype), spec.to_string(), rows, cols, bytes);
    }
    return t.data;
  };
  const auto codes = check_plane(key + ".codes", sizes.codes);
  const auto scales = check_plane(key + ".scales", sizes.scales);
  const auto minima = spec.symmetric ? std::span<const std::byte>{} : check_plane(key + ".minima", sizes.minima);
  const auto bytes = [](std::span<const std::byte> plane) {
    return std::span(reinterpret_cast<const std::uint8_t*>(plane.data()), plane.size());
  };
  const auto aligned = [](std::span<const std::byte> plane) {
    return reinterpret_cast<std::uintptr_t>(plane.data()) % kTileBytes == 0;
  };
  if (owner != nullptr && aligned(codes) && aligned(scales) && (minima.empty() || aligned(minima))) {
    return WeightMatrix(
        QuantizedMatrix::view(rows, cols, spec, bytes(codes), bytes(scales), bytes(minima), std::move(owner)));
  }
  QuantizedMatrix q(rows, cols, spec);
  std::memcpy(q.codes().data(), codes.data(), codes.size());
  std::memcpy(q.scales().data(), scales.data(), scales.size());
  if (!minima.empty()) std::memcpy(q.minima().data(), minima.data(), minima.size());
  return WeightMatrix(std::move(q));
}

}  // namespace persona::detail
