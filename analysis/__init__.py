"""analysis: what each method learned, measured as its paper measures it (analyze.py draws them). Each file
takes matrices, W0 and ΔW of a layer; training/learned.py reads them out of a finished run.

spectrum.py     the singular values of ΔW: rank, effective rank, stable rank (LoRA §7, HiRA §3)
subspace.py     how much two updates' top directions overlap, φ(A1, A2, i, j) (LoRA §7.2, Figs. 3-4)
amplification.py  which directions of W the update amplifies, ||U^T W V^T||_F (LoRA §7.3, Table 7)
magnitude.py    how the update splits into magnitude and direction, ΔM and ΔD (DoRA §3, Fig. 2)
gates.py        Sparse LoRA's surviving ranks per layer and module (SoRA §3)
quant_error.py  4-bit quantisation error of NF4, FP4 and Int4 on the encoder's weights (QLoRA §3)
"""
