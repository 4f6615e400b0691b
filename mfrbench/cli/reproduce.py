"""``mfrbench reproduce``: the whole study (Table II and Table III) as one resumable command."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from mfrbench.cli import cli


def _names(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def _failed_stages_only() -> bool:
    """In a ``finally``: did the run end with failed stages (helpers finish their work) rather than an
    interruption (helpers are stopped)?"""
    import sys

    from mfrbench.errors import MfrbenchError

    return isinstance(sys.exc_info()[1], MfrbenchError)


def publish_report(graph, out: Path) -> Path | None:
    """Copy the report stage's folder to ``OUT/report`` (a stable path; the stage folder stays as it is);
    the CLI adds the study's record (``stages.csv``, ``study.json``) beside it."""
    folder = graph.folder("report")
    if not (folder / "stage.json").is_file():
        return None
    dest, tmp = out / "report", out / ".report.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(folder, tmp)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


def publish_to(report: Path, dest: Path) -> Path:
    """Copy ``OUT/report`` into ``dest`` (a committed results folder): what the report wrote replaces the old
    copy; files of the user's own there (its README.md) stay. The store's own plots are left out: the HTML
    report holds the same ROC/CMC curves, and they would double the folder (the study keeps them)."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in report.iterdir():
        if item.name in (".lock", "stage.json"):
            continue
        target = dest / item.name
        if target.is_dir():
            shutil.rmtree(target)
        if item.is_dir():
            shutil.copytree(item, target, ignore=lambda d, names: ["plots"] if Path(d).name == "results" else [])
        else:
            shutil.copy2(item, target)
    return dest


@cli.command("reproduce")
@click.option("--profile", type=click.Choice(["smoke", "cpu", "paper"]), default="smoke", show_default=True,
              help="smoke: seconds per stage (CI); cpu: ~2.5 h on 2 cores; paper: the paper's schedule (GPU).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Study folder (stages, logs, report).")
@click.option("--generators", default=None, help="Comma list of mtf,cyclegan,iamgan,mfgan [default: all].")
@click.option("--losses", default=None, help="Comma list of softmax,triplet,cosface,arcface [default: profile's].")
@click.option("--benchmarks", default=None, help="Comma list of rmfrd,lfw-masked,mfr2 [default: profile's].")
@click.option("--no-ablations", is_flag=True, help="Leave out MFGAN's three Table III ablations.")
@click.option("--only", "only", multiple=True, metavar="STAGE",
              help="Run only this stage (glob patterns: 'eval-*') and what it needs. Repeatable.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Change a profile setting (quality_n, n_boot, faces_limit, ...; ft.KEY for the fine-tunes).")
@click.option("--dry-run", is_flag=True, help="Print the plan (stages, cached, estimated time) and stop.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes sharing the study, one per core (--jobs 2 on 2 cores): each takes the next stage "
                   "whose needs are met.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Torch threads of every stage, in each of the --jobs processes (1 is fastest on a shared "
                   "machine; the same value gives the same numbers with any --jobs).")
@click.option("--with-paper/--no-paper", default=True, show_default=True, help="The paper's values beside ours.")
@click.option("--root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Data root [default: $MFRBENCH_DATA or ../shared/data].")
@click.option("--publish", type=click.Path(file_okay=False), default=None,
              help="Also copy the report to this folder (e.g. results/cpu), keeping its README.md.")
def reproduce_cmd(profile, out, generators, losses, benchmarks, no_ablations, sets, only, dry_run, seed, workers,
                  jobs, threads, with_paper, root, publish) -> None:
    """Run the MFGAN study end to end: align -> Seg, Det -> GANs -> Masked-CelebA from each generator ->
    recognizers for every Table II cell and Table III row (+ an unmasked-data row) -> evaluations ->
    quality -> tables and an HTML report in OUT/report/.

    Every stage is keyed by a hash of its inputs and options: rerunning skips what is done, a changed
    option reruns exactly what depends on it, and a killed run resumes.

    \b
    Examples:
      mfrbench reproduce --profile smoke --out study-smoke
      mfrbench reproduce --profile cpu --out study-cpu --dry-run
      mfrbench reproduce --profile cpu --out study-cpu --only 'gan-*'
    """
    from mfrbench.cli import jobs as J
    from mfrbench.cli.study import StudyOptions, build_study, write_study_record
    from mfrbench.stages import Graph

    opts = StudyOptions(profile=profile, generators=_names(generators) or StudyOptions.generators,
                        losses=_names(losses), benchmarks=_names(benchmarks), ablations=not no_ablations, seed=seed,
                        workers=workers, threads=threads, with_paper=with_paper, root=root, sets=sets)
    outp = Path(out)
    cmd = f"mfrbench reproduce --profile {profile} --out {out}" + "".join(
        f" --{k} {v}" for k, v in (("generators", generators), ("losses", losses), ("benchmarks", benchmarks),
                                   ("root", root)) if v) + (" --no-ablations" if no_ablations else "") + "".join(
        f" --set {v}" for v in sets)
    sp = opts.study_profile()
    graph = Graph(build_study(opts, outp), outp, default_rates={f"{sp.name}:{k}": v for k, v in sp.rates.items()},
                  rerun_hint=lambda name: f"{cmd} --only {name}", where=sp.where)
    if dry_run:
        click.echo(graph.describe(graph.plan(only)))
        return
    helper = J.is_helper()
    J.share_threads(jobs)
    from mfrbench.runs import set_threads

    set_threads(threads)  # every stage of every process: a number must not depend on --jobs (float sums)
    args = ["reproduce", "--profile", profile, "--out", str(out), "--seed", str(seed), "--workers", str(workers),
            "--threads", str(threads), "--with-paper" if with_paper else "--no-paper"] + [
        a for k, v in (("--generators", generators), ("--losses", losses), ("--benchmarks", benchmarks),
                       ("--root", root)) if v for a in (k, v)] + (["--no-ablations"] if no_ablations else []) + [
        a for v in sets for a in ("--set", v)] + [a for v in only for a in ("--only", v)]
    procs = J.start_helpers(jobs, args, outp) if jobs > 1 and not helper else []
    if procs:
        click.echo(f"{jobs} processes share the study ({J.threads_per_job(jobs)} thread(s) each); "
                   f"helpers' logs: {outp / 'logs'}/job-*.log")
    ok = False
    try:
        graph.run(only, echo=click.echo, progress=not helper)
        ok = True
    finally:  # a partial study still shows what it has (the report lists the missing cells)
        for line in J.wait_helpers(procs, stop=not ok and not _failed_stages_only()):
            click.echo(line, err=True)
        rep = None if helper else publish_report(graph, outp)  # a helper leaves the report to the first process
        if rep is not None:
            write_study_record(graph, opts, cmd, rep, jobs=jobs)
            if publish:
                click.echo(f"published: {publish_to(rep, Path(publish))}")
            click.echo(f"report: {rep} (tables/<benchmark>/, html/report.html)")
