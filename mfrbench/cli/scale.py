"""Runs beyond one machine: ``mfrbench merge`` (shard folders -> one output) and ``mfrbench slurm-script``."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import click

from mfrbench.cli import cli

#: Commands that take --shard, and what their final job does with the shards.
SHARDABLE = ("align", "generate", "eval")


@cli.command("merge")
@click.argument("out", type=click.Path(file_okay=False))
@click.argument("shard_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
def merge_cmd(out: str, shard_dirs: tuple[str, ...]) -> None:
    """Join the shard folders of one `align` or `generate` run (--shard i/N) into OUT.

    Checks that the shards hold every input exactly once (same config and seed, every index
    0..N-1 once), applies the duplicate rule across them, links their files into OUT and writes
    the manifest one process would have written (byte-identical manifest.csv).

    \b
    Example:
      for i in 0 1 2; do mfrbench generate --manifest out/celeba-aligned --shard $i/3 --out out/mtf.shards/$i; done
      mfrbench merge out/celeba-mtf out/mtf.shards/0 out/mtf.shards/1 out/mtf.shards/2
    """
    from mfrbench.merge import merge_shards

    meta = merge_shards(out, list(shard_dirs), progress=True)
    reasons = ", ".join(f"{k}={v}" for k, v in meta["skip_reasons"].items()) or "none"
    click.echo(f"{len(shard_dirs)} shards, {meta['inputs']} inputs: {meta['ok']} ok, {meta['skipped']} skipped "
               f"({reasons})")
    click.echo(f"manifest: {Path(out) / 'manifest.csv'}")


def slurm_script(command: str, args: list[str], *, shards: int, out: str, cpus: int, time: str, mem: str | None,
                 partition: str | None, account: str | None, max_parallel: int | None, exe: str) -> str:
    """A bash script that writes two sbatch files and submits them: a job array (task i runs ``--shard i/N``)
    and a final job that starts when every task succeeded (``--dependency=afterok``).

    The final job runs ``mfrbench merge`` (``eval``: the same ``eval`` without ``--shard``, which assembles
    the shard embeddings from the shared cache and scores them). Shard folders and logs go to
    ``OUT.shards/`` (``eval``: ``OUT/slurm/``).
    """
    q = shlex.quote
    work = f"{out}.shards" if command != "eval" else f"{out}/slurm"
    sb = [f"#SBATCH --cpus-per-task={cpus}", f"#SBATCH --time={time}"]
    sb += [f"#SBATCH --{k}={v}" for k, v in (("mem", mem), ("partition", partition), ("account", account)) if v]
    argv = " ".join(q(a) for a in args)
    shard = f'--shard "$SLURM_ARRAY_TASK_ID/{shards}"'
    if command == "eval":
        task = f'"$MFRBENCH" eval {argv} --results {q(out)} --workers {cpus} {shard}'
        final = f'"$MFRBENCH" eval {argv} --results {q(out)} --workers {cpus}'
    else:
        task = f'"$MFRBENCH" {command} {argv} --workers {cpus} --out {q(work)}/"$SLURM_ARRAY_TASK_ID" {shard}'
        final = f'"$MFRBENCH" merge {q(out)} ' + " ".join(f"{q(work)}/{i}" for i in range(shards))
    array = f"0-{shards - 1}" + (f"%{max_parallel}" if max_parallel else "")
    what = "eval" if command == "eval" else "merge"
    return "\n".join([
        "#!/bin/bash",
        f"# Written by `mfrbench slurm-script {command}`: a Slurm job array of {shards} tasks (task i runs",
        f"# --shard i/{shards}) and a {what} job that starts once every task succeeded. Submit: `bash THIS_FILE`.",
        f"# A failed task is resubmitted alone and resumes where it stopped: sbatch --array=ID {work}/array.sbatch",
        "# (then submit the final job again: sbatch " + f"{work}/final.sbatch).",
        "set -euo pipefail",
        f'export MFRBENCH="${{MFRBENCH:-{exe}}}"',
        f"mkdir -p {q(work)}",
        f"cat > {q(work)}/array.sbatch <<'EOF'",
        "#!/bin/bash",
        f"#SBATCH --job-name=mfrbench-{command}",
        f"#SBATCH --array={array}",
        *sb,
        f"#SBATCH --output={work}/slurm-%A_%a.out",
        "set -euo pipefail",
        task,
        "EOF",
        f"cat > {q(work)}/final.sbatch <<'EOF'",
        "#!/bin/bash",
        f"#SBATCH --job-name=mfrbench-{command}-{what}",
        *sb,
        f"#SBATCH --output={work}/slurm-{what}-%j.out",
        "set -euo pipefail",
        final,
        "EOF",
        f"array_id=$(sbatch --parsable {q(work)}/array.sbatch)",
        f'final_id=$(sbatch --parsable --dependency=afterok:"${{array_id%%;*}}" {q(work)}/final.sbatch)',
        f'echo "submitted job array ${{array_id}} ({shards} shards) and {what} job ${{final_id}}"',
    ]) + "\n"


@cli.command("slurm-script", context_settings={"ignore_unknown_options": True})
@click.argument("command", type=click.Choice(SHARDABLE))
@click.option("--shards", type=click.IntRange(min=1), required=True, help="Array tasks (N of --shard i/N).")
@click.option("--out", required=True, help="Final output folder (eval: the results store).")
@click.option("--cpus", type=click.IntRange(min=1), default=4, show_default=True,
              help="CPUs per task (passed as --workers).")
@click.option("--time", "time_limit", default="04:00:00", show_default=True, help="Time limit per task.")
@click.option("--mem", default=None, help="Memory per task (e.g. 16G).")
@click.option("--partition", default=None)
@click.option("--account", default=None)
@click.option("--max-parallel", type=click.IntRange(min=1), default=None, help="At most this many tasks at once.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def slurm_script_cmd(command: str, shards: int, out: str, cpus: int, time_limit: str, mem: str | None,
                     partition: str | None, account: str | None, max_parallel: int | None,
                     args: tuple[str, ...]) -> None:
    """Print a Slurm job-array script for COMMAND (align, generate or eval) over N shards.

    Options after COMMAND and these options are COMMAND's own (without --out, --shard, --workers).
    The array's task i runs `mfrbench COMMAND ... --shard i/N`; a last job, started when every
    task succeeded, runs `mfrbench merge` (eval: the unsharded eval, which assembles the shards).

    \b
    Example:
      mfrbench slurm-script generate --shards 32 --out /scratch/ms1m-mtf --cpus 8 --time 02:00:00 \\
          --method mtf --manifest /scratch/ms1m-aligned --mask-type mix --seed 1 > mtf.sh
      bash mtf.sh
    """
    from mfrbench.errors import MfrbenchError

    args = [a for a in args if a != "--"]
    for bad in ("--out", "--shard", "--workers", "--results"):
        if any(a == bad or a.startswith(bad + "=") for a in args):
            raise MfrbenchError(f"{bad} is set by slurm-script itself (give --out/--cpus to slurm-script)")
    here = Path(sys.executable).with_name("mfrbench")  # this environment's entry point, if it has one
    exe = str(here) if here.is_file() else (shutil.which("mfrbench") or "mfrbench")
    click.echo(slurm_script(command, list(args), shards=shards, out=out, cpus=cpus, time=time_limit, mem=mem,
                            partition=partition, account=account, max_parallel=max_parallel, exe=exe), nl=False)
