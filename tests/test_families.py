"""Every registered family, followed from the registry: a new family is tested without a new test."""

import optuna
import pytest
import torch

from search_spaces import ALL, FAMILIES, get_family, search_space
from search_spaces.space import Choice, Family, Float, SearchSpace
from trainables import engine
from trainables.data import augment
from trainables.pretrained import Weights

pytestmark = pytest.mark.unit

SPECS = [(name, arch) for name, fam in FAMILIES.items() for arch in {**fam.archs, **fam.standins}]
NO_WEIGHTS = Weights("none")


def build(name, arch, num_classes=5, image_size=64, **values):
    fam = FAMILIES[name]
    cfg = fam.config(arch, **({"width": 0.25} if "width" in fam.params() else {}), **values)
    return cfg, fam.build(cfg, num_classes, image_size, NO_WEIGHTS)


@pytest.mark.parametrize("standins", [False, True])
@pytest.mark.parametrize("name", FAMILIES)
def test_space_yields_valid_trial_configs(name, standins):
    space = search_space(name, standins=standins)
    family = FAMILIES[name]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        config = space(trial)
        cfg = space.trial_config(config)
        assert config == trial.params == cfg.params()  # one name per parameter: Optuna = Tune = MLflow
        assert cfg.family is family and cfg.arch in family.arch_choices(standins)
        assert set(cfg.values) == set(family.params())  # every knob of the family, and no other's


def test_widening_a_base_range_is_refused():
    """Family.__post_init__ holds every family to BASE: narrower ranges of the same kind and scale only."""
    with pytest.raises(ValueError, match="must narrow BASE"):
        Family("wide", {"a": "test_resnet"}, build=None, space={"lr": Float(1e-9, 1.0, log=True)})
    with pytest.raises(ValueError, match="must narrow BASE"):
        Family("linear", {"a": "test_resnet"}, build=None, space={"lr": Float(1e-4, 1e-3)})


@pytest.mark.parametrize("name", FAMILIES)
def test_arch_can_be_pinned(name):
    family = FAMILIES[name]
    for arch in {**family.archs, **family.standins}:
        space = search_space(name, arch=arch)
        trial = optuna.create_study().ask()
        config = space(trial)
        assert "arch" not in config and space.trial_config(config).arch == arch


@pytest.mark.parametrize("name", FAMILIES)
def test_set_fixes_each_searched_knob_in_every_trial_recipe_and_shape(name):
    """--set KNOB=VALUE, for every searched knob of every family: no longer proposed, the value in every trial's
    config, the recipes and the networks whose costs are measured, and recorded with the trial's run params."""
    from trainables.trial.driver import run_params

    for knob, dist in search_space(name).distributions().items():
        if knob == "arch":
            continue
        value = dist.choices[0] if isinstance(dist, Choice) else dist.high
        space = search_space(name, pins=[f"{knob}={value}"])
        assert knob not in space.distributions() and space.pins == ((knob, value),)
        cfg = space.trial_config(space(optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()))
        assert getattr(cfg, knob) == value and run_params(cfg)[knob] == value and knob not in cfg.params()
        assert all(knob not in point for point in space.first_points() or ())
        assert all(shape.values[knob] == value for shape in space.shapes())
        assert search_space(name, pins={knob: value}) == space  # as --resume reads it back from the settings


def test_set_refuses_what_no_trial_could_use():
    with pytest.raises(ValueError, match="lr in family 'scratch' is between 0.0001 and 0.003"):
        search_space("scratch", pins=["lr=0.5"])
    with pytest.raises(ValueError, match="warmup_epochs in family 'scratch' is fixed at 0.5"):
        search_space("scratch", pins=["warmup_epochs=2"])
    with pytest.raises(ValueError, match="not a number"):
        search_space("scratch", pins=["lr=fast"])
    with pytest.raises(ValueError, match="--arch"):
        search_space("scratch", pins=["arch=deep_cnn"])
    with pytest.raises(ValueError, match="lr in family 'transformers'"):  # `all`: every family that has the knob
        search_space(ALL, standins=True, pins=["lr=1e-3"])


def test_all_names_every_knob_once_per_family_in_one_tpe_study():
    """Families give `arch` and `batch_size` different choices; `all` qualifies every name, so Optuna's
    study, the Tune config and the MLflow params agree and TPE models each family's knobs apart."""
    space = search_space(ALL, standins=True)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4))
    for point in space.first_points():
        study.enqueue_trial(point)
    seen = set()
    for i in range(16):
        trial = study.ask()
        config = space(trial)
        cfg = space.trial_config(config)
        assert config == trial.params == cfg.params()
        assert all(k == "family" or k.startswith(f"{cfg.family.name}.") for k in config)
        seen.add(cfg.family.name)
        study.tell(trial, float(i % 5))
    assert seen == set(FAMILIES)
    assert set(space.distributions()) == set().union(*(t.params for t in study.trials))


@pytest.mark.parametrize("name", FAMILIES)
def test_family_declares_its_budget_weights_and_augmentation(name):
    family = FAMILIES[name]
    assert family.augment in augment.RECIPES and family.image_size > 0 and family.grace_epochs >= 1
    assert isinstance(family.pretrained, bool)
    sample = augment.sample_transform(32, True, 1.0, family.augment)(
        torch.randint(0, 255, (3, 50, 40), dtype=torch.uint8)
    )
    assert sample.shape == (3, 32, 32) and sample.dtype == torch.uint8
    batch = augment.BatchAugment(True, 1.0, family.augment)(torch.stack([sample] * 4))
    assert batch.shape == (4, 3, 32, 32) and batch.dtype == torch.float32 and batch.isfinite().all()


