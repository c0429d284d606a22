/* test_llvm_jit.c - the LLVM backend through the JIT: hand-built kernel programs
 * (broadcast index math, reductions, argmax, masked loads, f16/bf16, GEMM, nested
 * reductions) run with pools of 1 and 2 threads and with no pool. */
#include "test_llvm_helpers.h"

#include <float.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* out[i,j,l] = a[i,j,l] + b[j,0] : a [2,3,5], b [3,1] broadcast to [2,3,5] */
Test(llvm_jit, add_with_broadcast_index_math) {
  kiln_kprogram *p = tp_new();
  int64_t ad[3] = {2, 3, 5}, bd[2] = {3, 1};
  int32_t A = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 3, ad, 0);
  int32_t B = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 2, bd, 1);
  int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 3, ad, 0);
  kiln_kernel *k = tp_loop(p, O, 0, NULL);
  int32_t v3[3] = {0, 1, 2};
  int64_t s3[3] = {15, 5, 1};
  int32_t la = kx_load(k, p, A, kx_offset(k, 3, v3, s3));
  int32_t v1[1] = {1};
  int64_t s1[1] = {1};
  int32_t lb = kx_load(k, p, B, kx_offset(k, 1, v1, s1));
  kx_alu(k, KILN_OP_add, KILN_F32, la, lb, -1);

  float a[30], b[3] = {100, 200, 300}, out[30];
  for (int i = 0; i < 30; i++) a[i] = (float)i * 0.5f;
  void *bufs[3] = {a, b, out};
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = tp_compile(p, &jit);
  for (int t = 0; t < TP_N_THREADS; t++) {
    memset(out, 0xff, sizeof out);
    tp_exec(entry, bufs, tp_threads[t]);
    for (int i = 0; i < 30; i++)
      cr_expect_float_eq(out[i], a[i] + b[(i / 5) % 3], 1e-6, "threads %d, i %d: %g", tp_threads[t], i, out[i]);
  }
  kiln_llvm_jit_destroy(jit);
  kiln_ir_kprogram_destroy(p);
}

/* Rows large enough to split over several chunks (grain is about 16K elements). */
Test(llvm_jit, many_rows_split_across_threads) {
  kiln_kprogram *p = tp_new();
  int64_t d[2] = {4096, 33};
  int32_t A = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 2, d, 0);
  int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 2, d, 0);
  kiln_kernel *k = tp_loop(p, O, 0, NULL);
  int32_t v[2] = {0, 1};
  int64_t s[2] = {33, 1};
  int32_t l = kx_load(k, p, A, kx_offset(k, 2, v, s));
  kx_alu(k, KILN_OP_mul, KILN_F32, l, kx_f(k, KILN_F32, 3.0), -1);
  size_t n = 4096 * 33;
  float *a = malloc(n * sizeof *a), *out = malloc(n * sizeof *out);
  for (size_t i = 0; i < n; i++) a[i] = (float)(i % 1000);
  void *bufs[2] = {a, out};
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = tp_compile(p, &jit);
  for (int t = 0; t < TP_N_THREADS; t++) {
    memset(out, 0, n * sizeof *out);
    tp_exec(entry, bufs, tp_threads[t]);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += out[i] != a[i] * 3.0f;
    cr_expect_eq(bad, 0, "threads %d: %zu wrong elements", tp_threads[t], bad);
  }
  kiln_llvm_jit_destroy(jit);
  free(a);
  free(out);
  kiln_ir_kprogram_destroy(p);
}

