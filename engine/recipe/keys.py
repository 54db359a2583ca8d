"""Every recipe key, its default, type, bounds and one-line doc, declared once, and the checks of each value
(types, bounds, choices); the checks of keys that go together are engine/recipe/checks.py's."""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from engine.errors import UserError
from engine.recipe.checks import check_recipe
from engine.recipe.epoch_keys import AUGMENT_PRESETS, parse_augment_schedule, parse_milestones
from engine.recipe.several_types import parse_background, parse_teacher


def key(default: Any, doc: str, choices: tuple = (), bounds: str = "", parse: Any = None) -> Any:
    """Declare a recipe key: its default, a one-line doc, and the allowed values or interval ("[0, 1)").

    `parse(value)` checks and converts a key that takes more than one type (raising ValueError saying what fits).
    """
    meta = {"doc": doc, "choices": choices, "bounds": bounds, "parse": parse}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def in_bounds(value: float, bounds: str) -> bool:
    """Whether value lies in an interval written like "[0, 1)" or "(0, inf)"."""
    low, high = (float(b) for b in bounds[1:-1].split(","))
    return (low <= value if bounds[0] == "[" else low < value) and (value <= high if bounds[-1] == "]" else value < high)


@dataclass
class Recipe:
    """Everything a run needs. Field order is the order `train.py --help` prints."""
    # model
    model: str = key("resnet18", "timm model name (any of timm.list_models())")
    pretrained: bool = key(False, "load timm's pretrained weights (needs the network or a warm cache)")
    pretrained_path: Optional[str] = key(None, "local weights file to start from; the classifier is adapted to num_classes")
    num_classes: Optional[int] = key(None, "number of classes; None: taken from the data", bounds="[1, inf)")
    small_input_stem: bool = key(False, "for 28-64 px images: a stem that keeps the input's resolution (ResNet: first "
                                 "conv stride 1, no max-pool; ConvNeXt, EfficientNet: stem stride 1), so the last "
                                 "stage still sees a layout; more compute per image")
    drop_path: float = key(0.0, "stochastic depth rate, for models that support it", bounds="[0, 1)")
    # fine-tuning: what trains, at which learning rate, and the head (engine/train/freezing.py, engine/train/optim.py)
    freeze: Union[str, int] = key("none", 'what stays frozen: "none", "backbone" (only the head trains), or an int N: '
                                  "all but the last N of timm's layer groups and the head")
    unfreeze_epoch: Optional[int] = key(None, "from this epoch (1-based, as the console counts) everything trains, the "
                                        "new parameters with their own warm-up; None: never", bounds="[1, inf)")
    layer_decay: Optional[float] = key(None, "layer-wise LR decay: group g of depth d gets lr * layer_decay^(d - g) "
                                       "(timm's grouping); None: off", bounds="(0, 1]")
    head_lr_scale: float = key(1.0, "the head's LR is lr * head_lr_scale (lr=1e-4 head_lr_scale=10: 1e-3 for the head)",
                               bounds="(0, inf)")
    grad_checkpointing: bool = key(False, "timm gradient checkpointing: less activation memory, about 30% slower steps")
    head: str = key("linear", "classifier on timm's pooled pre-logits features", ("linear", "mlp"))
    head_hidden: int = key(512, 'hidden width of head="mlp"', bounds="[1, inf)")
    head_dropout: float = key(0.0, 'dropout before the last layer of head="mlp"', bounds="[0, 1)")
    flip: str = key("h", "random training flips: horizontal, horizontal+vertical, none; predict.py --tta uses the same",
                    ("h", "hv", "none"))
    init_head: str = key("random", 'start the head random, or from the pretrained ImageNet-1k head rows of classes named '
                         "by WordNet id (n01440764, ...)", ("random", "imagenet"))
    # feature store (engine/data/stores/feature_store.py)
    feature_views: int = key(0, "K > 0 with freeze='backbone': store the backbone's features of the eval view and K "
                                "augmented views once, then train only the head from them (epoch e: view e mod K)",
                             bounds="[0, inf)")
    feature_dtype: str = key("fp16", "how stored features are kept (fp32: exact, twice the disk)", ("fp16", "fp32"))
    # data
    data_dir: str = key("data/train", "folder the train.csv image paths are relative to (or a folder of class folders)")
    train_csv: Optional[str] = key("data/train.csv", "CSV of class_name,image_path,target; None: class folders under data_dir")
    test_dir: Optional[str] = key("data/test", "folder the test.csv image paths are relative to")
    test_csv: Optional[str] = key("data/test.csv", "CSV with an image_path column, predicted by predict.py")
    val_fraction: float = key(0.2, "hold-out share for validation when folds = 1 (stratified); 0: train on every "
                              "row with no validation (a full-data refit; best.pt is the last epoch)", bounds="[0, 1)")
    folds: int = key(1, "K > 1 trains K stratified folds one after another", bounds="[1, inf)")
    fold_groups: str = key("near_duplicates", "keep near-duplicate images (also mirrored copies, by perceptual hash) "
                           "on one side of every train/validation split", ("none", "near_duplicates"))
    pseudo_labels: Optional[str] = key(None, "predict.py --save-probs CSV of test images: confident ones join every "
                                       "fold's training rows with their predicted class")
    pseudo_threshold: float = key(0.9, "a pseudo-labelled image joins when its top probability reaches this",
                                  bounds="(0, 1]")
    teacher: Any = key(None, "distillation: a k-fold run folder, or a tuple of them, whose out-of-fold probabilities "
                       "(oof_probs.npy) join every training row's target; it must have this data's rows, classes and "
                       "folds", parse=parse_teacher)
    teacher_weight: float = key(0.5, "share of a training row's target that is the teachers' probabilities (the rest: "
                                "its own label, smoothed by label_smoothing)", bounds="[0, 1]")
    teacher_test: bool = key(False, "also train on the test images with the teachers' predictions as targets (each "
                             "teacher's output_probs.csv: python predict.py RUN --kfold --save-probs)")
    teacher_temperature: float = key(1.0, "the teachers' probabilities become p^(1/T), renormalised: T > 1 softens "
                                     "them, T < 1 sharpens", bounds="(0, inf)")
    seed: int = key(42, "seed for splits, sampling, augmentation, mixing and initialisation", bounds="[0, inf)")
    image_size: int = key(224, "square input size the model sees (each model also has its own minimum)",
                          bounds="[2, inf)")  # 1 px crashes inside PyTorch's antialiased resize
    num_workers: Optional[int] = key(None, "dataloader worker processes; None: from the CPU count", bounds="[0, inf)")
    cache: str = key("auto", "decode images once: in shared memory, in a reusable file on disk, or resident on the "
                     "device (every batch cut and warped there); auto: device on CUDA when the images fit in half its "
                     "free memory and the augment preset runs there, else none", ("auto", "none", "memory", "disk", "device"))
    bad_images: str = key("skip", "what to do with rows the data audit rejects", ("skip", "error"))
    crop_scale: float = key(0.35, "smallest area share a random-resized crop keeps (1.0: whole image, no crop)", bounds="(0, 1]")
    augment: str = key("light", "augmentation on top of random-resized crop and flip: none, light (small affine), ...",
                       AUGMENT_PRESETS)
    augment_schedule: dict = key({}, 'staged augmentation: {epoch: preset}, e.g. {0: "none", 3: "light"}: from that many '
                                 "epochs trained on, that preset; before the first, `augment`", parse=parse_augment_schedule)
    augment_on: str = key("auto", "where training augmentation runs: workers (per image) or device (batched, after "
                          "the transfer); auto: device on CUDA, workers on CPU", ("auto", "workers", "device"))
    random_erase: float = key(0.0, "probability of random erasing a patch of each training image", bounds="[0, 1]")
    background: Any = key("auto", "paper colour that augmentation fills and erases with and CAM ink differs from: "
                          "auto (measured from the image borders), white, black or an RGB triple (0, 0, 0)",
                          parse=parse_background)
    # optimisation
    batch_size: int = key(64, "images per process per micro-batch", bounds="[1, inf)")
    epochs: int = key(10, "passes over the training data", bounds="[1, inf)")
    optimizer: str = key("AdamW", "optimizer; no weight decay on norms and biases", ("AdamW", "SGD"))
    lr: float = key(1e-3, "peak learning rate (after warm-up)", bounds="(0, inf)")
    weight_decay: float = key(0.05, "decoupled (AdamW) or L2 (SGD) weight decay", bounds="[0, inf)")
    momentum: float = key(0.9, "SGD momentum (AdamW: beta1)", bounds="[0, 1)")
    scheduler: str = key("cosine", "learning-rate shape after warm-up: cosine to 0, flat, or step decay",
                         ("cosine", "none", "step"))
    step_milestones: tuple = key((), 'scheduler="step": the LR is multiplied by step_gamma once this many epochs are '
                                 "trained, e.g. (6, 9)", parse=parse_milestones)
    step_gamma: float = key(0.1, 'scheduler="step": the factor at each milestone', bounds="(0, 1]")
    warmup_epochs: float = key(1.0, "linear warm-up length in epochs (fractions allowed)", bounds="[0, inf)")
    accumulate_grad_batches: int = key(1, "micro-batches per optimizer update", bounds="[1, inf)")
    clip_grad_norm: Optional[float] = key(None, "clip the gradient norm to this value (None: no clipping)", bounds="(0, inf)")
    max_bad_steps: int = key(10, "stop after this many consecutive updates with non-finite loss or gradients", bounds="[1, inf)")
    # loss and mixing
    loss: str = key("CE", "loss function", ("CE", "Focal"))
    label_smoothing: float = key(0.0, "label smoothing folded into the targets", bounds="[0, 1)")
    focal_alpha: float = key(1.0, "focal loss weight alpha", bounds="(0, inf)")
    focal_gamma: float = key(2.0, "focal loss focusing parameter gamma", bounds="[0, inf)")
    mixup_ratio: float = key(0.0, "probability that a batch is mixed up", bounds="[0, 1]")
    cutmix_ratio: float = key(0.0, "probability that a batch is cut-mixed (never both)", bounds="[0, 1]")
    mix_alpha: float = key(1.0, "lam ~ Beta(mix_alpha, mix_alpha)", bounds="(0, inf)")
    mix_off_epochs: int = key(0, "turn mixing off for the last N epochs", bounds="[0, inf)")
    # speed and hardware
    precision: str = key("auto", "auto: bf16 (or fp16 + GradScaler) on CUDA, fp32 on CPU", ("auto", "fp32", "bf16", "fp16"))
    channels_last: Optional[bool] = key(None, "NHWC memory format; None: on for CUDA, off for CPU")
    compile: bool = key(False, "torch.compile the model")
    sync_bn: bool = key(False, "synchronise batch-norm statistics across DDP processes")
    ema_decay: float = key(0.0, "keep an exponential moving average of the weights (0: off), e.g. 0.999", bounds="[0, 1)")
    # run control
    early_stopping: int = key(0, "stop after this many epochs without improvement of monitor (0: off)", bounds="[0, inf)")
    monitor: str = key("val_loss", "metric that picks best.pt and drives early stopping", ("val_loss", "val_acc", "val_f1"))
    wandb: str = key("disabled", "Weights & Biases logging", ("disabled", "offline", "online"))
    wandb_project: str = key("sketchbook", "W&B project")
    wandb_entity: Optional[str] = key(None, "W&B entity (team or user)")
    output_dir: str = key("runs", "where run folders go: <output_dir>/<recipe>/<time>[-name]/")
    sweep: dict = key({}, "W&B sweep config (method, metric, parameters, early_terminate) for sweep.py")
    # not a key users set: the recipe file's stem, for the run folder
    name: str = key("recipe", "recipe name (the recipe file's stem); names the run folder")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with some keys changed, each checked like an override."""
        return resolve(self.to_dict(), changes)


FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}
_HINTS = typing.get_type_hints(Recipe)


def describe() -> str:
    """Every key with its type, default and doc: the body of `train.py --help`."""
    lines = []
    for name, f in FIELDS.items():
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        choices = f" {{{'|'.join(map(str, f.metadata['choices']))}}}" if f.metadata["choices"] else ""
        choices += f" in {f.metadata['bounds']}" if f.metadata["bounds"] else ""
        lines.append(f"  {name:<24} = {default!r:<16}{choices}\n      {f.metadata['doc']}")
    return "\n".join(lines)


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) > 1:  # Union[str, int]
        return " or ".join(a.__name__ for a in args)
    return f"{args[0].__name__} or None" if args else hint.__name__


def check_value(name: str, value: Any) -> Any:
    """Return value converted to the key's type, or raise a one-line UserError."""
    if name not in FIELDS:
        close = difflib.get_close_matches(name, FIELDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else "; see `python train.py --help`"
        raise UserError(f"unknown recipe key '{name}'{hint}")
    if FIELDS[name].metadata["parse"] is not None:
        try:
            return FIELDS[name].metadata["parse"](value)
        except ValueError as e:
            raise UserError(f"recipe key '{name}' {e}") from e
    hint = _HINTS[name]
    optional = type(None) in typing.get_args(hint)
    bases = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    base = next((b for b in bases if isinstance(value, b) and not (b is int and isinstance(value, bool))), bases[0])
    if value is None and optional:
        return None
    ok = (isinstance(value, base) and not (base is int and isinstance(value, bool))) or (
        base is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        raise UserError(f"recipe key '{name}' must be {_type_name(hint)}, got {value!r} ({type(value).__name__})")
    value = float(value) if base is float else value
    bounds = FIELDS[name].metadata["bounds"]
    if bounds and not in_bounds(value, bounds):
        raise UserError(f"recipe key '{name}' must be in {bounds}; got {value!r}")
    choices = FIELDS[name].metadata["choices"]
    if choices and value not in choices and not (len(bases) > 1 and isinstance(value, int)):
        close = difflib.get_close_matches(str(value), map(str, choices), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserError(f"recipe key '{name}' must be one of {', '.join(map(str, choices))}; got {value!r}{hint}")
    return value


def resolve(base: dict, overrides: dict, saved: bool = False) -> Recipe:
    """Build a checked Recipe from a dict of keys plus overrides (both checked); `saved`: a recipe a run already
    trained with (recipe.json, a checkpoint), which skips the checks of a plan still to train."""
    values = {}
    for name, value in {**base, **overrides}.items():
        values[name] = check_value(name, value)
    return check_recipe(Recipe(**values), saved)
