"""bertcls' own commands (``bertcls download``, ``bertcls convert``); Lightning's are in ``bertcls.cli``."""
