#!/usr/bin/env python3
"""First build of a keyboard: Oven end to end, phase by phase, against raw `qmk compile`.

Starts its own `oven serve` on a fresh data directory (a cold worker: no build directory, an
empty compiler cache unless --ccache-seed), then for each keyboard, interleaved and
alternating which side goes first:

  cold  Oven: POST the keymap, poll until finished (every 20 ms); the result's `phases`.
        raw:  `qmk compile -j N -e SKIP_GIT=yes -e SKIP_VERSION=yes <same json>` in a writable
              copy of the tree after deleting that keymap's object directory; its phases are
              read from the same QMK status lines Oven's runner times.
  warm  The same keymap with one key changed, on both sides (Oven's warm path against a
        developer's second `qmk compile` into the existing object directory).

Prints one line per build and a table (markdown) with medians of the Oven/raw ratios and of
the Oven - raw differences; every line carries the 1-minute load average, since the machine
may be shared. Exit status 1 if a build failed on one side only.

usage: bench/first-build.py --oven-bin target/release/oven --tree DIR --raw-home DIR
           --keymaps DIR (--keyboards a,b,c | -n 10 [--seed 1]) [--ccache-seed DIR]
           [--jobs 2] [--qmk qmk] [--no-warm] [--json out.json] [--out table.md]
  --tree:      the qmk_firmware tree `oven serve --qmk-home` builds in (may be read-only)
  --raw-home:  a writable copy of it for the raw builds
  --keymaps:   keymap.json files (the Configurator's bundled default keymaps,
               public/keymaps/<letter>/<kb>_default.json); one per keyboard is used
  --ccache-seed: a seeded compiler cache (scripts/seed-ccache.sh) given to Oven as
               OVEN_CCACHE_SEED
"""
import argparse
import glob
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import hashlib
import urllib.error
import urllib.request

FLAGS = ["-e", "SKIP_GIT=yes", "-e", "SKIP_VERSION=yes"]
# The markers of oven/src/worker/build.rs (PHASE_MARKERS), in the same order.
MARKERS = ["Compiling keymap with", "Compiling:", "Assembling:", "Archiving:", "Linking:"]
PHASES = ["queue", "prepare", "startup", "generate", "compile", "link", "store", "source_archive"]
WINDOW = 48


def load():
    return float(open("/proc/loadavg").read().split()[0])


def http(url, data=None):
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


def split_phases(marks, elapsed):
    """The same split as build_phases in oven/src/worker/build.rs; marks are (first, last)."""
    units = [m for m in marks[1:4] if m is not None]
    first = min(m[0] for m in units) if units else None
    last = max(m[1] for m in units) if units else (marks[4][0] if marks[4] else None)
    starts = [("startup", 0.0)]
    for name, t in (("generate", marks[0][0] if marks[0] else None), ("compile", first), ("link", last)):
        if t is not None and t >= starts[-1][1] and t <= elapsed:
            starts.append((name, t))
    out = {}
    for k, (name, t) in enumerate(starts):
        end = starts[k + 1][1] if k + 1 < len(starts) else elapsed
        out[name] = end - t
    return out


