"""Redis contracts: each key family is written and read in one module here (docs/architecture.md
"Redis contracts" lists them)."""
