/* strbuf.c - a growable text buffer through the allocator hook, for everything Kiln
 * prints into memory: IR text, generated C and CUDA C, linker command lines. Running out
 * of memory is sticky (b->oom) and checked once by the owner at the end. */
#include "ir.h"

#include <stdarg.h>
#include <string.h>

bool kiln_strbuf_reserve(kiln_strbuf *b, size_t extra) {
  if (b->oom) return false;
  if (b->s && b->len + extra + 1 <= b->cap) return true;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + extra + 1) cap *= 2;
  char *s = kiln_ir_realloc(b->a, b->s, cap);
  if (!s) {
    b->oom = true;
    return false;
  }
  if (!b->s) s[0] = 0;
  b->s = s;
  b->cap = cap;
  return true;
}

void kiln_strbuf_printf(kiln_strbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->oom = true;
    return;
  }
  if (!kiln_strbuf_reserve(b, (size_t)n)) return;
  va_start(ap, fmt);
  vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void kiln_strbuf_puts(kiln_strbuf *b, const char *s) {
  size_t n = strlen(s);
  if (!kiln_strbuf_reserve(b, n)) return;
  memcpy(b->s + b->len, s, n + 1);
  b->len += n;
}

void kiln_strbuf_putc(kiln_strbuf *b, char c) {
  if (!kiln_strbuf_reserve(b, 1)) return;
  b->s[b->len++] = c;
  b->s[b->len] = 0;
}

const char *kiln_shape_str(const kiln_shape *s, char *buf, size_t n) {
  size_t o = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < s->rank && i < KILN_MAX_RANK && o < n; i++)
    o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? "," : "", (long long)s->dims[i]);
  if (o < n) snprintf(buf + o, n - o, "]");
  return buf;
}
