#!/usr/bin/env python3
"""Extract an English prose corpus from the Python documentation sources (Debian `python3.11-doc`).

Source: Debian bookworm package `python3.11-doc` 3.11.2-6+deb12u9 (the package `python3-doc` 3.11.2-1
depends on it), licensed under the PSF License Version 2 (see its /usr/share/doc/python3.11-doc/copyright).
We read the reStructuredText sources under usr/share/doc/python3.11/html/_sources/ of these parts,
in sorted path order:

    tutorial/ faq/ howto/ library/ reference/ using/ installing/ glossary.rst.txt

and keep only prose paragraphs: directives, literal/code blocks, doctest blocks, tables and
paragraphs that are mostly symbols are dropped; inline markup (:role:`x`, ``x``, *x*, links) is
reduced to its text. Each kept paragraph is written with the title of the section it belongs to,
one JSON object per line: {"title": ..., "text": ...}. Every 40th record goes to the held-out file.
The output is deterministic (same input bytes -> same output bytes).

    apt-get download python3.11-doc=3.11.2-6+deb12u9
    dpkg-deb -x python3.11-doc_3.11.2-6+deb12u9_all.deb x
    python3 tools/make_corpus.py x/usr/share/doc/python3.11/html/_sources OUT_DIR
    # -> OUT_DIR/train.jsonl, OUT_DIR/heldout.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

PARTS = ["tutorial", "faq", "howto", "library", "reference", "using", "installing", "glossary.rst.txt"]
HELDOUT_EVERY = 40
UNDERLINE = re.compile(r"^([=\-~^*\"'#+`:.])\1{2,}\s*$")

_ROLE = re.compile(r":[a-zA-Z:]+:`([^`]*)`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]*>`_{1,2}")
_REF = re.compile(r"`([^`]+)`_{1,2}")
_LIT = re.compile(r"``([^`]*)``")
_STRONG = re.compile(r"\*\*([^*]+)\*\*")
_EMPH = re.compile(r"\*([^*\s][^*]*)\*")
_FOOT = re.compile(r"\s*\[(#\w*|\d+)\]_")
_SUBST = re.compile(r"\|[^|\s][^|]*\|_?")
_CONTRIB = re.compile(r"\s*\((Contributed|Patch|Written|Originally) by [^)]*\)\.?")


def _role_text(m: re.Match) -> str:
    inner = m.group(1)
    lt = re.match(r"(.*?)\s*<[^>]*>$", inner)
    if lt:  # :ref:`text <target>`
        return lt.group(1)
    inner = inner.lstrip("!")
    if inner.startswith("~"):  # :func:`~a.b.c` shows only the last part
        inner = inner[1:].rsplit(".", 1)[-1]
    return inner


def clean_inline(text: str) -> str:
    text = _ROLE.sub(_role_text, text)
    text = _LINK.sub(r"\1", text)
    text = _LIT.sub(r"\1", text)
    text = _REF.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    text = _EMPH.sub(r"\1", text)
    text = _FOOT.sub("", text)
    text = _SUBST.sub("", text)
    text = _CONTRIB.sub("", text)
    text = text.replace("\\ ", "").replace("\\", "")
    if text.endswith("::"):
        text = text[:-1]
    text = re.sub(r"\s+", " ", text).strip()
    return text


def is_prose(text: str) -> bool:
    words = text.split()
    if len(words) < 6 or not text[0].isupper() or text[-1] not in ".!?":
        return False
    if any(s in text for s in (">>>", "{", "}", "==", "->", "http", "::", "~~", "$", "()", "''")):
        return False
    plain = sum(c.isalpha() or c in " ,.'-?!:;()" for c in text)
    if plain / len(text) < 0.95:
        return False
    # Mostly real words: identifiers like foo_bar or a.b.c make text hard for a tiny model.
    odd = sum(1 for w in words if "_" in w or re.search(r"\w\.\w", w) or re.search(r"[a-z][A-Z]", w))
    return odd <= len(words) // 25


def paragraphs(path: Path):
    """Yield (section_title, paragraph_text) for the prose paragraphs of one reST file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    title = ""
    block: list[str] = []
    skip_indent = None  # inside a directive or literal block: skip lines indented more than this
    literal_next = False

    def flush():
        nonlocal block, literal_next
        if not block:
            return None
        raw = block
        block = []
        first = raw[0].strip()
        ends_literal = raw[-1].rstrip().endswith("::")
        if first.startswith(("* ", "- ", "#. ", "+ ")):
            first = first[2:].lstrip()
            raw = [first] + raw[1:]
        if re.match(r"^\d+\.\s", first):
            return ends_literal
        text = clean_inline(" ".join(r.strip() for r in raw))
        result.append((title, text))
        return ends_literal

    result: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if skip_indent is not None:
            if stripped == "" or indent > skip_indent:
                i += 1
                continue
            skip_indent = None
        # Section titles: text followed by an underline (an optional overline is skipped as an underline).
        if stripped and i + 1 < len(lines) and UNDERLINE.match(lines[i + 1]) and not UNDERLINE.match(line):
            flush()
            title = clean_inline(stripped)
            i += 2
            continue
        if UNDERLINE.match(line):
            i += 1
            continue
        if stripped == "":
            if flush():
                skip_indent = indent_of_block
            i += 1
            continue
        if not block:
            indent_of_block = indent
            if stripped.startswith(".."):
                # Directives and comments: skip the body, but keep admonition text (note/tip/versionchanged).
                m = re.match(r"\.\.\s+(note|tip|important|seealso|warning)::\s*(.*)$", stripped)
                if m:
                    if m.group(2):
                        block = [m.group(2)]
                    i += 1
                    continue
                skip_indent = indent
                i += 1
                continue
            if stripped.startswith((">>>", "|", "+-", "=")):
                skip_indent = indent if stripped.startswith(">>>") else None
                # a table row or doctest: skip this block entirely
                while i < len(lines) and lines[i].strip():
                    i += 1
                continue
        block.append(line)
        i += 1
    flush()
    for t, p in result:
        if is_prose(p):
            yield t, p


def collect(src: Path) -> list[dict]:
    files: list[Path] = []
    for part in PARTS:
        p = src / part
        files.extend(sorted(p.rglob("*.rst.txt")) if p.is_dir() else [p])
    records = []
    for f in files:
        for title, text in paragraphs(f):
            records.append({"title": title, "text": text})
    return records


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", help="…/usr/share/doc/python3.11/html/_sources")
    ap.add_argument("out_dir")
    args = ap.parse_args(argv)
    src, out = Path(args.sources), Path(args.out_dir)
    if not (src / "tutorial").is_dir():
        raise SystemExit(f"{src}: not the python3.11-doc _sources directory (no tutorial/)")
    out.mkdir(parents=True, exist_ok=True)
    records = collect(src)
    with open(out / "train.jsonl", "w", encoding="utf-8") as tr, open(out / "heldout.jsonl", "w", encoding="utf-8") as ho:
        for i, r in enumerate(records):
            (ho if i % HELDOUT_EVERY == HELDOUT_EVERY - 1 else tr).write(json.dumps(r, ensure_ascii=False) + "\n")
    n_chars = sum(len(r["text"]) for r in records)
    print(f"{len(records)} paragraphs, {n_chars} characters -> {out}")


if __name__ == "__main__":
    main()
