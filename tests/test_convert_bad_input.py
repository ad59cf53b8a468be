"""Bad checkpoints: one-line errors, exit 2, nothing written; and a fuzz of every reader."""
import json
import os
import pickle

import numpy as np
import pytest

from convert.checkpoints import default_weights_path
from convert.formats import jax_pickle, mindspore_ckpt, safetensors_file, torch_file
from tests.helpers import Payload, fails, i3d
from tests.test_hostile import LIMIT, limited


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    for name in ("w.ckpt", "w.pt", "w.safetensors"):
        r = i3d("convert", "default", str(d / name))
        assert r.returncode == 0, r.stderr
    return d


def test_existing_destination_is_not_overwritten(good, tmp_path):
    dst = tmp_path / "x.pt"
    dst.write_bytes(b"precious")
    fails("convert", str(good / "w.ckpt"), str(dst), words=("already exists", "--force"))
    assert dst.read_bytes() == b"precious"
    r = i3d("convert", str(good / "w.ckpt"), str(dst), "--force")
    assert r.returncode == 0 and dst.read_bytes() != b"precious"


@pytest.mark.parametrize("name", ["w.ckpt", "w.pt", "w.safetensors"])
def test_truncated_files(good, tmp_path, name):
    data = (good / name).read_bytes()
    src = tmp_path / name
    src.write_bytes(data[: len(data) * 2 // 3])
    dst = tmp_path / "out.safetensors"
    fails("convert", str(src), str(dst), words=(str(src),))
    assert os.listdir(tmp_path) == [name]  # no output, no temporary left behind


def test_wrong_format(tmp_path):
    src = tmp_path / "model.ckpt"
    src.write_text("just some text, not a checkpoint\n")
    fails("convert", str(src), str(tmp_path / "o.pt"), words=("not a weight file",))
    fails("inspect", str(src), words=("not a weight file",))


def _flat(good):
    return mindspore_ckpt.read(str(good / "w.ckpt"))


def test_missing_and_extra_keys_and_wrong_shapes(good, tmp_path):
    flat = _flat(good)
    cases = {
        "missing": ({k: v for k, v in flat.items() if k != "Mixed_4d.b2a.bn.beta"},
                    ("1 missing", "Mixed_4d.b2a.bn.beta")),
        "extra": ({**flat, "Mixed_4d.b7.conv.weight": np.zeros(3, np.float32)},
                  ("1 unexpected", "Mixed_4d.b7.conv.weight")),
        "shape": ({**flat, "Mixed_3c.b0.conv.weight": np.zeros((128, 256, 1, 1, 2), np.float32)},
                  ("Mixed_3c.b0.conv.weight", "(128, 256, 1, 1, 2)", "expected (128, 256, 1, 1, 1)")),
    }
    for name, (bad, words) in cases.items():
        src = tmp_path / f"{name}.ckpt"
        mindspore_ckpt.write(bad, str(src))
        fails("convert", str(src), str(tmp_path / f"{name}.pt"), words=words)
        assert not (tmp_path / f"{name}.pt").exists()
        r = i3d("inspect", str(src))
        assert r.returncode == 1 and "problem" in r.stdout


def test_pickle_payload_never_runs(tmp_path):
    for name, obj in (("evil.ckpt", {"params": Payload()}), ("evil2.ckpt", Payload())):
        src = tmp_path / name
        src.write_bytes(pickle.dumps(obj, protocol=4))
        fails("convert", str(src), str(tmp_path / "o.pt"), words=("refused", "posix.system"),
              cwd=tmp_path)
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "o.pt").exists()


def test_torch_file_with_code_is_refused(tmp_path):
    import torch

    src = tmp_path / "evil.pt"
    torch.save({"Logits.conv.weight": Payload()}, src)
    fails("convert", str(src), str(tmp_path / "o.ckpt"),
          words=("not a PyTorch state_dict", "refused to load global posix.system"),
          cwd=tmp_path)
    assert not (tmp_path / "PWNED").exists()


# --- fuzz: small real files written by the real frameworks, mutated 1000+ times each -------
# Each reader runs in a child process under an address-space limit; every mutated file must be
# read or refused with one I3DError line that starts with its path: any other exception, a
# crash, a traceback or a memory blow-up fails the test.

READERS = {"ckpt": mindspore_ckpt.read, "pt": torch_file.read,
           "safetensors": safetensors_file.read, "pickle": jax_pickle.read_tree}


def _small_files(tmp):
    import mindspore as ms
    import torch
    from safetensors.numpy import save_file

    rng = np.random.RandomState(0)
    arrays = {"Mixed_3b.b1b.conv.weight": rng.randn(8, 4, 3, 3, 3).astype(np.float32),
              "Mixed_3b.b1b.bn.beta": rng.randn(8).astype(np.float16),
              "global_step": np.array([7], np.int32)}
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in arrays.items()],
                       str(tmp / "s.ckpt"))
    torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, tmp / "s.pt")
    save_file(arrays, str(tmp / "s.safetensors"))
    (tmp / "s.pickle").write_bytes(pickle.dumps({"params": {"Conv3d_1a_7x7": {"Conv_0": {
        "kernel": arrays["Mixed_3b.b1b.conv.weight"]}}}}, protocol=4))
    return {name: tmp / f"s.{name}" for name in READERS}


