// What flows through a tokenizer's stages: the input cut into pieces, each a span of text still to be
// split and tokenized, or an added token already matched. Internal to the library.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace persona::text {

struct Piece {
  std::string text;         // UTF-8
  std::int32_t token = -1;  // an added token's id: the piece is final
  bool at_start = false;    // begins where the input does (Metaspace's prepend_scheme "first")
};

using Pieces = std::vector<Piece>;

}  // namespace persona::text
