#!/usr/bin/env python3
"""Golden vectors for the dequantization tests (tests/runtime/dequant_test.cpp).

For every tensor type the runtime dequantizes, writes tests/fixtures/dequant/<TYPE>.bin holding random raw
blocks and the float32 values gguf-py computes for them (gguf.quants.dequantize), an implementation independent
of ours. Block bytes are random; only the scale fields are drawn so that every value is finite (fp16 scales are
finite, half of them in a "normal weights" range and half any finite bit pattern incl. subnormals and zeros;
MXFP4 exponents mostly in [100, 150] plus edge cases).

File format (little-endian):
    char     magic[8]  = "MOEDQ001"
    uint32   ggml type id
    uint32   n_elems            (a multiple of the block size)
    uint32   n_raw_bytes
    uint32   reserved = 0
    uint8    raw[n_raw_bytes]
    float32  values[n_elems]

Deterministic (fixed seed): rerunning rewrites identical files. Usage: scripts/make_dequant_fixtures.py [out_dir]
"""
import struct
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGML_QUANT_SIZES
from gguf.quants import dequantize

MAGIC = b"MOEDQ001"

# type -> (number of blocks, offsets of fp16 scale fields inside a block)
QUANT_TYPES = {
    T.Q4_0: (64, [0]),
    T.Q4_1: (64, [0, 2]),
    T.Q5_0: (64, [0]),
    T.Q5_1: (64, [0, 2]),
    T.Q8_0: (64, [0]),
    T.IQ4_NL: (64, [0]),
    T.MXFP4: (64, []),
    T.Q2_K: (12, [80, 82]),
    T.Q3_K: (12, [108]),
    T.Q4_K: (12, [0, 2]),
    T.Q5_K: (12, [0, 2]),
    T.Q6_K: (12, [208]),
    T.IQ4_XS: (12, [0]),
}


def random_halves(rng: np.random.Generator, n: int) -> np.ndarray:
    """n finite fp16 bit patterns: half like real scales (|d| in [2^-12, 4)), half any finite value."""
    sign = rng.integers(0, 2, n, dtype=np.uint16) << 15
    sane = sign | (rng.integers(15 - 12, 15 + 2, n, dtype=np.uint16) << 10) | rng.integers(0, 1024, n, dtype=np.uint16)
    wild = sign | (rng.integers(0, 31, n, dtype=np.uint16) << 10) | rng.integers(0, 1024, n, dtype=np.uint16)
    bits = np.where(rng.random(n) < 0.5, sane, wild).astype(np.uint16)
    bits[:4] = [0x0000, 0x8000, 0x0001, 0x7BFF][: min(4, n)]  # +0, -0, smallest subnormal, largest finite
    return bits


def quant_blocks(rng: np.random.Generator, qtype: T, n_blocks: int, half_offsets: list[int]) -> np.ndarray:
    block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (n_blocks, block_bytes), dtype=np.uint8)
    for off in half_offsets:
        raw[:, off:off + 2] = random_halves(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    if qtype == T.MXFP4:
        e = rng.integers(100, 151, n_blocks, dtype=np.uint8)
        edges = [0, 1, 2, 3, 127, 128, 200, 252]  # e < 2 builds float subnormals; 252 is the largest finite x12
        e[: len(edges)] = edges
        raw[:, 0] = e
    return raw


def write(path: Path, qtype: T, raw: np.ndarray, values: np.ndarray) -> None:
    raw = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    values = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    header = MAGIC + struct.pack("<IIII", int(qtype), values.size, raw.size, 0)
    path.write_bytes(header + raw.tobytes() + values.astype("<f4").tobytes())


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "tests/fixtures/dequant"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261126)
    total = 0

    for qtype, (n_blocks, half_offsets) in QUANT_TYPES.items():
        raw = quant_blocks(rng, qtype, n_blocks, half_offsets)
        values = dequantize(raw.reshape(-1), qtype).astype(np.float32)
        assert values.size == n_blocks * GGML_QUANT_SIZES[qtype][0]
        assert np.all(np.isfinite(values)), qtype.name
        write(out / f"{qtype.name}.bin", qtype, raw, values)

    # F16: every class of value, NaNs and infinities included (numpy widens fp16 exactly, payloads too).
    specials = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x0401, 0x3BFF, 0x3C00, 0x3C01, 0x7BFF,
                         0xFBFF, 0x7C00, 0xFC00, 0x7C01, 0x7DFF, 0x7E00, 0xFE00, 0x7FFF, 0xFFFF], dtype=np.uint16)
    f16 = np.concatenate([specials, rng.integers(0, 1 << 16, 2028, dtype=np.uint16)]).astype(np.uint16)
    write(out / "F16.bin", T.F16, f16, dequantize(f16.view(np.uint8), T.F16))

    # BF16: any 16-bit pattern is the top half of a float32 (NaNs included).
    bf16 = np.concatenate([specials, rng.integers(0, 1 << 16, 2028, dtype=np.uint16)]).astype(np.uint16)
    write(out / "BF16.bin", T.BF16, bf16, dequantize(bf16.view(np.uint8), T.BF16))

    # F32: a copy, but it goes through the same entry point.
    f32 = rng.integers(0, 1 << 32, 256, dtype=np.uint32)
    write(out / "F32.bin", T.F32, f32, dequantize(f32.view(np.uint8), T.F32))

    for f in sorted(out.glob("*.bin")):
        total += f.stat().st_size
    print(f"wrote {len(list(out.glob('*.bin')))} files, {total} bytes, to {out}")


if __name__ == "__main__":
    main()
