//! `zhbert`: fine-tune, evaluate and run BERT models for Chinese text
//! classification on burn (CPU, wgpu or CUDA). A thin binary over the zhbert crates.

mod backend;
mod convert;
mod hub;
mod predict;

use clap::{Parser, Subcommand};

use backend::BackendKind;

#[derive(Parser)]
#[command(name = "zhbert", version, about = "BERT for Chinese text classification, on burn")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Backend options shared by every command that runs a model.
#[derive(clap::Args, Clone, Debug)]
pub struct BackendArgs {
    /// Backend to run on (among those compiled in; default: the first of flex, ndarray, wgpu, cuda).
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// GPU index for wgpu or cuda.
    #[arg(long)]
    pub device: Option<usize>,
}

impl BackendArgs {
    fn kind(&self) -> anyhow::Result<BackendKind> {
        let kind = match self.backend {
            Some(k) => k,
            None => BackendKind::default_choice()
                .ok_or_else(|| anyhow::anyhow!("this zhbert was built without any backend feature"))?,
        };
        kind.ensure_compiled()?;
        Ok(kind)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Classify texts with a model folder; writes JSONL, one line per input, in order.
    Predict(predict::PredictArgs),
    /// Convert an HF checkpoint (folder or Hub id) to an HF folder with model.safetensors.
    Convert(convert::ConvertArgs),
    /// List the backends compiled in.
    Info,
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Predict(args) => predict::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Info => {
            info();
            Ok(())
        }
    };
    if let Err(e) = result {
        // One line: the chain of causes joined, no backtrace.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn info() {
    println!("zhbert {}", env!("CARGO_PKG_VERSION"));
    println!("backends compiled in:");
    for kind in BackendKind::available() {
        println!("  {}", kind.feature());
    }
}
