"""ncore: make a running Python process write a pypanic dump, from outside, without its help."""
