"""dsv4_ref.py - shared helpers of the golden generator (tools/reference/make_goldens.py).

* PRESETS: the tiny configurations of spec §9 in Hub config.json key names. They are the
  expectation the checkpoint's config.json (written by `hadal gen-model`) is checked against.
* Exact fp32 dequantisation of the official checkpoint formats (FP8 e4m3 + e8m0 128x128 block
  scales, FP4 e2m1 packed two per byte + e8m0 scale per 32 inputs), done from the raw bytes with
  our own code tables (torch's float8 casts are only used as a cross-check).
* The official -> transformers parameter-name map (spec §6.6) and its inverse.
* hf_config_from_hub(): a DeepseekV4Config for a Hub-style config.json (any HCA ratio).

Runs in the tools/reference/.venv (torch, transformers, safetensors, numpy). CPU only.
"""

from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import torch

# --------------------------------------------------------------------------------------------
# Presets (spec §9.1 / §9.2), Hub key names. compress_ratios has n_layers + n_mtp entries.

_TINY_A = {
    "vocab_size": 1024,
    "hidden_size": 256,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 128,
    "qk_rope_head_dim": 64,
    "q_lora_rank": 128,
    "o_groups": 2,
    "o_lora_rank": 64,
    "sliding_window": 8,
    "compress_ratios": [0, 16, 4, 16, 4, 0, 0],
    "index_n_heads": 4,
    "index_head_dim": 128,
    "index_topk": 4,
    "n_routed_experts": 8,
    "num_experts_per_tok": 2,
    "n_shared_experts": 1,
    "moe_intermediate_size": 128,
    "num_hash_layers": 3,
    "scoring_func": "sqrtsoftplus",
    "routed_scaling_factor": 1.5,
    "norm_topk_prob": True,
    "swiglu_limit": 10.0,
    "hc_mult": 4,
    "hc_sinkhorn_iters": 20,
    "hc_eps": 1e-6,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "compress_rope_theta": 160000.0,
    "rope_scaling": {
        "type": "yarn",
        "factor": 16.0,
        "original_max_position_embeddings": 65536,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
    },
    "max_position_embeddings": 4096,
    "num_nextn_predict_layers": 1,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "tie_word_embeddings": False,
}

PRESETS = {
    "tiny-a": dict(_TINY_A),
    "tiny-a-clamp": dict(_TINY_A, swiglu_limit=0.25),
    "tiny-b": dict(
        _TINY_A,
        sliding_window=128,
        compress_ratios=[0, 128, 4, 128, 4, 0, 0],
        index_topk=16,
    ),
}


def check_hub_config(preset: str, hub: dict) -> list[str]:
    """Differences between a checkpoint's config.json and the spec preset (empty = equal)."""
    want = PRESETS[preset]
    bad = []
    for key, val in want.items():
        if key not in hub:
            bad.append(f"{key}: missing (want {val!r})")
            continue
        got = hub[key]
        if isinstance(val, dict):
            for k2, v2 in val.items():
                g2 = got.get(k2) if isinstance(got, dict) else None
                if k2 == "type":
                    g2 = got.get("type", got.get("rope_type"))
                if not _same(g2, v2):
                    bad.append(f"{key}.{k2}: {g2!r} != {v2!r}")
        elif not _same(got, val):
            bad.append(f"{key}: {got!r} != {val!r}")
    return bad


def _same(a, b) -> bool:
    if isinstance(b, bool) or isinstance(a, bool):
        return a is b or a == b and type(a) is type(b)
    if isinstance(b, (int, float)) and isinstance(a, (int, float)):
        return float(a) == float(b)
    return a == b


# --------------------------------------------------------------------------------------------
# Number formats, decoded from the bit patterns (independent of torch's float8 casts).


def e4m3fn_table() -> np.ndarray:
    """float8_e4m3fn code -> fp32 value (0x7F / 0xFF = NaN; no infinities)."""
    out = np.empty(256, dtype=np.float64)
    for c in range(256):
        s = -1.0 if c & 0x80 else 1.0
        e = (c >> 3) & 0xF
        m = c & 0x7
        if e == 0xF and m == 0x7:
            out[c] = np.nan
        elif e == 0:
            out[c] = s * m * 2.0**-9
        else:
            out[c] = s * (1.0 + m / 8.0) * 2.0 ** (e - 7)
    return out.astype(np.float32)


