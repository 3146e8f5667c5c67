// Where the HNSW index keeps its vector rows: RowStorage (owned huge-page memory, or a mapped file), and
// the int8 row codec with the asymmetric distance from a float query to a coded row.
#pragma once

#include "core/huge_page_memory.hpp"
#include "persona/core/file_io.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

namespace persona::detail {

// Rows of one element type in owned memory (huge pages when large) or in a mapped file (written
// copy-on-write).
template <class T>
class RowStorage {
 public:
  T* data() const noexcept { return data_; }
  bool mapped() const noexcept { return file_ != nullptr; }
  std::size_t owned_bytes() const noexcept { return owned_.bytes(); }
  // Owned, zeroed storage of `elements`, keeping the first min(old, new) elements.
  void resize(std::size_t elements) {
    HugePageMemory grown(elements * sizeof(T));
    T* to = reinterpret_cast<T*>(grown.data());
    if (size_ > 0 && elements > 0) std::copy_n(data_, std::min(size_, elements), to);
    owned_ = std::move(grown);
    file_.reset();
    data_ = to;
    size_ = elements;
  }
  void map(std::shared_ptr<MappedFile> file, T* at, std::size_t elements) {
    owned_ = HugePageMemory();  // not `= {}`: clang 14 then leaves the destructor undefined at -O1
    file_ = std::move(file);
    data_ = at;
    size_ = elements;
  }

 private:
  HugePageMemory owned_;
  std::shared_ptr<MappedFile> file_;
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

// An int8 row: x ~ offset + scale * code over the vector's own [min, max] (256 levels, codes -128..127),
// and the squared norm of that approximation, so that an L2 distance needs one dot product of the float
// query with the codes. Why per-vector min/max, and asymmetric: a vector is coded once and compared many
// times, so its coding may cost a pass over it; embeddings are often unnormalised and off-centre, and a
// min/max range spends all 256 levels on the values present where absmax/127 would leave one side's
// levels empty; the query stays float, so only the stored side is rounded. kv (per token) and quant's
// int8 activations use symmetric absmax/127 for their own reasons: zero stays exact and their integer
// products need no offset term.
struct Int8RowHeader {
  float scale, offset, norm, unused;
};
constexpr std::size_t kInt8RowHeaderBytes = 16;  // Int8RowHeader, before the codes
static_assert(sizeof(Int8RowHeader) == kInt8RowHeaderBytes);

// Bytes of one row: the header, dim codes, zero padding to a multiple of 4.
constexpr std::size_t int8_row_bytes(std::size_t dim) noexcept { return kInt8RowHeaderBytes + (dim + 3) / 4 * 4; }

// row: int8_row_bytes(dim) bytes; the padding is left as it is.
void encode_int8_row(const float* x, std::size_t dim, std::int8_t* row) noexcept;
void decode_int8_row(const std::int8_t* row, std::size_t dim, float* out) noexcept;

inline Int8RowHeader int8_row_header(const std::int8_t* row) noexcept {
  Int8RowHeader h;
  std::memcpy(&h, row, sizeof(h));
  return h;
}
inline const std::int8_t* int8_row_codes(const std::int8_t* row) noexcept { return row + kInt8RowHeaderBytes; }

}  // namespace persona::detail
