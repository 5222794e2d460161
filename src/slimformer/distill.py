"""Knowledge distillation into a smaller student, with an Optuna search over alpha, T, learning rate and epochs
(and, when asked, the student's depth and feed-forward width).

Loss: alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T)),
plus optionally beta * (1 - cos) between the students' and teacher's last-layer [CLS] states, and the
intermediate-layer terms TinyBERT and MiniLM add: the MSE between every student layer's hidden states and
those of the teacher layer it stands for (through a learned projection when the widths differ; all real tokens),
and the KL between the last layers' self-attention distributions. The intermediate terms need the teacher's
per-token states, too large to cache, so the teacher runs alongside the student when they are asked for. The transfer
set is the training texts plus `augment` perturbed copies of each (words deleted, masked, replaced or
swapped), which carry the teacher's soft targets only: on a small dataset the teacher's answers on more
inputs than the labelled ones are what a student learns from it. The teacher's outputs on the transfer
set are computed once and cached: on a CPU the teacher's forward pass is the expensive part. The study
lives in an Optuna RDB storage (SQLite in the run directory by default) so an interrupted search resumes
and workers on several machines can share one study.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import warnings
from dataclasses import asdict, astuple, dataclass, field, replace
from pathlib import Path

import numpy as np

from .artifacts import check_max_length
from .cache import cache_dir, is_complete, output_error, read_manifest, write_json
from .data import Dataset, in_label_space
from .errors import DiskFullError, ModelError, OutputError, SlimformerError, disk_full, first_line
from .models import load_classifier, load_tokenizer, quiet_transformers, resolve
from .progress import console, progress_bar
from .training import TrainConfig, choosing_split, evaluate_splits, fit, save_classifier


class DistillError(SlimformerError):
    """A distillation request that cannot work (student/teacher mismatch, storage, trials)."""


@dataclass(frozen=True)
class DistillConfig:
    """Defaults: measured on TREC-6 (MiniLM-L6 teacher -> 3 layers; benchmarks/distill.py): two augmented
    copies per training text gave the best student; alpha/T/lr/epochs from the earlier Optuna search's region."""

    alpha: float = 0.5  # weight of the hard-label cross-entropy on labelled texts; 1 - alpha: the soft targets
    temperature: float = 2.0
    cosine_weight: float = 0.0  # beta of the optional [CLS] hidden-state cosine term
    hidden_weight: float = 0.0  # weight of the per-layer hidden-state MSE (TinyBERT); the teacher runs online
    attention_weight: float = 0.0  # weight of the last layer's attention-distribution KL (MiniLM)
    augment: int = 2  # perturbed copies of every training text, labelled by the teacher only
    unlabelled: str | None = None  # a file or packaged corpus of unlabelled texts (data.unlabelled), teacher-labelled
    unlabelled_limit: int = 20_000  # at most this many of them (a seeded sample)
    select_fraction: float = 0.0  # > 0: choose epochs and trials on this stratified slice of the training texts,
    # held out of training, instead of on validation (data.with_selection), so validation stays a fair budget check
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, lr=2.7e-4, precision="auto"))


@dataclass(frozen=True)
class SearchSpace:
    """Ranges Optuna samples from; the first trial always runs the given DistillConfig."""

    alpha: tuple[float, float] = (0.0, 1.0)  # 1.0: labelled texts learn from their labels alone
    temperature: tuple[float, float] = (1.0, 8.0)
    lr: tuple[float, float] = (5e-5, 5e-4)
    epochs: tuple[int, int] = (2, 8)
    layers: tuple[int, ...] = ()  # student depths to choose from (empty: the StudentSpec's)
    widths: tuple[float, ...] = ()  # fractions of the teacher's feed-forward neurons kept (empty: the StudentSpec's)


HYPER = ("alpha", "temperature", "lr", "epochs")  # the SearchSpace fields that are ranges


