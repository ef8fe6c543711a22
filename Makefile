# The two commands a newcomer needs (see README.md):
#   make book   build the book into _build/html (creates/refreshes .venv first)
#   make test   run every test: unit, notebooks (nbval), strict book build, browser
.PHONY: venv book test unit portability bench experiments clean
venv:
	@bash scripts/venv.sh
book: venv
	@bash scripts/build_book.sh
test: venv
	@bash scripts/test.sh
# The library's own tests only (no notebooks, no book, no browser): a quick check while coding.
unit: venv
	@bash scripts/unit.sh
# The notebook tests as an AVX2-only CPU, as torch without SIMD, and with 2 torch threads.
portability: venv
	@.venv/bin/python scripts/portability.py --isa avx2
	@.venv/bin/python scripts/portability.py --isa default
	@.venv/bin/python scripts/portability.py --threads 2
bench: venv
	@.venv/bin/python benchmarks/run.py
# The peer engine: SmolLM2 decoding in llama.cpp (llama-bench, built once from the pinned
# llama-cpp-python source distribution into ~/.cache/quantlab) beside quantlab's ONNX Runtime
# decoder, at 1 and 2 threads; writes the peer rows of benchmarks/results.{json,md} and
# benchmarks/peer_results.json. Needs cmake, ninja or make, and a C++ compiler (else skipped).
.PHONY: bench-peer
bench-peer: venv
	@.venv/bin/python benchmarks/run.py --only peer
# The stored studies the deep dives read: the RL study of chapters/05b_rl_training.ipynb (PPO
# with quantized actors, PTQ/QAT of the trained policies, speed of acting; 2 processes, about
# half an hour on 2 cores) into benchmarks/rl_experiments.json, and the 24 SmolLM2 settings of
# chapters/04d_beyond_int4.ipynb (about 10 minutes) into benchmarks/smollm_experiments.json.
experiments: venv
	@.venv/bin/python scripts/rl_experiments.py
	@.venv/bin/python scripts/smollm_experiments.py
clean:
	rm -rf _build
