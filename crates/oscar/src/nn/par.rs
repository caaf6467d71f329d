//! Work split over candle's worker pool (`candle_core::utils::barrier_pool`): the output pointer
//! the threads share, zeroed output buffers written by every thread, and row loops. A serial
//! pass on the calling thread leaves the other cores spinning in the pool, so on a 2-core machine
//! it costs twice its own time.

/// Below this many elements work stays on the calling thread (waking the pool costs more).
pub(crate) const PARALLEL_MIN_ELEMS: usize = 1 << 15;

/// An output pointer the worker threads write through; each writes its own part.
#[derive(Clone, Copy)]
pub(crate) struct Out(pub(crate) *mut f32);
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer `i` values on (a method, so closures capture the whole `Sync` wrapper).
    ///
    /// # Safety
    /// `i` must lie inside the buffer.
    pub(crate) unsafe fn at(self, i: usize) -> *mut f32 {
        unsafe { self.0.add(i) }
    }

    /// Rows `range` of a buffer of `n`-long rows.
    ///
    /// # Safety
    /// The rows must lie inside the buffer, be initialized, and no one else use them while the
    /// slice lives.
    pub(crate) unsafe fn rows<'a>(self, range: std::ops::Range<usize>, n: usize) -> &'a mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.at(range.start * n), range.len() * n) }
    }
}

/// `vec![0.0; len]`, large buffers zeroed by every thread of the pool.
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    const CHUNK: usize = 1 << 14;
    if len < PARALLEL_MIN_ELEMS {
        return vec![0.0; len];
    }
    let mut v = Vec::<f32>::with_capacity(len);
    let out = Out(v.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(len.div_ceil(CHUNK), |range| {
        let (lo, hi) = (range.start * CHUNK, (range.end * CHUNK).min(len));
        // SAFETY: chunks are disjoint and inside the capacity; zero bytes are 0.0f32.
        unsafe { std::ptr::write_bytes(out.at(lo), 0, hi - lo) };
    });
    // SAFETY: every one of the `len` values was written above (`execute_chunked` returns when
    // all chunks are done).
    unsafe { v.set_len(len) };
    v
}

/// Applies `f` to every `n`-long row of `c`, the rows spread over the pool when `threaded` and
/// `c` is large.
pub(crate) fn each_row(c: &mut [f32], n: usize, threaded: bool, f: impl Fn(&mut [f32]) + Sync) {
    if n == 0 {
        return;
    }
    if !threaded || c.len() < PARALLEL_MIN_ELEMS {
        return c.chunks_exact_mut(n).for_each(f);
    }
    let rows = c.len() / n;
    let out = Out(c.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(rows, |range| {
        // SAFETY: each thread gets its own range of whole rows, inside `c`.
        let part = unsafe { out.rows(range, n) };
        part.chunks_exact_mut(n).for_each(&f);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_buffers_and_row_loops_cover_every_value() {
        for len in [0, 5, PARALLEL_MIN_ELEMS - 1, 3 * PARALLEL_MIN_ELEMS + 7] {
            let mut v = zeroed(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x.to_bits() == 0));
            let whole = len / 7 * 7;
            for threaded in [false, true] {
                each_row(&mut v[..whole], 7, threaded, |r| {
                    r.iter_mut().for_each(|x| *x += 1.0)
                });
            }
            assert!(v[..whole].iter().all(|&x| x == 2.0));
            assert!(v[whole..].iter().all(|&x| x == 0.0));
        }
    }
}
