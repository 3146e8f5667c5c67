#include "persona/io/persona_adapter.hpp"

#include "persona/io/safetensors.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace persona {
namespace {

constexpr std::string_view kFormat = "persona-lora-adapter";
// The checksum field as the writer serializes it; its 16 hex digits count as '0' in the checksum, which
// covers every other byte of the file (docs/formats.md).
constexpr std::string_view kChecksumField = "\"persona.checksum\":\"";
constexpr std::size_t kChecksumDigits = 16;
constexpr std::string_view kChecksumPlaceholder = "0000000000000000";

// The checksum of `file` with the digits at `digits` counted as '0'.
std::uint64_t adapter_checksum(std::span<const std::byte> file, std::size_t digits) {
  const auto zeros = std::as_bytes(std::span(kChecksumPlaceholder));
  const std::span<const std::byte> pieces[] = {file.first(digits), zeros, file.subspan(digits + kChecksumDigits)};
  return file_checksum(pieces);
}

// Where the checksum's digits are in the header of `file`: the field must appear exactly once.
std::size_t find_checksum_digits(std::span<const std::byte> file, const std::string& source) {
  std::uint64_t header = 0;
  if (file.size() >= 8) std::memcpy(&header, file.data(), 8);
  const std::string_view text(reinterpret_cast<const char*>(file.data()) + 8,
                              file.size() >= 8 ? std::min<std::uint64_t>(header, file.size() - 8) : 0);
  const std::size_t at = text.find(kChecksumField);
  const bool once = at != std::string_view::npos && text.find(kChecksumField, at + 1) == std::string_view::npos;
  const std::size_t digits = at + kChecksumField.size();
  if (!once || digits + kChecksumDigits + 1 > text.size() || text[digits + kChecksumDigits] != '"') {
    PERSONA_THROW_AT("read_persona_adapter", corrupt_data,
                     "{}: the header does not hold the field persona.checksum exactly once as 16 hex digits", source);
  }
  return 8 + digits;
}

// One of `known`, else corrupt_data naming the field and the allowed values.
template <std::size_t N>
std::size_t pick(const nlohmann::json& value, const std::array<std::string_view, N>& known, const char* field) {
  const std::string text = value.get<std::string>();
  for (std::size_t i = 0; i < N; ++i) {
    if (text == known[i]) return i;
  }
  PERSONA_THROW_AT("read_persona_adapter", corrupt_data, "{} is '{}'; expected one of {}", field, text,
                   fmt::join(known, ", "));
}

nlohmann::json describe(const LoraMatrix& m, DType float_storage) {
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
    d["format"] = name_of(float_storage);
  }
  return d;
}

template <class Half>
std::vector<std::byte> narrow(const Tensor<float>& w, const std::string& key) {
  // f16 tops out at 65504: a larger value would be stored as infinity behind a valid checksum.
  const float limit = std::is_same_v<Half, f16> ? 65504.0f : std::numeric_limits<float>::max();
  for (std::size_t i = 0; i < w.numel(); ++i) {
    PERSONA_CHECK(std::isfinite(w.data()[i]) && std::fabs(w.data()[i]) <= limit,
                  "write_persona_adapter: '{}' element {} is {}, which {} cannot hold", key, i, w.data()[i],
                  std::is_same_v<Half, f16> ? "f16" : "bf16");
  }
  std::vector<Half> halves(w.numel());
  convert(std::span<const float>(w.data(), w.numel()), std::span<Half>(halves));
  const auto bytes = std::as_bytes(std::span<const Half>(halves));
  return {bytes.begin(), bytes.end()};
}

void add_matrix(SafetensorsWriter& w, const std::string& key, const LoraMatrix& m, DType float_storage) {
  if (const QuantizedMatrix* q = m.quantized_matrix()) {
    w.add(key + ".codes", SafetensorsDType::U8, {q->codes().size()}, std::as_bytes(q->codes()));
    w.add(key + ".scales", SafetensorsDType::U8, {q->scales().size()}, std::as_bytes(q->scales()));
    if (!q->spec().symmetric) {
      w.add(key + ".minima", SafetensorsDType::U8, {q->minima().size()}, std::as_bytes(q->minima()));
    }
  } else if (float_storage == DType::f32) {
    w.add(key + ".weight", m.to_f32());
  } else {
    const bool half = float_storage == DType::f16;
    const Tensor<float> values = m.to_f32();
    w.add(key + ".weight", half ? SafetensorsDType::F16 : SafetensorsDType::BF16, {m.rows(), m.cols()},
          half ? narrow<f16>(values, key) : narrow<bf16>(values, key));
  }
}

