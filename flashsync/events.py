"""Audio events per video frame: silence, speech, laugh, sigh (KeyFace's non-speech vocalisations).

KeyFace conditions on what the audio *is* as well as what it says: a laugh should bob the
head and pull the mouth into a smile, a sigh should lower the lids. The paper takes these
features from BEATs, a pretrained audio classifier; nothing pretrained is allowed here, so
this small encoder is trained on SynthTalk's per-frame labels (speech.SILENCE .. SIGH), on
the same random recordings (augment.py: levels, noise floors, rooms, bands) as the pose
model, so a noise floor does not read as a sigh.

    log-mel (B, 4L, 80) -> pose.AudioEncoder (2 stride-2 convs, 2 transformer blocks, full
    context) -> (B, L, dim) -> linear -> (B, L, 4) logits

KeyFace's NSV features are the class probabilities (B, L, 4): four numbers a reader can
check, and all that SynthTalk's labels can teach.
"""
import dataclasses

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from flashsync.audio import log_mel
from flashsync.augment import augment, mask_bands
from flashsync.pose import AudioEncoder
from flashsync.speech import LAUGH, SIGH, SILENCE, SPEECH

CLASSES = ("silence", "speech", "laugh", "sigh")          # in the order of speech.SILENCE .. SIGH
assert (SILENCE, SPEECH, LAUGH, SIGH) == (0, 1, 2, 3)


@dataclasses.dataclass
class EventConfig:
    dim: int = 64
    heads: int = 4
    audio_layers: int = 2
    n_mels: int = 80
    classes: int = len(CLASSES)
    augment: bool = True           # train on random recordings of the audio
    rare_weight: float = 3.0       # loss weight of laugh and sigh frames (7 % of SynthTalk's frames each)


class EventEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.audio = AudioEncoder(cfg)
        self.head = nn.Linear(cfg.dim, cfg.classes)
        self.register_buffer("weight", torch.tensor([1.0, 1.0, cfg.rare_weight, cfg.rare_weight]), persistent=False)

    def logits(self, mel):
        """Log-mel (B, 4L, 80) -> (B, L, 4) class logits per video frame."""
        return self.head(self.audio(mel))

    @torch.no_grad()
    def features(self, audio):
        """16 kHz audio (B, L * 640) -> (B, L, 4) class probabilities: KeyFace's NSV features."""
        return self.logits(log_mel(audio))[:, :audio.shape[-1] // 640].float().softmax(-1)

    def loss(self, batch):
        audio, label = batch["audio"], batch["label"]        # (B, L * 640), (B, L) with -1 where unknown
        if self.training and self.cfg.augment:
            audio = augment(audio)                           # what a real microphone would have heard
        mel = log_mel(audio)
        if self.training and self.cfg.augment:
            mel = mask_bands(mel)
        logits = self.logits(mel)[:, :label.shape[1]].float()
        loss = F.cross_entropy(logits.flatten(0, 1), label.flatten(), self.weight, ignore_index=-1)
        known = label >= 0
        acc = (logits.argmax(-1) == label)[known].float().mean() if known.any() else logits.new_zeros(())
        return loss, dict(acc=acc.detach())

    forward = loss


@torch.no_grad()
def accuracy(model, clips):
    """Frame accuracy per class (the fraction of each class's frames named right) and the confusion
    counts over clips of dict(audio (L * 640,), gt["label"] (L,)) -> {class: accuracy}, (4, 4) array."""
    confusion = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    for clip in clips:
        truth = np.asarray(clip["gt"]["label"])
        pred = model.features(torch.as_tensor(clip["audio"])[None])[0].argmax(-1).numpy()
        np.add.at(confusion, (truth[:len(pred)], pred), 1)
    per = {c: float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else float("nan")
           for i, c in enumerate(CLASSES)}
    return per, confusion
