"""Adapters on the tiny random BERT of conf/backbone/tiny.yaml: training, counts, save, names."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from crossrec_cli.adapters import (
    active_adapter,
    adapter_loss,
    adapter_names,
    adapter_step_hook,
    add_named_adapter,
    apply_adapter,
    load_adapter_weights,
    method_of,
    param_counts,
    save_adapter,
    set_active_adapter,
)
from crossrec_cli.errors import CrossrecError
from crossrec_cli.models.backbone import Backbone, build_backbone, models_dir
from crossrec_cli.models.encode import forward_pool

REPO = Path(__file__).resolve().parents[1]
TINY = OmegaConf.to_container(OmegaConf.load(REPO / "crossrec_cli/conf/backbone/tiny.yaml"))
ITEMS = REPO / "crossrec_cli/data/bundled/ml-100k/ml-100k.item"
TITLES = [
    " ".join(line.split("\t")[1::2]) for line in ITEMS.read_text().splitlines()[1:9]
]  # title + genres
# small settings so every test runs in well under a second on the tiny model
SMALL = {
    "lora": {"r": 4},
    "adalora": {"init_r": 6, "target_r": 2, "delta_t": 1},
    "prefix": {"num_virtual_tokens": 4},
    "ia3": {},
    "adapter": {"bottleneck": 8},
}
NAMED = list(SMALL)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP threads
    waiting on each other made these tests ~30x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(method: str | None = None, total_steps: int = 10, **kwargs: object) -> Backbone:
    bb = build_backbone("tiny", config=TINY["config"], seed=0)
    if method is not None:
        bb.model = apply_adapter(
            bb.model, method, total_steps=total_steps, **{**SMALL.get(method, {}), **kwargs}
        )
    return bb


def encode(bb: Backbone, texts: list[str] = TITLES) -> torch.Tensor:
    bb.model.eval()
    with torch.no_grad():
        return forward_pool(bb, texts, TINY["max_length"], "mean")


def train(bb: Backbone, steps: int = 2, sign: float = 1.0, lr: float = 5e-2) -> None:
    """A few Adam steps on a toy loss, with the adapter step hook where a recipe calls it."""
    bb.model.train()
    opt = torch.optim.Adam([p for p in bb.model.parameters() if p.requires_grad], lr=lr)
    for step in range(steps):
        loss = sign * forward_pool(bb, TITLES, TINY["max_length"], "mean").pow(
            2
        ).mean() + adapter_loss(bb.model)
        loss.backward()
        opt.step()
        adapter_step_hook(bb.model, step)
        opt.zero_grad()


def yaml_settings(method: str) -> dict:
    cfg = OmegaConf.load(REPO / f"crossrec_cli/conf/adapter/{method}.yaml")
    assert cfg.pop("name") == method
    return cfg


@pytest.mark.parametrize("method", ["full", *NAMED])
def test_one_step_changes_only_trainable_params(method: str) -> None:
    bb = tiny(method)
    before = {n: p.detach().clone() for n, p in bb.model.named_parameters()}
    trainable = {n for n, p in bb.model.named_parameters() if p.requires_grad}
    train(bb, steps=1)
    changed = {n for n, p in bb.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "nothing trained"
    assert changed <= trainable


def test_frozen_has_nothing_to_train() -> None:
    bb = tiny("frozen")
    assert param_counts(bb.model)[0] == 0
    assert torch.equal(encode(bb), encode(tiny()))


def test_trainable_counts_with_the_shipped_configs() -> None:
    counts = {}
    for method in ["frozen", "full", "lora", "adalora", "prefix", "ia3", "adapter"]:
        bb = tiny()
        bb.model = apply_adapter(bb.model, method, total_steps=100, **yaml_settings(method))
        counts[method] = param_counts(bb.model)
        assert method_of(bb.model) == method
    backbone_total = counts["frozen"][1]
    assert counts["frozen"][0] == 0
    assert counts["full"] == (backbone_total, backbone_total)
    for method in ["lora", "adalora", "ia3", "prefix", "adapter"]:
        trainable, total = counts[method]
        assert 0 < trainable < backbone_total and total > backbone_total, method
    for method in ["lora", "ia3", "prefix"]:  # backbone frozen, every new weight trains
        assert counts[method][1] == backbone_total + counts[method][0], method


def test_bottleneck_adapter_starts_as_the_backbone() -> None:
    bb = tiny("adapter", bottleneck=64)
    wrapped = [
        n
        for n, _ in bb.model.named_modules()
        if n.endswith(".dense")
        and "adapters" not in n
        and type(bb.model.get_submodule(n)).__name__ == "AdaptedLinear"
    ]
    assert (
        len(wrapped) == 2 * TINY["config"]["num_hidden_layers"]
    )  # attention output + feed-forward output
    assert torch.equal(encode(bb), encode(tiny()))
    norms = {n for n, p in bb.model.named_parameters() if p.requires_grad and "LayerNorm" in n}
    assert norms  # Houlsby: LayerNorms train with the adapters
    assert not [
        n
        for n, p in tiny("adapter", train_layernorm=False).model.named_parameters()
        if p.requires_grad and "LayerNorm" in n
    ]


def test_adalora_hook_prunes_ranks_to_the_budget() -> None:
    bb = tiny("adalora", total_steps=10)
    train(bb, steps=10)
    config = bb.model.peft_config["default"]
    kept = [sum(mask) for mask in config.rank_pattern.values()]
    assert sum(kept) == config.target_r * len(kept) < config.init_r * len(kept)
    assert float(adapter_loss(bb.model)) > 0  # orthogonality penalty reaches the encoder's loss


def test_adalora_hook_needs_the_gradients() -> None:
    bb = tiny("adalora")
    forward_pool(bb, TITLES, TINY["max_length"], "mean").sum().backward()
    bb.model.zero_grad(set_to_none=True)  # wrong order: zero_grad before the hook
    with pytest.raises(RuntimeError, match="before zero_grad"):
        adapter_step_hook(bb.model, 0)
    # with a second domain, a batch through the earlier (frozen) adapter is skipped
    add_named_adapter(bb.model, "adalora", "music", total_steps=10, **SMALL["adalora"])
    adapter_step_hook(bb.model, 0)


@pytest.mark.parametrize("method", ["full", *NAMED, "prefix-projection"])
def test_save_then_load_reproduces_outputs(method: str, tmp_path: Path) -> None:
    extra = {"projection": True, "projection_hidden": 16} if method == "prefix-projection" else {}
    method = method.split("-")[0]
    bb = tiny(method, **extra)
    train(bb, steps=3)
    out = encode(bb)
    files = save_adapter(bb.model, tmp_path)
    assert all(f.suffix == ".safetensors" and f.is_file() for f in files)
    fresh = tiny(method, **extra)
    if (
        method == "full"
    ):  # the caller saves a fully trained backbone; the adapter folder holds no weights
        assert files == []
        return
    assert not torch.allclose(encode(fresh), out)
    load_adapter_weights(fresh.model, tmp_path)
    if method == "adalora":  # peft drops pruned ranks on save: same sums, another summation order
        torch.testing.assert_close(encode(fresh), out, rtol=0, atol=1e-6)
    else:
        assert torch.equal(encode(fresh), out)


def test_load_refuses_other_settings(tmp_path: Path) -> None:
    bb = tiny("lora")
    save_adapter(bb.model, tmp_path)
    with pytest.raises(CrossrecError, match="does not fit"):
        load_adapter_weights(tiny("lora", r=2).model, tmp_path)
    with pytest.raises(CrossrecError, match="saved lora adapters"):
        load_adapter_weights(tiny("ia3").model, tmp_path)


@pytest.mark.parametrize("method", NAMED)
def test_named_adapters_switch_outputs(method: str, tmp_path: Path) -> None:
    bb = tiny(method, adapter_name="movies")
    one = param_counts(bb.model)[0]
    add_named_adapter(bb.model, method, "music", total_steps=10, **SMALL[method])
    assert adapter_names(bb.model) == ["movies", "music"] and active_adapter(bb.model) == "movies"
    if (
        method != "adalora"
    ):  # peft trains one AdaLoRA adapter at a time: adding one freezes the others
        assert param_counts(bb.model)[0] > one  # (bottleneck adapters share the LayerNorms)
    for name, sign in [
        ("movies", 1.0),
        ("music", -1.0),
    ]:  # train the two domains in opposite directions
        set_active_adapter(bb.model, name)
        if method == "adalora" and name == "movies":
            continue
        train(bb, steps=2, sign=sign)
    outs = {}
    for name in ["movies", "music"]:
        set_active_adapter(bb.model, name)
        outs[name] = encode(bb)
    assert not torch.allclose(outs["movies"], outs["music"])
    set_active_adapter(bb.model, "movies")
    assert torch.equal(encode(bb), outs["movies"])
    save_adapter(bb.model, tmp_path)
    fresh = tiny(method, adapter_name="movies")
    add_named_adapter(fresh.model, method, "music", total_steps=10, **SMALL[method])
    load_adapter_weights(fresh.model, tmp_path)
    set_active_adapter(fresh.model, "music")
    torch.testing.assert_close(encode(fresh), outs["music"], rtol=0, atol=1e-6)


def test_named_adapter_errors() -> None:
    bb = tiny("lora")
    with pytest.raises(CrossrecError, match="cannot add"):
        add_named_adapter(bb.model, "ia3", "music")
    with pytest.raises(CrossrecError, match="exists already"):
        add_named_adapter(bb.model, "lora", "default")
    with pytest.raises(CrossrecError, match="no adapter 'books'"):
        set_active_adapter(bb.model, "books")
    with pytest.raises(CrossrecError, match="cannot add"):
        add_named_adapter(tiny("full").model, "full", "music")


def test_prefix_with_forward_pool() -> None:
    bb = tiny("prefix")
    batch = bb.tokenizer(TITLES, padding=True, return_tensors="pt")
    hidden = bb.model(**batch).last_hidden_state
    assert (
        hidden.shape[:2] == batch["input_ids"].shape
    )  # the prefix is in keys/values, not in the output
    vecs = encode(bb)
    assert vecs.shape == (len(TITLES), TINY["config"]["hidden_size"])
    # padding and the prefix's attention mask: a text alone encodes as it does in a padded batch
    torch.testing.assert_close(encode(bb, TITLES[:1]), vecs[:1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("keep", [True, False])
def test_prefix_keeps_pretrained_positions(keep: bool) -> None:
    captured = []

    def grab(module: torch.nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        captured.append(output)

    for bb in (tiny(), tiny("prefix", keep_positions=keep)):
        base = bb.model.get_base_model() if hasattr(bb.model, "get_base_model") else bb.model
        base.embeddings.register_forward_hook(grab, with_kwargs=True)
        encode(bb)
    assert (
        torch.equal(captured[0], captured[1]) == keep
    )  # peft's default shifts positions by the prefix length


def test_prefix_longer_than_free_positions_works_with_kept_positions() -> None:
    virtual = TINY["config"]["max_position_embeddings"] - 8  # prefix + text > position table
    assert encode(tiny("prefix", num_virtual_tokens=virtual)).isfinite().all()


def test_llama_like_auto_targets() -> None:
    cfg = {
        "model_type": "llama",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
    }
    for method in NAMED:
        bb = build_backbone("tiny-llama", config=cfg, kind="decoder", seed=0)
        bb.model = apply_adapter(bb.model, method, total_steps=10, **SMALL[method])
        assert 0 < param_counts(bb.model)[0] < param_counts(bb.model)[1]
        with torch.no_grad():
            assert forward_pool(bb, TITLES[:2], 32, "last").shape == (2, 32)
    names = {n for n, p in bb.model.named_parameters() if p.requires_grad}  # the last one: adapter
    assert any(".o_proj.adapters." in n for n in names) and any(
        ".down_proj.adapters." in n for n in names
    )


@pytest.mark.parametrize(
    ("method", "settings", "where"),
    [
        ("lora", {"rank": 8}, "adapter.rank"),
        ("lora", {"r": 0}, "adapter.r"),
        ("lora", {"dropout": 1.5}, "adapter.dropout"),
        ("lora", {"target_modules": "query"}, "adapter.target_modules"),
        ("lora", {"target_modules": ["no_such_layer"]}, "adapter.target_modules"),
        ("adalora", {"target_r": 20}, "adapter.target_r"),
        ("ia3", {"target_modules": ["key"]}, "adapter.feedforward_modules"),
        ("prefix", {"projection": "yes"}, "adapter.projection"),
        ("adapter", {"nonlinearity": "swish"}, "adapter.nonlinearity"),
        ("adapter", {"bottleneck": 0}, "adapter.bottleneck"),
        ("frozen", {"r": 8}, "adapter.r"),
        ("lorra", {}, "adapter.name"),
    ],
)
def test_bad_settings_fail_loudly(method: str, settings: dict, where: str) -> None:
    with pytest.raises(CrossrecError) as err:
        tiny(method, **settings) if method in SMALL else apply_adapter(
            tiny().model, method, **settings
        )
    assert err.value.where == where


def test_adalora_needs_total_steps() -> None:
    with pytest.raises(CrossrecError) as err:
        apply_adapter(tiny().model, "adalora")
    assert err.value.where == "adapter.total_steps"


def test_auto_targets_need_a_known_model_type() -> None:
    with pytest.raises(CrossrecError) as err:
        apply_adapter(torch.nn.Sequential(torch.nn.Linear(4, 4)), "lora")
    assert err.value.where == "adapter.target_modules"


@pytest.mark.slow
def test_lora_on_minilm() -> None:
    if not (models_dir() / "all-MiniLM-L6-v2").is_dir():
        pytest.skip("all-MiniLM-L6-v2 is not provisioned (make install)")
    bb = build_backbone("minilm", local="all-MiniLM-L6-v2")
    before = encode(bb, TITLES)
    bb.model = apply_adapter(bb.model, "lora", **yaml_settings("lora"))
    trainable, total = param_counts(bb.model)
    assert 0 < trainable < total / 10
    assert torch.equal(encode(bb, TITLES), before)  # LoRA's B starts at zero
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(bb, steps=1, lr=1e-3)
    assert not torch.allclose(encode(bb, TITLES), before)