/* in [2,5,3]; sum and max over the middle axis -> [2,3] */
static void reduce_middle(kiln_op op, float *in, float *want) {
  kiln_kprogram *p = tp_new();
  int64_t id[3] = {2, 5, 3}, od[2] = {2, 3}, red[1] = {5};
  int32_t I = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 3, id, 0);
  int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 2, od, 0);
  kiln_kernel *k = tp_loop(p, O, 1, red);
  int32_t v[3] = {0, 2, 1};
  int64_t s[3] = {15, 3, 1};
  int32_t l = kx_load(k, p, I, kx_offset(k, 3, v, s));
  kx_reduce(k, op, KILN_F32, 2, 1, l, 0);
  float out[6];
  void *bufs[2] = {in, out};
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = tp_compile(p, &jit);
  for (int t = 0; t < TP_N_THREADS; t++) {
    memset(out, 0, sizeof out);
    tp_exec(entry, bufs, tp_threads[t]);
    for (int i = 0; i < 6; i++)
      cr_expect(tp_close(out[i], want[i], 1e-6), "%s threads %d [%d]: got %g want %g", kiln_op_name(op),
                tp_threads[t], i, out[i], want[i]);
  }
  kiln_llvm_jit_destroy(jit);
  kiln_ir_kprogram_destroy(p);
}

Test(llvm_jit, reduce_sum_and_max_over_middle_axis) {
  float in[30];
  for (int i = 0; i < 30; i++) in[i] = (float)((i * 7) % 11) - 5.0f;
  in[15 + 3 * 2 + 1] = NAN; /* batch 1, j 2, col 1: max propagates NaN */
  float sum[6] = {0}, mx[6];
  for (int i = 0; i < 6; i++) mx[i] = -INFINITY;
  for (int b = 0; b < 2; b++)
    for (int j = 0; j < 5; j++)
      for (int c = 0; c < 3; c++) {
        float x = in[b * 15 + j * 3 + c];
        sum[b * 3 + c] += x;
        mx[b * 3 + c] = (isnan(x) || isnan(mx[b * 3 + c])) ? NAN : fmaxf(mx[b * 3 + c], x);
      }
  reduce_middle(KILN_OP_reduce_sum, in, sum);
  reduce_middle(KILN_OP_reduce_max, in, mx);
}

/* Float max/min compare numbers and count NaNs beside (render.c eval_reduce): a NaN first,
 * last or alone in a row, or a whole row of NaNs, gives NaN; infinities and -0 are numbers. */
Test(llvm_jit, reduce_max_min_nan_anywhere) {
  float in[30];
  for (int i = 0; i < 30; i++) in[i] = (float)((i * 5) % 7) - 3.0f;
  in[0 * 15 + 0 * 3 + 0] = NAN;                                         /* b0 c0: first of its row */
  in[0 * 15 + 4 * 3 + 1] = NAN;                                         /* b0 c1: last */
  for (int j = 0; j < 5; j++) in[1 * 15 + j * 3 + 2] = NAN;             /* b1 c2: all NaN */
  in[1 * 15 + 2 * 3 + 0] = INFINITY, in[1 * 15 + 3 * 3 + 0] = -INFINITY; /* b1 c0: numbers */
  for (int j = 0; j < 5; j++) in[1 * 15 + j * 3 + 1] = -0.0f;           /* b1 c1: -0 */
  float mx[6], mn[6];
  for (int i = 0; i < 6; i++) mx[i] = -INFINITY, mn[i] = INFINITY;
  for (int b = 0; b < 2; b++)
    for (int j = 0; j < 5; j++)
      for (int c = 0; c < 3; c++) {
        float x = in[b * 15 + j * 3 + c];
        int o = b * 3 + c;
        mx[o] = (isnan(x) || isnan(mx[o])) ? NAN : fmaxf(mx[o], x);
        mn[o] = (isnan(x) || isnan(mn[o])) ? NAN : fminf(mn[o], x);
      }
  cr_assert(isnan(mx[0]) && isnan(mx[1]) && isnan(mx[5]) && isinf(mx[3]) && mx[4] == 0.0f);
  reduce_middle(KILN_OP_reduce_max, in, mx);
  reduce_middle(KILN_OP_reduce_min, in, mn);
}

