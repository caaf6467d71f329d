//! Intel AMX for the int8 product's sums (Sapphire Rapids and later Xeons): `tdpbusd` multiplies
//! a 16 × 64 tile of u8 activations by a 64 × 16 tile of i8 weights and adds the products into
//! a 16 × 16 tile of int32 sums: 5.9 int8 TOPS per core against 0.97 for AVX-512 VNNI's
//! `vpdpbusd`, both with their operands in registers, on the Xeon this was written on (oneDNN
//! and ONNX Runtime's MLAS use it for the same reason).
//!
//! The weights' panels ([`super::kernel::PackedWeight`]: 16 channels × 4 consecutive inputs
//! per 64-byte row) are already the layout `tdpbusd` wants for its second operand, and the
//! quantized activations (rows of `k4` bytes) the layout of its first, so both tiles are
//! loaded straight from where the kernel keeps them. The sums are the same exact integers as
//! VNNI's, so results do not depend on which of the two ran.
//!
//! Rust has no stable AMX intrinsics; the instructions are written as inline assembly, one
//! block per tile product so that the tile registers live only inside it.

/// Rows of one activation tile; a block covers two of them.
pub const TILE_ROWS: usize = 16;
/// Rows one call of [`sums_2x2`] covers.
pub const BLOCK_ROWS: usize = 2 * TILE_ROWS;
/// Inputs per `tdpbusd` step (64 bytes of a row): products over `k4` inputs need `k4` a
/// multiple of this.
pub const STEP: usize = 64;

/// Whether the AMX tiles may run: the CPU has AMX-TILE and AMX-INT8, the kernel lets this
/// process use the tile data (Linux's `arch_prctl(ARCH_REQ_XCOMP_PERM)`), and `OSCAR_NO_AMX`
/// is not set. Checked once.
pub fn available() -> bool {
    use std::sync::OnceLock;
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("OSCAR_NO_AMX").is_none() && detect_and_enable())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect_and_enable() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // CPUID.(EAX=7, ECX=0):EDX bit 24 AMX-TILE, bit 25 AMX-INT8.
    #[allow(unused_unsafe)] // `__cpuid_count` is a safe function in newer toolchains
    let leaf7 = unsafe { __cpuid_count(7, 0) };
    if leaf7.edx & (1 << 24) == 0 || leaf7.edx & (1 << 25) == 0 {
        return false;
    }
    const SYS_ARCH_PRCTL: isize = 158;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    let ret: isize;
    // SAFETY: the arch_prctl system call with ARCH_REQ_XCOMP_PERM only asks the kernel for
    // permission to use the AMX tile state in this process; it reads and writes no memory of
    // ours. `syscall` clobbers rcx and r11, declared below.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect_and_enable() -> bool {
    false
}

/// The tile configuration every block uses (palette 1): all 8 tiles 16 rows × 64 bytes —
/// tiles 0–3 the int32 sums, 4–5 the two activation tiles, 6–7 the two weight tiles.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = {
    let mut colsb = [0u16; 16];
    let mut rows = [0u8; 16];
    let mut t = 0;
    while t < 8 {
        colsb[t] = 64;
        rows[t] = TILE_ROWS as u8;
        t += 1;
    }
    TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb,
        rows,
    }
};

/// This thread's tile registers configured for [`sums_2x2`] while it lives (`ldtilecfg`, which
/// is slow enough to matter if every call ran it), released when dropped (`tilerelease`, so
/// that a context switch need not save them).
pub struct Tiles(());

impl Tiles {
    /// # Safety
    /// [`available`] must have returned true.
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn configure() -> Tiles {
        // SAFETY (the caller's): AMX is enabled for this process; `ldtilecfg` reads the 64
        // bytes of `CONFIG`.
        std::arch::asm!("ldtilecfg [{cfg}]", cfg = in(reg) &CONFIG, options(nostack));
        Tiles(())
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured (`configure`), so AMX is available; `tilerelease`
        // only returns the tile registers to their initial state.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// The sums of 32 rows of activations against two weight panels, over `steps · 64` inputs:
/// `out[(panel · 32 + row) · 16 + channel]` (`[panel][row][channel]`). `a` points at the first
/// row's first input, rows `lda` bytes apart; `b0` and `b1` at the two panels' first 64-byte
/// row (16 channels × 4 inputs), its rows 64 bytes apart. With `b1 == b0` the second panel's
/// sums repeat the first's.
///
/// # Safety
/// [`available`] must have returned true and this thread must hold a [`Tiles`]. `a` must be
/// readable for 32 rows of `steps · 64`
/// bytes at stride `lda`, `b0` and `b1` for `steps · 1024` bytes each, and `out` writable for
/// 1,024 int32 values; `steps` ≥ 1.
#[cfg(target_arch = "x86_64")]
pub unsafe fn sums_2x2(
    a: *const u8,
    lda: usize,
    b0: *const i8,
    b1: *const i8,
    steps: usize,
    out: *mut i32,
) {
    debug_assert!(steps >= 1);
    let a1 = a.add(TILE_ROWS * lda);
    // SAFETY (the caller's): the reads stay inside the operands described above, the writes
    // inside `out`. Tiles: 0 = a0·b0, 1 = a0·b1, 2 = a1·b0, 3 = a1·b1, stored at the byte
    // offsets 0, 2048, 1024 and 3072 of `out` (each 16 rows × 64 bytes). Each load comes just
    // before the first product that needs it, so the first products start while the other
    // tiles load (2 % faster on Oscar-B scoring than the four loads first).
    std::arch::asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        "2:",
        "tileloadd tmm4, [{a0} + {lda} * 1]",
        "tileloadd tmm6, [{b0} + {row} * 1]",
        "tdpbusd tmm0, tmm4, tmm6",
        "tileloadd tmm7, [{b1} + {row} * 1]",
        "tdpbusd tmm1, tmm4, tmm7",
        "tileloadd tmm5, [{a1} + {lda} * 1]",
        "tdpbusd tmm2, tmm5, tmm6",
        "tdpbusd tmm3, tmm5, tmm7",
        "add {a0}, 64",
        "add {a1}, 64",
        "add {b0}, 1024",
        "add {b1}, 1024",
        "dec {steps}",
        "jnz 2b",
        "tilestored [{out} + {row} * 1], tmm0",
        "add {out}, 1024",
        "tilestored [{out} + {row} * 1], tmm2",
        "add {out}, 1024",
        "tilestored [{out} + {row} * 1], tmm1",
        "add {out}, 1024",
        "tilestored [{out} + {row} * 1], tmm3",
        a0 = inout(reg) a => _,
        a1 = inout(reg) a1 => _,
        b0 = inout(reg) b0 => _,
        b1 = inout(reg) b1 => _,
        steps = inout(reg) steps => _,
        out = inout(reg) out => _,
        lda = in(reg) lda,
        row = in(reg) 64usize,
        options(nostack),
    );
}
