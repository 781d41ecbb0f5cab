#!/usr/bin/env python3
"""Fidelity: does Oven build what raw `qmk compile` builds from the same keymap.json?

For N keyboards chosen at random (fixed seed), takes real client input: the stock
Configurator's bundled default keymaps (`public/keymaps/` of qmk/qmk_configurator) and the tree's
own `keymap.json` files. Each JSON is posted to a running `oven serve` (polled to the end, the
firmware downloaded) and compiled with raw `qmk compile -j N <same flags as Oven>` in a writable
copy of the same tree. Per keyboard it reports: both built / both failed / differ, whether the
firmware sha256 is equal, and Oven's end-to-end time against raw's. Keyboards that neither side
can build with this machine's toolchains show as "both failed" with the first error line.

usage: bench/fidelity.py --oven URL --raw-home DIR --configurator-keymaps DIR
                         [--tree-keymaps] [-n 60] [--seed 1] [--jobs 2] [--out results.md]
  --raw-home: a writable qmk_firmware tree (a copy of the one `oven serve --qmk-home` uses);
              raw builds write .build/ and firmware files there.
  QMK: the qmk CLI on PATH (or --qmk).
"""
import argparse
import concurrent.futures
import glob
import hashlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

# The flags Oven's worker gives `qmk compile` (oven/src/worker/build.rs); raw gets the same.
RAW_FLAGS = os.environ.get("OVEN_RAW_FLAGS", "-e SKIP_GIT=yes -e SKIP_VERSION=yes").split()
RAW_ENV = {}


def pin_build_date(date_dir, epoch):
    """Raw builds get the build-date pin Oven's worker gives (oven/src/worker/builddate.rs):
    the same forced header through make's EXTRAFLAGS, and SOURCE_DATE_EPOCH."""
    RAW_FLAGS.extend(["-e", f"EXTRAFLAGS=-I{date_dir} -include {date_dir}/oven_date.h -Wno-builtin-macro-redefined"])
    RAW_ENV["SOURCE_DATE_EPOCH"] = str(epoch)


def http(url, data=None):
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


def oven_build(base, body):
    t0 = time.monotonic()
    try:
        sub = json.loads(http(f"{base}/v1/compile", body))
    except urllib.error.HTTPError as e:
        return {"built": False, "why": f"HTTP {e.code}: {e.read()[:200]!r}", "secs": time.monotonic() - t0}
    job = sub["job_id"]
    while True:
        doc = json.loads(http(f"{base}/v1/compile/{job}"))
        if doc["status"] in ("finished", "failed"):
            break
        time.sleep(0.1)
    secs = time.monotonic() - t0
    res = doc.get("result") or {}
    out = {"secs": secs, "job": job, "folder": res.get("keyboard_folder"), "failure": res.get("failure")}
    if doc["status"] == "finished" and res.get("returncode") == 0:
        fw = http(f"{base}/v1/compile/{job}/download")
        out.update(built=True, sha=hashlib.sha256(fw).hexdigest(), size=len(fw))
    else:
        text = (res.get("output") or "")
        first = next((l for l in text.splitlines() if "error" in l.lower()), text.splitlines()[0] if text else "")
        out.update(built=False, why=first[:160])
    return out