/* argmax/argmin over axis 1 of [3,6] f32, ties first (kind 0) and last (kind 1) */
Test(llvm_jit, argmax_argmin_ties_and_nan) {
  float in[18] = {1, 5, 2, 5, 0, -1, /* tie of 5 at 1 and 3 */
                  -2, -2, -2, -2, -2, -2, /* all equal */
                  3, NAN, 9, NAN, -9, 1}; /* a NaN wins; NaNs tie, so kind 1 takes the second */
  struct { kiln_op op; int kind; int64_t want[3]; } cases[] = {
      {KILN_OP_argmax, 0, {1, 0, 1}}, {KILN_OP_argmax, 1, {3, 5, 3}},
      {KILN_OP_argmin, 0, {5, 0, 1}}, {KILN_OP_argmin, 1, {5, 5, 3}},
  };
  kiln_kprogram *p = tp_new();
  int64_t id[2] = {3, 6}, od[1] = {3}, red[1] = {6};
  int32_t I = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 2, id, 0);
  for (int c = 0; c < 4; c++) {
    int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_I64, 1, od, c);
    kiln_kernel *k = tp_loop(p, O, 1, red);
    int32_t v[2] = {0, 1};
    int64_t s[2] = {6, 1};
    int32_t l = kx_load(k, p, I, kx_offset(k, 2, v, s));
    kx_reduce(k, cases[c].op, KILN_I64, 1, 1, l, cases[c].kind);
  }
  int64_t out[4][3];
  void *bufs[5] = {in, out[0], out[1], out[2], out[3]};
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = tp_compile(p, &jit);
  for (int t = 0; t < TP_N_THREADS; t++) {
    memset(out, 0xff, sizeof out);
    tp_exec(entry, bufs, tp_threads[t]);
    for (int c = 0; c < 4; c++)
      for (int i = 0; i < 3; i++)
        cr_expect_eq(out[c][i], cases[c].want[i], "%s kind %d row %d: got %lld want %lld", kiln_op_name(cases[c].op),
                     cases[c].kind, i, (long long)out[c][i], (long long)cases[c].want[i]);
  }
  kiln_llvm_jit_destroy(jit);
  kiln_ir_kprogram_destroy(p);
}

/* pad [4] -> [7] with lo 2, hi 1, fill -7: where the mask is false the load must not
 * touch memory. The input sits right after / right before a PROT_NONE page, so a read
 * of in[-1] or in[4] would fault. */
Test(llvm_jit, masked_load_pads_without_touching_memory) {
  kiln_kprogram *p = tp_new();
  int64_t id[1] = {4}, od[1] = {7};
  int32_t I = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 1, id, 0);
  int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 1, od, 0);
  kiln_kernel *k = tp_loop(p, O, 0, NULL);
  int32_t v = kx_var(k, 0);
  int32_t off = kx_alu(k, KILN_OP_sub, KILN_I64, v, kx_i(k, KILN_I64, 2), -1);
  int32_t ge = kx_alu(k, KILN_OP_ge, KILN_BOOL, off, kx_i(k, KILN_I64, 0), -1);
  int32_t lt = kx_alu(k, KILN_OP_lt, KILN_BOOL, off, kx_i(k, KILN_I64, 4), -1);
  int32_t m = kx_alu(k, KILN_OP_and, KILN_BOOL, ge, lt, -1);
  kx_mload(k, p, I, off, m, -7.0);
  long pg = sysconf(_SC_PAGESIZE);
  char *mem = mmap(NULL, (size_t)pg * 3, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  cr_assert(mem != MAP_FAILED);
  cr_assert_eq(mprotect(mem, (size_t)pg, PROT_NONE), 0);
  cr_assert_eq(mprotect(mem + 2 * pg, (size_t)pg, PROT_NONE), 0);
  float *layouts[2] = {(float *)(mem + pg), (float *)(mem + 2 * pg) - 4};
  float out[7], want[7] = {-7, -7, 1, 2, 3, 4, -7};
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = tp_compile(p, &jit);
  for (int l = 0; l < 2; l++) {
    float *in = layouts[l];
    for (int i = 0; i < 4; i++) in[i] = (float)(i + 1);
    void *bufs[2] = {in, out};
    for (int t = 0; t < TP_N_THREADS; t++) {
      memset(out, 0, sizeof out);
      tp_exec(entry, bufs, tp_threads[t]);
      for (int i = 0; i < 7; i++) cr_expect_float_eq(out[i], want[i], 0, "layout %d [%d] %g", l, i, out[i]);
    }
  }
  kiln_llvm_jit_destroy(jit);
  munmap(mem, (size_t)pg * 3);
  kiln_ir_kprogram_destroy(p);
}

