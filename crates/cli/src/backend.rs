//! Choosing a burn backend at run time among those compiled in.

use clap::ValueEnum;

/// The backends zhbert can be built with; each is a cargo feature of this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// burn's Flex CPU backend (feature `flex`).
    Flex,
    /// burn's ndarray CPU backend (feature `ndarray`).
    Ndarray,
    /// wgpu: Vulkan, Metal, DirectX or WebGPU (feature `wgpu`).
    Wgpu,
    /// NVIDIA CUDA (feature `cuda`).
    Cuda,
}

impl BackendKind {
    /// The cargo feature that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        }
    }

    /// Whether this binary was built with the backend.
    pub fn compiled_in(self) -> bool {
        match self {
            Self::Flex => cfg!(feature = "flex"),
            Self::Ndarray => cfg!(feature = "ndarray"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// All backends compiled into this binary, fastest CPU backend first.
    pub fn available() -> Vec<Self> {
        Self::value_variants()
            .iter()
            .copied()
            .filter(|b| b.compiled_in())
            .collect()
    }

    /// The backend used when `--backend` is not given: the first compiled in.
    pub fn default_choice() -> Option<Self> {
        Self::available().first().copied()
    }

    /// Refuses a backend that is not compiled in, naming the feature to enable.
    pub fn ensure_compiled(self) -> anyhow::Result<()> {
        if self.compiled_in() {
            return Ok(());
        }
        let have: Vec<&str> = Self::available().iter().map(|b| b.feature()).collect();
        anyhow::bail!(
            "backend {} is not compiled into this zhbert (it has: {}); rebuild with `--features {}` (or `cargo xtask ... --backend {}`)",
            self.feature(),
            have.join(", "),
            self.feature(),
            self.feature()
        )
    }
}

/// Runs `$body` with `$B` bound to the chosen backend type (with autodiff as
/// `$AB` for training) and `$device` to its device.
#[macro_export]
macro_rules! with_backend {
    ($kind:expr, $gpu:expr, |$B:ident, $device:ident| $body:expr) => {{
        match $kind {
            #[cfg(feature = "flex")]
            $crate::backend::BackendKind::Flex => {
                type $B = burn::backend::Flex;
                let $device = Default::default();
                $body
            }
            #[cfg(feature = "ndarray")]
            $crate::backend::BackendKind::Ndarray => {
                type $B = burn::backend::NdArray;
                let $device = Default::default();
                $body
            }
            #[cfg(feature = "wgpu")]
            $crate::backend::BackendKind::Wgpu => {
                type $B = burn::backend::Wgpu;
                let $device = $crate::backend::wgpu_device($gpu)?;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::backend::BackendKind::Cuda => {
                type $B = burn::backend::Cuda;
                let $device = $crate::backend::cuda_device($gpu)?;
                $body
            }
            #[allow(unreachable_patterns)]
            other => {
                other.ensure_compiled()?;
                unreachable!()
            }
        }
    }};
}

/// Runs `$body` with `$B` bound to the chosen backend type and `$devices` to
/// one device of it per index of `$indices` (data-parallel training).
#[macro_export]
macro_rules! with_backend_devices {
    ($kind:expr, $indices:expr, |$B:ident, $devices:ident| $body:expr) => {{
        let indices: &[Option<usize>] = $indices;
        match $kind {
            #[cfg(feature = "flex")]
            $crate::backend::BackendKind::Flex => {
                type $B = burn::backend::Flex;
                let $devices: Vec<_> = indices.iter().map(|_| Default::default()).collect();
                $body
            }
            #[cfg(feature = "ndarray")]
            $crate::backend::BackendKind::Ndarray => {
                type $B = burn::backend::NdArray;
                let $devices: Vec<_> = indices.iter().map(|_| Default::default()).collect();
                $body
            }
            #[cfg(feature = "wgpu")]
            $crate::backend::BackendKind::Wgpu => {
                type $B = burn::backend::Wgpu;
                let $devices = indices
                    .iter()
                    .map(|&i| $crate::backend::wgpu_device(i))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::backend::BackendKind::Cuda => {
                type $B = burn::backend::Cuda;
                let $devices = indices
                    .iter()
                    .map(|&i| $crate::backend::cuda_device(i))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                $body
            }
            #[allow(unreachable_patterns)]
            other => {
                other.ensure_compiled()?;
                unreachable!()
            }
        }
    }};
}

/// The wgpu device for `--device N` (the default adapter when `None`), after
/// checking that an adapter opens: burn panics deep inside wgpu when none does.
#[cfg(feature = "wgpu")]
pub fn wgpu_device(index: Option<usize>) -> anyhow::Result<burn::backend::wgpu::WgpuDevice> {
    wgpu_adapter(index).map(|(device, _)| device)
}

/// The wgpu device and a description of its adapter.
#[cfg(feature = "wgpu")]
pub fn wgpu_adapter(
    index: Option<usize>,
) -> anyhow::Result<(burn::backend::wgpu::WgpuDevice, String)> {
    use burn::backend::wgpu::{graphics::AutoGraphicsApi, init_setup, RuntimeOptions, WgpuDevice};
    let device = match index {
        None => WgpuDevice::DefaultDevice,
        Some(i) => WgpuDevice::DiscreteGpu(i),
    };
    // Initialising the device here, once, is what burn would do lazily on
    // first use; doing it under catch_unwind turns "no adapter" into an error.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let setup = std::panic::catch_unwind(|| {
        init_setup::<AutoGraphicsApi>(&device, RuntimeOptions::default())
    });
    std::panic::set_hook(hook);
    match setup {
        Ok(setup) => {
            let info = setup.adapter.get_info();
            let name = format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type);
            tracing::debug!("wgpu adapter: {name}");
            Ok((device, name))
        }
        Err(_) => anyhow::bail!(
            "backend wgpu cannot start: no {} graphics adapter (Vulkan, Metal or DirectX 12) was found; on Linux without a GPU install Mesa's software driver (Debian: mesa-vulkan-drivers), or use --backend {}",
            match index { Some(i) => format!("GPU #{i}"), None => "usable".to_string() },
            other_backend(BackendKind::Wgpu)
        ),
    }
}

/// A compiled-in backend other than `not`, to suggest when `not` cannot start.
#[allow(dead_code)]
fn other_backend(not: BackendKind) -> &'static str {
    BackendKind::available()
        .into_iter()
        .find(|b| *b != not)
        .map_or("flex", |b| b.feature())
}

