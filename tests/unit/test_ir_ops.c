/* test_ir_ops.c - the columns of ir/ops.def agree with each other and with the op table's
 * helpers (kiln_op_accepts, kiln_op_combine, kiln_op_has): what a row may say is
 * constrained by its category, so a row that contradicts itself fails here, naming the
 * op, instead of misleading a pass that asks the table. */
#include <criterion/criterion.h>

#include "../../ir/ir.h"

static const char *name(int op) { return kiln_op_name((kiln_op)op); }

Test(ir_ops, operands_and_cost_belong_to_their_categories) {
  for (int op = 0; op < KILN_OP_COUNT; op++) {
    const kiln_op_info *in = &kiln_op_table[op];
    bool ew = in->category == KILN_CAT_ELEMENTWISE, red = in->category == KILN_CAT_REDUCE;
    cr_expect_eq(in->operands != KILN_OPD_NONE, ew || red, "%s: OPERANDS is for elementwise ops and reductions",
                 name(op));
    cr_expect_eq(in->cost > 0, ew, "%s: COST is for elementwise ops (and at least 1 there)", name(op));
    int n = 0;
    for (int t = 0; t < KILN_DTYPE_COUNT; t++) n += kiln_op_accepts((kiln_op)op, (kiln_dtype)t);
    cr_expect_eq(n > 0, ew || red, "%s accepts %d dtypes", name(op), n);
  }
  cr_expect(!kiln_op_accepts(KILN_OP_COUNT, KILN_F32) && !kiln_op_accepts(KILN_OP_add, KILN_DTYPE_COUNT),
            "out-of-range ops and dtypes are accepted by nothing");
}

Test(ir_ops, flags_fit_their_ops) {
  for (int op = 0; op < KILN_OP_COUNT; op++) {
    const kiln_op_info *in = &kiln_op_table[op];
    kiln_category c = in->category;
    if (kiln_op_has((kiln_op)op, KILN_OPF_TRANS))
      cr_expect(c == KILN_CAT_ELEMENTWISE && in->cost == 16 && !kiln_op_has((kiln_op)op, KILN_OPF_EXACT),
                "%s: a transcendental function is an elementwise op of cost 16, never exact", name(op));
    if (kiln_op_has((kiln_op)op, KILN_OPF_BOOL))
      cr_expect(c == KILN_CAT_ELEMENTWISE, "%s: BOOL is for elementwise results", name(op));
    if (kiln_op_has((kiln_op)op, KILN_OPF_REMAP))
      cr_expect(c == KILN_CAT_MOVEMENT, "%s: REMAP is for movement ops", name(op));
    if (kiln_op_has((kiln_op)op, KILN_OPF_INDEX))
      cr_expect(c == KILN_CAT_REDUCE || c == KILN_CAT_OPAQUE, "%s: INDEX results come from reductions or routines",
                name(op));
    if (kiln_op_has((kiln_op)op, KILN_OPF_COND))
      cr_expect(c == KILN_CAT_ELEMENTWISE || c == KILN_CAT_REDUCE, "%s: COND is for readers of a value", name(op));
    /* Neither a bool or index result nor bitwise operands carry a derivative. */
    bool no_grad = kiln_op_has((kiln_op)op, KILN_OPF_BOOL) || kiln_op_has((kiln_op)op, KILN_OPF_INDEX) ||
                   in->operands == KILN_OPD_INTBOOL;
    if (no_grad) cr_expect(!kiln_op_has((kiln_op)op, KILN_OPF_DIFF), "%s: DIFF on an op without float values", name(op));
    cr_expect(!kiln_op_has((kiln_op)op, 1u << 31), "%s: an unknown flag", name(op));
  }
  cr_expect(!kiln_op_has(KILN_OP_COUNT, KILN_OPF_DIFF), "an out-of-range op has no property");
}

/* The reductions that fold values with an elementwise op are those without an index result. */
Test(ir_ops, combine_is_the_value_reductions_elementwise_op) {
  for (int op = 0; op < KILN_OP_COUNT; op++) {
    kiln_op comb = kiln_op_combine((kiln_op)op);
    bool value_reduce = kiln_op_table[op].category == KILN_CAT_REDUCE && !kiln_op_has((kiln_op)op, KILN_OPF_INDEX);
    cr_expect_eq(comb != KILN_OP_COUNT, value_reduce, "%s: combine %s", name(op),
                 comb == KILN_OP_COUNT ? "none" : name(comb));
    if (comb != KILN_OP_COUNT) {
      cr_expect_eq(kiln_op_table[comb].category, KILN_CAT_ELEMENTWISE, "%s combines with %s", name(op), name(comb));
      cr_expect_eq(kiln_op_table[comb].arity, 2, "%s combines with %s", name(op), name(comb));
      /* the reduction takes the dtypes its combining op takes, or more (bool max/min) */
      for (int t = 0; t < KILN_DTYPE_COUNT; t++)
        if (kiln_op_accepts(comb, (kiln_dtype)t))
          cr_expect(kiln_op_accepts((kiln_op)op, (kiln_dtype)t), "%s refuses %s, which %s accepts", name(op),
                    kiln_dtype_name((kiln_dtype)t), name(comb));
    }
  }
  cr_expect_eq(kiln_op_combine(KILN_OP_reduce_sum), KILN_OP_add);
  cr_expect_eq(kiln_op_combine(KILN_OP_reduce_prod), KILN_OP_mul);
  cr_expect_eq(kiln_op_combine(KILN_OP_reduce_max), KILN_OP_max);
  cr_expect_eq(kiln_op_combine(KILN_OP_reduce_min), KILN_OP_min);
}

/* Spot checks of what the passes rely on (fuse.c, schedule.c, kernel.c). */
Test(ir_ops, the_properties_passes_ask_for) {
  cr_expect(kiln_op_has(KILN_OP_exp, KILN_OPF_TRANS) && kiln_op_has(KILN_OP_pow, KILN_OPF_TRANS));
  cr_expect(!kiln_op_has(KILN_OP_div, KILN_OPF_TRANS) && kiln_op_table[KILN_OP_div].cost == 4);
  cr_expect(kiln_op_has(KILN_OP_max, KILN_OPF_EXACT) && !kiln_op_has(KILN_OP_add, KILN_OPF_EXACT));
  cr_expect(kiln_op_has(KILN_OP_tanh, KILN_OPF_COND) && !kiln_op_has(KILN_OP_exp, KILN_OPF_COND));
  cr_expect(kiln_op_has(KILN_OP_reshape, KILN_OPF_REMAP) && !kiln_op_has(KILN_OP_gather, KILN_OPF_REMAP) &&
            !kiln_op_has(KILN_OP_pad, KILN_OPF_REMAP));
  cr_expect(!kiln_op_has(KILN_OP_floor, KILN_OPF_DIFF) && kiln_op_has(KILN_OP_mul, KILN_OPF_DIFF));
  cr_expect(kiln_op_accepts(KILN_OP_not, KILN_BOOL) && !kiln_op_accepts(KILN_OP_not, KILN_F32));
  cr_expect(!kiln_op_accepts(KILN_OP_reduce_sum, KILN_BOOL) && kiln_op_accepts(KILN_OP_reduce_max, KILN_BOOL));
}
