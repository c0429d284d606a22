/* manager.c - the pass manager: runs Kiln's pipeline as one straight list.
 *
 *   graph ─▶ verify ─▶ fold ─▶ simplify ─▶ contract ─▶ cse ─▶ siblings ─▶ dce ─▶ layout ─┐
 *                                                         graph passes, rewriting in place │
 *   kiln_kprogram ◀─ plan_memory ◀─ lower (fusion + kernel IR) ◀───────────────────────────┘
 *
 * contract runs after simplify (chains already folded) and siblings after cse (a left
 * operand computed twice is one node by then).
 *
 * Options: disable graph passes by name (verify, lower and plan_memory are required;
 * "fuse" in the disable list means one kernel per op), print the graph (or the kernel
 * program) after a pass or after all, and run the verifier after every graph pass.
 */
#include "passes-impl.h"

#include <string.h>

static const struct {
  const char *name;
  kiln_graph_pass_fn fn;
  bool required;
} graph_passes[] = {
    {"verify", kiln_pass_verify, true},
    {"fold", kiln_pass_fold, false},
    {"simplify", kiln_pass_simplify, false},
    {"contract", kiln_pass_contract, false},
    {"cse", kiln_pass_cse, false},
    {"siblings", kiln_pass_siblings, false},
    {"dce", kiln_pass_dce, false},
    {"layout", kiln_pass_layout, false},
};
enum { N_GRAPH_PASSES = sizeof graph_passes / sizeof graph_passes[0] };

const char *const kiln_pass_names[] = {"verify",   "fold", "simplify", "contract",
                                       "cse",      "siblings", "dce", "layout",
                                       "lower",    "plan_memory", NULL};

kiln_status kiln_pass_verify(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d) {
  (void)t;
  return kiln_ir_verify(g, d);
}

static bool is_pass_name(const char *s, size_t n) {
  for (int i = 0; kiln_pass_names[i]; i++)
    if (strlen(kiln_pass_names[i]) == n && strncmp(kiln_pass_names[i], s, n) == 0) return true;
  return false;
}

/* True when `name` appears in the comma-separated list. */
static bool in_list(const char *list, const char *name) {
  size_t n = strlen(name);
  for (const char *p = list; p && *p;) {
    while (*p == ' ' || *p == ',') p++;
    const char *e = p;
    while (*e && *e != ',' && *e != ' ') e++;
    if ((size_t)(e - p) == n && strncmp(p, name, n) == 0) return true;
    p = e;
  }
  return false;
}

/* Every name in the disable list must be a pass that may be disabled. */
static kiln_status check_disable(const char *list, kiln_diag *d) {
  for (const char *p = list; p && *p;) {
    while (*p == ' ' || *p == ',') p++;
    const char *e = p;
    while (*e && *e != ',' && *e != ' ') e++;
    size_t n = (size_t)(e - p);
    if (n == 0) break;
    if (n == 4 && strncmp(p, "fuse", 4) == 0) { p = e; continue; }
    if (!is_pass_name(p, n))
      return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT,
                           "unknown pass '%.*s' in the disable list (passes: verify fold simplify "
                           "contract cse siblings dce layout lower plan_memory, or fuse)", (int)n, p);
    if ((n == 6 && strncmp(p, "verify", 6) == 0) || (n == 5 && strncmp(p, "lower", 5) == 0) ||
        (n == 11 && strncmp(p, "plan_memory", 11) == 0))
      return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT,
                           "pass '%.*s' cannot be disabled: the pipeline needs it", (int)n, p);
    p = e;
  }
  return KILN_OK;
}

static bool want_print(const kiln_pipeline_options *o, const char *pass) {
  if (!o->print_after) return false;
  if (strcmp(o->print_after, "all") == 0) return true;
  if (strcmp(o->print_after, "fuse") == 0) return strcmp(pass, "lower") == 0;
  return strcmp(o->print_after, pass) == 0;
}

kiln_status kiln_pass_pipeline(kiln_graph *g, const kiln_pipeline_options *o, kiln_kprogram **out,
                               kiln_diag *d) {
  kiln_pipeline_options defaults = {0};
  if (!o) o = &defaults;
  if (out) *out = NULL;
  if (check_disable(o->disable, d) != KILN_OK) return d->status;
  if (o->print_after && strcmp(o->print_after, "all") != 0 && strcmp(o->print_after, "fuse") != 0 &&
      !is_pass_name(o->print_after, strlen(o->print_after)))
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "--print-after: unknown pass '%s'",
                         o->print_after);
  FILE *pf = o->print_to ? o->print_to : stderr;
  kiln_pass_target t = o->target;
  if (in_list(o->disable, "fuse")) t.fusion = KILN_FUSION_NONE;

  for (int i = 0; i < N_GRAPH_PASSES; i++) {
    const char *name = graph_passes[i].name;
    if (!graph_passes[i].required && in_list(o->disable, name)) continue;
    kiln_status st = graph_passes[i].fn(g, &t, d);
    if (st != KILN_OK) return st;
    if (o->verify_each) {
      kiln_diag vd = {0};
      if (kiln_ir_verify(g, &vd) != KILN_OK)
        return kiln_diag_set(d, KILN_ERR_INTERNAL, "the graph is invalid after pass '%s': %s", name,
                             vd.msg);
    }
    kiln_progress_report(&o->progress, "pass %s done (%d nodes)", name, (int)g->n_nodes);
    if (want_print(o, name)) {
      fprintf(pf, "// after %s\n", name);
      kiln_ir_print(g, pf, &(kiln_print_options){.elide_constants = true});
    }
  }

  kiln_kprogram *p = NULL;
  kiln_status st = kiln_pass_lower(g, &t, &p, d);
  if (st != KILN_OK) return st;
  kiln_progress_report(&o->progress, "pass lower done (%d kernels)", (int)p->n_kernels);
  if (want_print(o, "lower")) {
    fprintf(pf, "// after lower\n");
    kiln_ir_kprogram_print(p, pf);
  }
  st = kiln_pass_plan_memory(p, d);
  if (st != KILN_OK) {
    kiln_ir_kprogram_destroy(p);
    return st;
  }
  if (want_print(o, "plan_memory")) {
    fprintf(pf, "// after plan_memory\n");
    kiln_ir_kprogram_print(p, pf);
  }
  if (out) *out = p;
  else kiln_ir_kprogram_destroy(p);
  return KILN_OK;
}