/// The CUDA device for `--device N`, after checking that the driver library
/// loads: burn's CUDA runtime panics inside cudarc when it does not.
#[cfg(feature = "cuda")]
pub fn cuda_device(index: Option<usize>) -> anyhow::Result<burn::backend::cuda::CudaDevice> {
    let found = ["libcuda.so.1", "libcuda.so"].iter().any(|name| {
        // SAFETY: dlopen of the system CUDA driver; it is closed again at once.
        unsafe { libloading::Library::new(name) }.is_ok()
    });
    if !found {
        anyhow::bail!(
            "backend cuda cannot start: the NVIDIA driver library libcuda.so.1 is not installed or not on the library path; use --backend {}",
            other_backend(BackendKind::Cuda)
        );
    }
    Ok(burn::backend::cuda::CudaDevice::new(index.unwrap_or(0)))
}

/// One line on what `kind` runs on here, or why it cannot start.
pub fn describe(kind: BackendKind) -> String {
    match kind {
        BackendKind::Flex | BackendKind::Ndarray => {
            format!("CPU, {} threads", rayon::current_num_threads())
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => match wgpu_adapter(None) {
            Ok((_, name)) => format!("default adapter: {name}"),
            Err(e) => e.to_string(),
        },
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => match cuda_device(None) {
            Ok(_) => "NVIDIA driver found; --device N picks the GPU".into(),
            Err(e) => e.to_string(),
        },
        #[allow(unreachable_patterns)]
        _ => "not compiled in".into(),
    }
}
