#include "io/peft_pattern.hpp"

#include "persona/core/error.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace persona::detail {
namespace {

constexpr std::size_t kMaxKeyLength = 1024;
// Backtracking budget per match: module names are short, and a key that needs more is hostile.
constexpr std::uint32_t kMatchLimit = 100000;
constexpr std::uint32_t kDepthLimit = 1000;

}  // namespace

struct PeftPatterns::Pattern {
  std::string key;
  double value = 0;
  pcre2_code* code = nullptr;
  pcre2_match_context* context = nullptr;
  ~Pattern() {
    pcre2_match_context_free(context);
    pcre2_code_free(code);
  }
};

PeftPatterns::PeftPatterns() = default;
PeftPatterns::~PeftPatterns() = default;
PeftPatterns::PeftPatterns(PeftPatterns&&) noexcept = default;
PeftPatterns& PeftPatterns::operator=(PeftPatterns&&) noexcept = default;

void PeftPatterns::add(std::string key, double value, std::string_view field) {
  constexpr const char* function = "read_peft_adapter";
  PERSONA_CHECK_AT(function, corrupt_data, !key.empty() && key.size() <= kMaxKeyLength,
                   "{} key of {} characters: expected 1..{}", field, key.size(), kMaxKeyLength);
  // PEFT's pattern, anchored at the start as re.match is.
  const std::string pattern = "(.*\\.)?(" + key + ")$";
  int error = 0;
  PCRE2_SIZE offset = 0;
  auto p = std::make_unique<Pattern>();
  p->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_ANCHORED | PCRE2_DOLLAR_ENDONLY, &error, &offset, nullptr);
  if (p->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    PERSONA_THROW_AT(function, corrupt_data, "{} key '{}' is not a valid regular expression: {}", field,
                     key.substr(0, 200), reinterpret_cast<const char*>(message));
  }
  p->context = pcre2_match_context_create(nullptr);
  PERSONA_CHECK_AT(function, capacity_exhausted, p->context != nullptr, "out of memory for a PCRE2 match context");
  pcre2_set_match_limit(p->context, kMatchLimit);
  pcre2_set_depth_limit(p->context, kDepthLimit);
  p->key = std::move(key);
  p->value = value;
  patterns_.push_back(std::move(p));
}

std::optional<double> PeftPatterns::find(std::string_view name) const {
  for (const auto& p : patterns_) {
    pcre2_match_data* data = pcre2_match_data_create_from_pattern(p->code, nullptr);
    PERSONA_CHECK_AT("read_peft_adapter", capacity_exhausted, data != nullptr, "out of memory for PCRE2 match data");
    const int rc = pcre2_match(p->code, reinterpret_cast<PCRE2_SPTR>(name.data()), name.size(), 0, 0, data, p->context);
    pcre2_match_data_free(data);
    if (rc >= 0) return p->value;
    if (rc != PCRE2_ERROR_NOMATCH) {
      PERSONA_THROW_AT("read_peft_adapter", corrupt_data,
                       "pattern key '{}' could not be matched against '{}' within PCRE2's limits (error {})",
                       p->key.substr(0, 200), name, rc);
    }
  }
  return std::nullopt;
}

bool PeftPatterns::empty() const noexcept { return patterns_.empty(); }

}  // namespace persona::detail
