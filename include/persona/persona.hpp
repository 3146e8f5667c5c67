// Everything persona offers, in one include.
#pragma once

#include "persona/core/cpu_features.hpp"
#include "persona/core/dtype.hpp"
#include "persona/core/error.hpp"
#include "persona/core/ops.hpp"
#include "persona/core/tensor.hpp"
#include "persona/core/threading.hpp"
#include "persona/io/peft_adapter.hpp"
#include "persona/io/safetensors.hpp"
#include "persona/lora/lora_adapter.hpp"
#include "persona/lora/lora_apply.hpp"
#include "persona/lora/lora_module.hpp"
#include "persona/quant/quant_spec.hpp"
#include "persona/quant/quantize.hpp"
#include "persona/quant/quantized_matmul.hpp"
#include "persona/quant/quantized_matrix.hpp"
#include "persona/version.hpp"
