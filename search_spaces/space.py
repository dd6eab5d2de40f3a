"""The shape of a family and of a trial: one base space, a `Family` value per family, a `TrialConfig` per trial.

A parameter is one entry of a space: an Optuna distribution (searched) or a plain value (fixed).
BASE holds the knobs every family searches; a family narrows a range, fixes a value or adds its own
knobs in `Family.space`. The name a space gives a parameter is its Optuna name, its Tune config key, its
MLflow param and its plot column; in a `--family all` study every name but `family` carries the
family ("cnn.lr"), because Optuna refuses a categorical whose choices change within one study, and
the qualified name is then used everywhere in that study.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import cloudpickle
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.distributions import CategoricalDistribution as Choice
from optuna.distributions import FloatDistribution as Float
from optuna.distributions import IntDistribution as Int

# The eight knobs every family searches, plus dropout; ranges here are the widest a family may use
# (a family narrows them to its priors). Fixed values are plain numbers.
BASE: dict[str, Any] = {
    "lr": Float(1e-6, 1e-2, log=True),  # peak AdamW LR after warm-up, then cosine decay to ~0
    "batch_size": Choice([16, 32, 64, 128]),  # global batch: images per step summed over all workers
    "weight_decay": Float(1e-5, 1e-1, log=True),  # AdamW decoupled weight decay
    "label_smoothing": Float(0.0, 0.2),  # cross-entropy label smoothing (seeds used 0.03-0.1)
    "aug_strength": Float(0.0, 1.0),  # 0 = resize+crop only .. 1 = the family recipe at full strength
    "sampler_power": Float(0.0, 1.0),  # sample weight ∝ count^-power: 0 natural, 0.5 1/sqrt(n), 1 balanced
    "loss_weight_power": Float(0.0, 1.0),  # cross-entropy class weight ∝ count^-power (the study: 0.5)
    "mixup_prob": Float(0.0, 0.5),  # P(a batch gets MixUp α 0.3 or CutMix α 1.0), as in seed 003
    "dropout": Float(0.0, 0.6),  # dropout before the classifier
    "warmup_epochs": 0.5,  # linear LR warm-up, epochs
    "grad_clip": 1.0,  # clip the global gradient norm at this value; 0 disables
}
FAMILY_PARAM = "family"  # the one unqualified name of an `all` study
# The knobs of BASE that tell trials apart at a glance, most telling first: shown when a trial starts, in the
# MLflow runs view and in the leaderboard (a --family all study qualifies them: `cnn.lr`); every other knob
# is in each trial's MLflow run and the leaderboard's CSV.
KEY_PARAMS = ("lr", "batch_size", "aug_strength", "sampler_power", "weight_decay")

from search_spaces.hooks import last_stage, timm_classifier  # noqa: E402


def suggest(trial, name: str, dist: BaseDistribution):
    """trial.suggest_* for an Optuna distribution (works on Ray's trial captor too)."""
    if isinstance(dist, Float):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, Int):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_categorical(name, list(dist.choices))