/* Softmax-like row op: out[i] = sum_j exp(x[i,j] - M) + M with M = max_k x[i,k]. M is
 * first met inside the sum's loop and used again after it: the value computed inside
 * the loop must not be reused outside it. Plus a nested reduction: sum_j max_k. */
Test(llvm_jit, nested_reductions_scope_values) {
  kiln_kprogram *p = tp_new();
  int64_t id[2] = {3, 4}, od[1] = {3}, red[2] = {4, 4};
  int32_t X = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 2, id, 0);
  int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 1, od, 0);
  int32_t O2 = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 1, od, 1);
  kiln_kernel *k = tp_loop(p, O, 2, red);
  int32_t vk[2] = {0, 2}, vj[2] = {0, 1};
  int64_t s[2] = {4, 1};
  int32_t xk = kx_load(k, p, X, kx_offset(k, 2, vk, s));
  int32_t mx = kx_reduce(k, KILN_OP_reduce_max, KILN_F32, 2, 1, xk, 0);
  int32_t xj = kx_load(k, p, X, kx_offset(k, 2, vj, s));
  int32_t e = kx_alu(k, KILN_OP_exp, KILN_F32, kx_alu(k, KILN_OP_sub, KILN_F32, xj, mx, -1), -1, -1);
  int32_t sm = kx_reduce(k, KILN_OP_reduce_sum, KILN_F32, 1, 1, e, 0);
  kx_alu(k, KILN_OP_add, KILN_F32, sm, mx, -1);
  /* out2[i] = sum_j max_k (x[i,j] * x[i,k]) */
  kiln_kernel *k2 = tp_loop(p, O2, 2, red);
  int32_t a = kx_load(k2, p, X, kx_offset(k2, 2, vj, s));
  int32_t b = kx_load(k2, p, X, kx_offset(k2, 2, vk, s));
  int32_t inner = kx_reduce(k2, KILN_OP_reduce_max, KILN_F32, 2, 1, kx_alu(k2, KILN_OP_mul, KILN_F32, a, b, -1), 0);
  kx_reduce(k2, KILN_OP_reduce_sum, KILN_F32, 1, 1, inner, 0);

  float x[12] = {1, 3, 2, 0, -1, -4, 2, 2, 0.5f, 0.25f, -3, 1};
  float out[3], out2[3], want[3], want2[3];
  for (int i = 0; i < 3; i++) {
    float m = -INFINITY, s1 = 0, s2 = 0;
    for (int j = 0; j < 4; j++) m = fmaxf(m, x[i * 4 + j]);
    for (int j = 0; j < 4; j++) s1 += expf(x[i * 4 + j] - m);
    want[i] = s1 + m;
    for (int j = 0; j < 4; j++) {
      float mm = -INFINITY;
      for (int kk = 0; kk < 4; kk++) mm = fmaxf(mm, x[i * 4 + j] * x[i * 4 + kk]);
      s2 += mm;
    }
    want2[i] = s2;
  }
  void *bufs[3] = {x, out, out2};
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = tp_compile(p, &jit);
  for (int t = 0; t < TP_N_THREADS; t++) {
    tp_exec(entry, bufs, tp_threads[t]);
    for (int i = 0; i < 3; i++) {
      cr_expect(tp_close(out[i], want[i], 1e-5), "row %d: %g want %g", i, out[i], want[i]);
      cr_expect(tp_close(out2[i], want2[i], 1e-5), "nested row %d: %g want %g", i, out2[i], want2[i]);
    }
  }
  kiln_llvm_jit_destroy(jit);
  kiln_ir_kprogram_destroy(p);
}

/* f16 and bf16 buffers: loaded (fpext), computed in f32, rounded to their dtype after
 * each op and on store. */
