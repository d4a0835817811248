#!/usr/bin/env bash
# Builds the corpus of real programs: each library's C sources plus its driver
# (PROGRAM/driver.c) as one LLVM IR module per optimisation level, for the
# startup and overhead experiments.
#
#   experiments/corpus/build.sh [OUT] [PROGRAM...]
#
# OUT defaults to <repo>/target/corpus; PROGRAM is `sqlite` or `zstd` (default:
# both).
#
# Downloads: the crate that bundles each program's sources (versions pinned
# below) and the crates its build depends on, with `cargo fetch`, through a
# throwaway cargo project in OUT/fetch/CRATE. The sources are copied to
# OUT/CRATE-VERSION/. The first run needs network access to crates.io; later
# runs reuse the copy and need none.
#
#   sqlite  libsqlite3-sys: SQLite's amalgamation (sqlite3.c, sqlite3.h)
#   zstd    zstd-sys: zstd's lib/common, lib/compress, lib/decompress, zstd.h
#
# Writes to OUT, for each PROGRAM:
#   PROGRAM-O0.bc, PROGRAM-O0.ll   clang -O0 -Xclang -disable-O0-optnone per file, llvm-link'ed
#   PROGRAM-O2.bc, PROGRAM-O2.ll   the same at -O2
#   PROGRAM-native                 a native -O2 executable, the reference output
# Each step is skipped when its output is newer than its inputs (and this
# script); what runs is told on stderr. Needs clang-19, llvm-link-19, llvm-dis-19.
set -euo pipefail

LIBSQLITE3_SYS_VERSION=0.40.0   # bundles SQLite 3.54.1
ZSTD_SYS_VERSION=2.2.0+zstd.1.6.0 # bundles zstd 1.6.0

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script="$here/build.sh"
out=${1:-$here/../../target/corpus}
shift || true
programs=("$@")
[[ ${#programs[@]} -gt 0 ]] || programs=(sqlite zstd)
for program in "${programs[@]}"; do
  case $program in
  sqlite | zstd) ;;
  *)
    echo "corpus: unknown program \`$program\` (sqlite or zstd)" >&2
    exit 2
    ;;
  esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)

say() { echo "corpus: $*" >&2; }

# True when $1 exists and is newer than every other argument.
fresh() {
  local target=$1 input
  shift
  [[ -e $target ]] || return 1
  for input in "$@"; do
    [[ $target -nt $input ]] || return 1
  done
}

run() {
  say "$*"
  "$@"
}

