"""`compile report MODEL.dyc|MODEL.onnx -o DIR`: what a compiled model is and how it does, as
text (stdout and DIR/report.txt), JSON (DIR/report.json) and one HTML page (DIR/index.html) with its
PNGs next to it (drawn by matplotlib, compiler/tools/plots.py).

Sections: the artifact (target, backend, versions, signature, sizes); the op histogram (from the
.onnx: before and after the compiler); the compile stages and every pass with its time (from the
.onnx); the per-layer quantization table with SQNR (from the .onnx with --quantize); the memory plan
(arena, lower bound, Relax's own planner, the fast tier; its timeline drawn); the energy estimate per
inference (the artifact's `energy` object: operation counts times a stated per-op table); accuracy against
onnxruntime FP32 on --data (cosine, max |diff|, top-1 agreement); latency against onnxruntime and
the per-kernel time with each kernel's op, rate and roofline share (unless --no-bench). The artifact
keeps only deterministic facts, so times always come from this command's own compile and runs."""
from __future__ import annotations

import argparse
import html
import json
import re
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compiler.diagnostics import InvalidInput
from compiler.tools import ort
from compiler.tools.bench import format_profile, format_table, max_abs_diff, profile_rows, time_interleaved
from compiler.tools.common import guarded, is_integer_graph, load_artifact, write_atomic
from compiler.tools.inputs import describe, gather_inputs
from compiler.tools.progress import PassBar, Progress
from compiler.tools.report_sections import bar as _bar
from compiler.tools.report_sections import memory_html, memory_text, passes_html, passes_text
from compiler.tools.report_sections import table as _table

EPILOG = """\
examples:
  compile report model.dyc -o report/                          what the artifact holds, latency, kernels
  compile report model.onnx --quantize int8 --data calib.npz -o report/
                  compile (stages and passes timed), SQNR per layer, memory, energy, accuracy and latency
                  vs onnxruntime
  compile report model.dyc --compare model.onnx --data calib.npz --no-bench -o report/

DIR gets index.html with its PNGs next to it (passes, SQNR, memory timeline, energy, kernels),
report.txt (also printed) and report.json. Times come from this command's own compile and runs.
"""
_OP = re.compile(r'"([a-z_]+\.[\w.]+)"\(')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compile report", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Report on a compiled model (.dyc), or compile an ONNX model "
                                            "and report on the result.", epilog=EPILOG)
    p.add_argument("model", help="a compiled model (.dyc) or an ONNX model (.onnx) to compile")
    p.add_argument("-o", "--output", metavar="DIR", required=True,
                   help="folder for index.html, report.txt and report.json (created if missing)")
    p.add_argument("--target", default="llvm", help="(.onnx) compile target. Default: llvm")
    p.add_argument("--backend", default="tvm", choices=["tvm", "mlir"], help="(.onnx) code generator")
    p.add_argument("--quantize", choices=["int8"], help="(.onnx) compile to int8, calibrated on --data")
    p.add_argument("--integer-only", action="store_true", help="(.onnx) with --quantize: integer-only")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS",
                   help="(.onnx) fix an input's shape, e.g. input=1x3x224x224. Repeatable")
    p.add_argument("--data", metavar="FILE.npz",
                   help="representative inputs, (N, *input_shape) per input: calibration for --quantize, "
                        "accuracy vs onnxruntime FP32, and the timed input (batch 0)")
    p.add_argument("--compare", metavar="MODEL.onnx",
                   help="the float model to compare with (default: MODEL when it is an .onnx)")
    p.add_argument("--no-bench", action="store_true", help="leave out latency and the per-kernel profile")
    p.add_argument("--repeat", type=int, default=30, help="timed calls per runtime (default 30)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for both runtimes")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    return p