def distillation_loss(student_logits, teacher_logits, labels, alpha: float, temperature: float, labelled=None):
    """alpha * CE + (1 - alpha) * T^2 * KL(teacher_T || student_T), averaged over the batch (in float32).

    `labelled` (bool per example, default all): examples without a trustworthy label (augmented texts) get
    the soft term alone."""
    import torch
    import torch.nn.functional as F

    s, t = student_logits.float(), teacher_logits.float()
    hard = F.cross_entropy(s, labels, reduction="none")
    if alpha >= 1.0 and labelled is None:
        return hard.mean()
    soft = F.kl_div(F.log_softmax(s / temperature, -1), F.softmax(t / temperature, -1), reduction="none").sum(-1)
    weight = torch.full_like(hard, alpha) if labelled is None else torch.where(labelled, alpha, 0.0).to(hard)
    return (weight * hard + (1.0 - weight) * temperature ** 2 * soft).mean()


def augment_texts(texts: list[str], copies: int, mask_token: str, seed: int, rate: float = 0.15) -> list[str]:
    """`copies` perturbed versions of every text (all of the first copy, then the second...): each word is
    deleted, replaced by the mask token or by a random word of `texts` with probability rate/3 each, and in
    30% of the texts two neighbouring words swap. Deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    vocabulary = sorted({w for t in texts for w in t.split()})
    out = []
    for _ in range(copies):
        for text in texts:
            words = []
            for word in text.split():
                u = rng.random()
                if u >= rate:
                    words.append(word)
                elif u >= rate / 3:
                    words.append(mask_token if u < 2 * rate / 3 else vocabulary[rng.integers(len(vocabulary))])
            if len(words) > 2 and rng.random() < 0.3:
                i = rng.integers(len(words) - 1)
                words[i], words[i + 1] = words[i + 1], words[i]
            out.append(" ".join(words) or text)
    return out


def transfer_set(dataset: Dataset, augment: int, mask_token: str | None, seed: int,
                 unlabelled: list[str] = ()) -> tuple[Dataset, int]:
    """(the dataset with its train split grown by `augment` perturbed copies and the `unlabelled` texts, how many
    texts are labelled: the first ones)."""
    from .data import Split

    train = dataset["train"]
    if not augment and not unlabelled:
        return dataset, len(train)
    if augment and not mask_token:
        raise DistillError("--augment needs a tokenizer with a mask token; use --augment 0")
    texts = train.texts + augment_texts(train.texts, augment, mask_token, seed) + list(unlabelled)
    labels = np.concatenate([train.labels] * (augment + 1)  # augmented and unlabelled rows: a label, never used
                            + [np.zeros(len(unlabelled), dtype=train.labels.dtype)])
    return replace(dataset, splits={**dataset.splits, "train": Split(texts, labels)}), len(train)


def unlabelled_texts(config: DistillConfig, dataset: Dataset) -> list[str]:
    """The unlabelled texts `config` asks for, none of them in a split of `dataset` (data.unlabelled)."""
    if not config.unlabelled:
        return []
    from .data.unlabelled import held_out_free, load_unlabelled

    if config.unlabelled_limit < 1:
        raise DistillError("--unlabelled-limit must be at least 1")
    texts = held_out_free(load_unlabelled(config.unlabelled), dataset, config.unlabelled_limit, config.train.seed)
    if not texts:
        raise DistillError(f"every text of {config.unlabelled} is also in the labelled data; nothing to add")
    console.print(f"unlabelled texts: {len(texts):,} from {config.unlabelled}, labelled by the teacher")
    return texts


def cosine_loss(student_states, teacher_states):
    import torch.nn.functional as F

    return (1.0 - F.cosine_similarity(student_states.float(), teacher_states.float(), dim=-1)).mean()


def layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """The teacher layer each student layer stands for (uniform, ending with the last: 6 -> 3 gives 1, 3, 5)."""
    return [round((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


def hidden_state_loss(student_states, teacher_states, mask, projections=None):
    """Mean over the student's layers of the MSE between its hidden states and the mapped teacher layer's, over the
    real tokens (`mask`); `*_states` are the models' hidden_states tuples (embeddings first), `projections` one
    Linear per student layer where the widths differ."""
    n, m = len(teacher_states) - 1, len(student_states) - 1
    weight = mask.unsqueeze(-1).float()
    total = 0.0
    for i, t in enumerate(layer_map(n, m)):
        s = student_states[i + 1].float()
        if projections is not None:
            s = projections[i](s)
        diff = (s - teacher_states[t + 1].float()) ** 2 * weight
        total = total + diff.sum() / (weight.sum() * diff.shape[-1])
    return total / m


def attention_loss(student_attention, teacher_attention, mask):
    """KL(teacher || student) between the last layers' self-attention distributions (MiniLM), per head and real
    query token; heads are averaged first where the counts differ. Shapes [batch, heads, query, key]."""
    import torch

    s, t = student_attention.float(), teacher_attention.float()
    if s.shape[1] != t.shape[1]:
        s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    kl = (t * (torch.log(t.clamp_min(1e-9)) - torch.log(s.clamp_min(1e-9)))).sum(-1)  # [batch, heads, query]
    weight = mask.unsqueeze(1).float().expand_as(kl)
    return (kl * weight).sum() / weight.sum()


# ---- the student ------------------------------------------------------------------------------------------------

LAYER_FIELDS = ("num_hidden_layers", "n_layers", "num_layers")  # BERT-likes, DistilBERT, others


def layer_count(config) -> int:
    for name in LAYER_FIELDS:
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    raise ModelError(f"cannot tell how many layers a {config.model_type} model has")


def _layer_list(model, n: int):
    """(parent module, attribute) of the encoder's ModuleList of `n` transformer layers."""
    import torch

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n and name.endswith("layer"):
            parent, _, attr = name.rpartition(".")
            return model.get_submodule(parent), attr
    raise ModelError(f"cannot find the transformer layers of a {model.config.model_type} model")


