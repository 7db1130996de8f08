"""The lab: the tables made from the committed runs (tables.py) and the screen of candidates
(screen.py). Run them from the project's root as `python -m lab.tables` and `python -m lab.screen`."""
