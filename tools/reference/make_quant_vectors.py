#!/usr/bin/env python3
"""make_quant_vectors.py - reference vectors for the quantisation primitives, computed with
ml_dtypes (Google's NumPy float8/float4 dtypes) and NumPy, never with Hadal's code.

Writes tests/golden/quant/quant_vectors.safetensors, read by tests/model/test_quant_ref.c:

  e4m3_dec      F32 [256]   every e4m3fn code -> value (ml_dtypes float8_e4m3fn; NaN codes NaN)
  e2m1_dec      F32 [16]    every e2m1fn code -> value (ml_dtypes float4_e2m1fn)
  e8m0_dec      F32 [256]   every e8m0 code -> value (ml_dtypes float8_e8m0fnu; 255 NaN)
  e4m3_in/out   F32 [N] / I32 [N]   f32 -> e4m3fn code, round to nearest even: every code, the
                                    midpoints between neighbouring codes and their f32
                                    neighbours, subnormals, random values; |x| < 464 (above it
                                    ml_dtypes gives NaN while Hadal saturates: tested apart)
  e2m1_in/out   F32 [M] / I32 [M]   the same for e2m1fn, |x| <= 6.5 (ml_dtypes saturates too)
  e8m0c_in/out  F32 [K] / I32 [K]   f32 -> e8m0 code of the smallest power of two >= x
                                    (exact, from frexp)
  act_in/out    F32 [B*128]         the official activation quantisation per block of 128
                                    (DeepSeek's act_quant with scale_fmt ue8m0: s = 2^ceil(log2(
                                    max(amax, 1e-4) * f32(1/448))) by exponent bits, y = e4m3(clamp
                                    (x / s)) * s), blocks of every magnitude
  fp4_in/out    F32 [B*32]          the same with e2m1, block 32, qmax 6, floor 6 * 2^-126
  had_in/out    F32 [8, 128]        rows times the Sylvester Hadamard matrix / sqrt(128) (float64)

    tools/reference/.venv/bin/python tools/reference/make_quant_vectors.py
"""

from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "golden", "quant")

E4M3 = ml_dtypes.float8_e4m3fn
E2M1 = ml_dtypes.float4_e2m1fn
E8M0 = ml_dtypes.float8_e8m0fnu


def codes_to_f32(dtype, n):
    return np.arange(n, dtype=np.uint8).view(dtype).astype(np.float32) if n == 256 else \
        np.array([np.array(c, dtype=np.uint8).view(dtype) for c in range(n)]).astype(np.float32)


def e2m1_values():
    # float4_e2m1fn is stored one value per byte in ml_dtypes: codes 0..15
    return np.arange(16, dtype=np.uint8).view(E2M1).astype(np.float32)


def boundary_inputs(values, limit, rng, n_random):
    """Every finite value, the midpoints between neighbours and the f32 values next to them."""
    v = np.unique(values[np.isfinite(values)].astype(np.float64))
    v = v[np.abs(v) <= limit]
    mids = (v[:-1] + v[1:]) / 2
    xs = [v, mids]
    m32 = mids.astype(np.float32)
    xs.append(np.nextafter(m32, np.float32(np.inf)).astype(np.float64))
    xs.append(np.nextafter(m32, np.float32(-np.inf)).astype(np.float64))
    r = rng.standard_normal(n_random) * np.exp(rng.uniform(-12, np.log(limit), n_random))
    xs.append(r)
    x = np.concatenate(xs).astype(np.float32)
    x = x[np.abs(x) < limit]
    return np.unique(x)


def to_codes(x, dtype):
    return x.astype(dtype).view(np.uint8).astype(np.int32)


def e8m0_ceil_codes(x):
    m, e = np.frexp(x.astype(np.float64))  # x = m * 2^e, m in [0.5, 1)
    p = np.where(m == 0.5, e - 1, e)       # smallest p with 2^p >= x
    return (p + 127).astype(np.int32)


