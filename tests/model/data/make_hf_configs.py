# Regenerates the transformers-saved config fixtures (hf_*_config.json) with the pinned
# reference environment: /work/venvs/ref/bin/python make_hf_configs.py  (transformers 5.23.0).
# Not run by the build or the tests; the outputs are committed.
from transformers import DeepseekV4Config

tiny_a = DeepseekV4Config(
    vocab_size=1024, hidden_size=256, num_hidden_layers=6,
    layer_types=["sliding_attention", "heavily_compressed_attention",
                 "compressed_sparse_attention", "heavily_compressed_attention",
                 "compressed_sparse_attention", "sliding_attention"],
    compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 16},
    mlp_layer_types=["hash_moe"] * 3 + ["moe"] * 3, num_attention_heads=4, num_key_value_heads=1,
    head_dim=128, partial_rotary_factor=0.5, q_lora_rank=128, o_groups=2, o_lora_rank=64,
    sliding_window=8, index_n_heads=4, index_head_dim=128, index_topk=4, n_routed_experts=8,
    num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=128,
    routed_scaling_factor=1.5, swiglu_limit=10.0, max_position_embeddings=4096,
    rope_parameters={"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 65536,
                     "beta_fast": 32.0, "beta_slow": 1.0})
tiny_a.save_pretrained("tiny_a_out")  # -> hf_tiny_a_config.json

# Flash built from the legacy Hub-style kwargs (compress_ratios, num_hash_layers, qk_rope_head_dim)
flash = DeepseekV4Config(
    num_hidden_layers=43, compress_ratios=[0, 0] + [4, 128] * 20 + [4], num_hash_layers=3,
    qk_rope_head_dim=64,
    rope_parameters={"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,
                     "beta_fast": 32, "beta_slow": 1})
flash.save_pretrained("flash_out")  # -> hf_flash_legacy_config.json
