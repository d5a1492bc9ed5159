/* model.c - placeholder translation unit until the model engine lands. */
int hd_model_placeholder_;
