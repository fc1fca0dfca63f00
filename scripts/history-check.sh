#!/usr/bin/env bash
# The long runs of the history checks (the suite runs a short version of each):
#   - the concurrent power-loss exploration of the engine: N seeds per fsync
#     policy, ~330 crash states each, every one checked against the history
#     of concurrent operations (ConcurrentHistoryTests);
#   - the single-writer power-loss exploration (PowerLossTests);
#   - the HTTP history check: rounds of 16 clients against a live logkvd
#     killed with SIGKILL at a random moment, under both policies
#     (LiveHistoryTests).
#
# usage: scripts/history-check.sh [seeds] [http-rounds]     (defaults 40 and 20)
# A failing seed replays with LOGKV_HISTORY_SEED=N (the workload is chosen by
# seed; thread interleavings are the machine's).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="${1:-40}"
rounds="${2:-20}"
swift build --build-tests
start=$(date +%s)
LOGKV_HISTORY_SEEDS="$seeds" swift test --skip-build --filter ConcurrentHistoryTests 2>&1 \
  | grep -E "concurrent history|✘|Test run"
LOGKV_POWERLOSS_SEEDS="$seeds" swift test --skip-build --filter PowerLossTests 2>&1 \
  | grep -E "^power-loss: .* seed $((seeds - 1)):|✘|Test run"
LOGKV_HTTP_HISTORY_ROUNDS="$rounds" swift test --skip-build --filter LiveHistoryTests 2>&1 \
  | grep -E "http history|✘|Test run"
echo "history checks done in $(( $(date +%s) - start )) s"
