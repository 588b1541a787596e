#!/usr/bin/env bash
# Installs the pinned tools our users check us with into .tools/bin of this checkout (source it,
# or run it; it prints the folder): ghz (load), grpcurl (exploration, error details by reflection),
# buf (lint and breaking-change checks of proto/). Go builds them from the Go module proxy, so a
# fresh machine needs only Go. Already-installed pinned versions are kept.
set -euo pipefail
GHZ_VERSION=v0.121.0
GRPCURL_VERSION=v1.9.4
BUF_VERSION=v1.75.0

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$root/.tools/bin"
mkdir -p "$bin"
command -v go >/dev/null || { echo "tools.sh: Go is needed (go install builds ghz, grpcurl and buf)" >&2; exit 1; }

# install NAME VERSION PACKAGE: go install PACKAGE@VERSION unless .tools/bin/NAME.version says so.
install() {
  if [ -x "$bin/$1" ] && [ "$(cat "$bin/$1.version" 2>/dev/null)" = "$2" ]; then return 0; fi
  echo "installing $1 $2" >&2
  GOBIN="$bin" CGO_ENABLED=0 go install "$3@$2"
  echo "$2" > "$bin/$1.version"
}
install ghz "$GHZ_VERSION" github.com/bojand/ghz/cmd/ghz
install grpcurl "$GRPCURL_VERSION" github.com/fullstorydev/grpcurl/cmd/grpcurl
install buf "$BUF_VERSION" github.com/bufbuild/buf/cmd/buf
echo "$bin"
