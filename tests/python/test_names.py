import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_cpp_names_header_is_generated_from_python_table():
    r = subprocess.run([sys.executable, str(ROOT / "tools/gen_names_header.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_every_layer_tensor_has_bid_and_unique_names():
    from diffrt import gguf_names as n
    names = [g for _, g, _ in n.LAYER_TENSORS]
    assert all("{bid}" in g for g in names)
    assert len(set(n.TENSORS.values())) == len(n.TENSORS)
    assert n.KEY_BLOCK_COUNT == "diffusion-gemma.block_count"
