#!/usr/bin/env bash
# Seeds the fuzz corpora from the committed fixtures: the .llvm_stackmaps and .eh_frame sections
# of every object (the eh_frame seeds get an 8-byte address prefix of 0, as the target expects),
# and the objects themselves. Run from anywhere: stackmaps/fuzz/seed.sh
set -euo pipefail
cd "$(dirname "$0")"
OBJCOPY=${OBJCOPY:-llvm-objcopy-19}
mkdir -p corpus/parse corpus/eh_frame corpus/object
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for obj in ../tests/fixtures/*.o; do
  name=$(basename "$obj" .o)
  "$OBJCOPY" --dump-section .llvm_stackmaps="corpus/parse/$name" "$obj" "$tmp/out.o"
  "$OBJCOPY" --dump-section .eh_frame="$tmp/eh" "$obj" "$tmp/out.o"
  { head -c 8 /dev/zero; cat "$tmp/eh"; } > "corpus/eh_frame/$name"
  cp "$obj" "corpus/object/$name.o"
done
echo "seeded $(ls corpus/parse | wc -l) stack maps, $(ls corpus/eh_frame | wc -l) .eh_frame sections, $(ls corpus/object | wc -l) objects"
