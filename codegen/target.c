/* target.c - the target machine (the host's, or a named triple and CPU for AOT), what the
 * backend tells the passes about itself (kiln_llvm_target_desc), LLVM error reporting
 * into a kiln_diag, and the version string. Knows nothing about kernels. */
#include "llvm_impl.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

void kiln_llvm_diag_module(kiln_diag *d, LLVMModuleRef m) {
  if (!d || !m) return;
  char *text = LLVMPrintModuleToString(m);
  size_t used = strlen(d->msg), room = sizeof d->msg - used;
  /* Keep the verifier's message; the module text gets whatever room is left. */
  if (room > 32) kiln_diag_append(d, "\n--- module ---\n%.*s", (int)(room - 32), text ? text : "");
  LLVMDisposeMessage(text);
}

kiln_status kiln_llvm_fail(kiln_diag *d, const char *what, LLVMErrorRef err, LLVMModuleRef m) {
  char *msg = err ? LLVMGetErrorMessage(err) : NULL;
  kiln_status st = kiln_diag_set(d, KILN_ERR_BACKEND, "LLVM: %s: %s", what, msg ? msg : "failed");
  if (msg) LLVMDisposeErrorMessage(msg);
  kiln_llvm_diag_module(d, m);
  return st;
}

/* Creates the target machine. LLVM's C API lists no CPU names and only prints "'x' is
 * not a recognized processor for this target (ignoring processor)" to stderr when it
 * meets an unknown one (while the machine is created, from its subtarget info). So for a
 * named CPU, stderr is redirected to a temporary file around the creation: that line
 * means the name is unknown; anything else captured is written back to stderr. The
 * window is short, but another thread's stderr output in it is delayed until after. */
static LLVMTargetMachineRef create_machine(LLVMTargetRef target, const char *triple, const char *cpu,
                                           const char *features, LLVMRelocMode reloc, LLVMCodeModel cm,
                                           bool check_cpu, bool *unknown_cpu) {
  *unknown_cpu = false;
  FILE *cap = check_cpu ? tmpfile() : NULL;
  int saved = -1;
  if (cap) {
    fflush(stderr);
    saved = dup(2);
    if (saved < 0 || dup2(fileno(cap), 2) < 0) {
      if (saved >= 0) close(saved);
      saved = -1;
    }
  }
  LLVMTargetMachineRef tm =
      LLVMCreateTargetMachine(target, triple, cpu, features, LLVMCodeGenLevelAggressive, reloc, cm);
  if (saved >= 0) {
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char buf[2048];
    rewind(cap);
    size_t n = fread(buf, 1, sizeof buf - 1, cap);
    buf[n] = 0;
    if (strstr(buf, "is not a recognized processor")) *unknown_cpu = true;
    else if (n) fputs(buf, stderr);
  }
  if (cap) fclose(cap);
  return tm;
}

kiln_status kiln_llvm_target_machine(const char *triple_name, const char *cpu_name, LLVMRelocMode reloc,
                                     LLVMCodeModel cm, LLVMTargetMachineRef *tm, kiln_diag *d) {
  *tm = NULL;
  if (triple_name && !*triple_name) triple_name = NULL;
  if (cpu_name && !*cpu_name) cpu_name = NULL;
  /* Idempotent in LLVM; called per compile so Kiln keeps no "initialized" global. */
  if (LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter())
    return kiln_diag_set(d, KILN_ERR_BACKEND, "LLVM: the native target is not available");
  if (triple_name) {
    /* Another architecture: every target this LLVM was built with. */
    LLVMInitializeAllTargetInfos();
    LLVMInitializeAllTargets();
    LLVMInitializeAllTargetMCs();
    LLVMInitializeAllAsmPrinters();
  }
  char *host_triple = LLVMGetDefaultTargetTriple();
  char *triple = triple_name ? LLVMNormalizeTargetTriple(triple_name) : host_triple;
  /* The host's features belong to the host CPU only; a named CPU brings its own. */
  bool host_cpu = !cpu_name && !triple_name;
  char *cpu = cpu_name ? NULL : host_cpu ? LLVMGetHostCPUName() : NULL;
  char *features = host_cpu ? LLVMGetHostCPUFeatures() : NULL;
  LLVMTargetRef target = NULL;
  char *err = NULL;
  kiln_status st = KILN_OK;
  if (LLVMGetTargetFromTriple(triple, &target, &err)) {
    st = triple_name ? kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "unknown target triple '%s': %s", triple_name,
                                     err ? err : "")
                     : kiln_diag_set(d, KILN_ERR_BACKEND, "LLVM: no target for %s: %s", triple, err ? err : "");
  } else {
    bool unknown = false;
    const char *use_cpu = cpu_name ? cpu_name : cpu ? cpu : "";
    *tm = create_machine(target, triple, use_cpu, features ? features : "", reloc, cm, cpu_name != NULL, &unknown);
    if (unknown) {
      LLVMDisposeTargetMachine(*tm);
      *tm = NULL;
      st = kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "unknown CPU '%s' for target %s (LLVM %s)", cpu_name, triple,
                         KILN_LLVM_VERSION);
    } else if (!*tm) {
      st = kiln_diag_set(d, KILN_ERR_BACKEND, "LLVM: cannot create a target machine for %s (%s)", triple, use_cpu);
    }
  }
  LLVMDisposeMessage(err);
  if (triple != host_triple) LLVMDisposeMessage(triple);
  LLVMDisposeMessage(host_triple);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(features);
  return st;
}

