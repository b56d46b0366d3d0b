"""Tokenizer and chat template: diffrt (from the GGUF file alone) against transformers'
AutoTokenizer on the same checkpoint — same ids, same rendered text."""

import pytest

transformers = pytest.importorskip("transformers")
diffrt = pytest.importorskip("diffrt")
from diffrt.chat import encode_chat, render_chat, split_thinking, thinking_markers

# A realistic Gemma-style template: system folded into the first user turn, role alternation
# enforced with raise_exception, content as a string or a list of parts, reasoning of the last
# assistant turn, tools through tojson, a date through strftime_now, an optional thinking opener.
GEMMA_STYLE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- if tools %}
<start_of_turn>system
Today is {{ strftime_now('%Y-%m-%d') }}. Tools: {{ tools | tojson }}<end_of_turn>
{% endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- set role = "model" if message['role'] == 'assistant' else message['role'] -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message.get('reasoning_content') and loop.last -%}
        {{ '<start_of_thinking>' + message['reasoning_content'] + '<end_of_thinking>' }}
    {%- endif -%}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- else -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'text' %}{{ item['text'] | trim }}{% endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\\n' }}
    {%- if enable_thinking %}<start_of_thinking>{% endif -%}
{%- endif -%}
"""

CHATS = [
    [{"role": "user", "content": "Hello there!"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "  Why is the sky blue?  "},
        {"role": "assistant", "content": "Scattering.", "tool_calls": None},
        {"role": "user", "content": [{"type": "text", "text": 'héllo — 日本 "quoted" <tag>'}]},
    ],
    [{"role": "user", "content": "think"}, {"role": "assistant", "content": "ok", "reasoning": "hmm"}],
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "wetter",
            "description": "Das Wetter — für heute",
            "parameters": {"type": "object", "properties": {}},
        },
    }
]


@pytest.fixture(scope="module")
def toks(tiny_checkpoint, converted):
    hf = transformers.AutoTokenizer.from_pretrained(str(tiny_checkpoint("default")))
    ours = diffrt.load(str(converted("default"))).tokenizer
    return hf, ours


@pytest.mark.parametrize(
    "text", ["Hello world", "the model is good.\n\tend", "héllo 日本", " ", "<start_of_turn>user"]
)
def test_encode_decode_match(toks, text):
    hf, ours = toks
    assert ours.encode(text) == hf(text)["input_ids"]  # BOS per the file's add_bos_token
    assert ours.encode(text, add_bos=False) == hf(text, add_special_tokens=False)["input_ids"]
    ids = hf(text)["input_ids"]
    assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("gen_prompt", [True, False])
@pytest.mark.parametrize("chat", range(3))
def test_stored_template_matches_transformers(toks, chat, gen_prompt):
    hf, ours = toks
    msgs = CHATS[chat]
    if chat == 1:  # the tiny template has no multi-part content
        msgs = msgs[:3] + [{"role": "user", "content": "héllo — 日本"}]
    ref = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen_prompt)
    got = render_chat(ours.chat_template, msgs, ours.special_tokens_map(), add_generation_prompt=gen_prompt)
    assert got == ref
    ref_ids = hf.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen_prompt, return_dict=False)
    assert encode_chat(ours, msgs, add_generation_prompt=gen_prompt) == list(ref_ids)


@pytest.mark.parametrize("chat", range(3))
@pytest.mark.parametrize("extra", [{}, {"enable_thinking": True}, {"tools": TOOLS}])
def test_gemma_style_template_matches_transformers(toks, chat, extra):
    hf, ours = toks
    ref = hf.apply_chat_template(
        CHATS[chat], chat_template=GEMMA_STYLE, tokenize=False, add_generation_prompt=True, **extra
    )
    got = render_chat(
        GEMMA_STYLE, CHATS[chat], ours.special_tokens_map(), add_generation_prompt=True, **extra
    )
    assert got == ref
    if "tools" in extra:
        assert "für heute" in got  # tojson keeps non-ASCII (ensure_ascii=False)


def test_template_errors_surface(toks):
    import jinja2

    _, ours = toks
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(jinja2.exceptions.TemplateError, match="alternate"):
        render_chat(GEMMA_STYLE, bad, ours.special_tokens_map())
    with pytest.raises(ValueError, match="empty"):
        render_chat(GEMMA_STYLE, [], ours.special_tokens_map())
    with pytest.raises(diffrt.ConfigError, match="chat template"):
        render_chat(None, bad)


def test_thinking_split():
    markers = thinking_markers(GEMMA_STYLE)
    assert markers == ("<start_of_thinking>", "<end_of_thinking>")
    assert split_thinking("<start_of_thinking>let me see<end_of_thinking>The answer.", markers) == (
        "let me see",
        "The answer.",
    )
    assert split_thinking("no thoughts", markers) == ("", "no thoughts")
    assert split_thinking("<start_of_thinking>still going", markers) == ("still going", "")
    assert thinking_markers("{{ messages }}") is None
    assert split_thinking("x", None) == ("", "x")


def test_model_chat_is_generate_on_the_rendered_prompt(converted):
    model = diffrt.load(str(converted("default")))
    msgs = [{"role": "user", "content": "Why is the sky blue?"}]
    a = model.chat(msgs, seed=3, max_new_tokens=16)
    b = model.generate(encode_chat(model.tokenizer, msgs), seed=3, max_new_tokens=16)
    assert a.raw_tokens == b.raw_tokens and a.text == b.text
    events = list(model.chat(msgs, stream=True, seed=3, max_new_tokens=16))
    assert events[-1].result.raw_tokens == a.raw_tokens
