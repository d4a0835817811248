#!/usr/bin/env bash
# Builds the startup corpus: SQLite's amalgamation plus sqlite/driver.c as one
# LLVM IR module, for compile-time and startup experiments.
#
#   experiments/corpus/build.sh [OUT]      OUT defaults to <repo>/target/corpus
#
# Downloads: the crate libsqlite3-sys (version pinned below) and the crates its
# `bundled` feature depends on, with `cargo fetch`, through a throwaway cargo
# project in OUT/fetch. The crate ships SQLite's amalgamation (sqlite3.c,
# sqlite3.h), which is copied to OUT/libsqlite3-sys-VERSION/. The first run
# needs network access to crates.io; later runs reuse the copy and need none.
#
# Writes to OUT:
#   sqlite-O0.bc, sqlite-O0.ll   clang -O0 -Xclang -disable-O0-optnone per file, llvm-link'ed
#   sqlite-O2.bc, sqlite-O2.ll   the same at -O2
#   sqlite-native                a native -O2 executable, the reference output
# Each step is skipped when its output is newer than its inputs (and this
# script); what runs is told on stderr. Needs clang-19, llvm-link-19, llvm-dis-19.
set -euo pipefail

LIBSQLITE3_SYS_VERSION=0.40.0 # bundles SQLite 3.54.1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script="$here/build.sh"
driver="$here/sqlite/driver.c"
out=${1:-$here/../../target/corpus}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Single-threaded, no dlopen, no memory statistics, temporary tables and
# sorter spills in memory rather than in files.
defines=(-DSQLITE_THREADSAFE=0 -DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_DEFAULT_MEMSTATUS=0
  -DSQLITE_TEMP_STORE=3)

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

# --- sources -----------------------------------------------------------------
src="$out/libsqlite3-sys-$LIBSQLITE3_SYS_VERSION"
if [[ -s $src/sqlite3.c && -s $src/sqlite3.h ]]; then
  say "sources: $src (cached)"
else
  fetch="$out/fetch"
  mkdir -p "$fetch/src"
  cat >"$fetch/Cargo.toml" <<EOF
# Throwaway project: only here so that \`cargo fetch\` downloads libsqlite3-sys.
[package]
name = "corpus-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
libsqlite3-sys = { version = "=$LIBSQLITE3_SYS_VERSION", default-features = false, features = ["bundled"] }

[workspace]
EOF
  : >"$fetch/src/lib.rs"
  # --offline: the crate may already be in cargo's cache with no network.
  run cargo fetch --manifest-path "$fetch/Cargo.toml" ||
    run cargo fetch --offline --manifest-path "$fetch/Cargo.toml"
  cargo_home=${CARGO_HOME:-$HOME/.cargo}
  crate=
  for dir in "$cargo_home"/registry/src/*/libsqlite3-sys-"$LIBSQLITE3_SYS_VERSION"; do
    [[ -s $dir/sqlite3/sqlite3.c ]] && crate=$dir && break
  done
  if [[ -z $crate ]]; then
    say "error: no libsqlite3-sys-$LIBSQLITE3_SYS_VERSION/sqlite3/sqlite3.c under $cargo_home/registry/src"
    exit 1
  fi
  mkdir -p "$src.tmp"
  run cp "$crate/sqlite3/sqlite3.c" "$crate/sqlite3/sqlite3.h" "$src.tmp/"
  rm -rf "$src"
  mv "$src.tmp" "$src"
fi

# --- LLVM IR, one module per optimisation level ---------------------------------
cflags=(-I "$src" "${defines[@]}")
for opt in O0 O2; do
  level=(-"$opt")
  [[ $opt == O0 ]] && level+=(-Xclang -disable-O0-optnone)
  parts=()
  for c in "$driver" "$src/sqlite3.c"; do
    bc="$out/obj/$(basename "$c" .c)-$opt.bc"
    parts+=("$bc")
    mkdir -p "$out/obj"
    if fresh "$bc" "$c" "$src/sqlite3.h" "$script"; then
      say "$bc is up to date"
    else
      run clang-19 "${level[@]}" "${cflags[@]}" -c -emit-llvm -o "$bc" "$c"
    fi
  done
  module="$out/sqlite-$opt.bc"
  if fresh "$module" "${parts[@]}"; then
    say "$module is up to date"
  else
    run llvm-link-19 -o "$module" "${parts[@]}"
  fi
  if fresh "$out/sqlite-$opt.ll" "$module"; then
    say "$out/sqlite-$opt.ll is up to date"
  else
    run llvm-dis-19 -o "$out/sqlite-$opt.ll" "$module"
  fi
done

# --- native reference ------------------------------------------------------------
native="$out/sqlite-native"
if fresh "$native" "$driver" "$src/sqlite3.c" "$src/sqlite3.h" "$script"; then
  say "$native is up to date"
else
  run clang-19 -O2 "${cflags[@]}" -o "$native" "$driver" "$src/sqlite3.c" -lm
fi
say "done: $out"
