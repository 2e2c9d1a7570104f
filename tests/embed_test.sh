#!/usr/bin/env bash
# The embedding example against the INSTALLED package, as a consumer sees it:
# `cmake --install` into a fresh prefix under the build dir, configure and
# build examples/embed with find_package(dspex) and -DCMAKE_PREFIX_PATH, run
# it on the installed Python package, and check its output, its exit code,
# and that none of its worker processes outlive it.
# Usage: embed_test.sh SOURCE_DIR BUILD_DIR [CXX_COMPILER] [EXTRA_CXX_FLAGS]
set -euo pipefail
src=$1
build=$2
cxx=${3:-c++}
flags=${4:-}
work="$build/embed_test"
prefix="$work/prefix"

fail() { echo "embed_test: $*" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$work"

echo "== install into $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" || { cat "$work/install.log"; fail "install failed"; }
for f in include/dspex/actors/node/node.hpp include/dspex/actors/adapters/adapter.hpp \
         include/dspex/bridge/io_loop.hpp include/dspex/supervision/supervisor.hpp \
         include/dspex/metrics/exporter.hpp \
         lib/cmake/dspex/dspexConfig.cmake lib/cmake/dspex/FindCAF.cmake \
         share/dspex/python/dspex_worker/__main__.py bin/dspex bin/dspex-bench; do
  [ -e "$prefix/$f" ] || [ -e "$prefix/${f/lib\//lib64/}" ] || fail "not installed: $f"
done
# Headers the library uses only inside (detail/) are not installed, and no
# installed header needs one.
if find "$prefix/include" -path "*/detail/*" | grep -q .; then
  fail "a detail/ header was installed"
fi
if grep -rn "#include.*/detail/" "$prefix/include"; then
  fail "an installed header includes a detail/ header"
fi
# Public headers stand alone: nothing generated into the build tree.
if grep -rn "dspex_build_paths\|test_paths" "$prefix/include"; then
  fail "an installed header needs a build-tree header"
fi

echo "== configure and build examples/embed against it"
cmake -S "$src/examples/embed" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >"$work/configure.log" || { cat "$work/configure.log"; fail "configure failed"; }
grep -q "dspex_DIR:PATH=$prefix/" "$work/build/CMakeCache.txt" || fail "find_package(dspex) did not pick the installed package"
cmake --build "$work/build" -j 2 || fail "build failed"
# It compiled against the installed headers, not the source or build tree.
grep -q -- "$prefix/include" "$work/build/compile_commands.json" || fail "installed include dir unused"
if grep -q -- "$build/include" "$work/build/compile_commands.json"; then
  fail "the example saw the build tree's include dir"
fi

echo "== run"
# Bytecode caches appear where Python imports the worker package from: the
# proof that the installed copy ran.
unset PYTHONDONTWRITEBYTECODE PYTHONPATH
find "$prefix/share/dspex/python" -name __pycache__ -prune -exec rm -rf {} +
set +e
DSPEX_PYTHON_PATH="$prefix/share/dspex/python" "$work/build/embed" >"$work/out.txt" 2>"$work/err.txt" &
pid=$!
wait $pid
rc=$?
set -e
cat "$work/out.txt"
if [ $rc -ne 0 ]; then
  cat "$work/err.txt" >&2
  fail "embed exited with $rc"
fi
for line in "python package: $prefix/share/dspex/python" \
            "node started in pool mode" \
            'sync answer: mock answer for {"question": "What is 2+2?"}' \
            "classified error: python_error: KeyError: program 'nope' not found in session 's1'" \
            'actor answer: mock answer for {"question": "What is the capital of France?"}' \
            "adapter python_pool lists 1 program(s) in s1" \
            "metrics: listening, requests ok > 0: yes" \
            "embed: ok"; do
  grep -qxF -- "$line" "$work/out.txt" || fail "missing output line: $line"
done
[ -n "$(find "$prefix/share/dspex/python/dspex_worker" -name '*.pyc' -print -quit)" ] \
  || fail "the installed Python package was not the one imported"
# Its workers carry its run id (h<pid>-...): none may be left.
sleep 0.2
if pgrep -af "dspex_worker.*--run-id h$pid-"; then
  fail "worker processes outlived the example"
fi
echo "embed_test: ok"
