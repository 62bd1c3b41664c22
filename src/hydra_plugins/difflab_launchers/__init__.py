"""difflab's submitit launchers for Hydra (`hydra/launcher=slurm`, `hydra/launcher=submitit_local`).

Hydra finds launcher plugins only under the `hydra_plugins` namespace package; the classes are
in `launchers` (a subclass of hydra-submitit-launcher's, see its docstring)."""
