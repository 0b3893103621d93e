#!/bin/sh
# Installs the pure-JavaScript HuggingFace tokenizer (@huggingface/tokenizers,
# pinned by package-lock.json) into tests/tokenizer/node_modules, in place,
# unless it is already there. No install scripts run and nothing else is
# downloaded. Exits 77 (ctest skip) when npm or the registry is unavailable.
cd "$(dirname "$0")" || exit 1
want=$(sed -n 's/.*"@huggingface\/tokenizers": "\(.*\)".*/\1/p' package.json)
have=$(sed -n 's/^ *"version": "\(.*\)".*/\1/p' node_modules/@huggingface/tokenizers/package.json 2>/dev/null | head -n 1)
if [ -n "$want" ] && [ "$want" = "$have" ]; then
    echo "@huggingface/tokenizers $have already installed"
    exit 0
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "SKIP: node/npm not found; the HuggingFace reference tokenizer cannot be installed"
    exit 77
fi
if ! timeout 600 npm ci --ignore-scripts --no-audit --no-fund; then
    echo "SKIP: 'npm ci --ignore-scripts' failed (npm registry unreachable?)"
    exit 77
fi
echo "installed @huggingface/tokenizers $want"
