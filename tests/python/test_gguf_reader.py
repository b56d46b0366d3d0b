"""The C++ GGUF reader (diffrt._core.GGUFFile) and diffrt.load: round trips against files written
by gguf-py's GGUFWriter, and hostile input (truncation, huge counts, bad offsets, fuzzing), which
must always raise diffrt.FormatError and never crash or hang."""

import os
import struct
import subprocess
import sys
import textwrap

import gguf
import ml_dtypes
import numpy as np
import pytest
from gguf import GGUFValueType as VT
from gguf.quants import quantize

import diffrt
from diffrt import _core

ARCH = "diffusion-gemma"
Q8 = gguf.GGMLQuantizationType.Q8_0
BF16 = gguf.GGMLQuantizationType.BF16

SCALARS = [
    ("t.u8", 200, VT.UINT8), ("t.i8", -100, VT.INT8), ("t.u16", 60000, VT.UINT16),
    ("t.i16", -30000, VT.INT16), ("t.u32", 4_000_000_000, VT.UINT32), ("t.i32", -2_000_000_000, VT.INT32),
    ("t.u64", 2**63 + 5, VT.UINT64), ("t.i64", -(2**62), VT.INT64), ("t.f32", 0.25, VT.FLOAT32),
    ("t.f64", 1e-300, VT.FLOAT64), ("t.bool", True, VT.BOOL), ("t.str", "héllo wörld", VT.STRING),
]
ARRAYS = [
    ("a.u8", [0, 1, 255], VT.UINT8), ("a.i16", [-1, 2, -3], VT.INT16), ("a.i32", [1, -2, 3], VT.INT32),
    ("a.u64", [2**64 - 1, 0], VT.UINT64), ("a.f32", [0.5, -1.5], VT.FLOAT32), ("a.f64", [1e100], VT.FLOAT64),
    ("a.bool", [True, False, True], VT.BOOL), ("a.str", ["a", "", "ünïcode", "x" * 300], VT.STRING),
]


def tensors():
    rng = np.random.default_rng(0)
    q_src = rng.standard_normal((3, 64)).astype(np.float32)
    return {
        "f32.weight": rng.standard_normal((3, 5)).astype(np.float32),
        "f16.weight": rng.standard_normal((2, 3, 4)).astype(np.float16),
        "bf16.weight": rng.standard_normal((4, 8)).astype(np.float32),  # stored as BF16
        "q8.weight": q_src,  # stored as Q8_0
        "vec": np.arange(7, dtype=np.float32),
    }


def write_gguf(path, arch=ARCH, kv=True, tens=True, alignment=None):
    w = gguf.GGUFWriter(str(path), arch)
    if alignment:
        w.add_custom_alignment(alignment)
    if kv:
        for key, val, vt in SCALARS:
            w.add_key_value(key, val, vt)
        for key, val, vt in ARRAYS:
            w.add_key_value(key, val, VT.ARRAY, sub_type=vt)
    if tens:
        for name, arr in tensors().items():
            if name == "bf16.weight":
                w.add_tensor(name, arr.astype(ml_dtypes.bfloat16).view(np.uint16), raw_dtype=BF16)
            elif name == "q8.weight":
                w.add_tensor(name, quantize(arr, Q8), raw_dtype=Q8)
            else:
                w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    return write_gguf(tmp_path_factory.mktemp("gguf") / "valid.gguf")


def patched(tmp_path, src, edits, name="bad.gguf"):
    """Copy of `src` with (offset, bytes) overwrites applied (offset may be a slice end cut)."""
    data = bytearray(open(src, "rb").read())
    for off, b in edits:
        data[off : off + len(b)] = b
    p = tmp_path / name
    p.write_bytes(bytes(data))
    return str(p)


def raw(src):
    return open(src, "rb").read()


def tensor_info_pos(src, name):
    """Byte offset of the n_dims field of tensor `name` in the tensor table."""
    data = raw(src)
    enc = name.encode()
    i = data.index(struct.pack("<Q", len(enc)) + enc)
    return i + 8 + len(enc)


def expect_format_error(path, *fragments):
    with pytest.raises(diffrt.FormatError) as e:
        _core.GGUFFile(path)
    msg = str(e.value)
    assert str(path) in msg
    for f in fragments:
        assert f in msg, msg
    return msg


def check_bad(tmp_path, src, edits, *fragments):
    return expect_format_error(patched(tmp_path, src, edits), *fragments)


# ---- round trips ---------------------------------------------------------------------------------