def pow2_ceil_scale(amax, qmax, floor):
    """The official fast_round_scale: exponent bits of max(amax, floor) * f32(1/qmax), + 1 if the
    mantissa is not zero; as float32."""
    a = np.maximum(amax.astype(np.float32), np.float32(floor))
    r = (a * np.float32(1.0 / qmax)).astype(np.float32)
    bits = r.view(np.uint32)
    e = (bits >> 23) & 0xFF
    e = e + ((bits & 0x7FFFFF) != 0).astype(np.uint32)
    return (e << 23).astype(np.uint32).view(np.float32)


def block_quant(x, block, qmax, floor, dtype):
    xb = x.reshape(-1, block)
    s = pow2_ceil_scale(np.abs(xb).max(axis=1), qmax, floor)[:, None]
    y = np.clip(xb / s, -qmax, qmax).astype(np.float32)
    return (y.astype(dtype).astype(np.float32) * s).astype(np.float32).reshape(-1)


def act_inputs(rng, block, qmax):
    blocks = []
    for mag in [0.0, 1e-30, 1e-8, 1e-5, 1e-4, 3e-4, 0.01, 0.5, 1.0, 7.0, 100.0, 448.0, 1e4, 3e6]:
        blocks.append(rng.standard_normal(block) * mag)
    for k in range(-20, 21, 3):  # amax exactly qmax * 2^k: the boundary of the scale rounding
        b = rng.uniform(-1, 1, block) * qmax * 2.0 ** k
        b[rng.integers(block)] = qmax * 2.0 ** k
        blocks.append(b)
    for _ in range(24):
        b = rng.standard_normal(block) * np.exp(rng.uniform(-15, 15))
        b[rng.integers(block)] *= 50  # an outlier decides the scale
        blocks.append(b)
    return np.concatenate(blocks).astype(np.float32)


def hadamard(n):
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        dt = {np.float32: "F32", np.int32: "I32"}[arr.dtype.type]
        b = arr.tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"generator": "tools/reference/make_quant_vectors.py",
                              "ml_dtypes": ml_dtypes.__version__, "numpy": np.__version__}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main() -> None:
    rng = np.random.default_rng(20261202)
    e4 = np.arange(256, dtype=np.uint8).view(E4M3).astype(np.float32)
    e2 = e2m1_values()
    e8 = np.arange(256, dtype=np.uint8).view(E8M0).astype(np.float32)
    e4_in = boundary_inputs(e4, 464.0, rng, 20000)
    e4_in = np.concatenate([e4_in, np.float32([0.0, -0.0, 2.0 ** -10, -(2.0 ** -10), 2.0 ** -12])])
    e2_in = boundary_inputs(e2, 6.5, rng, 4000)
    e8_in = np.concatenate([
        np.float32(2.0) ** np.arange(-126, 127, dtype=np.float32),
        rng.uniform(0.0, 1.0, 3000).astype(np.float32) * np.exp2(rng.integers(-120, 120, 3000)).astype(np.float32),
    ]).astype(np.float32)
    e8_in = e8_in[(e8_in > 0) & np.isfinite(e8_in)]
    act_in = act_inputs(rng, 128, 448.0)
    fp4_in = act_inputs(rng, 32, 6.0)
    had_in = rng.standard_normal((8, 128)).astype(np.float32)
    had_out = (had_in.astype(np.float64) @ hadamard(128) / np.sqrt(128.0)).astype(np.float32)
    tensors = {
        "e4m3_dec": e4, "e2m1_dec": e2, "e8m0_dec": e8,
        "e4m3_in": e4_in, "e4m3_out": to_codes(e4_in, E4M3),
        "e2m1_in": e2_in, "e2m1_out": to_codes(e2_in, E2M1),
        "e8m0c_in": e8_in, "e8m0c_out": e8m0_ceil_codes(e8_in),
        "act_in": act_in, "act_out": block_quant(act_in, 128, 448.0, 1e-4, E4M3),
        "fp4_in": fp4_in, "fp4_out": block_quant(fp4_in, 32, 6.0, 6.0 * 2.0 ** -126, E2M1),
        "had_in": had_in, "had_out": had_out,
    }
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "quant_vectors.safetensors")
    write_safetensors(path, tensors)
    print(f"wrote {path}: " + ", ".join(f"{k} {list(v.shape)}" for k, v in tensors.items()))


if __name__ == "__main__":
    main()
