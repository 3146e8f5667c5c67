#!/usr/bin/env python3
"""Writes tests/data/peft/: LoRA adapters made by PEFT itself, and PEFT's outputs for fixed inputs.

Run once, commit the output (the test suite never needs PyPI):
    python3 -m venv /tmp/peftenv
    /tmp/peftenv/bin/pip install torch transformers peft safetensors
    /tmp/peftenv/bin/python tools/make_peft_fixtures.py

A tiny Llama-style model is built from a config with seeded random weights (no download). Each variant
wraps it with a peft LoraConfig, randomizes A and B (PEFT zeroes B by default, which would make every
output equal the base), saves the adapter with save_pretrained, and records, for every adapted linear
layer, a fixed input x and PEFT's LoRA contribution delta = lora_layer(x) - base_layer(x), in
<variant>/expected.safetensors under "layers.<L>.<module>.x" and ".delta" (and ".base", the base weight, for
DoRA, whose output depends on it).
"""
import json
import pathlib
import shutil

import peft
import safetensors.torch
import torch
import transformers

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "peft"
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

VARIANTS = {
    "plain": dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    "rslora": dict(r=16, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    "patterns": dict(
        r=8,
        lora_alpha=16,
        target_modules=ALL,
        rank_pattern={"model.layers.1.self_attn.q_proj": 2, "down_proj": 4},
        alpha_pattern={"v_proj": 32},
    ),
    # DoRA: persona applies it (magnitude vector and the base weight's row norms) and must match PEFT.
    "dora": dict(r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj"]),
    # A variant persona must refuse with an Error naming the field.
    "modules_to_save": dict(r=4, lora_alpha=8, target_modules=["q_proj"], modules_to_save=["lm_head"]),
}


def tiny_llama():
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).float().eval()


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    for name, options in VARIANTS.items():
        torch.manual_seed(1)
        model = peft.get_peft_model(tiny_llama(), peft.LoraConfig(init_lora_weights=False, **options))
        folder = OUT / name
        model.save_pretrained(folder)
        (folder / "README.md").unlink(missing_ok=True)  # the model card template, not needed here
        expected = {}
        generator = torch.Generator().manual_seed(2)
        for module_name, module in model.named_modules():
            if not isinstance(module, peft.tuners.lora.LoraLayer) or not hasattr(module, "base_layer"):
                continue
            # module_name: base_model.model.model.layers.<L>.<block>.<proj>
            parts = module_name.split(".")
            layer = parts[parts.index("layers") + 1]
            key = f"layers.{layer}." + ".".join(parts[parts.index("layers") + 2 :])
            x = torch.randn(3, module.base_layer.in_features, generator=generator)
            with torch.no_grad():
                delta = module(x) - module.base_layer(x)
            expected[f"{key}.x"] = x.contiguous()
            expected[f"{key}.delta"] = delta.contiguous()
            if options.get("use_dora"):
                # DoRA's output depends on the base weight (through its row norms): record it.
                expected[f"{key}.base"] = module.base_layer.weight.detach().contiguous()
        safetensors.torch.save_file(expected, folder / "expected.safetensors")
        (folder / "README").write_text(
            f"Made by tools/make_peft_fixtures.py with torch {torch.__version__}, transformers "
            f"{transformers.__version__}, peft {peft.__version__}.\nLoraConfig: {json.dumps(options)}\n"
        )
    print("wrote", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
