#!/usr/bin/env bash
# Installs the language toolchains the sandboxes run, from Debian's
# packages, when they are missing: python3, node (+ typescript), g++,
# a JDK, Go and Rust. Safe to run again; installs only what is absent.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
[ -x /usr/bin/python3 ] || missing+=(python3)
[ -x /usr/bin/node ] || missing+=(nodejs)
[ -x /usr/bin/tsc ] || missing+=(node-typescript)
[ -x /usr/bin/g++ ] || missing+=(g++)
[ -x /usr/bin/javac ] || missing+=(openjdk-17-jdk-headless)
[ -x /usr/bin/go ] || missing+=(golang-go)
[ -x /usr/bin/rustc ] || missing+=(rustc)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing sandbox toolchains from Debian's packages: ${missing[*]}" >&2
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