Test(llvm_jit, f16_and_bf16_load_store) {
  kiln_kprogram *p = tp_new();
  int64_t d[1] = {8};
  int32_t H = tp_buffer(p, KILN_BUF_INPUT, KILN_F16, 1, d, 0);
  int32_t Bf = tp_buffer(p, KILN_BUF_INPUT, KILN_BF16, 1, d, 1);
  int32_t HO = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F16, 1, d, 0);
  int32_t BO = tp_buffer(p, KILN_BUF_OUTPUT, KILN_BF16, 1, d, 1);
  int32_t FO = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 1, d, 2);
  int32_t bufs_in[2] = {H, Bf}, bufs_out[2] = {HO, BO};
  kiln_dtype dts[2] = {KILN_F16, KILN_BF16};
  for (int i = 0; i < 2; i++) {
    kiln_kernel *k = tp_loop(p, bufs_out[i], 0, NULL);
    int32_t l = kx_load(k, p, bufs_in[i], kx_var(k, 0));
    int32_t m = kx_alu(k, KILN_OP_mul, dts[i], l, kx_f(k, dts[i], 2.0), -1);
    kx_alu(k, KILN_OP_add, dts[i], m, kx_f(k, dts[i], 0.3), -1);
  }
  /* f32 out = cast<f16>(float(h) * 1/3): the cast rounds to half precision */
  kiln_kernel *k = tp_loop(p, FO, 0, NULL);
  int32_t l = kx_load(k, p, H, kx_var(k, 0));
  int32_t f = kx_alu(k, KILN_OP_cast, KILN_F32, l, -1, -1);
  int32_t third = kx_alu(k, KILN_OP_mul, KILN_F32, f, kx_f(k, KILN_F32, 1.0 / 3.0), -1);
  int32_t h = kx_alu(k, KILN_OP_cast, KILN_F16, third, -1, -1);
  kx_alu(k, KILN_OP_cast, KILN_F32, h, -1, -1);

  float vals[8] = {0, 1, -1.5f, 3.14159f, 1000.0f, -0.001f, 65000.0f, NAN};
  uint16_t hin[8], bin[8], hout[8], bout[8];
  float fout[8];
  for (int i = 0; i < 8; i++) {
    hin[i] = kiln_f32_to_f16(vals[i]);
    bin[i] = kiln_f32_to_bf16(vals[i]);
  }
  void *bufs[5] = {hin, bin, hout, bout, fout};
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = tp_compile(p, &jit);
  tp_exec(entry, bufs, 2);
  const float c03h = kiln_f16_to_f32(kiln_f32_to_f16(0.3f)), c03b = kiln_bf16_to_f32(kiln_f32_to_bf16(0.3f));
  for (int i = 0; i < 8; i++) {
    float hw = kiln_f16_to_f32(kiln_f32_to_f16(kiln_f16_to_f32(hin[i]) * 2.0f + c03h));
    float bw = kiln_bf16_to_f32(kiln_f32_to_bf16(kiln_bf16_to_f32(bin[i]) * 2.0f + c03b));
    float hg = kiln_f16_to_f32(hout[i]), bg = kiln_bf16_to_f32(bout[i]);
    cr_expect(tp_close(hg, hw, 0), "f16 [%d]: got %g want %g", i, hg, hw);
    cr_expect(tp_close(bg, bw, 0), "bf16 [%d]: got %g want %g", i, bg, bw);
    float fw = kiln_f16_to_f32(kiln_f32_to_f16(kiln_f16_to_f32(hin[i]) * (float)(1.0 / 3.0)));
    cr_expect(tp_close(fout[i], fw, 0), "cast f16 [%d]: got %g want %g", i, fout[i], fw);
  }
  kiln_llvm_jit_destroy(jit);
  kiln_ir_kprogram_destroy(p);
}

/* C[b] = A[b] (3x4) * B^T (B stored 5x4, shared by both batches) -> [2,3,5], then a LOOP
 * kernel reading the GEMM's arena result. */
