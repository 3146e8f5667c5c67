// BPE as Hugging Face tokenizers' models/bpe does it: a piece is split into characters (each looked up,
// else its bytes as <0xXX> tokens with byte_fallback, else unk, fused with fuse_unk), then the adjacent
// pair of lowest merge rank is merged, leftmost first, until no pair merges. ignore_merges takes a piece
// that is itself a token whole. Words are cached per thread (results do not depend on the cache).
#include "text/json_fields.hpp"
#include "text/token_model.hpp"

#include <fmt/format.h>

#include <atomic>
#include <queue>
#include <tuple>

namespace persona::text {
namespace {

constexpr std::size_t kCacheWords = 10000;  // per model and thread
constexpr std::size_t kCachedLength = 256;  // longer pieces are not cached (as tokenizers' MAX_LENGTH)
constexpr std::size_t kCachedModels = 4;    // per thread: older models' caches are dropped

std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
}

struct Merge {
  std::uint32_t rank;
  std::int32_t id;
};

class BpeModel final : public TokenModel {
 public:
  BpeModel(const nlohmann::json& spec, std::string_view where)
      : vocab_(field<nlohmann::json>(spec, "vocab", where), where), cache_id_(next_cache_id()) {
    if (const auto it = spec.find("dropout"); it != spec.end() && !it->is_null() && it->get<double>() > 0.0) {
      PERSONA_THROW_AT(kTokenizerLoad, unsupported,
                       "{}: BPE dropout {} makes encoding random; persona encodes "
                       "deterministically",
                       where, it->dump());
    }
    byte_fallback_ = field_or<bool>(spec, "byte_fallback", false, where);
    fuse_unk_ = field_or<bool>(spec, "fuse_unk", false, where);
    ignore_merges_ = field_or<bool>(spec, "ignore_merges", false, where);
    prefix_ = field_or<std::string>(spec, "continuing_subword_prefix", "", where);
    suffix_ = field_or<std::string>(spec, "end_of_word_suffix", "", where);
    if (const std::string unk = field_or<std::string>(spec, "unk_token", "", where); !unk.empty()) {
      const auto id = vocab_.find(unk);
      if (!id)
        PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: unk_token '{}' is not in the vocabulary", where, unk);
      unk_ = *id;
    }
    if (byte_fallback_) {
      for (int b = 0; b < 256; ++b)
        byte_tokens_[static_cast<std::size_t>(b)] = vocab_.find(fmt::format("<0x{:02X}>", b));
    }
    const nlohmann::json merges = field<nlohmann::json>(spec, "merges", where);
    if (!merges.is_array()) PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: 'merges' is not a list", where);
    merges_.reserve(merges.size());
    for (std::size_t rank = 0; rank < merges.size(); ++rank) {
      const nlohmann::json& m = merges[rank];
      std::string a, b;
      if (m.is_string()) {  // "a b", the older format
        const std::string text = m.get<std::string>();
        const std::size_t space = text.find(' ');
        if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
          PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: merge {} is '{}', not two tokens", where, rank, text);
        }
        a = text.substr(0, space);
        b = text.substr(space + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: merge {} is {}, not a pair of tokens", where, rank,
                         m.dump().substr(0, 80));
      }
      const auto a_id = vocab_.find(a), b_id = vocab_.find(b);
      const std::string merged = a + (prefix_.empty() ? b : b.substr(std::min(prefix_.size(), b.size())));
      const auto new_id = vocab_.find(merged);
      if (!a_id || !b_id || !new_id) {
        PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: merge {} ('{}' + '{}') uses a token not in the vocabulary",
                         where, rank, a, b);
      }
      merges_.emplace(pair_key(*a_id, *b_id), Merge{static_cast<std::uint32_t>(rank), *new_id});
    }
  }

  const Vocabulary& vocabulary() const noexcept override { return vocab_; }

  void tokenize(std::string_view piece, std::vector<std::int32_t>& out) const override {
    if (ignore_merges_) {
      if (const auto id = vocab_.find(piece)) {
        out.push_back(*id);
        return;
      }
    }
    if (piece.size() >= kCachedLength) {
      merge_word(piece, out);
      return;
    }
    Cache& cache = thread_cache();
    if (const auto it = cache.words.find(piece); it != cache.words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
    const std::size_t first = out.size();
    merge_word(piece, out);
    if (cache.words.size() < kCacheWords)
      cache.words.emplace(std::string(piece), std::vector(out.begin() + static_cast<std::ptrdiff_t>(first), out.end()));
  }

 private:
  struct Cache {
    std::uint64_t owner = 0;
    std::unordered_map<std::string, std::vector<std::int32_t>, StringHash, std::equal_to<>> words;
  };

  static std::uint64_t next_cache_id() {
    static std::atomic<std::uint64_t> next{1};
    return next++;
  }

  Cache& thread_cache() const {
    thread_local std::vector<Cache> caches;
    for (Cache& c : caches) {
      if (c.owner == cache_id_) return c;
    }
    if (caches.size() >= kCachedModels) caches.erase(caches.begin());
    caches.push_back(Cache{cache_id_, {}});
    return caches.back();
  }

  struct Symbol {
    std::int32_t id;
    std::int32_t prev, next;
    bool alive;
  };

  void merge_word(std::string_view w, std::vector<std::int32_t>& out) const {
    std::vector<Symbol> symbols;
    symbols.reserve(w.size());
    std::int32_t pending_unk = -1;  // an unk waiting to be added (fused with the next with fuse_unk)
    const auto add = [&](std::int32_t id) {
      const auto n = static_cast<std::int32_t>(symbols.size());
      symbols.push_back({id, n - 1, n + 1, true});
    };
    std::string scratch;
    for (std::size_t i = 0; i < w.size();) {
      std::size_t end = i + 1;
      while (end < w.size() && (static_cast<unsigned char>(w[end]) & 0xC0) == 0x80) ++end;
      std::string_view c = w.substr(i, end - i);
      if ((!prefix_.empty() && i > 0) || (!suffix_.empty() && end == w.size())) {
        scratch.assign(i > 0 ? prefix_ : std::string());
        scratch.append(c);
        if (end == w.size()) scratch.append(suffix_);
        c = scratch;
      }
      i = end;
      if (const auto id = vocab_.find(c)) {
        if (pending_unk >= 0) {
          add(pending_unk);
          pending_unk = -1;
        }
        add(*id);
        continue;
      }
      if (byte_fallback_) {
        bool all = true;
        for (const char b : c) all = all && byte_tokens_[static_cast<unsigned char>(b)].has_value();
        if (all) {
          for (const char b : c) add(*byte_tokens_[static_cast<unsigned char>(b)]);
          continue;
        }
      }
      if (unk_) {
        if (pending_unk >= 0 && !fuse_unk_) add(pending_unk);
        pending_unk = *unk_;
      }
    }
    if (pending_unk >= 0) add(pending_unk);
    if (symbols.empty()) return;
    symbols.back().next = -1;

    // (rank, position, new id): the lowest rank first, then the leftmost.
    using Entry = std::tuple<std::uint32_t, std::int32_t, std::int32_t>;
    std::priority_queue<Entry, std::vector<Entry>, std::greater<>> queue;
    const auto push = [&](std::int32_t pos) {
      const Symbol& s = symbols[static_cast<std::size_t>(pos)];
      if (s.next < 0) return;
      const auto it = merges_.find(pair_key(s.id, symbols[static_cast<std::size_t>(s.next)].id));
      if (it != merges_.end()) queue.emplace(it->second.rank, pos, it->second.id);
    };
    for (std::int32_t p = 0; p + 1 < static_cast<std::int32_t>(symbols.size()); ++p) push(p);
    while (!queue.empty()) {
      const auto [rank, pos, new_id] = queue.top();
      queue.pop();
      Symbol& s = symbols[static_cast<std::size_t>(pos)];
      if (!s.alive || s.next < 0) continue;
      Symbol& right = symbols[static_cast<std::size_t>(s.next)];
      const auto it = merges_.find(pair_key(s.id, right.id));
      if (it == merges_.end() || it->second.id != new_id) continue;  // an entry gone stale
      s.id = new_id;
      right.alive = false;
      s.next = right.next;
      if (s.next >= 0) symbols[static_cast<std::size_t>(s.next)].prev = pos;
      if (s.prev >= 0) push(s.prev);
      push(pos);
    }
    for (const Symbol& s : symbols) {
      if (s.alive) out.push_back(s.id);
    }
  }

  Vocabulary vocab_;
  std::unordered_map<std::uint64_t, Merge> merges_;
  std::array<std::optional<std::int32_t>, 256> byte_tokens_{};
  std::optional<std::int32_t> unk_;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  std::string prefix_, suffix_;
  std::uint64_t cache_id_;
};

}  // namespace

std::unique_ptr<TokenModel> make_bpe_model(const nlohmann::json& spec, std::string_view where) {
  return std::make_unique<BpeModel>(spec, where);
}

}  // namespace persona::text
