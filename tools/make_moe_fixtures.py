#!/usr/bin/env python3
"""Writes tests/data/moe/: the routing decisions of transformers' own MoE routers for fixed inputs.

Run once, commit the output (the test suite never needs PyPI):
    python3 -m venv /tmp/moeenv
    /tmp/moeenv/bin/pip install torch transformers safetensors
    /tmp/moeenv/bin/python tools/make_moe_fixtures.py

Each case instantiates a router module of a model (Mixtral, Qwen3-MoE, DeepSeek-V3, Llama 4) from a small
config with seeded random weights (no download), feeds it fixed hidden states, and records in
<case>.safetensors: "logits" [T, E] (the router's own logits, which persona routes), "experts" [T, k]
(int32) and "weights" [T, k] as the module returns them, and for DeepSeek-V3 its "bias"
(e_score_correction_bias). DeepSeek-V3 returns its k experts unordered; the others best first.
Random normal logits have no exact ties.
"""
import pathlib

import safetensors.torch
import torch
from transformers import DeepseekV3Config, Llama4TextConfig, MixtralConfig, Qwen3MoeConfig
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter
from transformers.models.llama4.modeling_llama4 import Llama4Router
from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeTopKRouter

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "moe"
HIDDEN = 64
TOKENS = 37


def hidden_states(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(TOKENS, HIDDEN, generator=g)


def randomize(module, seed, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def save(name, logits, experts, weights, **extra):
    tensors = {
        "logits": logits.detach().float().contiguous(),
        "experts": experts.to(torch.int32).contiguous(),
        "weights": weights.detach().float().contiguous(),
    }
    tensors.update({k: v.detach().float().contiguous() for k, v in extra.items()})
    safetensors.torch.save_file(tensors, str(OUT / f"{name}.safetensors"))
    print(name, {k: tuple(v.shape) for k, v in tensors.items()})


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    # Mixtral: softmax, top-2, renormalized.
    r = MixtralTopKRouter(MixtralConfig(hidden_size=HIDDEN, num_local_experts=8, num_experts_per_tok=2))
    randomize(r, 1)
    logits, weights, experts = r(hidden_states(11))
    save("mixtral", logits, experts, weights)

    # Qwen3-MoE: softmax, top-8 of 64, with and without norm_topk_prob.
    for norm in (True, False):
        cfg = Qwen3MoeConfig(hidden_size=HIDDEN, num_experts=64, num_experts_per_tok=8, norm_topk_prob=norm)
        r = Qwen3MoeTopKRouter(cfg)
        randomize(r, 2)
        logits, weights, experts = r(hidden_states(12))
        save("qwen3_moe" + ("" if norm else "_unnormalized"), logits, experts, weights)

    # DeepSeek-V3: sigmoid + selection bias, 8 groups of 32 (256 experts), 4 kept, top-8, x2.5.
    cfg = DeepseekV3Config(hidden_size=HIDDEN, n_routed_experts=256, num_experts_per_tok=8, n_group=8, topk_group=4,
                           routed_scaling_factor=2.5, norm_topk_prob=True)
    r = DeepseekV3TopkRouter(cfg)
    randomize(r, 3, scale=0.2)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        r.e_score_correction_bias.copy_(torch.randn(256, generator=g) * 0.05)
    logits, weights, experts = r(hidden_states(13))
    save("deepseek_v3", logits, experts, weights, bias=r.e_score_correction_bias)

    # Llama 4: top-1 on the logits, weight sigmoid(chosen logit).
    r = Llama4Router(Llama4TextConfig(hidden_size=HIDDEN, num_local_experts=16, num_experts_per_tok=1))
    randomize(r, 5)
    scores, logits = r(hidden_states(14))
    experts = torch.topk(logits, 1, dim=1)[1]
    save("llama4", logits, experts, scores.gather(1, experts))


if __name__ == "__main__":
    main()
