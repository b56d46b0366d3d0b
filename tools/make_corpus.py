#!/usr/bin/env python3
"""Extract the training corpus of the default model: the World English Bible (public domain).

Source: Debian bookworm package `sword-text-web` 426.0-1 (the SWORD module `engWEB2015eb`, "World
English Bible with Deuterocanon"; /usr/share/doc/sword-text-web/copyright: "The World English Bible is
in the Public Domain"). Modern English prose in short sentences: the simplest permissively licensed
English text of useful size in Debian, which is what a 6 M-parameter model can learn to write.

The module is a SWORD zText module (ModDrv=zText, CompressType=ZIP, BlockType=BOOK): for each
testament, `.bzs` lists the zlib blocks (offset, compressed size, size; 3 x u32 LE), `.bzz` holds them,
and `.bzv` indexes the verses (block, offset in the inflated block, length; u32 u32 u16 LE). A verse is
OSIS XML. We drop footnotes and headings, keep the words, and cut the text into paragraphs at the
module's paragraph marks (`<div type="x-p" sID=...>`) and chapter starts, splitting very long
paragraphs at verse ends. Each paragraph is written as {"title": "<Book> <chapter>", "text": ...},
one JSON object per line; every 40th goes to the held-out file. Deterministic (same input bytes ->
same output bytes).

    apt-get download sword-text-web=426.0-1
    dpkg-deb -x sword-text-web_426.0-1_all.deb x
    python3 tools/make_corpus.py x/usr/share/sword/modules/texts/ztext/engWEB2015eb OUT_DIR
    # -> OUT_DIR/train.jsonl, OUT_DIR/heldout.jsonl
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import struct
import zlib
from pathlib import Path

HELDOUT_EVERY = 40
SKIP_BOOKS = {"Preface", "Glossary"}  # the translators' front and back matter, not scripture
MAX_PARAGRAPH = 600  # characters; longer paragraphs are split at verse ends

_NOTE = re.compile(r"<note\b.*?</note>", re.S)
_TITLE = re.compile(r"<title\b.*?</title>", re.S)
_TAG = re.compile(r"<[^>]+>")
_BOOK_NAME = re.compile(r'<milestone n="([^"]+)" type="x-usfm-h"/>')
_CHAPTER = re.compile(r'<chapter n="(\d+)"[^>]*sID=')
_SENTENCE_END = re.compile(r"(?<=[.!?”’])\s+")
_PARA = re.compile(r'<div [^>]*type="x-p"[^>]*/>|<div [^>]*sID="[^"]*" type="x-p"/>')


def verses(module: Path):
    """Yield the raw OSIS text of every non-empty verse entry, Old then New Testament, in index order."""
    for part in ("ot", "nt"):
        bzs = (module / f"{part}.bzs").read_bytes()
        bzz = (module / f"{part}.bzz").read_bytes()
        bzv = (module / f"{part}.bzv").read_bytes()
        blocks: dict[int, bytes] = {}
        for i in range(0, len(bzv) - len(bzv) % 10, 10):
            block, offset, size = struct.unpack_from("<IIH", bzv, i)
            if size == 0:
                continue
            if block not in blocks:
                start, csize, _ = struct.unpack_from("<III", bzs, 12 * block)
                blocks[block] = zlib.decompress(bzz[start:start + csize])
            yield blocks[block][offset:offset + size].decode("utf-8")


def clean(osis: str) -> str:
    if osis.count("<") != osis.count(">"):  # a few whole-book entries outgrow the u16 length: cut the tail
        osis = osis[:osis.rfind("<")]
    # a footnote often sits between two words with no space around it
    text = _TAG.sub("", _TITLE.sub("", _NOTE.sub(" ", osis)))
    text = re.sub(r"\s+", " ", html.unescape(text)).strip()
    return re.sub(r" ([,.;:!?)])", r"\1", text)


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text) if s]


def paragraphs(module: Path):
    """(title, paragraph text) in reading order."""
    book, chapter, cur = "", "", []

    def flush():
        text = " ".join(cur).strip()
        cur.clear()
        return (f"{book} {chapter}".strip(), text) if text else None

    for osis in verses(module):
        names = _BOOK_NAME.findall(osis)  # a front-matter entry may hold several headers: the last one counts
        if names:
            book, chapter = names[-1], ""  # text before the first chapter is front matter (the preface)
        mc = _CHAPTER.search(osis)
        new_para = bool(mc) or bool(_PARA.search(osis))
        if mc:
            chapter = mc.group(1)
        if new_para:
            p = flush()
            if p:
                yield p
        if not chapter or book in SKIP_BOOKS:
            continue
        for sent in sentences(clean(osis)):
            if cur and sum(len(c) + 1 for c in cur) + len(sent) > MAX_PARAGRAPH:
                p = flush()
                if p:
                    yield p
            cur.append(sent)
    p = flush()
    if p:
        yield p


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("module", help="the engWEB2015eb module directory (holds ot.bzs, ot.bzv, ot.bzz, nt.*)")
    ap.add_argument("out", help="output directory")
    args = ap.parse_args(argv)
    module, out = Path(args.module), Path(args.out)
    for part in ("ot", "nt"):
        for ext in ("bzs", "bzv", "bzz"):
            if not (module / f"{part}.{ext}").is_file():
                raise SystemExit(f"error: {module}/{part}.{ext} not found: is this a SWORD zText module?")
    out.mkdir(parents=True, exist_ok=True)
    n = chars = 0
    tmp = {name: out / f".{name}.tmp" for name in ("train.jsonl", "heldout.jsonl")}
    try:  # written aside and renamed at the end: a bad module leaves no half corpus behind
        with open(tmp["train.jsonl"], "w", encoding="utf-8") as tr, open(tmp["heldout.jsonl"], "w", encoding="utf-8") as ho:
            for i, (title, text) in enumerate(paragraphs(module)):
                (ho if i % HELDOUT_EVERY == HELDOUT_EVERY - 1 else tr).write(
                    json.dumps({"title": title, "text": text}, ensure_ascii=False) + "\n")
                n += 1
                chars += len(text)
    except (zlib.error, struct.error, UnicodeDecodeError) as e:
        for t in tmp.values():
            t.unlink(missing_ok=True)
        raise SystemExit(f"error: {module}: corrupt or truncated SWORD zText module ({e})") from None
    for name, t in tmp.items():
        os.replace(t, out / name)
    print(f"{n} paragraphs, {chars} characters -> {out}")


if __name__ == "__main__":
    main()
