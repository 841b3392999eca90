"""Adapters of `bench_seed_official.py`: one module per network of the seed papers.

Each module defines `ARCH` (registry name), `PRESET` (the preset timed, usually "paper"), `REPO` and `COMMIT`
(where the official code comes from; fetched into a temporary folder, never committed) and
`build_official(folder: Path, ours: nn.Module) -> Callable[[Tensor], Tensor]`: the official network built from the
files in `folder`, holding `ours`' weights, wrapped so that it maps [0, 1] RGB to [0, 1] RGB like ours. A network
whose forward takes more than the LR (KDSR's teacher: `model(lr, hr)`) also defines `inputs(lr) -> tuple`, the
positional inputs both sides get.
"""