def test_unknown_config_keys_are_rejected():
    space = search_space("scratch")
    with pytest.raises(ValueError, match="unknown trial config keys.*'learning_rate'"):
        space.trial_config({"arch": "simple_cnn", "learning_rate": 1e-3})
    with pytest.raises(ValueError, match="unknown trial config keys.*'layer_decay'"):  # another family's knob
        space.trial_config({"arch": "simple_cnn", "layer_decay": 0.7})


def test_a_knob_the_family_lacks_is_an_error_not_a_default():
    cfg = FAMILIES["scratch"].config()
    with pytest.raises(AttributeError, match="family 'scratch' has no parameter 'layer_decay'"):
        _ = cfg.layer_decay
    assert cfg.get("layer_decay", 0.0) == 0.0


def test_unknown_family_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown family 'nope'.*scratch.*all"):
        get_family("nope")


@pytest.mark.parametrize("name,arch", SPECS)
def test_every_arch_builds_and_trains_on_cpu(name, arch):
    cfg, model = build(name, arch)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    head = cfg.family.head(model)
    assert isinstance(head, torch.nn.Linear) and head.out_features == 5  # the family names its classifier
    new = {id(p) for p in cfg.family.trainable_parameters(model)}
    assert {id(p) for p in head.parameters()} <= new < {id(p) for p in model.parameters()}


def test_scratch_nets_refuse_pretrained_weights():
    with pytest.raises(RuntimeError, match="no pretrained weights exist"):
        FAMILIES["scratch"].build(FAMILIES["scratch"].config(), 3, 32, Weights("timm"))


def test_hybrid_matches_seed_003_shapes():
    _, model = build("hybrid", "resnet50_bigru", num_classes=27, image_size=224)
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        fmap = model.backbone.forward_features(x)
        assert fmap.shape == (2, 2048, 7, 7)  # ResNet-50 truncated at layer4
        assert model.proj(fmap).shape == (2, 320, 7, 7)  # 1x1 projection 2048 -> 320
        seq = model.proj(fmap).flatten(2).transpose(1, 2)
        assert model.rows(seq).shape == model.cols(seq).shape == (2, 512)  # mean + attention pooling
        assert model.pooled(x).shape == (2, 3072)  # 2048 + 512 + 512
        assert model(x).shape == (2, 27)
    assert model.rows.gru.num_layers == 2 and model.rows.gru.bidirectional and model.rows is not model.cols


def test_frozen_backbone_keeps_its_weights_while_the_head_learns():
    cfg, model = build("cnn", "test_resnet", num_classes=3, image_size=32)
    opt = engine.make_optimizer(model, 1e-2, 0.01, head=cfg.family.trainable_parameters(model), backbone_lr_scale=0.1)
    sched = engine.make_scheduler(opt, steps_per_epoch=4, epochs=2, warmup_epochs=0)
    assert {g["lr_scale"] for g in opt.param_groups if not g["is_head"]} == {0.1}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine.set_backbone_frozen(opt, True)
    loader = [(torch.randn(4, 3, 32, 32), torch.randint(0, 3, (4,)))] * 3
    model.eval()  # keep BatchNorm statistics fixed so only the optimizer can change weights
    for x, y in loader:
        sched.step_update(0)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    head = {n for n, _ in model.get_classifier().named_parameters()}
    for k in before:
        changed = not torch.equal(before[k], after[k])
        assert changed == (k.removeprefix("fc.") in head and k.startswith("fc.")), k


def test_single_choice_categoricals_are_fixed_not_searched():
    fam = Family("one", {"only": "test_resnet"}, build=None, space={"batch_size": Choice([32])})
    assert fam.params()["arch"] == "only" and fam.params()["batch_size"] == 32
    assert "batch_size" not in SearchSpace((fam,)).distributions() and fam.config().batch_size == 32


@pytest.mark.parametrize("name", FAMILIES)
def test_recipes_are_points_of_the_space_and_come_first(name):
    """Every family carries a published recipe (Family.__post_init__ checks each is a point of its space); a study
    enqueues it before TPE proposes anything, and a trial config built from it is recognised as the recipe."""
    fam = FAMILIES[name]
    assert fam.recipes, f"{name} has no published recipe"
    for standins in (False, True):
        space = search_space(name, None, standins)
        first = space.first_points()
        assert len(first) == len(fam.recipes) and set(first[0]) <= set(space.distributions())
        cfg = space.trial_config({**dict(space(optuna.create_study().ask())), **first[0]})
        assert all(cfg.values[k] == v for k, v in first[0].items())
        assert space.is_recipe({**cfg.params(), **first[0]}) and not space.is_recipe(cfg.params() | {"lr": -1.0})
    assert search_space(name, None, False).first_points(recipes=False) is None


def test_an_all_study_starts_with_each_familys_recipe():
    space = search_space(ALL, None, True)
    first = space.first_points()
    assert [p["family"] for p in first] == list(FAMILIES)
    assert all(p[f"{p['family']}.lr"] == FAMILIES[p["family"]].recipes[0]["lr"] for p in first)
    assert space.first_points(recipes=False) == [{"family": n} for n in FAMILIES]
    assert not space.is_recipe({"family": "cnn", "cnn.lr": 0.5})


def test_a_recipe_outside_the_space_is_refused():
    with pytest.raises(ValueError, match="recipe values"):
        Family(
            "wide", {"a": "test_resnet"}, build=None, space={"lr": Float(1e-4, 1e-3, log=True)}, recipes=({"lr": 0.5},)
        )
    with pytest.raises(ValueError, match="recipe values"):
        Family("odd", {"a": "test_resnet"}, build=None, recipes=({"no_such_knob": 1},))
