#!/usr/bin/env python3
"""Renders bench-results/*.jsonl as one side-by-side table (make bench's last step).

  python3 scripts/bench_table.py bench-results

Rows are (model, figure); columns are predictd per dtype and each peer. The
ratio column is predictd's best dtype against ONNX Runtime FP32 (> 1: predictd
is faster), computed from the medians of this one run.
"""
import json
import os
import re
import sys


def load(path):
    rows = []
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    return rows


def key(r):
    fig = re.sub(r"decode b(\d+) \d+ steps after p32", r"decode b\1", r.get("figure", ""))
    return (r.get("model", ""), fig)


def speed(r):
    """A figure's 'bigger is better' value and its unit."""
    for k, unit in (("tok_per_s_med", "tok/s"), ("seq_per_s_med", "seq/s"), ("images_per_s", "img/s")):
        if k in r:
            return r[k], unit
    if "ms_per_image_med" in r:
        return 1e3 / r["ms_per_image_med"], "img/s"
    if "med_ms" in r:
        return 1e3 / r["med_ms"], "1/s"
    return None, ""


def cell_text(r):
    """A figure's cell: its median time, or the resident memory of an rss row."""
    if r is None:
        return ""
    if "rss_mib" in r:
        return f"{r['rss_mib']:.0f} MiB"
    return f"{r['med_ms']:.1f} ms" if "med_ms" in r else ""


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "bench-results"
    columns, table = [], {}
    env = {}
    for r in load(os.path.join(d, "predictd.jsonl")):
        if r.get("figure") == "env":
            env = r
            continue
        if "model" not in r:
            continue
        col = "predictd " + env.get("dtype", "f32")
        columns.append(col) if col not in columns else None
        table.setdefault(key(r), {})[col] = r
    for name, path in (("ORT fp32", "ort.jsonl"), ("torch", "torch.jsonl")):
        for r in load(os.path.join(d, path)):
            if r.get("threads", 2) != 2 or r.get("opt", "default") != "default" or r.get("tag"):
                continue
            col = name if name != "torch" else "torch " + r.get("mode", "")
            columns.append(col) if col not in columns else None
            table.setdefault(key(r), {})[col] = r
    print("| model | figure | " + " | ".join(columns) + " | best predictd / ORT |")
    print("|" + "---|" * (len(columns) + 3))
    for (model, fig), cells in sorted(table.items()):
        out, best, unit = [], None, ""
        for c in columns:
            v, u = speed(cells[c]) if c in cells else (None, "")
            unit = unit or u
            out.append(cell_text(cells.get(c)))
            if c.startswith("predictd") and v:
                best = max(best or 0, v)
        ort, _ = speed(cells["ORT fp32"]) if "ORT fp32" in cells else (None, "")
        ratio = f"{best / ort:.2f}x" if best and ort else ""
        print(f"| {model} | {fig} | " + " | ".join(out) + f" | {ratio} |")
    http = load(os.path.join(d, "http.jsonl"))
    if http:
        print("\n| server | connections | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|")
        for r in http:
            x = r["result"]
            print(f"| {r['server']} | {r['connections']} | {x['rps']:.1f} | {x['p50_ms']:.1f} | "
                  f"{x['p99_ms']:.1f} | {x['errors']} |")


if __name__ == "__main__":
    main()
