#!/usr/bin/env bash
# The fuzz campaign (issue 16, RELIABILITY.md): libFuzzer through cargo-fuzz on the nightly
# toolchain, one target per parser (fuzz/fuzz_targets, entry points in tools/fuzz-entry).
#
#   tools/fuzz.sh seed                 write the seed corpus (fixture files, pickles, configs...) into fuzz/corpus/
#   tools/fuzz.sh run [TARGET...]      run each target (all by default) for $FUZZ_RUNS executions
#   tools/fuzz.sh cmin [TARGET...]     minimise each committed corpus in place
#   tools/fuzz.sh all                  seed, run, cmin
#
# Environment: FUZZ_RUNS (default 1000000), FUZZ_RSS_MB (2048), FUZZ_TIMEOUT (10 s per input),
# FUZZ_JOBS (parallel targets, default 1). Each run's log is fuzz/logs/<target>.log; its last
# line ("Done N runs in S second(s)") is what RELIABILITY.md records. A crash leaves its input in
# fuzz/artifacts/<target>/: make it a regression test and add it to fuzz/corpus/<target>/.
#
# The default test suite needs none of this: it replays fuzz/corpus/ on stable Rust
# (tools/fuzz-entry/tests/replay.rs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

runs="${FUZZ_RUNS:-1000000}"
rss="${FUZZ_RSS_MB:-2048}"
timeout="${FUZZ_TIMEOUT:-10}"
jobs="${FUZZ_JOBS:-1}"
targets=(safetensors torch_zip pickle ldm_checkpoint lora motion_module prompt_config npy manifest tokenizer)

need_cargo_fuzz() {
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
    cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
}

seed() {
    cargo run --quiet -p animatediff-fuzz-entry --bin fuzz-seeds -- fuzz/corpus
}

# Inputs a campaign may grow to (libFuzzer's -max_len), by target: where the small seeds carry the
# structure, longer inputs only slow each execution down (a whole-model seed longer than this is
# read truncated). The model-level targets keep their whole-model seeds (the default: the
# largest seed).
max_len() {
    case "$1" in
        safetensors|torch_zip|pickle|lora) echo "-max_len=16384" ;;
        prompt_config|npy|manifest|tokenizer) echo "-max_len=65536" ;;
        *) echo "" ;;
    esac
}

run_one() {
    local t="$1"
    mkdir -p fuzz/logs "fuzz/corpus/$t"
    echo "fuzz: $t ($runs runs)"
    # --debug-assertions: integer overflow panics instead of wrapping, so a wrapped size is found.
    # --sanitizer none: the parsers are safe Rust (ASan would find little and slow the build and
    # every run several-fold); a huge allocation still ends the run (abort or -rss_limit_mb).
    cargo +nightly fuzz run --sanitizer none --debug-assertions "$t" "fuzz/corpus/$t" -- \
        -runs="$runs" -rss_limit_mb="$rss" -malloc_limit_mb="$rss" -timeout="$timeout" \
        $(max_len "$t") -print_final_stats=1 >"fuzz/logs/$t.log" 2>&1 \
        && tail -n 40 "fuzz/logs/$t.log" | grep -E '^(Done|stat::number_of_executed_units)' | sed "s/^/fuzz: $t: /" \
        || { echo "fuzz: $t FAILED, see fuzz/logs/$t.log and fuzz/artifacts/$t/" >&2; return 1; }
}

cmin_one() {
    local t="$1"
    cargo +nightly fuzz cmin --sanitizer none --debug-assertions "$t" "fuzz/corpus/$t" -- -rss_limit_mb="$rss" -timeout="$timeout" >"fuzz/logs/$t.cmin.log" 2>&1
    echo "fuzz: $t corpus: $(ls "fuzz/corpus/$t" | wc -l) files, $(du -sh "fuzz/corpus/$t" | cut -f1)"
}

for_targets() {
    local verb="$1"; shift
    local list=("$@")
    [[ ${#list[@]} -gt 0 ]] || list=("${targets[@]}")
    local failed=0
    if [[ "$jobs" -gt 1 ]]; then
        printf '%s\n' "${list[@]}" | FUZZ_JOBS=1 xargs -P "$jobs" -I{} bash "$0" "$verb" {} || failed=1
    else
        for t in "${list[@]}"; do "${verb}_one" "$t" || failed=1; done
    fi
    return $failed
}

cmd="${1:-all}"; shift || true
case "$cmd" in
    seed) seed ;;
    run) need_cargo_fuzz; for_targets run "$@" ;;
    cmin) need_cargo_fuzz; for_targets cmin "$@" ;;
    all) need_cargo_fuzz; seed; for_targets run; for_targets cmin ;;
    *) echo "usage: tools/fuzz.sh seed|run|cmin|all [TARGET...]" >&2; exit 2 ;;
esac
