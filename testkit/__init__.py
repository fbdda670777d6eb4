"""What the tests and the benchmarks share: real queen and hive processes (`live`),
recorded machines replayed through a fake NVML (`machines`), the product documents'
scheduler scripts and placements built from recorded machines (`scheduler`), and a tiny
random Llama for the transformers engine (`tinylm`).

Neither `tests/` nor `bench/` imports the other; both import this. It is not installed
with rbee (not a runtime package) and may import anything of rbee's.
"""
