"""The run directory: the one contract through which stages hand work to each other.

    RUN/config.json                 RunConfig (model, data, train): written by the stage that owns it
    RUN/data/meta.json              token counts, tokenizer roles, shard list      (llmcycle prepare)
    RUN/data/tokenizer.json         the tokenizer, trained here or imported (+ tokenizer_meta.json)
    RUN/data/{train,val}_NNN.bin    memory-mapped token shards
    RUN/checkpoints/step_N/         model.safetensors, optimizer.pt, rng.json, state.json  (train)
                                    (sharded runs: dcp/ and rng_R.json per rank)
    RUN/metrics.jsonl               one JSON object per logged step / evaluation
    RUN/samples.md, report.md, loss.png, summary.json                          (llmcycle run)
    RUN/eval/TASK.json              per-example evaluation results                 (llmcycle eval)
    RUN/tokenizer_config.json, generation_config.json, chat_template.jinja, import.json
                                    prompt conventions of an imported model        (llmcycle import)
    RUN/finetune.json, adapter.safetensors   a fine-tune's settings and results; LoRA adapters alone
    RUN/.lock                       held by the one process writing the run (train, prepare, finetune)
    RUN/.discarding.tmp, .discarded.tmp   what an --overwrite is removing (`discard_training`)
    RUN/finetune.json               data, method, LoRA settings; at the end the measured result  (llmcycle finetune)
    RUN/adapter.safetensors         a LoRA fine-tune's adapter tensors alone        (llmcycle finetune)

No other module spells one of these names: it asks this module for the path. A directory under
`checkpoints/` is written atomically (`llmcycle.atomic`), so any `step_N` that exists is whole.
This module is torch-free so the planner and `--help` can read runs without importing torch;
`load_model` imports the model code only when called.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from llmcycle.atomic import TMP_SUFFIX, atomic_write_text, fsync_dir, stale_temporaries
from llmcycle.config import RunConfig

CONFIG = "config.json"
DATA = "data"
META = "meta.json"
TOKENIZER = "tokenizer.json"
CHECKPOINTS = "checkpoints"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"
DCP = "dcp"
METRICS = "metrics.jsonl"
SAMPLES = "samples.md"
REPORT = "report.md"
LOSS_PLOT = "loss.png"
SUMMARY = "summary.json"
EVAL = "eval"
TOKENIZER_CONFIG = "tokenizer_config.json"
GENERATION_CONFIG = "generation_config.json"
CHAT_TEMPLATE = "chat_template.jinja"
IMPORT_RECORD = "import.json"
FINETUNE = "finetune.json"
ADAPTER = "adapter.safetensors"

STEP_DIR = re.compile(r"^step_(\d+)$")
# what `llmcycle run` makes, and so may remake in a directory it made before
LIFECYCLE_OUTPUTS = (DATA, CHECKPOINTS, METRICS, SAMPLES, REPORT, LOSS_PLOT, SUMMARY)


# ------------------------------------------------------------------ config


def config_path(run: Path) -> Path:
    return Path(run) / CONFIG


def is_run(path: Path) -> bool:
    return config_path(path).is_file()


def load_config(run: Path) -> RunConfig:
    return RunConfig.load(config_path(run))


def save_config(run: Path, cfg: RunConfig) -> None:
    """Write config.json atomically. Only the stage that acts on a config saves it (train saves
    the config it trains, prepare the data config it prepared)."""
    cfg.save(config_path(run))


def owning_run(path: Path) -> Path:
    """The run directory of `path`: the run itself, or the run a `checkpoints/step_N` belongs to."""
    path = Path(path)
    if is_run(path):
        return path
    if STEP_DIR.match(path.name) and path.parent.name == CHECKPOINTS and is_run(path.parent.parent):
        return path.parent.parent
    raise ValueError(f"{path}: no {CONFIG} there or in its run directory; give a run directory or one of its "
                     f"{CHECKPOINTS}/step_N folders")


# ------------------------------------------------------------------ data and tokenizer


def data_dir(run: Path) -> Path:
    return Path(run) / DATA


def meta_path(data: Path) -> Path:
    """meta.json of a data directory (RUN/data, or one source's folder of a mixture)."""
    return Path(data) / META


def tokenizer_path(run: Path) -> Path:
    """Where a run's tokenizer lives: RUN/data/tokenizer.json, for trained and imported runs alike.
    Runs imported by llmcycle 0.1 kept it at the top of the run; that place is still read."""
    path = data_dir(run) / TOKENIZER
    legacy = Path(run) / TOKENIZER
    return legacy if not path.is_file() and legacy.is_file() else path


def load_tokenizer(run: Path):
    from llmcycle.data.tokenizer import Tokenizer  # the tokenizers library only when a tokenizer is needed

    from llmcycle.data.shards import check_tokenizer  # (the same reason)

    path = tokenizer_path(run)
    if not path.is_file():
        raise ValueError(f"no {TOKENIZER} in {data_dir(run)}: run `llmcycle prepare --run {run}` first "
                         "(or `llmcycle import` a model)")
    tok = Tokenizer.load(path)
    check_tokenizer(data_dir(run), path, tok.vocab_size)  # the one the run's data (and so its model) was made with
    return tok


# ------------------------------------------------------------------ checkpoints


def checkpoints_dir(run: Path) -> Path:
    return Path(run) / CHECKPOINTS


def step_dir(run: Path, step: int) -> Path:
    return checkpoints_dir(run) / f"step_{step:06d}"


def step_of(ckpt: Path) -> int:
    m = STEP_DIR.match(Path(ckpt).name)
    if not m:
        raise ValueError(f"{ckpt} is not a checkpoint directory (step_N)")
    return int(m.group(1))


def list_checkpoints(run: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_dir(run)
    if not root.is_dir():
        return []
    steps = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(steps)]


def latest_checkpoint(run: Path) -> Path | None:
    ckpts = list_checkpoints(run)
    return ckpts[-1] if ckpts else None


def prune_checkpoints(run: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (keep <= 0 keeps all). Each is first renamed to a
    temporary name, so a process killed while deleting leaves debris, never a half `step_N`."""
    for old in list_checkpoints(run)[:-keep] if keep > 0 else []:
        doomed = old.with_name(f".{old.name}.del{TMP_SUFFIX}")
        os.rename(old, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def remove_partial_checkpoints(run: Path) -> list[str]:
    """Delete temporary checkpoint dirs left by a killed process; returns their names. A re-saved
    step whose writer died between its two renames (`.step_N.old.tmp` and no `step_N`) is put back,
    and so is a run whose `--overwrite` was cut short before its commit (`discard_training`)."""
    recovered = _recover_discard(run)
    stale = stale_temporaries(checkpoints_dir(run), prefix=".step_")
    for p in stale:
        final = p.with_name(p.name[1:-len(f".old{TMP_SUFFIX}")]) if p.name.endswith(f".old{TMP_SUFFIX}") else None
        if final is not None and STEP_DIR.match(final.name) and not final.exists():
            os.rename(p, final)
            continue
        shutil.rmtree(p, ignore_errors=True)
    return recovered + [p.name for p in stale]


# `--overwrite` empties a run of its training in one step: what it discards is moved into DISCARDING,
# which is renamed DISCARDED (the commit) and only then deleted. Found after a kill, DISCARDING is
# moved back (the earlier run stays whole) and DISCARDED deleted (it is gone): never a half-deleted run.
DISCARDING = f".discarding{TMP_SUFFIX}"
DISCARDED = f".discarded{TMP_SUFFIX}"
TRAINING_OUTPUTS = (CHECKPOINTS, METRICS)  # what a fresh `train` replaces


def discard_training(run: Path) -> list[str]:
    """Remove the run's checkpoints and metrics as one atomic step (`train --overwrite`, `prepare
    --overwrite`); returns the names removed."""
    run = Path(run)
    _recover_discard(run)
    names = [name for name in TRAINING_OUTPUTS if (run / name).exists()]
    if not names:
        return []
    staging, done = run / DISCARDING, run / DISCARDED
    staging.mkdir()
    for name in names:
        os.rename(run / name, staging / name)
    os.rename(staging, done)  # the commit: from here on the earlier run is gone
    fsync_dir(run)
    shutil.rmtree(done, ignore_errors=True)
    return names


def _recover_discard(run: Path) -> list[str]:
    """Finish what a `discard_training` killed midway left: roll back before its commit, forward after."""
    run, notes = Path(run), []
    staging, done = run / DISCARDING, run / DISCARDED
    if staging.is_dir():
        for p in sorted(staging.iterdir()):
            if not (run / p.name).exists():
                os.rename(p, run / p.name)
        shutil.rmtree(staging, ignore_errors=True)
        notes.append(f"{DISCARDING} (an --overwrite cut short before it deleted anything; the earlier run was put back)")
    if done.exists():
        shutil.rmtree(done, ignore_errors=True)
        notes.append(f"{DISCARDED} (what an --overwrite had already discarded)")
    return notes


def weights_path(run_or_ckpt: Path) -> Path:
    """model.safetensors of a checkpoint dir, or of a run dir's newest checkpoint."""
    p = Path(run_or_ckpt)
    if (p / WEIGHTS).is_file():
        return p / WEIGHTS
    ckpt = latest_checkpoint(p)
    if ckpt is None:
        raise ValueError(f"no checkpoint in {p}: train it first (`llmcycle train --run {p}`) or import a model")
    return ckpt / WEIGHTS


def optimizer_path(ckpt: Path) -> Path:
    return Path(ckpt) / OPTIMIZER


def state_path(ckpt: Path) -> Path:
    return Path(ckpt) / STATE


def rng_path(ckpt: Path, rank: int | None = None) -> Path:
    """rng.json (single process) or rng_R.json (rank R of a sharded checkpoint)."""
    return Path(ckpt) / ("rng.json" if rank is None else f"rng_{rank}.json")


def dcp_dir(ckpt: Path) -> Path:
    return Path(ckpt) / DCP


def read_state(ckpt: Path) -> dict:
    path = state_path(ckpt)
    if not path.is_file():
        raise ValueError(f"{path} is missing: {ckpt} is not a complete checkpoint; resume from an earlier one "
                         "or start over with --overwrite")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is damaged ({e}); resume from an earlier checkpoint") from e


def load_model(run: Path, device="cpu"):
    """Rebuild the model of a run directory and load its newest weights; eval mode.
    Returns (model, RunConfig)."""
    from llmcycle.checkpoint import load_weights  # torch only when a model is loaded: rundir stays torch-free
    from llmcycle.models import build_model  # (the same reason)

    if adapter_path(run).is_file():
        raise ValueError(f"{run} is a LoRA fine-tune (base weights + adapters): merge it into plain weights first, "
                         f"`llmcycle finetune --run {run} --merge {run}-merged`, and use {run}-merged")
    cfg = load_config(run)
    model = build_model(cfg.model).to(device)
    load_weights(model, weights_path(run))
    return model.eval(), cfg


# ------------------------------------------------------------------ logs and reports


def metrics_path(run: Path) -> Path:
    return Path(run) / METRICS


def read_metrics(run: Path) -> list[dict]:
    path = metrics_path(run)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def samples_path(run: Path) -> Path:
    return Path(run) / SAMPLES


def report_path(run: Path) -> Path:
    return Path(run) / REPORT


def loss_plot_path(run: Path) -> Path:
    return Path(run) / LOSS_PLOT


def summary_path(run: Path) -> Path:
    return Path(run) / SUMMARY


def eval_dir(run: Path) -> Path:
    return Path(run) / EVAL


def eval_path(run: Path, task: str) -> Path:
    return eval_dir(run) / f"{task}.json"


def clear_lifecycle_outputs(run: Path) -> None:
    """Remove what an earlier `llmcycle run` made in `run`, so it can be made again (its training
    outputs first, atomically: `discard_training`)."""
    discard_training(run)
    for name in LIFECYCLE_OUTPUTS:
        p = Path(run) / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


# ------------------------------------------------------------------ prompt conventions


@dataclass
class PromptFiles:
    """What an imported model's side files say about building its prompts."""

    add_bos_token: bool | None = None  # None: the file does not say
    chat_template: str | None = None
    eos_token_ids: list[int] = field(default_factory=list)  # every id that ends a reply


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_prompt_files(run: Path) -> PromptFiles:
    run = Path(run)
    tcfg = _json(run / TOKENIZER_CONFIG)
    template = tcfg.get("chat_template")
    if (run / CHAT_TEMPLATE).is_file():
        template = (run / CHAT_TEMPLATE).read_text(encoding="utf-8")
    eos = _json(run / GENERATION_CONFIG).get("eos_token_id")
    eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    add_bos = tcfg.get("add_bos_token")
    return PromptFiles(add_bos_token=None if add_bos is None else bool(add_bos), chat_template=template,
                       eos_token_ids=[int(i) for i in eos_ids])


def write_prompt_files(run: Path, tokenizer_config: dict, generation_config: dict,
                       chat_template: str | None) -> None:
    """The Hugging Face side files, as `llmcycle import` and `export --to hf` write them."""
    run = Path(run)
    atomic_write_text(run / TOKENIZER_CONFIG, json.dumps(tokenizer_config, indent=2) + "\n")
    atomic_write_text(run / GENERATION_CONFIG, json.dumps(generation_config, indent=2) + "\n")
    if chat_template:
        atomic_write_text(run / CHAT_TEMPLATE, chat_template)


def import_record_path(run: Path) -> Path:
    return Path(run) / IMPORT_RECORD


# ------------------------------------------------------------------ one writer at a time

LOCK = ".lock"


@contextlib.contextmanager
def writer_lock(run: Path, verb: str):
    """Hold RUN/.lock for as long as `verb` writes into the run, so a second writer refuses at once.

    An `fcntl` lock belongs to the process: the kernel releases it when the holder dies, however it
    dies, so a lock file left by a killed process is simply taken over (and said so). A clean release
    deletes the file; an acquirer that locked a file deleted meanwhile tries again."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    path = run / LOCK
    while True:
        f = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise ValueError(f"{run} is being written by {holder}; wait for it to finish or stop it "
                             "(one writer per run directory)") from None
        if path.exists() and os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
            break
        f.close()  # the holder released (and deleted) it between our open and our lock
    f.seek(0)
    previous = f.read().strip()
    if previous:
        print(f"note: took over the lock of {previous}, which is no longer running")
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} (llmcycle {verb}, since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
    f.flush()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking: nobody can lock this file and then see it vanish
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


# ------------------------------------------------------------------ fine-tuning (llmcycle finetune)


def finetune_path(run: Path) -> Path:
    return Path(run) / FINETUNE


def adapter_path(run: Path) -> Path:
    return Path(run) / ADAPTER


def model_files(run: Path) -> dict[str, Path]:
    """What a model's run needs besides its weights to be prompted (tokenizer, its roles, prompt
    conventions): {path relative to a run directory: the file in `run`}. A fine-tuned run copies them."""
    tok = tokenizer_path(run)
    files = {f"{DATA}/{TOKENIZER}": tok, f"{DATA}/{tok.stem}_meta.json": tok.with_name(f"{tok.stem}_meta.json")}
    files.update({name: Path(run) / name for name in (TOKENIZER_CONFIG, GENERATION_CONFIG, CHAT_TEMPLATE)})
    return {rel: src for rel, src in files.items() if src.is_file()}
