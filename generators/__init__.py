"""Mask generators (installed as ``mfrbench.generators``): mtf, cyclegan, iamgan, mfgan."""
