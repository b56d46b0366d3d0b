"""The model store and the create / show / list / rm / cp verbs, on the tiny converted model."""

import json
import os

import numpy as np
import pytest
from diffrt import FormatError, ModelfileError, store
from diffrt.cli import main
from diffrt.embed import create
from diffrt.gguf_names import KEYS
from diffrt.model import load


@pytest.fixture
def models(tmp_path, monkeypatch):
    root = tmp_path / "models"
    monkeypatch.setenv("DIFFRT_MODELS", str(root))
    return root


MF = '''FROM {src}
PARAMETER steps 7
PARAMETER entropy_bound 0.25
PARAMETER t_min 0.1
PARAMETER num_predict 40
PARAMETER seed 5
PARAMETER stop "<end>"
PARAMETER stop STOP
TEMPLATE """{{% for m in messages %}}<{{{{ m['role'] }}}}>{{{{ m['content'] }}}}{{% endfor %}}"""
SYSTEM You are a tiny model.
MESSAGE user hello
MESSAGE assistant hi!
LICENSE """line 1
line 2"""
'''


def test_names():
    assert store.parse_name("tiny") == ("tiny", "latest")
    assert store.parse_name("tiny:v1.2") == ("tiny", "v1.2")
    for bad in ["", ":x", "a:", "../x", "a/b", "a b", "-x", "x:..", "a:b:c", "x" * 81]:
        with pytest.raises(ValueError, match="invalid model"):
            store.parse_name(bad)


def test_models_dir_env(models):
    assert store.models_dir() == models
    assert store.path_for("a:b") == models / "a" / "b.gguf"


def test_resolve_errors(models, tmp_path):
    with pytest.raises(store.ModelNotFoundError, match="'nothere:latest' not found"):
        store.resolve("nothere")
    with pytest.raises(FileNotFoundError, match="no such model file"):
        store.resolve(str(tmp_path / "missing.gguf"))
    with pytest.raises(IsADirectoryError):
        store.resolve(str(tmp_path))


def test_create_embeds_modelfile(models, converted):
    src = converted("default", "f32")
    text = MF.format(src=src)
    path = create("tiny:t1", text)
    assert path == str(models / "tiny" / "t1.gguf") and store.resolve("tiny:t1") == path
    assert not [p for p in os.listdir(models / "tiny") if p.endswith(".tmp")]
    old, new = load(src), load(path)
    md = new.metadata
    assert md[KEYS["DIFFRT_MODELFILE"]] == text
    assert md[KEYS["MAX_STEPS"]] == 7 and md[KEYS["DIFFRT_MAX_NEW_TOKENS"]] == 40
    assert md[KEYS["ENTROPY_BOUND"]] == pytest.approx(0.25) and md[KEYS["T_MIN"]] == pytest.approx(0.1)
    assert md[KEYS["DIFFRT_SEED"]] == 5 and md[KEYS["DIFFRT_STOP"]] == ["<end>", "STOP"]
    assert md[KEYS["CHAT_TEMPLATE"]] == "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    assert md[KEYS["DIFFRT_SYSTEM"]] == "You are a tiny model."
    assert md[KEYS["DIFFRT_LICENSE"]] == "line 1\nline 2"
    assert json.loads(md[KEYS["DIFFRT_MESSAGES"]]) == [
        {"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi!"}]
    # Every other key is the source's, unchanged; every tensor is copied byte for byte.
    applied = {KEYS[k] for k in ["DIFFRT_MODELFILE", "MAX_STEPS", "DIFFRT_MAX_NEW_TOKENS", "ENTROPY_BOUND",
                                 "T_MIN", "DIFFRT_SEED", "DIFFRT_STOP", "CHAT_TEMPLATE", "DIFFRT_SYSTEM",
                                 "DIFFRT_LICENSE", "DIFFRT_MESSAGES"]}
    for key, value in old.metadata.items():
        if key not in applied:
            assert md[key] == value, key
    assert old.tensors.keys() == new.tensors.keys()
    for name, t in old.tensors.items():
        assert new.tensors[name].type == t.type and new.tensors[name].shape == t.shape
        assert np.array_equal(new.tensors[name].raw(), t.raw()), name


def test_create_from_store_name_inherits(models, converted):
    create("base", MF.format(src=converted("default", "f32")))
    create("child", "FROM base\nPARAMETER steps 3\n")
    md = load(store.resolve("child")).metadata
    assert md[KEYS["MAX_STEPS"]] == 3
    assert md[KEYS["DIFFRT_SYSTEM"]] == "You are a tiny model."  # inherited
    assert md[KEYS["DIFFRT_MODELFILE"]] == "FROM base\nPARAMETER steps 3\n"


