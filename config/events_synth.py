# The audio-event encoder (silence / speech / laugh / sigh per frame) for KeyFace, SynthTalk, CPU.
# python train.py config/events_synth.py
model = "events"
data_dir = "data/synth"
out_dir = "out/events"
seq_len = 50                      # 2 s windows: a laugh or a sigh lasts about 1 s
batch_size = 32
max_steps = 600
lr = 2e-3
warmup = 30
eval_every = 300
ema = 0.99
