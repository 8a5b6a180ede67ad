"""Benchmarks as data: which sets form the in-distribution train / val / test data and the near / far OOD sets.

* ``fmnist6``: the embedded benchmark built from Debian's Fashion-MNIST (see :mod:`diffguard.data.fmnist6`).
* ``cifar10``: OpenOOD v1.5 CIFAR-10 (near: CIFAR-100, TinyImageNet; far: MNIST, SVHN, Textures, Places365).
* ``imagenet``: ImageNet-1K with the paper's OpenOOD v1 near-OOD sets (Species, iNaturalist, OpenImage-O,
  ImageNet-O) and the v1.5 near-OOD sets (SSB-hard, NINCO); far: Textures.

Image-list benchmarks read ``<data-root>/benchmark_imglist/<id>/<list>.txt`` with images under
``<data-root>/<images folder>/`` (OpenOOD's layout); :func:`open_benchmark` names every missing file at once.

User benchmarks (``source="user"``) are defined as data, in a YAML file or inline under ``benchmark:`` in a run
config (:mod:`diffguard.bench.user_yaml` reads and checks the definition); :func:`resolve_benchmark` accepts a
registered name, a path to a definition file, a definition mapping or a spec.

Roles: ``train`` (fits, training), ``val`` (ID validation: thresholds, fusion), ``val_ood`` (OOD validation),
``val_csid`` (covariate-shifted ID validation: known classes, mildly corrupted, labels >= 0; tuning measures
thresholds' false alarms on it; never a test set), ``id`` (the one ID test set), ``csid`` (covariate-shifted ID test
data: known classes, labels >= 0, not to be flagged), ``near`` and ``far`` (OOD test sets, labels -1). Validation
data is chosen by role only (:data:`VALIDATION_ROLES`), never by a set's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence, get_args

from diffguard.data import fmnist6 as f
from diffguard.errors import ConfigError
from diffguard.registry import Registry

Role = Literal["train", "val", "val_ood", "val_csid", "id", "csid", "near", "far"]
ROLES: tuple[str, ...] = get_args(Role)
OOD_ROLES = ("val_ood", "near", "far")
VALIDATION_ROLES: tuple[Role, ...] = ("val", "val_ood", "val_csid")
"""The roles of validation data (row limit ``val_limit``, seen by tuning); every other scored set is test data."""
CSID_ROLES: tuple[Role, ...] = ("val_csid", "csid")
"""Covariate-shifted ID sets (known classes, not to be flagged): validation (``val_csid``) and test (``csid``)."""
RUN_NEEDS: tuple[Role, ...] = ("id", "val")  # the sets every benchmark run uses (train only for fitting methods)
BENCHMARKS: Registry["BenchmarkSpec"] = Registry("benchmark")
GROUP_ROWS: tuple[str, ...] = ("near", "far", "all", "val_ood")
"""Names of the evaluation's group rows (unweighted means over sets) in metrics.json, metrics.md and the report."""
SET_ROW_PREFIX = "set:"
"""A set named like a group row (a user set called ``near``) is reported as ``set:near``; no set name may start
with it, so a set row and a group row never share a name."""


def metric_row_name(set_name: str) -> str:
    """The name of a set's row in the metric tables: its own name, or ``set:<name>`` when a group row has it."""
    return SET_ROW_PREFIX + set_name if set_name in GROUP_ROWS else set_name


def row_set_name(row_name: str) -> str:
    """The set a metric row of :func:`metric_row_name` belongs to (a group row's name comes back unchanged)."""
    return row_name.removeprefix(SET_ROW_PREFIX)


