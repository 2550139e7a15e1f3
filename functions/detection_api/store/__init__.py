"""Redis contracts: each key family is written and read in one module here."""