def op_histogram(graph_text: str) -> dict[str, int]:
    counts = Counter(op for op in _OP.findall(graph_text) if op not in ("func.return", "ir.constant"))
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def artifact_facts(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as z:
        manifest = json.loads(z.read("manifest.json"))
        sizes = {i.filename: i.file_size for i in z.infolist()}
    return {"file": str(path), "bytes": path.stat().st_size, "format": manifest["format"],
            "target": manifest["target"], "backend": manifest["backend"], "versions": manifest["versions"],
            "members": sizes}


def _compile(args: argparse.Namespace, path: Path, out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Compile MODEL.onnx into a temporary .dyc; the stages and every pass with their times and the
    float graph's op histogram for the report (times stay here: the artifact never holds them)."""
    import compiler
    from compiler.cli import parse_shapes
    from passes.base import PassTimes, observe_passes
    say = _sayer(args.quiet)
    stages: list[str] = []
    shapes = parse_shapes(args.input_shape) or None
    before = op_histogram(str(compiler.import_model(path, shapes)))
    t0 = time.perf_counter()
    bar = PassBar(enabled=not args.quiet)
    with observe_passes(PassTimes()) as times, observe_passes(bar):
        cm = compiler.compile(path, args.target, backend=args.backend, input_shapes=shapes,
                              quantize=args.quantize, calibration=args.data if args.quantize else None,
                              integer_only=args.integer_only, progress=lambda m: (stages.append(m), say(m)))
    bar.close()
    total = time.perf_counter() - t0
    extra: dict[str, Any] = {"stages": stages, "compile_s": total, "ops_before": before,
                             "pass_times": times.times}
    if cm.report is not None:
        say("quantization report: SQNR per layer on the calibration data")
        extra["quant_rows"] = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                                for k, v in r.items()} for r in cm.report.rows]
    dyc = out_dir / f"{path.stem}.dyc"
    cm.save(dyc)
    return dyc, extra


def _sayer(quiet: bool):
    """The report's progress lines on stderr (nothing with -q)."""
    return (lambda _m: None) if quiet else (lambda m: print(f"  {m}", file=sys.stderr, flush=True))


def accuracy(cm, sess, batches: list[list[np.ndarray]], limit: int = 256,
             progress: Progress | None = None) -> dict[str, Any]:
    """The artifact against onnxruntime FP32 on `batches`: cosine similarity of the flattened
    first outputs, max |diff| over all outputs, top-1 agreement when the first output is 2-D."""
    cos, diff, same, total = [], 0.0, 0, 0
    for i, b in enumerate(batches[:limit]):
        if progress is not None:
            progress.update(i + 1)
        ours = cm.executable.run(b)
        ref = sess.run(None, ort.feed(sess, cm.signature.inputs, b))
        a, r = ours[0].astype(np.float64).ravel(), np.asarray(ref[0], np.float64).ravel()
        denom = float(np.linalg.norm(a) * np.linalg.norm(r))
        cos.append(float(a @ r) / denom if denom else float(np.array_equal(a, r)))
        diff = max(diff, max_abs_diff(ours, ref))
        if ours[0].ndim == 2:
            same += int(np.sum(ours[0].argmax(1) == np.asarray(ref[0]).argmax(1)))
            total += ours[0].shape[0]
    out = {"batches": min(len(batches), limit), "cosine_mean": float(np.mean(cos)),
           "cosine_min": float(np.min(cos)), "max_abs_diff": diff}
    if total:
        out["top1_agreement"] = same / total
    if progress is not None:
        progress.close()
    return out