def test_metadata_round_trip(valid):
    f = _core.GGUFFile(valid)
    assert f.path == valid and f.version == 3 and f.alignment == 32
    md = f.metadata()
    assert md["general.architecture"] == ARCH
    for key, val, vt in SCALARS:
        if vt in (VT.FLOAT32, VT.FLOAT64):
            assert md[key] == pytest.approx(val, rel=0, abs=0)
            assert isinstance(md[key], float)
        else:
            assert md[key] == val and type(md[key]) is type(val), key
    for key, val, vt in ARRAYS:
        assert md[key] == val, key
    # file order is kept
    assert list(md)[1 : 1 + len(SCALARS)] == [k for k, _, _ in SCALARS]


def test_tensor_round_trip(valid):
    f = _core.GGUFFile(valid)
    src = tensors()
    infos = {t[0]: t[1:] for t in f.tensor_infos()}
    assert list(infos) == list(src)
    assert infos["f32.weight"][:3] == ("F32", (3, 5), 60)
    assert infos["f16.weight"][:3] == ("F16", (2, 3, 4), 48)
    assert infos["bf16.weight"][:3] == ("BF16", (4, 8), 64)
    assert infos["q8.weight"][:3] == ("Q8_0", (3, 64), 3 * 2 * 34)
    for _, _, _, off in infos.values():
        assert off % 32 == 0

    a = f.tensor_data("f32.weight")
    assert a.dtype == np.float32 and not a.flags.writeable
    np.testing.assert_array_equal(a, src["f32.weight"])
    np.testing.assert_array_equal(f.tensor_data("f16.weight"), src["f16.weight"])
    np.testing.assert_array_equal(f.tensor_data("vec"), src["vec"])
    b = f.tensor_data("bf16.weight")
    assert b.dtype == np.uint16
    np.testing.assert_array_equal(b, src["bf16.weight"].astype(ml_dtypes.bfloat16).view(np.uint16))
    q = f.tensor_data("q8.weight")
    assert q.dtype == np.uint8 and q.shape == (3, 68)
    np.testing.assert_array_equal(q, quantize(src["q8.weight"], Q8))
    with pytest.raises(diffrt.FormatError, match="missing tensor 'nope'"):
        f.tensor_data("nope")


def test_view_keeps_file_alive(valid):
    a = _core.GGUFFile(valid).tensor_data("f32.weight")  # the GGUFFile object is dropped at once
    import gc

    gc.collect()
    np.testing.assert_array_equal(a, tensors()["f32.weight"])


def test_gguf_py_reads_our_test_files(valid):
    r = gguf.GGUFReader(valid)
    assert {t.name for t in r.tensors} == set(tensors())
    assert r.fields["t.str"].contents() == "héllo wörld"


def test_custom_alignment_and_no_tensors(tmp_path):
    p = write_gguf(tmp_path / "al.gguf", alignment=64)
    f = _core.GGUFFile(p)
    assert f.alignment == 64
    assert all(off % 64 == 0 for *_, off in f.tensor_infos())
    np.testing.assert_array_equal(f.tensor_data("vec"), tensors()["vec"])
    e = _core.GGUFFile(write_gguf(tmp_path / "empty.gguf", kv=False, tens=False))
    assert e.tensor_infos() == [] and e.metadata() == {"general.architecture": ARCH}


def test_type_table_matches_gguf_py(tmp_path):
    assert all(_core.ggml_type_supported(t) for t in (0, 1, 8, 30))
    assert not _core.ggml_type_supported(2)
    # Foreign types: the reader sizes every standard type as gguf-py does (Q8_1 excepted: its
    # block size differs between ggml versions, so we refuse to guess).
    w = gguf.GGUFWriter(str(tmp_path / "types.gguf"), "llama")
    expected = {}
    for qt, (block, size) in gguf.GGML_QUANT_SIZES.items():
        if qt.value in (9,) or qt.value > 39:
            continue
        name = f"t.{qt.name}"
        w.add_tensor(name, np.zeros((2, 3 * size), np.uint8), raw_dtype=qt)
        expected[name] = (qt.name, (2, 3 * block), 6 * size)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    f = _core.GGUFFile(str(tmp_path / "types.gguf"))
    got = {name: (t, shape, n) for name, t, shape, n, _ in f.tensor_infos()}
    assert got == expected
    assert f.tensor_data("t.Q4_K").shape == (2, 3 * 144)


