// The kernel tests (each a `pub fn NAME(g: &Gpu)` in its module), listed once for the two binaries
// that run them: tests/gpu.rs on the GPU (ignored elsewhere) and tests/emu.rs on the CPU emulator.
// Each binary defines `kernel_tests!` to turn the list into #[test] functions for its device.
kernel_tests! {
    layout_probe::layout_probe_wgmma_reads_where_v3_and_v4_put_their_operands,
    layout_probe::layout_probe_tma_box_lands_where_v4_reads_it,
    layers::embedding_rows_match_the_table_and_bad_ids_give_nan,
    layers::rmsnorm_matches_reference_and_works_in_place,
    layers::rope_rotates_q_and_k_like_the_reference,
    layers::elementwise_kernels_match_reference,
    layers::kv_append_writes_only_the_given_rows,
    layers::random_fill_is_the_hosts_uniform_values,
    gemv::gemv_variants_match_reference,
    gemv::tiled_gemm_matches_reference,
    gemv::shape_errors_are_reported_before_launch,
    decode_fused::fused_qkv_matches_norm_gemv_rope_and_append,
    decode_fused::fused_gate_up_matches_norm_gemv_and_swiglu,
    decode_fused::gemv_rmsnorm_matches_norm_then_gemv,
    decode_fused::fused_decode_refuses_bad_operands_by_name,
    attention::decode_attention_matches_reference,
    attention::prefill_kernels_match_reference_on_square_sequences,
    attention::prefill_kernels_handle_varlen_batches_and_chunked_prefill,
    attention::tma_prefill_matches_reference_on_square_sequences,
    attention::tma_prefill_handles_varlen_batches_and_chunked_prefill,
    attention::prefill_refuses_bad_buffers_by_name,
    attention::unsupported_head_layouts_are_refused,
}
