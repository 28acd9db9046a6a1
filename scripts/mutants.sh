#!/usr/bin/env bash
# Mutation testing of the core files (not run by CI: 742 mutants took 2 hours on 2 cores).
#
#   bash scripts/mutants.sh            # all core files
#   bash scripts/mutants.sh FILE...    # only these files
#   MUTANTS_EXTRA=--iterate bash scripts/mutants.sh   # retest only what the last run missed
#                                                     # (the table then counts only those)
#
# Installs cargo-mutants if it is missing, mutates each file, runs the files-driver tests and the
# conformance suite against every mutant (nextest, with the per-test time limit of
# .config/nextest.toml, so a mutant that makes a test hang costs at most two minutes), and prints
# a score table: mutants caught / (caught + missed) per file. Survivors are listed in
# mutants.out/missed.txt; the README's testing section explains the ones that remain.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! cargo mutants --version >/dev/null 2>&1; then
    cargo install --locked cargo-mutants
fi

FILES=("$@")
if ((${#FILES[@]} == 0)); then
    FILES=(
        driver-files/src/partition.rs
        driver-files/src/consumer.rs
        driver-files/src/producer.rs
        driver-files/src/format.rs
        driver-files/src/acks.rs
        api/src/descriptor.rs
        api/src/thread_pool.rs
    )
fi

args=()
for f in "${FILES[@]}"; do args+=(--file "$f"); done

# Mutants of one file are tested by the crates that exercise it. The timeout is explicit:
# cargo-mutants times its baseline on the mutated crates' tests only (about 8 s here, without
# the conformance suite), so a timeout derived from it (27 s) is too close to a mutant's real
# test run (13-15 s) and would report a slow run on a loaded machine as caught.
cargo mutants "${args[@]}" --test-tool nextest \
    --test-package diaspora-driver-files --test-package diaspora-conformance \
    --test-package diaspora-api --timeout 60 \
    --cargo-test-arg=--profile=mutants ${MUTANTS_EXTRA:-} || true

python3 - <<'PY'
import json, collections
outcomes = json.load(open("mutants.out/outcomes.json"))
per = collections.defaultdict(lambda: collections.Counter())
for o in outcomes["outcomes"]:
    scen = o.get("scenario")
    if not isinstance(scen, dict) or "Mutant" not in scen:
        continue
    f = scen["Mutant"]["file"]
    per[f][o["summary"]] += 1
print(f"{'file':40} {'caught':>7} {'timeout':>8} {'missed':>7} {'unviable':>9} {'score':>6}")
tc = tm = 0
for f in sorted(per):
    c = per[f]
    caught = c["CaughtMutant"] + c["Timeout"]
    missed = c["MissedMutant"]
    tc += caught; tm += missed
    score = 100.0 * caught / max(1, caught + missed)
    print(f"{f:40} {c['CaughtMutant']:>7} {c['Timeout']:>8} {missed:>7} {c['Unviable']:>9} {score:>5.1f}%")
print(f"{'total':40} {'':>7} {'':>8} {tm:>7} {'':>9} {100.0*tc/max(1,tc+tm):>5.1f}%")
PY
