"""clipy's application layer: catalog readers, the ingest pipeline and the CLI.

It builds on the library (:mod:`clipy_qdrant`) and is never imported by it.
"""