def test_load_model(valid):
    m = diffrt.load(valid)
    assert isinstance(m, diffrt.Model)
    assert m.path == valid and m.architecture == ARCH
    assert m.metadata["t.str"] == "héllo wörld"
    src = tensors()
    t = m.tensors["q8.weight"]
    assert (t.name, t.type, t.shape, t.nbytes) == ("q8.weight", "Q8_0", (3, 64), 204)
    # Q8_0 keeps 8 bits per value: error at most half a quantisation step (scale = absmax/127).
    deq = t.numpy()
    assert deq.dtype == np.float32 and deq.shape == (3, 64)
    step = np.abs(src["q8.weight"]).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(deq - src["q8.weight"]) <= step * 0.5 + 1e-3 * step)
    np.testing.assert_array_equal(deq, gguf.quants.dequantize(quantize(src["q8.weight"], Q8), Q8))
    bf = m.tensors["bf16.weight"].numpy()
    assert bf.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(bf, src["bf16.weight"].astype(ml_dtypes.bfloat16))
    np.testing.assert_array_equal(m.tensors["f16.weight"].numpy(), src["f16.weight"])


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        diffrt.load(tmp_path / "nope.gguf")
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        diffrt.load(tmp_path)
    p = write_gguf(tmp_path / "llama.gguf", arch="llama", kv=False, tens=False)
    msg = "architecture 'llama' is not supported; diffrt runs: diffusion-gemma"
    with pytest.raises(diffrt.ConfigError, match=msg):
        diffrt.load(p)


# ---- bad input -----------------------------------------------------------------------------------


def test_not_files(tmp_path):
    (tmp_path / "empty.gguf").write_bytes(b"")
    expect_format_error(tmp_path / "empty.gguf", "not a GGUF file")
    expect_format_error(tmp_path, "not a regular file")
    expect_format_error(tmp_path / "missing.gguf", "No such file")


def test_bad_magic_and_version(tmp_path, valid):
    check_bad(tmp_path, valid, [(0, b"GGML")], "not a GGUF file (it does not begin with the magic 'GGUF')")
    for v in (1, 4, 0x03000000):
        check_bad(tmp_path, valid, [(4, struct.pack("<I", v))], f"unsupported GGUF version {v}")


def test_truncated_everywhere(tmp_path, valid):
    data = raw(valid)
    f = _core.GGUFFile(valid)
    data_end = max(off + n for _, _, _, n, off in f.tensor_infos())
    p = tmp_path / "cut.gguf"
    for cut in range(0, data_end, 7):
        p.write_bytes(data[:cut])
        with pytest.raises(diffrt.FormatError):
            _core.GGUFFile(str(p))
    p.write_bytes(data[:data_end])  # trailing padding is optional
    _core.GGUFFile(str(p))


def test_truncation_message_names_tensor(tmp_path, valid):
    cut = tensor_info_pos(valid, "f16.weight") + 6  # inside the dims of tensor 1
    p = tmp_path / "cut.gguf"
    p.write_bytes(raw(valid)[:cut])
    expect_format_error(str(p), "truncated while reading tensor info 1 ('f16.weight')")


def test_huge_counts_fail_fast(tmp_path, valid):
    huge = struct.pack("<Q", 2**41)
    check_bad(tmp_path, valid, [(16, huge)], "metadata count 2199023255552")
    check_bad(tmp_path, valid, [(8, huge)], "tensor count 2199023255552")
    data = raw(valid)
    # array count of a.i32: key, then value type (u32) and element type (u32), then the count
    k = data.index(b"a.i32") + len(b"a.i32") + 8
    check_bad(tmp_path, valid, [(k, huge)], "array of 2199023255552 int32")
    k = data.index(b"a.str") + len(b"a.str") + 8
    check_bad(tmp_path, valid, [(k, huge)], "array of 2199023255552 string")
    s = data.index("héllo wörld".encode()) - 8
    check_bad(tmp_path, valid, [(s, huge)], "string length 2199023255552", "t.str")
    s = data.index(b"f32.weight") - 8
    check_bad(tmp_path, valid, [(s, huge)], "string length", "tensor info 0")


