#!/usr/bin/env bash
# Build llama.cpp's llama-bench, the peer engine of the decoding benchmark (make bench-peer).
#
# The sources are the pinned llama-cpp-python source distribution from PyPI (it carries
# llama.cpp in vendor/llama.cpp; PyPI has no binary wheel of it). They are downloaded into a
# cache folder and built there once, with the CPU's own instruction set (GGML_NATIVE):
#
#   $QUANTLAB_LLAMACPP_DIR (default ~/.cache/quantlab/llama.cpp-<version>)/
#     sdist/      the downloaded .tar.gz
#     src/        its sources
#     build/      cmake's build folder
#     bin/llama-bench
#
# Later runs print the cached binary at once. The last line printed on stdout is the path of
# llama-bench. Exit status: 0 built or cached; 3 a tool is missing (cmake, ninja or make, a
# C++ compiler, Python with pip), with a message on stderr saying which; 1 anything else.
# Building takes about 4 minutes on 2 cores.
#
# Environment: QUANTLAB_LLAMACPP_DIR (the cache folder), PYTHON (the Python whose pip
# downloads; default python3), CMAKE (default cmake), CXX (default c++), JOBS (parallel
# compile jobs; default the number of CPUs).
set -euo pipefail

VERSION="0.3.36"
DIR="${QUANTLAB_LLAMACPP_DIR:-${HOME}/.cache/quantlab/llama.cpp-${VERSION}}"
BIN="$DIR/bin/llama-bench"
PY="${PYTHON:-python3}"
CMAKE="${CMAKE:-cmake}"

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi

missing=()
command -v "$CMAKE" >/dev/null 2>&1 || missing+=(cmake)
if command -v ninja >/dev/null 2>&1; then
  generator="Ninja"
elif command -v make >/dev/null 2>&1; then
  generator="Unix Makefiles"
else
  missing+=("ninja or make")
fi
if [ -n "${CXX:-}" ]; then
  command -v "$CXX" >/dev/null 2>&1 || missing+=("the C++ compiler $CXX")
elif ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 \
   && ! command -v clang++ >/dev/null 2>&1; then
  missing+=("a C++ compiler (c++, g++ or clang++)")
fi
"$PY" -m pip --version >/dev/null 2>&1 || missing+=("$PY with pip")
if [ "${#missing[@]}" -gt 0 ]; then
  list=$(printf '%s, ' "${missing[@]}")
  echo "llama.cpp not built: missing ${list%, }" >&2
  echo "install them (Debian: apt-get install cmake ninja-build g++) and run again" >&2
  exit 3
fi

mkdir -p "$DIR/sdist"
sdist=$(ls "$DIR"/sdist/llama_cpp_python-"$VERSION".tar.gz 2>/dev/null || true)
if [ -z "$sdist" ]; then
  echo "downloading llama-cpp-python==$VERSION (source distribution) from PyPI" >&2
  "$PY" -m pip download "llama-cpp-python==$VERSION" --no-deps --no-binary :all: -d "$DIR/sdist" -q >&2
  sdist=$(ls "$DIR"/sdist/llama_cpp_python-"$VERSION".tar.gz)
fi

src="$DIR/src/vendor/llama.cpp"
if [ ! -f "$DIR/src/.extracted" ]; then  # kept: an interrupted build resumes where it stopped
  rm -rf "$DIR/src"
  mkdir -p "$DIR/src"
  tar -xzf "$sdist" -C "$DIR/src" --strip-components=1
  touch "$DIR/src/.extracted"
fi
[ -f "$src/CMakeLists.txt" ] || { echo "no vendor/llama.cpp in $sdist" >&2; exit 1; }

echo "building llama-bench in $DIR/build (about 4 minutes on 2 cores)" >&2
"$CMAKE" -S "$src" -B "$DIR/build" -G "$generator" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DBUILD_SHARED_LIBS=OFF >&2
"$CMAKE" --build "$DIR/build" --target llama-bench -j "${JOBS:-$(nproc 2>/dev/null || echo 2)}" >&2
mkdir -p "$DIR/bin"
cp "$DIR/build/bin/llama-bench" "$BIN"
echo "$BIN"
