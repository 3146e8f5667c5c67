#include "text/post_processor.hpp"

#include "text/json_fields.hpp"

#include <fmt/format.h>

namespace persona::text {
namespace {

// The ids before and after the sequence.
class WrapProcessor final : public PostProcessor {
 public:
  WrapProcessor(std::vector<std::int32_t> before, std::vector<std::int32_t> after)
      : before_(std::move(before)), after_(std::move(after)) {}
  std::size_t added_tokens() const noexcept override { return before_.size() + after_.size(); }
  void process(std::vector<std::int32_t>& ids) const override {
    ids.insert(ids.begin(), before_.begin(), before_.end());
    ids.insert(ids.end(), after_.begin(), after_.end());
  }

 private:
  std::vector<std::int32_t> before_, after_;
};

class SequenceProcessor final : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> parts) : parts_(std::move(parts)) {}
  std::size_t added_tokens() const noexcept override {
    std::size_t n = 0;
    for (const auto& p : parts_) n += p->added_tokens();
    return n;
  }
  void process(std::vector<std::int32_t>& ids) const override {
    for (const auto& p : parts_) p->process(ids);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

std::int32_t id_of_pair(const nlohmann::json& pair, std::string_view name, std::string_view where) {
  const nlohmann::json p = field<nlohmann::json>(pair, name, where);
  if (!p.is_array() || p.size() != 2 || !p[1].is_number_integer()) {
    PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: '{}' is {}; expected [token, id]", where, name,
                     p.dump().substr(0, 80));
  }
  return p[1].get<std::int32_t>();
}

std::unique_ptr<PostProcessor> template_processor(const nlohmann::json& spec, std::string_view where) {
  const nlohmann::json single = field<nlohmann::json>(spec, "single", where);
  const nlohmann::json specials = field_or<nlohmann::json>(spec, "special_tokens", nlohmann::json::object(), where);
  if (!single.is_array()) PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: 'single' is not a list", where);
  std::vector<std::int32_t> before, after;
  bool seen_sequence = false;
  for (const nlohmann::json& piece : single) {
    if (piece.contains("Sequence")) {
      const std::string id = field<std::string>(piece.at("Sequence"), "id", where);
      if (id != "A" || seen_sequence) {
        PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: the single template uses sequence '{}'; expected 'A' once",
                         where, id);
      }
      seen_sequence = true;
    } else if (piece.contains("SpecialToken")) {
      const std::string id = field<std::string>(piece.at("SpecialToken"), "id", where);
      const auto it = specials.find(id);
      if (it == specials.end()) {
        PERSONA_THROW_AT(kTokenizerLoad, corrupt_data,
                         "{}: the template names special token '{}', which "
                         "special_tokens does not define",
                         where, id);
      }
      const auto ids = field<std::vector<std::int32_t>>(*it, "ids", where);
      (seen_sequence ? after : before).insert((seen_sequence ? after : before).end(), ids.begin(), ids.end());
    } else {
      PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: template piece {} is neither Sequence nor SpecialToken",
                       where, piece.dump().substr(0, 80));
    }
  }
  if (!seen_sequence) PERSONA_THROW_AT(kTokenizerLoad, corrupt_data, "{}: the single template has no sequence", where);
  return std::make_unique<WrapProcessor>(std::move(before), std::move(after));
}

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& spec, std::string_view source) {
  if (spec.is_null()) return nullptr;
  const std::string where = fmt::format("{}: post_processor", source);
  const std::string type = type_of(spec, where);
  if (type == "TemplateProcessing") return template_processor(spec, where);
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    return std::make_unique<WrapProcessor>(std::vector{id_of_pair(spec, "cls", where)},
                                           std::vector{id_of_pair(spec, "sep", where)});
  }
  if (type == "ByteLevel") return std::make_unique<SequenceProcessor>(std::vector<std::unique_ptr<PostProcessor>>{});
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PostProcessor>> parts;
    for (const nlohmann::json& part : field<nlohmann::json>(spec, "processors", where)) {
      if (auto p = make_post_processor(part, source)) parts.push_back(std::move(p));
    }
    return std::make_unique<SequenceProcessor>(std::move(parts));
  }
  PERSONA_THROW_AT(kTokenizerLoad, unsupported,
                   "{}: post_processor type '{}' is not supported (persona reads TemplateProcessing, BertProcessing, "
                   "RobertaProcessing, ByteLevel and Sequence)",
                   source, type);
}

}  // namespace persona::text
