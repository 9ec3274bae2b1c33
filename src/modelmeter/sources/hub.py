"""Model ids from the Hugging Face Hub: fetch `config.json` only, never weights (layer 1).

`modelmeter count Qwen/Qwen3-30B-A3B` needs the architecture, not the
checkpoint: `huggingface_hub.hf_hub_download` fetches `config.json` into the
standard Hub cache (`HF_HUB_CACHE`, default ~/.cache/huggingface/hub) and
returns its snapshot folder, which `resolve.py` then reads like any local
folder, on meta. The remote-code files a config names in `auto_map` are
fetched only with `trust_remote_code=True`. With `HF_HUB_OFFLINE=1` the cache
answers alone, so a model fetched once works offline.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..core.errors import MissingDependencyError, UnknownModelError

# owner/name, as the Hub spells repo ids: letters, digits, '-', '_', '.'.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def looks_like_hub_id(spec: str) -> bool:
    """'owner/name' that is not an existing local path."""
    return bool(_HUB_ID.match(spec)) and not Path(spec).exists()


def fetch_config_folder(repo_id: str, trust_remote_code: bool = False) -> Path:
    """The cached snapshot folder holding `repo_id`'s config.json (and remote code if trusted).

    Raises UnknownModelError with one line for a missing, gated or unreachable id.
    """
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            HFValidationError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )
    except ImportError as exc:
        raise MissingDependencyError(
            f"model ids from the Hub need huggingface_hub ({exc}); `pip install huggingface_hub`"
        ) from exc
    try:
        config = Path(hf_hub_download(repo_id, "config.json"))
        if trust_remote_code:
            for name in remote_code_files(config):
                hf_hub_download(repo_id, name)
    except GatedRepoError as exc:
        raise UnknownModelError(
            f"{repo_id} is gated on the Hugging Face Hub: accept its terms on huggingface.co/{repo_id} "
            "and log in (`hf auth login`), or give a local folder with its config.json"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise UnknownModelError(
            f"{repo_id} is not a model on the Hugging Face Hub (or it is private: log in with "
            "`hf auth login`)"
        ) from exc
    except LocalEntryNotFoundError as exc:  # a subclass of EntryNotFoundError: first
        raise UnknownModelError(
            f"{repo_id}: config.json is not in the Hugging Face cache and the Hub cannot be reached"
            " (offline, or HF_HUB_OFFLINE=1); fetch it once online or give a local folder"
        ) from exc
    except EntryNotFoundError as exc:
        raise UnknownModelError(f"{repo_id} on the Hugging Face Hub has no config.json") from exc
    except HFValidationError as exc:
        raise UnknownModelError(f"{repo_id!r} is not a valid Hugging Face model id") from exc
    except OSError as exc:  # network or cache I/O failures not classified above
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnknownModelError(f"{repo_id}: cannot fetch config.json from the Hub: {first}") from exc
    return config.parent


def remote_code_files(config_path: Path) -> list[str]:
    """Python files a config's `auto_map` points to in its own repo ('module.Class' -> 'module.py')."""
    try:
        auto_map = json.loads(config_path.read_text(encoding="utf-8")).get("auto_map") or {}
    except (OSError, ValueError):
        return []
    files: list[str] = []
    for ref in auto_map.values():
        for item in ref if isinstance(ref, list) else [ref]:
            if isinstance(item, str) and "--" not in item and "." in item:  # 'other/repo--x.Y': not ours
                name = item.rpartition(".")[0] + ".py"
                if name not in files:
                    files.append(name)
    return files
