#!/usr/bin/env bash
# Seeds each fuzz target's corpus from the project's tests and example files:
#   webhook  every envelope fixture of src/ingress/envelope_tests.rs (the test writes them)
#   config   gateway.yaml, examples/*.yaml and the README's YAML examples
#   reply    the string literals of src/reply/tests.rs
#   optout   the string literals of src/policy/optout.rs and the default keyword lists
set -euo pipefail
cd "$(dirname "$0")"
root=..
for t in webhook config reply optout; do mkdir -p "corpus/$t"; done

WA_GATEWAY_FUZZ_SEEDS="$PWD/corpus/webhook" \
    cargo test --manifest-path "$root/Cargo.toml" --lib -q fixtures_are_the_webhook_fuzz_seeds >/dev/null

for f in "$root/gateway.yaml" "$root"/examples/*.yaml; do
    cp "$f" "corpus/config/$(basename "$f")"
done
# The README's YAML examples, one seed each (fragments too: they reach other parser paths).
python3 - "$root/README.md" corpus/config <<'PY'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", text, re.S)):
    open(f"{sys.argv[2]}/readme-{i:02}.yaml", "w", encoding="utf-8").write(block)
PY

# Rust string literals ("…" with escapes) of a file, one seed each.
literals() {
    python3 - "$1" "$2" <<'PY'
import ast, hashlib, os, re, sys
src, out = sys.argv[1], sys.argv[2]
text = open(src, encoding="utf-8").read()
for m in re.finditer(r'"(?:[^"\\\n]|\\.)*"', text):
    lit = m.group(0)
    # Rust's \u{…} escapes become Python's.
    lit = re.sub(r'\\u\{([0-9a-fA-F]+)\}', lambda g: "\\U%08x" % int(g.group(1), 16), lit)
    try:
        value = ast.literal_eval(lit)
    except Exception:
        continue
    if not value:
        continue
    data = value.encode("utf-8")
    name = hashlib.sha1(data).hexdigest()[:16]
    open(os.path.join(out, name), "wb").write(data)
PY
}
literals "$root/src/reply/tests.rs" corpus/reply
literals "$root/src/reply/split.rs" corpus/reply
literals "$root/src/policy/optout.rs" corpus/optout
literals "$root/src/config/policy.rs" corpus/optout
for t in webhook config reply optout; do
    echo "$t: $(ls "corpus/$t" | wc -l) seeds"
done
