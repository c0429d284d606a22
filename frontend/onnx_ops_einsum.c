/* onnx_ops_einsum.c - the importer for ONNX Einsum: each operand's repeated labels become
 * diagonals (a strided slice of the merged dims), labels no later step needs are summed
 * out, operands are contracted pairwise as one batched matmul ([batch, left, contracted] x
 * [batch, contracted, right]), and the result is permuted to the output labels. Ellipses
 * broadcast like numpy's. */
#include "onnx_impl.h"

#include <string.h>

#define G (c->g)
#define NM (n->name)

enum { EIN_LABELS = 256 + KILN_MAX_RANK, EIN_MAX_OPS = 16 };

/* An operand: node v with one label per dim (letters by code, ellipsis dims 256 + j). */
typedef struct ein_op {
  int32_t v;
  int rank;
  int lab[KILN_MAX_RANK];
} ein_op;

static int64_t ein_dim(fe_ctx *c, const ein_op *o, int i) { return G->nodes[o->v].shape.dims[i]; }

static int ein_find(const ein_op *o, int label) {
  for (int i = 0; i < o->rank; i++)
    if (o->lab[i] == label) return i;
  return -1;
}

/* Parses one term (no ',' or "->") into labels; ellipsis dims are right-aligned to
 * ell_rank (the longest ellipsis of all operands), so `rank` fixes how many it stands for. */
static kiln_status ein_parse(fe_ctx *c, fe_node *n, const char *t, size_t len, int rank, int ell_rank,
                             int *lab, int *count, int *ell_seen) {
  int letters = 0, k = 0;
  for (size_t i = 0; i < len; i++) {
    if (t[i] == '.') continue;
    if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z')))
      return fe_fail(c, n, KILN_ERR_PARSE, "bad character '%c' in the equation", t[i]);
    letters++;
  }
  bool ell = memmem(t, len, "...", 3) != NULL;
  int e = ell ? (rank < 0 ? 0 : rank - letters) : 0;
  if (rank >= 0 && (e < 0 || (!ell && letters != rank)))
    return fe_fail(c, n, KILN_ERR_SHAPE, "the equation term '%.*s' does not match rank %d", (int)len, t, rank);
  if (ell_seen) *ell_seen = ell ? e : 0;
  for (size_t i = 0; i < len;) {
    if (t[i] == '.') {
      if (i + 2 >= len || t[i + 1] != '.' || t[i + 2] != '.')
        return fe_fail(c, n, KILN_ERR_PARSE, "a '.' outside an ellipsis");
      int m = rank < 0 ? ell_rank : e;
      for (int j = 0; j < m; j++) {
        if (k >= KILN_MAX_RANK) return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "too many labels");
        lab[k++] = 256 + ell_rank - m + j;
      }
      i += 3;
      continue;
    }
    if (k >= KILN_MAX_RANK) return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "too many labels");
    lab[k++] = (unsigned char)t[i++];
  }
  *count = k;
  return KILN_OK;
}

/* Permutes o to the label order `want` (a permutation of o's labels). */
static void ein_permute(fe_ctx *c, fe_node *n, ein_op *o, const int *want) {
  int32_t perm[KILN_MAX_RANK];
  bool id = true;
  for (int i = 0; i < o->rank; i++) {
    perm[i] = ein_find(o, want[i]);
    id = id && perm[i] == i;
  }
  if (!id) o->v = kiln_ir_permute(G, o->v, perm, NM);
  memcpy(o->lab, want, sizeof(int) * (size_t)o->rank);
}

/* Replaces every repeated label of o by its diagonal. */
static void ein_diagonals(fe_ctx *c, fe_node *n, ein_op *o) {
  for (int p = 0; p < o->rank && o->v >= 0; p++)
    for (int q = p + 1; q < o->rank && o->v >= 0; q++) {
      if (o->lab[p] != o->lab[q]) continue;
      int want[KILN_MAX_RANK], k = 0, label = o->lab[p];
      for (int i = 0; i < o->rank; i++)
        if (i != p && i != q) want[k++] = o->lab[i];
      want[k++] = label, want[k++] = label;
      int32_t perm[KILN_MAX_RANK];
      for (int i = 0, j = 0; i < o->rank; i++)
        if (i != p && i != q) perm[j++] = i;
      perm[o->rank - 2] = p, perm[o->rank - 1] = q;
      int64_t d = ein_dim(c, o, p);
      o->v = kiln_ir_permute(G, o->v, perm, NM);
      kiln_shape s = G->nodes[o->v].shape;
      s.dims[s.rank - 2] = d * d;
      s.rank--;
      o->v = kiln_ir_reshape(G, o->v, &s, NM);
      int64_t starts[KILN_MAX_RANK] = {0}, steps[KILN_MAX_RANK], counts[KILN_MAX_RANK];
      for (int i = 0; i < s.rank; i++) steps[i] = 1, counts[i] = s.dims[i];
      steps[s.rank - 1] = d + 1, counts[s.rank - 1] = d;
      o->v = kiln_ir_slice(G, o->v, starts, steps, counts, NM);
      o->rank--;
      memcpy(o->lab, want, sizeof(int) * (size_t)o->rank);
      q = p; /* rescan from p: the labels moved */
    }
}