Test(llvm_jit, gemm_kernel_matches_naive_loops) {
  kiln_kprogram *p = tp_new();
  int64_t ad[3] = {2, 3, 4}, bd[2] = {5, 4}, cd[3] = {2, 3, 5};
  int32_t A = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 3, ad, 0);
  int32_t B = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 2, bd, 1);
  int32_t T = tp_buffer(p, KILN_BUF_ARENA, KILN_F32, 3, cd, 0);
  int32_t C = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 3, cd, 0);
  kiln_kernel *g = &p->kernels[p->n_kernels++];
  g->kind = KILN_KERNEL_GEMM;
  g->name = "gemm";
  g->out_buf = T;
  g->out_dtype = KILN_F32;
  g->out = p->buffers[T].shape;
  g->gemm = (kiln_gemm_desc){.a_buf = A, .b_buf = B, .c_buf = T, .trans_b = 1, .m = 3, .n = 5, .k = 4,
                             .lda = 4, .ldb = 4, .ldc = 5, .n_batch = 1, .batch = {2},
                             .a_bstride = {12}, .b_bstride = {0}, .c_bstride = {15}};
  kiln_kernel *k = tp_loop(p, C, 0, NULL);
  int32_t v[3] = {0, 1, 2};
  int64_t s[3] = {15, 5, 1};
  kx_alu(k, KILN_OP_add, KILN_F32, kx_load(k, p, T, kx_offset(k, 3, v, s)), kx_f(k, KILN_F32, 1.0), -1);

  float a[24], b[20], c[30], arena[30];
  for (int i = 0; i < 24; i++) a[i] = (float)(i % 7) - 3.0f;
  for (int i = 0; i < 20; i++) b[i] = (float)(i % 5) * 0.5f - 1.0f;
  void *bufs[4] = {a, b, arena, c};
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = tp_compile(p, &jit);
  for (int t = 0; t < TP_N_THREADS; t++) {
    memset(c, 0, sizeof c);
    tp_exec(entry, bufs, tp_threads[t]);
    for (int bt = 0; bt < 2; bt++)
      for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++) {
          float want = 1.0f;
          for (int kk = 0; kk < 4; kk++) want += a[bt * 12 + i * 4 + kk] * b[j * 4 + kk];
          cr_expect(tp_close(c[bt * 15 + i * 5 + j], want, 1e-5), "threads %d C[%d,%d,%d] = %g want %g", tp_threads[t],
                    bt, i, j, c[bt * 15 + i * 5 + j], want);
        }
  }
  kiln_llvm_jit_destroy(jit);
  kiln_ir_kprogram_destroy(p);
}

Test(llvm_jit, print_module_shows_optimized_ir) {
  kiln_kprogram *p = tp_new();
  int64_t d[1] = {64};
  int32_t A = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 1, d, 0);
  int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 1, d, 0);
  kiln_kernel *k = tp_loop(p, O, 0, NULL);
  kx_alu(k, KILN_OP_exp, KILN_F32, kx_load(k, p, A, kx_var(k, 0)), -1, -1);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  kiln_diag dg = {0};
  tp_schedule(p);
  cr_assert_eq(kiln_llvm_print_module(p, f, &dg), KILN_OK, "%s", dg.msg);
  fclose(f);
  cr_expect(strstr(text, "define void @kiln_main("), "no entry in:\n%s", text);
  cr_expect(strstr(text, "kiln_rt_parallel_for"), "no parallel_for call");
  cr_expect(strstr(text, "target datalayout"), "no data layout");
  free(text);
  kiln_ir_kprogram_destroy(p);
  cr_expect(strncmp(kiln_llvm_version(), "LLVM 19", 7) == 0, "version %s", kiln_llvm_version());
}

Test(llvm_jit, refuses_non_scalar_op_with_message) {
  kiln_kprogram *p = tp_new();
  int64_t d[1] = {4};
  int32_t A = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 1, d, 0);
  int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 1, d, 0);
  kiln_kernel *k = tp_loop(p, O, 0, NULL);
  k->name = "k0_bad";
  kx_alu(k, KILN_OP_conv, KILN_F32, kx_load(k, p, A, kx_var(k, 0)), -1, -1);
  kiln_diag dg = {0};
  kiln_llvm_jit *jit = NULL;
  kiln_rt_entry_fn entry = NULL;
  tp_schedule(p);
  cr_expect_eq(kiln_llvm_jit_compile(p, &jit, &entry, &dg), KILN_ERR_UNSUPPORTED);
  cr_expect(jit == NULL && entry == NULL);
  cr_expect(strstr(dg.msg, "k0_bad") && strstr(dg.msg, "conv"), "message: %s", dg.msg);
  kiln_ir_kprogram_destroy(p);
}

