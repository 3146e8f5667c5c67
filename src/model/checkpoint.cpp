#include "persona/model/checkpoint.hpp"

#include "persona/core/error.hpp"
#include "persona/core/file_io.hpp"

#include <nlohmann/json.hpp>

#include <set>

namespace persona {
namespace {

constexpr const char* kIndexFile = "model.safetensors.index.json";
constexpr const char* kSingleFile = "model.safetensors";
// The index of a 400B-parameter model is a few MB.
constexpr std::size_t kMaxIndexBytes = 64u << 20;

// A shard name the index may use: a plain file in the folder, never a path out of it.
bool plain_shard_name(std::string_view name) {
  constexpr std::string_view suffix = ".safetensors";
  if (name.size() <= suffix.size() || !name.ends_with(suffix) || name.starts_with('.')) return false;
  for (const char c : name) {
    if (c == '/' || c == '\\' || c == '\0') return false;
  }
  return true;
}

}  // namespace

std::map<std::string, std::string, std::less<>> parse_safetensors_index(std::string_view text,
                                                                        std::string_view source) {
  constexpr const char* function = "parse_safetensors_index";
  const nlohmann::json json = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (json.is_discarded() || !json.is_object()) {
    PERSONA_THROW_AT(function, corrupt_data, "{}: {} is not a JSON object", source, kIndexFile);
  }
  const auto map = json.find("weight_map");
  if (map == json.end() || !map->is_object() || map->empty()) {
    PERSONA_THROW_AT(function, corrupt_data, "{}: {} has no weight_map object naming the tensors' files", source,
                     kIndexFile);
  }
  for (const auto& [key, value] : json.items()) {
    if (key != "weight_map" && key != "metadata") {
      PERSONA_THROW_AT(function, corrupt_data, "{}: {} has an unknown field '{}'", source, kIndexFile, key);
    }
  }
  std::map<std::string, std::string, std::less<>> files;
  for (const auto& [name, file] : map->items()) {
    if (!file.is_string() || !plain_shard_name(file.get_ref<const std::string&>())) {
      PERSONA_THROW_AT(function, corrupt_data,
                       "{}: {} places tensor '{}' in {}: expected the name of a .safetensors file in the folder",
                       source, kIndexFile, name, file.dump().substr(0, 120));
    }
    files.emplace(name, file.get<std::string>());
  }
  return files;
}

Checkpoint Checkpoint::open(const std::filesystem::path& folder) {
  constexpr const char* function = "Checkpoint::open";
  Checkpoint c;
  c.folder_ = folder;
  std::error_code ec;
  const std::filesystem::path index_path = folder / kIndexFile;
  std::map<std::string, std::string, std::less<>> index;
  if (std::filesystem::exists(index_path, ec)) {
    const std::vector<std::byte> bytes = read_file(index_path, kMaxIndexBytes);
    index = parse_safetensors_index(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                                    index_path.string());
    std::set<std::string> shards;
    for (const auto& [name, file] : index) shards.insert(file);
    for (const std::string& file : shards) {
      const std::filesystem::path path = folder / file;
      if (!std::filesystem::is_regular_file(path, ec)) {
        PERSONA_THROW_AT(function, io_error, "{}: {} names shard {}, which is missing", folder.string(), kIndexFile,
                         file);
      }
      c.files_.push_back(file);
      c.readers_.push_back(SafetensorsReader::open(path));
    }
  } else if (std::filesystem::exists(folder / kSingleFile, ec)) {
    c.files_.emplace_back(kSingleFile);
    c.readers_.push_back(SafetensorsReader::open(folder / kSingleFile));
  } else {
    PERSONA_THROW_AT(function, not_found, "{}: no {} and no {}: not a Hugging Face model folder", folder.string(),
                     kSingleFile, kIndexFile);
  }
  for (std::size_t r = 0; r < c.readers_.size(); ++r) {
    const std::vector<SafetensorsTensor>& tensors = c.readers_[r].tensors();
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const std::string& name = tensors[i].name;
      if (!index.empty()) {
        const auto it = index.find(name);
        if (it == index.end() || it->second != c.files_[r]) {
          PERSONA_THROW_AT(function, corrupt_data, "{}: tensor '{}' is in {} but {} {}", folder.string(), name,
                           c.files_[r], kIndexFile,
                           it == index.end() ? std::string("does not list it") : "places it in " + it->second);
        }
      }
      if (!c.tensors_.emplace(name, Entry{r, i}).second) {
        PERSONA_THROW_AT(function, corrupt_data, "{}: tensor '{}' is in two files", folder.string(), name);
      }
    }
  }
  for (const auto& [name, file] : index) {
    if (!c.tensors_.contains(name)) {
      PERSONA_THROW_AT(function, corrupt_data, "{}: {} places tensor '{}' in {}, which does not hold it",
                       folder.string(), kIndexFile, name, file);
    }
  }
  return c;
}

bool Checkpoint::contains(std::string_view name) const noexcept { return tensors_.find(name) != tensors_.end(); }

const SafetensorsTensor& Checkpoint::tensor(std::string_view name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    PERSONA_THROW_AT("Checkpoint::tensor", not_found, "{}: the checkpoint has no tensor '{}'", folder_.string(), name);
  }
  return readers_[it->second.reader].tensors()[it->second.index];
}

Tensor<float> Checkpoint::read_f32(std::string_view name) const {
  (void)tensor(name);  // not_found naming the folder
  const Entry& e = tensors_.find(name)->second;
  return readers_[e.reader].read_f32(name);
}

void Checkpoint::release_pages(std::string_view name) const {
  (void)tensor(name);
  readers_[tensors_.find(name)->second.reader].release_pages(name);
}

std::shared_ptr<const void> Checkpoint::owner_of(std::string_view name) const {
  (void)tensor(name);
  return readers_[tensors_.find(name)->second.reader].mapping();
}

const std::string& Checkpoint::file_of(std::string_view name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    PERSONA_THROW_AT("Checkpoint::file_of", not_found, "{}: the checkpoint has no tensor '{}'", folder_.string(), name);
  }
  return files_[it->second.reader];
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, entry] : tensors_) names.push_back(name);
  return names;
}

std::size_t Checkpoint::bytes() const noexcept {
  std::size_t total = 0;
  for (const SafetensorsReader& r : readers_) {
    for (const SafetensorsTensor& t : r.tensors()) total += t.data.size();
  }
  return total;
}

}  // namespace persona
