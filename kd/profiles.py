"""Run profiles: named layers of configuration values over the `kd.config` defaults.

* `smoke`: tiny networks, a handful of steps on the embedded photos; seconds. For tests and wiring checks.
* `demo`: the real ASID student and an RCAN `mini` teacher trained briefly on the embedded photos; a few minutes
  on a laptop CPU. The README's main command: it exercises everything, but is far too short to rank methods.
* `cpu`: the real ASID student, `mini` teachers, 281 of the 291 images for training (230 of them hold a 192-pixel
  HR patch; the 51 smaller T91 images are skipped with a warning) and the other 10 (`291-val`) for validation,
  Set5/Set14/B100 for testing; one distillation run at x4 fits in about 15 minutes on 2 CPU cores (calibrated by
  benchmarks/calibrate_teachers.py).
* `paper`: official configurations and recipes (DIV2K, official schedules and teachers, DIV2K 0801-0810 for
  validation), the student trained with ASID's recipe (the lightweight table); for GPUs.
* `paper-dckd`, `paper-dukd`, `paper-fakd`: the same data, teachers and evaluation with the training recipe of DCKD's,
  DUKD's and FAKD's released configurations, so that `kdbench paper dckd|fakd` compares like with like.

Validation (periodic checks, `eval.weights=best`, `kdbench tune`) never uses a test set: Set5/Set14/B100 are touched
only by the final evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kd.config import RunConfig, deep_merge, resolve
from kd.errors import unknown_choice


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    values: dict[str, Any]
    # Per teacher architecture: overrides of `teacher.train`, layered right after `values` (so a config file, the
    # command line and --set still win). Teachers differ in cost per step and in their official recipes.
    teacher_recipes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per teacher family ("cnn", "transformer"), then method: loss-term weights chosen by `kdbench tune` for this
    # profile, layered like the recipes. Each entry names its evidence file under reports/tuning/.
    method_weights: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # Per method: options tied to the profile's schedule (a step count that must fall inside the run), layered
    # like the weights.
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # For a profile too small to rank methods: where the evidence is, said after every comparison it prints.
    evidence: str = ""


# The committed comparison at a budget that can rank methods (kd.report, `kdbench report`).
COMMITTED_EVIDENCE = ("reports/cpu-x4-3seeds/report.html in the kdbench repository compares the methods on 3 "
                      "paired seeds of the cpu profile (1,000 steps, Set5/Set14/B100)")

SMOKE = Profile(
    "smoke",
    "tiny presets, 6 steps on the embedded photos, no LPIPS: seconds, for tests",
    {
        "student": {"arch": "asid", "preset": "tiny"},
        "teacher": {
            "arch": "rcan",
            "preset": "tiny",
            "train": {"steps": 6, "batch_size": 2, "lr_patch": 16, "lr": 1e-3, "schedule": "constant",
                      "log_every": 1, "ckpt_every": 2, "val_every": 0},
        },
        "data": {"train": "default"},
        "train": {"steps": 6, "batch_size": 2, "lr_patch": 16, "optimizer": "adam", "lr": 1e-3,
                  "schedule": "multistep", "milestones": [0.5], "gamma": 0.5,
                  "log_every": 1, "ckpt_every": 2, "val_every": 3},
        "eval": {"datasets": ["default"], "lpips": False, "val_dataset": "default"},
    },
    method_options={"dckd": {"history_every": [1], "ema_decay": 0.5}},  # see DEMO
    evidence=COMMITTED_EVIDENCE,
)

CPU = Profile(
    "cpu",
    "real ASID student, mini teachers, 291 set (10 held out for validation), Set5/Set14/B100 test; ~15 min per x4 run on 2 cores",
    {
        "student": {"arch": "asid", "preset": None},
        "teacher": {
            "arch": "rcan",
            "preset": "mini",
            # Teacher recipe: must beat the no-KD student by >= 0.3 dB on Set5/Set14 x4 within 45 minutes on 2
            # cores (benchmarks/calibrate_teachers.py measures both). RCAN mini, 5000 steps: +1.37/+0.95 dB,
            # 0.44-0.48 s/step (37-40 min; 1500 steps gave only +0.21/+0.13 dB). HAN and SwinIR: teacher_recipes.
            "train": {"steps": 5000, "batch_size": 8, "lr_patch": 32, "optimizer": "adam", "lr": 5e-4,
                      "schedule": "cosine", "min_lr": 1e-6, "log_every": 10, "ckpt_every": 100, "val_every": 500},
        },
        "data": {"train": "291-train"},
        # ASID's own optimiser (AdamW 5e-4, wd 1e-4), with a cosine decay suited to a short schedule.
        "train": {"steps": 1000, "batch_size": 4, "lr_patch": 48, "optimizer": "adamw", "lr": 5e-4,
                  "weight_decay": 1e-4, "schedule": "cosine", "min_lr": 1e-6,
                  "log_every": 10, "ckpt_every": 100, "val_every": 250},
        "eval": {"datasets": ["Set5", "Set14", "B100"], "lpips": True, "val_dataset": "291-val"},
        # The frozen teacher in bf16 + channels_last where the CPU computes bf16 natively (tests/test_accel.py
        # checks each mini teacher within 0.02 dB of fp32 on Set5); the student trains in fp32.
        "accel": {"teacher_dtype": "auto"},
    },
    # Fewer steps where a step costs more. HAN mini: 0.50-0.55 s/step (5000 steps projected 41-46 min); 4500 steps:
    # 41.4 min, +1.51/+1.03 dB. SwinIR mini: 0.57-0.64 s/step (its official 64-channel reconstruction head
    # dominates); 4000 steps: 42.6 min, +0.78/+0.50 dB.
    teacher_recipes={"han": {"steps": 4500}, "swinir": {"steps": 4000}},
    # `kdbench tune`, 250 steps, scored on 291-val (reports/tuning/). A default moves only when another value beats
    # it with a paired interval excluding 0 after Holm; those grids ran one seed, which gives no interval, so every
    # entry is the method's health-calibrated default, not separated by tuning (fitnet, lsfd and facd scored best of
    # their three points; attention tied 0.007 to 0.0002 dB; krnet's 0.3 scored 0.034 dB above 0.1). HAN teachers
    # are of the "cnn" family and take these entries.
    method_weights={
        "cnn": {
            "fitnet": {"fd": 0.1},  # fitnet-rcan-x4-cpu.csv: 0.03 / 0.1 / 0.3
            "lsfd": {"lsfd": 0.02},  # lsfd-rcan-x4-cpu.csv: 0.007 / 0.02 / 0.06
            "facd": {"facd": 0.3},  # facd-rcan-x4-cpu.csv: 0.1 / 0.3 / 1.0
            "attention": {"att": 0.02},  # attention-rcan-x4-cpu.csv: 0.007 / 0.02 / 0.06 (channel maps)
            "krnet": {"kr": 0.1},  # krnet-rcan-x4-cpu.csv: 0.03 / 0.1 / 0.3
        },
        # The transformer family (SwinIR) keeps each method's own default, so it needs no entry: fitnet 0.1, lsfd
        # 0.02, facd 0.3, attention 0.4 (window maps), krnet 0.1 in {fitnet,lsfd,facd,attention,krnet}-swinir-x4-
        # cpu.csv, where the smallest weight scored highest by 0.014-0.021 dB each time. An entry restating them
        # would change the run ids of the SwinIR grid cells already trained.
    },
    # DCKD's released schedule (250k iterations) scaled by 1/250 to these 1,000 steps: its history network is
    # refreshed every 1,000 / 2,000 / 3,000 iterations in blocks of 100k, here every 4 / 8 / 12 steps in blocks of
    # 400, and the EMA student it mixes with keeps its time constant of 1/(1 - 0.999) = 1,000 iterations scaled
    # the same way, 4 steps (decay 0.75). With the released values the history would be refreshed once, after the
    # last step, and every negative would come from the initial student.
    method_options={"dckd": {"history_every": [4, 8, 12], "history_block": 400, "ema_decay": 0.75}},
)

# The published KD tables' pairs in miniature (kd/report/miniature.py): the `miniature_teacher` / `miniature_student`
# presets keep each published pair's depth/width relation and parameter ratio. Published teachers and students are
# both trained to convergence; here both get the same recipe on small patches (LR 16 x 16, batch 16), so that neither
# is further from convergence than the other and the teacher's lead is its capacity: the RCAN teacher leads its
# scratch student by +0.26/+0.19/+0.12 dB on Set5/Set14/B100, the published teacher by +0.25/+0.18/+0.14
# (reports/miniature/calibration.md). One RCAN teacher trains in about 30 min of one core and one student in 15-20
# (no-KD, logits, FAKD), so the 5-seed grid of a pair takes hours, not days, of 2 cores.
MINIATURE = Profile(
    "miniature",
    "published KD pairs in miniature (miniature_teacher -> miniature_student presets), 291 set, Set5/Set14/B100; "
    "the grid of `kdbench paper dckd`",
    deep_merge(CPU.values, {
        "student": {"arch": "rcan", "preset": "miniature_student"},
        "teacher": {
            "preset": "miniature_teacher",
            "train": {"steps": 2000, "batch_size": 16, "lr_patch": 16, "optimizer": "adam", "lr": 5e-4,
                      "schedule": "cosine", "min_lr": 1e-6, "log_every": 20, "ckpt_every": 100, "val_every": 500},
        },
        "train": {"steps": 2000, "batch_size": 16, "lr_patch": 16, "optimizer": "adam", "lr": 5e-4,
                  "weight_decay": 0.0, "schedule": "cosine", "min_lr": 1e-6, "log_every": 20, "ckpt_every": 100,
                  "val_every": 500},
        "accel": {"teacher_dtype": "fp32"},  # cells made on different CPUs pair
    }),
    # DCKD's released schedule (250k iterations) scaled by 1/125 to these 2,000 steps, as the cpu profile scales it.
    method_options={"dckd": {"history_every": [8, 16, 24], "history_block": 800, "ema_decay": 0.88}},
)

PAPER = Profile(
    "paper",
    "official configurations and recipes (DIV2K, official teacher schedules), the student with ASID's recipe; GPU",
    {
        "student": {"arch": "asid", "preset": "paper"},
        "teacher": {
            "arch": "rcan",
            "preset": "paper",
            # RCAN recipe: Adam 1e-4, batch 16, LR patch 48, halved every 2e5 iterations.
            "train": {"steps": 1_000_000, "batch_size": 16, "lr_patch": 48, "optimizer": "adam", "lr": 1e-4,
                      "schedule": "multistep", "milestones": [200_000, 400_000, 600_000, 800_000], "gamma": 0.5,
                      "log_every": 100, "ckpt_every": 5000, "val_every": 5000},
        },
        "data": {"train": "DIV2K"},
        # ASID recipe: AdamW 5e-4, wd 1e-4, batch 16, LR patch 64, x0.5 at epoch 250 of 500 (3,200 it/epoch).
        "train": {"steps": 1_600_000, "batch_size": 16, "lr_patch": 64, "optimizer": "adamw", "lr": 5e-4,
                  "weight_decay": 1e-4, "schedule": "multistep", "milestones": [800_000], "gamma": 0.5,
                  "log_every": 100, "ckpt_every": 5000, "val_every": 5000},
        "eval": {"datasets": ["Set5", "Set14", "B100"], "lpips": True, "val_dataset": "DIV2K-val10"},
    },
    teacher_recipes={
        # HAN's official recipe is RCAN's (same framework; its repository's default loss is MSE, kdbench trains with
        # L1). SwinIR classical (KAIR options): Adam 2e-4, batch 32, LR patch 48 on DIV2K, 500k iterations halved at
        # 250k/400k/450k/475k. The official x3/x4 models are fine-tuned from x2 with both halved; this recipe trains
        # each scale from scratch.
        # The lightweight model: batch 64, LR patch 64, same schedule.
        "swinir": {"steps": 500_000, "batch_size": 32, "lr_patch": 48, "optimizer": "adam", "lr": 2e-4,
                   "schedule": "multistep", "milestones": [250_000, 400_000, 450_000, 475_000], "gamma": 0.5},
        "swinir_light": {"steps": 500_000, "batch_size": 64, "lr_patch": 64, "optimizer": "adam", "lr": 2e-4,
                         "schedule": "multistep", "milestones": [250_000, 400_000, 450_000, 475_000], "gamma": 0.5},
        # SwinFIR (train_SwinFIR_SRx{2,3,4}_from_scratch.yml, 8 GPUs x 4 per the README): Adam 2e-4 (0.9, 0.99), EMA
        # 0.999, LR patch 60 on DF2K, 500k iterations halved at 250k/400k/450k/475k. Not reproduced: its Charbonnier
        # loss, mixup and channel-shuffle augmentation, and the ImageNet pre-training of the released checkpoints.
        # SwinFIR-T (preset t) has only the ImageNet recipe; as a teacher it shares this one.
        "swinfir": {"steps": 500_000, "batch_size": 32, "lr_patch": 60, "optimizer": "adam", "lr": 2e-4,
                    "betas": [0.9, 0.99], "ema_decay": 0.999, "schedule": "multistep",
                    "milestones": [250_000, 400_000, 450_000, 475_000], "gamma": 0.5},
    },
)


def _paper_recipe(name: str, description: str, pair: dict[str, Any], train: dict[str, Any]) -> Profile:
    """A published table's own training recipe on the `paper` profile's data, teachers and evaluation (Urban100
    added: the tables report it). Validation stays DIV2K 0801-0810, never a test set."""
    values = deep_merge(PAPER.values, {
        **pair,
        "train": {"weight_decay": 0.0, "log_every": 100, "ckpt_every": 5000, "val_every": 5000, **train},
        "eval": {"datasets": ["Set5", "Set14", "B100", "Urban100"]},
    })
    return Profile(name, description, values, teacher_recipes=PAPER.teacher_recipes)


# DCKD's recipe: super-SSS/DCKD at 66fe4002662a815f2db6e8244d9f9b0ed481e03b,
# options/train/SwinIR/train_SwinIR_SRx{2,3,4}_DCKD.yml and README.md. Adam 1e-4, betas (0.9, 0.99), no weight decay;
# MultiStepLR milestones [250000], gamma 0.1, total_iter 250000 (so the rate never decays; the paper's text says
# x0.1 every 1e5 iterations, the released files do not); EMA 0.999 (validated and saved: params_ema); 16 per GPU on
# 4 GPUs (`num_gpu: 4`, name `B16G4`, README `--nproc_per_node=4`): a global batch of 64; gt_size 96 / 144 / 192
# at x2 / x3 / x4, an LR patch of 48 at every scale; use_hflip and use_rot (kdbench's data.augment: the 8 dihedral
# transforms); DIV2K 800 training images (the release crops them into 480-pixel sub-images first; kdbench crops
# its patches from the whole images). kdbench's EMA warms its decay up over the first ~9k steps; after 250k steps
# that leaves no trace in the evaluated weights. DCKD's own EMA student keeps the official formula (kd.methods.dckd).
PAPER_DCKD = _paper_recipe(
    "paper-dckd",
    "DCKD Table 2's recipe (Adam 1e-4, betas 0.9/0.99, 250k iterations, EMA 0.999, batch 64, LR patch 48; DIV2K); "
    "GPU",
    {"student": {"arch": "swinir", "preset": "e60"}, "teacher": {"arch": "swinir", "preset": "paper"}},
    {"steps": 250_000, "batch_size": 64, "lr_patch": 48, "optimizer": "adam", "lr": 1e-4, "betas": [0.9, 0.99],
     "schedule": "multistep", "milestones": [250_000], "gamma": 0.1, "ema_decay": 0.999},
)

# DUKD's recipe: yun224/DUKD at 6960273e08cf7958b844b750910446bbbddb3746, options/{RCAN,Swinir,EDSR}/dukd_*.yml (the
# same `train:` recipe in all nine). Adam 1e-4, betas (0.9, 0.99), no weight decay; MultiStepLR [100000, 200000],
# gamma 0.1 (BasicSR steps it before each iteration from the second, so the rate drops for 0-based step 100000, as
# here); total_iter 250000; EMA 0.999; batch_size_per_gpu 16 (`num_gpu: auto`, and the README trains with one
# process, so 16 on one GPU; the EDSR x4 file says `num_gpu: 1`); gt_size 96 / 144 / 192: LR patch 48; use_hflip,
# use_rot; DIV2K 800 images. The loss weights and options of each pair are DUKD's `releases` (kd.methods.dukd).
PAPER_DUKD = _paper_recipe(
    "paper-dukd",
    "DUKD's recipe (Adam 1e-4, betas 0.9/0.99, x0.1 at 100k and 200k, 250k iterations, EMA 0.999, batch 16, LR patch "
    "48; DIV2K); GPU",
    {"student": {"arch": "rcan", "preset": "10x6"}, "teacher": {"arch": "rcan", "preset": "paper"}},
    {"steps": 250_000, "batch_size": 16, "lr_patch": 48, "optimizer": "adam", "lr": 1e-4, "betas": [0.9, 0.99],
     "schedule": "multistep", "milestones": [100_000, 200_000], "gamma": 0.1, "ema_decay": 0.999},
)

# FAKD's recipe: Vincent-Hoo/Knowledge-Distillation-for-Super-resolution at 589d35f750e63209e1213e89c414ac706fe6b9b1,
# code/scripts/train_rcan_SA_x{2,3,4}.sh and code/option.py, code/utility.py, code/data/srdata.py. Adam 1e-4, betas
# (0.9, 0.999), eps 1e-8, no weight decay; batch 16; patch_size 96 / 144 / 192 (HR) at x2 / x3 / x4: LR patch 48;
# 200 epochs of batch_size * test_every = 16,000 patches from DIV2K 0001-0800, i.e. 1,000 iterations each: 200k
# iterations; MultiStepLR over epochs, milestones 150-300-450-600, gamma 0.5, stepped at the start of every epoch,
# so the rate halves from epoch 150, i.e. from 0-based step 149,000 (the later milestones fall after the run); no
# EMA; random hflip, vflip and rot90 (kdbench's data.augment). Validation on DIV2K 0801-0810 as here.
PAPER_FAKD = _paper_recipe(
    "paper-fakd",
    "FAKD Table 3's recipe (Adam 1e-4, 200k iterations halved at 149k, no EMA, batch 16, LR patch 48; DIV2K); GPU",
    {"student": {"arch": "rcan", "preset": "10x6"}, "teacher": {"arch": "rcan", "preset": "paper"}},
    {"steps": 200_000, "batch_size": 16, "lr_patch": 48, "optimizer": "adam", "lr": 1e-4, "betas": [0.9, 0.999],
     "schedule": "multistep", "milestones": [149_000], "gamma": 0.5, "ema_decay": 0.0},
)


DEMO = Profile(
    "demo",
    "the real ASID student and a mini teacher, briefly trained on the embedded photos: a few minutes on a laptop "
    "CPU; shows the whole pipeline, too short for conclusions about methods",
    {
        "student": {"arch": "asid", "preset": "paper"},
        "teacher": {
            "arch": "rcan",
            "preset": "mini",
            "train": {"steps": 150, "batch_size": 4, "lr_patch": 32, "optimizer": "adam", "lr": 5e-4,
                      "schedule": "cosine", "min_lr": 1e-5, "log_every": 10, "ckpt_every": 50, "val_every": 0},
        },
        "data": {"train": "default"},
        "train": {"steps": 150, "batch_size": 4, "lr_patch": 32, "optimizer": "adamw", "lr": 5e-4,
                  "weight_decay": 1e-4, "schedule": "cosine", "min_lr": 1e-5,
                  "log_every": 10, "ckpt_every": 50, "val_every": 0},
        "eval": {"datasets": ["default"], "lpips": True, "val_dataset": "default"},
    },
    # DCKD's released schedule scaled to 150 steps would refresh its history less than a step apart: refreshed
    # after every step instead, from an EMA student with a time constant of 2 steps.
    method_options={"dckd": {"history_every": [1], "ema_decay": 0.5}},
    evidence=COMMITTED_EVIDENCE,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (SMOKE, DEMO, CPU, MINIATURE, PAPER, PAPER_DCKD, PAPER_DUKD,
                                                      PAPER_FAKD)}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise unknown_choice("profile", name, PROFILES)
    return PROFILES[name]


def profile_layer(name: str) -> tuple[str, dict[str, Any]]:
    """The (source, values) layer for `resolve_layers`, with the profile name recorded in the config."""
    profile = get_profile(name)
    return _source(profile), {**profile.values, "profile": name}


def _source(profile: Profile) -> str:
    return f"profile '{profile.name}'"


def resolve_layers(layers: list[tuple[str, dict[str, Any]]], *, teacher_given: bool = False) -> RunConfig:
    """`kd.config.resolve`, plus the layers that depend on the resolved teacher and method: the method's released
    settings for that teacher (`Distiller.release_for`), then the profile's training recipe for the teacher, the
    weights `kdbench tune` chose for the method and the teacher's family, and the method's schedule options.

    The teacher and method are known only once every layer is merged (the command line or a sweep cell names them),
    so this resolves twice: the second time with those layers inserted right after the profile's own layer (at the
    front without one), where a config file, the command line and --set still win over them. `teacher_given`: the
    teacher is an object (`kd.distill`), not a registry network, so it has no release, recipe or family of its own.
    """
    config = resolve(layers)
    profile = PROFILES.get(config.profile)
    at = next((i for i, (source, _) in enumerate(layers) if profile and source == _source(profile)), -1)
    if not config.teacher.arch:
        return config
    extra = _derived_layers(profile if at >= 0 else None, config, teacher_given)
    if not extra:
        return config
    return resolve([*layers[: at + 1], *extra, *layers[at + 1 :]])


def _derived_layers(profile: Profile | None, config: RunConfig,
                    teacher_given: bool) -> list[tuple[str, dict[str, Any]]]:
    from kd.methods import get_method
    from kd.models import get_entry

    layers: list[tuple[str, dict[str, Any]]] = []
    entry = None if teacher_given else get_entry(config.teacher.arch)
    if entry is not None:
        release = get_method(config.method.name).release_for(entry.arch, entry.family, config.scale)
        if release is not None:
            layers.append((f"{config.method.name} released settings for {entry.arch} x{config.scale} "
                           f"({release.source})",
                           {"method": {"weights": release.weights, "options": release.options}}))
    if profile is None:
        return layers
    recipe = profile.teacher_recipes.get(entry.arch) if entry else None
    if recipe is not None:
        layers.append((f"{_source(profile)} recipe for {entry.arch} teachers", {"teacher": {"train": recipe}}))
    weights = profile.method_weights.get(entry.family, {}).get(config.method.name) if entry else None
    if weights is not None:
        layers.append((f"{_source(profile)} {config.method.name} weights for {entry.family} teachers",
                       {"method": {"weights": weights}}))
    options = profile.method_options.get(config.method.name)
    if options is not None:
        layers.append((f"{_source(profile)} {config.method.name} options", {"method": {"options": options}}))
    return layers
