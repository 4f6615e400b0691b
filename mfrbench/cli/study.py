"""The MFGAN study as stages: raw data -> Seg, Det -> GANs -> Masked-CelebA -> recognizers -> evals -> tables.

Built here, in the CLI layer, because its stages call the plugins (generators, recognizers); the
engine that keys, caches, resumes and reports them is the core's :mod:`mfrbench.stages`.

The graph (``G``: generators, ``L``: losses, ``B``: benchmarks)::

    faces (celeba-rec -> aligned manifest) ---------------------------------.
      |-> aux-data (mtf, random wearing) -> seg, det                          |
    real-masked (kit photos, aligned; 25 % held out by key hash)              |
      |-> gan-<m> for the learned generators and MFGAN's ablations            |
      '-> mask-<g> (Masked-CelebA from each generator) -> quality-<g>         |
    fr-base (unmasked faces, the profile's recipe) <--------------------------'
      '-> fr-<g>-<l>: fine-tune on mask-<g> (Table II: G x L; Table III: ablations x arcface)
          fr-none-<l>: the same fine-tune on the unmasked faces (the unmasked-data row)
            '-> eval-<run>-<b> -> report (tables, HTML, provenance)

Profiles: ``smoke`` (seconds per stage: proves the graph), ``cpu`` (the GANs' and recognizers' ``cpu``
profiles, fine-tunes from one base; about 2.5 h on 2 cores), ``paper`` (450K GAN steps at batch 1,
recognizers from scratch on Masked-CelebA; a GPU job).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from mfrbench.errors import DataNotFoundError, MfrbenchError
from mfrbench.stages import Stage, StageContext, StageSkipped

LEARNED = ("cyclegan", "iamgan", "mfgan")
ABLATIONS = ("mfgan-no-inv", "mfgan-no-cor", "mfgan-no-sty", "mfgan-plain")  # the last: issue 14's plain-output row
GENERATORS = ("mtf", *LEARNED)
LOSSES = ("softmax", "triplet", "cosface", "arcface")
BENCHMARKS = ("rmfrd", "lfw-masked", "mfr2")
#: The dataset each benchmark reads (its absence is a one-line skip).
BENCH_DATA = {"rmfrd": "rmfrd", "lfw-masked": "lfw", "lfw": "lfw", "mfr2": "mfr2"}
HOLDOUT = 0.25  # share of real masked photos never trained on: the real side of FID/KID (as the GANs' cpu profile)


@dataclass(frozen=True)
class StudyProfile:
    """What a profile changes; every value joins the stage keys through the stage params."""

    name: str
    faces_limit: int | None          # celeba-rec crops used (None: all)
    aux_limit: int | None            # faces masked by mtf to train Seg/Det
    gan_profile: str
    aux_profile: str
    fr_profile: str | None           # recognizer recipe of the base (and, from scratch, of every cell)
    finetune: bool                   # cells fine-tune from fr-base (cpu) or train from scratch (paper)
    ft: dict = field(default_factory=dict)   # fine-tune options
    quality_n: int = 50
    n_boot: int = 1000
    losses: tuple[str, ...] = LOSSES
    benchmarks: tuple[str, ...] = ("rmfrd", "lfw-masked", "mfr2")
    #: default seconds per unit of work, measured on the shared 2-core machine (replaced by this machine's
    #: own rates as stages finish: $MFRBENCH_CACHE/stage-rates.json)
    rates: dict = field(default_factory=dict)
    #: what the plan's estimates mean: CPU wall time here, or GPU-hours (assumed until a GPU run measures its own)
    where: str = "of work on this machine"


PROFILES = {
    "smoke": StudyProfile(
        "smoke", faces_limit=120, aux_limit=120, gan_profile="smoke", aux_profile="smoke", fr_profile="smoke",
        finetune=True, ft={"epochs": 1, "max_steps": 3, "batch_size": 16, "lr": 0.01, "workers": 0},
        quality_n=8, n_boot=50, losses=("arcface",), benchmarks=("rmfrd",),
        rates={"faces": 0.01, "mtf": 0.01, "aux-seg": 10, "aux-det": 10, "gan": 20, "generate": 0.02, "quality": 0.3,
               "fr": 15, "ft": 5, "eval": 20, "report": 5, "real-masked": 0.1}),
    "cpu": StudyProfile(
        "cpu", faces_limit=None, aux_limit=1000, gan_profile="cpu", aux_profile="cpu", fr_profile="cpu",
        finetune=True, ft={"epochs": 1, "lr": 0.02, "warmup_epochs": 0.2, "backbone_lr_mult": 0.5, "workers": 1},
        quality_n=50, n_boot=1000,
        # seg (1,500 steps at 112 px) costs about 10x det: each its own kind, so each has its own measured rate
        rates={"faces": 0.01, "mtf": 0.01, "aux-seg": 1800, "aux-det": 200, "gan": 600, "generate": 0.02,
               "quality": 0.5, "fr": 600, "ft": 100, "eval": 40, "report": 20, "real-masked": 0.1}),
    "paper": StudyProfile(
        "paper", faces_limit=None, aux_limit=None, gan_profile="paper", aux_profile="cpu", fr_profile=None,
        finetune=False, ft={}, quality_n=1000, n_boot=1000,
        rates={"faces": 0.01, "mtf": 0.01, "aux-seg": 600, "aux-det": 100, "gan": 450_000 * 0.05, "generate": 0.005,
               "quality": 0.05, "fr": 3 * 3600, "eval": 60, "report": 20, "real-masked": 0.1},
        where="GPU-hours on one GPU (assumed rates: 0.05 s per 256-px GAN step, 3 h per recognizer; replaced by "
              "your GPU's own as stages finish)"),
}


@dataclass
class StudyOptions:
    profile: str = "smoke"
    generators: tuple[str, ...] = GENERATORS
    losses: tuple[str, ...] | None = None
    benchmarks: tuple[str, ...] | None = None
    ablations: bool = True
    seed: int = 0
    workers: int = 1
    threads: int | None = 1
    with_paper: bool = True
    root: str | None = None      # data root (default: $MFRBENCH_DATA / ../shared/data)

    sets: tuple[str, ...] = ()  # --set KEY=VALUE on the profile (``ft.KEY`` for a fine-tune option)

    def study_profile(self) -> StudyProfile:
        if self.profile not in PROFILES:
            raise MfrbenchError(f"unknown profile {self.profile!r}; profiles: {', '.join(PROFILES)}")
        return apply_sets(PROFILES[self.profile], self.sets)


def apply_sets(sp: StudyProfile, sets: tuple[str, ...]) -> StudyProfile:
    """``--set quality_n=20``, ``--set ft.epochs=2``: the profile with those values (typed as its fields)."""
    import dataclasses
    import typing

    import yaml

    from mfrbench.config import coerce, parse_sets

    hints = typing.get_type_hints(StudyProfile)
    ft, top = dict(sp.ft), {}
    for key, value in parse_sets(sets).items():
        if key.startswith("ft."):
            ft[key[3:]] = yaml.safe_load(value)
        elif key in hints and key not in ("name", "ft", "rates"):
            top[key] = coerce(value, hints[key], f"--set {key}")
        else:
            valid = sorted(k for k in hints if k not in ("name", "ft", "rates"))
            raise MfrbenchError(f"--set {key}: not a study setting; valid: {', '.join(valid)}, ft.<train-fr option>")
    return dataclasses.replace(sp, ft=ft, **top)


def _data(name: str, root: str | None) -> Path:
    from mfrbench.paths import data_root, dataset_dir

    if name == "celeba-rec":
        base = data_root(root, required=True)
        p = Path(base) / "celeba-rec"
        if not (p / "train.rec").is_file():
            raise DataNotFoundError(f"celeba-rec not found under {base} (the study's face set: insightface "
                                    "RecordIO with train.rec/train.idx); pass --root to the data root")
        return p
    return dataset_dir(name, None if root is None else Path(root) / name)


def _missing(name: str, root: str | None):
    def check() -> str | None:
        try:
            _data(name, root)
        except DataNotFoundError as e:
            return str(e)
        return None
    return check


# --------------------------------------------------------------------------- stage functions
def _faces(ctx: StageContext) -> dict:
    """celeba-rec's crops -> an aligned manifest (the crops are already in the ArcFace frame: the template's
    five points are their landmarks, the 68 points are found on the crop), so every generator masks them."""
    from mfrbench.align import AlignConfig, align_dataset, template_for
    from mfrbench.datasets import Dataset, input_record
    from mfrbench.imageio import atomic_write_bytes
    from mfrbench.recordio import RecordFile, open_recordset

    p = ctx.stage.params
    rs = open_recordset(p["source"])
    n = len(rs) if p["limit"] is None else min(p["limit"], len(rs))
    crops = ctx.out / "crops"
    f = RecordFile(rs.rec)
    keys = []
    try:
        for i in range(n):
            key = f"{int(rs.labels[i]):05d}/{i:06d}.jpg"
            path = crops / key
            if not path.is_file():
                atomic_write_bytes(path, f.record(int(rs.offsets[i])).image)
            keys.append(key)
    finally:
        f.close()
    lmk5 = tuple(template_for(112).ravel().tolist())

    def records():
        for key in keys:
            yield input_record(crops / key, key.split("/")[0], False, "celeba-rec", key, lmk5=lmk5)

    ds = Dataset("celeba-rec", crops, records)
    meta = align_dataset(ds, ctx.out / "aligned", cfg=AlignConfig(landmarks="annotations"), progress=False,
                         resume=ctx.resume)
    return {"inputs": meta["inputs"], "ok": meta["ok"], "identities": len({k.split("/")[0] for k in keys})}


def _real_masked(ctx: StageContext) -> dict:
    """The kit's real masked photos, aligned once (``aligned/``: the GANs' Mask domain, which holds out the
    same photos by the same rule), split by the GAN data's hold-out rule into ``holdout/`` (never trained
    on: the real side of FID/KID) and ``train/`` (an aligned manifest: MFGAN's style references)."""
    import pandas as pd

    from mfrbench.align import AlignConfig, align_dataset
    from mfrbench.datasets import create_dataset
    from mfrbench.generators.gan.data import held_out_keys

    ds = create_dataset("masked-photos", ctx.stage.params["root"])
    aligned = ctx.out / "aligned"
    align_dataset(ds, aligned, cfg=AlignConfig(landmarker="none", ext=".png"), progress=False, resume=ctx.resume)
    df = pd.read_csv(aligned / "manifest.csv", keep_default_na=False, dtype=str)
    df = df[df["status"] == "ok"]
    held = held_out_keys(df["key"].tolist(), ctx.stage.params["holdout"])
    (ctx.out / "holdout").mkdir(exist_ok=True)
    for key, rel in zip(df["key"][held], df["out_path"][held]):
        dst = ctx.out / "holdout" / (hashlib.sha1(key.encode()).hexdigest()[:12] + ".png")
        if not dst.exists():
            shutil.copyfile(aligned / rel, dst)
    train = ctx.out / "train"
    for rel in df["out_path"][~held]:
        (train / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(aligned / rel, train / rel)
    df[~held].to_csv(train / "manifest.csv", index=False)
    meta = json.loads((aligned / "manifest.json").read_text())  # counts of the subset: the row-count check holds
    meta.update(ok=int((~held).sum()), skipped=0, inputs=int((~held).sum()), skip_reasons={})
    (train / "manifest.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return {"aligned": int(len(df)), "holdout": int(held.sum()), "train": int((~held).sum())}


def _generate(ctx: StageContext) -> dict:
    """One masked variant of the faces (Masked-CelebA from generator ``method``), with its grid."""
    from mfrbench.generate import generate_dataset, save_sample_grid
    from mfrbench.generators.base import generator_factory

    p = ctx.stage.params
    kw = dict(p["kwargs"])
    if "gan" in ctx.deps:
        kw["checkpoint"] = str(ctx.deps["gan"] / "run")
    if "seg" in ctx.deps and p["method"] in ("cyclegan", "iamgan"):
        kw["seg_checkpoint"] = str(ctx.deps["seg"] / "run")
    if p["method"].startswith("mfgan"):
        kw.update(reference=str(ctx.deps["real-masked"] / "train"), seed=p["seed"])
    out = ctx.out / "masked"
    method = "mfgan" if p["method"].startswith("mfgan") else p["method"]  # an ablation is an MFGAN run's variant
    meta = generate_dataset(generator_factory(method, **kw), out, manifest=ctx.deps["faces"] / "aligned",
                            limit=p["limit"], workers=p["workers"], seed=p["seed"], progress=False)
    if meta["ok"]:
        save_sample_grid(out)
    return {"inputs": meta["inputs"], "ok": meta["ok"], "skip_reasons": meta.get("skip_reasons", {}),
            "generator": meta["generator"]}


def _aux(ctx: StageContext) -> dict:
    from mfrbench.generators.seg import train_aux

    p = ctx.stage.params
    run = ctx.out / "run"
    m = train_aux(p["module"], [str(ctx.deps["aux-data"] / "masked")], run,
                  unmasked=[str(ctx.deps["faces"] / "aligned")], profile=p["profile"],
                  resume=(run / "checkpoints" / "last.pt").is_file(), threads=p["threads"], progress=False)
    return {k: v for k, v in m.items() if isinstance(v, (int, float, str))}


def _gan_config_hash(method: str, profile: str) -> str:
    """The hash of the config a ``gan-<method>`` stage resolves (its judges' paths aside: they are its deps).

    A profile is a name for settings that live in code: keying on the name alone kept a stage cached after
    the profile's meaning changed (MFGAN's ``cpu`` cycle weight), so the stage is keyed on what it resolves."""
    from mfrbench.generators.gan.config import gan_config_hash, resolve_config

    train, model = resolve_config(method, profile, train={"holdout_masks": HOLDOUT})
    return gan_config_hash(train, model, profile=profile)


def _gan(ctx: StageContext) -> dict:
    from mfrbench.generators.gan.train import train_gan

    p = ctx.stage.params
    seg, det = str(ctx.deps["seg"] / "run"), str(ctx.deps["det"] / "run")
    model, train = {}, {}
    if p["method"].startswith("mfgan"):
        model = {"det_checkpoint": det, "seg_checkpoint": seg}
    elif p["method"] == "iamgan":
        model, train = {"seg_checkpoint": seg}, {"readout_det": det}
    else:
        train = {"readout_seg": seg, "readout_det": det}
    run = ctx.out / "run"
    resume = (run / "checkpoints" / "last.pt").is_file()
    train["holdout_masks"] = p["holdout"]  # the study's held-out photos are never trained on, in any profile
    s = train_gan(None if resume else p["method"], None if resume else str(ctx.deps["faces"] / "aligned"),
                  None if resume else str(ctx.deps["real-masked"] / "aligned"), run,
                  profile=None if resume else p["profile"], model_overrides=None if resume else model,
                  train_overrides=None if resume else train, resume=resume, threads=p["threads"], progress=False)
    q = {}
    if (run / "quality.json").is_file():
        q = json.loads((run / "quality.json").read_text())
    return {"steps": s.get("step"), "seconds": s.get("seconds"),
            "readout": {k: q.get(k) for k in ("seg_correct", "det_correct_wearing", "nonmask_full", "realism",
                                              "style") if k in q}}


def _train_fr(ctx: StageContext) -> dict:
    """The base recognizer (unmasked faces) or one cell's: fine-tuned from the base on one masked variant
    (cpu), or from scratch (paper). The run's generator record comes from its data's manifest."""
    from mfrbench.generators.augment import parse_mask_aug
    from mfrbench.recognizers.config import resolve_config
    from mfrbench.recognizers.train import train

    p = ctx.stage.params
    data = str(ctx.deps["data"] / ("masked" if p["data"] != "faces" else "aligned"))
    opts = {"data": (data,), "out": str(ctx.out / "run"), "head": p["loss"], "seed": p["seed"], "progress": False,
            **p["options"]}
    if "base" in ctx.deps:
        opts["init"] = str(ctx.deps["base"] / "run")
    budget = opts.pop("time_budget_s", "keep")  # None here means "no budget", not "the profile's"
    sets = ["time_budget_s=null"] if budget is None else []
    cfg = resolve_config(options=opts, sets=sets, profile=p["profile"]).config
    resume = (ctx.out / "run" / "checkpoints" / "last.pt").is_file()
    s = train(cfg, resume=resume, augment_factory=parse_mask_aug)
    return {k: v for k, v in s.items() if isinstance(v, (int, float, str)) and not k.startswith("_")}


def _eval(ctx: StageContext) -> dict:
    from mfrbench.cli.evaluate import protocol_kwargs
    from mfrbench.evaluate import EvalConfig, evaluate

    p = ctx.stage.params
    cfg = EvalConfig(benchmark=p["benchmark"], root=p["root"], seed=p["seed"], n_boot=p["n_boot"],
                     protocol_kwargs=protocol_kwargs(p["benchmark"]))
    try:
        row = evaluate(str(ctx.deps["run"] / "run"), cfg, results_dir=ctx.out / "results",
                       cache_dir=ctx.out.parent.parent / "cache", workers=p["workers"], progress=False)
    except DataNotFoundError as e:
        raise StageSkipped(str(e)) from e
    return {k: row.get(k) for k in ("eval_id", "acc", "rank1", "rank5", "coverage") if k in row}


def _quality(ctx: StageContext) -> dict:
    from mfrbench.quality import run_quality

    p = ctx.stage.params
    real = ctx.deps["real-masked"] / "holdout"
    n = min(p["n"], len(list(real.iterdir())))
    nonmask_fn = None
    if "seg" in ctx.deps:
        from mfrbench.cli.evaluate import seg_keep_fn

        nonmask_fn = seg_keep_fn(ctx.deps["seg"] / "run")
    q = run_quality(ctx.deps["mask"] / "masked", real=real, results_dir=ctx.out / "results", limit=n, real_limit=n,
                    kid_subset=min(1000, n), seed=p["seed"], progress=False, nonmask_fn=nonmask_fn,
                    nonmask_source=f"seg:{ctx.deps['seg'] / 'run'}" if "seg" in ctx.deps else None)
    return {k: v for k, v in q.items() if isinstance(v, (int, float, str))}


def _report(ctx: StageContext) -> dict:
    """Tables (CSV/Markdown/LaTeX) per benchmark and the HTML report, from exactly this plan's stages."""
    from mfrbench.reports import write_reports
    from mfrbench.results import merge_stores

    p = ctx.stage.params
    store = ctx.out / "results"
    if store.exists():  # a resumed report starts again: it is cheap and must not double rows
        shutil.rmtree(store)
    got = {n: ctx.deps[n] for n in ctx.stage.soft_deps if n in ctx.deps}
    stores = [d / "results" for n, d in sorted(got.items()) if (d / "results").is_dir()]
    merge_stores(stores, store)
    out = {"benchmarks": {}, "stores": len(stores)}
    for b in p["benchmarks"]:
        rep = write_reports(store, ctx.out / "tables" / b, benchmark=b, with_paper=p["with_paper"])
        out["benchmarks"][b] = {t: len(rep["missing"][t]) for t in ("table2", "table3")}
    try:
        from mfrbench.report_html import write_html_report
    except ImportError:  # the HTML report lands separately
        return out
    generated = {n.removeprefix("mask-"): str(d / "masked") for n, d in got.items() if n.startswith("mask-")}
    html = write_html_report(store, ctx.out / "html", benchmarks=list(p["benchmarks"]), generated=generated,
                             with_paper=p["with_paper"])
    out["html"] = str(Path(html).relative_to(ctx.out))
    return out


# --------------------------------------------------------------------------- the study's record
def code_commit() -> dict:
    """The git commit of the code that ran (and whether its tree had changes), or ``None`` outside a checkout."""
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": head, "dirty": bool(dirty)}


def _span_s(rows: list[dict]) -> float | None:
    """Seconds from the earliest start to the latest finish of the done stages (None when there are none)."""
    from datetime import datetime

    done = [r for r in rows if r["status"] == "done" and r.get("started") and r.get("finished")]
    if not done:
        return None
    t0 = min(datetime.fromisoformat(r["started"]) for r in done)
    return (max(datetime.fromisoformat(r["finished"]) for r in done) - t0).total_seconds()


def stages_markdown(rows: list[dict]) -> str:
    """Wall time per kind of stage (count, total, median), then every stage: the README's time table."""
    from mfrbench.stages import fmt_seconds

    kinds: dict[str, list[float]] = {}
    for r in rows:
        if r["status"] == "done":
            kinds.setdefault(r["kind"], []).append(float(r["seconds"] or 0))
    out = ["| kind | stages | total | median |", "|---|---:|---:|---:|"]
    for k, v in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
        v = sorted(v)
        out.append(f"| {k} | {len(v)} | {fmt_seconds(sum(v))} | {fmt_seconds(v[len(v) // 2])} |")
    total = sum(sum(v) for v in kinds.values())
    out += [f"| **all** | {sum(len(v) for v in kinds.values())} | **{fmt_seconds(total)}** | |", ""]
    span = _span_s(rows)
    if span is not None:  # with --jobs N the stage times add up to more than the clock saw
        out += [f"Clock time from the first stage's start to the last one's finish: **{fmt_seconds(span)}** "
                f"(stage times add up to {fmt_seconds(total)}; the span also holds any time no process ran).", ""]
    out += [
            "| stage | status | wall | attempt | note |", "|---|---|---:|---:|---|"]
    for r in rows:
        wall = fmt_seconds(float(r["seconds"])) if r["seconds"] is not None else "-"
        out.append(f"| {r['stage']} | {r['status']} | {wall} | {r['attempt'] or '-'} | {r['reason'][:80]} |")
    return "\n".join(out) + "\n"


def write_study_record(graph, opts: StudyOptions, command: str, dest: Path, *, jobs: int = 1) -> None:
    """``DEST/stages.csv`` (every stage: status, wall seconds, attempt, times; ``stages.md`` as tables) and
    ``DEST/study.json`` (the
    command, code commit, resolved profile, seed, data, software and machine): what a table cell came from."""
    import csv
    import dataclasses
    import io
    import platform

    from mfrbench.imageio import atomic_write_bytes

    rows = graph.ledger()
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["stage"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(dest / "stages.csv", buf.getvalue().encode())
    atomic_write_bytes(dest / "stages.md", stages_markdown(rows).encode())
    versions = {}
    for mod in ("torch", "numpy", "scipy", "sklearn"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    done = [r for r in rows if r["status"] == "done"]
    record = {"command": command, "jobs": jobs, "span_s": _span_s(rows), **code_commit(),
              "profile": dataclasses.asdict(opts.study_profile()),
              "options": {k: v for k, v in dataclasses.asdict(opts).items() if k != "sets"}, "sets": list(opts.sets),
              "seed": opts.seed, "data_root": str(_data("celeba-rec", opts.root).parent),
              "python": platform.python_version(), "versions": versions,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()},
              "stages": {k: sum(1 for r in rows if r["status"] == k) for k in sorted({r["status"] for r in rows})},
              "seconds_done": round(sum(float(r["seconds"] or 0) for r in done), 1),
              "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_bytes(dest / "study.json", (json.dumps(record, indent=2, default=str) + "\n").encode())


# --------------------------------------------------------------------------- the graph
def build_study(opts: StudyOptions, out: str | Path) -> list[Stage]:
    """The stages of one study (see the module docstring); what is run comes from ``opts`` only."""
    sp = opts.study_profile()
    gens = tuple(opts.generators)
    bad = [g for g in gens if g not in GENERATORS]
    if bad:
        raise MfrbenchError(f"--generators: unknown {', '.join(bad)}; valid: {', '.join(GENERATORS)}")
    losses = tuple(opts.losses or sp.losses)
    bad = [lo for lo in losses if lo not in LOSSES]
    if bad:
        raise MfrbenchError(f"--losses: unknown {', '.join(bad)}; valid: {', '.join(LOSSES)}")
    benches = tuple(opts.benchmarks or sp.benchmarks)
    bad = [b for b in benches if b not in BENCH_DATA]
    if bad:
        raise MfrbenchError(f"--benchmarks: unknown {', '.join(bad)}; valid: {', '.join(BENCH_DATA)}")
    root, seed, thr = opts.root, opts.seed, opts.threads
    rec = _data("celeba-rec", root)  # the one input without which nothing runs: a one-line error now
    from mfrbench.datasets import create_dataset

    masked_photos = create_dataset("masked-photos", None if root is None else Path(root) / "masked-faces").root
    ablations = ABLATIONS if (opts.ablations and "mfgan" in gens) else ()
    learned = [g for g in (*gens, *ablations) if g != "mtf"]
    stages = [
        Stage("faces", _faces, {"source": str(rec), "limit": sp.faces_limit}, inputs=(str(rec),), kind="faces",
              units=sp.faces_limit or 6274),
        Stage("real-masked", _real_masked, {"root": str(masked_photos), "holdout": HOLDOUT},
              inputs=(str(masked_photos),), kind="real-masked", units=400),
    ]
    if learned:
        stages.append(Stage("aux-data", _generate, {"method": "mtf", "kwargs": {"mask_type": "mix",
                            "wearing": "random"}, "limit": sp.aux_limit, "seed": seed, "workers": opts.workers},
                            roles={"faces": "faces"}, kind="mtf", units=sp.aux_limit or 6274))
        for module in ("seg", "det"):
            stages.append(Stage(module, _aux, {"module": module, "profile": sp.aux_profile, "threads": thr},
                                roles={"aux-data": "aux-data", "faces": "faces"}, kind=f"aux-{module}"))
    for m in learned:
        stages.append(Stage(f"gan-{m}", _gan, {"method": m, "profile": sp.gan_profile, "threads": thr,
                                               "holdout": HOLDOUT, "config": _gan_config_hash(m, sp.gan_profile)},
                            roles={"faces": "faces", "real-masked": "real-masked", "seg": "seg", "det": "det"},
                            kind="gan"))
    n_faces = sp.faces_limit or 6274
    for g in (*gens, *ablations):
        roles = {"faces": "faces", "real-masked": "real-masked"}
        kwargs = {"mask_type": "mix", "wearing": "correct"} if g == "mtf" else {}
        if g != "mtf":
            roles.update(gan=f"gan-{g}", seg="seg")
        stages.append(Stage(f"mask-{g}", _generate, {"method": g, "kwargs": kwargs, "limit": None, "seed": seed,
                                                      "workers": opts.workers}, roles=roles,
                            kind="mtf" if g == "mtf" else "generate", units=n_faces))
        qroles = {"mask": f"mask-{g}", "real-masked": "real-masked"}
        if g != "mtf":  # one common Seg measures the non-mask area of outputs without exact maps
            qroles["seg"] = "seg"
        stages.append(Stage(f"quality-{g}", _quality, {"n": sp.quality_n, "seed": seed}, roles=qroles,
                            kind="quality", units=sp.quality_n))
    stages += _recognizer_stages(opts, sp, gens, ablations, losses, benches, Path(out))
    evals_and_quality = [s.name for s in stages if s.name.startswith(("eval-", "quality-", "mask-"))]
    stages.append(Stage("report", _report, {"benchmarks": list(benches), "with_paper": opts.with_paper},
                        soft_deps=tuple(evals_and_quality), kind="report"))
    for s in stages:  # a profile's rates are its own: a smoke GAN step says nothing about a cpu one
        s.kind = f"{sp.name}:{s.kind}"
    return stages


def _recognizer_stages(opts: StudyOptions, sp: StudyProfile, gens, ablations, losses, benches, out: Path
                       ) -> list[Stage]:
    """fr-base, one run per Table II cell (generator x loss), Table III row (ablation x arcface) and
    unmasked-data row (none x loss), and an eval stage per run and benchmark."""
    stages = []
    # no wall-time budget (the cpu recipe's 20 minutes): on a loaded machine it cut the base at 2 of 8 epochs,
    # and a stage's result must not depend on how busy the machine was
    base_opts = {"workers": 1 if sp.name != "smoke" else 0, "time_budget_s": None}
    if sp.finetune:
        stages.append(Stage("fr-base", _train_fr, {"data": "faces", "loss": "arcface", "seed": opts.seed,
                                                   "profile": sp.fr_profile, "options": base_opts},
                            roles={"data": "faces"}, kind="fr"))
    # loss-major, ArcFace first (Table III's loss): a study cut short still has whole columns of Table II
    cells = []
    for lo in sorted(losses, key=lambda x: x != "arcface"):
        cells += [(g, lo) for g in gens] + [(a, lo) for a in ablations if lo == "arcface"] + [("none", lo)]
    for g, lo in cells:
        roles = {"data": "faces" if g == "none" else f"mask-{g}"}
        if sp.finetune:
            roles["base"] = "fr-base"
        name = f"fr-{g}-{lo}"
        stages.append(Stage(name, _train_fr, {"data": "faces" if g == "none" else g, "loss": lo, "seed": opts.seed,
                                              "profile": sp.fr_profile, "options": {"time_budget_s": None, **sp.ft}},
                            roles=roles, kind="ft" if sp.finetune else "fr"))
        for b in benches:
            stages.append(Stage(f"eval-{g}-{lo}-{b}", _eval,
                                {"benchmark": b, "root": None if opts.root is None else str(Path(opts.root)
                                                                                           / BENCH_DATA[b]),
                                 "seed": opts.seed, "n_boot": sp.n_boot, "workers": opts.workers},
                                roles={"run": name}, kind="eval", requires=_missing(BENCH_DATA[b], opts.root)))
    return stages