def _centre(dist):
    if isinstance(dist, Choice):
        return dist.choices[len(dist.choices) // 2]
    if isinstance(dist, (Float, Int)):
        mid = (dist.low * dist.high) ** 0.5 if dist.log else (dist.low + dist.high) / 2
        return round(mid) if isinstance(dist, Int) else mid
    return dist


def _admits(dist, value) -> bool:
    """`value` is a point of `dist` (a distribution, or a fixed value it must equal)."""
    if isinstance(dist, Choice):
        return value in dist.choices
    if isinstance(dist, (Float, Int)):
        return dist.low <= value <= dist.high
    return dist == value


def _narrows(base, own) -> bool:
    """A family may fix a base knob, or search it with the same kind and scale inside the base range."""
    if not isinstance(own, BaseDistribution) or not isinstance(base, BaseDistribution):
        return True
    if type(own) is not type(base):
        return False
    if isinstance(own, Choice):
        return set(own.choices) <= set(base.choices)
    return own.log == base.log and base.low <= own.low <= own.high <= base.high


@dataclass(frozen=True)
class Family:
    """Everything artsweep knows about one model family; one value per file in search_spaces/."""

    name: str
    archs: Mapping[str, str]  # architecture key -> timm name, searched (or pinned with --arch)
    build: Callable  # (cfg: TrialConfig, num_classes, image_size, weights: Weights) -> nn.Module
    standins: Mapping[str, str] = field(default_factory=dict)  # CPU-sized stand-ins (--smoke / --standins)
    space: Mapping[str, Any] = field(default_factory=dict)  # BASE overrides and the family's own knobs
    # published recipes (docs/recipes.md) as plain dicts {param: value}: a study's first trials, before TPE
    # proposes anything, so it is never worse than the recipe on the user's data; each must be a point of
    # the family's space (its real architectures); knobs a recipe leaves out are sampled
    recipes: tuple = ()
    image_size: int = 224  # default input side, px
    grace_epochs: int = 1  # ASHA grace period: epochs every trial gets before it can be stopped
    pretrained: bool = True  # build loads pretrained weights (--pretrained / --weights-dir)
    augment: str = "strong"  # trainables.data.augment recipe that aug_strength scales
    channels_last: bool = True  # NHWC weights and inputs (faster convolutions); False for transformers
    head: Callable = timm_classifier  # model -> its final classifier layer (embeddings are its input)
    new_parameters: Optional[Callable] = None  # model -> params new for the data (full LR); None: head's
    saliency_layer: Callable = last_stage  # model -> (layer Grad-CAM reads, token reshape or None)
    # the family's own knobs that change the network itself, as `arch` does (scratch's width): what a configuration
    # costs to serve and holds in memory depends on them and on nothing else searched; each a Choice or fixed value
    shape_params: tuple = ()

    def __post_init__(self):
        bad = [k for k, v in self.space.items() if k in BASE and not _narrows(BASE[k], v)]
        if bad:
            raise ValueError(f"family {self.name!r}: {bad} must narrow BASE (same kind and scale, inside its range)")
        bad = [k for k in self.shape_params if k not in self.space or isinstance(self.space[k], (Float, Int))]
        if bad:
            raise ValueError(f"family {self.name!r}: shape_params {bad} must be its own knobs, each a Choice or fixed")
        space = self.params()
        for recipe in self.recipes:
            bad = {k: v for k, v in recipe.items() if k not in space or not _admits(space[k], v)}
            if bad:
                raise ValueError(f"family {self.name!r}: recipe values {bad} are not points of its space")

    def __reduce__(self):
        """Pickled by value (cloudpickle), hooks and all, also where plain pickle is used (OptunaSearch saves its
        space that way): a family defined at run time reaches Ray's workers and a restored study alike."""
        return _family_from_bytes, (cloudpickle.dumps({f.name: getattr(self, f.name) for f in fields(self)}),)

    def arch_choices(self, standins: bool = False) -> dict[str, str]:
        return dict(self.standins or self.archs) if standins else dict(self.archs)

    def params(self, standins: bool = False, arch: str | None = None) -> dict[str, Any]:
        """The family's whole space, plain names: `arch` first, then BASE with the family's overrides and knobs.
        A categorical with one choice (a pinned or single architecture) is a fixed value."""
        archs = [arch] if arch else list(self.arch_choices(standins))
        out = {"arch": Choice(archs), **BASE, **self.space}
        return {k: v.choices[0] if isinstance(v, Choice) and len(v.choices) == 1 else v for k, v in out.items()}

    def config(self, arch: str | None = None, standins: bool = False, **values) -> "TrialConfig":
        """A TrialConfig at the centre of the family's space (log scales: geometric mean; categoricals: the
        middle choice), fixed values as they are, `values` overriding: for tests, benchmarks and tools."""
        params = self.params(standins, arch)
        searched = [k for k, v in params.items() if isinstance(v, BaseDistribution)]
        return TrialConfig(self, {**{k: _centre(v) for k, v in params.items()}, **values}, searched=searched)

    def trainable_parameters(self, model) -> list:
        """Parameters new for this dataset (full LR; the rest is the pretrained backbone)."""
        return list((self.new_parameters or (lambda m: self.head(m).parameters()))(model))

    @property
    def module(self) -> str:
        """The module defining the family: its build function's (`search_spaces.cnn`, a plugin's file). A checkpoint
        records it, so a process where the family is not registered finds it there (search_spaces.get_family)."""
        return self.build.__module__


def _family_from_bytes(blob: bytes) -> Family:
    return Family(**cloudpickle.loads(blob))


class TrialConfig:
    """One trial's values: every parameter of its family (searched and fixed), read as attributes.

    `cfg.lr` is the value; a knob the family does not have raises AttributeError (use cfg.get(name, default)
    where absence has a meaning, e.g. layer_decay 0 = off). params() are the searched values under their
    study names: exactly the Optuna params, the Tune config and the MLflow params of the trial."""

    def __init__(
        self,
        family: Family,
        values: Mapping[str, Any],
        searched: Iterable[str] = (),
        prefix: str = "",
        pinned: Iterable[str] = (),
    ):
        self.family, self.values, self.searched, self.prefix = family, dict(values), tuple(searched), prefix
        self.pinned = tuple(pinned)  # knobs the study fixed with --set: recorded with the trial as its arch is
        unknown = sorted(set(values) - set(family.params()) - {"arch"})
        if unknown:
            raise ValueError(
                f"unknown trial config keys {unknown} for family {family.name!r}; known: {sorted(family.params())}"
            )

    def __getattr__(self, name: str):
        values = self.__dict__.get("values")
        if values is None or name.startswith("__"):
            raise AttributeError(name)
        if name not in values:
            raise AttributeError(f"family {self.family.name!r} has no parameter {name!r}")
        return values[name]

    def get(self, name: str, default=None):
        return self.values.get(name, default)

    @property
    def timm_name(self) -> str:
        return {**self.family.archs, **self.family.standins}[self.values["arch"]]

    def shape(self, image_size: int) -> str:
        """The network this configuration trains, as a key: family, timm model, shape knobs, input side. Two
        configurations with one shape cost the same to serve and hold the same memory (trainables.latency, memory)."""
        knobs = ",".join(f"{k}={self.values[k]}" for k in self.family.shape_params)
        return f"{self.family.name}:{self.timm_name}{f'[{knobs}]' if knobs else ''}@{image_size}px"

    def params(self) -> dict[str, Any]:
        out = {FAMILY_PARAM: self.family.name} if self.prefix else {}
        return {**out, **{self.prefix + k: self.values[k] for k in self.searched}}

    def replace(self, **values) -> "TrialConfig":
        return TrialConfig(self.family, {**self.values, **values}, self.searched, self.prefix, self.pinned)

    def __repr__(self) -> str:
        return f"TrialConfig({self.family.name}, {self.values})"


@dataclass(frozen=True)
class SearchSpace:
    """What one study searches: its families (one, or all), stand-ins or real architectures, a pinned arch.
    Called with an Optuna trial it is the define-by-run space for OptunaSearch."""

    families: tuple  # Family values
    standins: bool = False
    arch: Optional[str] = None  # --arch pins one architecture of a single family
    pins: tuple = ()  # --set: (knob, value) pairs fixed in every family that has the knob (checked by `pin`)

    @property
    def qualified(self) -> bool:
        return len(self.families) > 1

    def family(self, name: str) -> Family:
        return next(f for f in self.families if f.name == name)

    def _prefix(self, fam: Family) -> str:
        return f"{fam.name}." if self.qualified else ""

    def _pinned(self, fam: Family) -> dict[str, Any]:
        """The knobs --set fixes that `fam` has, with their values."""
        own = fam.params()
        return {k: v for k, v in self.pins if k in own}

    def _params(self, fam: Family) -> dict[str, Any]:
        """The family's space in this study: its architectures (stand-ins, --arch), the knobs --set fixes."""
        return {**fam.params(self.standins, self.arch), **self._pinned(fam)}

    def _split(self, fam: Family) -> tuple[dict, dict]:
        p = self._params(fam)
        return (
            {k: v for k, v in p.items() if isinstance(v, BaseDistribution)},
            {k: v for k, v in p.items() if not isinstance(v, BaseDistribution)},
        )

    def __call__(self, trial) -> dict:
        fam = self.families[0]
        if self.qualified:
            fam = self.family(suggest(trial, FAMILY_PARAM, Choice([f.name for f in self.families])))
        searched, _ = self._split(fam)
        out = {FAMILY_PARAM: fam.name} if self.qualified else {}
        return {**out, **{self._prefix(fam) + k: suggest(trial, self._prefix(fam) + k, d) for k, d in searched.items()}}

    def trial_config(self, config: Mapping[str, Any]) -> TrialConfig:
        """The TrialConfig of a Tune config (study names); unknown keys are an error."""
        fam = self.family(config[FAMILY_PARAM]) if self.qualified else self.families[0]
        prefix = self._prefix(fam)
        searched, fixed = self._split(fam)
        own = {k[len(prefix) :]: v for k, v in config.items() if k != FAMILY_PARAM or not self.qualified}
        unknown = sorted(set(own) - set(searched))
        if unknown:
            raise ValueError(
                f"unknown trial config keys {unknown} for family {fam.name!r}; searched: {sorted(searched)}"
            )
        pinned = list(self._pinned(fam))
        return TrialConfig(fam, {**fixed, **own}, searched=list(searched), prefix=prefix, pinned=pinned)

    def distributions(self) -> dict[str, BaseDistribution]:
        """Every searched parameter of the study under its study name (the `family` choice included)."""
        out = {FAMILY_PARAM: Choice([f.name for f in self.families])} if self.qualified else {}
        for fam in self.families:
            out.update({self._prefix(fam) + k: d for k, d in self._split(fam)[0].items()})
        return out

    def shapes(self) -> list[TrialConfig]:
        """One configuration per network the study can train: every architecture x every value of each shape knob
        (Family.shape_params), the other values at the space's centre."""
        out = []
        for fam in self.families:
            params = self._params(fam)
            grid = [{}]
            for k in ("arch", *fam.shape_params):
                choices = params[k].choices if isinstance(params[k], Choice) else (params[k],)
                grid = [{**g, k: v} for g in grid for v in choices]
            out += [fam.config(standins=self.standins, **{**self._pinned(fam), **g}) for g in grid]
        return out

    def to_json(self) -> dict:
        """What the parent run records (study/space.json): distributions as Optuna's JSON, fixed values."""
        return {
            "searched": {k: distribution_to_json(d) for k, d in self.distributions().items()},
            "fixed": {f.name: self._split(f)[1] for f in self.families},
        }

    def first_points(self, recipes: bool = True, starts: Mapping[str, Any] = {}) -> Optional[list[dict]]:  # noqa: B006
        """The study's first trials, under study names: `starts` (family name -> a configuration to try first:
        the demo's), then each family's recipes (in `all`, its first recipe, or just the family: every family
        enters before TPE narrows the race). A recipe's architecture is left to the search where it is not
        searched (stand-ins, a pinned --arch)."""
        points = []
        for fam in self.families:
            searched, _ = self._split(fam)
            own = {FAMILY_PARAM: fam.name} if self.qualified else {}
            first = ((starts[fam.name],) if fam.name in starts else ()) + (fam.recipes if recipes else ())
            for recipe in first[: 1 if self.qualified else None]:
                points.append(
                    {
                        **own,
                        **{
                            self._prefix(fam) + k: v
                            for k, v in recipe.items()
                            if k in searched and _admits(searched[k], v)
                        },
                    }
                )
            if own and not first:
                points.append(own)
        return points or None

    def is_recipe(self, config: Mapping[str, Any]) -> bool:
        """The Tune config is one of the recipe points (its phase is `recipe`, not `search`)."""
        return any(
            len(p) > self.qualified and all(config.get(k) == v for k, v in p.items()) for p in self.first_points() or ()
        )


def pin(families: Sequence[Family], settings: Iterable[str] | Mapping[str, Any]) -> tuple:
    """--set KNOB=VALUE (or a {knob: value} a study recorded) as the (knob, value) pairs SearchSpace.pins holds: each
    value read as its knob's type and checked against every family that has the knob. ValueError saying what is
    wrong: a knob no family has, `arch` (pinned with --arch), a value outside a range or not among the choices."""
    pairs = settings.items() if isinstance(settings, Mapping) else [_knob_value(text) for text in settings]
    out = {}
    for name, raw in pairs:
        if name == "arch":
            raise ValueError("--set cannot fix arch: pin an architecture with --arch")
        owners = [f for f in families if name in f.params()]
        if not owners:
            known = sorted({k for f in families for k in f.params()} - {"arch"})
            raise ValueError(f"--set {name}: no knob {name!r} in {_names(families)}; its knobs: {', '.join(known)}")
        for fam in owners:
            dist = fam.params()[name]
            value = _read(dist, raw)
            if not _admits(dist, value):
                raise ValueError(f"--set {name}={raw}: {name} in family {fam.name!r} is {_describe(dist)}")
        out[name] = value
    return tuple(out.items())


def _knob_value(text: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not (eq and name.strip() and value.strip()):
        raise ValueError(f"--set takes KNOB=VALUE (e.g. --set width=0.25), got {text!r}")
    return name.strip(), value.strip()


def _read(dist, raw):
    """A --set value (text, or a recorded value) as its knob's type: a choice or fixed value as the one it names."""
    if not isinstance(raw, str):
        return raw
    if isinstance(dist, (Float, Int)):
        try:
            return int(raw) if isinstance(dist, Int) else float(raw)
        except ValueError:
            raise ValueError(f"--set: {raw!r} is not a number ({_describe(dist)})") from None
    values = dist.choices if isinstance(dist, Choice) else (dist,)
    return next((v for v in values if str(v) == raw or _number(raw) == v), raw)


def _number(raw: str):
    try:
        return float(raw)
    except ValueError:
        return None


def _describe(dist) -> str:
    if isinstance(dist, Choice):
        return f"one of {', '.join(map(str, dist.choices))}"
    if isinstance(dist, (Float, Int)):
        return f"between {dist.low:g} and {dist.high:g}"
    return f"fixed at {dist}"


def _names(families: Sequence[Family]) -> str:
    return f"family {families[0].name!r}" if len(families) == 1 else "any family"


def pinned(families: Sequence[Family], arch: str | None) -> None:
    """ValueError naming the choices when --arch is not an architecture of the (single) family."""
    if arch is None:
        return
    if len(families) != 1:
        raise ValueError("--arch pins an architecture of one --family; it cannot be used with --family all")
    known = {**families[0].archs, **families[0].standins}
    if arch not in known:
        raise ValueError(f"--arch {arch!r} is not in family {families[0].name!r}: {', '.join(known)}")


__all__ = [
    "BASE",
    "Choice",
    "Family",
    "Float",
    "Int",
    "SearchSpace",
    "TrialConfig",
    "pin",
    "pinned",
    "replace",
    "suggest",
]