/* A kernel with an empty output runs no rows and touches nothing. */
Test(llvm_jit, empty_output_kernel_is_skipped) {
  kiln_kprogram *p = tp_new();
  int64_t d[2] = {0, 3};
  int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 2, d, 0);
  kiln_kernel *k = tp_loop(p, O, 0, NULL);
  kx_f(k, KILN_F32, 1.0);
  float dummy = 5;
  void *bufs[1] = {&dummy};
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = tp_compile(p, &jit);
  tp_exec(entry, bufs, 2);
  cr_expect_eq(dummy, 5.0f);
  kiln_llvm_jit_destroy(jit);
  kiln_ir_kprogram_destroy(p);
}

/* OPAQUE kernel: topk (k = 2, largest) along axis 1 of [2,5] through kiln_rt_opaque. */
Test(llvm_jit, opaque_kernel_calls_runtime_routine) {
  kiln_kprogram *p = tp_new();
  int64_t id[2] = {2, 5}, od[2] = {2, 2};
  int32_t I = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 2, id, 0);
  int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_I64, 2, od, 0);
  kiln_kernel *k = &p->kernels[p->n_kernels++];
  k->kind = KILN_KERNEL_OPAQUE;
  k->name = "topk";
  k->op = KILN_OP_topk;
  k->attrs.axis = 1;
  k->attrs.k = 2;
  k->attrs.kind = 1;
  k->out_buf = O;
  k->out_dtype = KILN_I64;
  k->out = p->buffers[O].shape;
  k->n_in_bufs = 1;
  k->in_bufs = kiln_arena_alloc(p->arena, sizeof(int32_t));
  k->in_bufs[0] = I;
  float in[10] = {3, 9, 1, 7, 5, -1, -5, 4, 4, 0};
  int64_t out[4], want[4] = {1, 3, 2, 3};
  void *bufs[2] = {in, out};
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = tp_compile(p, &jit);
  for (int t = 0; t < TP_N_THREADS; t++) {
    memset(out, 0xff, sizeof out);
    tp_exec(entry, bufs, tp_threads[t]);
    for (int i = 0; i < 4; i++) cr_expect_eq(out[i], want[i], "[%d] %lld want %lld", i, (long long)out[i], (long long)want[i]);
  }
  kiln_llvm_jit_destroy(jit);
  kiln_ir_kprogram_destroy(p);
}

/* An output of 64 MiB gets a streaming-store variant (render.c), which the entry runs only
 * where the output is 64-byte aligned: both ways, every element must be right. */
Test(llvm_jit, streaming_stores_aligned_and_unaligned_output) {
  enum { R = 16384, C = 1024 };
  kiln_kprogram *p = tp_new();
  int64_t d[2] = {R, C};
  int32_t A = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 2, d, 0);
  int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 2, d, 0);
  kiln_kernel *k = tp_loop(p, O, 0, NULL);
  int32_t v2[2] = {0, 1};
  int64_t s2[2] = {C, 1};
  int32_t la = kx_load(k, p, A, kx_offset(k, 2, v2, s2));
  kx_alu(k, KILN_OP_add, KILN_F32, kx_alu(k, KILN_OP_mul, KILN_F32, la, la, -1), la, -1);
  size_t n = (size_t)R * C;
  float *a = aligned_alloc(64, n * sizeof(float));
  float *raw = aligned_alloc(64, n * sizeof(float) + 64);
  cr_assert(a && raw);
  for (size_t i = 0; i < n; i++) a[i] = (float)(i % 1000) * 0.01f - 5.0f;
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = tp_compile(p, &jit);
  for (int shift = 0; shift <= 1; shift++) { /* 0: aligned (streaming), 1: 4 bytes off */
    float *out = raw + shift;
    for (int t = 0; t < TP_N_THREADS; t++) {
      memset(raw, 0xff, n * sizeof(float) + 64);
      void *bufs[2] = {a, out};
      tp_exec(entry, bufs, tp_threads[t]);
      size_t bad = 0, first = 0;
      for (size_t i = 0; i < n; i++)
        if (out[i] != a[i] * a[i] + a[i] && bad++ == 0) first = i;
      cr_expect_eq(bad, 0, "shift %d threads %d: %zu wrong, first at %zu (%g)", shift, tp_threads[t], bad, first,
                   out[first]);
    }
  }
  kiln_llvm_jit_destroy(jit);
  kiln_ir_kprogram_destroy(p);
  free(a);
  free(raw);
}

