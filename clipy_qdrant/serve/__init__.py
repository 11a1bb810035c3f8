"""``clipy serve``: the HTTP API and search page over a :class:`~clipy_qdrant.search.Searcher`
(:func:`create_app`). Importing this package opens nothing; the caller builds the searcher."""

from __future__ import annotations

from clipy_qdrant.serve.app import ServeOptions, create_app
from clipy_qdrant.serve.models import API_VERSION

__all__ = ["API_VERSION", "ServeOptions", "create_app"]
