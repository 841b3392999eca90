"""FAKD's copy of SAN: the SAN teacher and student of FAKD (He et al., "FAKD: Feature-Affinity Based Knowledge
Distillation for Efficient Image Super-Resolution", ICIP 2020; official code
`Vincent-Hoo/Knowledge-Distillation-for-Super-resolution` @ 589d35f750e63209e1213e89c414ac706fe6b9b1,
`code/models/san.py`; no license file, so nothing is copied: SEED_NETWORKS.md section 1 lists the differences).

It is the official SAN (`teachers/san.py`, whose pieces it reuses, quirks included) with three differences that
make its checkpoints a separate family:

* the non-local block has n_feats // 4 inter channels (official SAN: n_feats // 8), so the `non_local.non_local.*`
  shapes differ and the two families' checkpoints do not load into each other (the mismatch message says which
  family a checkpoint is);
* `sub_mean` / `add_mean` are frozen (requires_grad False), where the official SAN leaves them trainable;
* its `forward` returns `(feature_maps, sr)`. kdbench's `forward` returns the SR image only ([0, 1] interface,
  unclamped) and exposes the four maps as taps, on the network's internal scale ([0, 255] with the mean removed,
  not divided by 255): `head.0`, `share_source.{p}` for the official positions p = 6, 13 (20 groups) or 1, 3
  (6 groups), and `body_end` (`fakd_feature_taps()` names them; the official forward crashes for any other group
  count, kdbench only has no official positions then). FAKD in kdbench pairs taps by depth like every method;
  `method.options.teacher_taps` set to these names reproduces the official choice.
"""

from __future__ import annotations

from kd.errors import KdError
from kd.models.registry import ModelEntry, register_model
from teachers.san import PRESETS, SAN, describe_state_dict  # noqa: F401 - the loader's describe hook

FEATURE_POSITIONS = {20: (6, 13), 6: (1, 3)}  # official `pos`: share-source outputs kept as feature maps


class SANFAKD(SAN):
    """FAKD's SAN copy with the official module names; [0, 1] RGB in and out (unclamped)."""

    NON_LOCAL_DIVISOR = 4
    FROZEN_MEAN_SHIFT = True

    def fakd_feature_taps(self) -> list[str]:
        """The taps holding FAKD's four feature maps, in the official order."""
        if self.n_resgroups not in FEATURE_POSITIONS:
            raise KdError(f"FAKD's SAN defines feature positions for 20 or 6 groups only (field 'n_resgroups'); "
                          f"this network has {self.n_resgroups}")
        first, second = FEATURE_POSITIONS[self.n_resgroups]
        return ["head.0", f"share_source.{first}", f"share_source.{second}", "body_end"]


def build_san_fakd(scale: int, n_resgroups: int = 20, n_resblocks: int = 10, n_feats: int = 64, reduction: int = 16,
                   rgb_range: float = 255.0, n_colors: int = 3, res_scale: float = 1.0) -> SANFAKD:
    return SANFAKD(scale=scale, n_resgroups=n_resgroups, n_resblocks=n_resblocks, n_feats=n_feats,
                   reduction=reduction, rgb_range=rgb_range, n_colors=n_colors, res_scale=res_scale)


register_model(ModelEntry(
    arch="san_fakd",
    builder=build_san_fakd,
    role="teacher",
    family="cnn",
    presets=PRESETS,
    scales=(2, 3, 4, 8),
    description="FAKD's copy of SAN (ICIP 2020): non-local n_feats//4, frozen MeanShift; its 4 feature maps as "
                "taps; official keys",
))