E2M1_VALUES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def e2m1_table() -> np.ndarray:
    """float4_e2m1 code -> fp32 value (bit 3 = sign; code 8 = -0)."""
    return np.array(E2M1_VALUES + [-v for v in E2M1_VALUES], dtype=np.float32)


def e8m0_pow2(codes: torch.Tensor) -> torch.Tensor:
    """e8m0 byte codes (uint8 tensor) -> fp32 2^(E-127); E = 255 -> NaN."""
    e = codes.to(torch.int64)
    val = torch.ldexp(torch.ones_like(e, dtype=torch.float64), e - 127)
    val = torch.where(e == 255, torch.full_like(val, float("nan")), val)
    return val.to(torch.float32)


_E4M3 = torch.from_numpy(e4m3fn_table())
_E2M1 = torch.from_numpy(e2m1_table())


def dequant_fp8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """q float8_e4m3fn [out, in], scale float8_e8m0fnu [ceil(out/128), ceil(in/128)] -> fp32."""
    assert q.dtype == torch.float8_e4m3fn and scale.dtype == torch.float8_e8m0fnu, (q.dtype, scale.dtype)
    out, inn = q.shape
    bo, bi = scale.shape
    assert bo == (out + 127) // 128 and bi == (inn + 127) // 128, (q.shape, scale.shape)
    vals = _E4M3[q.view(torch.uint8).to(torch.int64)]
    s = e8m0_pow2(scale.view(torch.uint8))
    s = s.repeat_interleave(128, 0)[:out].repeat_interleave(128, 1)[:, :inn]
    w = vals * s  # exact: 4-bit significand times a power of two
    ref = q.to(torch.float32) * scale.to(torch.float32).repeat_interleave(128, 0)[:out].repeat_interleave(128, 1)[:, :inn]
    assert torch.equal(w, ref), "e4m3/e8m0 table decode disagrees with torch casts"
    assert torch.isfinite(w).all(), "non-finite FP8 weight"
    return w