def raw_build(qmk, home, path, jobs):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["QMK_HOME"] = home
    env.update(RAW_ENV)
    before = set(os.listdir(home))
    t0 = time.monotonic()
    p = subprocess.run([qmk, "compile", "-j", str(jobs), *RAW_FLAGS, path], cwd=home, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    secs = time.monotonic() - t0
    # QMK copies the firmware to the tree's root and says which file it copied.
    copied = re.findall(r"Copying (\S+\.(?:hex|bin|uf2)) to qmk_firmware folder", strip_ansi(p.stdout))
    new = [f for f in copied if f in set(os.listdir(home)) - before]
    out = {"secs": secs}
    if p.returncode == 0 and new:
        f = new[-1]
        data = open(os.path.join(home, f), "rb").read()
        out.update(built=True, sha=hashlib.sha256(data).hexdigest(), file=f, size=len(data))
    else:
        first = next((l for l in p.stdout.splitlines() if "error" in l.lower()), p.stdout.strip().splitlines()[-1] if p.stdout.strip() else "")
        out.update(built=False, why=first[:160])
    for f in new:
        os.remove(os.path.join(home, f))
    return out


def strip_ansi(text):
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oven", required=True)
    ap.add_argument("--raw-home", required=True)
    ap.add_argument("--configurator-keymaps")
    ap.add_argument("--tree-keymaps", action="store_true", help="also draw from the tree's keymap.json files")
    ap.add_argument("--keyboards", help="comma-separated keyboards to use instead of a random draw")
    ap.add_argument("-n", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--qmk", default="qmk")
    ap.add_argument("--out")
    ap.add_argument("--oven-date-dir", help="the worker's build-date directory (builddate/<commit>-<epoch> in its work directory): "
                    "raw builds get the same pinned date")
    ap.add_argument("--side-by-side", action="store_true",
                    help="run the Oven job and the raw build at the same time (half the wall time; "
                         "both compete for the same cores, so the time ratio stays comparable)")
    a = ap.parse_args()
    if a.oven_date_dir:
        pin_build_date(a.oven_date_dir.rstrip("/"), a.oven_date_dir.rstrip("/").rsplit("-", 1)[1])

    pool = []
    if a.configurator_keymaps:
        pool += [("configurator", p) for p in sorted(glob.glob(os.path.join(a.configurator_keymaps, "**/*.json"), recursive=True))]
    if a.tree_keymaps:
        pool += [("tree", p) for p in sorted(glob.glob(os.path.join(a.raw_home, "keyboards/**/keymaps/*/keymap.json"), recursive=True))]
    if not pool:
        sys.exit("no keymaps: give --configurator-keymaps and/or --tree-keymaps")
    if a.keyboards:
        want = a.keyboards.split(",")
        chosen = []
        for kb in want:
            for src, p in pool:
                try:
                    if json.load(open(p)).get("keyboard") == kb:
                        chosen.append((src, p))
                        break
                except ValueError:
                    pass
    else:
        random.Random(a.seed).shuffle(pool)
        chosen, seen = [], set()
        for src, p in pool:
            try:
                kb = json.load(open(p)).get("keyboard")
            except ValueError:
                continue
            if kb and kb not in seen:
                seen.add(kb)
                chosen.append((src, p))
            if len(chosen) == a.n:
                break

    rows = []
    tmp = tempfile.mkdtemp()
    for i, (src, p) in enumerate(chosen):
        body = open(p, "rb").read()
        kb = json.loads(body)["keyboard"]
        path = os.path.join(tmp, f"{i}.json")
        open(path, "wb").write(body)
        if a.side_by_side:
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                fo = pool.submit(oven_build, a.oven.rstrip("/"), body)
                fr = pool.submit(raw_build, a.qmk, a.raw_home, path, a.jobs)
                o, r = fo.result(), fr.result()
        else:
            o = oven_build(a.oven.rstrip("/"), body)
            r = raw_build(a.qmk, a.raw_home, path, a.jobs)
        if o["built"] and r["built"]:
            verdict = "both built"
        elif not o["built"] and not r["built"]:
            verdict = "both failed"
        else:
            verdict = "DIFFER"
        same = (o.get("sha") == r.get("sha")) if verdict == "both built" else None
        row = dict(keyboard=kb, source=src, verdict=verdict, sha_equal=same, oven_s=o["secs"], raw_s=r["secs"],
                   ratio=o["secs"] / r["secs"] if r["secs"] else None, oven=o, raw=r)
        rows.append(row)
        print(f"{i+1:3}/{len(chosen)} {kb:45} {verdict:12} sha_equal={same!s:5} oven {o['secs']:6.2f}s raw {r['secs']:6.2f}s"
              + ("" if o["built"] else f"  oven: {o.get('why','')[:70]}")
              + ("" if r["built"] else f"  raw: {r.get('why','')[:70]}"), flush=True)

    built = [x for x in rows if x["verdict"] == "both built"]
    agree = sum(1 for x in rows if x["verdict"] != "DIFFER")
    ratios = [x["ratio"] for x in built if x["ratio"]]
    load = open("/proc/loadavg").read().split()[0]
    # The result names the build-date directory by its own name only: no machine paths.
    flags = ' '.join(RAW_FLAGS)
    if a.oven_date_dir:
        d = a.oven_date_dir.rstrip('/')
        flags = flags.replace(d, '<date-dir>') + f" (date-dir: the worker's builddate/{os.path.basename(d)})"
    lines = [f"# Fidelity: {len(rows)} keyboards (seed {a.seed}), flags {flags}, "
             f"{'side by side' if a.side_by_side else 'one after the other'}, load {load} at the end", "",
             "| keyboard | source | outcome | firmware sha256 equal | Oven s | raw s | ratio | note |",
             "|---|---|---|---|---|---|---|---|"]
    for x in rows:
        note = ""
        if x["verdict"] != "both built":
            note = (x["oven"].get("why") or x["raw"].get("why") or "").replace("|", "\\|")[:90]
        lines.append(f"| {x['keyboard']} | {x['source']} | {x['verdict']} | {x['sha_equal'] if x['sha_equal'] is not None else '-'} "
                     f"| {x['oven_s']:.2f} | {x['raw_s']:.2f} | {x['ratio']:.2f} | {note} |")
    lines += ["", f"agreement: {agree}/{len(rows)}; firmware equal: {sum(1 for x in built if x['sha_equal'])}/{len(built)} of both-built;"
              f" median Oven/raw time ratio (both built): {statistics.median(ratios):.2f}" if ratios else "no keyboard built on both sides"]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        open(a.out, "w").write(text)
    sys.exit(0 if agree == len(rows) and all(x["sha_equal"] for x in built) else 1)


if __name__ == "__main__":
    main()
