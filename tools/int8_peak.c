// Multiply-add throughput of one core for the instruction sequences an int8 GEMM on AVX2 can use,
// beside f32 FMA (docs/int8.md). Register-only loops, 12 independent accumulators.
//   gcc -O2 -mavx2 -mfma tools/int8_peak.c -o /tmp/int8_peak && /tmp/int8_peak
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
// Keeps the compiler from folding the constant operands.
#define KEEP(x) __asm__ volatile("" : "+x"(x))

int main(void) {
  const long n = 100000000;
  __m256i a = _mm256_set1_epi16(3), b = _mm256_set1_epi16(5), ones = _mm256_set1_epi16(1);
  KEEP(a); KEEP(b); KEEP(ones);
  __m256i acc[12], s;
  double t, dt;

  for (int i = 0; i < 12; i++) acc[i] = _mm256_setzero_si256();
  t = now();
  for (long it = 0; it < n; it++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) { __m256i p = _mm256_madd_epi16(a, b); KEEP(p); acc[i] = _mm256_add_epi32(acc[i], p); }
  }
  dt = now() - t; s = acc[0]; for (int i = 1; i < 12; i++) s = _mm256_add_epi32(s, acc[i]);
  printf("i16 vpmaddwd + vpaddd:                   %5.1f G multiply-adds/s (%d)\n", n * 12.0 * 16 / dt / 1e9, _mm256_extract_epi32(s, 0));

  for (int i = 0; i < 12; i++) acc[i] = _mm256_setzero_si256();
  t = now();
  for (long it = 0; it < n; it++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) { __m256i p = _mm256_maddubs_epi16(a, b); KEEP(p); p = _mm256_madd_epi16(p, ones); acc[i] = _mm256_add_epi32(acc[i], p); }
  }
  dt = now() - t; s = acc[0]; for (int i = 1; i < 12; i++) s = _mm256_add_epi32(s, acc[i]);
  printf("u8*i8 vpmaddubsw + vpmaddwd(1) + vpaddd: %5.1f G multiply-adds/s (%d)\n", n * 12.0 * 32 / dt / 1e9, _mm256_extract_epi32(s, 0));

  for (int i = 0; i < 12; i++) acc[i] = _mm256_setzero_si256();
  t = now();
  for (long it = 0; it < n; it++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) {
      __m256i p = _mm256_maddubs_epi16(a, b); KEEP(p);
      __m256i q = _mm256_maddubs_epi16(a, b); KEEP(q);
      p = _mm256_madd_epi16(_mm256_add_epi16(p, q), ones); acc[i] = _mm256_add_epi32(acc[i], p);
    }
  }
  dt = now() - t; s = acc[0]; for (int i = 1; i < 12; i++) s = _mm256_add_epi32(s, acc[i]);
  printf("two vpmaddubsw summed in i16 (7x7 bits): %5.1f G multiply-adds/s (%d)\n", n * 12.0 * 64 / dt / 1e9, _mm256_extract_epi32(s, 0));

  __m256 fa = _mm256_set1_ps(1.0001f), fb = _mm256_set1_ps(0.9999f), fac[12], fs;
  KEEP(fa); KEEP(fb);
  for (int i = 0; i < 12; i++) fac[i] = _mm256_setzero_ps();
  t = now();
  for (long it = 0; it < n; it++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) fac[i] = _mm256_fmadd_ps(fa, fb, fac[i]);
  }
  dt = now() - t; fs = fac[0]; for (int i = 1; i < 12; i++) fs = _mm256_add_ps(fs, fac[i]);
  float r[8]; _mm256_storeu_ps(r, fs);
  printf("f32 vfmadd231ps:                         %5.1f G multiply-adds/s (%g)\n", n * 12.0 * 8 / dt / 1e9, r[0]);
  return 0;
}
