"""QA data loaders, corpora and the retrieval tools (BM25 with an on-disk cache, a remote endpoint on loopback)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from aiohttp import web

import runtime
from tools.qa_data import Paragraph, load_qa, pool_corpus, read_corpus, write_corpus
from tools.retrieval import BM25Search, RemoteSearch

if TYPE_CHECKING:
    from pathlib import Path

HOTPOT = {
    "question_id": "h1",
    "question_text": "Which city is the capital of the country where Zorvan was born?",
    "answers_objects": [{"spans": ["Velmora"]}],
    "contexts": [
        {"id": "0", "title": "Zorvan", "paragraph_text": "Zorvan was born in Estria.", "is_supporting": True},
        {"id": "1", "title": "Estria", "paragraph_text": "The capital of Estria is Velmora.", "is_supporting": True},
        {"id": "2", "title": "Cheese", "paragraph_text": "Cheese is made from milk.", "is_supporting": False},
    ],
}
MUSIQUE = {
    "id": "2hop__1",
    "question": "Who founded the company that makes the Quill phone?",
    "answer": "Ada Brink",
    "answer_aliases": ["A. Brink"],
    "paragraphs": [
        {"idx": 0, "title": "Quill", "paragraph_text": "The Quill phone is made by Nettle.", "is_supporting": True},
        {"idx": 1, "title": "Nettle", "paragraph_text": "Nettle was founded by Ada Brink.", "is_supporting": True},
        {"idx": 2, "title": "Zorvan", "paragraph_text": "Zorvan was born in Estria.", "is_supporting": False},
    ],
    "question_decomposition": [{"question": "Who makes the Quill phone?"}, {"question": "Who founded #1?"}],
}
TWOWIKI = {
    "_id": "w1",
    "type": "comparison",
    "question": "Who was born first, Ann Ro or Bo Lin?",
    "answer": "Ann Ro",
    "context": [["Ann Ro", ["Ann Ro was born in 1901.", "She sang."]], ["Bo Lin", ["Bo Lin was born in 1950."]]],
    "supporting_facts": [["Ann Ro", 0], ["Bo Lin", 0]],
}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_three_formats_load_into_one_shape(tmp_path: Path) -> None:
    (h,) = load_qa(write_jsonl(tmp_path / "h.jsonl", [HOTPOT]))
    (m,) = load_qa(write_jsonl(tmp_path / "m.jsonl", [MUSIQUE]))
    (w,) = load_qa(write_jsonl(tmp_path / "w.jsonl", [TWOWIKI]))
    assert (h.source, m.source, w.source) == ("hotpotqa", "musique", "2wikimultihopqa")
    assert h.answers == ("Velmora",) and len(h.supporting) == 2 and len(h.paragraphs) == 3
    assert m.answers == ("Ada Brink", "A. Brink") and m.kind == "2hop" and len(m.hops) == 2
    assert w.kind == "comparison" and w.paragraphs[0].text == "Ann Ro was born in 1901. She sang."
    assert len(w.supporting) == 2
    # The same paragraph in two data sets is one corpus entry.
    corpus = pool_corpus([h, m, w])
    assert len(corpus) == 3 + 3 + 2 - 1


def test_bad_data_files_get_a_typed_error_naming_the_row(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(HOTPOT) + "\n{not json\n")
    with pytest.raises(runtime.UsageError, match="row 2: not JSON"):
        load_qa(bad)
    with pytest.raises(runtime.UsageError, match="row 1: not HotpotQA"):
        load_qa(write_jsonl(tmp_path / "x.jsonl", [{"q": 1}]))
    with pytest.raises(runtime.UsageError, match="malformed musique row"):
        load_qa(write_jsonl(tmp_path / "y.jsonl", [{"id": "1", "question_decomposition": []}]))
    with pytest.raises(runtime.UsageError, match="cannot read"):
        load_qa(tmp_path / "missing.jsonl")
    with pytest.raises(runtime.UsageError, match="expected"):
        read_corpus(write_jsonl(tmp_path / "c.jsonl", [{"title": "no id or text"}]))


def test_corpus_files_round_trip(tmp_path: Path) -> None:
    paras = [Paragraph("a", "A", "alpha text"), Paragraph("b", "", "beta text")]
    assert read_corpus(write_corpus(paras, tmp_path / "corpus.jsonl")) == paras


def _corpus() -> list[Paragraph]:
    examples = [
        load_qa_row(HOTPOT, "hotpotqa"),
        load_qa_row(MUSIQUE, "musique"),
        load_qa_row(TWOWIKI, "2wikimultihopqa"),
    ]
    return pool_corpus(examples)


def load_qa_row(row: dict[str, Any], fmt: str) -> Any:
    from tools.qa_data import FORMATS

    return FORMATS[fmt](row)


def test_bm25_finds_the_supporting_paragraph_and_caches_its_index(tmp_path: Path) -> None:
    corpus = _corpus()
    first = BM25Search(corpus, cache_dir=tmp_path)
    hits = first.search_now("capital of Estria")
    assert hits[0].title == "Estria" and hits[0].score > 0
    assert len(first.search_now("Zorvan Estria Quill Nettle milk", top_k=5)) == 5
    assert first.search_now("the of and") == []  # only stop words
    assert not first.cached
    again = BM25Search(corpus, cache_dir=tmp_path)
    assert again.cached and again.search_now("capital of Estria") == hits
    other = BM25Search(corpus[:-1], cache_dir=tmp_path)
    assert not other.cached and other.key != first.key  # another corpus, another index
    with pytest.raises(runtime.UsageError, match="unique"):
        BM25Search([corpus[0], corpus[0]], cache_dir=None)
    with pytest.raises(runtime.UsageError, match="top_k"):
        first.search_now("x", top_k=0)


def test_remote_search_over_loopback(tmp_path: Path) -> None:
    index = BM25Search(_corpus(), cache_dir=None)

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        hits = index.search_now(body["query"], body["top_k"])
        return web.json_response(
            {"hits": [{"id": h.id, "title": h.title, "text": h.text, "score": h.score} for h in hits]}
        )

    async def broken(request: web.Request) -> web.Response:
        return web.Response(text="not JSON")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/search", handle)
        app.router.add_post("/broken", broken)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # aiohttp hides the port
        try:
            remote = RemoteSearch(f"http://127.0.0.1:{port}/search")
            hits = await remote.search("Who founded Nettle?", top_k=2)
            assert hits[0].title == "Nettle" and len(hits) <= 2
            assert hits == index.search_now("Who founded Nettle?", 2)
            await remote.aclose()
            bad = RemoteSearch(f"http://127.0.0.1:{port}/broken")
            with pytest.raises(runtime.ProviderUnavailableError, match="search endpoint"):
                await bad.search("x")
            await bad.aclose()
        finally:
            await runner.cleanup()

    anyio.run(main, backend="asyncio")
