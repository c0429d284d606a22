/* onnx_ops_loss.c - importers for the ONNX loss operators NegativeLogLikelihoodLoss and
 * SoftmaxCrossEntropyLoss: the class score of each target is picked with gather_elements,
 * weighted (per-class weights gathered by target, ignore_index masked out) and reduced.
 * Semantics follow onnx.reference (mean with weights divides by the sum of the weights). */
#include "onnx_impl.h"

#include <string.h>

#define G (c->g)
#define NM (n->name)
#define OP (n->p->op_type)

static int32_t bin(fe_ctx *c, fe_node *n, kiln_op op, int32_t a, int32_t b) {
  return kiln_ir_binary(G, op, a, b, NM);
}

/* The loss of log-probabilities lp [N, C, d...] (already log-softmaxed or not) against
 * targets t [N, d...]: output 0 gets the reduced loss. */
static kiln_status nll(fe_ctx *c, fe_node *n, int32_t lp, int32_t t, int32_t w) {
  const kiln_shape xs = G->nodes[lp].shape, ts = G->nodes[t].shape;
  if (xs.rank < 2 || ts.rank != xs.rank - 1 || ts.dims[0] != xs.dims[0])
    return fe_fail(c, n, KILN_ERR_SHAPE, "input must be [N, C, d...] and target [N, d...]");
  for (int i = 1; i < ts.rank; i++)
    if (ts.dims[i] != xs.dims[i + 1])
      return fe_fail(c, n, KILN_ERR_SHAPE, "target dim %d is %lld, input has %lld", i,
                     (long long)ts.dims[i], (long long)xs.dims[i + 1]);
  if (!kiln_dtype_is_int(G->nodes[t].dtype))
    return fe_fail(c, n, KILN_ERR_SHAPE, "target must be an integer tensor");
  const char *red = fe_attr_str(c, n, "reduction", "mean");
  if (strcmp(red, "mean") && strcmp(red, "sum") && strcmp(red, "none"))
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "reduction='%s' is not supported", red);
  const Onnx__AttributeProto *ia = fe_attr(n, "ignore_index");
  bool has_ii = ia && ia->has_i;
  int64_t C = xs.dims[1];
  kiln_dtype tdt = G->nodes[t].dtype;
  /* Ignored targets may lie outside [0, C): pick a valid class for them and mask after. */
  int32_t mask = -1, tc = t;
  if (has_ii) {
    mask = bin(c, n, KILN_OP_ne, t, kiln_ir_scalar(G, tdt, (double)ia->i, NM));
    tc = kiln_ir_select(G, mask, t, kiln_ir_scalar(G, tdt, 0, NM), NM);
  }
  tc = bin(c, n, KILN_OP_max, bin(c, n, KILN_OP_min, tc, kiln_ir_scalar(G, tdt, (double)(C - 1), NM)),
           kiln_ir_scalar(G, tdt, 0, NM));
  kiln_shape is = xs;
  is.dims[1] = 1;
  int32_t picked = kiln_ir_gather_elements(G, lp, kiln_ir_reshape(G, tc, &is, NM), 1, NM);
  int32_t loss = kiln_ir_unary(G, KILN_OP_neg, kiln_ir_reshape(G, picked, &ts, NM), NM);
  int32_t zero = fe_scalar_like(c, n, lp, 0);
  if (mask >= 0) loss = kiln_ir_select(G, mask, loss, zero, NM);
  int32_t gw = -1; /* per-element weights, when any */
  if (w >= 0) {
    gw = kiln_ir_gather(G, w, tc, 0, NM);
    if (mask >= 0) gw = kiln_ir_select(G, mask, gw, zero, NM);
  } else if (mask >= 0) {
    gw = kiln_ir_cast(G, mask, G->nodes[lp].dtype, NM);
  }
  if (gw >= 0) loss = bin(c, n, KILN_OP_mul, loss, gw);
  int32_t axes[KILN_MAX_RANK];
  for (int i = 0; i < ts.rank; i++) axes[i] = i;
  if (!strcmp(red, "sum")) {
    loss = kiln_ir_reduce(G, KILN_OP_reduce_sum, loss, ts.rank, axes, 0, NM);
  } else if (!strcmp(red, "mean")) {
    if (gw >= 0)
      loss = bin(c, n, KILN_OP_div, kiln_ir_reduce(G, KILN_OP_reduce_sum, loss, ts.rank, axes, 0, NM),
                 kiln_ir_reduce(G, KILN_OP_reduce_sum, gw, ts.rank, axes, 0, NM));
    else
      loss = fe_reduce_mean(c, n, loss, ts.rank, axes, 0);
  }
  n->out[0] = loss;
  return KILN_OK;
}

kiln_status fe_import_nll_loss(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  return nll(c, n, n->in[0], n->in[1], fe_in(n, 2));
}

kiln_status fe_import_softmax_ce_loss(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  if (G->nodes[x].shape.rank < 2) return fe_fail(c, n, KILN_ERR_SHAPE, "scores must be [N, C, d...]");
  /* log(exp(x - max) / sum), as the reference computes it. */
  int32_t ax = 1;
  int32_t m = kiln_ir_reduce(G, KILN_OP_reduce_max, x, 1, &ax, 1, NM);
  int32_t e = kiln_ir_unary(G, KILN_OP_exp, bin(c, n, KILN_OP_sub, x, m), NM);
  int32_t s = kiln_ir_reduce(G, KILN_OP_reduce_sum, e, 1, &ax, 1, NM);
  int32_t lp = kiln_ir_unary(G, KILN_OP_log, bin(c, n, KILN_OP_div, e, s), NM);
  if (lp < 0) return KILN_OK; /* the builder's error is reported */
  if ((st = nll(c, n, lp, n->in[1], fe_in(n, 2))) != KILN_OK) return st;
  if (n->n_out > 1) n->out[1] = lp;
  return KILN_OK;
}