LoraMatrix read_matrix(const SafetensorsReader& file, const std::string& key, const nlohmann::json& d) {
  const auto rows = d.at("rows").get<std::size_t>(), cols = d.at("cols").get<std::size_t>();
  const std::string format = d.at("format").get<std::string>();
  if (pick<4>(d.at("format"), {"f32", "f16", "bf16", "quantized"}, "format") != 3) {
    const SafetensorsDType want = format == "f32"   ? SafetensorsDType::F32
                                  : format == "f16" ? SafetensorsDType::F16
                                                    : SafetensorsDType::BF16;
    if (file.tensor(key + ".weight").dtype != want) {
      PERSONA_THROW_AT("read_persona_adapter", corrupt_data, "{}: '{}.weight' is {} but the metadata says {}",
                       file.source(), key, to_string(file.tensor(key + ".weight").dtype), format);
    }
    Tensor<float> w = file.read_f32(key + ".weight");
    if (w.rank() != 2 || w.dim(0) != rows || w.dim(1) != cols) {
      PERSONA_THROW_AT("read_persona_adapter", corrupt_data,
                       "{}: '{}.weight' has shape {} but the metadata says [{}, {}]", file.source(), key,
                       w.shape().to_string(), rows, cols);
    }
    return LoraMatrix(std::move(w));
  }
  QuantSpec spec;
  spec.bits = d.at("bits").get<int>();
  spec.group_size = d.at("group_size").get<std::size_t>();
  spec.symmetric = d.at("symmetric").get<bool>();
  spec.scale_type = parse_dtype(d.at("scale_type").get<std::string>());
  spec.codebook =
      pick<2>(d.at("codebook"), {"linear", "nf4"}, "codebook") == 1 ? QuantCodebook::nf4 : QuantCodebook::linear;
  // The planes in the file must have the sizes the metadata implies before anything is allocated.
  const QuantizedPlaneSizes sizes = QuantizedMatrix::plane_sizes(rows, cols, spec);
  auto check_plane = [&](const std::string& name, std::size_t bytes) {
    const SafetensorsTensor& t = file.tensor(name);
    if (t.dtype != SafetensorsDType::U8 || t.data.size() != bytes) {
      PERSONA_THROW_AT("read_persona_adapter", corrupt_data,
                       "{}: '{}' holds {} bytes of {} but a {} matrix [{}, {}] needs {} bytes of U8", file.source(),
                       name, t.data.size(), to_string(t.dtype), spec.to_string(), rows, cols, bytes);
    }
    return t.data;
  };
  const auto codes = check_plane(key + ".codes", sizes.codes);
  const auto scales = check_plane(key + ".scales", sizes.scales);
  const auto minima = spec.symmetric ? std::span<const std::byte>{} : check_plane(key + ".minima", sizes.minima);
  QuantizedMatrix q(rows, cols, spec);
  std::memcpy(q.codes().data(), codes.data(), codes.size());
  std::memcpy(q.scales().data(), scales.data(), scales.size());
  if (!minima.empty()) std::memcpy(q.minima().data(), minima.data(), minima.size());
  return LoraMatrix(std::move(q));
}

}  // namespace

void write_persona_adapter(const LoraAdapter& adapter, const std::filesystem::path& path, DType float_storage) {
  write_file_atomically(path, encode_persona_adapter(adapter, float_storage));
}

std::vector<std::byte> encode_persona_adapter(const LoraAdapter& adapter, DType float_storage) {
  PERSONA_CHECK(float_storage == DType::f32 || float_storage == DType::f16 || float_storage == DType::bf16,
                "float_storage is {}; expected f32, f16 or bf16", name_of(float_storage));
  nlohmann::json modules = nlohmann::json::array();
  SafetensorsWriter tensors;
  for (const auto& [target, module] : adapter.modules()) {
    const std::string key = fmt::format("layers.{}.{}", target.layer, target.module);
    modules.push_back({{"layer", target.layer},
                       {"module", target.module},
                       {"alpha", module.alpha()},
                       {"scaling", module.scaling() == LoraScaling::standard ? "standard" : "rank_stabilized"},
                       {"a", describe(module.a(), float_storage)},
                       {"b", describe(module.b(), float_storage)},
                       {"dora", module.dora()}});
    add_matrix(tensors, key + ".lora_A", module.a(), float_storage);
    add_matrix(tensors, key + ".lora_B", module.b(), float_storage);
    if (module.dora()) tensors.add(key + ".dora_magnitude", module.dora_magnitude());
  }
  tensors.set_metadata("persona.format", std::string(kFormat));
  tensors.set_metadata("persona.version", std::to_string(kPersonaAdapterVersion));
  tensors.set_metadata("persona.adapter",
                       nlohmann::json{{"id", adapter.id()},
                                      {"tenant", adapter.tenant()},
                                      {"layers_path", adapter.layers_path()},
                                      {"modules", modules}}
                           .dump());
  // Serialize with the digits as '0', hash the whole file, then write the digits in their place.
  tensors.set_metadata("persona.checksum", std::string(kChecksumPlaceholder));
  std::vector<std::byte> file = tensors.serialize();
  const std::size_t digits = find_checksum_digits(file, adapter.id());
  const std::string sum = fmt::format("{:016x}", adapter_checksum(file, digits));
  std::memcpy(file.data() + digits, sum.data(), kChecksumDigits);
  return file;
}

