#include "text/onig_regex.hpp"

#include "persona/core/error.hpp"

#include <oniguruma.h>

#include <memory>
#include <mutex>

namespace persona::text {
namespace {

constexpr unsigned long kRetryLimit = 10'000'000;  // per search: a hostile pattern costs bounded time

void initialize() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encodings, 1);
  });
}

std::string message(int code, OnigErrorInfo* info) {
  OnigUChar text[ONIG_MAX_ERROR_MESSAGE_LEN];
  onig_error_code_to_str(text, code, info);
  return reinterpret_cast<const char*>(text);
}

struct Region {
  OnigRegion* region = onig_region_new();
  ~Region() { onig_region_free(region, 1); }
};

}  // namespace

OnigRegex::OnigRegex(std::string_view pattern, std::string_view what) : what_(what) {
  initialize();
  OnigErrorInfo info{};
  ::OnigRegex regex = nullptr;
  const auto* p = reinterpret_cast<const OnigUChar*>(pattern.data());
  const int code =
      onig_new(&regex, p, p + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8, ONIG_SYNTAX_DEFAULT, &info);
  if (code != ONIG_NORMAL) {
    PERSONA_THROW(invalid_argument, "{}: the pattern '{}' is not a valid regex: {}", what, pattern,
                  message(code, &info));
  }
  regex_ = regex;
}

OnigRegex::~OnigRegex() {
  if (regex_ != nullptr) onig_free(static_cast<::OnigRegex>(regex_));
}

void OnigRegex::find_all(std::string_view s, std::vector<std::pair<std::size_t, std::size_t>>& out) const {
  out.clear();
  const auto* begin = reinterpret_cast<const OnigUChar*>(s.data());
  const OnigUChar* end = begin + s.size();
  OnigMatchParam* param = onig_new_match_param();
  const std::unique_ptr<OnigMatchParam, decltype(&onig_free_match_param)> owned(param, &onig_free_match_param);
  onig_initialize_match_param(param);
  onig_set_retry_limit_in_search_of_match_param(param, kRetryLimit);
  Region region;
  std::size_t from = 0;
  bool have_last = false;
  std::size_t last_end = 0;
  while (from <= s.size()) {
    const int found = onig_search_with_param(static_cast<::OnigRegex>(regex_), begin, end, begin + from, end,
                                             region.region, ONIG_OPTION_NONE, param);
    if (found == ONIG_MISMATCH) break;
    if (found < 0) {
      PERSONA_THROW(invalid_argument, "{}: the regex search failed on a piece of {} bytes: {}", what_, s.size(),
                    message(found, nullptr));
    }
    const auto b = static_cast<std::size_t>(region.region->beg[0]), e = static_cast<std::size_t>(region.region->end[0]);
    if (b == e && have_last && last_end == e) {
      // An empty match right after the last one: step over one character.
      std::size_t step = 1;
      while (from + step < s.size() && (static_cast<unsigned char>(s[from + step]) & 0xC0) == 0x80) ++step;
      from += step;
      continue;
    }
    out.emplace_back(b, e);
    from = e;
    last_end = e;
    have_last = true;
  }
}

void OnigRegex::replace_all(std::string& s, std::string_view content) const {
  thread_local std::vector<std::pair<std::size_t, std::size_t>> matches;
  find_all(s, matches);
  if (matches.empty()) return;
  std::string out;
  std::size_t last = 0;
  for (const auto& [b, e] : matches) {
    out.append(s, last, b - last);
    out.append(content);
    last = e;
  }
  out.append(s, last, std::string::npos);
  s = std::move(out);
}

std::string OnigRegex::escape(std::string_view literal) {
  std::string out;
  for (const char c : literal) {
    if (std::string_view("\\^$.|?*+()[]{}-/#&~ \t\n").find(c) != std::string_view::npos) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

}  // namespace persona::text