kiln_status kiln_llvm_host_machine(LLVMRelocMode reloc, LLVMCodeModel cm, LLVMTargetMachineRef *tm,
                                   kiln_diag *d) {
  return kiln_llvm_target_machine(NULL, NULL, reloc, cm, tm, d);
}

void kiln_llvm_target_features(LLVMTargetMachineRef tm, kiln_llvm_render_options *o) {
  char *triple = LLVMGetTargetMachineTriple(tm), *features = LLVMGetTargetMachineFeatureString(tm);
  bool x86 = strncmp(triple, "x86_64", 6) == 0;
  o->avx512f = x86 && strstr(features, "+avx512f") != NULL;
  o->avx512vl = x86 && strstr(features, "+avx512vl") != NULL;
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(features);
}

/* The host's vector registers, from its feature string, for the generated GEMMs. */
static void host_simd(const char *triple, kiln_target_desc *d) {
  char *f = LLVMGetHostCPUFeatures();
  bool x86 = strncmp(triple, "x86_64", 6) == 0, arm = strncmp(triple, "aarch64", 7) == 0;
  if (x86 && strstr(f, "+avx512f")) d->simd_bits = 512, d->simd_regs = 32;
  else if (x86 && strstr(f, "+avx2") && strstr(f, "+fma")) d->simd_bits = 256, d->simd_regs = 16;
  else if (x86) d->simd_bits = 128, d->simd_regs = 16;
  else if (arm) d->simd_bits = 128, d->simd_regs = 32;
  d->gemm_generated = d->simd_bits > 0;
  LLVMDisposeMessage(f);
}

/* A named x86-64 CPU's vector registers, for the generated GEMMs (the LLVM C API does not
 * say which features a CPU name implies): the x86-64 levels, and the CPUs by family; a
 * name not listed gets library GEMMs. */
static void named_simd(const char *triple, const char *cpu, kiln_target_desc *d) {
  static const struct {
    const char *prefix;
    int16_t bits, regs;
  } cpus[] = {
      {"x86-64-v4", 512, 32},   {"x86-64-v3", 256, 16},   {"x86-64-v2", 128, 16},  {"x86-64", 128, 16},
      {"skylake-avx512", 512, 32}, {"cascadelake", 512, 32}, {"cooperlake", 512, 32}, {"icelake", 512, 32},
      {"tigerlake", 512, 32},   {"sapphirerapids", 512, 32}, {"graniterapids", 512, 32}, {"emeraldrapids", 512, 32},
      {"znver4", 512, 32},      {"znver5", 512, 32},      {"znver", 256, 16},      {"haswell", 256, 16},
      {"broadwell", 256, 16},   {"skylake", 256, 16},     {"alderlake", 256, 16},  {"raptorlake", 256, 16},
  };
  if (triple && *triple && strncmp(triple, "x86_64", 6) != 0) return;
  if (!cpu || !*cpu) return; /* a triple alone: its baseline CPU, not known here */
  for (size_t i = 0; i < sizeof cpus / sizeof cpus[0]; i++)
    if (strncmp(cpu, cpus[i].prefix, strlen(cpus[i].prefix)) == 0) {
      d->simd_bits = cpus[i].bits, d->simd_regs = cpus[i].regs, d->gemm_generated = true;
      return;
    }
}

void kiln_llvm_target_desc(const char *triple, const char *cpu, kiln_target_desc *d) {
  kiln_ir_target_desc_default(KILN_SCHED_LOOP_NEST, d);
  bool named = (triple && *triple) || (cpu && *cpu);
  char *host = triple && *triple ? NULL : LLVMGetDefaultTargetTriple();
  const char *t = host ? host : triple;
  /* 512-bit vectors where the target has them (LLVM defaults to 256 on x86): the
   * polynomial exp/erf of softmax and GELU are compute-bound at 256 bits; measured
   * 1.4-1.7x faster at 512 on AVX-512 hosts. Targets without them ignore it. */
  d->vector_bits = strncmp(t, "x86_64", 6) == 0 ? 512 : 128;
  if (named) named_simd(triple, cpu, d);
  else host_simd(t, d);
  LLVMDisposeMessage(host);
  d->gemm_prologue = true;      /* kiln_rt_gemm_fused runs a pack of A */
  d->sibling_pairs = true;      /* render.c runs a with_next pair as one loop nest */
  d->conv_channels_last = true; /* conv_cl GEMMs with A packs */
}

const char *kiln_llvm_version(void) { return "LLVM " KILN_LLVM_VERSION; }
