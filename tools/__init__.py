"""Non-model steps (retrieval, a code sandbox, SQLite). None ships yet; see the open issues."""
