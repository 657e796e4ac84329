"""The embedded sample catalogue (``sdss_sample.csv``), installed as package data so every install can run the
default job; ``make_sample.py`` regenerates it."""