def dequant_fp4(packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """packed int8 [out, in/2] (low nibble = even element), scale e8m0 [out, in/32] -> fp32 [out, in]."""
    assert packed.dtype == torch.int8 and scale.dtype == torch.float8_e8m0fnu, (packed.dtype, scale.dtype)
    out, half = packed.shape
    inn = 2 * half
    assert tuple(scale.shape) == (out, inn // 32), (packed.shape, scale.shape)
    b = packed.view(torch.uint8).to(torch.int64)
    codes = torch.stack([b & 0xF, b >> 4], dim=-1).reshape(out, inn)  # even = low nibble
    vals = _E2M1[codes]
    s = e8m0_pow2(scale.view(torch.uint8)).repeat_interleave(32, 1)
    w = vals * s
    assert torch.isfinite(w).all(), "non-finite FP4 weight"
    return w


def sha256_file(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Official <-> transformers names (spec §6.6). Experts are handled separately (fused tensors).

_LAYER_MAP = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("hc_attn_fn", "attn_hc.fn"),
    ("hc_attn_base", "attn_hc.base"),
    ("hc_attn_scale", "attn_hc.scale"),
    ("hc_ffn_fn", "ffn_hc.fn"),
    ("hc_ffn_base", "ffn_hc.base"),
    ("hc_ffn_scale", "ffn_hc.scale"),
    ("attn.attn_sink", "self_attn.sinks"),
    ("attn.wq_a.weight", "self_attn.q_a_proj.weight"),
    ("attn.q_norm.weight", "self_attn.q_a_norm.weight"),
    ("attn.wq_b.weight", "self_attn.q_b_proj.weight"),
    ("attn.wkv.weight", "self_attn.kv_proj.weight"),
    ("attn.kv_norm.weight", "self_attn.kv_norm.weight"),
    ("attn.wo_a.weight", "self_attn.o_a_proj.weight"),
    ("attn.wo_b.weight", "self_attn.o_b_proj.weight"),
    ("attn.compressor.wkv.weight", "self_attn.compressor.kv_proj.weight"),
    ("attn.compressor.wgate.weight", "self_attn.compressor.gate_proj.weight"),
    ("attn.compressor.ape", "self_attn.compressor.position_bias"),
    ("attn.compressor.norm.weight", "self_attn.compressor.kv_norm.weight"),
    ("attn.indexer.compressor.wkv.weight", "self_attn.compressor.indexer.kv_proj.weight"),
    ("attn.indexer.compressor.wgate.weight", "self_attn.compressor.indexer.gate_proj.weight"),
    ("attn.indexer.compressor.ape", "self_attn.compressor.indexer.position_bias"),
    ("attn.indexer.compressor.norm.weight", "self_attn.compressor.indexer.kv_norm.weight"),
    ("attn.indexer.wq_b.weight", "self_attn.compressor.indexer.q_b_proj.weight"),
    ("attn.indexer.weights_proj.weight", "self_attn.compressor.indexer.scorer.weights_proj.weight"),
    ("ffn.gate.weight", "mlp.gate.weight"),
    ("ffn.gate.bias", "mlp.gate.e_score_correction_bias"),
    ("ffn.gate.tid2eid", "mlp.gate.tid2eid"),
    ("ffn.shared_experts.w1.weight", "mlp.shared_experts.gate_proj.weight"),
    ("ffn.shared_experts.w3.weight", "mlp.shared_experts.up_proj.weight"),
    ("ffn.shared_experts.w2.weight", "mlp.shared_experts.down_proj.weight"),
]
_GLOBAL_MAP = [
    ("embed.weight", "model.embed_tokens.weight"),
    ("head.weight", "lm_head.weight"),
    ("norm.weight", "model.norm.weight"),
    ("hc_head_fn", "model.hc_head.hc_fn"),
    ("hc_head_base", "model.hc_head.hc_base"),
    ("hc_head_scale", "model.hc_head.hc_scale"),
]
_O2H_LAYER = dict(_LAYER_MAP)
_H2O_LAYER = {h: o for o, h in _LAYER_MAP}
_O2H_GLOBAL = dict(_GLOBAL_MAP)
_H2O_GLOBAL = {h: o for o, h in _GLOBAL_MAP}
_EXPERT_RE = re.compile(r"^layers\.(\d+)\.ffn\.experts\.(\d+)\.(w[123])\.weight$")
_LAYER_RE = re.compile(r"^layers\.(\d+)\.(.+)$")


def official_to_hf_name(name: str) -> str | None:
    """HF name for a non-expert official weight name; None for mtp.* (HF has no MTP)."""
    if name.startswith("mtp."):
        return None
    if name in _O2H_GLOBAL:
        return _O2H_GLOBAL[name]
    m = _LAYER_RE.match(name)
    if m and m.group(2) in _O2H_LAYER:
        return f"model.layers.{m.group(1)}.{_O2H_LAYER[m.group(2)]}"
    raise KeyError(f"no transformers name for official tensor {name!r}")


def hf_to_official_name(name: str) -> str:
    if name in _H2O_GLOBAL:
        return _H2O_GLOBAL[name]
    m = re.match(r"^model\.layers\.(\d+)\.(.+)$", name)
    if m and m.group(2) in _H2O_LAYER:
        return f"layers.{m.group(1)}.{_H2O_LAYER[m.group(2)]}"
    raise KeyError(name)


# --------------------------------------------------------------------------------------------
# Checkpoint loading


def list_safetensors(ckpt_dir: str) -> list[str]:
    idx = os.path.join(ckpt_dir, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = sorted(f for f in os.listdir(ckpt_dir) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors in {ckpt_dir}")
    return files


def read_official(ckpt_dir: str) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    raw = {}
    for fn in list_safetensors(ckpt_dir):
        with safe_open(os.path.join(ckpt_dir, fn), framework="pt") as f:
            for k in f.keys():
                if k in raw:
                    raise ValueError(f"tensor {k} appears twice")
                raw[k] = f.get_tensor(k)
    return raw


def dequantise_official(raw: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """Official tensors -> {official weight name: fp32 (or int64) tensor}; '.scale' consumed.

    Returns (tensors, stats) where stats counts the formats seen."""
    out = {}
    stats = {"fp8": 0, "fp4": 0, "bf16": 0, "f32": 0, "i64": 0}
    used_scales = set()
    for name, t in raw.items():
        if name.endswith(".scale"):
            continue
        if t.dtype == torch.float8_e4m3fn:
            sname = name[: -len("weight")] + "scale"
            out[name] = dequant_fp8(t, raw[sname])
            used_scales.add(sname)
            stats["fp8"] += 1
        elif t.dtype == torch.int8:
            sname = name[: -len("weight")] + "scale"
            out[name] = dequant_fp4(t, raw[sname])
            used_scales.add(sname)
            stats["fp4"] += 1
        elif t.dtype == torch.bfloat16:
            out[name] = t.to(torch.float32)
            stats["bf16"] += 1
        elif t.dtype == torch.float32:
            out[name] = t.clone()
            stats["f32"] += 1
        elif t.dtype in (torch.int64, torch.int32):
            out[name] = t.to(torch.int64)
            stats["i64"] += 1
        else:
            raise TypeError(f"{name}: unexpected dtype {t.dtype}")
    orphan = [k for k in raw if k.endswith(".scale") and k not in used_scales]
    if orphan:
        raise ValueError(f"scale tensors without a quantised weight: {orphan[:5]}")
    return out, stats


def official_to_hf_state(tensors: dict[str, torch.Tensor], n_layers: int, n_experts: int) -> dict[str, torch.Tensor]:
    """Map dequantised official tensors to a transformers DeepseekV4ForCausalLM state dict."""
    sd = {}
    experts: dict[int, dict[int, dict[str, torch.Tensor]]] = {}
    for name, t in tensors.items():
        m = _EXPERT_RE.match(name)
        if m:
            experts.setdefault(int(m.group(1)), {}).setdefault(int(m.group(2)), {})[m.group(3)] = t
            continue
        hf = official_to_hf_name(name)
        if hf is None:
            continue
        sd[hf] = t
    for layer in range(n_layers):
        ex = experts.get(layer)
        if ex is None or sorted(ex) != list(range(n_experts)):
            raise ValueError(f"layer {layer}: routed experts incomplete")
        sd[f"model.layers.{layer}.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([ex[e]["w1"], ex[e]["w3"]], dim=0) for e in range(n_experts)]
        )
        sd[f"model.layers.{layer}.mlp.experts.down_proj"] = torch.stack([ex[e]["w2"] for e in range(n_experts)])
    extra = [k for k in experts if k >= n_layers]
    if extra:
        raise ValueError(f"experts for layers beyond n_layers: {extra}")
    return sd


# --------------------------------------------------------------------------------------------
# transformers config


def layer_types_from_ratios(ratios: list[int]) -> tuple[list[str], dict]:
    types, hca = [], set()
    for r in ratios:
        if r == 0:
            types.append("sliding_attention")
        elif r == 4:
            types.append("compressed_sparse_attention")
        else:
            types.append("heavily_compressed_attention")
            hca.add(r)
    if len(hca) > 1:
        raise ValueError(f"transformers supports one HCA ratio per model, got {sorted(hca)}")
    rates = {"compressed_sparse_attention": 4, "heavily_compressed_attention": hca.pop() if hca else 128}
    return types, rates


def hf_config_from_hub(hub: dict, swiglu_limit: float | None = None):
    from transformers import DeepseekV4Config

    n = hub["num_hidden_layers"]
    ratios = list(hub["compress_ratios"])[:n]  # drop the MTP entries
    layer_types, rates = layer_types_from_ratios(ratios)
    n_hash = hub.get("num_hash_layers", 3)
    rs = hub.get("rope_scaling") or {}
    rope_type = rs.get("type", rs.get("rope_type"))
    if rope_type != "yarn":
        raise ValueError(f"expected yarn rope_scaling, got {rs}")
    rope_parameters = {
        "rope_type": "yarn",
        "factor": float(rs["factor"]),
        "original_max_position_embeddings": int(rs["original_max_position_embeddings"]),
        "beta_fast": float(rs.get("beta_fast", 32)),
        "beta_slow": float(rs.get("beta_slow", 1)),
    }
    cfg = DeepseekV4Config(
        vocab_size=hub["vocab_size"],
        hidden_size=hub["hidden_size"],
        num_hidden_layers=n,
        num_attention_heads=hub["num_attention_heads"],
        num_key_value_heads=hub.get("num_key_value_heads", 1),
        head_dim=hub["head_dim"],
        partial_rotary_factor=hub["qk_rope_head_dim"] / hub["head_dim"],
        q_lora_rank=hub["q_lora_rank"],
        o_groups=hub["o_groups"],
        o_lora_rank=hub["o_lora_rank"],
        sliding_window=hub["sliding_window"],
        layer_types=layer_types,
        compress_rates=rates,
        mlp_layer_types=["hash_moe" if i < n_hash else "moe" for i in range(n)],
        index_n_heads=hub["index_n_heads"],
        index_head_dim=hub["index_head_dim"],
        index_topk=hub["index_topk"],
        n_routed_experts=hub["n_routed_experts"],
        num_experts_per_tok=hub["num_experts_per_tok"],
        n_shared_experts=hub["n_shared_experts"],
        moe_intermediate_size=hub["moe_intermediate_size"],
        scoring_func=hub["scoring_func"],
        routed_scaling_factor=float(hub["routed_scaling_factor"]),
        norm_topk_prob=bool(hub["norm_topk_prob"]),
        swiglu_limit=float(hub["swiglu_limit"] if swiglu_limit is None else swiglu_limit),
        hc_mult=hub["hc_mult"],
        hc_sinkhorn_iters=hub["hc_sinkhorn_iters"],
        hc_eps=float(hub["hc_eps"]),
        rms_norm_eps=float(hub["rms_norm_eps"]),
        rope_theta=float(hub["rope_theta"]),
        compress_rope_theta=float(hub["compress_rope_theta"]),
        rope_parameters=rope_parameters,
        max_position_embeddings=hub["max_position_embeddings"],
        num_nextn_predict_layers=hub.get("num_nextn_predict_layers", 1),
        bos_token_id=hub.get("bos_token_id", 0),
        eos_token_id=hub.get("eos_token_id", 1),
        tie_word_embeddings=False,
        attn_implementation="eager",
        experts_implementation="eager",
    )
    return cfg


def expected_inv_freq(theta: float, rope_dim: int, yarn: dict | None) -> np.ndarray:
    """Spec §3.4 / Appendix A, in float64."""
    p = np.arange(rope_dim // 2, dtype=np.float64)
    f = theta ** (-2.0 * p / rope_dim)
    if yarn is None:
        return f

    def corr(nrot):
        return rope_dim * math.log(yarn["original_max_position_embeddings"] / (nrot * 2 * math.pi)) / (2 * math.log(theta))

    lo = max(math.floor(corr(yarn["beta_fast"])), 0)
    hi = min(math.ceil(corr(yarn["beta_slow"])), rope_dim - 1)
    if lo == hi:
        hi += 0.001
    ramp = np.clip((p - lo) / (hi - lo), 0, 1)
    smooth = 1 - ramp
    return f / yarn["factor"] * (1 - smooth) + f * smooth


def check_rope(model, hub: dict) -> dict:
    """Assert the model's rope tables match spec Appendix A; return them (fp32 numpy)."""
    rot = model.model.rotary_emb
    rd = hub["qk_rope_head_dim"]
    main = rot.main_inv_freq.detach().cpu().numpy()
    comp = rot.compress_inv_freq.detach().cpu().numpy()
    assert main.shape == (rd // 2,) and comp.shape == (rd // 2,)
    want_main = expected_inv_freq(hub["rope_theta"], rd, None)
    rs = hub["rope_scaling"]
    want_comp = expected_inv_freq(hub["compress_rope_theta"], rd, rs)
    np.testing.assert_allclose(main, want_main, rtol=2e-7, atol=0)
    np.testing.assert_allclose(comp, want_comp, rtol=2e-7, atol=0)
    # Appendix A spot values and the "pairs >= 25 divided by 16" rule.
    plain = expected_inv_freq(hub["compress_rope_theta"], rd, None)
    assert np.allclose(comp[25:], plain[25:] / rs["factor"], rtol=2e-7)
    assert np.allclose(comp[:16], plain[:16], rtol=2e-7)
    if rd == 64 and hub["compress_rope_theta"] == 160000.0 and rs["factor"] == 16.0:
        for p_, v in ((0, 1.0), (1, 0.6876560), (2, 0.4728708), (3, 0.3251725), (28, 1.746928e-6), (31, 5.680529e-7)):
            assert abs(comp[p_] - v) <= 1e-6 * abs(v) + 1e-13, (p_, comp[p_], v)
        for p_, v in ((1, 0.7498942), (2, 0.5623413), (3, 0.4216965), (28, 3.1622777e-4), (31, 1.3335214e-4)):
            assert abs(main[p_] - v) <= 1e-6 * abs(v), (p_, main[p_], v)
    for lt in ("main", "compress"):
        assert getattr(rot, f"{lt}_attention_scaling") == 1.0, lt
    return {"main": main.astype(np.float32), "compress": comp.astype(np.float32)}
