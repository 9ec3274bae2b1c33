"""The orchestration layer (layer 5): model and options in, typed sections out, one report.

`options.py` validates what a user asks for, once; `model.py` resolves,
traces and counts the model (and builds it per batch for timing);
`sections.py` holds the typed, frozen sections and assembles the `Report`;
`devices.py` chooses the roofline device and checks the measuring one;
`run.py` is the path through them, one function per command.
"""
