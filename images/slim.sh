#!/bin/sh
# slim.sh OUT PATH...: copy each PATH (file, directory, or symlink chain) into OUT, with the shared
# libraries its ELF files load (ldd), at their canonical paths. The image is then built FROM scratch
# with OUT: only the tools a pod runs, not a distribution. Paths are canonicalised (usrmerge:
# /lib -> /usr/lib), and the top-level usrmerge links are kept so either spelling resolves.
set -eu
out=$1; shift
mkdir -p "$out"
for l in /bin /sbin /lib /lib64; do [ -L "$l" ] && cp -P "$l" "$out/"; done

copy_one() {  # a path and, for a symlink, every link of its chain down to the file
  p=$1
  while [ -L "$p" ]; do
    d=$(realpath "$(dirname "$p")")
    mkdir -p "$out$d"; cp -P "$p" "$out$d/"
    t=$(readlink "$p"); case $t in /*) p=$t ;; *) p=$d/$t ;; esac
  done
  p=$(realpath "$p")
  mkdir -p "$out$(dirname "$p")"; cp -a "$p" "$out$(dirname "$p")/"
  echo "$p" >> "$out.files"
}

: > "$out.files"
for p in "$@"; do
  if [ -d "$p" ] && [ ! -L "$p" ]; then
    find "$p" \( -type f -o -type l \) | while read -r f; do copy_one "$f"; done
  else
    copy_one "$p"
  fi
done
# Shared libraries of every ELF file copied (plugins such as xtables' included), and theirs.
sort -u "$out.files" | while read -r f; do
  ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' || true
done | sort -u | while read -r lib; do copy_one "$lib"; done
rm -f "$out.files"
