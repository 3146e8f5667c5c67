// The persona program's commands. Each takes the whole argv and the index of its first argument, prints
// its results to stdout, and returns the exit status (0 done, 1 a persona::Error, 2 a bad command line).
#pragma once

#include <persona/model/model.hpp>

#include <string>

namespace persona::cli {

int run_command(int argc, char** argv, int first);
int convert_peft_command(int argc, char** argv, int first);
int convert_model_command(int argc, char** argv, int first);
int tokenize_command(int argc, char** argv, int first);
int detokenize_command(int argc, char** argv, int first);

// "f32", "bf16", "int8", "int4" (UsageError naming --weights otherwise), and back.
WeightFormat parse_weight_format(const std::string& text);
const char* weight_format_name(WeightFormat format);

}  // namespace persona::cli
