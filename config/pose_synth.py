# Audio -> lips-pose flow-matching transformer on SynthTalk, CPU. Needs the masked editor (its lips encoder).
# python train.py config/pose_synth.py
model = "pose"
data_dir = "data/synth"
out_dir = "out/pose"
init_from = "out/editor/ckpt.pt"
seq_len = 50
batch_size = 16
max_steps = 800
lr = 2e-3                         # 1e-3: r_source 0.106, closure dev 0.926 / held-out 0.878; 2e-3: 0.095, 0.932 / 0.892
warmup = 50
eval_every = 400
ema = 0.995
dtype = "float32"                 # its small matmuls are no faster in bf16 on a CPU (measured 92 vs 112 ms/step)