/* Sibling kernels (kiln_kernel.with_next): the verifier accepts a pair that reads a common
 * input and refuses a chain of three or a pair where one reads the other's output; the
 * JIT runs a pair as one loop nest, and both outputs must be right. */
Test(llvm_jit, sibling_pair_runs_as_one_and_verifies) {
  enum { R = 64, C = 100 };
  kiln_kprogram *p = tp_new();
  int64_t d[2] = {R, C};
  int32_t X = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 2, d, 0);
  int32_t O[3];
  for (int o = 0; o < 3; o++) O[o] = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 2, d, o);
  int32_t v2[2] = {0, 1};
  int64_t s2[2] = {C, 1};
  for (int o = 0; o < 3; o++) { /* x + 1, x * x, x - 2 */
    kiln_kernel *k = tp_loop(p, O[o], 0, NULL);
    int32_t lx = kx_load(k, p, X, kx_offset(k, 2, v2, s2));
    kiln_op op = o == 0 ? KILN_OP_add : o == 1 ? KILN_OP_mul : KILN_OP_sub;
    kx_alu(k, op, KILN_F32, lx, o == 1 ? lx : kx_f(k, KILN_F32, o == 0 ? 1.0 : 2.0), -1);
  }
  p->n_inputs = 1, p->n_outputs = 3; /* for the verifier's buffer checks */
  kiln_diag dg = {0};
  p->kernels[0].with_next = p->kernels[1].with_next = true;
  cr_expect_neq(kiln_ir_kprogram_verify(p, &dg), KILN_OK);
  cr_expect(strstr(dg.msg, "pairs only"), "%s", dg.msg);
  p->kernels[1].with_next = false;
  dg = (kiln_diag){0};
  cr_assert_eq(kiln_ir_kprogram_verify(p, &dg), KILN_OK, "%s", dg.msg);

  float *x = malloc(sizeof(float) * R * C), *out = malloc(sizeof(float) * 3 * R * C);
  cr_assert(x && out);
  for (int i = 0; i < R * C; i++) x[i] = (float)(i % 17) - 8.0f;
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = tp_compile(p, &jit);
  for (int t = 0; t < TP_N_THREADS; t++) {
    memset(out, 0xff, sizeof(float) * 3 * R * C);
    void *bufs[4] = {x, out, out + R * C, out + 2 * R * C};
    tp_exec(entry, bufs, tp_threads[t]);
    int bad = 0;
    for (int i = 0; i < R * C; i++)
      bad += out[i] != x[i] + 1 || out[R * C + i] != x[i] * x[i] || out[2 * R * C + i] != x[i] - 2;
    cr_expect_eq(bad, 0, "threads %d: %d wrong", tp_threads[t], bad);
  }
  kiln_llvm_jit_destroy(jit);

  /* the second reads the first's output: not siblings */
  kiln_kernel *k1 = &p->kernels[1];
  for (int32_t i = 0; i < k1->n_kx; i++)
    if (k1->kx[i].kind == KILN_KX_LOAD) k1->kx[i].buf = O[0];
  dg = (kiln_diag){0};
  cr_expect_neq(kiln_ir_kprogram_verify(p, &dg), KILN_OK);
  cr_expect(strstr(dg.msg, "not its sibling"), "%s", dg.msg);
  kiln_ir_kprogram_destroy(p);
  free(x);
  free(out);
}
