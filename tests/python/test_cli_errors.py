"""Bad input at the command line: every case prints one `Error: ...` line naming the problem and exits
1 — never a traceback. The shipped default model stands in for a good file."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import diffrt
from diffrt.cli import main

ROOT = Path(__file__).resolve().parents[2]
GOOD = ROOT / "models" / "default.gguf"


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """A folder of broken inputs, by name."""
    d = tmp_path_factory.mktemp("bad_inputs")
    data = GOOD.read_bytes()
    (d / "trunc_header.gguf").write_bytes(data[:100_000])  # cut inside the metadata
    (d / "trunc_data.gguf").write_bytes(data[: len(data) // 2])  # cut inside the tensor data
    (d / "empty.gguf").write_bytes(b"")
    (d / "text.gguf").write_text("hello\n")
    (d / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    (d / "folder").mkdir()
    import gguf

    w = gguf.GGUFWriter(str(d / "llama.gguf"), "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for name, text in {
        "no_from": "PARAMETER steps 3\n",
        "unknown_param": f"FROM {GOOD}\nPARAMETER temperature 0.5\n",
        "bad_value": f"FROM {GOOD}\nPARAMETER steps abc\n",
        "t_min_over_file_t_max": f"FROM {GOOD}\nPARAMETER t_min 0.9\n",
        "from_missing": "FROM ./nothere.gguf\n",
        "from_llama": f"FROM {d / 'llama.gguf'}\n",
        "unterminated": f'FROM {GOOD}\nSYSTEM """abc\n',
        "go_template": f"FROM {GOOD}\nTEMPLATE {{{{ .Prompt }}}}\n",
    }.items():
        (d / f"{name}.Modelfile").write_text(text)
    return d


@pytest.fixture(autouse=True)
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFRT_MODELS", str(tmp_path / "store"))
    return tmp_path / "store"


FILES = [
    ("missing.gguf", "no such model file"),
    ("folder", "is a directory"),
    ("trunc_header.gguf", "metadata value"),  # "truncated while reading" or "exceeds", by where the cut lands
    ("trunc_data.gguf", "extends past the end of the file"),
    ("empty.gguf", "not a GGUF file"),
    ("text.gguf", "not a GGUF file"),
    ("image.png", "not a GGUF file"),
    ("llama.gguf", "architecture 'llama' is not supported"),
]


def _check(capsys, argv, expect):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert expect in lines[0], err


@pytest.mark.parametrize("verb", ["show", "run", "cp"])
@pytest.mark.parametrize("name,expect", FILES)
def test_bad_model_file(bad, capsys, store, verb, name, expect):
    extra = {"show": [], "run": ["hi", "--max-new-tokens", "1"], "cp": ["copy"]}[verb]
    _check(capsys, [verb, str(bad / name)] + extra, expect)
    assert not (store / "copy").exists()  # cp copied nothing into the store


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["show", "nosuchmodel"], "not found"),
        (["rm", "nosuchmodel"], "not found"),
        (["rm", "bad name!"], "invalid model name"),
        (["cp", str(GOOD), "../escape"], "invalid model name"),
        (["create", "x", "-f", "/nonexistent/Modelfile"], "no such Modelfile"),
        (["convert", "/nonexistent/ckpt", "-o", "/tmp/never.gguf"], "not a directory"),
        (["convert", str(GOOD), "-o", "/tmp/never.gguf"], "not a directory"),
    ],
)
def test_bad_names_and_paths(capsys, argv, expect):
    _check(capsys, argv, expect)


def test_convert_bad_output(bad, capsys, tiny_checkpoint):
    ckpt = str(tiny_checkpoint("default"))
    _check(capsys, ["convert", ckpt, "-o", str(bad / "folder"), "--force"], "is a directory")
    _check(capsys, ["convert", ckpt, "-o", str(bad / "text.gguf" / "x.gguf")], "not an existing folder")
    _check(capsys, ["convert", ckpt, "-o", str(bad / "text.gguf")], "already exists")


@pytest.mark.parametrize(
    "name,expect",
    [
        ("no_from", "no FROM instruction"),
        ("unknown_param", "unknown parameter 'temperature'"),
        ("bad_value", "parameter steps must be int"),
        ("t_min_over_file_t_max", "t_min (0.9) must be < t_max (0.8)"),
        ("from_missing", "no such file or directory"),
        ("from_llama", "architecture 'llama'"),
        ("unterminated", 'unterminated """ string'),
        ("go_template", "Go template"),
    ],
)
def test_bad_modelfile(bad, capsys, name, expect):
    _check(capsys, ["create", "x", "-f", str(bad / f"{name}.Modelfile")], expect)


@pytest.mark.parametrize(
    "flags,expect",
    [
        (["--steps", "0"], "steps must be >= 1"),
        (["--steps", "100000"], "steps must be in [1, 4095]"),
        (["--t-min", "2", "--t-max", "1"], "t_min must be < t_max"),
        (["--t-min", "-1"], "t_min must be >= 0"),
        (["--t-max", "nan"], "t_max must be a finite number"),
        (["--entropy-bound", "-1"], "entropy_bound must be > 0"),
        (["--max-new-tokens", "0"], "max_new_tokens must be >= 1"),
        (["--max-new-tokens", "100000000"], "the model's context is"),
        (["--threads", "-3"], "threads must be a non-negative int"),
        (["--seed", "-1"], "seed must be an integer in [0, 2**64)"),
        (["--stability-threshold", "-1"], "stability_threshold must be >= 0"),
        (["--confidence-threshold", "0"], "confidence_threshold must be > 0"),
    ],
)
def test_absurd_parameters(capsys, flags, expect):
    _check(capsys, ["run", str(GOOD), "hi"] + flags, expect)


def test_serve_bad_port(capsys):
    _check(capsys, ["serve", "--port", "99999"], "--port must be in 0..65535")


@pytest.mark.parametrize(
    "argv", [["show", "missing.gguf"], ["run", "image.png", "hi"], ["create", "x", "-f", "no_from.Modelfile"]]
)
def test_subprocess_no_traceback(bad, argv):
    """The real entry point, as a user runs it: exit status 1, one Error line, no traceback."""
    r = subprocess.run(
        [sys.executable, "-m", "diffrt.cli"] + argv, cwd=bad, capture_output=True, text=True, timeout=120,
        # the diffrt this test imported (installed, or a developer build under python/)
        env=dict(os.environ, PYTHONPATH=str(Path(diffrt.__file__).resolve().parents[1]),
                 DIFFRT_MODELS=str(bad / "store")),
    )
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.startswith("Error: "), r.stderr


@pytest.mark.skipif(diffrt.cuda_available(), reason="a GPU is present: --device cuda would run")
@pytest.mark.parametrize("argv", [["run", str(GOOD), "hi", "--device", "cuda"], ["serve", "--device", "cuda"]])
def test_device_cuda_without_gpu(capsys, argv):
    _check(capsys, argv, "no CUDA device available")
