// Checkpoint: the tensors of a Hugging Face model folder, from model.safetensors or from the shards that
// model.safetensors.index.json lists, each file mapped read-only and checked whole (SafetensorsReader).
// A folder whose files must stay unchanged while the checkpoint is open (as llama.cpp's and vLLM's
// mappings): a file truncated underneath reads as SIGBUS.
#pragma once

#include "persona/io/safetensors.hpp"

#include <cstddef>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace persona {

// model.safetensors.index.json's weight_map: tensor name -> shard file name. Error(corrupt_data) naming
// `source` for text that is not {"weight_map": {name: file}} (metadata allowed), a file name that is not a
// plain name in the folder (no '/', no "..", ending in .safetensors), or an empty map.
std::map<std::string, std::string, std::less<>> parse_safetensors_index(std::string_view text,
                                                                        std::string_view source = "<memory>");

class Checkpoint {
 public:
  // Error(not_found) when the folder has neither model.safetensors nor model.safetensors.index.json;
  // Error(io_error) for a shard the index names that is missing; Error(corrupt_data) for a tensor the
  // index places in a shard that lacks it, a tensor of a shard the index does not list, or one tensor in
  // two files.
  static Checkpoint open(const std::filesystem::path& folder);

  const std::filesystem::path& folder() const noexcept { return folder_; }
  bool contains(std::string_view name) const noexcept;
  // Error(not_found) naming the tensor and the folder.
  const SafetensorsTensor& tensor(std::string_view name) const;
  // An F32, F16 or BF16 tensor as f32 (SafetensorsReader::read_f32).
  Tensor<float> read_f32(std::string_view name) const;
  // Its pages out of the process's resident memory, for a tensor a loader has copied
  // (SafetensorsReader::release_pages).
  void release_pages(std::string_view name) const;
  // What keeps a tensor's bytes alive (its file's mapping), for views that outlive the checkpoint.
  std::shared_ptr<const void> owner_of(std::string_view name) const;
  // The file a tensor lives in (for messages).
  const std::string& file_of(std::string_view name) const;
  // Every tensor name, sorted.
  std::vector<std::string> names() const;
  std::size_t shard_count() const noexcept { return readers_.size(); }
  std::size_t bytes() const noexcept;  // of all tensors' data

 private:
  struct Entry {
    std::size_t reader;  // index into readers_ (and files_)
    std::size_t index;   // into that reader's tensors()
  };
  std::filesystem::path folder_;
  std::vector<SafetensorsReader> readers_;
  std::vector<std::string> files_;
  std::map<std::string, Entry, std::less<>> tensors_;
};

}  // namespace persona
