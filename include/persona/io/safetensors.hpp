// safetensors files (the Hugging Face format): a strict, bounds-checked reader over a memory mapping,
// and a writer that replaces files atomically. Layout: an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}, "__metadata__": {string: string}}, then the data.
#pragma once

#include "persona/core/file_io.hpp"
#include "persona/core/tensor.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace persona {

enum class SafetensorsDType : std::uint8_t { F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL };

std::string_view to_string(SafetensorsDType dtype) noexcept;
std::size_t size_of(SafetensorsDType dtype) noexcept;

struct SafetensorsTensor {
  std::string name;
  SafetensorsDType dtype;
  std::vector<std::size_t> shape;
  std::span<const std::byte> data;  // inside the reader's mapping; not aligned in general

  std::size_t numel() const noexcept;
};

class SafetensorsReader {
 public:
  // Maps the file read-only and checks it whole before returning: header length within the file and
  // at most 100 MiB, a JSON object, known dtypes, shapes whose byte counts do not overflow and equal
  // their ranges, ranges that tile the data section exactly (no gaps, overlaps or bytes past the end).
  // Any violation is Error(corrupt_data) naming the file and, where there is one, the tensor; an
  // unknown dtype is Error(unsupported); a missing file Error(io_error).
  static SafetensorsReader open(const std::filesystem::path& path);
  // The same checks on bytes the caller keeps alive for the reader's lifetime; `source` names them in
  // errors.
  static SafetensorsReader parse(std::span<const std::byte> bytes, std::string source = "<memory>");

  const std::string& source() const noexcept { return source_; }
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  // In file order.
  const std::vector<SafetensorsTensor>& tensors() const noexcept { return tensors_; }
  // What keeps the tensors' bytes alive: the mapping of a file open() mapped (null for parse()).
  std::shared_ptr<const void> mapping() const noexcept { return mapping_; }
  bool contains(std::string_view name) const noexcept;
  // Error(not_found) naming the file and the key.
  const SafetensorsTensor& tensor(std::string_view name) const;
  // F32, F16 or BF16 tensors as f32 (rank <= 4); other dtypes are Error(unsupported).
  Tensor<float> read_f32(std::string_view name) const;
  // Drops the tensor's pages from the process's resident memory (MappedFile::release) once a loader has
  // copied it; reading it again faults them back in. Nothing for parse()d bytes.
  void release_pages(std::string_view name) const;

 private:
  std::shared_ptr<const MappedFile> mapping_;
  std::string source_;
  std::map<std::string, std::string> metadata_;
  std::vector<SafetensorsTensor> tensors_;
};

class SafetensorsWriter {
 public:
  // Copies the bytes. Error if the name is taken or "__metadata__", or the byte count disagrees with
  // dtype and shape.
  void add(std::string name, SafetensorsDType dtype, std::vector<std::size_t> shape, std::span<const std::byte> data);
  void add(std::string name, TensorView<const float> tensor);  // F32
  void set_metadata(std::string key, std::string value);

  // The file's bytes; the data section starts 64-byte aligned (the header is padded with spaces).
  std::vector<std::byte> serialize() const;
  // Writes a temporary file beside `path`, flushes it to disk, renames it over `path` and flushes the
  // folder: a crash leaves the old file or the new one, never a torn one. Error(io_error) on failure.
  void write(const std::filesystem::path& path) const;

 private:
  struct Entry {
    std::string name;
    SafetensorsDType dtype;
    std::vector<std::size_t> shape;
    std::vector<std::byte> data;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace persona
