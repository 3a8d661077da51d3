"""How the demo pair is made (`scripts/train_demo.py`): corpus, tokenizer, the target's
pre-training (lm, pretrain), its export, the metrics it is judged by and its README."""
