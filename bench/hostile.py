#!/usr/bin/env python3
"""Hostile keymaps against a running `oven serve` on a real tree: for every field Oven accepts,
inputs that would smuggle code, a host file or a make variable into the build. Each must be
refused with a 4xx naming the field, or, where it is data QMK escapes, build as plain data
without running anything (a canary file that a shell injection would create must not appear,
and a macro's text must come out in the firmware as exactly the bytes given).

usage: bench/hostile.py --oven http://127.0.0.1:8080
"""
import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

CANARY = "/tmp/oven-hostile-canary"
SHELL = f"$(shell touch {CANARY})"


def base():
    # dz60 LAYOUT_60_ansi: 61 keys.
    layer = ["KC_A"] * 61
    return {"keyboard": "dz60", "keymap": "hostile", "layout": "LAYOUT_60_ansi", "layers": [layer]}


def with_(**kw):
    b = base()
    b.update(kw)
    return b


REFUSED = [
    ("keyboard path", with_(keyboard="../../etc")),
    ("keyboard shell", with_(keyboard=SHELL)),
    ("keymap slash", with_(keymap="../../../tmp/x")),
    ("keymap newline", with_(keymap="a\nb")),
    ("layout code", with_(layout="LAYOUT_60_ansi); system(\"id\"")),
    ("keycode code", with_(layers=[["KC_A); __asm__(\"nop\"); (KC_A"] + ["KC_A"] * 60])),
    ("keycode include", with_(layers=[["#include \"/etc/passwd\""] + ["KC_A"] * 60])),
    ("macro action keycode", with_(macros=[[{"action": "tap", "keycodes": ["A)); __asm__(\"nop\""]}]])),
    ("macro duration", with_(macros=[[{"action": "delay", "duration": "1) system(\"x\""}]])),
    ("macro quote before action", with_(macros=[["x\"", {"action": "tap", "keycodes": ["A"]}], ["); } void evil(void) { //"]])),
    ("macro control byte", with_(macros=[["\u0001\u0001\u0004"]])),
    ("macro trigraph", with_(macros=[["x ??/"]])),
    ("macro extra key", with_(macros=[[{"action": "tap", "keycodes": ["A"], "c": "evil()"}]])),
    ("config string", with_(config={"tapping": {"term": "200\n#include </etc/passwd>"}})),
    ("config path", with_(config={"usb": {"manufacturer": "\"; evil"}})),
    ("config feature name", with_(config={"features": {"x_enable := yes\nSHELL": True}})),
    ("config group as leaf", with_(config={"ws2812": {"rgbw": {"x": True}}})),
    ("host_language path", with_(host_language="../../../../etc/passwd")),
    ("converter path", with_(converter="../../x")),
    ("encoder code", with_(encoders=[[{"ccw": "KC_A); evil(", "cw": "KC_B"}]])),
    ("dip switch code", with_(dip_switches=[{"on": "KC_A", "off": "KC_B; evil()"}])),
    ("commit shell", with_(commit=SHELL)),
    ("modules", with_(modules=["../../../etc"])),
    ("keycodes decl", with_(keycodes=[{"key": "EVIL"}])),
    ("branch", with_(branch="evil")),
    ("unknown field", with_(KEYMAP_C="int x;")),
]

# Data QMK escapes: must build, run nothing, and keep the bytes.
MACRO_TEXT = "\"); } void evil(void) { system(\"id\"); } //\\ ?? */ \t\n$(shell id) `id` 'q' é"
BUILT = [
    ("keymap shell name", with_(keymap="$(shell id) `id` d'or.v2")),
    ("macro text", with_(macros=[[MACRO_TEXT, {"action": "tap", "keycodes": ["A"]}, "end"]])),
    ("macro ends with backslash", with_(macros=[["a\\"]])),
    ("host_language german", with_(host_language="german")),
    ("notes with C", with_(notes="*/ #include </etc/passwd> /*", documentation="$(shell id)")),
]


def post(url, body):
    req = urllib.request.Request(url + "/v1/compile", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def wait(url, job):
    while True:
        with urllib.request.urlopen(f"{url}/v1/compile/{job}", timeout=30) as r:
            doc = json.loads(r.read())
        if doc["status"] in ("finished", "failed"):
            return doc
        time.sleep(0.5)


def hex_bytes(text):
    out = bytearray()
    for line in text.splitlines():
        raw = bytes.fromhex(line[1:])
        if raw[3] == 0:
            out += raw[4:-1]
    return bytes(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oven", required=True)
    a = ap.parse_args()
    url = a.oven.rstrip("/")
    if os.path.exists(CANARY):
        os.remove(CANARY)
    bad = 0
    for name, body in REFUSED:
        code, doc = post(url, body)
        ok = 400 <= code < 500
        # A refusal in words: the job finishes failed at once (pre-compile checks).
        if code == 200:
            d = wait(url, doc["job_id"])
            ok = d["result"].get("returncode", 0) != 0 and d["result"].get("compile_seconds") is None
            doc = {"message": d["result"].get("output", "")[:100]}
        print(f"{'ok ' if ok else 'BAD'} refused  {name:28} {code} {doc.get('message', '')[:90]} {doc.get('detail') or ''}")
        bad += not ok
    for name, body in BUILT:
        code, doc = post(url, body)
        if code != 200:
            print(f"BAD built    {name:28} {code} {doc}")
            bad += 1
            continue
        d = wait(url, doc["job_id"])
        r = d["result"]
        ok = r["returncode"] == 0
        note = r.get("firmware_filename")
        if ok and name == "macro text":
            with urllib.request.urlopen(f"{url}/v1/compile/{doc['job_id']}/download", timeout=30) as f:
                fw = hex_bytes(f.read().decode())
            # QMK turns the newline into LF and keeps every other byte.
            ok = MACRO_TEXT.encode() in fw
            note = f"text bytes in firmware: {ok}"
        print(f"{'ok ' if ok else 'BAD'} built    {name:28} rc={r['returncode']} {note}")
        bad += not ok
    canary = os.path.exists(CANARY)
    print(f"{'BAD' if canary else 'ok '} canary {CANARY} {'exists' if canary else 'absent'}")
    sys.exit(1 if bad or canary else 0)


if __name__ == "__main__":
    main()
