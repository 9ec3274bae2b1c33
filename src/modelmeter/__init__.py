"""modelmeter: how efficient is a PyTorch model, in every sense that matters."""
__version__ = "0.1.0"
