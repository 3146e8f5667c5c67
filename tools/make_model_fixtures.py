#!/usr/bin/env python3
"""Writes tests/data/models/: tiny random Hugging Face models of every architecture persona/model loads, and
transformers' own logits for fixed prompts.

Run once, commit the output (the test suite never needs PyPI). Pinned versions:
    python3 -m venv /tmp/modelenv
    /tmp/modelenv/bin/pip install torch==2.15.0 transformers==5.25.0 peft==0.21.2 safetensors==0.8.0
    /tmp/modelenv/bin/python tools/make_model_fixtures.py

Each case builds a model from a small config with seeded random weights (no download), saves it with
save_pretrained (one case sharded, some in bf16 or f16; "qwen3_moe_fused" writes the experts in the fused
layout transformers 5 holds in memory), and records in <case>/expected.safetensors, for each prompt i:
"prompt.<i>" (int32 token ids), "prefill.<i>" ([len, vocab] logits of every prompt position), "greedy.<i>"
(the 16 tokens greedy decoding produces after the prompt, int32) and "greedy_logits.<i>" ([16, vocab], the
logits each greedy token was chosen from), and the same under "lora." with the case's PEFT adapter (saved in
<case>/adapter: LoRA on attention, MLP and experts; one rsLoRA, one DoRA, one rank_pattern). Logits come from the model run in float32 on the weights as
stored (bf16 and f16 weights rounded first), so that persona's f32 path can match them to 1e-4.
"""
import json
import pathlib
import shutil

import peft
import safetensors.torch
import torch
import transformers as T

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "models"
PROMPTS = [[3, 17, 42, 5, 88], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [7] * 3 + list(range(20, 37))]
GREEDY_STEPS = 16
COMMON = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, eos_token_id=[0, 95], bos_token_id=1)
MOE = dict(num_experts_per_tok=2, moe_intermediate_size=16)

CASES = {
    # llama3 rope scaling, sharded into several files.
    "llama": (T.LlamaConfig, dict(rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                                                       low_freq_factor=1.0, high_freq_factor=4.0,
                                                       original_max_position_embeddings=16)),
              dict(max_shard_size="40KB")),
    # Tied embeddings, linear rope scaling, biases on every linear layer.
    "llama_tied": (T.LlamaConfig, dict(tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
                                       rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0)), {}),
    # A sliding window shorter than the prompts; f16 weights.
    "mistral": (T.MistralConfig, dict(sliding_window=6, head_dim=8), dict(dtype=torch.float16)),
    # q/k/v bias; bf16 weights.
    "qwen2": (T.Qwen2Config, dict(), dict(dtype=torch.bfloat16)),
    # q/k norm and an explicit head_dim that is not hidden / heads; the second layer slides.
    "qwen3": (T.Qwen3Config, dict(head_dim=16, use_sliding_window=True, sliding_window=5, max_window_layers=1), {}),
    "mixtral": (T.MixtralConfig, dict(num_local_experts=4, num_experts_per_tok=2), {}),
    # Shared expert with a sigmoid gate, no renormalization.
    "qwen2_moe": (T.Qwen2MoeConfig, dict(num_experts=4, shared_expert_intermediate_size=24, norm_topk_prob=False, **MOE),
                  {}),
    # Renormalized top-k; layer 1 dense (mlp_only_layers).
    "qwen3_moe": (T.Qwen3MoeConfig, dict(num_experts=4, norm_topk_prob=True, head_dim=8, mlp_only_layers=[1], **MOE),
                  {}),
    "qwen3_moe_fused": (T.Qwen3MoeConfig, dict(num_experts=4, norm_topk_prob=True, head_dim=8, **MOE), dict(fused=True)),
}


ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]
FUSED_EXPERTS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
# The PEFT adapter of each case (peft.LoraConfig arguments), saved in <case>/adapter.
ADAPTERS = {
    "llama": dict(r=8, lora_alpha=16, use_rslora=True, target_modules=ATTENTION + MLP),
    "llama_tied": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "mistral": dict(r=4, lora_alpha=8, target_modules=ATTENTION + MLP),
    "qwen2": dict(r=4, lora_alpha=8, target_modules=ATTENTION + MLP, rank_pattern={"down_proj": 2}),
    "qwen3": dict(r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"]),
    # PEFT turns w1/w2/w3 into target_parameters on transformers 5's fused experts (and a regex rank_pattern).
    "mixtral": dict(r=4, lora_alpha=8, target_modules=ATTENTION + ["w1", "w2", "w3"]),
    "qwen2_moe": dict(r=4, lora_alpha=8, target_modules=ATTENTION + MLP, target_parameters=FUSED_EXPERTS),
    "qwen3_moe": dict(r=4, lora_alpha=8, target_modules=ATTENTION + MLP),
    "qwen3_moe_fused": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], target_parameters=FUSED_EXPERTS),
}


def randomize_adapter(model, seed):
    """PEFT zeroes B (and sets DoRA magnitudes to the weight norms); random factors make the delta visible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * (0.6 / p.shape[-1] ** 0.5))
            elif "lora_magnitude_vector" in name:
                p.mul_(1.0 + 0.1 * torch.randn(p.shape, generator=g))


def randomize(model, seed):
    """Normal weights of scale 0.5 / sqrt(fan-in) (norm weights near 1), so that logits are not all near zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / p.shape[-1] ** 0.5))


def record(model, prefix=""):
    tensors = {}
    for i, prompt in enumerate(PROMPTS):
        ids = torch.tensor([prompt])
        with torch.no_grad():
            tensors[f"{prefix}prefill.{i}"] = model(ids).logits[0].float().contiguous()
            # Greedy by hand (the whole sequence recomputed each step): generate() would mask the eos ids.
            tokens, logits = list(prompt), []
            for _ in range(GREEDY_STEPS):
                step = model(torch.tensor([tokens])).logits[0, -1].float()
                logits.append(step)
                tokens.append(int(step.argmax()))
        tensors[f"{prefix}prompt.{i}"] = torch.tensor(prompt, dtype=torch.int32)
        tensors[f"{prefix}greedy.{i}"] = torch.tensor(tokens[len(prompt):], dtype=torch.int32)
        tensors[f"{prefix}greedy_logits.{i}"] = torch.stack(logits).contiguous()
    return tensors


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    for index, (name, (config_class, fields, options)) in enumerate(CASES.items()):
        torch.manual_seed(index)
        config = config_class(**{**COMMON, **fields})
        model = T.AutoModelForCausalLM.from_config(config).eval()
        randomize(model, 1000 + index)
        dtype = options.get("dtype", torch.float32)
        # Round the parameters to the stored dtype, then compute in float32 on the rounded weights (not
        # model.to(dtype), which would round the rotary inv_freq buffer as well).
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(dtype).to(torch.float32))
        folder = OUT / name
        model.to(dtype).save_pretrained(folder, max_shard_size=options.get("max_shard_size", "50GB"))
        model = T.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        if options.get("fused"):
            (folder / "model.safetensors").unlink()
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            safetensors.torch.save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        expected = record(model)
        adapted = peft.get_peft_model(model, peft.LoraConfig(**ADAPTERS[name])).eval()
        randomize_adapter(adapted, 2000 + index)
        adapted.save_pretrained(folder / "adapter")
        (folder / "adapter" / "README.md").unlink()  # PEFT's model card template
        expected.update(record(adapted, "lora."))
        safetensors.torch.save_file(expected, folder / "expected.safetensors")
        print(name, sorted(p.name for p in folder.iterdir()))


if __name__ == "__main__":
    main()
