//! A linear layer, `y = x·Wᵀ + b`, on the fastest kernel this CPU has: AMX tiles (bf16×3,
//! see [`crate::amx`]) or f32 through the gemm crate (AVX-512 or AVX2, chosen at run time).

#[cfg(target_arch = "x86_64")]
use crate::amx;

/// Which kernel computes the linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Intel AMX tiles, bf16×3 (Sapphire Rapids and later).
    Amx,
    /// f32 on the vector units (every x86_64 CPU).
    F32,
}

impl Kernel {
    /// AMX where the CPU and the OS allow it, else f32.
    pub fn detect() -> Kernel {
        if Kernel::Amx.available() {
            Kernel::Amx
        } else {
            Kernel::F32
        }
    }

    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => amx::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Amx => false,
            Kernel::F32 => true,
        }
    }

    /// The widest layer input the kernel computes exactly.
    pub fn max_input(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => amx::MAX_K,
            _ => usize::MAX,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Amx => "amx",
            Kernel::F32 => "f32",
        }
    }
}

impl std::str::FromStr for Kernel {
    type Err = String;
    fn from_str(s: &str) -> Result<Kernel, String> {
        match s {
            "amx" => Ok(Kernel::Amx),
            "f32" => Ok(Kernel::F32),
            "auto" => Ok(Kernel::detect()),
            _ => Err(format!("unknown kernel {s:?}: use amx, f32 or auto")),
        }
    }
}

pub struct Dense {
    weights: Weights,
    input: usize,
    output: usize,
}

enum Weights {
    /// Row-major (output × input), as in the checkpoint.
    F32 { weight: Vec<f32>, bias: Vec<f32> },
    #[cfg(target_arch = "x86_64")]
    Amx(amx::Packed),
}

impl Dense {
    /// `weight` is (output × input) row-major. With [`Kernel::Amx`] (which must be available)
    /// it is repacked and the f32 copy dropped, so the model's memory stays one copy.
    pub fn new(weight: Vec<f32>, bias: Vec<f32>, input: usize, output: usize, kernel: Kernel) -> Dense {
        assert_eq!((weight.len(), bias.len()), (input * output, output));
        let weights = match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => Weights::Amx(amx::Packed::new(&weight, &bias, output, input)),
            _ => Weights::F32 { weight, bias },
        };
        Dense { weights, input, output }
    }

    pub fn output(&self) -> usize {
        self.output
    }

    /// `x` is `tokens` rows of `input`; the answer `tokens` rows of `output`.
    pub fn forward(&self, x: &[f32], tokens: usize, threads: usize) -> Vec<f32> {
        assert_eq!(x.len(), tokens * self.input);
        let mut y = vec![0f32; tokens * self.output];
        match &self.weights {
            Weights::F32 { weight: w, bias } => {
                // gemm is given x · Wᵀ with the answer column-major, then transposed here: any
                // other arrangement has it repack the whole weight on every call (2x slower).
                let mut columns = vec![0f32; tokens * self.output];
                let (t, k) = (tokens as isize, self.input as isize);
                // SAFETY: the answer (tokens × output, column-major), x (tokens × input) and
                // Wᵀ (input × output: W read down its rows) lie within their buffers.
                unsafe {
                    product(
                        (tokens, self.output, self.input),
                        Strided::new(columns.as_mut_ptr(), 1, t),
                        Strided::new(x.as_ptr(), k, 1),
                        Strided::new(w.as_ptr(), 1, k),
                        1.0,
                        threads,
                    )
                };
                for (row, out) in y.chunks_exact_mut(self.output).enumerate() {
                    for ((v, column), b) in out.iter_mut().zip(columns.chunks_exact(tokens)).zip(bias) {
                        *v = column[row] + b;
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            Weights::Amx(packed) => packed.forward(x, tokens, &mut y, threads),
        }
        y
    }
}

/// A matrix inside a buffer: where its first element is, and the steps (in elements) to the
/// next row and the next column. Transposes and column slices are strides, not copies.
#[derive(Clone, Copy)]
pub(crate) struct Strided<P> {
    at: P,
    row: isize,
    col: isize,
}

impl<P> Strided<P> {
    pub fn new(at: P, row: isize, col: isize) -> Strided<P> {
        Strided { at, row, col }
    }
}

/// `dst = scale · lhs · rhs` for shapes (m × k)·(k × n) = (m × n), on gemm's f32 kernels,
/// with rayon's threads when `threads` > 1.
///
/// # Safety
/// Each matrix, of its shape and strides, lies within its buffer.
pub(crate) unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: Strided<*mut f32>,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    scale: f32,
    threads: usize,
) {
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // gemm takes column stride before row stride; dst is overwritten (alpha unused).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.at,
            dst.col,
            dst.row,
            false,
            lhs.at,
            lhs.col,
            lhs.row,
            rhs.at,
            rhs.col,
            rhs.row,
            0.0,
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}
