#!/usr/bin/env bash
# Vendor the JavaScript the built book needs, so that no page loads anything from
# another host: require.js, the Jupyter widgets HTML manager and MathJax 3, at the
# exact versions pinned in package.json / package-lock.json.
#
#   npm ci  ->  node_modules/         (also brings playwright-core for the browser test)
#   copy    ->  vendor-js/_vendor/    (html_extra_path in _config.yml; Sphinx copies
#                                      it to _build/html/_vendor/)
#
# Idempotent: `npm ci` runs only when package-lock.json changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
  echo "error: npm is needed to vendor the book's JavaScript (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi

stamp=node_modules/.quantlab-stamp
want=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "==> node_modules is up to date"
else
  echo "==> npm ci (pinned JavaScript for the book and the browser test)"
  # --ignore-scripts: nothing here needs an install script (fonts only ship files).
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

dest=vendor-js/_vendor
rm -rf vendor-js
mkdir -p "$dest/html-manager" "$dest/mathjax"

# require.js: the AMD loader the widget manager expects on the page.
cp node_modules/requirejs/require.js "$dest/require.js"

# The widget manager bundle (with the fonts its CSS refers to), without source maps
# and the unused non-AMD bundles.
hm=node_modules/@jupyter-widgets/html-manager
cp "$hm/dist/embed-amd.js" "$dest/html-manager/"
find "$hm/dist" -maxdepth 1 -type f \( -name '*.woff2' -o -name '*.woff' -o -name '*.ttf' \
  -o -name '*.eot' -o -name '*.svg' \) -exec cp {} "$dest/html-manager/" \;
cp "$hm/LICENSE" "$dest/html-manager/LICENSE" 2>/dev/null || true
mkdir -p "$dest/widgets"   # local stand-in for the widget CDN (see _config.yml)
# Our shim, loaded before the manager: asset path and MathJax 3 (see the file).
cp _ext/widgets-shim.js "$dest/widgets-shim.js"

# MathJax 3: the combined component plus everything it loads on demand
# (TeX extensions, fonts, menu, accessibility).
cp -r node_modules/mathjax/es5 "$dest/mathjax/es5"
cp node_modules/mathjax/LICENSE "$dest/mathjax/LICENSE"

echo "==> vendored JavaScript in $dest ($(du -sh "$dest" | cut -f1))"
