#!/usr/bin/env bash
# Screenshot a run's report.html with headless Chromium, to check what a reader will see.
#   scripts/screenshot_report.sh RUN_DIR OUT.png [WIDTHxHEIGHT]     (default 1400x4000)
# RUN_DIR may also be an .html file (e.g. a compare.html). Needs chromium (Debian: apt-get install -y chromium).
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: $0 RUN_DIR|REPORT.html OUT.png [WIDTHxHEIGHT]" >&2
    exit 2
fi
target=$1
out=$2
size=${3:-1400x4000}
if [[ -d $target ]]; then
    html=$target/report.html
else
    html=$target
fi
if [[ ! -f $html ]]; then
    echo "error: $html does not exist; render it first with \`protosphere report $target\`." >&2
    exit 2
fi
browser=""
for candidate in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$candidate" >/dev/null 2>&1; then
        browser=$candidate
        break
    fi
done
if [[ -z $browser ]]; then
    echo "error: no Chromium found; install it (Debian/Ubuntu: apt-get install -y chromium) and rerun." >&2
    exit 2
fi
html_abs=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
mkdir -p "$(dirname "$out")"
out_abs=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
    --window-size="${size/x/,}" --screenshot="$out_abs" "file://$html_abs" >/dev/null 2>&1 || true
if [[ ! -s $out_abs ]]; then
    echo "error: $browser wrote no screenshot to $out_abs; run it by hand to see why." >&2
    exit 1
fi
echo "$out_abs"