@dataclass(frozen=True)
class SetSpec:
    """One set of a benchmark: name, role, and where its images are.

    Image-list benchmarks: ``list_path`` and ``image_dir`` relative to the data root. User benchmarks: either
    ``folder`` (an image folder) or ``list_path`` + ``image_dir`` (a list and the folder its paths are relative
    to), all absolute.
    """

    name: str
    role: Role
    list_path: str = ""
    image_dir: str = ""
    folder: str = ""
    optional: bool = False  # run only when a config's ``sets:`` names it (e.g. fmnist6's per-kind csid sets)

    @property
    def ood(self) -> bool:
        """Whether the set's labels are -1 (roles val_ood, near, far)."""
        return self.role in OOD_ROLES


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark: sets by role, classes, resolution and how to read the data."""

    name: str
    num_classes: int
    image_size: int
    channels: int
    sets: tuple[SetSpec, ...]
    source: Literal["fmnist6", "imglist", "user"] = "imglist"
    notes: str = ""
    class_names: tuple[str, ...] = field(default=())

    def by_role(self, *roles: Role) -> list[SetSpec]:
        return [s for s in self.sets if s.role in roles]

    def default_sets(self) -> list[str]:
        """The sets a run config without ``sets:`` runs: every set but the optional ones."""
        return [s.name for s in self.sets if not s.optional]

    def get(self, name: str) -> SetSpec:
        for s in self.sets:
            if s.name == name:
                return s
        raise KeyError(f"benchmark {self.name!r} has no set {name!r}; sets: {[s.name for s in self.sets]}")

    def require(self, roles: Sequence[Role], purpose: str) -> None:
        """Raise ConfigError naming the roles in ``roles`` that have no set (``purpose``: what needs them)."""
        missing = [r for r in roles if not self.by_role(r)]
        if missing:
            raise ConfigError(f"benchmark {self.name!r} has no set with role {' or '.join(map(repr, missing))}, "
                              f"which {purpose} needs: add one (role: {missing[0]}) to its sets")

    @property
    def test_set(self) -> str:
        return self.by_role("id")[0].name

    @property
    def train_set(self) -> str:
        """The (first) ID training set, which fitting methods use (ConfigError when the benchmark has none)."""
        self.require(["train"], "fitting methods (KNN, ViM, MDS, ...)")
        return self.by_role("train")[0].name


def _fmnist6() -> BenchmarkSpec:
    """fmnist6's sets (:data:`diffguard.data.fmnist6.SET_NAMES`): the core sets, then the 30 per-kind covariate-shift
    sets ``<val|test>-csid-<kind>-<severity>`` (roles ``val_csid`` / ``csid``), which are optional: a run config
    without ``sets:`` runs the core sets only (as before they existed), one that names them runs them."""
    sets = tuple(SetSpec(n, f.ROLES[n], optional=n in f.CSID_KIND_SETS) for n in f.SET_NAMES)
    return BenchmarkSpec("fmnist6", f.NUM_CLASSES, f.RESOLUTION, 1, sets, source="fmnist6",
                         notes="embedded: Fashion-MNIST classes 0-5 known, 6-9 near-OOD; digits and noise far-OOD; "
                               "OOD validation val-ood / val-far; covariate-shifted ID val-csid / test-csid, and per "
                               "corruption kind and severity <val|test>-csid-<kind>-<1|2|3>")


def _imglist_sets(folder: str, images: str, entries: list[tuple[str, Role, str]]) -> tuple[SetSpec, ...]:
    return tuple(SetSpec(n, r, f"benchmark_imglist/{folder}/{lst}", images) for n, r, lst in entries)


@BENCHMARKS.register("fmnist6")
def fmnist6_spec() -> BenchmarkSpec:
    return _fmnist6()


@BENCHMARKS.register("cifar10")
def cifar10_spec() -> BenchmarkSpec:
    """OpenOOD v1.5 CIFAR-10 (the paper's Table 1 uses its near-OOD sets CIFAR-100 and TinyImageNet)."""
    sets = _imglist_sets("cifar10", "images_classic", [
        ("train", "train", "train_cifar10.txt"), ("val", "val", "val_cifar10.txt"),
        ("test", "id", "test_cifar10.txt"), ("cifar100", "near", "test_cifar100.txt"),
        ("tin", "near", "test_tin.txt"), ("mnist", "far", "test_mnist.txt"), ("svhn", "far", "test_svhn.txt"),
        ("texture", "far", "test_texture.txt"), ("places365", "far", "test_places365.txt")])
    return BenchmarkSpec("cifar10", 10, 32, 3, sets, notes="OpenOOD v1.5 image lists")


@BENCHMARKS.register("imagenet")
def imagenet_spec() -> BenchmarkSpec:
    """ImageNet-1K: v1 near-OOD (the paper's Table 2) plus v1.5 near-OOD; images at 256 (diffusion resolution)."""
    sets = _imglist_sets("imagenet", "images_largescale", [
        ("train", "train", "train_imagenet.txt"), ("val", "val", "val_imagenet.txt"),
        ("test", "id", "test_imagenet.txt"),
        ("species", "near", "test_species.txt"), ("inaturalist", "near", "test_inaturalist.txt"),
        ("openimage_o", "near", "test_openimage_o.txt"), ("imagenet_o", "near", "test_imagenet_o.txt"),
        ("ssb_hard", "near", "test_ssb_hard.txt"), ("ninco", "near", "test_ninco.txt"),
        ("textures", "far", "test_textures.txt")])
    return BenchmarkSpec("imagenet", 1000, 256, 3, sets,
                         notes="v1 near-OOD lists (species, imagenet_o) come from the OpenOOD v1 bundle")


def get_benchmark(name: str) -> BenchmarkSpec:
    """The registered benchmark spec ``name`` (unknown names get the closest valid ones)."""
    return BENCHMARKS.create(name)
