# Audio -> lips-pose flow-matching transformer on SynthTalk, CPU. Needs the masked editor (its lips encoder).
# python train.py config/pose_synth.py
model = "pose"
data_dir = "data/synth"
out_dir = "out/pose"
init_from = "out/editor/ckpt.pt"
seq_len = 50
batch_size = 16
max_steps = 3200                  # 800 -> 3200 (2 seeds): SynthTalk r_driving 0.894 -> 0.916 / 0.919 (val loss 0.55 -> 0.40)
speech_rate = 1.3                 # talkers 1/1.3 .. 1.3x as fast: held-out closure 0.875 -> 0.912 (seed 1, 1600 steps),
                                  # espeak's 25-40 ms b closures are shorter than any SynthTalk makes
lr = 2e-3                         # 1e-3: r_source 0.106, closure dev 0.926 / held-out 0.878; 2e-3: 0.095, 0.932 / 0.892
warmup = 50
eval_every = 400
ema = 0.995
dtype = "float32"                 # its small matmuls are no faster in bf16 on a CPU (measured 92 vs 112 ms/step)
