"""Element types: the numeric types a weight file may hold, and bfloat16, which numpy lacks.
bfloat16 is kept bit-exact as an opaque 2-byte element (a one-field structured dtype), so
transposes and reshapes move it without rounding."""
import numpy as np

BFLOAT16 = np.dtype([("bfloat16", "<u2")])

# numpy type codes (as numpy's pickles spell them) of the element types a reader may build:
# no object, structured, complex, datetime or float8 data.
NUMERIC = {code: np.dtype(code) for code in
           ("b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8")}


def is_bf16(a: np.ndarray) -> bool:
    return a.dtype == BFLOAT16


def bf16_to_float32(a: np.ndarray) -> np.ndarray:
    return (a.view("<u2").astype(np.uint32) << 16).view(np.float32)


def float32(a: np.ndarray) -> np.ndarray:
    """Any stored float array as float32 (exact for float16 and bfloat16)."""
    return bf16_to_float32(a) if is_bf16(a) else np.asarray(a, np.float32)


def name(a: np.ndarray) -> str:
    return "bfloat16" if is_bf16(a) else str(a.dtype)