def build_report(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    path = Path(args.model)
    if not path.exists():
        raise InvalidInput(f"no such file: {path}")
    say = _sayer(args.quiet)
    rep: dict[str, Any] = {}
    compare = Path(args.compare) if args.compare else None
    if path.suffix.lower() == ".onnx":
        if args.quantize and not args.data:
            raise InvalidInput("--quantize needs --data FILE.npz (the calibration inputs)")
        compare = compare or path
        say(f"compiling {path} for {args.target}")
        dyc, extra = _compile(args, path, tmp)
        rep.update(extra)
    else:
        if args.quantize or args.integer_only or args.input_shape:
            raise InvalidInput("--quantize, --integer-only and --input-shape apply to an .onnx model, "
                               f"not to the compiled {path.name}")
        dyc = path
    if compare is not None and not compare.exists():
        raise InvalidInput(f"--compare: no such file {compare}")
    cm = load_artifact(dyc, args.threads)
    rep["artifact"] = artifact_facts(dyc) | {"file": str(path if path.suffix == ".dyc" else dyc.name)}
    rep["signature"] = {"inputs": [(n, describe(t)) for n, t in cm.signature.inputs],
                        "outputs": [(n, describe(t)) for n, t in cm.signature.outputs]}
    rep["integer"] = is_integer_graph(cm.graph_text)
    rep["ops_after"] = op_histogram(cm.graph_text)
    if cm.memory is not None:
        rep["memory"] = cm.memory
    if cm.energy is not None:
        rep["energy"] = cm.energy
    threads = cm.target.threads() if cm.target.kind == "llvm" else (args.threads or 1)
    have_ort = compare is not None and ort_available()
    if compare is not None and not have_ort:
        rep["notes"] = ["onnxruntime is not installed (pip install onnxruntime): no comparison"]
    batches = ort.load_batches(args.data, cm.signature.inputs) if args.data else None
    sess = ort.session(compare, threads) if have_ort else None
    if batches is not None and sess is not None:
        n = min(len(batches), 256)
        say(f"accuracy vs onnxruntime FP32 on {n} batches of {args.data}")
        rep["accuracy"] = accuracy(cm, sess, batches, progress=Progress(n, "accuracy", enabled=not args.quiet))
    if not args.no_bench:
        inputs = batches[0] if batches else gather_inputs(cm.signature.inputs, [], True)[0]
        runners = {"dyc": lambda: cm.executable.run(inputs)}
        if sess is not None:
            feed = ort.feed(sess, cm.signature.inputs, inputs)
            runners["onnxruntime FP32"] = lambda: sess.run(None, feed)
        say(f"timing: {args.repeat} calls per runtime, {threads} thread(s)")
        with Progress(args.repeat, "timing", enabled=not args.quiet) as progress:
            timings = time_interleaved(runners, 5, args.repeat, progress)
        rep["latency"] = {"threads": threads, "repeat": args.repeat,
                          "runtimes": {t.name: t.stats() for t in timings}, "table": format_table(timings)}
        if getattr(cm.executable, "profile", None) is not None:
            from compiler.tools.kernels import roofline
            prof = cm.profile(*inputs, runs=5)
            prof["runs"] = 5
            roof = roofline(cm.target.cpu, threads) if cm.target.kind == "llvm" else None
            rep["profile"] = {"wall_ms": prof["wall_ms"], "kernels": prof["kernels"],
                              "rows": profile_rows(prof, cm.kernels, roof),
                              "table": format_profile(prof, cm.kernels, roof),
                              **({"roof": roof.source} if roof is not None else {})}
    return rep


def ort_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("onnxruntime") is not None


def _hist_lines(before: dict[str, int] | None, after: dict[str, int]) -> list[str]:
    ops = list(dict.fromkeys([*(before or {}), *after]))
    lines = [f"  {'op':<28}" + ("  before" if before is not None else "") + "   after"]
    for op in ops:
        b = f"{(before or {}).get(op, 0):>8}" if before is not None else ""
        lines.append(f"  {op:<28}{b}{after.get(op, 0):>8}")
    return lines


def to_text(rep: dict[str, Any]) -> str:
    a = rep["artifact"]
    kind = "integer" if rep["integer"] else "float"
    lines = [f"artifact   {a['file']} ({a['bytes'] / 1e3:.1f} kB): {a['backend']}, {a['target']}, {kind}",
             "versions   " + ", ".join(f"{k} {v}" for k, v in a["versions"].items()),
             "inputs     " + ", ".join(f"'{n}' {t}" for n, t in rep["signature"]["inputs"]),
             "outputs    " + ", ".join(f"'{n}' {t}" for n, t in rep["signature"]["outputs"])]
    if "stages" in rep:
        lines += ["", f"compile ({rep['compile_s']:.1f} s):", *(f"  {s}" for s in rep["stages"])]
    if rep.get("pass_times"):
        lines += ["", *passes_text(rep["pass_times"])]
    lines += ["", "ops:", *_hist_lines(rep.get("ops_before"), rep["ops_after"])]
    if rep.get("quant_rows"):
        from passes.quant_report import format_report
        lines += ["", "quantization (SQNR vs float on the calibration data):",
                  *("  " + ln for ln in format_report(rep["quant_rows"]).splitlines())]
    if "memory" in rep:
        lines += ["", *memory_text(rep["memory"])]
    if "energy" in rep:
        from compiler.energy import format_energy
        lines += ["", "energy per inference (estimate):", format_energy(rep["energy"])]
    if "accuracy" in rep:
        acc = rep["accuracy"]
        lines += ["", f"accuracy vs onnxruntime FP32 on {acc['batches']} batches: cosine mean "
                      f"{acc['cosine_mean']:.6f} (min {acc['cosine_min']:.6f}), max |diff| {acc['max_abs_diff']:.3g}"
                  + (f", top-1 agreement {acc['top1_agreement']:.4f}" if "top1_agreement" in acc else "")]
    if "latency" in rep:
        lat = rep["latency"]
        lines += ["", f"latency ({lat['threads']} thread(s), {lat['repeat']} calls each, interleaved):",
                  *("  " + ln for ln in lat["table"].splitlines())]
        rt = lat["runtimes"]
        if "onnxruntime FP32" in rt:
            r = rt["dyc"]["median_ms"] / rt["onnxruntime FP32"]["median_ms"]
            lines.append(f"  ratio dyc / onnxruntime FP32 = {r:.2f}x")
    if "profile" in rep:
        lines += ["", rep["profile"]["table"]]
    for n in rep.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines) + "\n"