LoraAdapter read_persona_adapter(const std::filesystem::path& path) {
  const std::shared_ptr<MappedFile> mapping = MappedFile::open(path);
  const std::span<const std::byte> bytes = mapping->bytes();
  const SafetensorsReader file = SafetensorsReader::parse(bytes, path.string());
  const auto& meta = file.metadata();
  auto field = [&](const char* name) -> const std::string& {
    const auto it = meta.find(name);
    if (it == meta.end())
      PERSONA_THROW_AT("read_persona_adapter", corrupt_data, "{}: __metadata__ has no '{}'", path.string(), name);
    return it->second;
  };
  if (field("persona.format") != kFormat) {
    PERSONA_THROW_AT("read_persona_adapter", corrupt_data, "{}: persona.format is '{}', not '{}'", path.string(),
                     field("persona.format"), kFormat);
  }
  const std::string& version = field("persona.version");
  if (version != std::to_string(kPersonaAdapterVersion)) {
    int number = 0;
    const auto [end, status] = std::from_chars(version.data(), version.data() + version.size(), number);
    if (status != std::errc() || end != version.data() + version.size() || number <= 0) {
      PERSONA_THROW_AT("read_persona_adapter", corrupt_data, "{}: persona.version '{}' is not a version number",
                       path.string(), version);
    }
    if (number > kPersonaAdapterVersion) {
      PERSONA_THROW_AT("read_persona_adapter", unsupported,
                       "{}: format version {} is newer than this persona reads (version {})", path.string(), number,
                       kPersonaAdapterVersion);
    }
    // Versions 1 and 2 checksummed the tensor data only, with a hash that misses whole classes of damage.
    PERSONA_THROW_AT("read_persona_adapter", unsupported,
                     "{}: format version {} is no longer read (its checksum leaves the metadata unchecked); this "
                     "persona reads version {}: write the adapter again from its source",
                     path.string(), number, kPersonaAdapterVersion);
  }
  // Verify every byte before trusting any of it.
  const std::size_t digits = find_checksum_digits(bytes, path.string());
  const std::string actual = fmt::format("{:016x}", adapter_checksum(bytes, digits));
  if (field("persona.checksum") != actual || std::memcmp(bytes.data() + digits, actual.data(), kChecksumDigits) != 0) {
    PERSONA_THROW_AT("read_persona_adapter", corrupt_data,
                     "{}: checksum mismatch: the file says {} but its bytes hash to {}", path.string(),
                     field("persona.checksum"), actual);
  }
  const nlohmann::json description = nlohmann::json::parse(field("persona.adapter"), nullptr, false);
  if (description.is_discarded() || !description.is_object()) {
    PERSONA_THROW_AT("read_persona_adapter", corrupt_data, "{}: persona.adapter is not a JSON object", path.string());
  }
  try {
    LoraAdapter adapter(description.at("id").get<std::string>(), description.at("tenant").get<TenantId>());
    // Files written before layers_path was recorded held "model.layers" adapters.
    adapter.set_layers_path(description.value("layers_path", std::string("model.layers")));
    for (const auto& m : description.at("modules")) {
      const LoraTarget target{m.at("layer").get<std::size_t>(), m.at("module").get<std::string>()};
      const std::string key = fmt::format("layers.{}.{}", target.layer, target.module);
      const LoraScaling scaling = pick<2>(m.at("scaling"), {"standard", "rank_stabilized"}, "scaling") == 0
                                      ? LoraScaling::standard
                                      : LoraScaling::rank_stabilized;
      Tensor<float> magnitude;
      if (m.at("dora").get<bool>()) magnitude = file.read_f32(key + ".dora_magnitude");
      adapter.add(target, LoraModule(read_matrix(file, key + ".lora_A", m.at("a")),
                                     read_matrix(file, key + ".lora_B", m.at("b")), m.at("alpha").get<float>(), scaling,
                                     std::move(magnitude)));
    }
    return adapter;
  } catch (const nlohmann::json::exception& e) {
    PERSONA_THROW_AT("read_persona_adapter", corrupt_data, "{}: persona.adapter is malformed: {}", path.string(),
                     e.what());
  } catch (const Error& e) {
    // Past the checksum, whatever the metadata gets wrong (a missing tensor, a shape or spec the
    // constructors refuse) is damage to the file: corrupt_data, under the file's name.
    const ErrorCode code = e.code() == ErrorCode::unsupported ? e.code() : ErrorCode::corrupt_data;
    if (code == e.code() && e.message().starts_with(path.string())) throw;
    throw Error(
        code, "read_persona_adapter",
        e.message().starts_with(path.string()) ? e.message() : fmt::format("{}: {}", path.string(), e.message()));
  }
}

}  // namespace persona