/* Sums out the labels of o that keep[] does not mark. */
static void ein_sum(fe_ctx *c, fe_node *n, ein_op *o, const bool *keep) {
  int32_t axes[KILN_MAX_RANK], na = 0, k = 0;
  for (int i = 0; i < o->rank; i++) {
    if (keep[o->lab[i]]) o->lab[k++] = o->lab[i];
    else axes[na++] = i;
  }
  if (!na) return;
  o->v = kiln_ir_reduce(G, KILN_OP_reduce_sum, o->v, na, axes, 0, NM);
  o->rank = k;
}

/* Broadcasts size-1 dims of a and b against each other where they share a label. */
static void ein_match_dims(fe_ctx *c, fe_node *n, ein_op *a, ein_op *b) {
  for (int pass = 0; pass < 2; pass++) {
    ein_op *x = pass ? b : a, *y = pass ? a : b;
    if (x->v < 0 || y->v < 0) return;
    kiln_shape s = G->nodes[x->v].shape;
    bool grow = false;
    for (int i = 0; i < x->rank; i++) {
      int j = ein_find(y, x->lab[i]);
      if (j >= 0 && s.dims[i] == 1 && ein_dim(c, y, j) != 1) s.dims[i] = ein_dim(c, y, j), grow = true;
    }
    if (grow) x->v = kiln_ir_broadcast(G, x->v, &s, NM);
  }
}

/* a <- a * b contracted over the shared labels keep[] does not mark. */
static kiln_status ein_contract(fe_ctx *c, fe_node *n, ein_op *a, ein_op *b, const bool *keep) {
  ein_match_dims(c, n, a, b);
  if (a->v < 0 || b->v < 0) return KILN_OK;
  int bl[KILN_MAX_RANK], ll[KILN_MAX_RANK], kl[KILN_MAX_RANK], rl[KILN_MAX_RANK];
  int nb = 0, nl = 0, nk = 0, nr = 0;
  int64_t B = 1, L = 1, K = 1, R = 1;
  kiln_shape out = {0};
  for (int i = 0; i < a->rank; i++) {
    int j = ein_find(b, a->lab[i]);
    if (j >= 0 && keep[a->lab[i]]) bl[nb++] = a->lab[i], B *= ein_dim(c, a, i);
    else if (j >= 0) kl[nk++] = a->lab[i], K *= ein_dim(c, a, i);
    else ll[nl++] = a->lab[i], L *= ein_dim(c, a, i);
  }
  for (int i = 0; i < b->rank; i++)
    if (ein_find(a, b->lab[i]) < 0) rl[nr++] = b->lab[i], R *= ein_dim(c, b, i);
  if (nb + nl + nr > KILN_MAX_RANK) return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "an intermediate has rank above %d", KILN_MAX_RANK);
  int wa[KILN_MAX_RANK], wb[KILN_MAX_RANK], wo[KILN_MAX_RANK], k = 0;
  for (int i = 0; i < nb; i++) wa[k++] = bl[i];
  for (int i = 0; i < nl; i++) wa[k++] = ll[i];
  for (int i = 0; i < nk; i++) wa[k++] = kl[i];
  k = 0;
  for (int i = 0; i < nb; i++) wb[k++] = bl[i];
  for (int i = 0; i < nk; i++) wb[k++] = kl[i];
  for (int i = 0; i < nr; i++) wb[k++] = rl[i];
  ein_permute(c, n, a, wa);
  ein_permute(c, n, b, wb);
  k = 0;
  for (int i = 0; i < nb + nl; i++) wo[k] = a->lab[i], out.dims[k++] = ein_dim(c, a, i);
  for (int i = nb + nk; i < b->rank; i++) wo[k] = b->lab[i], out.dims[k++] = ein_dim(c, b, i);
  out.rank = k;
  kiln_shape sa = {3, {B, L, K}}, sb = {3, {B, K, R}};
  int32_t y = kiln_ir_matmul(G, kiln_ir_reshape(G, a->v, &sa, NM), kiln_ir_reshape(G, b->v, &sb, NM), NM);
  a->v = kiln_ir_reshape(G, y, &out, NM);
  a->rank = out.rank;
  memcpy(a->lab, wo, sizeof(int) * (size_t)out.rank);
  return KILN_OK;
}

