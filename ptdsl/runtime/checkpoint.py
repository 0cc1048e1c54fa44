"""Checkpoints: the trainable models in Hugging Face's layout (weights.py: the policy as
`save_pretrained` writes it, so `from_pretrained("OUTPUT/checkpoint-N")` works, as with
a TRL checkpoint) beside accelerate's save_state (optimizer, schedule, random states),
written atomically (a temporary directory renamed into place, so a run killed mid-save
leaves the previous checkpoint intact), the step counter and a manifest of file sizes
beside it, and the choice --resume makes: the newest checkpoint that passes every
check, with each newer one it skipped and why.

A checkpoint is checked completely before anything is loaded, because accelerate's
load_state loads the model before the optimizer and the random states: a file that
fails halfway would leave a half-restored run that no fallback can undo."""
from __future__ import annotations

import json
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ptdsl.runtime.errors import RuntimeSetupError

PREFIX = "checkpoint-"
STATE = "trainer_state.json"
MANIFEST = "manifest.json"   # file → size in bytes when saved
_NUMBERED = re.compile(rf"{PREFIX}(\d+)")


@dataclass(frozen=True)
class Layout:
    """The files a checkpoint of this run holds (weights.py's names, and accelerate's)."""

    policy: str = "config.json"        # the policy's Hugging Face folder marker (adapter_config.json: LoRA)
    heads: tuple[str, ...] = ()        # value heads (NAME_head.safetensors)
    critics: tuple[str, ...] = ()      # critics (NAME/ folders)
    optimizer: str = "optimizer.bin"   # accelerate's; an FSDP2 run's own is optimizer.pt
    custom: int = 1      # objects registered for checkpointing (the LR schedule)
    process: int = 0     # each process restores its own random state
    scaler: bool = False
    experience: bool = False  # experiences feed several steps: each process saves the one in progress

    def files(self, legacy: bool = False) -> list[str]:
        if legacy:  # ptdsl 0.2's: accelerate saved every prepared model (model.safetensors, model_1, …)
            n = 1 + len(self.heads) + len(self.critics)
            names = [f"model{'' if i == 0 else f'_{i}'}.safetensors" for i in range(n)]
        else:
            names = [self.policy] + [f"{h}_head.safetensors" for h in self.heads] + \
                [f"{c}/config.json" for c in self.critics]
        names += [self.optimizer] + [f"custom_checkpoint_{i}.pkl" for i in range(self.custom)]
        names += [f"random_states_{self.process}.pkl", STATE] + (["scaler.pt"] if self.scaler else [])
        return names + ([experience_file(self.process)] if self.experience else [])


def legacy(path: Path) -> bool:
    """A checkpoint written by ptdsl 0.2 (accelerate's model files, no Hugging Face folder)."""
    return not any((path / m).is_file() for m in ("config.json", "adapter_config.json")) and \
        (path / "model.safetensors").is_file()


def own_model_files(accelerator) -> None:
    """Let weights.py write and read the models of a checkpoint, not accelerate (which would write
    the prepared trunk's `lm.`-prefixed names); a 0.2 checkpoint is still loaded by accelerate."""
    accelerator.register_save_state_pre_hook(lambda models, weights, folder: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, folder: None if legacy(Path(folder)) else models.clear())


def experience_file(process: int) -> str:
    """The experience in progress on one process (runtime/experience.py), a torch.save file."""
    return f"experience_{process}.pt"


@dataclass(frozen=True)
class Found:
    path: Path
    step: int
    saved: dict   # trainer_state.json: step, the loss's running statistics, guard counters


