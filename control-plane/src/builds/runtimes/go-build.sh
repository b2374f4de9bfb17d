#!/bin/sh
# Builds a Go main package with no module proxy: every module that the base
# image ships (indexed in /usr/share/berth/go-replaces.txt) is pointed at its
# sources with a replace directive, then `go build`.
set -e
src="$1"
out="$2"
cd "$src"
[ -f go.mod ] || go mod init app
args=
while read -r module dir; do
  grep -q "^replace[[:space:]]*$module[[:space:]]" go.mod && continue
  args="$args -replace=$module=$dir"
done < /usr/share/berth/go-replaces.txt
# shellcheck disable=SC2086
[ -z "$args" ] || go mod edit $args
go build -trimpath -o "$out" .
