/* manager.c - the pass manager: runs Kiln's pipeline as one straight list.
 *
 *   graph ─▶ verify ─▶ fold ─▶ simplify ─▶ contract ─▶ cse ─▶ siblings ─▶ dce ─▶ layout ─┐
 *                                                         graph passes, rewriting in place │
 *   ┌───────────────────────────────────────────────────────────────────────────────────┘
 *   └▶ fuse (fusion plan) ─▶ lower (kernel program) ─▶ plan_memory ─▶ schedule ─▶ pack ─▶ kiln_kprogram
 *
 * contract runs after simplify (chains already folded) and siblings after cse (a left
 * operand computed twice is one node by then). schedule runs after memory planning:
 * whether a kernel may stream its stores depends on where its buffers are. pack puts the
 * weights of GEMMs the schedule gave generated code into the panels that code reads;
 * disabling it makes every GEMM a library call.
 *
 * The pass table below is the one list: names (kiln_pass_names, --help, --print-after),
 * which passes may be disabled, and the error texts all come from it. Disabling "fuse"
 * means one kernel per op (--fusion none). --print-after prints the graph after a graph
 * pass, the fusion plan after fuse and the kernel program after the later passes.
 */
#include "passes-impl.h"

#include <string.h>

typedef enum stage { STAGE_GRAPH, STAGE_FUSE, STAGE_LOWER, STAGE_PLAN_MEMORY, STAGE_SCHEDULE, STAGE_PACK } stage;

/* X(name, stage, graph pass function or NULL, required) */
#define KILN_PASSES(X)                               \
  X(verify, STAGE_GRAPH, kiln_pass_verify, true)     \
  X(widen, STAGE_GRAPH, kiln_pass_widen, false)      \
  X(fold, STAGE_GRAPH, kiln_pass_fold, false)        \
  X(simplify, STAGE_GRAPH, kiln_pass_simplify, false) \
  X(contract, STAGE_GRAPH, kiln_pass_contract, false) \
  X(cse, STAGE_GRAPH, kiln_pass_cse, false)          \
  X(siblings, STAGE_GRAPH, kiln_pass_siblings, false) \
  X(dce, STAGE_GRAPH, kiln_pass_dce, false)          \
  X(layout, STAGE_GRAPH, kiln_pass_layout, false)    \
  X(fuse, STAGE_FUSE, NULL, false)                   \
  X(lower, STAGE_LOWER, NULL, true)                  \
  X(plan_memory, STAGE_PLAN_MEMORY, NULL, true)      \
  X(schedule, STAGE_SCHEDULE, NULL, true)            \
  X(pack, STAGE_PACK, NULL, false)

static const struct pass_entry {
  const char *name;
  stage stage;
  kiln_graph_pass_fn fn;
  bool required;
} passes[] = {
#define ENTRY(name, st, fn, req) {#name, st, fn, req},
    KILN_PASSES(ENTRY)
#undef ENTRY
};
enum { N_PASSES = sizeof passes / sizeof passes[0] };

const char *const kiln_pass_names[] = {
#define NAME(name, st, fn, req) #name,
    KILN_PASSES(NAME)
#undef NAME
    NULL};

kiln_status kiln_pass_verify(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d) {
  (void)t;
  return kiln_ir_verify(g, d);
}

static const struct pass_entry *find_pass(const char *s, size_t n) {
  for (int i = 0; i < N_PASSES; i++)
    if (strlen(passes[i].name) == n && strncmp(passes[i].name, s, n) == 0) return &passes[i];
  return NULL;
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

/* The names of the passes, space-separated (for error messages). */
static void all_names(char *buf, size_t n) {
  buf[0] = 0;
  for (int i = 0; i < N_PASSES; i++)
    snprintf(buf + strlen(buf), n - strlen(buf), "%s%s", i ? " " : "", passes[i].name);
}

/* Every name in the disable list must be a pass that may be disabled. */
static kiln_status check_disable(const char *list, kiln_diag *d) {
  for (const char *p = list; p && *p;) {
    while (*p == ' ' || *p == ',') p++;
    const char *e = p;
    while (*e && *e != ',' && *e != ' ') e++;
    size_t n = (size_t)(e - p);
    if (n == 0) break;
    const struct pass_entry *pe = find_pass(p, n);
    char names[256];
    all_names(names, sizeof names);
    if (!pe)
      return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "unknown pass '%.*s' in the disable list (passes: %s)", (int)n,
                           p, names);
    if (pe->required)
      return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "pass '%.*s' cannot be disabled: the pipeline needs it", (int)n,
                           p);
    p = e;
  }
  return KILN_OK;
}

