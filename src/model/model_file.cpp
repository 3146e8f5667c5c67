// The persona model file: convert_model writes what Model::load reads from a Hugging Face folder, as
// Model::load asked for it (a recording weight source), into one checksummed safetensors file;
// load_model_file reads it back through a weight source of its own.
#include "persona/model/model_file.hpp"

#include "io/persona_file.hpp"
#include "model/hf_weight_source.hpp"
#include "model/model_file_source.hpp"
#include "model/weight_source.hpp"
#include "persona/core/error.hpp"
#include "persona/core/file_io.hpp"
#include "persona/io/safetensors.hpp"
#include "persona/model/checkpoint.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <set>

namespace persona {
namespace {

constexpr std::string_view kFormat = "persona-model";
constexpr std::string_view kVersion = "1";
constexpr const char* kLoad = "Model::load";
constexpr const char* kConvert = "convert_model";

const char* format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::f32: return "f32";
    case WeightFormat::bf16: return "bf16";
    case WeightFormat::int8: return "int8";
    default: return "int4";
  }
}

std::string without_weight(const std::string& name) {
  return name.ends_with(".weight") ? name.substr(0, name.size() - 7) : name;
}

// Passes every request on to the checkpoint's source and keeps what it returns for the file.
class RecordingSource final : public detail::WeightSource {
 public:
  RecordingSource(detail::WeightSource& inner, SafetensorsWriter& out) : inner_(inner), out_(out) {}

  // The small f32 tensors (norms, routers, biases) wait for the matrices: written after them, they leave
  // every quantized plane 64-byte aligned in the file, to be used in place from the mapping.
  Tensor<float> tensor(const std::string& name, const std::vector<std::size_t>& shape) override {
    Tensor<float> t = inner_.tensor(name, shape);
    tensors_.emplace_back(name, t);
    return t;
  }
  WeightMatrix matrix(const std::string& name, std::size_t rows, std::size_t cols) override {
    return keep(name, inner_.matrix(name, rows, cols));
  }
  WeightMatrix embedding(const std::string& name, std::size_t rows, std::size_t cols) override {
    return keep(name, inner_.embedding(name, rows, cols));
  }
  std::optional<WeightMatrix> tied_lm_head(std::size_t rows, std::size_t cols) override {
    std::optional<WeightMatrix> m = inner_.tied_lm_head(rows, cols);
    if (m) keep("lm_head.weight", *m);
    return m;
  }
  void finish() override {
    inner_.finish();
    for (const auto& [name, t] : tensors_) out_.add(name, t);
    tensors_.clear();
  }

  const nlohmann::json& matrices() const noexcept { return matrices_; }

 private:
  WeightMatrix keep(const std::string& name, WeightMatrix m) {
    matrices_[name] = detail::describe_matrix(m, DType::f32);
    detail::add_matrix(out_, without_weight(name), m, DType::f32, kConvert);
    return m;
  }

  detail::WeightSource& inner_;
  SafetensorsWriter& out_;
  nlohmann::json matrices_ = nlohmann::json::object();
  std::vector<std::pair<std::string, Tensor<float>>> tensors_;
};

// The weights of a model file, as the loader asks for them; every size checked against the description.
class FileSource final : public detail::WeightSource {
 public:
  FileSource(const SafetensorsReader& file, const nlohmann::json& matrices, WeightFormat format,
             std::shared_ptr<const void> owner)
      : file_(file), matrices_(matrices), format_(format), owner_(std::move(owner)) {}

  Tensor<float> tensor(const std::string& name, const std::vector<std::size_t>& shape) override {
    if (!file_.contains(name)) {
      PERSONA_THROW_AT(kLoad, corrupt_data, "{}: tensor '{}' is missing", file_.source(), name);
    }
    const SafetensorsTensor& t = file_.tensor(name);
    if (t.dtype != SafetensorsDType::F32 || t.shape != shape) {
      PERSONA_THROW_AT(kLoad, corrupt_data, "{}: tensor '{}' is {} [{}]; expected F32 [{}]", file_.source(), name,
                       to_string(t.dtype), fmt::join(t.shape, ", "), fmt::join(shape, ", "));
    }
    read_.insert(name);
    return file_.read_f32(name);
  }
  WeightMatrix matrix(const std::string& name, std::size_t rows, std::size_t cols) override {
    const auto it = matrices_.find(name);
    if (it == matrices_.end()) {
      PERSONA_THROW_AT(kLoad, corrupt_data, "{}: persona.matrices has no '{}'", file_.source(), name);
    }
    const std::string key = without_weight(name);
    try {
      WeightMatrix m = detail::read_matrix(file_, key, *it, kLoad, owner_);
      PERSONA_CHECK_AT(kLoad, corrupt_data, m.rows() == rows && m.cols() == cols,
                       "{}: '{}' is [{}, {}]; config.json implies [{}, {}]", file_.source(), name, m.rows(), m.cols(),
                       rows, cols);
      for (const char* plane : {".weight", ".codes", ".scales", ".minima"}) {
        if (file_.contains(key + plane)) read_.insert(key + plane);
      }
      return m;
    } catch (const nlohmann::json::exception& e) {
      PERSONA_THROW_AT(kLoad, corrupt_data, "{}: the description of '{}' is malformed: {}", file_.source(), name,
                       e.what());
    }
  }
  WeightMatrix embedding(const std::string& name, std::size_t rows, std::size_t cols) override {
    return matrix(name, rows, cols);
  }
  std::optional<WeightMatrix> tied_lm_head(std::size_t rows, std::size_t cols) override {
    if (format_ != WeightFormat::int8 && format_ != WeightFormat::int4) return std::nullopt;
    return matrix("lm_head.weight", rows, cols);
  }
  void finish() override {
    for (const SafetensorsTensor& t : file_.tensors()) {
      if (!read_.contains(t.name)) {
        PERSONA_THROW_AT(kLoad, corrupt_data, "{}: tensor '{}' is not part of the model its config describes",
                         file_.source(), t.name);
      }
    }
  }

