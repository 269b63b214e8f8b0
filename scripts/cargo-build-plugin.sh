#!/usr/bin/env bash
# Called by plugins/meson.build: builds the cdylib with cargo and copies it to OUTPUT.
# usage: cargo-build-plugin.sh SOURCE_ROOT TARGET_DIR PROFILE(debug|release) OUTPUT
set -euo pipefail
src=$1 target=$2 profile=$3 out=$4
args=(build --locked --lib --manifest-path "$src/Cargo.toml" --target-dir "$target")
[[ $profile == release ]] && args+=(--release)
cargo "${args[@]}"
cp "$target/$profile/libgstordered.so" "$out"
