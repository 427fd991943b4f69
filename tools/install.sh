#!/usr/bin/env bash
# Builds the pinned nats-server and nats CLI into .tools/bin with `go install`, from the Go modules in
# tools/*/ (go.mod + go.sum pin every dependency). Skips a binary already built at its pinned version.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.tools/bin"
mkdir -p "$bin"

pinned() { # <tool dir> <module path>: the version go.mod pins
  (cd "$root/tools/$1" && go list -m -f '{{.Version}}' "$2")
}

install_one() { # <tool dir> <module path> <package> <binary> <version command>
  local dir=$1 module=$2 package=$3 binary=$4 want have
  want=$(pinned "$dir" "$module")
  have=$("$bin/$binary" --version 2>/dev/null | grep -o 'v[0-9][0-9.]*' | head -1 || true)
  if [ "$have" = "$want" ]; then
    echo "✓ $binary $have (already installed)"
    return
  fi
  echo "… building $binary $want with go install (first time takes a minute)"
  (cd "$root/tools/$dir" && GOBIN="$bin" GOFLAGS=-mod=mod go install "$package")
  have=$("$bin/$binary" --version | grep -o 'v[0-9][0-9.]*' | head -1)
  [ "$have" = "$want" ] || { echo "✗ $binary reports $have, expected $want" >&2; exit 1; }
  echo "✓ $binary $have"
}

command -v go >/dev/null || { echo "✗ go is not on PATH: make tools builds nats-server and nats with Go" >&2; exit 1; }
install_one nats-server github.com/nats-io/nats-server/v2 github.com/nats-io/nats-server/v2 nats-server
install_one natscli github.com/nats-io/natscli github.com/nats-io/natscli/nats nats
