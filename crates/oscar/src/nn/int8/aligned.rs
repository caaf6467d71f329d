//! Byte buffers that start on a 64-byte cache line. AMX's `tileloadd` reads each of a tile's 16
//! rows as one 64-byte load; rows that straddle two cache lines made the tile loop run at about
//! a third of its speed (0.6 against 1.5–2.1 int8 TMAC/s per core on the Xeon, operands in L1).
//! The kernel's rows and panels are whole multiples of 64 bytes apart, so aligning the start
//! of each buffer aligns every tile row. `Vec<u8>` promises 1 byte; which alignment a block
//! gets beyond that is the allocator's choice (mimalloc's large blocks happen to be aligned,
//! its small ones need not be).

/// One cache line: the unit the buffer is allocated in.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

/// The byte types a buffer holds: one byte, every bit pattern a value.
pub trait Byte: Copy + PartialEq + std::fmt::Debug + private::Sealed {}
impl Byte for u8 {}
impl Byte for i8 {}
mod private {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for i8 {}
}

/// `len` bytes (as `T`) from the start of 64-byte-aligned storage; reads and writes as a slice.
#[derive(Clone)]
pub struct Aligned<T: Byte> {
    lines: Vec<Line>,
    len: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T: Byte> Aligned<T> {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        Aligned {
            lines: vec![Line([0; 64]); len.div_ceil(64)],
            len,
            _t: std::marker::PhantomData,
        }
    }
}

impl<T: Byte> std::ops::Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the lines hold at least `len` initialized bytes, and `T` is one byte for which
        // every bit pattern is a value (`Byte` is sealed to u8 and i8).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Byte> std::ops::DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as for `deref`, and the borrow of `self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Byte> PartialEq for Aligned<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Byte> std::fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length starts on a cache line, reads back what was written, and compares and
    /// clones by its bytes.
    #[test]
    fn buffers_start_on_a_cache_line_and_hold_their_bytes() {
        for len in [0usize, 1, 63, 64, 65, 1000, 4096 + 7] {
            let mut a = Aligned::<i8>::zeroed(len);
            assert_eq!(a.len(), len);
            assert_eq!(a.as_ptr() as usize % 64, 0, "len {len}");
            assert!(a.iter().all(|&v| v == 0));
            for (i, v) in a.iter_mut().enumerate() {
                *v = (i % 251) as i8;
            }
            let b = a.clone();
            assert_eq!(b.as_ptr() as usize % 64, 0);
            assert_eq!(a, b);
            assert!(b.iter().enumerate().all(|(i, &v)| v == (i % 251) as i8));
            if len > 0 {
                let mut c = b.clone();
                c[len - 1] = c[len - 1].wrapping_add(1);
                assert_ne!(b, c);
            }
        }
    }
}