KEEPS = ("spread", "bottom")  # which teacher layers a student cut from it keeps


def check_keep(keep: str) -> str:
    if keep not in KEEPS:
        raise DistillError(f"unknown layer choice '{keep}'; choose one of: {', '.join(KEEPS)}")
    return keep


def kept_layers(teacher_layers: int, student_layers: int, keep: str = "spread") -> list[int]:
    """The teacher layers a student of `student_layers` keeps. spread: every k-th, ending with the last one
    (DistilBERT-style init): 6 -> 3 keeps 1, 3, 5. bottom: the first ones, a contiguous stack whose every layer
    still reads the states it was trained on (top-layer dropping, Sajjad et al. 2020): 6 -> 3 keeps 0, 1, 2."""
    check_keep(keep)
    if student_layers < 1:
        raise DistillError("--student-layers must be at least 1")
    if student_layers >= teacher_layers:
        raise DistillError(f"a student of {student_layers} layers is not smaller than the teacher "
                           f"({teacher_layers} layers); choose fewer than {teacher_layers}")
    if keep == "bottom":
        return list(range(student_layers))
    return [round((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


def student_from_teacher(teacher, student_layers: int, keep: str = "spread"):
    """A copy of the teacher keeping `student_layers` of its transformer layers (kept_layers; and its embeddings
    and head)."""
    import torch

    n = layer_count(teacher.config)
    keep = kept_layers(n, student_layers, keep)
    student = copy.deepcopy(teacher)
    parent, attr = _layer_list(student, n)
    layers = getattr(parent, attr)
    setattr(parent, attr, torch.nn.ModuleList([layers[i] for i in keep]))
    for name in LAYER_FIELDS:
        if isinstance(getattr(student.config, name, None), int):
            setattr(student.config, name, student_layers)
    return student


def student_from_checkpoint(path: str, teacher, teacher_tokenizer, labels: list[str]):
    """Any HF checkpoint with the teacher's tokenizer and no more layers, given the teacher's label head."""
    from transformers import AutoModelForSequenceClassification

    resolved = resolve(path)
    tokenizer = load_tokenizer(resolved)
    if tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
        raise DistillError(f"the student {path} has a different vocabulary than the teacher "
                           f"({len(tokenizer.get_vocab())} vs {len(teacher_tokenizer.get_vocab())} tokens); "
                           "distillation needs the teacher's tokenizer")
    try:
        student = AutoModelForSequenceClassification.from_pretrained(
            resolved, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={lab: i for i, lab in enumerate(labels)}, ignore_mismatched_sizes=True)
    except Exception as e:
        raise ModelError(f"cannot load the student {path}: {first_line(e)}") from None
    n, m = layer_count(teacher.config), layer_count(student.config)
    if m > n:
        raise DistillError(f"the student {path} has more layers ({m}) than the teacher ({n})")
    return student


# ---- the teacher's targets ------------------------------------------------------------------------------------

def teacher_targets(teacher_key: str, teacher, tokenizer, texts: list[str], max_length: int) -> dict:
    """The teacher's logits and last-layer [CLS] states on every text of the transfer set, cached on disk
    (`teacher_key`: the teacher's content hash)."""
    import torch

    digest = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:16]
    path = cache_dir() / "teacher-targets" / f"{teacher_key}-{digest}-{max_length}.npz"
    if path.is_file():
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    logits, states = [], []
    home = next(teacher.parameters()).device
    device = torch.device("cuda") if torch.cuda.is_available() else home  # in fp32: targets stay exact
    teacher.to(device)
    with torch.inference_mode(), progress_bar("teacher outputs on the transfer set", len(texts)) as update:
        for i in range(0, len(texts), 64):
            batch = tokenizer(texts[i:i + 64], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt").to(device)
            out = teacher(**batch, output_hidden_states=True)
            logits.append(out.logits.float().cpu().numpy())
            states.append(out.hidden_states[-1][:, 0].float().cpu().numpy())
            update(advance=len(batch["input_ids"]))
    teacher.to(home)
    targets = {"logits": np.concatenate(logits), "cls": np.concatenate(states)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, **targets)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise output_error(str(path), e) from None
    return targets


def train_student(student, tokenizer, dataset: Dataset, targets: dict, config: DistillConfig, title: str,
                  on_epoch=None, labelled: int | None = None, teacher=None) -> dict:
    """Train `student` in place with the distillation loss on the transfer set `dataset` (whose first
    `labelled` training texts carry real labels; default all); returns fit()'s record. `teacher` runs alongside
    (no gradients) when the intermediate-layer terms are asked for."""
    import torch

    soft, cls = torch.from_numpy(targets["logits"]), torch.from_numpy(targets["cls"])
    labelled = len(dataset["train"]) if labelled is None else labelled
    beta = config.cosine_weight
    if beta and student.config.hidden_size != cls.shape[1]:
        raise DistillError(f"the cosine term needs the student's hidden size to match the teacher's "
                           f"({student.config.hidden_size} vs {cls.shape[1]}); use --cosine-weight 0")
    hidden, attention = config.hidden_weight, config.attention_weight
    if (hidden or attention) and teacher is None:
        raise DistillError("the hidden-state and attention terms need the teacher model")
    if hidden and student.config.hidden_size != teacher.config.hidden_size:  # learned, dropped after training
        student.distill_projection = torch.nn.ModuleList(
            torch.nn.Linear(student.config.hidden_size, teacher.config.hidden_size)
            for _ in range(layer_count(student.config)))
    previous = [m.config._attn_implementation for m in (student, teacher)] if attention else []
    if attention:  # attention probabilities are returned by the eager implementation only
        for model in (student, teacher):
            model.set_attn_implementation("eager")
    if teacher is not None:
        teacher.eval().to(next(student.parameters()).device)

    def loss_fn(model, batch, idx):
        index = torch.from_numpy(idx)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        states = bool(beta or hidden)
        out = model(**inputs, output_hidden_states=states, output_attentions=bool(attention))
        loss = distillation_loss(out.logits, soft[index].to(out.logits.device), batch["labels"], config.alpha,
                                 config.temperature, (index < labelled).to(out.logits.device))
        if beta:
            loss = loss + beta * cosine_loss(out.hidden_states[-1][:, 0], cls[index].to(out.logits.device))
        if hidden or attention:
            with torch.no_grad():
                ref = teacher(**inputs, output_hidden_states=bool(hidden), output_attentions=bool(attention))
            mask = inputs["attention_mask"]
            if hidden:
                loss = loss + hidden * hidden_state_loss(out.hidden_states, ref.hidden_states, mask,
                                                         getattr(model, "distill_projection", None))
            if attention:
                loss = loss + attention * attention_loss(out.attentions[-1], ref.attentions[-1], mask)
        return loss

    try:
        return fit(student, tokenizer, dataset, config.train, title, loss_fn, on_epoch)
    finally:
        if hasattr(student, "distill_projection"):
            del student.distill_projection  # the checkpoint stays a plain classifier
        for model, implementation in zip((student, teacher), previous, strict=False):
            model.set_attn_implementation(implementation)


# ---- the study -----------------------------------------------------------------------------------------------

def open_storage(url: str):
    """An Optuna RDB storage with heartbeats, so trials of a killed worker are failed and retried."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, heartbeat_interval=10, grace_period=30,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
    except Exception as e:  # driver missing, host unreachable, file not creatable, disk full
        if full := disk_full(e):
            raise DiskFullError(full, url) from None
        raise DistillError(f"cannot open the study storage {url}: {first_line(e)}") from None
    finally:
        # errors only: a trial that stops on a user error (a full disk) would be logged again with its traceback
        optuna.logging.set_verbosity(optuna.logging.ERROR)


def _config_for(trial, base: DistillConfig, space: SearchSpace) -> DistillConfig:
    return replace(base, alpha=trial.suggest_float("alpha", *space.alpha),
                   temperature=trial.suggest_float("temperature", *space.temperature),
                   train=replace(base.train, lr=trial.suggest_float("lr", *space.lr, log=True),
                                 epochs=trial.suggest_int("epochs", *space.epochs)))


NEW_FIELDS = {"hidden_weight": 0.0, "attention_weight": 0.0, "layers": (), "widths": (), "width": 1.0,
              "unlabelled": None, "unlabelled_limit": DistillConfig.unlabelled_limit, "select_fraction": 0.0,
              "keep": "spread"}


def recorded(settings) -> dict:
    """A settings dataclass as a run records it: fields added since (compression) left out at their defaults, so a
    run made before they existed still resumes."""
    return {k: v for k, v in asdict(settings).items() if k not in NEW_FIELDS or v != NEW_FIELDS[k]}


def _student_for(params: dict, spec: StudentSpec) -> StudentSpec:
    """The student a trial's parameters describe (depth and width where the study searches them)."""
    return replace(spec, layers=params.get("layers", spec.layers), width=params.get("width", spec.width))


def _suggest_student(trial, spec: StudentSpec, space: SearchSpace) -> StudentSpec:
    if space.layers:
        trial.suggest_categorical("layers", space.layers)
    if space.widths:
        trial.suggest_categorical("width", space.widths)
    return _student_for(trial.params, spec)


def _params(config: DistillConfig, spec: StudentSpec | None = None, space: SearchSpace | None = None) -> dict:
    """The first trial's parameters: the given configuration (and student, where the study searches it)."""
    params = {"alpha": config.alpha, "temperature": config.temperature, "lr": config.train.lr,
              "epochs": config.train.epochs}
    if space is not None and space.layers:
        params["layers"] = spec.layers
    if space is not None and space.widths:
        params["width"] = spec.width
    return params


def _finished(study) -> list:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=done)


def _retry_failed(study) -> None:
    """A trial that stopped on an error (a full disk, say) runs again with its parameters when the study is
    resumed, once per failure, instead of being replaced by a newly sampled one. (A killed worker's trial is
    failed by its heartbeat and retried by Optuna's own callback, which marks the retry `failed_trial`.)"""
    import optuna

    retried = {t.user_attrs.get("retry_of", t.system_attrs.get("failed_trial")) for t in study.trials}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        if t.number not in retried and t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


@dataclass(frozen=True)
class StudentSpec:
    layers: int | None = None  # cut from the teacher: this many of its layers, chosen by `keep`
    checkpoint: str | None = None  # or start from this HF checkpoint
    width: float = 1.0  # fraction of the feed-forward neurons kept per layer, the least important pruned first
    keep: str = "spread"  # which teacher layers (kept_layers): spread (every k-th) or bottom (the first ones)

    def __post_init__(self):
        check_keep(self.keep)


def make_student(teacher, tokenizer, labels: list[str], spec: StudentSpec, ffn_scores=None):
    """The initial student: the checkpoint, or the teacher's kept layers (kept_layers) with the FFN pruned to `width`
    (`ffn_scores`: the teacher's neuron importances, compress.prune.ffn_importance)."""
    if spec.checkpoint:
        if spec.width != 1.0 or spec.keep != "spread":
            raise DistillError(f"{'--student-width' if spec.width != 1.0 else '--student-keep'} applies to a student "
                               "cut from the teacher, not to --student")
        return student_from_checkpoint(spec.checkpoint, teacher, tokenizer, labels)
    if not 0.0 < spec.width <= 1.0:
        raise DistillError(f"the student's width must be in (0, 1], got {spec.width}")
    n = layer_count(teacher.config)
    if spec.layers == n and spec.width < 1.0:  # the teacher's depth, narrower
        student, keep = copy.deepcopy(teacher), list(range(n))
    else:
        student, keep = (student_from_teacher(teacher, spec.layers, spec.keep),
                         kept_layers(n, spec.layers, spec.keep))
    if spec.width < 1.0:
        from .compress.prune import ffn_size, prune_ffn

        prune_ffn(student, max(1, round(spec.width * ffn_size(teacher.config))), [ffn_scores[i] for i in keep])
    return student


def distill(teacher: str, data, out: Path, student: StudentSpec = StudentSpec(), trials: int = 1,
            storage: str | None = None, config: DistillConfig = DistillConfig(), space: SearchSpace = SearchSpace(),
            bench: bool = True) -> dict:
    """Distil `teacher` into a student on `data` (a bench DataSpec); search `trials` configurations.

    Writes into `out`: model/ (the best student, an HF checkpoint), study.db, trials.json, best_params.json,
    curves.png and (with `bench`) results.json/results.md comparing teacher and student on the test split.
    Running again with the same arguments resumes the study; more --trials extends it."""
    import optuna

    from .data import load_dataset

    if trials < 1:
        raise DistillError("--trials must be at least 1")
    if student.layers is not None and student.checkpoint:
        raise DistillError("give either --student-layers or --student, not both")
    out = Path(out)
    dataset = load_dataset(data.source, data.text_column, data.label_column, data.split_column, data.seed)
    quiet_transformers()
    teacher_model, tokenizer, labels = load_classifier(teacher)
    teacher_path = Path(resolve(teacher))
    config = replace(config, train=replace(config.train, max_length=check_max_length(teacher_path,
                                                                                     config.train.max_length)))
    dataset = in_label_space(dataset, labels, teacher)
    if config.select_fraction:
        from .data import with_selection

        dataset = with_selection(dataset, config.select_fraction, data.seed)  # the same slice for every seed
        console.print(f"choosing on a selection slice of {len(dataset['selection']):,} training texts (held out of "
                      f"training); validation is left for the budget check")
    layers = student.layers if student.layers is not None or student.checkpoint else max(
        1, layer_count(teacher_model.config) // 2)
    student = replace(student, layers=None if student.checkpoint else layers)
    hyper = {k: v for k, v in zip(HYPER, astuple(space)[:len(HYPER)], strict=True)}
    given = _params(config)
    space = replace(space, **{k: (min(lo, given[k]), max(hi, given[k])) for k, (lo, hi) in hyper.items()},
                    layers=tuple(sorted({*space.layers, layers})) if space.layers else (),
                    widths=tuple(sorted({*space.widths, student.width})) if space.widths else ())
    if (space.layers or space.widths) and student.checkpoint:
        raise DistillError("the study searches depth and width of a student cut from the teacher, not of --student")
    ffn_scores = None
    if student.width < 1.0 or any(w < 1.0 for w in space.widths):
        from .compress.prune import ffn_importance

        ffn_scores = ffn_importance(teacher_model, tokenizer, dataset["train"], config.train.max_length)

    def new_student(spec: StudentSpec):
        return make_student(teacher_model, tokenizer, labels, spec, ffn_scores)

    new_student(student)  # refuse a bad student before anything is written
    from .techniques.base import content_key

    unlabelled = unlabelled_texts(config, dataset)
    recipe = {"teacher": str(teacher_path), "teacher_key": content_key(teacher_path), "dataset": dataset.name,
              "dataset_fingerprint": dataset.fingerprint, "student": recorded(student),
              "config": recorded(config), "space": recorded(space)}
    if unlabelled:
        recipe["unlabelled_fingerprint"] = hashlib.sha256("\n".join(unlabelled).encode()).hexdigest()[:16]
    recipe = json.loads(json.dumps(recipe))  # as it reads back from distill.json
    run_file = out / "distill.json"
    if run_file.is_file():
        if json.loads(run_file.read_text()).get("recipe") != recipe:
            raise OutputError(f"{out} holds a distillation of another teacher, data or settings; choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise OutputError(f"{out} exists and is not a slimformer distillation run; choose another --out")
    write_json(run_file, {"recipe": recipe})
    study_name = "distill-" + hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    storage_url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    study = optuna.create_study(study_name=study_name, storage=open_storage(storage_url), direction="maximize",
                                load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=config.train.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3))  # epoch >= 3
    if not study.trials:
        study.enqueue_trial(_params(config, student, space))
    _retry_failed(study)
    transfer, labelled = transfer_set(dataset, config.augment, tokenizer.mask_token, config.train.seed, unlabelled)
    targets = teacher_targets(recipe["teacher_key"], teacher_model, tokenizer, transfer["train"].texts,
                              config.train.max_length)

    def train(model, trial_config: DistillConfig, title: str, on_epoch=None) -> dict:
        return train_student(model, tokenizer, transfer, targets, trial_config, title, on_epoch, labelled,
                             teacher_model)

    trials_dir = out / "trials"
    chosen_on = choosing_split(dataset)[1]
    remaining = trials - len(_finished(study))

    def objective(trial) -> float:
        trial_config = _config_for(trial, config, space)
        model = new_student(_suggest_student(trial, student, space))

        def on_epoch(epoch: int, record: dict) -> None:
            trial.set_user_attr("history", [*trial.user_attrs.get("history", []), record])
            trial.report(record["val_accuracy"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        params = ", ".join(f"{k} {v:.3g}" for k, v in trial.params.items())
        trained = train(model, trial_config, f"trial {trial.number} ({params})", on_epoch)
        value = max(h["val_accuracy"] for h in trained["history"])
        complete = [t.value for t in study.get_trials(deepcopy=False) if t.value is not None]
        if not complete or value > max(complete):  # keep the checkpoint of the best trial so far only
            save_classifier(model, tokenizer, trials_dir / str(trial.number),
                            {"trial": trial.number, "params": trial.params, **trained, "labels": labels,
                             "max_length": trial_config.train.max_length})
            for other in trials_dir.iterdir():
                if other.name != str(trial.number):
                    shutil.rmtree(other, ignore_errors=True)
        console.print(f"trial {trial.number}: {chosen_on} accuracy {100 * value:.2f}% ({params}, "
                      f"{trained['train_seconds']:.0f} s)")
        return value

    if remaining > 0:
        study.optimize(objective, callbacks=[optuna.study.MaxTrialsCallback(
            trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))])
    return _finish(study, out, teacher_model, tokenizer, labels, dataset, config,
                   lambda params: new_student(_student_for(params, student)), train, recipe, data, bench)


def _finish(study, out: Path, teacher_model, tokenizer, labels, dataset, config, new_student, train, recipe,
            data, bench: bool) -> dict:
    """Put the best trial's student into out/model with its manifest; write trials, curves and results."""
    import optuna

    best = study.best_trial
    best_config = replace(config, alpha=best.params["alpha"], temperature=best.params["temperature"],
                          train=replace(config.train, lr=best.params["lr"], epochs=best.params["epochs"]))
    model_dir, trial_dir = out / "model", out / "trials" / str(best.number)
    if not (is_complete(model_dir) and read_manifest(model_dir).get("trial") == best.number):
        if is_complete(trial_dir):
            from transformers import AutoModelForSequenceClassification

            student = AutoModelForSequenceClassification.from_pretrained(trial_dir).eval()
            trained = {k: v for k, v in read_manifest(trial_dir).items() if k not in ("params", "trial")}
        else:  # the best trial ran on another worker: train its configuration again here
            student = new_student(best.params)
            trained = train(student, best_config, f"retraining trial {best.number}")
        teacher_metrics = evaluate_splits(teacher_model, tokenizer, dataset, config.train.max_length)
        manifest = {"kind": "hf-classifier", "created_by": "slimformer distill", "recipe": recipe,
                    "trial": best.number, "params": best.params, **trained, "labels": labels,
                    "max_length": config.train.max_length,
                    "metrics": evaluate_splits(student, tokenizer, dataset, config.train.max_length),
                    "teacher_metrics": teacher_metrics}
        save_classifier(student, tokenizer, model_dir, manifest)
    shutil.rmtree(out / "trials", ignore_errors=True)
    manifest = read_manifest(model_dir)
    trials = [{"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
               "history": t.user_attrs.get("history", [])} for t in study.get_trials(deepcopy=False)
              if t.state != optuna.trial.TrialState.RUNNING]
    write_json(out / "trials.json", trials)
    chosen_on = choosing_split(dataset)[1]
    write_json(out / "best_params.json", {"trial": best.number, f"{chosen_on}_accuracy": best.value, **best.params})
    plot_curves(trials, best.number, manifest["teacher_metrics"][chosen_on]["accuracy"], out / "curves.png", chosen_on)
    summary = {"model": str(model_dir), "trial": best.number, "params": best.params, "trials": len(trials),
               "chosen_on": chosen_on,
               "metrics": manifest["metrics"], "teacher_metrics": manifest["teacher_metrics"],
               "train_seconds": manifest["train_seconds"]}
    if bench:
        from .bench.runner import BenchSettings, Variant, run_benchmark
        from .bench.table import to_markdown
        from .cache import write_text

        results = run_benchmark([Variant(recipe["teacher"], name="teacher"), Variant(str(model_dir), name="student")],
                                data, BenchSettings(latency_samples=200, cold_start_runs=1), out)
        write_text(out / "results.md", to_markdown(results))
        summary["results"] = str(out / "results.json")
    return summary


def plot_curves(trials: list[dict], best: int, teacher_accuracy: float, path: Path, split: str = "validation") -> None:
    """Accuracy on the choosing `split` and training loss per epoch for every trial; the best trial drawn bold."""
    from .plotting import pyplot

    plt = pyplot()

    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4))
    for t in trials:
        if not t["history"]:
            continue
        epochs = [h["epoch"] for h in t["history"]]
        style = {"lw": 2.5, "color": "C3", "zorder": 3} if t["number"] == best else \
            {"lw": 1, "alpha": 0.6, "ls": "--" if t["state"] == "PRUNED" else "-"}
        label = f"trial {t['number']}" + (" (best)" if t["number"] == best else
                                          " (pruned)" if t["state"] == "PRUNED" else "")
        acc.plot(epochs, [100 * h["val_accuracy"] for h in t["history"]], marker="o", label=label, **style)
        loss.plot(epochs, [h["train_loss"] for h in t["history"]], marker="o", **style)
    acc.axhline(100 * teacher_accuracy, color="k", ls=":", label="teacher")
    acc.set(xlabel="epoch", ylabel=f"{split} accuracy (%)", title=f"{split.capitalize()} accuracy per trial")
    loss.set(xlabel="epoch", ylabel="training loss", title="Training loss (distillation objective)")
    acc.legend(fontsize=7, loc="lower right")
    for ax in (acc, loss):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


__all__ = ["DistillConfig", "SearchSpace", "StudentSpec", "augment_texts", "distill", "distillation_loss",
           "kept_layers", "student_from_teacher", "student_from_checkpoint", "teacher_targets"]
