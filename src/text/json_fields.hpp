// Reading tokenizer.json's objects: typed fields with errors that name the file, the component and the
// field. Internal to the library.
#pragma once

#include "persona/core/error.hpp"

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace persona::text {

inline constexpr const char* kTokenizerLoad = "Tokenizer::load";

// The value of `field` in `object` as T; Error(corrupt_data) naming `where` if absent or of another type.
template <class T>
T field(const nlohmann::json& object, std::string_view name, std::string_view where) {
  const auto it = object.find(name);
  if (it == object.end()) PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: '{}' is missing", where, name);
  try {
    return it->template get<T>();
  } catch (const nlohmann::json::exception&) {
    PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: '{}' is {}, of the wrong type", where, name,
                     it->dump().substr(0, 80));
  }
}

// The same, `fallback` when absent or null.
template <class T>
T field_or(const nlohmann::json& object, std::string_view name, T fallback, std::string_view where) {
  const auto it = object.find(name);
  if (it == object.end() || it->is_null()) return fallback;
  return field<T>(object, name, where);
}

// The "type" of a component object.
inline std::string type_of(const nlohmann::json& object, std::string_view where) {
  if (!object.is_object()) {
    PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: {} is not an object", where, object.dump().substr(0, 80));
  }
  return field<std::string>(object, "type", where);
}

// A {"String": s} or {"Regex": r} pattern as a regex source.
std::string pattern_regex(const nlohmann::json& pattern, std::string_view where);

}  // namespace persona::text