def test_create_quantize_q8_0(models, converted):
    src = converted("default", "f32")
    path = create("q", f"FROM {src}\n", quantize="q8_0")
    old, new = load(src), load(path)
    types = {n: t.type for n, t in new.tensors.items()}
    assert types["token_embd.weight"] == "Q8_0" and types["blk.0.attn_q.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == "F32"  # norms are kept
    ref = old.tensors["blk.0.attn_q.weight"].numpy()
    got = new.tensors["blk.0.attn_q.weight"].numpy()
    # Q8_0: at most half a step (amax/127 per 32-block) plus the f16 rounding of the scale.
    blocks = ref.reshape(-1, 32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / 127
    bound = np.broadcast_to(d * (0.5 + 127 * 2.0**-11) + 1e-12, blocks.shape)
    assert np.all(np.abs(got.reshape(-1, 32) - blocks) <= bound)
    assert not np.array_equal(got, ref)  # it really was quantised
    assert new.metadata[KEYS["FILE_TYPE"]] == 7  # MOSTLY_Q8_0


def test_create_from_checkpoint_dir(models, tiny_checkpoint, tmp_path):
    mf = tmp_path / "Modelfile"
    ckpt = tiny_checkpoint("default")
    mf.write_text(f"FROM {os.path.relpath(ckpt, tmp_path)}\nSYSTEM from a checkpoint\n")
    assert main(["create", "fromdir", "-f", str(mf)]) == 0
    md = load(store.resolve("fromdir")).metadata
    assert md[KEYS["DIFFRT_SYSTEM"]] == "from a checkpoint"
    assert [p for p in os.listdir(models) if not p.startswith(".")] == ["fromdir"]  # no temp left


def test_create_errors_leave_nothing(models, converted, tmp_path):
    src = converted("default", "f32")
    with pytest.raises(ModelfileError, match="Modelfile:2: unknown parameter"):
        create("bad", f"FROM {src}\nPARAMETER temperature 1\n")
    with pytest.raises(ModelfileError, match=r"t_min \(0.9\) must be < t_max"):
        create("bad", f"FROM {src}\nPARAMETER t_min 0.9\n")  # the file's t_max is 0.8
    with pytest.raises(store.ModelNotFoundError):
        create("bad", "FROM nosuchmodel\n")
    with pytest.raises(FileNotFoundError):
        create("bad", f"FROM {tmp_path}/nothing.gguf\n")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.raises(FormatError):
        create("bad", f"FROM {junk}\n")
    with pytest.raises(ValueError, match="invalid model"):
        create("../bad", f"FROM {src}\n")
    assert not store.path_for("bad").exists()
    assert not any(p.name.endswith(".tmp") for p in models.rglob("*"))
    assert not store.path_for("bad").parent.exists()  # nor an empty folder for the name


def test_list_rm_cp(models, converted, capsys):
    src = converted("default", "f32")
    create("one", f"FROM {src}\n")
    assert main(["cp", "one", "two:x"]) == 0
    entries = store.list_models()
    assert [e.name for e in entries] == ["one:latest", "two:x"]
    assert entries[0].size == os.path.getsize(store.resolve("one"))
    assert entries[0].details["family"] == "diffusion-gemma"
    assert entries[0].details["parameter_count"] > 0
    capsys.readouterr()
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "one:latest" in out and "two:x" in out and "params" in out
    assert main(["rm", "one"]) == 0
    assert [e.name for e in store.list_models()] == ["two:x"]
    assert load(store.resolve("two:x")).metadata[KEYS["DIFFRT_MODELFILE"]] == f"FROM {src}\n"  # the copy survives
    assert main(["rm", "one"]) == 1  # unknown name: an error, not a crash
    assert "not found" in capsys.readouterr().err


def test_show_views(models, converted, capsys):
    src = converted("default", "f32")
    create("shown", MF.format(src=src))
    capsys.readouterr()
    assert main(["show", "shown", "--system"]) == 0
    assert capsys.readouterr().out == "You are a tiny model.\n"
    assert main(["show", "shown", "--license"]) == 0
    assert capsys.readouterr().out == "line 1\nline 2\n"
    assert main(["show", "shown", "--parameters"]) == 0
    out = capsys.readouterr().out
    assert "steps" in out and '"<end>"' in out and "num_predict" in out
    assert main(["show", "shown", "--template"]) == 0
    assert capsys.readouterr().out.startswith("{% for m in messages %}")
    # The effective Modelfile rebuilds the same model.
    assert main(["show", "shown", "--modelfile"]) == 0
    text = capsys.readouterr().out
    assert "# FROM shown" in text
    create("rebuilt", text)
    a, b = load(store.resolve("shown")).metadata, load(store.resolve("rebuilt")).metadata
    for k in ["MAX_STEPS", "ENTROPY_BOUND", "DIFFRT_STOP", "CHAT_TEMPLATE", "DIFFRT_SYSTEM", "DIFFRT_MESSAGES",
              "DIFFRT_LICENSE", "DIFFRT_SEED"]:
        assert a[KEYS[k]] == b[KEYS[k]], k
    assert main(["show", "shown"]) == 0  # the full report takes store names too
    assert "Sampler defaults" in capsys.readouterr().out
