/* target.c - the generic target descriptions (kiln_target_desc): the numbers Kiln's
 * schedules were measured with, which each backend starts from before saying what it
 * can do. */
#include "ir.h"

#include <string.h>

void kiln_ir_target_desc_default(kiln_sched_model m, kiln_target_desc *d) {
  memset(d, 0, sizeof *d);
  d->model = m;
  d->target = m == KILN_SCHED_SIMT ? KILN_TARGET_CUDA : KILN_TARGET_CPU;
  d->cache_line = 64;
  d->pack_tile_bytes = 1 << 20;
  if (m == KILN_SCHED_SIMT) {
    d->warp = 32;
    d->block = 256;
    return;
  }
  /* A chunk handed to one worker holds at least this many output elements (times the
   * reduction work of each), so a parallel chunk amortizes the pool's dispatch cost. */
  d->grain_elems = 16384;
  d->vector_bits = 128;
  /* Streaming (non-temporal) stores: measured here (2 threads, [32768, 768] f32, 100
   * MB): a copy 7.5 -> 4.1 ms, and two kernels in a row 16.3 -> 12.2 ms even though the
   * second reads the first's output from memory; at 16 MB they were slower (the data was
   * still in the cache), at 64 MB faster. */
  d->stream_min_bytes = 64 << 20;
  /* Software prefetch of large inputs (bias+GELU [32768, 768], 2 threads, streaming
   * stores: no prefetch 19.1 ms, one prefetch after each vector load 7.1 ms); 4 KiB ahead
   * against 2 KiB: residual + layer norm 8.56 against 8.76 ms, bias + GELU 5.50 against
   * 5.78 ms (medians of 6 interleaved runs). */
  d->prefetch_min_bytes = 4 << 20;
  d->prefetch_bytes = 4096;
  d->row_cache_max = 16384;
}
