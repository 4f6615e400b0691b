"""Face recognizers (installed as ``mfrbench.recognizers``): backbones, heads, training."""
