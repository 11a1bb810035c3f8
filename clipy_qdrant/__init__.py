"""clipy: multimodal product search on Qdrant.

Light at import time: heavy dependencies (torch, qdrant, faiss) load in the modules that
use them.
"""

from __future__ import annotations

from clipy_qdrant.errors import ClipyError
from clipy_qdrant.filters import Filter, parse_filter
from clipy_qdrant.fusion import FusionConfig

__version__ = "0.1.0"

__all__ = ["ClipyError", "Filter", "FusionConfig", "__version__", "parse_filter"]