_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;max-width:70em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #ddd}
td.n{text-align:right;font-variant-numeric:tabular-nums}.bar{background:#4a7ebb;height:12px}
.bar.ort{background:#c77c2e}pre{background:#f6f6f6;padding:.5em}img{max-width:100%}"""


def _energy_html(en: dict[str, Any], img: str = "") -> list[str]:
    """The energy section: energy and counts per op, the activation traffic, the split, the sources."""
    from compiler.energy import energy_by_kind, human, joules
    e = html.escape
    total = en["pJ_per_inference"] or 1.0
    rows = [(e(op), joules(o["pJ"]), f"{o['pJ'] / total:.1%}", _bar(o["pJ"] / total),
             e(", ".join(f"{k} {human(v)}" for k, v in o["counts"].items())))
            for op, o in sorted(en["by_op"].items(), key=lambda kv: -kv[1]["pJ"])]
    a = en["activations"]
    rows.append(("activations", joules(a["pJ"]), f"{a['pJ'] / total:.1%}", _bar(a["pJ"] / total),
                 e(f"dram_bytes {human(a['dram_bytes'])} ({a['model']})")))
    split = ", ".join(f"{k} {joules(v)}" for k, v in energy_by_kind(en).items())
    missing = (f"<p>not counted (no rule; missing from the total): {e(', '.join(en['uncounted']))}</p>"
               if en["uncounted"] else "")
    return ['<section id="energy"><h2>Energy per inference (estimate)</h2>',
            f"<p>{joules(en['pJ_per_inference'])} per inference: operation counts of the final IR times "
            f"the table below, not a measurement. {e(split)}</p>", img,
            _table(["op", "energy", "share", "", "counts"], rows, {1, 2}), missing,
            f"<p>table: {e(en['table_source'])}</p></section>"]


def _img(images: dict[str, str], section: str, alt: str) -> str:
    """The <img> of `section`'s picture, or nothing when it has none."""
    name = images.get(section)
    return f'<p><img src="{html.escape(name)}" alt="{html.escape(alt)}"></p>' if name else ""


def to_html(rep: dict[str, Any], images: dict[str, str] | None = None) -> str:
    """The page; `images` maps a section id to its PNG (next to index.html)."""
    images = images or {}
    e = html.escape
    a = rep["artifact"]
    parts = [f"<h1>{e(Path(a['file']).name)}</h1>", '<section id="artifact"><h2>Artifact</h2>',
             _table(["", ""], [("target", e(a["target"])), ("backend", e(a["backend"])),
                               ("arithmetic", "integer" if rep["integer"] else "float"),
                               ("size", f"{a['bytes'] / 1e3:.1f} kB"),
                               ("inputs", e(", ".join(f"{n} {t}" for n, t in rep["signature"]["inputs"]))),
                               ("outputs", e(", ".join(f"{n} {t}" for n, t in rep["signature"]["outputs"]))),
                               *((f"version {k}", e(str(v))) for k, v in a["versions"].items())]),
             "</section>"]
    if "stages" in rep:
        parts += ['<section id="compile"><h2>Compile</h2>',
                  f"<p>{rep['compile_s']:.1f} s in all</p><pre>{e(chr(10).join(rep['stages']))}</pre></section>"]
    if rep.get("pass_times"):
        parts += passes_html(rep["pass_times"], _img(images, "passes", "time per pass"))
    before, after = rep.get("ops_before"), rep["ops_after"]
    ops = list(dict.fromkeys([*(before or {}), *after]))
    head = ["op", *(["before"] if before is not None else []), "after", ""]
    peak = max(after.values(), default=1)
    rows = [(e(op), *([str(before.get(op, 0))] if before is not None else []), str(after.get(op, 0)),
             _bar(after.get(op, 0) / peak)) for op in ops]
    parts += ['<section id="ops"><h2>Ops</h2>', _table(head, rows, {1, 2}), "</section>"]
    if rep.get("quant_rows"):
        qr = rep["quant_rows"]
        top = max([r["sqnr_db"] for r in qr if r["sqnr_db"] is not None] or [1.0])
        rows = [(e(str(r["layer"])), e(r["op"]), str(r["bits"]), str(r["weight_bits"]),
                 f"{r['scale']:.4g}" if r["scale"] is not None else "-",
                 "-" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}",
                 "-" if r.get("sqnr_lost_db") is None else f"{r['sqnr_lost_db']:.1f}",
                 _bar((r["sqnr_db"] or 0) / top)) for r in qr]
        from passes.quant_report import worst_layers
        worst = ", ".join(f"{e(str(r['layer']))} ({r['sqnr_lost_db']:.1f} dB)" for r in worst_layers(qr))
        parts += ['<section id="quantization"><h2>Quantization (SQNR vs float)</h2>',
                  _img(images, "quantization", "SQNR per layer"),
                  *([f"<p>most SQNR lost over the layer's inputs: {worst}</p>"] if worst else []),
                  _table(["layer", "op", "bits", "w bits", "scale", "SQNR dB", "lost dB", ""], rows, {2, 3, 4, 5, 6}),
                  "</section>"]
    if "memory" in rep:
        parts += memory_html(rep["memory"], _img(images, "memory", "memory timeline"))
    if "energy" in rep:
        parts += _energy_html(rep["energy"], _img(images, "energy", "energy by op"))
    if "accuracy" in rep:
        acc = rep["accuracy"]
        rows = [("batches", acc["batches"]), ("cosine mean", f"{acc['cosine_mean']:.6f}"),
                ("cosine min", f"{acc['cosine_min']:.6f}"), ("max |diff|", f"{acc['max_abs_diff']:.3g}")]
        if "top1_agreement" in acc:
            rows.append(("top-1 agreement", f"{acc['top1_agreement']:.4f}"))
        parts += ['<section id="accuracy"><h2>Accuracy vs onnxruntime FP32</h2>', _table(["", ""], rows),
                  "</section>"]
    if "latency" in rep:
        rt = rep["latency"]["runtimes"]
        peak = max(s["median_ms"] for s in rt.values())
        rows = [(e(n), f"{s['median_ms']:.4f}", f"{s['min_ms']:.4f}", f"{s['max_ms']:.4f}", f"{s['p90_ms']:.4f}",
                 _bar(s["median_ms"] / peak, "" if n == "dyc" else "ort")) for n, s in rt.items()]
        parts += [f'<section id="latency"><h2>Latency ({rep["latency"]["threads"]} thread(s), ms)</h2>',
                  _table(["runtime", "median", "min", "max", "p90", ""], rows, {1, 2, 3, 4}), "</section>"]
    if "profile" in rep:
        rows = [(e(r["kernel"]), e(r["op"] or "-"), e(", ".join(r["nodes"][:3]) + (" ..." if len(r["nodes"]) > 3 else "")),
                 str(r["calls"]), f"{r['ms']:.4f}", f"{r['share']:.1%}",
                 f"{r['rate']:.2f} {r['unit']}" if "rate" in r else "-",
                 f"{r['roof']:.0%}" if "roof" in r else "-", _bar(r["share"])) for r in rep["profile"]["rows"]]
        roof = f"<p>roofline: {e(rep['profile']['roof'])}</p>" if "roof" in rep["profile"] else ""
        parts += ['<section id="kernels"><h2>Per kernel (instrumented runs)</h2>',
                  _img(images, "kernels", "time per kernel"),
                  _table(["kernel", "op", "node", "calls", "ms", "share", "rate", "roof", ""], rows,
                         {3, 4, 5, 6, 7}), roof, "</section>"]
    for n in rep.get("notes", []):
        parts.append(f"<p>note: {e(n)}</p>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>dyc report: {e(Path(a['file']).name)}"
            f"</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n")


def report(args: argparse.Namespace) -> int:
    if args.repeat < 1:
        raise InvalidInput(f"--repeat must be >= 1, got {args.repeat}")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"-o {out}: exists and is not a folder")
    with tempfile.TemporaryDirectory() as tmp:
        rep = build_report(args, Path(tmp))
        from compiler.tools.plots import draw_all
        (Path(tmp) / "png").mkdir()
        images = draw_all(rep, Path(tmp) / "png")
        pngs = {name: (Path(tmp) / "png" / name).read_bytes() for name in images.values()}
    text = to_text(rep)
    page = to_html(rep, images)
    data = json.dumps({k: v for k, v in rep.items() if k not in ("latency", "profile")} |
                      {k: {kk: vv for kk, vv in rep[k].items() if kk != "table"} for k in ("latency", "profile")
                       if k in rep} | {"images": images}, indent=2, default=str).encode()
    out.mkdir(parents=True, exist_ok=True)      # only now: a failure above leaves nothing behind
    for name, png in pngs.items():
        write_atomic(out / name, lambda f, png=png: f.write(png))
    write_atomic(out / "report.json", lambda f: f.write(data))
    write_atomic(out / "report.txt", lambda f: f.write(text.encode()))
    write_atomic(out / "index.html", lambda f: f.write(page.encode()))
    sys.stdout.write(text)
    print(f"wrote {out / 'index.html'}, report.txt, report.json" + "".join(f", {n}" for n in pngs),
          file=sys.stderr)
    return 0


def report_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(lambda: report(args), args.debug)
