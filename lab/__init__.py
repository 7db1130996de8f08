"""The lab: the tables made from the committed runs (tables.py) and the screen of candidates
(screen.py). Run them from the project's root: `python -m lab.tables`, `python -m lab.screen`."""