static bool want_print(const kiln_pipeline_options *o, const char *pass) {
  if (!o->print_after) return false;
  return strcmp(o->print_after, "all") == 0 || strcmp(o->print_after, pass) == 0;
}

static kiln_status run_graph_passes(kiln_graph *g, const kiln_pipeline_options *o, const kiln_pass_target *t,
                                    FILE *pf, kiln_diag *d) {
  for (int i = 0; i < N_PASSES; i++) {
    const struct pass_entry *pe = &passes[i];
    if (pe->stage != STAGE_GRAPH || (!pe->required && in_list(o->disable, pe->name))) continue;
    kiln_status st = pe->fn(g, t, d);
    if (st != KILN_OK) return st;
    if (o->verify_each) {
      kiln_diag vd = {0};
      if (kiln_ir_verify(g, &vd) != KILN_OK)
        return kiln_diag_set(d, KILN_ERR_INTERNAL, "the graph is invalid after pass '%s': %s", pe->name, vd.msg);
    }
    kiln_progress_report(&o->progress, "pass %s done (%d nodes)", pe->name, (int)g->n_nodes);
    if (want_print(o, pe->name)) {
      fprintf(pf, "// after %s\n", pe->name);
      kiln_ir_print(g, pf, &(kiln_print_options){.elide_constants = true});
    }
  }
  return KILN_OK;
}

static void print_program(const kiln_pipeline_options *o, FILE *pf, const char *pass, const kiln_kprogram *p) {
  if (!want_print(o, pass)) return;
  fprintf(pf, "// after %s\n", pass);
  kiln_ir_kprogram_print(p, pf);
}

kiln_status kiln_pass_pipeline(kiln_graph *g, const kiln_pipeline_options *o, kiln_kprogram **out,
                               kiln_diag *d) {
  kiln_pipeline_options defaults = {0};
  if (!o) o = &defaults;
  if (out) *out = NULL;
  if (o->plan) *o->plan = NULL;
  if (check_disable(o->disable, d) != KILN_OK) return d->status;
  if (o->print_after && strcmp(o->print_after, "all") != 0 && !find_pass(o->print_after, strlen(o->print_after)))
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "--print-after: unknown pass '%s'", o->print_after);
  FILE *pf = o->print_to ? o->print_to : stderr;
  kiln_pass_target t = o->target;
  if (in_list(o->disable, "fuse")) t.fusion = KILN_FUSION_NONE;
  if (in_list(o->disable, "pack")) t.desc.gemm_generated = false; /* no packed weights: library GEMMs */
  kiln_status st = run_graph_passes(g, o, &t, pf, d);
  if (st != KILN_OK) return st;

  kiln_fusion_plan *plan = NULL;
  if ((st = kiln_pass_fuse(g, &t, &plan, d)) != KILN_OK) return st;
  kiln_progress_report(&o->progress, "pass fuse done (%d groups)", (int)plan->n_groups);
  if (want_print(o, "fuse")) {
    fprintf(pf, "// after fuse\n");
    kiln_pass_plan_print(plan, pf);
  }
  kiln_kprogram *p = NULL;
  st = kiln_pass_lower(g, plan, &t, &p, d);
  if (st == KILN_OK) {
    kiln_progress_report(&o->progress, "pass lower done (%d kernels)", (int)p->n_kernels);
    print_program(o, pf, "lower", p);
  }
  if (st == KILN_OK && (st = kiln_pass_plan_memory(p, d)) == KILN_OK) print_program(o, pf, "plan_memory", p);
  if (st == KILN_OK && (st = kiln_pass_schedule(p, &t, d)) == KILN_OK) print_program(o, pf, "schedule", p);
  if (st == KILN_OK && !in_list(o->disable, "pack") && (st = kiln_pass_pack(p, &t, d)) == KILN_OK)
    print_program(o, pf, "pack", p);
  if (st == KILN_OK) {
    kiln_diag vd = {0};
    if (kiln_ir_kprogram_verify(p, &vd) != KILN_OK)
      st = kiln_diag_set(d, KILN_ERR_INTERNAL, "the scheduled program of '%s' is invalid: %s", g->name, vd.msg);
  }
  if (o->plan && st == KILN_OK) *o->plan = plan;
  else kiln_pass_plan_destroy(plan);
  if (st != KILN_OK) {
    kiln_ir_kprogram_destroy(p);
    return st;
  }
  if (out) *out = p;
  else kiln_ir_kprogram_destroy(p);
  return KILN_OK;
}
