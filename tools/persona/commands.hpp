// The persona program's commands. Each takes the whole argv and the index of its first argument, prints
// its results to stdout, and returns the exit status (0 done, 1 a persona::Error, 2 a bad command line).
#pragma once

namespace persona::cli {

int run_command(int argc, char** argv, int first);
int convert_peft_command(int argc, char** argv, int first);

}  // namespace persona::cli
