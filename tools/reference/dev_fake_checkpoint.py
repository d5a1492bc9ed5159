"""dev_fake_checkpoint.py - DEVELOPMENT ONLY: write an official-layout tiny checkpoint from Python.

Not used for the committed goldens (those come from `hadal gen-model`). It exists so the loader /
dequantiser / name map of make_goldens.py can be tested without the C tool, and so a quick
round trip (quantise here -> dequantise there -> identical fp32) proves the format handling:

    python dev_fake_checkpoint.py --preset tiny-a --seed 1 --out /tmp/fake-tiny-a
    python make_goldens.py --checkpoint /tmp/fake-tiny-a --presets tiny-a --out-root /tmp/g

Weights: transformers' random init (N(0, 0.02)) with the spec §9.3 non-degenerate overrides,
then quantised like the real checkpoint (FP8 e4m3 + e8m0 128x128 blocks, FP4 e2m1 + e8m0 per
32, bf16 rounding for the bf16 tensors).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import ml_dtypes
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsv4_ref as R  # noqa: E402

FP8_SUFFIXES = (
    "attn.wq_a.weight", "attn.wq_b.weight", "attn.wkv.weight", "attn.wo_a.weight", "attn.wo_b.weight",
    "ffn.shared_experts.w1.weight", "ffn.shared_experts.w2.weight", "ffn.shared_experts.w3.weight",
    "attn.indexer.wq_b.weight", "e_proj.weight", "h_proj.weight",
)
F32_SUFFIXES = ("hc_attn_fn", "hc_attn_base", "hc_attn_scale", "hc_ffn_fn", "hc_ffn_base", "hc_ffn_scale",
                "hc_head_fn", "hc_head_base", "hc_head_scale", "ape", "attn_sink", "ffn.gate.bias")


def pow2_ceil_exp(amax: torch.Tensor, qmax: float) -> torch.Tensor:
    """Integer e with 2^e = 2^ceil(log2(amax/qmax)) (amax > 0)."""
    return torch.ceil(torch.log2(amax.double() / qmax)).to(torch.int64)


def quant_fp8(w: torch.Tensor):
    out, inn = w.shape
    bo, bi = (out + 127) // 128, (inn + 127) // 128
    pad = torch.zeros(bo * 128, bi * 128, dtype=torch.float64)
    pad[:out, :inn] = w.double()
    blocks = pad.view(bo, 128, bi, 128)
    amax = blocks.abs().amax(dim=(1, 3)).clamp_min(1e-30)
    e = pow2_ceil_exp(amax, 448.0)
    s = torch.ldexp(torch.ones_like(amax), e)
    q = (blocks / s[:, None, :, None]).clamp(-448, 448).view(bo * 128, bi * 128)[:out, :inn]
    q8 = q.float().to(torch.float8_e4m3fn)
    scale = (e + 127).to(torch.uint8).view(torch.float8_e8m0fnu)
    return q8, scale


def quant_fp4(w: torch.Tensor):
    out, inn = w.shape
    g = w.double().view(out, inn // 32, 32)
    amax = g.abs().amax(dim=2).clamp_min(1e-30)
    e = pow2_ceil_exp(amax, 6.0)
    q = (g / torch.ldexp(torch.ones_like(amax), e)[..., None]).clamp(-6, 6).view(out, inn)
    codes = q.float().numpy().astype(ml_dtypes.float4_e2m1fn).view(np.uint8) & 0xF
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
    return torch.from_numpy(packed).view(torch.int8), (e + 127).to(torch.uint8).view(torch.float8_e8m0fnu)


def build(preset: str, seed: int, out_dir: str) -> None:
    from transformers import DeepseekV4ForCausalLM

    hub = dict(R.PRESETS[preset])
    cfg = R.hf_config_from_hub(hub)
    torch.manual_seed(seed)
    model = DeepseekV4ForCausalLM(cfg).float().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("position_bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif name.endswith(".sinks"):
                p.copy_(torch.randn(p.shape, generator=gen))
            elif name.endswith(".base") or name.endswith("hc_base"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif name.endswith(".scale") or name.endswith("hc_scale"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif "norm" in name and name.endswith(".weight") and p.dim() == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
        for layer in model.model.layers:
            gate = layer.mlp.gate
            if hasattr(gate, "tid2eid"):
                rows = [torch.randperm(cfg.n_routed_experts, generator=gen)[: cfg.num_experts_per_tok]
                        for _ in range(cfg.vocab_size)]
                gate.tid2eid.copy_(torch.stack(rows))
            else:
                gate.e_score_correction_bias.copy_(0.1 * torch.randn(cfg.n_routed_experts, generator=gen))

    tensors = {}

    def put(oname: str, t: torch.Tensor):
        if oname.endswith(FP8_SUFFIXES):
            q, s = quant_fp8(t)
            tensors[oname] = q
            tensors[oname[: -len("weight")] + "scale"] = s
        elif oname.endswith(F32_SUFFIXES):
            tensors[oname] = t.float().contiguous()
        elif oname.endswith("tid2eid"):
            tensors[oname] = t.to(torch.int64).contiguous()
        else:
            tensors[oname] = t.to(torch.bfloat16).contiguous()

    sd = model.state_dict()
    for name, t in sd.items():
        if ".mlp.experts." in name:
            continue
        put(R.hf_to_official_name(name), t)
    I = cfg.moe_intermediate_size
    for li in range(cfg.num_hidden_layers):
        gu = sd[f"model.layers.{li}.mlp.experts.gate_up_proj"]
        dn = sd[f"model.layers.{li}.mlp.experts.down_proj"]
        for e in range(cfg.n_routed_experts):
            for wname, w in (("w1", gu[e, :I]), ("w3", gu[e, I:]), ("w2", dn[e])):
                q, s = quant_fp4(w)
                tensors[f"layers.{li}.ffn.experts.{e}.{wname}.weight"] = q
                tensors[f"layers.{li}.ffn.experts.{e}.{wname}.scale"] = s
    # a fake MTP block so the loader's "mtp.* ignored" path is exercised
    q, s = quant_fp8(torch.randn(hub["hidden_size"], hub["hidden_size"], generator=gen) * 0.02)
    tensors["mtp.0.e_proj.weight"], tensors["mtp.0.e_proj.scale"] = q, s

    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    hub_out = dict(hub, architectures=["DeepseekV4ForCausalLM"], model_type="deepseek_v4", expert_dtype="fp4")
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hub_out, f, indent=2)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", required=True, choices=sorted(R.PRESETS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(2)
    build(a.preset, a.seed, a.out)
    print(f"wrote {a.out}")
