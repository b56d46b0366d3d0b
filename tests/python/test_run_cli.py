"""`diffrt run`: one-shot answers equal Model.generate on the chat-rendered prompt, the REPL keeps a
multi-turn history and quits on /bye or EOF, --verbose and --live do what they say."""

import io

import pytest

diffrt = pytest.importorskip("diffrt")
from diffrt.chat import encode_chat
from diffrt.cli import build_parser, main
from diffrt.commands import run as run_cmd


class TTY(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(scope="module")
def path(converted):
    return str(converted("default"))


def test_one_shot_matches_generate(path, capsys):
    assert main(["run", path, "Why is the sky", "blue?", "--seed", "7", "--verbose"]) == 0
    out, err = capsys.readouterr()
    model = diffrt.load(path)
    ids = encode_chat(model.tokenizer, [{"role": "user", "content": "Why is the sky blue?"}])
    ref = model.generate(ids, seed=7)
    assert out == ref.text + "\n"
    assert f"steps per canvas: {ref.steps}" in err and "tokens/s" in err


def test_raw_and_sampler_options(path, capsys):
    assert (
        main(
            [
                "run",
                path,
                "hello",
                "--raw",
                "--seed",
                "3",
                "--steps",
                "5",
                "--max-new-tokens",
                "16",
                "--t-min",
                "0.2",
                "--t-max",
                "0.9",
                "--entropy-bound",
                "0.3",
                "--stability-threshold",
                "0",
                "--confidence-threshold",
                "0.01",
                "--verbose",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    model = diffrt.load(path)
    ref = model.generate(
        model.tokenizer.encode("hello"),
        seed=3,
        steps=5,
        max_new_tokens=16,
        t_min=0.2,
        t_max=0.9,
        entropy_bound=0.3,
        stability_threshold=0,
        confidence_threshold=0.01,
    )
    assert out == ref.text + "\n"
    assert "canvases: 1" in err


def test_invalid_option_is_a_clean_error(path, capsys):
    assert main(["run", path, "hi", "--t-min", "0.9", "--t-max", "0.5"]) == 1
    assert "t_min must be < t_max" in capsys.readouterr().err


def test_repl_multi_turn_and_bye(path, monkeypatch):
    model = diffrt.load(path)
    seen = []
    real_stream = type(model).stream

    def spy(self, prompt, **kw):
        seen.append(list(prompt))
        return real_stream(self, prompt, **kw)

    monkeypatch.setattr(type(model), "stream", spy)
    args = build_parser().parse_args(["run", path, "--seed", "1"])
    out = io.StringIO()
    rc = run_cmd.repl(model, args, True, None, TTY("hello\n\nagain\n/bye\nnever read\n"), out, io.StringIO())
    assert rc == 0 and len(seen) == 2
    first = model.generate(seen[0], seed=1)
    # the second prompt is the whole conversation: user, the first answer, user
    hist = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "again"},
    ]
    assert seen[1] == encode_chat(model.tokenizer, hist)
    assert out.getvalue().count(">>> ") == 4  # hello, (empty), again, /bye


def test_repl_eof_exits(path):
    model = diffrt.load(path)
    args = build_parser().parse_args(["run", path])
    assert run_cmd.repl(model, args, True, None, TTY(""), io.StringIO(), io.StringIO()) == 0


def test_live_redraws_on_a_terminal(path):
    model = diffrt.load(path)
    args = build_parser().parse_args(["run", path, "--live", "--seed", "4", "--max-new-tokens", "16"])
    out = TTY()
    res, shown = run_cmd.answer(model, model.tokenizer.encode("hi"), args, out, io.StringIO())
    assert shown == res.text
    s = out.getvalue()
    assert s.count("\x1b8\x1b[J") >= res.steps[0]  # one redraw per step (+ the commit)
    assert s.endswith(res.text + "\n")


def test_resolve_model_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        run_cmd.resolve_model(str(tmp_path / "nope.gguf"))


def test_stop_string_ends_the_answer(path, monkeypatch):
    model = diffrt.load(path)
    ids = model.tokenizer.encode("hi")
    full = model.generate(ids, seed=9, max_new_tokens=48, eos_ids=[], pad_id=-1)
    first = model.tokenizer.decode(full.tokens[:16])
    stop = full.text[len(first) + 3 : len(first) + 6]  # inside the second canvas' text
    assert len(stop) == 3 and full.text.find(stop) >= len(first)
    monkeypatch.setattr(run_cmd, "_stop_strings", lambda m: [stop])
    args = build_parser().parse_args(["run", path, "--seed", "9", "--max-new-tokens", "48"])
    out = io.StringIO()
    from diffrt import generate as gen_mod

    defaults = gen_mod.sampler_defaults(model.metadata)  # without EOS, so that three canvases would run
    monkeypatch.setattr(gen_mod, "sampler_defaults", lambda md: {**defaults, "eos_ids": [], "pad_id": None})
    model = diffrt.load(path)
    res, shown = run_cmd.answer(model, ids, args, out, io.StringIO())
    cut = full.text[: full.text.find(stop)]
    assert shown == cut and out.getvalue() == cut + "\n"
    assert res is None  # the third canvas was never generated
