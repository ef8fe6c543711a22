# The two commands a newcomer needs (see README.md):
#   make book   build the book into _build/html (creates/refreshes .venv first)
#   make test   run every test: unit, notebooks (nbval), strict book build, browser
.PHONY: venv book test bench clean
venv:
	@bash scripts/venv.sh
book: venv
	@bash scripts/build_book.sh
test: venv
	@bash scripts/test.sh
bench: venv
	@.venv/bin/python benchmarks/run.py
clean:
	rm -rf _build
