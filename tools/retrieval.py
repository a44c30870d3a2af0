"""Retrieval tools for the search agent: a BM25 index over a paragraph corpus, or a remote search endpoint.

:class:`BM25Search` indexes title and text of every paragraph with bm25s (English stop words removed)
and caches the index on disk under a key made from the corpus itself, so the same corpus is indexed once.
:class:`RemoteSearch` calls an HTTP endpoint that answers ``POST {"query": Q, "top_k": K}`` with
``{"hits": [{"id", "title", "text", "score"}, ...]}``. Both take ``top_k = 5`` by default. A call is one
tool call: the search agent reserves and settles it on the ledger, never these classes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.types import DEFAULT_TOP_K, Hit, ProviderUnavailableError, SearchTool, UsageError
from tools.qa_data import Paragraph

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["BM25Search", "RemoteSearch", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$ONTIME_CACHE_DIR/bm25``, else ``~/.cache/ontime/bm25``."""
    base = os.environ.get("ONTIME_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "ontime") / "bm25"


def _tokenize(texts: list[str]) -> Any:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", show_progress=False)


class BM25Search(SearchTool):
    """BM25 over ``paragraphs``, built once per distinct corpus and cached in ``cache_dir`` (None: no cache).

    Args:
        paragraphs: the corpus; ids must be unique.
        cache_dir: where indexes are kept (default :func:`default_cache_dir`).
    """

    def __init__(self, paragraphs: Sequence[Paragraph], *, cache_dir: Path | str | None = "default") -> None:
        import bm25s

        if not paragraphs:
            raise UsageError("the corpus is empty")
        if isinstance(paragraphs, str | bytes) or not all(isinstance(p, Paragraph) for p in paragraphs):
            raise UsageError("a corpus is a sequence of Paragraph (or, given to answer, a JSONL file's path)")
        ids = [p.id for p in paragraphs]
        if len(set(ids)) != len(ids):
            raise UsageError("paragraph ids must be unique in a corpus")
        self.paragraphs = list(paragraphs)
        digest = hashlib.sha1()
        for p in self.paragraphs:
            digest.update(f"{p.id}\x00{p.title}\x00{p.text}\x01".encode())
        self.key = digest.hexdigest()[:20]
        folder = default_cache_dir() if cache_dir == "default" else (Path(cache_dir) if cache_dir else None)
        path = folder / self.key if folder is not None else None
        self.cached = path is not None and (path / "params.index.json").exists()
        if self.cached:
            self._index = bm25s.BM25.load(str(path), show_progress=False)
        else:
            self._index = bm25s.BM25()
            self._index.index(_tokenize([f"{p.title}\n{p.text}" for p in self.paragraphs]), show_progress=False)
            if path is not None:
                path.mkdir(parents=True, exist_ok=True)
                self._index.save(str(path), show_progress=False)

    def search_now(self, query: str, top_k: int = DEFAULT_TOP_K) -> list[Hit]:
        """:meth:`search`, synchronously (a BM25 lookup takes well under a millisecond on small corpora)."""
        if top_k < 1:
            raise UsageError(f"top_k must be >= 1, not {top_k}")
        k = min(top_k, len(self.paragraphs))
        tokens = _tokenize([query])
        if not tokens.vocab:  # only stop words: nothing to match
            return []
        docs, scores = self._index.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        hits = [(self.paragraphs[int(i)], float(s)) for i, s in zip(docs[0].tolist(), scores[0].tolist(), strict=True)]
        return [Hit(p.id, p.title, p.text, s) for p, s in hits if s > 0]  # sorted: the positive prefix

    async def search(self, query: str, top_k: int = DEFAULT_TOP_K) -> list[Hit]:
        return self.search_now(query, top_k)


class RemoteSearch(SearchTool):
    """A search endpoint over HTTP (see the module docstring for the protocol).

    Args:
        url: the endpoint.
        api_key_env: an environment variable whose value is sent as a bearer token (never logged).
        timeout_s: the longest to wait for an answer.
    """

    def __init__(self, url: str, *, api_key_env: str | None = None, timeout_s: float = 10.0) -> None:
        import httpx

        headers = {}
        if api_key_env is not None:
            key = os.environ.get(api_key_env)
            if not key:
                raise UsageError(f"{api_key_env} is not set")
            headers["authorization"] = f"Bearer {key}"
        self.url = url
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout_s)

    async def search(self, query: str, top_k: int = DEFAULT_TOP_K) -> list[Hit]:
        import httpx

        try:
            resp = await self._client.post(self.url, json={"query": query, "top_k": top_k})
            resp.raise_for_status()
            return [
                Hit(str(r["id"]), str(r.get("title", "")), str(r["text"]), float(r.get("score", 0.0)))
                for r in resp.json()["hits"]
            ]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise ProviderUnavailableError(
                f"search endpoint {self.url}: {type(exc).__name__}", provider="search"
            ) from None

    async def aclose(self) -> None:
        await self._client.aclose()