def _mutations(data: bytes, rng, n):
    for i in range(n):
        b = bytearray(data)
        kind = i % 3
        if kind == 0:
            b = b[: rng.randint(0, len(b))]
        else:
            for _ in range(rng.randint(1, 9 if kind == 1 else 2)):
                pos = rng.randint(0, len(b))
                b[pos] = rng.randint(0, 256) if kind == 1 else b[pos] ^ (1 << rng.randint(0, 8))
        yield bytes(b)


def _attempts(kind, *args):
    """What a fuzz child tries to read: each mutation of a small file through its reader, or
    the default weights with a byte of their first 4 KB flipped (whole or cut), in memory."""
    if kind == "default":
        data, rng = open(args[0], "rb").read(), np.random.RandomState(7)
        for i in range(60):
            b = bytearray(data[: 200_000 if i % 2 else len(data)])
            b[rng.randint(0, 4096)] ^= 0xFF
            yield lambda: jax_pickle.parse(b, "fuzz.ckpt")
        return
    reader, src, bad, n = args
    for mutated in _mutations(open(src, "rb").read(), np.random.RandomState(42), int(n)):
        open(bad, "wb").write(mutated)
        yield lambda: READERS[reader](bad)


_FUZZ = """
import json, sys
from convert.errors import I3DError
from tests.test_convert_bad_input import _attempts
out = {"read": 0, "errors": [], "unexpected": []}
for attempt in _attempts(*sys.argv[1:]):
    try:
        attempt()
        out["read"] += 1
    except I3DError as e:
        out["errors"].append(str(e))
    except Exception as e:
        out["unexpected"].append(f"{type(e).__name__}: {e}")
print(json.dumps(out))
"""


def _check(r, path, least_errors):
    """The child ran through, and every refusal was one line naming the file."""
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["unexpected"] == [], out["unexpected"][:5]
    for e in out["errors"]:
        assert e.startswith(f"{path}: ") and len(e.splitlines()) == 1, e
    assert len(out["errors"]) >= least_errors, (len(out["errors"]), out["read"])


@pytest.mark.parametrize("reader", list(READERS))
def test_fuzzed_files_raise_only_our_error(tmp_path, reader):
    src = _small_files(tmp_path)[reader]
    bad = tmp_path / f"fuzz.{reader}"
    r = limited("-c", _FUZZ, "file", reader, src, bad, 1000)  # torch files without torch
    _check(r, bad, 300)  # truncations alone break a third of the cases


def test_fuzzed_headers_of_the_full_default_weights_raise_only_our_error():
    _check(limited("-c", _FUZZ, "default", default_weights_path()), "fuzz.ckpt", 30)
