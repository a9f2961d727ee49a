#!/usr/bin/env bash
# Build llama.cpp's llama-server from the llama.cpp tree vendored in the llama-cpp-python sdist (PyPI),
# once, into a cache folder outside the repository. Prints the binary's path. Reused when present.
# About 7 minutes on 2 cores; nothing is downloaded but the sdist from PyPI.
set -euo pipefail
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${ORCHESTRATOR_TEST_CACHE:-$HOME/.cache/orchestrator-tests}"
PREFIX="$CACHE/llama-server-$VERSION"
BIN="$PREFIX/bin/llama-server"
if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi
PYTHON="${PYTHON:-python3}"
command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake >&2; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" -m pip download --quiet --no-deps --no-binary :all: -d "$WORK" "llama-cpp-python==$VERSION" >&2
tar -xzf "$WORK"/llama_cpp_python-"$VERSION".tar.gz -C "$WORK"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_APP=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF >&2
cmake --build "$WORK/build" --target llama-server -j"$(nproc)" >&2
mkdir -p "$PREFIX/bin.tmp"
cp "$WORK/build/bin/llama-server" "$PREFIX/bin.tmp/llama-server"
rm -rf "$PREFIX/bin" && mv "$PREFIX/bin.tmp" "$PREFIX/bin"   # atomic: a half-built cache is never "present"
echo "$BIN"
