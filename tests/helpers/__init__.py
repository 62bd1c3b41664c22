"""Helpers shared by several test files (tests/ is on sys.path: `from helpers.ddp import ...`).
No test lives here, and no test file imports another test file."""
