#include "persona/io/persona_adapter.hpp"

#include "persona/io/safetensors.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace persona {
namespace {

constexpr std::string_view kFormat = "persona-lora-adapter";

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
    w.add(key + ".weight", *m.f32());
  } else {
    const bool half = float_storage == DType::f16;
    w.add(key + ".weight", half ? SafetensorsDType::F16 : SafetensorsDType::BF16, {m.rows(), m.cols()},
          half ? narrow<f16>(*m.f32(), key) : narrow<bf16>(*m.f32(), key));
  }
}

LoraMatrix read_matrix(const SafetensorsReader& file, const std::string& key, const nlohmann::json& d) {
  const auto rows = d.at("rows").get<std::size_t>(), cols = d.at("cols").get<std::size_t>();
  const std::string format = d.at("format").get<std::string>();
  if (format == "f32" || format == "f16" || format == "bf16") {
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
  spec.codebook = d.at("codebook") == "nf4" ? QuantCodebook::nf4 : QuantCodebook::linear;
  QuantizedMatrix q(rows, cols, spec);
  auto copy_plane = [&](const std::string& name, std::span<std::uint8_t> plane) {
    const SafetensorsTensor& t = file.tensor(name);
    if (t.dtype != SafetensorsDType::U8 || t.data.size() != plane.size()) {
      PERSONA_THROW_AT("read_persona_adapter", corrupt_data,
                       "{}: '{}' holds {} bytes of {} but a {} matrix [{}, {}] needs {} bytes of U8", file.source(),
                       name, t.data.size(), to_string(t.dtype), spec.to_string(), rows, cols, plane.size());
    }
    std::memcpy(plane.data(), t.data.data(), plane.size());
  };
  copy_plane(key + ".codes", q.codes());
  copy_plane(key + ".scales", q.scales());
  if (!spec.symmetric) copy_plane(key + ".minima", q.minima());
  return LoraMatrix(std::move(q));
}

}  // namespace

void write_persona_adapter(const LoraAdapter& adapter, const std::filesystem::path& path, DType float_storage) {
  PERSONA_CHECK(float_storage == DType::f32 || float_storage == DType::f16 || float_storage == DType::bf16,
                "write_persona_adapter: float_storage is {}; expected f32, f16 or bf16", name_of(float_storage));
  nlohmann::json modules = nlohmann::json::array();
  SafetensorsWriter tensors;
  for (const auto& [target, module] : adapter.modules()) {
    const std::string key = fmt::format("layers.{}.{}", target.layer, target.module);
    modules.push_back({{"layer", target.layer},
                       {"module", target.module},
                       {"alpha", module.alpha()},
                       {"scaling", module.scaling() == LoraScaling::standard ? "standard" : "rank_stabilized"},
                       {"a", describe(module.a(), float_storage)},
                       {"b", describe(module.b(), float_storage)}});
    add_matrix(tensors, key + ".lora_A", module.a(), float_storage);
    add_matrix(tensors, key + ".lora_B", module.b(), float_storage);
    if (module.dora()) tensors.add(key + ".dora_magnitude", module.dora_magnitude());
    modules.back()["dora"] = module.dora();
  }
  // The checksum covers the data section, which does not depend on the metadata: compute it from a
  // first serialization, then store it.
  const std::vector<std::byte> data_only = tensors.serialize();
  std::uint64_t header = 0;
  std::memcpy(&header, data_only.data(), 8);
  const auto data = std::span(data_only).subspan(8 + header);
  tensors.set_metadata("persona.format", std::string(kFormat));
  // Version 1 readers know f32 and quantized matrices only: files with 16-bit ones say version 2.
  const bool narrowed = float_storage != DType::f32 && std::ranges::any_of(adapter.modules(), [](const auto& entry) {
                          return !entry.second.a().quantized() || !entry.second.b().quantized();
                        });
  tensors.set_metadata("persona.version", narrowed ? "2" : "1");
  tensors.set_metadata("persona.adapter",
                       nlohmann::json{{"id", adapter.id()}, {"tenant", adapter.tenant()}, {"modules", modules}}.dump());
  tensors.set_metadata("persona.checksum", fmt::format("{:016x}", persona_checksum(data)));
  tensors.write(path);
}

LoraAdapter read_persona_adapter(const std::filesystem::path& path) {
  const SafetensorsReader file = SafetensorsReader::open(path);
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
  int version = 0;
  try {
    version = std::stoi(field("persona.version"));
  } catch (const std::exception&) {
    PERSONA_THROW_AT("read_persona_adapter", corrupt_data, "{}: persona.version '{}' is not a number", path.string(),
                     field("persona.version"));
  }
  if (version > kPersonaAdapterVersion) {
    PERSONA_THROW_AT("read_persona_adapter", unsupported,
                     "{}: format version {} is newer than this persona reads (version {})", path.string(), version,
                     kPersonaAdapterVersion);
  }
  // Verify the data before trusting any of it.
  std::span<const std::byte> data;
  if (!file.tensors().empty()) {
    const auto& first = file.tensors().front();
    const auto& last = file.tensors().back();
    data =
        std::span(first.data.data(), static_cast<std::size_t>(last.data.data() + last.data.size() - first.data.data()));
  }
  const std::string actual = fmt::format("{:016x}", persona_checksum(data));
  if (field("persona.checksum") != actual) {
    PERSONA_THROW_AT("read_persona_adapter", corrupt_data,
                     "{}: checksum mismatch: the file says {} but its data hashes to {}", path.string(),
                     field("persona.checksum"), actual);
  }
  const nlohmann::json description = nlohmann::json::parse(field("persona.adapter"), nullptr, false);
  if (description.is_discarded() || !description.is_object()) {
    PERSONA_THROW_AT("read_persona_adapter", corrupt_data, "{}: persona.adapter is not a JSON object", path.string());
  }
  try {
    LoraAdapter adapter(description.at("id").get<std::string>(), description.at("tenant").get<TenantId>());
    for (const auto& m : description.at("modules")) {
      const LoraTarget target{m.at("layer").get<std::size_t>(), m.at("module").get<std::string>()};
      const std::string key = fmt::format("layers.{}.{}", target.layer, target.module);
      Tensor<float> magnitude;
      if (m.value("dora", false)) magnitude = file.read_f32(key + ".dora_magnitude");
      adapter.add(target,
                  LoraModule(read_matrix(file, key + ".lora_A", m.at("a")),
                             read_matrix(file, key + ".lora_B", m.at("b")), m.at("alpha").get<float>(),
                             m.at("scaling") == "standard" ? LoraScaling::standard : LoraScaling::rank_stabilized,
                             std::move(magnitude)));
    }
    return adapter;
  } catch (const nlohmann::json::exception& e) {
    PERSONA_THROW_AT("read_persona_adapter", corrupt_data, "{}: persona.adapter is malformed: {}", path.string(),
                     e.what());
  } catch (const Error& e) {
    if (e.message().starts_with(path.string())) throw;
    // Re-raised under the file's name with the inner error's code (a missing tensor is damage here).
    throw Error(e.code() == ErrorCode::not_found ? ErrorCode::corrupt_data : e.code(), "read_persona_adapter",
                fmt::format("{}: {}", path.string(), e.message()));
  }
}

}  // namespace persona