kiln_status fe_import_einsum(fe_ctx *c, fe_node *n) {
  const char *eq = fe_attr_str(c, n, "equation", NULL);
  if (!eq) return fe_fail(c, n, KILN_ERR_PARSE, "the equation attribute is missing");
  if (n->n_in < 1 || n->n_in > EIN_MAX_OPS) return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "1 to %d operands", EIN_MAX_OPS);
  kiln_status st = fe_need_inputs(c, n, n->n_in);
  if (st != KILN_OK) return st;
  char buf[512];
  size_t len = 0;
  for (const char *p = eq; *p && len + 1 < sizeof buf; p++)
    if (*p != ' ') buf[len++] = *p;
  buf[len] = 0;
  const char *arrow = strstr(buf, "->");
  size_t lhs_len = arrow ? (size_t)(arrow - buf) : len;
  /* Operand terms, then the longest ellipsis. */
  const char *term[EIN_MAX_OPS];
  size_t tlen[EIN_MAX_OPS];
  int nt = 0;
  for (size_t i = 0, start = 0; i <= lhs_len; i++)
    if (i == lhs_len || buf[i] == ',') {
      if (nt == EIN_MAX_OPS) return fe_fail(c, n, KILN_ERR_PARSE, "too many terms");
      term[nt] = buf + start, tlen[nt++] = i - start;
      start = i + 1;
    }
  if (nt != n->n_in) return fe_fail(c, n, KILN_ERR_SHAPE, "the equation has %d operands, the node %d", nt, n->n_in);
  ein_op ops[EIN_MAX_OPS];
  int ell = 0, scratch[KILN_MAX_RANK], cnt;
  for (int i = 0; i < nt; i++) {
    int e;
    int rank = G->nodes[n->in[i]].shape.rank;
    if ((st = ein_parse(c, n, term[i], tlen[i], rank, 0, scratch, &cnt, &e)) != KILN_OK) return st;
    if (e > ell) ell = e;
  }
  for (int i = 0; i < nt; i++) {
    ops[i].v = n->in[i];
    int rank = G->nodes[n->in[i]].shape.rank;
    if ((st = ein_parse(c, n, term[i], tlen[i], rank, ell, ops[i].lab, &ops[i].rank, NULL)) != KILN_OK) return st;
  }
  /* Output labels: explicit, or the ellipsis then the letters used once, in ASCII order. */
  int out[KILN_MAX_RANK], nout = 0;
  int uses[EIN_LABELS] = {0};
  for (int i = 0; i < nt; i++)
    for (int j = 0; j < ops[i].rank; j++) uses[ops[i].lab[j]]++;
  if (arrow) {
    if ((st = ein_parse(c, n, arrow + 2, strlen(arrow + 2), -1, ell, out, &nout, NULL)) != KILN_OK) return st;
    for (int i = 0; i < nout; i++)
      if (!uses[out[i]]) return fe_fail(c, n, KILN_ERR_SHAPE, "output label '%c' is not an input label", out[i] < 256 ? out[i] : '.');
  } else {
    for (int j = 0; j < ell; j++) out[nout++] = 256 + j;
    for (int l = 0; l < 256; l++)
      if (uses[l] == 1) {
        if (nout == KILN_MAX_RANK) return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "too many output labels");
        out[nout++] = l;
      }
  }
  bool in_out[EIN_LABELS] = {0};
  for (int i = 0; i < nout; i++) in_out[out[i]] = true;
  for (int i = 0; i < nt; i++) ein_diagonals(c, n, &ops[i]);
  /* Fold left to right; keep marks what the output or a later operand still needs. */
  for (int i = 0; i < nt; i++) {
    bool keep[EIN_LABELS];
    memcpy(keep, in_out, sizeof keep);
    for (int j = i + 1; j < nt; j++)
      for (int k = 0; k < ops[j].rank; k++) keep[ops[j].lab[k]] = true;
    if (i == 0) {
      /* the first operand's private labels are summed before any contraction */
      bool k0[EIN_LABELS];
      memcpy(k0, keep, sizeof k0);
      ein_sum(c, n, &ops[0], k0);
      continue;
    }
    bool kb[EIN_LABELS];
    memcpy(kb, keep, sizeof kb);
    for (int k = 0; k < ops[0].rank; k++) kb[ops[0].lab[k]] = true;
    ein_sum(c, n, &ops[i], kb);
    if ((st = ein_contract(c, n, &ops[0], &ops[i], keep)) != KILN_OK) return st;
  }
  bool final[EIN_LABELS];
  memcpy(final, in_out, sizeof final);
  ein_sum(c, n, &ops[0], final);
  if (ops[0].v < 0) return KILN_OK;
  if (ops[0].rank != nout) return fe_fail(c, n, KILN_ERR_SHAPE, "an output label repeats or is missing");
  ein_permute(c, n, &ops[0], out);
  n->out[0] = ops[0].v;
  return KILN_OK;
}
