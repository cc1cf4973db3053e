#!/usr/bin/env bash
# The layering check (docs/architecture.md, "Layering"): the protocol folders of the library do no I/O, and the
# library has one datagram type and one retransmission schedule.
#
# 1. src/stun src/nat src/punch src/server src/portmap (and src/signal src/relay src/tunnel once they exist) must
#    not name sockets (UdpSocket, TcpStream, TcpListener), files (std::fs), threads (std::thread), tokio, or the
#    resolver (to_socket_addrs, lookup_host). Test code is exempt: `#[cfg(test)]` items and modules (inline or
#    declared `#[cfg(test)] mod name;`), files named tests.rs, anything under a tests/ folder, and src/sim.
#    Comments are not code and are not checked.
# 2. Exactly one `pub struct Transmit` (src/net) and one `struct Retransmit` in src/.
#
# Prints each offence as FILE:LINE: what: the line, and exits 1 if there is any.
# Usage: scripts/check-layering.sh [--report-only]     (--report-only: print, but exit 0)
# Needs only bash, grep, sed and awk (mawk is enough), so it runs on a bare Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

REPORT_ONLY=0
case "${1:-}" in
  --report-only) REPORT_ONLY=1 ;;
  "") ;;
  -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
  *) echo "check-layering: unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

DIRS=()
for d in src/stun src/nat src/punch src/server src/portmap src/signal src/relay src/tunnel; do
  [ -d "$d" ] && DIRS+=("$d")
done

# Every .rs file of the protocol folders, minus test files and the simulator.
mapfile -t FILES < <(find "${DIRS[@]}" -name '*.rs' -not -name tests.rs -not -path '*/tests/*' -not -path 'src/sim/*' | sort)

# Files that are test-only modules: `#[cfg(test)]` followed by `mod name;` in FILE makes name.rs, name/mod.rs and
# everything under name/ (next to FILE if FILE is mod.rs or lib.rs, else under FILE's stem) test code.
mapfile -t TEST_MODS < <(awk '
  FNR == 1 { pending = 0 }
  /^[[:space:]]*#\[cfg\((all\()?test/ { pending = 1; next }
  pending && /^[[:space:]]*#\[/ { next }
  pending {
    pending = 0
    line = $0
    if (line ~ /^[[:space:]]*(pub(\([a-z]+\))?[[:space:]]+)?mod[[:space:]]+[A-Za-z_0-9]+[[:space:]]*;/) {
      sub(/^[[:space:]]*(pub(\([a-z]+\))?[[:space:]]+)?mod[[:space:]]+/, "", line)
      sub(/[[:space:]]*;.*/, "", line)
      dir = FILENAME; sub(/\/[^\/]*$/, "", dir)
      base = FILENAME; sub(/^.*\//, "", base)
      if (base != "mod.rs" && base != "lib.rs") { stem = base; sub(/\.rs$/, "", stem); dir = dir "/" stem }
      print dir "/" line
    }
  }' "${FILES[@]}")

is_test_module() {
  local f=$1 m
  for m in "${TEST_MODS[@]}"; do
    [ "$f" = "$m.rs" ] && return 0
    case "$f" in "$m"/*) return 0 ;; esac
  done
  return 1
}

CHECKED=()
for f in "${FILES[@]}"; do
  is_test_module "$f" || CHECKED+=("$f")
done

OFFENCES=0
report() {
  echo "$1"
  OFFENCES=$((OFFENCES + 1))
}

# Offending names in code outside test items. Comments and string contents are blanked before matching (a
# doc comment may well say "the driver owns the UdpSocket"); braces in test items are counted on the same
# blanked text to find where the item ends.
if [ ${#CHECKED[@]} -gt 0 ]; then
  while IFS= read -r line; do report "$line"; done < <(awk '
    FNR == 1 { pending = 0; depth = 0; skipping = 0 }
    {
      code = $0
      gsub(/\\\\/, "", code)                       # escaped backslashes, so \" below is an escaped quote
      gsub(/\\"/, "", code)
      gsub(/"[^"]*"/, "\"\"", code)               # string contents
      gsub(/'"'"'[{}]'"'"'/, "", code)              # brace char literals
      sub(/\/\/.*$/, "", code)                     # line comments, doc comments
      opens = gsub(/\{/, "{", code); closes = gsub(/\}/, "}", code)
      if (skipping) {
        depth += opens - closes
        if (depth <= 0) skipping = 0
        next
      }
      if (code ~ /^[[:space:]]*#\[cfg\((all\()?test/) { pending = 1; next }
      if (pending) {
        if (code ~ /^[[:space:]]*(#\[|$)/) next  # further attributes, blank lines
        pending = 0
        if (opens > closes) { skipping = 1; depth = opens - closes }
        next                                     # a one-line test item (`mod tests;`, `use …;`)
      }
      n = split("UdpSocket TcpStream TcpListener std::fs std::thread tokio to_socket_addrs lookup_host", pats, " ")
      for (i = 1; i <= n; i++) {
        p = pats[i]
        if (code ~ ("(^|[^A-Za-z0-9_])" p "([^A-Za-z0-9_]|$)")) {
          text = $0; sub(/^[[:space:]]+/, "", text)
          printf "%s:%d: %s: %s\n", FILENAME, FNR, pats[i], text
        }
      }
      # `use std::{fs, thread, net::UdpSocket}` on one line: UdpSocket is caught above, fs and thread here.
      if (code ~ /std::\{[^}]*(^|[^A-Za-z0-9_:])(fs|thread)([^A-Za-z0-9_]|$)/) {
        text = $0; sub(/^[[:space:]]+/, "", text)
        printf "%s:%d: std::{fs,thread}: %s\n", FILENAME, FNR, text
      }
    }' "${CHECKED[@]}")
fi

# One datagram type and one retransmission schedule in the library.
count_decl() {
  local pattern=$1 what=$2 hits
  hits=$(grep -rnE "$pattern" src --include='*.rs' || true)
  local n
  n=$(printf '%s' "$hits" | grep -c . || true)
  if [ "$n" -ne 1 ]; then
    report "src/: $n declarations of $what, expected exactly one (docs/architecture.md, \"Engines\"):"
    [ -z "$hits" ] || printf '%s\n' "$hits" | sed 's/^/    /'
  fi
}
count_decl '^[[:space:]]*pub struct Transmit\b' '`pub struct Transmit`'
count_decl '^[[:space:]]*(pub(\([a-z:]+\))?[[:space:]]+)?struct Retransmit\b' '`struct Retransmit`'

if [ "$OFFENCES" -eq 0 ]; then
  echo "check-layering: ${#CHECKED[@]} files in ${DIRS[*]} do no I/O; one Transmit, one Retransmit"
  exit 0
fi
echo "check-layering: $OFFENCES offence(s) (docs/architecture.md, \"Layering\")" >&2
[ "$REPORT_ONLY" -eq 1 ] && exit 0
exit 1