# fetch CRATE VERSION FEATURES FILE: downloads CRATE (with FEATURES, a TOML
# array) through a throwaway project and sets $crate to its folder in cargo's
# registry, which must hold FILE.
fetch() {
  local name=$1 version=$2 features=$3 file=$4 dir
  local project="$out/fetch/$name"
  mkdir -p "$project/src"
  cat >"$project/Cargo.toml" <<EOF
# Throwaway project: only here so that \`cargo fetch\` downloads $name.
[package]
name = "corpus-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$name = { version = "=$version", default-features = false, features = $features }

[workspace]
EOF
  : >"$project/src/lib.rs"
  # --offline: the crate may already be in cargo's cache with no network.
  run cargo fetch --manifest-path "$project/Cargo.toml" ||
    run cargo fetch --offline --manifest-path "$project/Cargo.toml"
  local cargo_home=${CARGO_HOME:-$HOME/.cargo}
  crate=
  for dir in "$cargo_home"/registry/src/*/"$name-$version"; do
    [[ -s $dir/$file ]] && crate=$dir && break
  done
  if [[ -z $crate ]]; then
    say "error: no $name-$version/$file under $cargo_home/registry/src"
    exit 1
  fi
}

# build PROGRAM DEPS -- CFLAGS... -- SOURCES...: the two modules and the native
# executable of PROGRAM from its driver and SOURCES; DEPS is an array name of
# the headers every source includes (an edit rebuilds them all).
build() {
  local program=$1 deps_name=$2
  shift 2
  [[ $1 == -- ]] && shift
  local cflags=()
  while [[ $1 != -- ]]; do
    cflags+=("$1")
    shift
  done
  shift
  local sources=("$here/$program/driver.c" "$@")
  local -n deps=$deps_name
  local opt level c bc module parts
  for opt in O0 O2; do
    level=(-"$opt")
    [[ $opt == O0 ]] && level+=(-Xclang -disable-O0-optnone)
    parts=()
    mkdir -p "$out/obj/$program"
    for c in "${sources[@]}"; do
      bc="$out/obj/$program/$(basename "$c" .c)-$opt.bc"
      parts+=("$bc")
      if fresh "$bc" "$c" "${deps[@]}" "$script"; then
        say "$bc is up to date"
      else
        run clang-19 "${level[@]}" "${cflags[@]}" -c -emit-llvm -o "$bc" "$c"
      fi
    done
    module="$out/$program-$opt.bc"
    if fresh "$module" "${parts[@]}"; then
      say "$module is up to date"
    else
      run llvm-link-19 -o "$module" "${parts[@]}"
    fi
    if fresh "$out/$program-$opt.ll" "$module"; then
      say "$out/$program-$opt.ll is up to date"
    else
      run llvm-dis-19 -o "$out/$program-$opt.ll" "$module"
    fi
  done
  local native="$out/$program-native"
  if fresh "$native" "${sources[@]}" "${deps[@]}" "$script"; then
    say "$native is up to date"
  else
    run clang-19 -O2 "${cflags[@]}" -o "$native" "${sources[@]}" -lm
  fi
}

# --- SQLite ------------------------------------------------------------------
build_sqlite() {
  local src="$out/libsqlite3-sys-$LIBSQLITE3_SYS_VERSION"
  if [[ -s $src/sqlite3.c && -s $src/sqlite3.h ]]; then
    say "sources: $src (cached)"
  else
    fetch libsqlite3-sys "$LIBSQLITE3_SYS_VERSION" '["bundled"]' sqlite3/sqlite3.c
    mkdir -p "$src.tmp"
    run cp "$crate/sqlite3/sqlite3.c" "$crate/sqlite3/sqlite3.h" "$src.tmp/"
    rm -rf "$src"
    mv "$src.tmp" "$src"
  fi
  # Single-threaded, no dlopen, no memory statistics, temporary tables and
  # sorter spills in memory rather than in files.
  local headers=("$src/sqlite3.h")
  build sqlite headers -- -I "$src" -DSQLITE_THREADSAFE=0 -DSQLITE_OMIT_LOAD_EXTENSION \
    -DSQLITE_DEFAULT_MEMSTATUS=0 -DSQLITE_TEMP_STORE=3 -- "$src/sqlite3.c"
}

# --- zstd --------------------------------------------------------------------
build_zstd() {
  local src="$out/zstd-sys-$ZSTD_SYS_VERSION"
  local dir
  if [[ -s $src/lib/zstd.h ]]; then
    say "sources: $src (cached)"
  else
    fetch zstd-sys "$ZSTD_SYS_VERSION" '[]' zstd/lib/zstd.h
    rm -rf "$src.tmp"
    mkdir -p "$src.tmp/lib"
    for dir in common compress decompress; do
      mkdir -p "$src.tmp/lib/$dir"
      run cp "$crate/zstd/lib/$dir/"*.[ch] "$src.tmp/lib/$dir/"
    done
    run cp "$crate/zstd/lib/zstd.h" "$crate/zstd/lib/zstd_errors.h" "$crate/zstd/LICENSE" \
      "$src.tmp/lib/"
    rm -rf "$src"
    mv "$src.tmp" "$src"
  fi
  # As zstd-sys builds it, less its assembly (huf_decompress_amd64.S: no IR)
  # and its thread pool (ZSTD_MULTITHREAD is left undefined): xxhash inlined
  # into its users (XXH_PRIVATE_API, so xxhash.c is not compiled).
  local headers=("$src"/lib/*.h "$src"/lib/common/*.h "$src"/lib/compress/*.h
    "$src"/lib/decompress/*.h)
  local sources=()
  for dir in common compress decompress; do
    for c in "$src/lib/$dir"/*.c; do
      [[ $(basename "$c") == xxhash.c ]] || sources+=("$c")
    done
  done
  build zstd headers -- -I "$src/lib" -I "$src/lib/common" -DXXH_PRIVATE_API \
    -DZSTD_DISABLE_ASM -- "${sources[@]}"
}

for program in "${programs[@]}"; do
  "build_$program"
done
say "done: $out"
