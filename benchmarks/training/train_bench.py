#!/usr/bin/env python3
"""Training benchmark (c): bytes on the wire and eval loss at equal tokens, loopback.

Runs `tributary demo --no-reference` once per system (same model, data, seed, peers and token
budget: every system trains rounds × inner_steps steps per peer), reads each run's
summary.json, and prints a Markdown table; the JSON goes to --out. A system is

    ddp | diloco | diloco-async            fp32 (pipelined ring)
    <mode>+<codec>                         e.g. diloco+int8, diloco+topk:0.01 (butterfly,
                                           error feedback), diloco-async+int4
    <system>@key=value[;key=value]         extra job keys, e.g. diloco@outer_lr=1.0

Bytes are what the peers' collectives sent (all peers together, payload + tensor headers), as the
coordinator's round reports add them up. Ratios are against the first ddp system; loss
differences against the first fp32 diloco system with the same H.

    benchmarks/training/train_bench.py --binary build-models/launcher/tributary \
        --rounds 8 --inner-steps 25 --systems ddp,diloco,diloco+int8 --parallel 2
"""
import argparse
import concurrent.futures as futures
import json
import os
import subprocess
import sys
import time

DEFAULT_SYSTEMS = [
    "ddp", "diloco", "diloco+fp16", "diloco+bf16", "diloco+int8", "diloco+int4",
    "diloco+topk:0.01", "diloco+powersgd:4", "diloco+dct-topk:0.02", "diloco-async",
]


def parse_system(name):
    base, _, extra = name.partition("@")
    mode, _, codec = base.partition("+")
    if mode not in ("ddp", "diloco", "diloco-async"):
        raise SystemExit(f"unknown mode in system '{name}'")
    keys = {}
    for item in filter(None, extra.split(";")):
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"system '{name}': extra job keys are key=value")
        keys[k] = v
    return mode, codec or "fp32", keys


def toml_value(v):
    try:
        float(v)
        return v
    except ValueError:
        return json.dumps(v)


def run_one(args, name, run_root):
    mode, codec, keys = parse_system(name)
    run_dir = os.path.join(run_root, name.replace("/", "_").replace(":", "_").replace("@", "_"))
    os.makedirs(run_dir, exist_ok=True)
    argv = [args.binary, "demo", "--no-reference", "--run-dir", run_dir, "--mode", mode,
            "--rounds", str(args.rounds), "--inner-steps", str(args.inner_steps),
            "--peers", str(args.peers), "--seed", str(args.seed),
            "--round-timeout-ms", str(args.round_timeout_ms),
            "--liveness-timeout-ms", str(args.liveness_timeout_ms)]
    if codec != "fp32":
        argv += ["--codec", codec]
    if keys:
        job_file = os.path.join(run_dir, "extra.toml")
        with open(job_file, "w") as f:
            for k, v in keys.items():
                f.write(f"{k} = {toml_value(v)}\n")
        argv += ["--job-file", job_file]
    start = time.time()
    with open(os.path.join(run_dir, "demo.log"), "w") as log:
        code = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT)
    row = {"system": name, "mode": mode, "codec": codec, "job_keys": keys, "run_dir": run_dir,
           "command": " ".join(argv), "exit_code": code, "seconds": round(time.time() - start, 1)}
    summary_path = os.path.join(run_dir, "summary.json")
    if code == 0 and os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)["tributary"]
        row.update(eval_loss=summary["eval_loss"], tokens=summary["tokens"],
                   bytes=summary["bytes_on_wire"], wall_seconds=summary["wall_seconds"])
    print(f"[train_bench] {name}: exit {code}, eval loss {row.get('eval_loss', '-')}, "
          f"{row.get('bytes', '-')} bytes, {row['seconds']} s", file=sys.stderr, flush=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default="build-models/launcher/tributary")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--inner-steps", type=int, default=25)
    p.add_argument("--peers", type=int, default=4)
    p.add_argument("--seed", type=int, default=1234)
    # Generous: on a loaded 2-core machine a butterfly round can take minutes. Neither changes
    # what is computed, only when a slow peer counts as failed.
    p.add_argument("--round-timeout-ms", type=int, default=900000)
    p.add_argument("--liveness-timeout-ms", type=int, default=60000)
    p.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                   help="comma-separated; a codec with a comma is not supported")
    p.add_argument("--parallel", type=int, default=1, help="demos at once (losses do not depend on it)")
    p.add_argument("--run-root", default=time.strftime("runs/trainbench-%Y%m%d-%H%M%S"))
    p.add_argument("--out", default="benchmarks/results/training_codecs.json")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="run nothing: combine earlier outputs (same budget) into one table and --out")
    args = p.parse_args()
    if args.merge:
        rows = []
        for path in args.merge:
            with open(path) as f:
                earlier = json.load(f)
            if (earlier["rounds"], earlier["inner_steps"], earlier["peers"]) != (args.rounds, args.inner_steps, args.peers):
                raise SystemExit(f"{path}: another budget than --rounds/--inner-steps/--peers")
            for e in earlier["systems"]:  # a later successful run of a system replaces an earlier one
                same = [i for i, r in enumerate(rows) if r["system"] == e["system"]]
                if not same:
                    rows.append(e)
                elif "eval_loss" in e:
                    rows[same[0]] = e
    else:
        systems = [s for s in args.systems.split(",") if s]
        for s in systems:
            parse_system(s)
        with futures.ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
            rows = list(pool.map(lambda s: run_one(args, s, args.run_root), systems))

    ddp = next((r for r in rows if r["mode"] == "ddp" and "bytes" in r), None)
    fp32_diloco = next((r for r in rows if r["mode"] == "diloco" and r["codec"] == "fp32"
                        and not r["job_keys"] and "eval_loss" in r), None)
    for r in rows:
        if "bytes" not in r:
            continue
        if ddp and r["bytes"] > 0:
            r["fewer_bytes_than_ddp"] = ddp["bytes"] / r["bytes"]
        if ddp:
            r["loss_vs_ddp"] = r["eval_loss"] / ddp["eval_loss"] - 1
        if fp32_diloco:
            r["loss_vs_fp32_diloco"] = r["eval_loss"] / fp32_diloco["eval_loss"] - 1

    def pct(v):
        return "-" if v is None else f"{100 * v:+.2f} %"

    print(f"\n{args.peers} peers, {args.rounds} rounds × H = {args.inner_steps} "
          f"({args.rounds * args.inner_steps} steps per peer), seed {args.seed}\n")
    print("| system | eval loss | vs DDP | vs fp32 DiLoCo | bytes on the wire | fewer bytes than DDP | status |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if "eval_loss" not in r:
            print(f"| {r['system']} | - | - | - | - | - | FAILED (exit {r['exit_code']}; {r['run_dir']}) |")
            continue
        ratio = r.get("fewer_bytes_than_ddp")
        print(f"| {r['system']} | {r['eval_loss']:.4f} | {pct(r.get('loss_vs_ddp'))} | "
              f"{pct(r.get('loss_vs_fp32_diloco'))} | {r['bytes'] / 1e6:.3f} MB | "
              f"{'-' if ratio is None else f'{ratio:.0f}×'} | ok |")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"peers": args.peers, "rounds": args.rounds, "inner_steps": args.inner_steps,
                   "seed": args.seed, "systems": rows}, f, indent=2)
    print(f"\nJSON written to {args.out}")
    return 0 if all("eval_loss" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
