#include "persona/io/persona_adapter.hpp"

#include "io/persona_file.hpp"
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
constexpr const char* kRead = "read_persona_adapter";

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
                       {"a", detail::describe_matrix(module.a(), float_storage)},
                       {"b", detail::describe_matrix(module.b(), float_storage)},
                       {"dora", module.dora()}});
    detail::add_matrix(tensors, key + ".lora_A", module.a(), float_storage, "write_persona_adapter");
    detail::add_matrix(tensors, key + ".lora_B", module.b(), float_storage, "write_persona_adapter");
    if (module.dora()) tensors.add(key + ".dora_magnitude", module.dora_magnitude());
  }
  tensors.set_metadata("persona.format", std::string(kFormat));
  tensors.set_metadata("persona.version", std::to_string(kPersonaAdapterVersion));
  tensors.set_metadata("persona.adapter", nlohmann::json{{"id", adapter.id()},
                                                         {"tenant", adapter.tenant()},
                                                         {"layers_path", adapter.layers_path()},
                                                         {"modules", modules}}
                                              .dump());
  return detail::seal_persona_file(tensors, adapter.id());
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
  detail::verify_persona_file(bytes, field("persona.checksum"), path.string(), kRead);
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
      const LoraScaling scaling =
          detail::pick<2>(m.at("scaling"), {"standard", "rank_stabilized"}, "scaling", kRead) == 0
              ? LoraScaling::standard
              : LoraScaling::rank_stabilized;
      Tensor<float> magnitude;
      if (m.at("dora").get<bool>()) magnitude = file.read_f32(key + ".dora_magnitude");
      adapter.add(target, LoraModule(detail::read_matrix(file, key + ".lora_A", m.at("a"), kRead),
                                     detail::read_matrix(file, key + ".lora_B", m.at("b"), kRead),
                                     m.at("alpha").get<float>(), scaling, std::move(magnitude)));
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
