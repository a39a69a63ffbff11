"""The torch-free core: the run record and its IO, the file names, key roles, liveness, the
dataset table, the anatomy's conditions and the errors a user can fix.

`analysis` imports only this package of the trainer's, and nothing here imports torch at import
time (tests/test_contracts.py checks both).
"""
