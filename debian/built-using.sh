#!/bin/sh
# Prints the Built-Using field: the source packages whose files the utility
# VM's boot files carry (the kernel and its modules, busybox, crun and the
# libraries crun loads). Usage: built-using.sh KERNEL_IMAGE
set -e
files="$1 /bin/busybox $(command -v crun) $(ldd "$(command -v crun)" | awk '/=> \//{print $3}')"
for f in $files; do
  dpkg-query -S "*/${f##*/}" 2>/dev/null | grep -F ": " | grep -v "dbg" | head -1 | cut -d: -f1
done | sort -u | while read -r pkg; do
  dpkg-query -W -f='${source:Package} (= ${source:Version})\n' "$pkg"
done | sort -u | paste -sd, | sed 's/,/, /g'