def test_bad_tensor_table(tmp_path, valid):
    p = tensor_info_pos(valid, "f16.weight")  # n_dims=3, ne[3], type, offset
    t_off, o_off = p + 4 + 24, p + 4 + 24 + 4
    offset = struct.unpack_from("<Q", raw(valid), o_off)[0]
    expect_format_error(patched(tmp_path, valid, [(o_off, struct.pack("<Q", 2**40))]),
                        "'f16.weight'", "extends past the end of the file")
    check_bad(tmp_path, valid, [(o_off, struct.pack("<Q", 2**64 - 32))], "extends past")
    expect_format_error(patched(tmp_path, valid, [(o_off, struct.pack("<Q", offset + 4))]),
                        "'f16.weight'", "not a multiple of the alignment 32")
    check_bad(tmp_path, valid, [(t_off, struct.pack("<I", 99))], "'f16.weight'", "ggml type id 99")
    check_bad(tmp_path, valid, [(t_off, struct.pack("<I", 4))], "unknown ggml type id 4")
    check_bad(tmp_path, valid, [(p, struct.pack("<I", 5))], "'f16.weight' has 5 dimensions")
    check_bad(tmp_path, valid, [(p, struct.pack("<I", 0))], "has 0 dimensions")
    check_bad(tmp_path, valid, [(p + 4, struct.pack("<Q", 0))], "invalid size 0 in dimension 0")
    check_bad(tmp_path, valid, [(p + 4, struct.pack("<Q", 2**63))], "invalid size")
    big = struct.pack("<Q", 2**62)
    check_bad(tmp_path, valid, [(p + 4, big), (p + 12, big)], "element count overflows")
    # Q8_0 rows must be whole blocks of 32
    q = tensor_info_pos(valid, "q8.weight")
    check_bad(
        tmp_path, valid, [(q + 4, struct.pack("<Q", 33))], "not a multiple of the Q8_0 block size 32"
    )


def test_duplicates_and_bad_values(tmp_path, valid):
    data = raw(valid)
    i = data.index(b"f16.weight")
    check_bad(tmp_path, valid, [(i, b"f32.weight")], "duplicate tensor 'f32.weight'")
    i = data.index(b"t.i16")
    check_bad(tmp_path, valid, [(i, b"t.u16")], "duplicate metadata key 't.u16'")
    vt = data.index(b"t.u8") + 4
    check_bad(tmp_path, valid, [(vt, struct.pack("<I", 13))], "invalid value type 13", "'t.u8'")
    k = data.index(b"a.u8") + 4 + 4
    check_bad(tmp_path, valid, [(k, struct.pack("<I", 9))], "nested arrays")


def test_bad_alignment(tmp_path):
    p = write_gguf(tmp_path / "al.gguf", alignment=64, kv=False)
    data = raw(p)
    v = data.index(b"general.alignment") + len(b"general.alignment") + 4
    for bad in (0, 48, 2**31):
        check_bad(tmp_path, p, [(v, struct.pack("<I", bad))], "general.alignment")


# ---- bounded fuzzing (in a subprocess: a crash fails the test instead of killing pytest) ----------

FUZZ = textwrap.dedent(
    r"""
    import os, random, struct, sys
    import diffrt
    from diffrt import _core

    srcs = [open(p, "rb").read() for p in sys.argv[2:]]
    out = sys.argv[1]
    rng = random.Random(1234)
    boundary = [b"\x00" * 8, b"\xff" * 8, struct.pack("<Q", 2**31), struct.pack("<Q", 2**63),
                struct.pack("<I", 2**31), struct.pack("<Q", 2**41), struct.pack("<Q", 2**32 - 1)]
    ok = bad = 0
    for i in range(3000):
        d = bytearray(rng.choice(srcs))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randrange(len(d) + 1)
            if op < 0.4 and d:
                d[min(pos, len(d) - 1)] ^= 1 << rng.randrange(8)
            elif op < 0.7:
                b = rng.choice(boundary)[: rng.choice([1, 2, 4, 8])]
                d[pos : pos + len(b)] = b
            elif op < 0.85:
                d[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            else:
                del d[pos:]
        with open(out, "wb") as f:
            f.write(d)
        try:
            g = _core.GGUFFile(out)
        except diffrt.FormatError:
            bad += 1
            continue
        g.metadata()
        for name, *_ in g.tensor_infos():
            a = g.tensor_data(name)
            a.tobytes()  # touch every byte of the view
        ok += 1
    print(ok, bad)
    """
)


def test_fuzz_mutants_never_crash(tmp_path, valid):
    small = write_gguf(tmp_path / "small.gguf", kv=False)
    script = tmp_path / "fuzz.py"
    script.write_text(FUZZ)
    env = dict(os.environ)
    pkg_root = os.path.dirname(os.path.dirname(diffrt.__file__))
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "mutant.gguf"), valid, small],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, f"fuzzer died (rc {r.returncode}):\n{r.stdout}\n{r.stderr}"
    ok, bad = map(int, r.stdout.split())
    assert ok + bad == 3000 and bad > 1000  # most mutants are rejected, none crash


def test_invalid_utf8_names(tmp_path, valid):
    data = raw(valid)
    i = data.index(b"f16.weight")
    check_bad(
        tmp_path, valid, [(i, b"\xff")], "tensor '\\xff16.weight' name is not valid UTF-8"
    )
    i = data.index(b"t.u8")
    check_bad(tmp_path, valid, [(i, b"\xc0\x80")], "is not valid UTF-8")