def save(accelerator, output: Path, step: int, saved: dict | None = None, keep: int = 2,
         experience=None, write=None) -> Path:
    """`experience` (this process's experience in progress, plain data) is written beside the
    state when the run's experiences feed several steps; `write(folder)` (every process calls
    it) writes the models (weights.write)."""
    final = output / f"{PREFIX}{step}"
    tmp = output / f".{PREFIX}{step}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if write is not None:
        write(tmp)
    if experience is not None:
        import torch
        torch.save(experience, tmp / experience_file(accelerator.process_index))
    accelerator.wait_for_everyone()  # every process's files are on disk before the manifest lists them
    if accelerator.is_main_process:
        (tmp / STATE).write_text(json.dumps({**(saved or {}), "step": step}))
        sizes = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps({"files": sizes}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in sorted(numbered(output))[:-keep]:
            shutil.rmtree(old[1], ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def numbered(output: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every folder named checkpoint-<step>."""
    out = []
    for p in output.glob(f"{PREFIX}*"):
        m = _NUMBERED.fullmatch(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return out


def choose(output: Path, total: int, layout: Layout) -> tuple[Found | None, list[tuple[Path, str]]]:
    """The newest valid checkpoint for a run of `total` steps, and (folder, reason) for every
    checkpoint folder skipped on the way (newer ones that failed a check, misnamed ones)."""
    skipped = [(p, f"not named `{PREFIX}<step>`") for p in sorted(output.glob(f"{PREFIX}*"))
               if p.is_dir() and not _NUMBERED.fullmatch(p.name)]
    for step, path in sorted(numbered(output), reverse=True):
        saved, reason = _read_state(path, step, total)
        reason = reason or problem(path, layout)
        if reason is None:
            return Found(path, step, saved), skipped
        skipped.append((path, reason))
    return None, skipped


def _read_state(path: Path, step: int, total: int) -> tuple[dict, str | None]:
    f = path / STATE
    if not f.is_file():
        return {}, f"no {STATE} (an incomplete save)"
    try:
        saved = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        return {}, f"{STATE} is not valid JSON ({exc})"
    got = saved.get("step") if isinstance(saved, dict) else None
    if not isinstance(got, int) or isinstance(got, bool):
        return {}, f"{STATE} has no integer `step`"
    if got != step:
        return {}, f"{STATE} says step {got}, the folder's name step {step}"
    if got < 1 or got > total:
        return {}, f"step {got} is not one of this run's steps (1 to {total})"
    return saved, None


def problem(path: Path, layout: Layout) -> str | None:
    """Why the files of a checkpoint cannot be loaded, or None: every file this run needs is
    there, at the size the manifest recorded, readable, and the weights are finite."""
    sizes = {}
    if (path / MANIFEST).is_file():
        try:
            sizes = json.loads((path / MANIFEST).read_text())["files"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return f"{MANIFEST} is unreadable"
    names = sorted(set(layout.files(legacy(path))) | set(sizes))
    missing = [f"`{name}`" for name in names if not (path / name).is_file()]
    if missing:
        return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
    for name in names:
        f = path / name
        if name in sizes and f.stat().st_size != sizes[name]:
            return f"`{name}` has {f.stat().st_size} bytes, {sizes[name]} when saved (truncated or overwritten)"
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        reason = _unreadable(f)
        if reason:
            return f"`{f.relative_to(path).as_posix()}` {reason}"
    return None


def _unreadable(f: Path) -> str | None:
    if f.suffix == ".safetensors":
        return _bad_weights(f)
    if f.suffix in (".bin", ".pkl", ".pt"):  # torch.save's zip format: a cut file loses its central directory
        try:
            with zipfile.ZipFile(f):
                return None
        except (zipfile.BadZipFile, OSError):
            return "is not a complete torch file (truncated?)"
    return None


def _bad_weights(f: Path) -> str | None:
    import torch
    from safetensors import SafetensorError, safe_open
    bad = 0
    try:
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                t = st.get_tensor(k)
                if t.is_floating_point():
                    bad += int((~torch.isfinite(t)).sum())
    except (SafetensorError, OSError, RuntimeError) as exc:
        return f"is unreadable ({exc})"
    return f"holds {bad:,} non-finite weights" if bad else None


def load_experience(found: Found, process: int):
    """The experience in progress this process saved (plain tensors, lists and strings)."""
    import torch
    return torch.load(found.path / experience_file(process), weights_only=True)


def load(accelerator, found: Found, read=None) -> tuple[int, dict]:
    """Restore a checked checkpoint: (its step, its trainer_state.json). `read(folder)` (every
    process calls it) loads the models weights.py wrote."""
    try:
        accelerator.load_state(str(found.path))
        if read is not None and not legacy(found.path):
            read(found.path)
    except Exception as exc:  # noqa: BLE001 — checked files that still do not fit this run
        raise RuntimeSetupError(
            f"cannot load {found.path}: {type(exc).__name__}: {exc}",
            help="its files passed every check but do not fit this run (another model, method or LoRA "
                 "setting?); a partly loaded state cannot fall back to an older checkpoint: start "
                 "without --resume, or in a new --output") from None
    return found.step, found.saved