 private:
  const SafetensorsReader& file_;
  const nlohmann::json& matrices_;
  WeightFormat format_;
  std::shared_ptr<const void> owner_;
  std::set<std::string, std::less<>> read_;
};

std::string read_text_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return {};
  const std::vector<std::byte> bytes = read_file(path, 16u << 20);
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

}  // namespace

ModelConversion convert_model(const std::filesystem::path& folder, const std::filesystem::path& out,
                              WeightFormat format) {
  const std::string config_text = read_text_file(folder / "config.json");
  const std::string generation_text = read_text_file(folder / "generation_config.json");
  PERSONA_CHECK_AT(kConvert, io_error, !config_text.empty(), "{}: no config.json", folder.string());
  Model::Weights w;
  w.config = parse_model_config(config_text, generation_text, folder.string());
  w.format = format;
  const Checkpoint checkpoint = Checkpoint::open(folder);
  detail::HfWeightSource source(checkpoint, format);
  SafetensorsWriter writer;
  RecordingSource recording(source, writer);
  detail::build_weights(w, recording);
  writer.set_metadata("persona.format", std::string(kFormat));
  writer.set_metadata("persona.version", std::string(kVersion));
  writer.set_metadata("persona.weights", format_name(format));
  writer.set_metadata("persona.config", config_text);
  writer.set_metadata("persona.generation_config", generation_text);
  writer.set_metadata("persona.matrices", recording.matrices().dump());
  const std::vector<std::byte> file = detail::seal_persona_file(writer, out.string());
  write_file_atomically(out, file);
  (void)Model::load(out);  // read it back: checksum, descriptions and shapes
  return {format, checkpoint.bytes(), file.size()};
}

namespace detail {

void load_model_file(Model::Weights& w, const std::filesystem::path& path, const ModelLoadOptions& options) {
  const std::shared_ptr<MappedFile> mapping = MappedFile::open(path);
  const SafetensorsReader file = SafetensorsReader::parse(mapping->bytes(), path.string());
  const auto& meta = file.metadata();
  const auto field = [&](const char* name) -> const std::string& {
    const auto it = meta.find(name);
    if (it == meta.end()) {
      PERSONA_THROW_AT(kLoad, corrupt_data, "{}: not a persona model file (its metadata has no {})", path.string(),
                       name);
    }
    return it->second;
  };
  if (field("persona.format") != kFormat) {
    PERSONA_THROW_AT(kLoad, corrupt_data, "{}: persona.format is '{}', not '{}'", path.string(),
                     field("persona.format"), kFormat);
  }
  if (field("persona.version") != kVersion) {
    PERSONA_THROW_AT(kLoad, unsupported, "{}: model file version {} is not read by this persona (it reads {})",
                     path.string(), field("persona.version"), kVersion);
  }
  // Every byte verified before any is trusted.
  verify_persona_file(mapping->bytes(), field("persona.checksum"), path.string(), kLoad);
  const std::string& weights = field("persona.weights");
  std::optional<WeightFormat> format;
  for (const WeightFormat f : {WeightFormat::f32, WeightFormat::bf16, WeightFormat::int8, WeightFormat::int4}) {
    if (weights == format_name(f)) format = f;
  }
  PERSONA_CHECK_AT(kLoad, corrupt_data, format.has_value(),
                   "{}: persona.weights is '{}'; expected f32, bf16, int8 or int4", path.string(), weights);
  PERSONA_CHECK_AT(kLoad, invalid_argument, !options.weights || *options.weights == *format,
                   "{}: the model file holds {} weights; {} were asked for (convert the model again to change them)",
                   path.string(), weights, format_name(*options.weights));
  w.config = parse_model_config(field("persona.config"), field("persona.generation_config"), path.string());
  w.format = *format;
  const nlohmann::json matrices = nlohmann::json::parse(field("persona.matrices"), nullptr, false);
  PERSONA_CHECK_AT(kLoad, corrupt_data, !matrices.is_discarded() && matrices.is_object(),
                   "{}: persona.matrices is not a JSON object", path.string());
  FileSource source(file, matrices, *format, mapping);
  build_weights(w, source);
}

}  // namespace detail
}  // namespace persona
