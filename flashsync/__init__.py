"""flashsync: minimal PyTorch reference for FlashLips, KeySync and KeyFace.

Fixed conventions (DESIGN.md §2), importable from here so every module agrees.
"""
FPS = 25                    # video frames per second, always
SR = 16000                  # audio sample rate, always
SAMPLES_PER_FRAME = SR // FPS  # 640 audio samples per video frame
__version__ = "0.1.0"