def raw_build(qmk, home, path, jobs, env, pin):
    """Runs qmk compile, timing the first line holding each marker (within WINDOW bytes);
    `pin` are the build-date flags the worker gives (so the firmware bytes can be compared)."""
    t0 = time.monotonic()
    p = subprocess.Popen([qmk, "compile", "-j", str(jobs), *FLAGS, *pin, path], cwd=home, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    marks = [None] * len(MARKERS)
    tail = []
    for line in p.stdout:
        t = time.monotonic() - t0
        head = line[:WINDOW].decode(errors="replace")
        for i, m in enumerate(MARKERS):
            if m in head:
                marks[i] = (marks[i][0] if marks[i] else t, t)
        tail = (tail + [line.decode(errors="replace")])[-20:]
    rc = p.wait()
    secs = time.monotonic() - t0
    doc = json.load(open(path))
    stem = os.path.join(home, f"{doc['keyboard'].replace('/', '_')}_{doc['keymap']}")
    fw = next((open(f"{stem}.{e}", "rb").read() for e in ("uf2", "hex", "bin") if rc == 0 and os.path.exists(f"{stem}.{e}")), None)
    for e in ("uf2", "hex", "bin"):
        if os.path.exists(f"{stem}.{e}"):
            os.remove(f"{stem}.{e}")
    return {"secs": secs, "ok": rc == 0, "phases": split_phases(marks, secs), "why": "" if rc == 0 else "".join(tail)[-300:],
            "sha256": hashlib.sha256(fw).hexdigest() if fw else None}


def oven_build(base, body):
    t0 = time.monotonic()
    try:
        job = json.loads(http(f"{base}/v1/compile", body))["job_id"]
    except urllib.error.HTTPError as e:
        return {"secs": time.monotonic() - t0, "ok": False, "why": f"HTTP {e.code}", "phases": {}}
    while True:
        doc = json.loads(http(f"{base}/v1/compile/{job}"))
        if doc["status"] in ("finished", "failed"):
            break
        time.sleep(0.02)
    secs = time.monotonic() - t0
    res = doc.get("result") or {}
    return {"secs": secs, "ok": doc["status"] == "finished" and res.get("returncode") == 0,
            "phases": res.get("phases") or {}, "compile_seconds": res.get("compile_seconds"),
            "sha256": res.get("firmware_sha256"),
            "why": "" if res.get("returncode") == 0 else (res.get("output") or doc.get("error") or "")[-300:]}


def mcu_of(tree, kb):
    """The keyboard's `processor`, from its info.json/keyboard.json files (children win)."""
    parts, mcu = kb.split("/"), "?"
    for i in range(1, len(parts) + 1):
        for f in ("info.json", "keyboard.json"):
            try:
                mcu = json.load(open(os.path.join(tree, "keyboards", *parts[:i], f))).get("processor", mcu)
            except (OSError, ValueError):
                pass
    return mcu


def one_key_changed(doc):
    doc = json.loads(json.dumps(doc))
    layer = doc["layers"][0]
    for i, k in enumerate(layer):
        if k not in ("KC_NO", "KC_TRNS", "_______", "XXXXXXX"):
            layer[i] = "KC_F13" if k != "KC_F13" else "KC_F14"
            break
    return doc


def fmt_phases(ph, names):
    return " ".join(f"{n[:4]}={ph[n]:.2f}" for n in names if ph.get(n) is not None)


def start_oven(a, data):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = dict(os.environ, OVEN_LOG="warn")
    if a.ccache_seed:
        env["OVEN_CCACHE_SEED"] = os.path.abspath(a.ccache_seed)
    if a.no_fork_server:
        env["OVEN_QMK_FORK_SERVER"] = "0"
    if a.no_ccache:
        env["OVEN_CCACHE"] = "0"
    if a.no_cc_option_memo:
        env["OVEN_CC_OPTION_MEMO"] = "0"
    log = open(os.path.join(data, "serve.log"), "w")
    p = subprocess.Popen([a.oven_bin, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data,
                          "--qmk-home", a.tree], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            http(f"{base}/v1")
            return p, base
        except OSError:
            time.sleep(0.1)
    p.kill()
    sys.exit("oven serve did not start; see " + log.name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oven-bin", required=True)
    ap.add_argument("--tree", required=True)
    ap.add_argument("--raw-home", required=True)
    ap.add_argument("--keymaps", required=True)
    ap.add_argument("--keyboards")
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--qmk", default="qmk")
    ap.add_argument("--ccache-seed")
    ap.add_argument("--no-warm", action="store_true")
    ap.add_argument("--no-ccache", action="store_true", help="Oven builds without ccache (A/B)")
    ap.add_argument("--no-cc-option-memo", action="store_true", help="Oven runs QMK's cc-option probe per unit (A/B)")
    ap.add_argument("--no-fork-server", action="store_true",
                    help="Oven runs the qmk CLI for each of make's qmk commands (A/B against the fork server)")
    ap.add_argument("--json")
    ap.add_argument("--out")
    a = ap.parse_args()

    pool = {}
    for p in sorted(glob.glob(os.path.join(a.keymaps, "**/*.json"), recursive=True)):
        try:
            kb = json.load(open(p)).get("keyboard")
        except ValueError:
            continue
        pool.setdefault(kb, p)
    if a.keyboards:
        names = a.keyboards.split(",")
        missing = [k for k in names if k not in pool]
        if missing:
            sys.exit(f"no keymap for {missing}")
    else:
        names = sorted(pool)
        random.Random(a.seed).shuffle(names)
        names = names[: a.n]
    # Warm-up: a keyboard not measured, so the worker's one-off base source archive is made
    # before the first measured job (it is once per firmware commit, not per keyboard).
    warmup = next(k for k in sorted(pool) if k not in names)

    data = tempfile.mkdtemp(prefix="oven-first-build-")
    proc, base = start_oven(a, data)
    print(f"oven serve data dir: {data} (kept with KEEP_DATA=1)", flush=True)
    tmp = tempfile.mkdtemp()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CCACHE_"))}
    env["QMK_HOME"] = a.raw_home
    rows = []
    try:
        w = oven_build(base, open(pool[warmup], "rb").read())
        print(f"warm-up {warmup}: {w['secs']:.2f} s ok={w['ok']} load {load():.2f}", flush=True)
        # Raw builds get the worker's build-date pin (oven/src/worker/builddate.rs), so that
        # the firmware bytes must be equal.
        dates = glob.glob(os.path.join(data, "work", "builddate", "*-*"))
        if len(dates) != 1:
            sys.exit(f"expected one build-date directory, found {dates}")
        pin = ["-e", f"EXTRAFLAGS=-I{dates[0]} -include {dates[0]}/oven_date.h -Wno-builtin-macro-redefined"]
        env["SOURCE_DATE_EPOCH"] = dates[0].rsplit("-", 1)[1]
        for i, kb in enumerate(names):
            doc = json.load(open(pool[kb]))
            variants = [("cold", doc)] + ([] if a.no_warm else [("warm", one_key_changed(doc))])
            obj = os.path.join(a.raw_home, ".build", f"obj_{kb.replace('/', '_')}_{doc['keymap']}")
            shutil.rmtree(obj, ignore_errors=True)
            for kind, d in variants:
                body = json.dumps(d).encode()
                path = os.path.join(tmp, f"{i}-{kind}.json")
                open(path, "wb").write(body)
                order = ["oven", "raw"] if (i % 2 == 0) else ["raw", "oven"]
                got = {}
                for side in order:
                    l0 = load()
                    got[side] = oven_build(base, body) if side == "oven" else raw_build(a.qmk, a.raw_home, path, a.jobs, env, pin)
                    got[side]["load"] = l0
                o, r = got["oven"], got["raw"]
                same = o["sha256"] is not None and o["sha256"] == r["sha256"]
                row = {"same": same, "keyboard": kb, "mcu": mcu_of(a.tree, kb), "kind": kind, "oven": o, "raw": r, "ratio": o["secs"] / r["secs"],
                       "diff": o["secs"] - r["secs"], "first": order[0]}
                rows.append(row)
                print(f"{kb:40} {kind} oven {o['secs']:6.2f} s [{fmt_phases(o['phases'], PHASES)}]"
                      f"  raw {r['secs']:6.2f} s [{fmt_phases(r['phases'], PHASES)}]"
                      f"  ratio {row['ratio']:.2f} load {o['load']:.1f}/{r['load']:.1f} same bytes {same}"
                      + ("" if o["ok"] else f"\n   oven failed: {o['why'][-200:]!r}")
                      + ("" if r["ok"] else f"\n   raw failed: {r['why'][-200:]!r}"), flush=True)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        ccache = os.path.join(data, "work", "ccache")
        if os.path.isdir(ccache) and shutil.which("ccache"):
            stats = subprocess.run(["ccache", "--show-stats"], env=dict(os.environ, CCACHE_DIR=ccache),
                                   capture_output=True, text=True).stdout
            print("worker's ccache:\n" + stats, flush=True)
        if os.environ.get("KEEP_DATA") != "1":
            shutil.rmtree(data, ignore_errors=True)

    # Named by what it holds, not where it lies on this machine.
    seed = ", ccache seed made by scripts/seed-ccache.sh" if a.ccache_seed else ", no ccache seed"
    seed += ", no fork server" if a.no_fork_server else ""
    seed += ", no ccache" if a.no_ccache else ""
    seed += ", no cc-option memo" if a.no_cc_option_memo else ""
    lines = [f"# First build vs raw `qmk compile -j {a.jobs}` ({len(names)} keyboards{seed})", "",
             "| keyboard | MCU | build | Oven s | queue | prepare | startup | generate | compile | link | store | source | raw s | raw startup | raw generate | raw compile | raw link | Oven/raw | Oven-raw s | same bytes | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    def c(ph, n):
        v = ph.get(n)
        return "-" if v is None else f"{v:.2f}"
    for x in rows:
        o, r = x["oven"], x["raw"]
        lines.append(f"| {x['keyboard']} | {x['mcu']} | {x['kind']} | {o['secs']:.2f} | " + " | ".join(c(o["phases"], n) for n in PHASES)
                     + f" | {r['secs']:.2f} | " + " | ".join(c(r["phases"], n) for n in ("startup", "generate", "compile", "link"))
                     + f" | {x['ratio']:.2f} | {x['diff']:+.2f} | {'yes' if x['same'] else 'NO'} | {o['load']:.1f}/{r['load']:.1f} |")
    lines.append("")
    for kind in ("cold", "warm"):
        both = [x for x in rows if x["kind"] == kind and x["oven"]["ok"] and x["raw"]["ok"]]
        if both:
            lines.append(f"- {kind}: {len(both)} keyboards built on both sides; median Oven/raw "
                         f"{statistics.median(x['ratio'] for x in both):.2f}, median Oven - raw "
                         f"{statistics.median(x['diff'] for x in both):+.2f} s, median Oven "
                         f"{statistics.median(x['oven']['secs'] for x in both):.2f} s, raw "
                         f"{statistics.median(x['raw']['secs'] for x in both):.2f} s")
    built = [x for x in rows if x["oven"]["ok"] and x["raw"]["ok"]]
    lines.append(f"- firmware sha256 equal to raw's: {sum(x['same'] for x in built)}/{len(built)} builds")
    lines.append(f"- load average (1 min) over the run: {min(x['oven']['load'] for x in rows):.1f} to "
                 f"{max(x['oven']['load'] for x in rows):.1f}; {os.cpu_count()} cores")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        open(a.out, "w").write(text)
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=1)
    sys.exit(0 if all(x["oven"]["ok"] == x["raw"]["ok"] and (x["same"] or not x["oven"]["ok"]) for x in rows) else 1)


if __name__ == "__main__":
    main()
