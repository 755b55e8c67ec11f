"""The occlusion segmenter: relighting keeps every pixel's label, and the segmenter learns to find
SynthTalk's hands and microphones on identities it never saw."""
import numpy as np
import torch

from flashsync import synth
from flashsync.occluder import Segmenter, SegmenterConfig, iou, relight


def test_relight_moves_labels_only_with_their_pixels():
    torch.manual_seed(0)
    truth = torch.zeros(64, 32, 32)
    truth[:, 20:, :12] = 1                                         # a hand from the lower left
    x = truth[:, None].expand(-1, 3, -1, -1) * 2 - 1               # white where the label is, black elsewhere
    y, t = relight(x, truth)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    img = (y + 1) / 2
    assert torch.equal(img.mean(1) > 0.1, t > 0.5)                 # the label went wherever its pixels went
    flipped = t[:, 25, 25] > 0.5
    assert 10 < int(flipped.sum()) < 54                            # about half mirrored
    same = (y == x).all(1).all(1).all(1)
    assert 10 < int(same.sum()) < 54 and not same.all()            # about half as they were, the rest relit
    assert torch.equal(t[~flipped], truth[~flipped])


def test_segmenter_learns_occluders_on_new_identities():
    torch.manual_seed(0)
    clips = [synth.make_clip(i, 1, seconds=3.0, res=32, occluder=True) for i in range(5)]
    train, test = clips[:4], clips[4]
    frames = torch.cat([torch.as_tensor(c["video"]) for c in train])                 # (N, 32, 32, 3)
    masks = torch.cat([torch.as_tensor(c["occluder"]) for c in train])               # (N, 32, 32)
    shown = torch.nonzero(masks.flatten(1).any(1))[:, 0]
    assert len(shown) > 20
    net = Segmenter(SegmenterConfig(resolution=32, channels=(8, 16, 32), stem=2))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):                          # half the targets show an occluder, as train.py draws them
        i = torch.cat([shown[torch.randint(len(shown), (8,), generator=g)], torch.randint(len(frames), (8,), generator=g)])
        loss, _ = net.loss(dict(target=frames[i], occluder=masks[i][:, None]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    truth = np.asarray(test["occluder"])
    assert truth.any()
    pred = net.masks(test["video"])
    assert iou(pred, truth) > 0.6                  # 0.78 measured; predicting "none" everywhere scores 0
    assert pred[~truth.any((1, 2))].float().mean() < 0.01           # frames with no occluder stay clear
