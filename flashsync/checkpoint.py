"""Checkpoints: load safely (weights_only=True) and rebuild any trained flashsync model.

A checkpoint is a dict: format "flashsync", version, kind (ae | editor | refine | pose | syncnet | keysync | keyface | occluder | events),
config (the train.py settings it was trained with), init (the slimmed checkpoint
it was built on, e.g. the frozen autoencoder inside an editor), model, ema,
optimizer, step, data (the sampler's random state). Written atomically by train.py.
"""
import os

import torch

from flashsync.util import UserError


def load_checkpoint(path, kind=None):
    """torch.load with weights_only=True and clear errors for the wrong file or model."""
    if not os.path.exists(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is not a flashsync checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "flashsync":
        raise UserError(f"{path} is not a flashsync checkpoint")
    if ckpt.get("version", 0) > 1:
        raise UserError(f"{path} was written by a newer flashsync (checkpoint version {ckpt['version']}); update")
    if kind is not None and ckpt["kind"] != kind:
        raise UserError(f"{path} holds a {ckpt['kind']!r} model, but a {kind!r} model is needed here")
    return ckpt


def build(kind, cfg, init):
    """The model for `kind` from the config dict, built on the `init` checkpoint where it needs one."""
    from flashsync.autoencoder import AEConfig, Autoencoder
    from flashsync.editor import Editor, EditorConfig, Refiner
    if kind == "ae":
        return Autoencoder(AEConfig(resolution=cfg["resolution"], factor=cfg["factor"], channels=tuple(cfg["ae_channels"]),
                                    stem=cfg.get("ae_stem", 1), latent=cfg.get("ae_latent", 4),
                                    mouth_weight=cfg.get("mouth_weight", 0.0), crop=cfg.get("ae_crop", 0)))
    if kind == "editor":
        if init is None:
            raise UserError("the editor needs a trained autoencoder: --init_from=out/ae/ckpt.pt")
        ae = build("ae", init["config"], None)
        ae.load_state_dict(init["ema"])
        return Editor(EditorConfig(resolution=cfg["resolution"], refs=cfg["refs"], lips_dim=cfg["lips_dim"],
                                   lips_noise=cfg["lips_noise"], channels=tuple(cfg["editor_channels"]),
                                   latent=ae.cfg.latent), ae)
    if kind == "refine":
        if init is None or init["kind"] != "editor":
            raise UserError("refinement needs a trained masked editor: --init_from=out/editor/ckpt.pt")
        editor = build("editor", init["config"], init.get("init"))
        editor.load_state_dict(init["ema"])
        return Refiner(editor)
    if kind == "pose":
        from flashsync.pose import PoseConfig, PoseModel
        from flashsync.speech import NAMES
        if init is None or init["kind"] != "editor":
            raise UserError("the pose model needs the trained masked editor (its lips encoder): "
                            "--init_from=out/editor/ckpt.pt")
        editor = build("editor", init["config"], init.get("init"))
        editor.load_state_dict(init["ema"])
        return PoseModel(PoseConfig(dim=cfg["pose_dim"], flow_layers=cfg["pose_layers"], refs=cfg["refs"],
                                    lips_dim=cfg["lips_dim"], augment=cfg.get("audio_augment", False),
                                    phonemes=len(NAMES) if cfg.get("phoneme_weight", 0) > 0 else 0,
                                    phoneme_weight=cfg.get("phoneme_weight", 0.0),
                                    audio_drop=cfg.get("audio_drop", 0.0), rate=cfg.get("speech_rate", 1.0)),
                         editor.lips)
    if kind == "occluder":
        from flashsync.occluder import Segmenter, SegmenterConfig
        return Segmenter(SegmenterConfig(resolution=cfg["resolution"], stem=cfg.get("seg_stem", 1),
                                         relight=cfg.get("seg_relight", False)))
    if kind == "keysync":
        from flashsync.keysync import KeySync, KeySyncConfig
        if init is None or init["kind"] != "pose":
            raise UserError("KeySync needs the trained FlashLips pose model (its audio encoder, and the "
                            "autoencoder under it): --init_from=out/pose/ckpt.pt")
        pose, ae = _pose_parts(init)
        return KeySync(KeySyncConfig(**_video_config(cfg, pose, ae)), ae, _audio(cfg, pose))
    if kind == "keyface":
        from flashsync.keyface import KeyFace, KeyFaceConfig
        if init is None or init.get("pose", {}).get("kind") != "pose" or init.get("events", {}).get("kind") != "events":
            raise UserError("KeyFace needs the trained FlashLips pose model and the audio-event encoder: "
                            "--init_from=out/pose/ckpt.pt --events_from=out/events/ckpt.pt")
        pose, ae = _pose_parts(init["pose"])
        events = build("events", init["events"]["config"], None)
        events.load_state_dict(init["events"]["ema"])
        kf = KeyFaceConfig(**_video_config(cfg, pose, ae), emo_weight=cfg.get("emo_weight", 0.0),
                           eyes_weight=cfg.get("eyes_weight", 0.0))
        return KeyFace(kf, ae, _audio(cfg, pose), events)
    if kind == "events":
        from flashsync.events import EventConfig, EventEncoder
        return EventEncoder(EventConfig(augment=cfg.get("audio_augment", True)))
    if kind == "syncnet":
        from flashsync.syncnet import SyncConfig, SyncNet
        return SyncNet(SyncConfig())
    raise UserError(f"unknown model {kind!r}: use ae, editor, refine, pose, syncnet, keysync, keyface, occluder or events")


def _pose_parts(init):
    """The FlashLips pose model of a slimmed pose checkpoint, and the autoencoder under it (pose ->
    masked editor -> autoencoder): KeySync's and KeyFace's audio encoder and latent space."""
    pose = build("pose", init["config"], init["init"])
    pose.load_state_dict(init["ema"])
    ae_ckpt = init["init"]["init"]
    ae = build("ae", ae_ckpt["config"], None)
    ae.load_state_dict(ae_ckpt["ema"])
    return pose, ae


def _audio(cfg, pose):
    """The frozen audio features of a diffusion model: the pose model's audio encoder, with the lips
    poses its flow samples beside them when the config says `ks_poses` (backbone.PoseFeatures)."""
    from flashsync.backbone import PoseFeatures
    if not cfg.get("ks_poses", False):
        return pose.flow.audio
    return PoseFeatures(pose.flow, lips=pose.lips if cfg.get("p_true", 0) > 0 else None)


def _video_config(cfg, pose, ae):
    """The train.py settings KeySync's and KeyFace's configs share (latents: the autoencoder's)."""
    from flashsync.diffusion import EDMConfig
    return dict(resolution=cfg["resolution"], latent=ae.cfg.latent, interp=cfg["interp"], frames=cfg["keyframes"],
                stride=cfg["stride"], channels=tuple(cfg["ks_channels"]),
                audio_dim=pose.flow.cfg.dim + (pose.flow.cfg.lips_dim if cfg.get("ks_poses", False) else 0),
                mouth_weight=cfg.get("mouth_weight", 2.0), p_true=cfg.get("p_true", 0.0),
                true_noise=cfg.get("true_noise", 0.3),
                shared=cfg.get("shared_noise", 0.0), temporal=cfg.get("temporal_weight", 0.0),
                edm=EDMConfig(p_mean=cfg["p_mean"], p_std=cfg["p_std"]))


def load_model(path, kind=None):
    """Rebuild a trained model (EMA weights) from a checkpoint, for evaluation and inference."""
    ckpt = load_checkpoint(path, kind)
    net = build(ckpt["kind"], ckpt["config"], ckpt.get("init"))
    net.load_state_dict(ckpt["ema"])
    return net.eval()


def slim(ckpt):
    """What a later model needs of the checkpoint it builds on: no optimiser, no live weights."""
    return {k: ckpt[k] for k in ("format", "version", "kind", "config", "init", "ema")}
