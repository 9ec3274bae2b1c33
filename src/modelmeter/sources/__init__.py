"""Model sources (layer 1): a model spec -> `LoadedModel` (module + example inputs).

Public API: `resolve_model`, `list_presets`, `DEFAULT_MODEL`, `parse_input_spec`,
`LoadedModel`. Implementation modules are private; torch and transformers are
imported only when a model is resolved, so `import modelmeter` stays cheap.
"""

from .base import LoadedModel
from .inputs import parse_input_spec
from .resolve import DEFAULT_MODEL, list_presets, resolve_model

__all__ = ["DEFAULT_MODEL", "LoadedModel", "list_presets", "parse_input_spec", "resolve_model"]
