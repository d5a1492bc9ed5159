/* kernels.c - placeholder translation unit until the op registry lands. */
int hd_kernels_placeholder_;
