#include "text/json_fields.hpp"

#include "text/onig_regex.hpp"

namespace persona::text {

std::string pattern_regex(const nlohmann::json& pattern, std::string_view where) {
  if (pattern.is_object() && pattern.size() == 1) {
    if (pattern.contains("String")) return OnigRegex::escape(field<std::string>(pattern, "String", where));
    if (pattern.contains("Regex")) return field<std::string>(pattern, "Regex", where);
  }
  PERSONA_THROW_AT(kTokenizerLoad, corrupt_data,
                   "{}: the pattern {} is neither {{\"String\": ...}} nor {{\"Regex\": ...}}", where,
                   pattern.dump().substr(0, 80));
}

}  // namespace persona::text
