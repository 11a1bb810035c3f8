"""clipy's benchmarks, one entry point: ``python -m benchmarks run [--quick] [--store DIR]
[--out DIR] [--encoders]`` prints one markdown table and writes ``results.json``.

Modules: :mod:`benchmarks.ingest_bench` (ingest in a child process),
:mod:`benchmarks.search_bench` (clipy on the embedded store, on qdrant-client ``:memory:``
and FAISS exact search, side by side, with recall against :mod:`benchmarks.oracle`),
:mod:`benchmarks.latency_bench` (query encoding, end to end, cold start) and
:mod:`benchmarks.encoder_bench` (encoder throughput).
"""
