"""SLURM launcher tests on a throwaway single-node cluster (``make test-slurm``); a package, so that its conftest
never takes the place of tests/conftest.py as the module ``conftest`` the other tests import from."""
