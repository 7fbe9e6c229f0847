#!/usr/bin/env bash
# Eval loss of a char-GPT DiLoCo job with 25 % attackers (1 of 4 peers runs tributary_adversary),
# against the clean run: plain mean, a robust aggregator (trimmed mean over the butterfly), the
# verifier (every step challenged; async, and with --verify-before-commit), and the async
# verifier with the trimmed mean.
#   benchmarks/verifier/attack_eval.sh BUILD_DIR ATTACK [ROUNDS]
# Prints one markdown row per configuration. Real processes on loopback; minutes on 2 cores.
# The attacks on the sent Δ (stale, copy, send_scaled, manifest_lie, alie, ipm, send_nan,
# send_inf, send_garbage) and on the returned aggregate (owner_scale) act only in a verifying
# DiLoCo job (the hooks sit in the binding), so for them the two no-verifier rows are skipped:
# the attacker would behave honestly there.
# TRIBUTARY_KEEP_LOGS=1 keeps each configuration's logs (their directory goes to stderr).
set -euo pipefail
build=${1:?build dir}; attack=${2:?attack}; rounds=${3:-12}
bin=$build/launcher/tributary; adv=$build/tests/adversary/tributary_adversary
data=${TRIBUTARY_DATA_DIR:-data}/moby-dick
model=(--n-layer 1 --n-head 2 --d-model 64 --context 32 --batch-size 8 --inner-lr 0.01)
job=(--mode diloco --peers 4 --min-peers 3 --gather-ms 5000 --rounds "$rounds" --inner-steps 8
     --round-timeout-ms 30000)

run() {  # name, coordinator args..., -- , whether an attacker joins (0/1)
  local name=$1; shift; local with_attacker=$1; shift
  local dir; dir=$(mktemp -d /tmp/trib-attack-eval-XXXX)
  "$bin" coordinator --data "$data" --port-file "$dir/port" "${model[@]}" "${job[@]}" "$@" \
      > "$dir/coordinator.log" 2>&1 &
  local coord=$!
  for _ in $(seq 200); do [[ -s $dir/port ]] && break; sleep 0.1; done
  sleep 0.2
  read -r port jobid key < "$dir/port"
  local honest=$((with_attacker ? 3 : 4))
  for i in $(seq 1 "$honest"); do
    OPENBLAS_NUM_THREADS=1 "$bin" peer --coordinator 127.0.0.1:"$port" --job "$jobid" --coordinator-key "$key" \
        --name "p$i" --data "$data" > "$dir/p$i.log" 2>&1 &
  done
  if ((with_attacker)); then
    OPENBLAS_NUM_THREADS=1 "$adv" --coordinator 127.0.0.1:"$port" --job "$jobid" --coordinator-key "$key" \
        --name mallory --data "$data" --attack "$attack" > "$dir/mallory.log" 2>&1 &
  fi
  wait "$coord" || true
  local eval; eval=$(grep -o 'eval loss [0-9.]*' "$dir/coordinator.log" | tail -1 | awk '{print $3}')
  local banned; banned=$(grep -c 'banned:' "$dir/coordinator.log" || true)
  local two; two=$(grep -c 'complete: 3 peers' "$dir/coordinator.log" || true)
  printf '| %s | %s | %s | %s | %s |\n' "$name" "$attack" "${eval:-?}" "$banned" "$two"
  sleep 1
  if [[ ${TRIBUTARY_KEEP_LOGS:-0} == 1 ]]; then echo "logs of '$name': $dir" >&2; else rm -rf "$dir"; fi
}

echo "| configuration | attack | final eval loss | bans | rounds without the attacker |"
echo "|---|---|---:|---:|---:|"
run "clean (4 honest, mean)" 0
case $attack in
  stale|copy|send_scaled|manifest_lie|alie|ipm|send_nan|send_inf|send_garbage|owner_scale) ;;
  *) run "mean, no verifier" 1
     run "trimmed_mean:1, no verifier" 1 --aggregator trimmed_mean:1 ;;
esac
run "mean, verifier (async)" 1 --verify-samples 8
# The async verifier bans after 2-3 rounds have committed; robust aggregation bounds those rounds.
run "trimmed_mean:1, verifier (async)" 1 --aggregator trimmed_mean:1 --verify-samples 8
run "mean, verifier --verify-before-commit" 1 --verify-samples 8 --verify-before-commit
