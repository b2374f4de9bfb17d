#!/bin/sh
# Run once while the Go base image is made: indexes the Go module sources
# Debian ships (/usr/share/gocode/src) so that builds resolve them with no
# module proxy. Writes /usr/share/berth/go-replaces.txt, one "MODULE DIR" line for:
#  - every go.mod under /usr/share/gocode/src (module path read from its module line),
#  - repo-root dirs lacking go.mod (pre-modules Debian packages) get a synthesized go.mod,
#  - every module *required* by those go.mods but not shipped gets an empty stub module
#    (MVS needs a go.mod for every module in the graph even if no package from it is built).
set -e
SRC=/usr/share/gocode/src
STUBS=/usr/share/berth/gostubs
mkdir -p /usr/share/berth $STUBS
for d in $(find $SRC -mindepth 3 -maxdepth 3 -type d -not -path "$SRC/gopkg.in/*") $(find $SRC/gopkg.in -mindepth 1 -maxdepth 2 -type d -name '*.v[0-9]*' 2>/dev/null); do
  [ -f "$d/go.mod" ] && continue
  p=$(dirname "$d"); skip=; while [ "$p" != "$SRC" ]; do [ -f "$p/go.mod" ] && skip=1; p=$(dirname "$p"); done
  [ -n "$skip" ] && continue
  printf 'module %s\n' "${d#$SRC/}" > "$d/go.mod"
done
find $SRC -name go.mod -not -path '*/testdata/*' -not -path '*/vendor/*' > /tmp/gomods.txt
while read f; do
  m=$(awk '/^module[ \t]/{gsub(/"/,"",$2); print $2; exit}' "$f")
  [ -n "$m" ] && echo "$m $(dirname "$f")"
done < /tmp/gomods.txt | sort -u > /tmp/real.txt
# all required module paths
xargs cat < /tmp/gomods.txt | awk '
  /^require[ \t]*\(/ {inreq=1; next}
  inreq && /^\)/ {inreq=0; next}
  inreq && NF>=2 && $1 !~ /^\/\// {print $1; next}
  /^require[ \t]+[^(]/ {print $2}' | tr -d '"' | sort -u > /tmp/required.txt
cut -d' ' -f1 /tmp/real.txt > /tmp/realmods.txt
comm -23 /tmp/required.txt /tmp/realmods.txt | while read m; do
  mkdir -p "$STUBS/$m"; printf 'module %s\n' "$m" > "$STUBS/$m/go.mod"; echo "$m $STUBS/$m"
done > /tmp/stubs.txt
cat /tmp/real.txt /tmp/stubs.txt | sort -u > /usr/share/berth/go-replaces.txt
echo "modules: $(wc -l < /tmp/real.txt) real, $(wc -l < /tmp/stubs.txt) stubs"
